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
        "/endpoints" => json(&endpoint_states(proxy)),
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

fn endpoint_states(proxy: &Proxy) -> EndpointStates {
    let snapshot = proxy.snapshots().load();
    let now = crate::health::now_ms();
    EndpointStates {
        revision: snapshot.revision,
        clusters: snapshot
            .clusters()
            .iter()
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
