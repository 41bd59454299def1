use std::collections::BTreeSet;

use bytes::Bytes;
use http::{Request, StatusCode, Version};
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::support::{Harness, REQUEST_TIMEOUT, collect};

#[tokio::test]
async fn h2c_prior_knowledge_is_proxied() {
    let h = Harness::start().await;
    let client = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http();
    let mut names = BTreeSet::new();
    for path in ["/", "/", "/", "/echo"] {
        // HTTP/2 carries the host in :authority, here "127.0.0.1:port", a domain of "hello".
        let request = Request::get(format!("http://{}{path}", h.addr))
            .body(Full::new(Bytes::new()))
            .unwrap();
        let response = tokio::time::timeout(REQUEST_TIMEOUT, client.request(request))
            .await
            .unwrap()
            .unwrap();
        let reply = collect(response).await;
        assert_eq!(
            (reply.status, reply.version),
            (StatusCode::OK, Version::HTTP_2)
        );
        if path == "/echo" {
            assert!(reply.body.starts_with("GET /echo\n"), "{}", reply.body);
            assert!(
                reply.body.contains(&format!("\nhost: {}\n", h.addr)),
                "{}",
                reply.body
            );
        } else {
            names.insert(reply.body);
        }
    }
    assert_eq!(names.len(), 3, "round robin over h2 too: {names:?}");
}

/// An HTTP/2-only backend named `name` that answers with what it saw: its name, the version,
/// the path, the `:authority` and any Host header.
async fn h2_backend(name: &'static str) -> std::net::SocketAddr {
    use hyper_util::rt::TokioIo;

    let backend = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = backend.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = backend.accept().await {
            let service = hyper::service::service_fn(
                move |req: http::Request<hyper::body::Incoming>| async move {
                    let hosts: Vec<_> = req.headers().get_all(http::header::HOST).iter().collect();
                    let text = format!(
                        "{name} {:?} {} authority={} host={hosts:?}",
                        req.version(),
                        req.uri().path(),
                        req.uri().authority().map_or("-", |a| a.as_str()),
                    );
                    Ok::<_, std::convert::Infallible>(http::Response::new(
                        http_body_util::Full::new(bytes::Bytes::from(text)),
                    ))
                },
            );
            tokio::spawn(
                hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service),
            );
        }
    });
    addr
}

#[tokio::test]
async fn h2_upstream_with_prior_knowledge() {
    use berth_proxy::{Cluster, Config, Proxy, Route, UpstreamProtocol, VirtualHost};

    let (a, b) = (h2_backend("a").await, h2_backend("b").await);
    let proxy = Proxy::new(Config {
        virtual_hosts: vec![VirtualHost {
            name: "all".into(),
            domains: vec!["*".into()],
            routes: vec![
                Route {
                    path_prefix: "/rewritten".into(),
                    cluster: "c".into(),
                    host_rewrite: Some("internal.svc:8080".into()),
                    ..Route::default()
                },
                Route {
                    path_prefix: "/".into(),
                    cluster: "c".into(),
                    ..Route::default()
                },
            ],
        }],
        clusters: vec![Cluster {
            upstream_protocol: UpstreamProtocol::H2,
            ..crate::support::cluster("c", &[a, b])
        }],
        ..Config::default()
    })
    .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { proxy.serve_http(listener, std::future::pending()).await });
    let client = Harness::client_for(addr);
    let mut seen = BTreeSet::new();
    for path in ["/a", "/b", "/c", "/d"] {
        let reply = client.get("app.example", path).await;
        assert_eq!(reply.status, StatusCode::OK);
        // The client's host in :authority (RFC 9113 8.3.1), no Host header beside it; the
        // connection to the endpoint all the same.
        let (name, rest) = reply.body.split_once(' ').unwrap();
        assert_eq!(
            rest,
            format!("HTTP/2.0 {path} authority=app.example host=[]")
        );
        seen.insert(name.to_owned());
        assert_eq!(
            reply.version,
            Version::HTTP_11,
            "the client keeps its own version"
        );
    }
    assert_eq!(seen.len(), 2, "both endpoints served: {seen:?}");
    let reply = client.get("app.example", "/rewritten").await;
    assert!(
        reply
            .body
            .ends_with(" HTTP/2.0 /rewritten authority=internal.svc:8080 host=[]"),
        "{}",
        reply.body
    );
}

/// The proxy tells HTTP/1 from h2 prior knowledge by peeking at the first bytes; a preface or
/// a request line that arrives in pieces must still be recognised.
#[tokio::test]
async fn protocol_detected_from_split_first_bytes() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let h = Harness::start().await;
    let pause = std::time::Duration::from_millis(50);

    // h2: the preface in two writes, then an empty SETTINGS frame; the server's first frame
    // is its own SETTINGS (type 4 on stream 0).
    let mut s = tokio::net::TcpStream::connect(h.addr).await.unwrap();
    s.write_all(b"PRI * HTTP/2.0\r\n").await.unwrap();
    tokio::time::sleep(pause).await;
    s.write_all(b"\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        .await
        .unwrap();
    let mut frame = [0u8; 9];
    tokio::time::timeout(REQUEST_TIMEOUT, s.read_exact(&mut frame))
        .await
        .unwrap()
        .unwrap();
    assert_eq!((frame[3], &frame[5..9]), (4, &[0u8; 4][..]), "{frame:?}");

    // HTTP/1: one byte, then the rest of the request.
    let mut s = tokio::net::TcpStream::connect(h.addr).await.unwrap();
    s.write_all(b"G").await.unwrap();
    tokio::time::sleep(pause).await;
    s.write_all(b"ET / HTTP/1.1\r\nhost: hello.localhost\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut reply = String::new();
    tokio::time::timeout(REQUEST_TIMEOUT, s.read_to_string(&mut reply))
        .await
        .unwrap()
        .unwrap();
    assert!(reply.starts_with("HTTP/1.1 200 OK\r\n"), "{reply}");
}
