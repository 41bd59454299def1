//! Running the proxy alone from a config file: `berth proxy --config FILE`.
//!
//! The file is the whole [`Config`], YAML or JSON. Its listeners and admin listener are bound
//! here; a SIGHUP, or a change of the file's content (polled every second, so editors that
//! replace the file and bind mounts that swap it both count), reloads it. A reload that fails
//! to read, parse or validate leaves the running config untouched and logs why.

use std::collections::BTreeMap;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::Proxy;
use crate::config::{Config, ListenerProtocol, ProxyProtocol};
use crate::error::ConfigError;
use crate::tcp::TcpRoute;

/// How often the config file is checked for changes.
const POLL_INTERVAL: Duration = Duration::from_secs(1);

/// How long to retry binding an address that a listener being replaced still holds.
const REBIND_PATIENCE: Duration = Duration::from_secs(2);

/// Why [`run_from_file`] could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RunError {
    /// The file could not be read.
    #[error("cannot read config file {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The file is not a valid config document.
    #[error("cannot parse config file {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message, with line and column.
        message: String,
    },
    /// The config parsed but was refused.
    #[error("config file {path} is invalid")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        #[source]
        source: ConfigError,
    },
    /// A listener could not be bound.
    #[error("cannot bind listener {listener:?} on {address}")]
    Bind {
        /// The listener's name ("admin" for the admin listener).
        listener: String,
        /// Its address.
        address: SocketAddr,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The SIGHUP handler could not be installed.
    #[error("cannot install the SIGHUP handler")]
    Signal(#[source] io::Error),
}

/// Reads and parses a config file: JSON if its name ends in `.json`, YAML otherwise.
pub fn load_config(path: &Path) -> Result<Config, RunError> {
    let bytes = std::fs::read(path).map_err(|source| RunError::Read {
        path: path.to_owned(),
        source,
    })?;
    parse_config(path, &bytes)
}

pub(crate) fn parse_config(path: &Path, bytes: &[u8]) -> Result<Config, RunError> {
    let parse_error = |message: String| RunError::Parse {
        path: path.to_owned(),
        message,
    };
    if path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("json"))
    {
        serde_json::from_slice(bytes).map_err(|e| parse_error(e.to_string()))
    } else {
        serde_yaml_ng::from_slice(bytes).map_err(|e| parse_error(e.to_string()))
    }
}

/// Runs the proxy that the config file at `path` describes until `shutdown` completes: binds
/// its listeners and admin listener, reloads on SIGHUP and when the file changes (a bad
/// reload is logged and the running config kept), and on shutdown stops accepting and lets
/// open connections finish within the drain timeout.
///
/// Fails only at start: unreadable, unparsable or invalid file, a listener that cannot bind.
pub async fn run_from_file(
    path: &Path,
    shutdown: impl Future<Output = ()>,
) -> Result<(), RunError> {
    let bytes = std::fs::read(path).map_err(|source| RunError::Read {
        path: path.to_owned(),
        source,
    })?;
    let config = parse_config(path, &bytes)?;
    let proxy = Proxy::new(config.clone()).map_err(|source| RunError::Invalid {
        path: path.to_owned(),
        source,
    })?;
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .map_err(RunError::Signal)?;
    let mut listeners = Listeners::default();
    if let Err(error) = listeners.reconcile(&proxy, &config).await {
        listeners.stop_all().await;
        return Err(error);
    }
    tracing::info!(path = %path.display(), revision = proxy.revision(), "proxy running");

    let mut seen = bytes;
    let mut poll = tokio::time::interval(POLL_INTERVAL);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let forced = tokio::select! {
            () = &mut shutdown => break,
            _ = hangup.recv() => true,
            _ = poll.tick() => false,
        };
        let bytes = match std::fs::read(path) {
            Ok(bytes) => bytes,
            Err(error) => {
                // A file being replaced may be missing for a moment; a SIGHUP deserves a word.
                if forced {
                    tracing::error!(path = %path.display(), %error, "reload failed, keeping the running config");
                }
                continue;
            }
        };
        if !forced && bytes == seen {
            continue;
        }
        // Remembered even when bad, so that one bad edit is reported once, not every second.
        seen = bytes;
        reload(&proxy, &mut listeners, path, &seen).await;
    }
    tracing::info!("proxy shutting down");
    listeners.stop_all().await;
    Ok(())
}

