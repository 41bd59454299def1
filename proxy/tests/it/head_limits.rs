//! Request head limits: 408 when a head is too slow, 431 when it has too many fields.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use berth_proxy::{Config, Limits, Proxy};
use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::support::{Backend, REQUEST_TIMEOUT, cluster, collect, vhost};

async fn serve(limits: Limits) -> (Backend, SocketAddr) {
    let b = Backend::start("b").await;
    let proxy = Proxy::new(Config {
        virtual_hosts: vec![vhost("v", &["*"], &[("/", "c")])],
        clusters: vec![cluster("c", &[b.addr])],
        limits,
        ..Config::default()
    })
    .unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { proxy.serve_http(listener, std::future::pending()).await });
    (b, addr)
}

fn timeout_ms(ms: u64) -> Limits {
    Limits {
        header_read_timeout_ms: ms,
        ..Limits::default()
    }
}

/// Everything the proxy sends until it closes the connection (bounded to 5 s).
async fn read_until_closed(stream: &mut TcpStream) -> String {
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut buf))
        .await
        .expect("the connection was not closed")
        .unwrap();
    String::from_utf8_lossy(&buf).into_owned()
}

#[tokio::test]
async fn partial_head_gets_408_after_the_timeout() {
    let (_b, addr) = serve(timeout_ms(300)).await;
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let started = Instant::now();
    stream
        .write_all(b"GET / HTTP/1.1\r\nhost: x\r\n")
        .await
        .unwrap();
    let answer = read_until_closed(&mut stream).await;
    assert!(
        answer.starts_with("HTTP/1.1 408 Request Timeout\r\n"),
        "{answer:?}"
    );
    assert!(answer.ends_with("\r\n\r\nrequest timeout\n"), "{answer:?}");
    assert!(started.elapsed() >= Duration::from_millis(250));
}

#[tokio::test]
async fn silent_new_connection_gets_408() {
    // Nothing at all: hyper's own timeout never starts (protocol detection waits for bytes).
    let (_b, addr) = serve(timeout_ms(300)).await;
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let answer = read_until_closed(&mut stream).await;
    assert!(answer.starts_with("HTTP/1.1 408 "), "{answer:?}");
}

/// Sends one complete request on `stream` and reads its whole response (body "b").
async fn one_request(stream: &mut TcpStream) {
    stream
        .write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 4096];
    let mut response = Vec::new();
    while !String::from_utf8_lossy(&response).ends_with("\r\n\r\nb") {
        let n = tokio::time::timeout(REQUEST_TIMEOUT, stream.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(
            n > 0,
            "closed early: {:?}",
            String::from_utf8_lossy(&response)
        );
        response.extend_from_slice(&buf[..n]);
    }
    assert!(response.starts_with(b"HTTP/1.1 200 OK\r\n"));
}

#[tokio::test]
async fn idle_keep_alive_connection_closes_without_an_answer() {
    let (_b, addr) = serve(timeout_ms(300)).await;
    let mut stream = TcpStream::connect(addr).await.unwrap();
    one_request(&mut stream).await;
    // Then silence: the connection closes with nothing more sent.
    let rest = read_until_closed(&mut stream).await;
    assert_eq!(rest, "", "an idle keep-alive connection gets no 408");

    // A second request started and stalled does get one.
    let mut stream = TcpStream::connect(addr).await.unwrap();
    one_request(&mut stream).await;
    stream.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
    let answer = read_until_closed(&mut stream).await;
    assert!(
        answer.starts_with("HTTP/1.1 408 Request Timeout\r\n"),
        "{answer:?}"
    );
}

fn head_with_fields(count: usize) -> String {
    let mut head = String::from("GET / HTTP/1.1\r\nhost: x\r\n");
    for i in 1..count {
        head.push_str(&format!("x-field-{i}: {i}\r\n"));
    }
    head.push_str("connection: close\r\n\r\n");
    head
}

