//! `berth dns --zone FILE`: the server alone, serving a zone file and reloading it on SIGHUP.

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use tokio::signal::unix::{SignalKind, signal};
use tracing::{error, info};

use crate::error::ZoneError;
use crate::server::{DnsServer, Listeners};
use crate::zone::Zone;

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RunError {
    /// The zone file could not be read.
    #[error("reading zone file {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The zone file is not a valid zone document.
    #[error("parsing zone file {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message, with the field and position.
        message: String,
    },
    /// The zone was rejected.
    #[error("zone file {path}")]
    Zone {
        /// The file.
        path: PathBuf,
        /// What is wrong with the zone.
        #[source]
        source: ZoneError,
    },
    /// Binding or serving the sockets failed.
    #[error("serving dns")]
    Io(#[from] std::io::Error),
}

/// Reads a zone file: JSON when it ends in `.json`, YAML otherwise (YAML also reads JSON).
pub fn load_zone_file(path: &Path) -> Result<Zone, RunError> {
    let text = std::fs::read_to_string(path).map_err(|source| RunError::Read {
        path: path.to_owned(),
        source,
    })?;
    let parse_error = |message: String| RunError::Parse {
        path: path.to_owned(),
        message,
    };
    // Errors name the field (`services[2].endpoints[0].address: ...`) as well as the position.
    let with_path = |path: &serde_path_to_error::Path, inner: &dyn std::fmt::Display| match path
        .to_string()
        .as_str()
    {
        "." | "" => inner.to_string(),
        field => format!("{field}: {inner}"),
    };
    if path.extension().is_some_and(|e| e == "json") {
        let mut deserializer = serde_json::Deserializer::from_str(&text);
        serde_path_to_error::deserialize(&mut deserializer)
            .map_err(|e| parse_error(with_path(e.path(), e.inner())))
    } else {
        let deserializer = serde_yaml_ng::Deserializer::from_str(&text);
        serde_path_to_error::deserialize(deserializer)
            .map_err(|e| parse_error(with_path(e.path(), e.inner())))
    }
}

/// Reloads `path` into `server`; on any error the server keeps its zone and the error is
/// returned.
pub(crate) fn reload(server: &DnsServer, path: &Path) -> Result<(), RunError> {
    let zone = load_zone_file(path)?;
    server.apply(zone).map_err(|source| RunError::Zone {
        path: path.to_owned(),
        source,
    })
}

/// Serves the zone in `path` on every address of `listen` (UDP with `workers` sockets each,
/// and TCP) until `shutdown` completes; SIGHUP reloads the file, keeping the zone served when
/// the new file is bad (the error is logged). Must run within a tokio runtime.
pub async fn run_from_file(
    path: &Path,
    listen: &[SocketAddr],
    workers: usize,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), RunError> {
    let listeners = DnsServer::bind(listen, workers)?;
    run_listeners_from_file(path, listeners, shutdown).await
}

/// [`run_from_file`] on sockets already bound by [`DnsServer::bind`] (so that a caller binding
/// port 0 knows the port).
pub async fn run_listeners_from_file(
    path: &Path,
    listeners: Listeners,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), RunError> {
    let zone = load_zone_file(path)?;
    let server = DnsServer::new(zone).map_err(|source| RunError::Zone {
        path: path.to_owned(),
        source,
    })?;
    serve_zone_file(server, path, listeners, shutdown).await
}

/// Serves `server` (built from the zone file at `path`) on `listeners`, reloading the file on
/// SIGHUP, until `shutdown`. The caller keeps a clone of the server, e.g. for its metrics.
pub async fn serve_zone_file(
    server: DnsServer,
    path: &Path,
    listeners: Listeners,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), RunError> {
    let mut hangup = signal(SignalKind::hangup())?;
    let reloader = {
        let server = server.clone();
        let path = path.to_owned();
        tokio::spawn(async move {
            while hangup.recv().await.is_some() {
                match reload(&server, &path) {
                    Ok(()) => info!(
                        path = %path.display(),
                        revision = server.revision(),
                        "dns zone reloaded"
                    ),
                    Err(error) => error!(
                        error = %crate::run::chain(&error),
                        "dns zone reload failed, keeping the zone served"
                    ),
                }
            }
        })
    };
    let served = server.serve_listeners(listeners, shutdown).await;
    reloader.abort();
    served.map_err(RunError::from)
}

/// `error` and its causes, joined by ": ".
pub(crate) fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