async fn reload(proxy: &Proxy, listeners: &mut Listeners, path: &Path, bytes: &[u8]) {
    let config = match parse_config(path, bytes) {
        Ok(config) => config,
        Err(error) => {
            tracing::error!(
                error = &error as &dyn std::error::Error,
                "reload failed, keeping the running config"
            );
            return;
        }
    };
    if let Err(error) = proxy.apply(config.clone()) {
        tracing::error!(path = %path.display(), error = &error as &dyn std::error::Error, "reload refused, keeping the running config");
        return;
    }
    match listeners.reconcile(proxy, &config).await {
        Ok(()) => {
            tracing::info!(path = %path.display(), revision = proxy.revision(), "config reloaded")
        }
        Err(error) => tracing::error!(
            error = &error as &dyn std::error::Error,
            "config reloaded, but a listener could not be bound"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_config_parses_and_builds() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/proxy.yaml");
        let mut config = load_config(&path).unwrap();
        assert_eq!(config.listeners.len(), 3);
        // The certificate files are placeholders; everything else must build.
        config.certificates.clear();
        config.listeners.retain(|l| l.tls.is_none());
        for cluster in &mut config.clusters {
            cluster.tls = None;
        }
        crate::snapshot::Snapshot::build(&config, None).unwrap();
    }

    #[test]
    fn json_and_yaml_errors_name_the_place() {
        let err = parse_config(Path::new("a.json"), b"{\"clusters\": 3}").unwrap_err();
        assert!(
            err.to_string().contains("a.json") && err.to_string().contains("line 1"),
            "{err}"
        );
        let err =
            parse_config(Path::new("a.yaml"), b"clusters:\n  - name: a\n    lb: x\n").unwrap_err();
        assert!(err.to_string().contains("unknown field `lb`"), "{err}");
    }
}

/// What one bound socket does.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Kind {
    Admin,
    Http {
        tls: Option<crate::config::ListenerTls>,
    },
    Tcp {
        cluster: String,
        proxy_protocol: Option<ProxyProtocol>,
        idle_timeout_ms: u64,
    },
    Udp {
        cluster: String,
        idle_timeout_ms: u64,
    },
}

#[derive(Debug)]
struct Running {
    address: SocketAddr,
    kind: Kind,
    stop: oneshot::Sender<()>,
    task: JoinHandle<io::Result<()>>,
}

/// The listeners currently bound, by name ("admin" for the admin listener, which a regular
/// listener cannot shadow because it lives under a separate key).
///
/// Embedders that build the config themselves (the berth agent) keep one of these beside their
/// [`Proxy`] and call [`Listeners::reconcile`] after each [`Proxy::apply`].
#[derive(Debug, Default)]
pub struct Listeners {
    running: BTreeMap<(bool, String), Running>,
}

