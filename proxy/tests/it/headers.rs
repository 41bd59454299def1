use std::time::Duration;

use http::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::Harness;

#[tokio::test]
async fn forwarded_headers_are_set_and_host_kept() {
    let h = Harness::start().await;
    let reply = h
        .send(
            "hello.localhost:1234",
            "GET",
            "/echo",
            Default::default(),
            &[
                ("x-forwarded-for", "203.0.113.7"),
                ("x-forwarded-proto", "https"),
            ],
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    let seen = reply.body;
    assert!(seen.contains("\nhost: hello.localhost:1234\n"), "{seen}");
    assert!(
        seen.contains("\nx-forwarded-for: 203.0.113.7, 127.0.0.1\n"),
        "{seen}"
    );
    assert!(seen.contains("\nx-forwarded-proto: http\n"), "{seen}");
    assert!(
        seen.contains("\nx-forwarded-host: hello.localhost:1234\n"),
        "{seen}"
    );
}

#[tokio::test]
async fn hop_by_hop_headers_are_removed_both_ways() {
    let h = Harness::start().await;
    // Written by hand: an HTTP client library would manage some of these itself.
    let mut stream = TcpStream::connect(h.addr).await.unwrap();
    stream
        .write_all(
            b"GET /echo HTTP/1.1\r\n\
              Host: hello.localhost\r\n\
              Connection: X-Foo, close\r\n\
              X-Foo: secret\r\n\
              Keep-Alive: timeout=5\r\n\
              Proxy-Connection: keep-alive\r\n\
              TE: trailers\r\n\
              Trailer: x-sum\r\n\
              Upgrade: websocket\r\n\
              X-Kept: yes\r\n\
              \r\n",
        )
        .await
        .unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut raw))
        .await
        .expect("proxy did not close the connection")
        .unwrap();
    let raw = String::from_utf8_lossy(&raw).to_ascii_lowercase();
    let (head, body) = raw.split_once("\r\n\r\n").expect("a response head");
    assert!(head.starts_with("http/1.1 200"), "{head}");

    // What the backend received.
    assert!(body.contains("\nx-kept: yes\n"), "{body}");
    for gone in [
        "x-foo",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "upgrade",
        "connection",
    ] {
        assert!(
            !body.contains(&format!("\n{gone}:")),
            "{gone} reached the backend: {body}"
        );
    }
    // What the client received from the backend's hop-by-hop response headers.
    assert!(head.contains("\r\nx-kept: 1"), "{head}");
    for gone in ["x-bar", "keep-alive"] {
        assert!(
            !head.contains(&format!("\r\n{gone}:")),
            "{gone} reached the client: {head}"
        );
    }
}