#[tokio::test]
async fn too_many_header_fields_get_431_on_http1_and_h2() {
    let (_b, addr) = serve(Limits {
        max_header_count: 10,
        ..Limits::default()
    })
    .await;
    // host + 8 + connection = 10 fields: accepted; one more is refused.
    for (count, want) in [(9, "HTTP/1.1 200 OK"), (10, "HTTP/1.1 431 ")] {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream
            .write_all(head_with_fields(count).as_bytes())
            .await
            .unwrap();
        let answer = read_until_closed(&mut stream).await;
        assert!(answer.starts_with(want), "{count}: {answer:?}");
    }

    // HTTP/2 (h2c with prior knowledge): hyper bounds only the header list size, so the proxy
    // counts the fields itself.
    let client = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http();
    for (extra, want) in [
        (10, StatusCode::OK),
        (11, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE),
    ] {
        let mut request = Request::get(format!("http://{addr}/"));
        for i in 0..extra {
            request = request.header(format!("x-field-{i}"), "1");
        }
        let response = tokio::time::timeout(
            REQUEST_TIMEOUT,
            client.request(request.body(Full::new(Bytes::new())).unwrap()),
        )
        .await
        .unwrap()
        .unwrap();
        let reply = collect(response).await;
        assert_eq!(reply.status, want, "{extra} fields: {}", reply.body);
    }
}

#[tokio::test]
async fn bad_limits_are_refused_by_name() {
    for (limits, want) in [
        (
            Limits {
                max_header_count: 0,
                ..Limits::default()
            },
            "limits: max_header_count: must be at least 1",
        ),
        (
            Limits {
                max_header_bytes: 100,
                ..Limits::default()
            },
            "limits: max_header_bytes",
        ),
    ] {
        let error = Proxy::new(Config {
            limits,
            ..Config::default()
        })
        .unwrap_err()
        .to_string();
        assert!(error.contains(want), "{error:?}");
    }
}

#[tokio::test]
async fn tls_connection_without_a_request_gets_408_over_tls() {
    use std::sync::Arc;

    use berth_proxy::{Certificate, ListenerTls};
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, ServerName};

    let ca = crate::upstream_tls::Ca::new();
    let (cert_pem, key_pem) = ca.leaf(&["app.test"]);
    let b = Backend::start("b").await;
    let proxy = Proxy::new(Config {
        virtual_hosts: vec![vhost("v", &["*"], &[("/", "c")])],
        clusters: vec![cluster("c", &[b.addr])],
        certificates: vec![Certificate {
            name: "app".into(),
            domains: vec!["app.test".into()],
            cert_pem: Some(cert_pem),
            key_pem: Some(key_pem),
            ..Certificate::default()
        }],
        limits: timeout_ms(300),
        ..Config::default()
    })
    .unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        proxy
            .serve_https(listener, &ListenerTls::default(), std::future::pending())
            .await
    });

    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(ca.pem.as_bytes()).unwrap())
        .unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let tcp = TcpStream::connect(addr).await.unwrap();
    let mut stream = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("app.test").unwrap(), tcp)
        .await
        .unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer))
        .await
        .expect("the connection was not closed")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        answer.starts_with("HTTP/1.1 408 Request Timeout\r\n"),
        "{answer:?}"
    );
}

#[tokio::test]
async fn answered_408s_are_counted() {
    use berth_proxy::{Admin, Listener, ListenerProtocol, Listeners};

    let b = Backend::start("b").await;
    let [http, admin] = {
        let a = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let b = TcpListener::bind("127.0.0.1:0").await.unwrap();
        [a.local_addr().unwrap(), b.local_addr().unwrap()]
    };
    let config = Config {
        virtual_hosts: vec![vhost("v", &["*"], &[("/", "c")])],
        clusters: vec![cluster("c", &[b.addr])],
        listeners: vec![Listener {
            name: "web".into(),
            address: http,
            protocol: ListenerProtocol::Http,
            cluster: None,
            proxy_protocol: None,
            idle_timeout_ms: None,
            tls: None,
            virtual_host: None,
        }],
        admin: Some(Admin { address: admin }),
        limits: timeout_ms(200),
        ..Config::default()
    };
    let proxy = Proxy::new(config.clone()).unwrap();
    let mut listeners = Listeners::default();
    listeners.reconcile(&proxy, &config).await.unwrap();
    for _ in 0..2 {
        let mut stream = TcpStream::connect(http).await.unwrap();
        stream.write_all(b"GET / HT").await.unwrap();
        assert!(
            read_until_closed(&mut stream)
                .await
                .starts_with("HTTP/1.1 408 ")
        );
    }
    let metrics = crate::support::Harness::client_for(admin)
        .get("admin", "/metrics")
        .await
        .body;
    assert!(
        metrics.contains("berth_proxy_requests_total{cluster=\"\",code=\"408\"} 2"),
        "{metrics}"
    );
}
