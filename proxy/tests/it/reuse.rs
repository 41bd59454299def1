//! Upstream connection reuse: a keep-alive client keeps one upstream connection, closed
//! downstream connections leave theirs to the next client, and whatever ends a response
//! (length, chunked, no body, early close by the server) frees or drops the connection right.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use berth_proxy::{Config, Proxy};
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Frame;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::support::{REQUEST_TIMEOUT, cluster, vhost};

/// A backend that counts the connections it accepted. `/chunked` streams its body in two
/// chunks without a length, `/empty` answers 204.
struct Counting {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
}

impl Counting {
    async fn start(name: &'static str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let counter = accepted.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                counter.fetch_add(1, Ordering::SeqCst);
                let service = service_fn(move |request: Request<hyper::body::Incoming>| {
                    let path = request.uri().path().to_owned();
                    async move {
                        let body = match path.as_str() {
                            "/chunked" => Chunks([name.as_bytes(), b"\n"].into()).boxed(),
                            "/empty" => Empty::new().boxed(),
                            _ => Full::new(Bytes::from_static(name.as_bytes())).boxed(),
                        };
                        let mut response = Response::new(body);
                        if path == "/empty" {
                            *response.status_mut() = StatusCode::NO_CONTENT;
                        }
                        Ok::<_, Infallible>(response)
                    }
                });
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service),
                );
            }
        });
        Self { addr, accepted }
    }

    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

/// A body of ready chunks without a length: HTTP/1.1 sends it chunked.
struct Chunks(std::collections::VecDeque<&'static [u8]>);

impl hyper::body::Body for Chunks {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let chunk = self.get_mut().0.pop_front();
        std::task::Poll::Ready(chunk.map(|c| Ok(Frame::data(Bytes::from_static(c)))))
    }
}

async fn proxy_to(addrs: &[SocketAddr]) -> (Proxy, SocketAddr) {
    let config = Config {
        virtual_hosts: vec![vhost("all", &["*"], &[("/", "c")])],
        clusters: vec![cluster("c", addrs)],
        ..Config::default()
    };
    let proxy = Proxy::new(config).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let serving = proxy.clone();
    tokio::spawn(async move { serving.serve_http(listener, std::future::pending()).await });
    (proxy, addr)
}

/// One downstream keep-alive connection.
async fn connect(addr: SocketAddr) -> hyper::client::conn::http1::SendRequest<Empty<Bytes>> {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(connection);
    sender
}

async fn request(
    sender: &mut hyper::client::conn::http1::SendRequest<Empty<Bytes>>,
    method: Method,
    path: &str,
) -> (StatusCode, String) {
    let request = Request::builder()
        .method(method)
        .uri(path)
        .header("host", "reuse.test")
        .body(Empty::new())
        .unwrap();
    tokio::time::timeout(REQUEST_TIMEOUT, async {
        sender.ready().await.unwrap();
        let response = sender.send_request(request).await.unwrap();
        let status = response.status();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned())
    })
    .await
    .expect("request timed out")
}

#[tokio::test]
async fn keep_alive_client_uses_one_upstream_connection_whatever_ends_the_body() {
    let backend = Counting::start("b").await;
    let (_proxy, addr) = proxy_to(&[backend.addr]).await;
    let mut client = connect(addr).await;
    for round in 0..5 {
        assert_eq!(
            request(&mut client, Method::GET, "/").await.1,
            "b",
            "{round}"
        );
        assert_eq!(request(&mut client, Method::GET, "/chunked").await.1, "b\n");
        assert_eq!(
            request(&mut client, Method::GET, "/empty").await.0,
            StatusCode::NO_CONTENT
        );
        assert_eq!(
            request(&mut client, Method::HEAD, "/").await.0,
            StatusCode::OK
        );
    }
    assert_eq!(
        backend.accepted(),
        1,
        "every request on the same upstream connection"
    );
}

#[tokio::test]
async fn closed_client_connections_leave_theirs_to_the_next_client() {
    let backend = Counting::start("b").await;
    let (_proxy, addr) = proxy_to(&[backend.addr]).await;
    for _ in 0..10 {
        let mut client = connect(addr).await;
        assert_eq!(request(&mut client, Method::GET, "/").await.1, "b");
        drop(client);
        // The downstream connection ends once the proxy sees its close; give it that moment.
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(
        backend.accepted(),
        1,
        "one pooled upstream connection served all"
    );
}

#[tokio::test]
async fn alternating_endpoints_reuse_one_connection_each() {
    let (b0, b1) = (Counting::start("b0").await, Counting::start("b1").await);
    let (_proxy, addr) = proxy_to(&[b0.addr, b1.addr]).await;
    let mut client = connect(addr).await;
    let mut seen = Vec::new();
    for _ in 0..10 {
        seen.push(request(&mut client, Method::GET, "/").await.1);
    }
    assert!(seen.contains(&"b0".to_owned()) && seen.contains(&"b1".to_owned()));
    assert_eq!((b0.accepted(), b1.accepted()), (1, 1));
}

#[tokio::test]
async fn concurrent_clients_get_their_own_upstream_connections() {
    let backend = Counting::start("b").await;
    let (_proxy, addr) = proxy_to(&[backend.addr]).await;
    let mut clients = tokio::task::JoinSet::new();
    for _ in 0..4 {
        let mut client = connect(addr).await;
        clients.spawn(async move {
            for _ in 0..20 {
                let (status, body) = request(&mut client, Method::GET, "/chunked").await;
                assert_eq!((status, body.as_str()), (StatusCode::OK, "b\n"));
            }
        });
    }
    while let Some(done) = clients.join_next().await {
        done.unwrap();
    }
    let accepted = backend.accepted();
    assert!(
        (1..=4).contains(&accepted),
        "{accepted} upstream connections"
    );
}

/// A backend that answers one request per connection and then closes it without saying so
/// (no `Connection: close`), as servers with a short keep-alive do.
async fn closing_backend() -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = accepted.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                continue;
            };
            counter.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = stream
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                    .await;
            });
        }
    });
    (addr, accepted)
}

#[tokio::test]
async fn upstream_closing_idle_connections_costs_no_request() {
    let (backend, accepted) = closing_backend().await;
    let (_proxy, addr) = proxy_to(&[backend]).await;
    let mut client = connect(addr).await;
    for i in 0..20 {
        let (status, body) = request(&mut client, Method::GET, "/").await;
        assert_eq!(
            (status, body.as_str()),
            (StatusCode::OK, "ok"),
            "request {i}"
        );
        if i % 2 == 0 {
            // Sometimes the next request comes before the close is seen, sometimes after.
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 20);
}
