//! The admin listener: metrics, the live config and endpoint states, over plain HTTP/1.1.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use serde::Serialize;
use tokio::net::TcpListener;
use tokio::task::JoinSet;

use crate::Proxy;

/// Admin connections are few; a small bound keeps a misbehaving scraper from piling them up.
const MAX_ADMIN_CONNECTIONS: usize = 64;

pub(crate) async fn serve_admin(
    proxy: Proxy,
    listener: TcpListener,
    mut shutdown: Pin<Box<dyn Future<Output = ()> + Send>>,
) -> io::Result<()> {
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "serving admin");
    }
    let mut connections = JoinSet::new();
    loop {
        let (stream, _) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        while connections.try_join_next().is_some() {}
        if connections.len() >= MAX_ADMIN_CONNECTIONS {
            continue;
        }
        let proxy = proxy.clone();
        connections.spawn(async move {
            let service = service_fn(move |request| {
                let response = answer(&proxy, &request);
                async move { Ok::<_, Infallible>(response) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10))
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
    connections.shutdown().await;
    Ok(())
}

impl Proxy {
    /// Serves the admin endpoints (`/metrics`, `/config`, `/endpoints[?cluster=NAME...]`,
    /// `/ready`) on an already bound listener until `shutdown` completes: for embedders that
    /// bind their own sockets rather than declaring `admin` in the config.
    pub async fn serve_admin(
        &self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> io::Result<()> {
        serve_admin(self.clone(), listener, Box::pin(shutdown)).await
    }
}

fn answer(proxy: &Proxy, request: &Request<Incoming>) -> Response<Full<Bytes>> {
    if request.method() != Method::GET {
        return text(StatusCode::METHOD_NOT_ALLOWED, "only GET\n".into());
    }
    match request.uri().path() {
        "/metrics" => {
            let body = proxy.metrics().encode(&proxy.snapshots().load());
            let mut response = text(StatusCode::OK, body);
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            response
        }
        "/config" => json(&*proxy.config()),
        "/endpoints" => json(&endpoint_states(
            proxy,
            &clusters_asked(request.uri().query()),
        )),
        "/ready" => text(StatusCode::OK, "ready\n".into()),
        _ => text(
            StatusCode::NOT_FOUND,
            "try /metrics, /config, /endpoints or /ready\n".into(),
        ),
    }
}

#[derive(Serialize)]
struct EndpointStates {
    revision: u64,
    clusters: Vec<ClusterState>,
}

#[derive(Serialize)]
struct ClusterState {
    name: String,
    lb_policy: crate::LbPolicy,
    endpoints: Vec<EndpointState>,
}

#[derive(Serialize)]
struct EndpointState {
    address: std::net::SocketAddr,
    weight: u32,
    in_flight: u64,
    requests: u64,
    failures: u64,
    /// New requests may go here: not ejected, not down by active checks.
    healthy: bool,
    ejected: bool,
    down: bool,
    ejections: u32,
}

/// The clusters a `?cluster=a&cluster=b` query names (percent-encoded or not); empty means all.
fn clusters_asked(query: Option<&str>) -> Vec<String> {
    query
        .unwrap_or_default()
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .filter(|(k, _)| *k == "cluster")
        .map(|(_, v)| percent_decode(v))
        .collect()
}

/// `%XX` escapes and `+` decoded; a malformed escape is kept as it is.
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| char::from(b).to_digit(16);
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                    (Some(h), Some(l)) => {
                        // Two hex digits: at most 255.
                        out.push(u8::try_from(h * 16 + l).unwrap_or(b'?'));
                        i += 3;
                        continue;
                    }
                    _ => out.push(b'%'),
                }
            }
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn endpoint_states(proxy: &Proxy, only: &[String]) -> EndpointStates {
    let snapshot = proxy.snapshots().load();
    let now = crate::health::now_ms();
    EndpointStates {
        revision: snapshot.revision,
        clusters: snapshot
            .clusters()
            .iter()
            .filter(|c| only.is_empty() || only.iter().any(|n| **n == *c.name))
            .map(|c| ClusterState {
                name: c.name.to_string(),
                lb_policy: c.policy,
                endpoints: c
                    .endpoints
                    .iter()
                    .map(|e| EndpointState {
                        address: e.address,
                        weight: e.weight,
                        in_flight: e.load.in_flight(),
                        requests: e.load.total(),
                        failures: e.load.failures(),
                        healthy: e.load.health.is_healthy(now),
                        ejected: e.load.health.is_ejected(now),
                        down: e.load.health.is_down(),
                        ejections: e.load.health.ejections(),
                    })
                    .collect(),
            })
            .collect(),
    }
}

fn json(value: &impl Serialize) -> Response<Full<Bytes>> {
    match serde_json::to_vec_pretty(value) {
        Ok(body) => {
            let mut response = Response::new(Full::new(Bytes::from(body)));
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            response
        }
        Err(error) => text(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot encode: {error}\n"),
        ),
    }
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_filter_reads_encoded_names() {
        assert_eq!(
            clusters_asked(Some(
                "cluster=default%2Fweb%3Ahttp&x=1&cluster=a+b&cluster=%zz"
            )),
            vec!["default/web:http", "a b", "%zz"]
        );
        assert!(clusters_asked(None).is_empty());
        assert!(clusters_asked(Some("clusters=a&cluster")).is_empty());
        assert_eq!(percent_decode("ab%4"), "ab%4");
    }
}
