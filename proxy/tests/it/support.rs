//! Backends, a running proxy and a client, all on 127.0.0.1:0.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use berth_proxy::{Cluster, Config, Endpoint, LbPolicy, Proxy, Route, VirtualHost};
use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode, Version};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Bound on any one request in these tests.
pub(crate) const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// An HTTP/1.1 backend that answers with its name.
///
/// `/echo` answers with the request line, headers and body it received (and a few hop-by-hop
/// response headers); `/slow` answers after 300 ms.
pub(crate) struct Backend {
    pub(crate) name: &'static str,
    pub(crate) addr: SocketAddr,
}

impl Backend {
    pub(crate) async fn start(name: &'static str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let service = service_fn(move |req| answer(name, req));
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service),
                );
            }
        });
        Self { name, addr }
    }
}

async fn answer(
    name: &'static str,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let mut response = Response::builder().header("x-backend", name);
    let text = match parts.uri.path() {
        "/echo" => {
            response = response
                .header("keep-alive", "timeout=5")
                .header("connection", "x-bar")
                .header("x-bar", "1")
                .header("x-kept", "1");
            let mut text = format!("{} {}\n", parts.method, parts.uri);
            for (name, value) in &parts.headers {
                text.push_str(&format!(
                    "{name}: {}\n",
                    value.to_str().unwrap_or("<bytes>")
                ));
            }
            text.push('\n');
            text.push_str(&String::from_utf8_lossy(&body));
            text
        }
        "/slow" => {
            tokio::time::sleep(Duration::from_millis(300)).await;
            name.to_owned()
        }
        _ => name.to_owned(),
    };
    Ok(response.body(Full::new(Bytes::from(text))).unwrap())
}

/// A port that refuses connections: bound, then closed.
pub(crate) async fn dead_addr() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap()
}

pub(crate) fn vhost(name: &str, domains: &[&str], routes: &[(&str, &str)]) -> VirtualHost {
    VirtualHost {
        name: name.into(),
        domains: domains.iter().map(|&d| d.into()).collect(),
        routes: routes
            .iter()
            .map(|&(prefix, cluster)| Route {
                path_prefix: prefix.into(),
                cluster: cluster.into(),
                ..Route::default()
            })
            .collect(),
    }
}

pub(crate) fn cluster(name: &str, addrs: &[SocketAddr]) -> Cluster {
    Cluster {
        name: name.into(),
        lb_policy: LbPolicy::RoundRobin,
        endpoints: endpoints(addrs),
        ..Cluster::default()
    }
}

pub(crate) fn endpoints(addrs: &[SocketAddr]) -> Vec<Endpoint> {
    addrs.iter().copied().map(Endpoint::new).collect()
}

/// A reply, body collected.
#[derive(Debug)]
pub(crate) struct Reply {
    pub(crate) status: StatusCode,
    pub(crate) version: Version,
    pub(crate) headers: HeaderMap,
    pub(crate) body: String,
}

/// Three backends behind a running proxy.
///
/// Virtual hosts: `hello.localhost` and `127.0.0.1` → cluster `hello` (all three backends);
/// `empty.localhost` → `empty` (no endpoints); `dead.localhost` → `dead` (a refused port);
/// `mixed.localhost` → `mixed` (the refused port and backend 0); `api.localhost` has only
/// `/api` → `hello`.
pub(crate) struct Harness {
    pub(crate) backends: Vec<Backend>,
    pub(crate) dead: SocketAddr,
    pub(crate) proxy: Proxy,
    pub(crate) addr: SocketAddr,
    pub(crate) client: Client<HttpConnector, Full<Bytes>>,
    shutdown: Option<oneshot::Sender<()>>,
    served: Option<JoinHandle<std::io::Result<()>>>,
}

impl Harness {
    pub(crate) async fn start() -> Self {
        let backends = vec![
            Backend::start("b0").await,
            Backend::start("b1").await,
            Backend::start("b2").await,
        ];
        let dead = dead_addr().await;
        let proxy = Proxy::new(Self::config_for(&backends, dead)).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (shutdown, stop) = oneshot::channel::<()>();
        let served = tokio::spawn({
            let proxy = proxy.clone();
            async move {
                proxy
                    .serve_http(listener, async move {
                        let _ = stop.await;
                    })
                    .await
            }
        });
        let client = Client::builder(TokioExecutor::new()).build_http();
        Self {
            backends,
            dead,
            proxy,
            addr,
            client,
            shutdown: Some(shutdown),
            served: Some(served),
        }
    }