impl Listeners {
    /// Binds what `config` declares and is not bound yet; stops what it no longer declares or
    /// declares differently. Bind errors are collected; the first is returned after trying
    /// every listener.
    pub async fn reconcile(&mut self, proxy: &Proxy, config: &Config) -> Result<(), RunError> {
        let mut desired: BTreeMap<(bool, String), (SocketAddr, Kind)> = config
            .listeners
            .iter()
            .map(|l| {
                let kind = match l.protocol {
                    ListenerProtocol::Http => Kind::Http { tls: l.tls.clone() },
                    ListenerProtocol::Tcp => Kind::Tcp {
                        // Validated by the snapshot build: a tcp listener has a cluster.
                        cluster: l.cluster.clone().unwrap_or_default(),
                        proxy_protocol: l.proxy_protocol,
                        idle_timeout_ms: l
                            .idle_timeout_ms
                            .unwrap_or(crate::config::DEFAULT_TCP_IDLE_TIMEOUT_MS),
                    },
                    ListenerProtocol::Udp => Kind::Udp {
                        cluster: l.cluster.clone().unwrap_or_default(),
                        idle_timeout_ms: l
                            .idle_timeout_ms
                            .unwrap_or(crate::config::DEFAULT_UDP_IDLE_TIMEOUT_MS),
                    },
                };
                ((false, l.name.clone()), (l.address, kind))
            })
            .collect();
        if let Some(admin) = &config.admin {
            desired.insert((true, "admin".to_owned()), (admin.address, Kind::Admin));
        }
        let stale: Vec<_> = self
            .running
            .iter()
            .filter(|(key, r)| desired.get(*key) != Some(&(r.address, r.kind.clone())))
            .map(|(key, _)| key.clone())
            .collect();
        for key in stale {
            if let Some(running) = self.running.remove(&key) {
                tracing::info!(listener = key.1, address = %running.address, "stopping listener");
                let _ = running.stop.send(());
                // The listener drains in the background; its socket closes at once.
            }
        }
        let mut first_error = None;
        for (key, (address, kind)) in desired {
            if self.running.contains_key(&key) {
                continue;
            }
            match bind(address, matches!(kind, Kind::Udp { .. })).await {
                Ok(listener) => {
                    let running = start(proxy, &key.1, listener, address, kind);
                    self.running.insert(key, running);
                }
                Err(source) => {
                    first_error.get_or_insert(RunError::Bind {
                        listener: key.1,
                        address,
                        source,
                    });
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Stops every listener and waits for each to finish draining.
    pub async fn stop_all(&mut self) {
        let running = std::mem::take(&mut self.running);
        let mut tasks = Vec::with_capacity(running.len());
        for (_, r) in running {
            let _ = r.stop.send(());
            tasks.push(r.task);
        }
        for task in tasks {
            let _ = task.await;
        }
    }
}

/// Binds `address`, retrying for a moment while a listener being replaced lets go of it.
/// A bound socket of either kind.
enum Bound {
    Tcp(TcpListener),
    Udp(tokio::net::UdpSocket),
}

async fn bind(address: SocketAddr, udp: bool) -> io::Result<Bound> {
    let deadline = tokio::time::Instant::now() + REBIND_PATIENCE;
    loop {
        let bound = if udp {
            tokio::net::UdpSocket::bind(address).await.map(Bound::Udp)
        } else {
            TcpListener::bind(address).await.map(Bound::Tcp)
        };
        match bound {
            Err(error)
                if error.kind() == io::ErrorKind::AddrInUse
                    && tokio::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            result => return result,
        }
    }
}

fn start(proxy: &Proxy, name: &str, bound: Bound, address: SocketAddr, kind: Kind) -> Running {
    let (stop, stopped) = oneshot::channel::<()>();
    let shutdown = Box::pin(async move {
        let _ = stopped.await;
    });
    let proxy = proxy.clone();
    let name: Arc<str> = Arc::from(name);
    let listener = match bound {
        Bound::Tcp(listener) => listener,
        Bound::Udp(socket) => {
            let (cluster, idle_timeout_ms) = match &kind {
                Kind::Udp {
                    cluster,
                    idle_timeout_ms,
                } => (cluster.as_str(), *idle_timeout_ms),
                // Only udp kinds are bound as UDP sockets (see `reconcile`).
                _ => ("", 0),
            };
            let route = crate::udp::UdpRoute {
                listener: name,
                cluster: Arc::from(cluster),
                idle_timeout: Duration::from_millis(idle_timeout_ms.max(1)),
            };
            let task = tokio::spawn(crate::udp::serve_udp(proxy, socket, route, shutdown));
            return Running {
                address,
                kind,
                stop,
                task,
            };
        }
    };
    let task = match &kind {
        Kind::Admin => tokio::spawn(crate::admin::serve_admin(proxy, listener, shutdown)),
        Kind::Http { tls } => {
            // Validated with the rest of the config, so this only fails if the bundle became
            // unusable in between, which cannot happen for inline PEM.
            let tls = match tls {
                Some(tls) => match crate::tls::server_config(proxy.downgrade(), &name, tls) {
                    Ok(config) => Some(config),
                    Err(error) => {
                        tracing::error!(listener = &*name, %error, "tls listener not started");
                        None
                    }
                },
                None => None,
            };
            tokio::spawn(crate::server::serve_http(
                proxy, listener, name, tls, shutdown,
            ))
        }
        Kind::Tcp {
            cluster,
            proxy_protocol,
            idle_timeout_ms,
        } => {
            let route = TcpRoute {
                listener: name,
                cluster: Arc::from(cluster.as_str()),
                proxy_protocol: *proxy_protocol,
                // 0 turns the idle timeout off.
                idle_timeout: (*idle_timeout_ms > 0)
                    .then(|| Duration::from_millis(*idle_timeout_ms)),
            };
            tokio::spawn(crate::tcp::serve_tcp(proxy, listener, route, shutdown))
        }
        // Bound as UDP above.
        Kind::Udp { .. } => tokio::spawn(async { Ok(()) }),
    };
    Running {
        address,
        kind,
        stop,
        task,
    }
}
