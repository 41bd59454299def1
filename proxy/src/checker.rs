//! Active health checks: one background task per proxy walks the live snapshot and checks
//! every endpoint of every cluster that asks for it, at most one check per endpoint at a time.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, header};
use http_body_util::Empty;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;

use crate::config::HealthCheck;
use crate::connector::UpstreamTls;
use crate::health::now_ms;
use crate::proxy::WeakProxy;

/// How often the task looks for due checks.
const TICK: Duration = Duration::from_millis(50);

/// Runs until the proxy is dropped.
pub(crate) async fn run(proxy: WeakProxy) {
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(proxy) = proxy.upgrade() else {
            return;
        };
        let snapshot = proxy.snapshots().load_full();
        drop(proxy);
        let now = now_ms();
        for cluster in snapshot.clusters() {
            let Some(check) = &cluster.health_check else {
                continue;
            };
            for endpoint in cluster.endpoints.iter() {
                if !endpoint.load.health.claim_check(now, check.interval_ms) {
                    continue;
                }
                let (load, address, check) =
                    (endpoint.load.clone(), endpoint.address, check.clone());
                let cluster_name = cluster.name.clone();
                let tls = cluster.upstream_tls.clone();
                tokio::spawn(async move {
                    let passed = probe(address, &check, tls.as_ref()).await;
                    let changed = load.health.record_check(
                        passed,
                        check.healthy_threshold,
                        check.unhealthy_threshold,
                    );
                    log_change(&cluster_name, address, changed);
                });
            }
        }
    }
}

fn log_change(cluster: &str, address: SocketAddr, changed: Option<bool>) {
    match changed {
        Some(true) => tracing::warn!(cluster, endpoint = %address, "health check: endpoint down"),
        Some(false) => tracing::info!(cluster, endpoint = %address, "health check: endpoint up"),
        None => {}
    }
}

/// One check: a TCP connect, and with `http_path` a GET that must answer 2xx or 3xx, all
/// within the timeout. On a TLS cluster the GET goes over TLS, verified like requests, in
/// HTTP/2 if ALPN picked it.
async fn probe(address: SocketAddr, check: &HealthCheck, tls: Option<&UpstreamTls>) -> bool {
    let timeout = Duration::from_millis(check.timeout_ms.max(1));
    tokio::time::timeout(timeout, async {
        let stream = TcpStream::connect(address).await.ok()?;
        let Some(path) = &check.http_path else {
            return Some(true);
        };
        let request = Request::get(path.as_str())
            .header(header::HOST, address.to_string())
            .header(header::USER_AGENT, "berth-proxy-health-check")
            .body(Empty::<Bytes>::new())
            .ok()?;
        let response = match tls {
            None => send_http1(TokioIo::new(stream), request).await?,
            Some(tls) => {
                let stream = tls.connect(tls.name_for(address), stream).await.ok()?;
                if stream.get_ref().1.alpn_protocol() == Some(b"h2") {
                    let (mut sender, connection) = hyper::client::conn::http2::handshake(
                        TokioExecutor::new(),
                        TokioIo::new(stream),
                    )
                    .await
                    .ok()?;
                    tokio::spawn(connection);
                    let mut request = request;
                    request.headers_mut().remove(header::HOST);
                    *request.uri_mut() = format!("https://{address}{path}").parse().ok()?;
                    sender.send_request(request).await.ok()?
                } else {
                    send_http1(TokioIo::new(stream), request).await?
                }
            }
        };
        let status = response.status();
        Some(status.is_success() || status.is_redirection())
    })
    .await
    .ok()
    .flatten()
    .unwrap_or(false)
}

async fn send_http1<I>(
    io: I,
    request: Request<Empty<Bytes>>,
) -> Option<http::Response<hyper::body::Incoming>>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(io).await.ok()?;
    tokio::spawn(connection);
    sender.send_request(request).await.ok()
}