    pub(crate) fn config(&self) -> Config {
        Self::config_for(&self.backends, self.dead)
    }

    fn config_for(backends: &[Backend], dead: SocketAddr) -> Config {
        let all: Vec<SocketAddr> = backends.iter().map(|b| b.addr).collect();
        Config {
            virtual_hosts: vec![
                vhost(
                    "hello",
                    &["hello.localhost", "127.0.0.1"],
                    &[("/", "hello")],
                ),
                vhost("empty", &["empty.localhost"], &[("/", "empty")]),
                vhost("dead", &["dead.localhost"], &[("/", "dead")]),
                vhost("mixed", &["mixed.localhost"], &[("/", "mixed")]),
                vhost("api", &["api.localhost"], &[("/api", "hello")]),
            ],
            clusters: vec![
                cluster("hello", &all),
                cluster("empty", &[]),
                cluster("dead", &[dead]),
                cluster("mixed", &[dead, all[0]]),
            ],
            ..Config::default()
        }
    }

    /// A client for a proxy listening on `addr`.
    pub(crate) fn client_for(addr: SocketAddr) -> TestClient {
        TestClient {
            addr,
            client: Client::builder(TokioExecutor::new()).build_http(),
        }
    }

    pub(crate) fn addrs(&self) -> Vec<SocketAddr> {
        self.backends.iter().map(|b| b.addr).collect()
    }

    pub(crate) async fn get(&self, host: &str, path: &str) -> Reply {
        self.send(host, "GET", path, Bytes::new(), &[]).await
    }

    pub(crate) async fn send(
        &self,
        host: &str,
        method: &str,
        path: &str,
        body: Bytes,
        headers: &[(&str, &str)],
    ) -> Reply {
        TestClient {
            addr: self.addr,
            client: self.client.clone(),
        }
        .send(host, method, path, body, headers)
        .await
    }

    /// Stops the proxy and waits for `serve_http` to return.
    pub(crate) fn stop(&mut self) -> JoinHandle<std::io::Result<()>> {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        self.served.take().expect("stopped twice")
    }
}

/// A pooled HTTP/1.1 client aimed at one proxy address.
#[derive(Clone)]
pub(crate) struct TestClient {
    pub(crate) addr: SocketAddr,
    pub(crate) client: Client<HttpConnector, Full<Bytes>>,
}

impl TestClient {
    pub(crate) async fn get(&self, host: &str, path: &str) -> Reply {
        self.send(host, "GET", path, Bytes::new(), &[]).await
    }

    pub(crate) async fn send(
        &self,
        host: &str,
        method: &str,
        path: &str,
        body: Bytes,
        headers: &[(&str, &str)],
    ) -> Reply {
        let mut request = Request::builder()
            .method(method)
            .uri(format!("http://{}{path}", self.addr))
            .header("host", host);
        for &(name, value) in headers {
            request = request.header(name, value);
        }
        let request = request.body(Full::new(body)).unwrap();
        let response = tokio::time::timeout(REQUEST_TIMEOUT, self.client.request(request))
            .await
            .expect("request timed out")
            .expect("request failed");
        collect(response).await
    }
}

pub(crate) async fn collect(response: Response<Incoming>) -> Reply {
    let (parts, body) = response.into_parts();
    let body = tokio::time::timeout(REQUEST_TIMEOUT, body.collect())
        .await
        .expect("body timed out")
        .expect("body failed")
        .to_bytes();
    Reply {
        status: parts.status,
        version: parts.version,
        headers: parts.headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

/// A backend like [`Backend`] that can be killed: its listener and every open connection
/// close at once, as when the process dies.
pub(crate) struct KillableBackend {
    pub(crate) addr: SocketAddr,
    task: JoinHandle<()>,
}

impl KillableBackend {
    pub(crate) async fn start(name: &'static str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            // Owned by this task: aborting it drops (and so aborts) every connection.
            let mut connections = tokio::task::JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let service = service_fn(move |req| answer(name, req));
                connections.spawn(async move {
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self { addr, task }
    }

    pub(crate) async fn kill(self) {
        self.task.abort();
        let _ = self.task.await;
    }
}
