//! Readiness checks against an instance's address: HTTP GET (2xx/3xx) or TCP connect.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Empty;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use std::collections::BTreeMap;

use crate::api::{Probe, Protocol, Template};

/// What to check, resolved against the instance's ports.
#[derive(Debug)]
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
    /// A command that must exit 0.
    Exec(tokio::process::Command),
}

/// The readiness check of a template given the instance's address and ports, with its timeout:
/// its readiness probe, or else every TCP port accepting connections.
pub(super) fn readiness(
    template: &Template,
    address: IpAddr,
    ports: &BTreeMap<String, u16>,
    exec: impl Fn(&[String]) -> tokio::process::Command,
) -> (Check, Duration) {
    match &template.readiness_probe {
        Some(p) => check_for(p, address, ports, exec),
        None => (
            Check::Tcp(
                template
                    .ports
                    .iter()
                    .filter(|p| p.protocol == Protocol::Tcp)
                    .filter_map(|p| ports.get(&p.name).map(|n| SocketAddr::new(address, *n)))
                    .collect(),
            ),
            Duration::from_secs(1),
        ),
    }
}

/// The check a probe describes, with its timeout. `exec` builds a command the way the instance
/// itself is started (environment, working directory).
pub(super) fn check_for(
    probe: &Probe,
    address: IpAddr,
    ports: &BTreeMap<String, u16>,
    exec: impl Fn(&[String]) -> tokio::process::Command,
) -> (Check, Duration) {
    let at = |name: &str| ports.get(name).map(|p| SocketAddr::new(address, *p));
    let check = match (&probe.http, &probe.tcp, &probe.exec) {
        (Some(h), _, _) => at(&h.port).map_or(Check::Tcp(Vec::new()), |addr| Check::Http {
            addr,
            path: h.path.clone(),
        }),
        (_, Some(t), _) => Check::Tcp(at(&t.port).into_iter().collect()),
        (_, _, Some(x)) => Check::Exec(exec(&x.command)),
        // Validation requires one; an empty TCP check always passes.
        _ => Check::Tcp(Vec::new()),
    };
    (check, Duration::from_secs(u64::from(probe.timeout_seconds)))
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
            Check::Exec(cmd) => {
                // Built fresh for each run by the caller's recipe is not possible through a
                // shared reference; spawn() only needs &mut, so clone the recipe cheaply.
                match clone_command(cmd).status().await {
                    Ok(s) => s.success(),
                    Err(_) => false,
                }
            }
        }
    })
    .await
    .unwrap_or(false)
}

/// A fresh `Command` with the same program, arguments, environment and directory: a command
/// runs once per `spawn`, and a probe runs many times.
fn clone_command(cmd: &tokio::process::Command) -> tokio::process::Command {
    let std = cmd.as_std();
    let mut c = tokio::process::Command::new(std.get_program());
    c.args(std.get_args());
    c.env_clear();
    for (k, v) in std.get_envs() {
        if let Some(v) = v {
            c.env(k, v);
        }
    }
    if let Some(d) = std.get_current_dir() {
        c.current_dir(d);
    }
    c.stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true);
    c
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
