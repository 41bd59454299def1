//! Readiness checks against an instance's address: HTTP GET (2xx/3xx) or TCP connect.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Empty;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::api::{Probe, Protocol, Template};

/// What to check, resolved against the instance's ports.
#[derive(Clone, Debug)]
pub(super) enum Check {
    /// HTTP GET of a path.
    Http {
        /// Where.
        addr: SocketAddr,
        /// Which path.
        path: String,
    },
    /// TCP connect to each address.
    Tcp(Vec<SocketAddr>),
}

/// The check of a template given the instance's address and ports, with its timeout.
pub(super) fn check_for(
    template: &Template,
    address: IpAddr,
    ports: &std::collections::BTreeMap<String, u16>,
) -> (Check, Duration) {
    let at = |name: &str| ports.get(name).map(|p| SocketAddr::new(address, *p));
    match &template.readiness_probe {
        Some(Probe {
            http: Some(h),
            timeout_seconds,
            ..
        }) => (
            at(&h.port).map_or(Check::Tcp(Vec::new()), |addr| Check::Http {
                addr,
                path: h.path.clone(),
            }),
            Duration::from_secs(u64::from(*timeout_seconds)),
        ),
        Some(Probe {
            tcp: Some(t),
            timeout_seconds,
            ..
        }) => (
            Check::Tcp(at(&t.port).into_iter().collect()),
            Duration::from_secs(u64::from(*timeout_seconds)),
        ),
        _ => (
            Check::Tcp(
                template
                    .ports
                    .iter()
                    .filter(|p| p.protocol == Protocol::Tcp)
                    .filter_map(|p| at(&p.name))
                    .collect(),
            ),
            Duration::from_secs(1),
        ),
    }
}

/// Runs a check; true when it passes within `timeout`.
pub(super) async fn run(check: &Check, timeout: Duration) -> bool {
    tokio::time::timeout(timeout, async {
        match check {
            Check::Tcp(addrs) => {
                for a in addrs {
                    if TcpStream::connect(a).await.is_err() {
                        return false;
                    }
                }
                true
            }
            Check::Http { addr, path } => http_get(*addr, path).await.unwrap_or(false),
        }
    })
    .await
    .unwrap_or(false)
}

async fn http_get(
    addr: SocketAddr,
    path: &str,
) -> Result<bool, Box<dyn std::error::Error + Send + Sync>> {
    let stream = TcpStream::connect(addr).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    let conn = tokio::spawn(conn);
    let req = hyper::Request::get(path)
        .header(http::header::HOST, addr.to_string())
        .header(http::header::USER_AGENT, "berth-probe")
        .body(Empty::<Bytes>::new())?;
    let resp = sender.send_request(req).await?;
    conn.abort();
    let s = resp.status().as_u16();
    Ok((200..400).contains(&s))
}
