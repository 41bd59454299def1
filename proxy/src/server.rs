//! The HTTP/1.1 and h2c listener: accept, bound, serve, drain.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use std::net::SocketAddr;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;

use crate::Proxy;
use crate::head_timeout;
use crate::http;
use crate::upstream::Affinity;

/// Resource bounds of a listener.
#[derive(Clone, Debug)]
pub(crate) struct Limits {
    /// Open client connections at most; accepting pauses at the bound.
    pub(crate) max_connections: usize,
    /// Request head size at most (HTTP/1.1 read buffer, HTTP/2 header list).
    pub(crate) max_header_bytes: usize,
    /// Header fields per HTTP/1 request at most (more: 431).
    pub(crate) max_header_count: usize,
    /// Time allowed to receive a request head.
    pub(crate) header_read_timeout: Duration,
    /// Concurrent HTTP/2 streams per connection.
    pub(crate) max_concurrent_streams: u32,
    /// How long open connections may take to finish after shutdown before they are cut.
    pub(crate) drain_timeout: Duration,
}

impl From<&crate::config::Limits> for Limits {
    fn from(limits: &crate::config::Limits) -> Self {
        Self {
            max_connections: limits.max_connections.max(1),
            // hyper refuses (panics on) a read buffer under 8 KiB; the config check says so.
            max_header_bytes: limits.max_header_bytes.max(8192),
            max_header_count: limits.max_header_count.max(1),
            header_read_timeout: Duration::from_millis(limits.header_read_timeout_ms.max(1)),
            max_concurrent_streams: 256,
            drain_timeout: Duration::from_millis(limits.drain_timeout_ms),
        }
    }
}

/// Pause after an accept error that is not about one connection (such as EMFILE), so that a
/// persistent error does not spin the loop.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(50);

pub(crate) async fn serve_http(
    proxy: Proxy,
    listener: TcpListener,
    name: Arc<str>,
    tls: Option<Arc<rustls::ServerConfig>>,
    mut shutdown: Pin<Box<dyn Future<Output = ()> + Send>>,
) -> io::Result<()> {
    let limits = proxy.limits();
    let builder = builder(&limits);
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let graceful = GracefulShutdown::new();
    let listener_metrics = proxy.metrics().listener(&name);
    let mut connections = JoinSet::new();
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, listener = &*name, "serving http");
    }

    loop {
        let Some((permit, stream, client)) =
            accept_bounded(&listener, &permits, &mut shutdown).await
        else {
            break;
        };
        // Reap finished connections so the set only holds live ones.
        while connections.try_join_next().is_some() {}
        if let Err(error) = stream.set_nodelay(true) {
            tracing::debug!(%error, %client, "set_nodelay failed");
        }

        let open = listener_metrics.connection();
        let service_proxy = proxy.clone();
        let secure = tls.is_some();
        // The upstream connection this downstream connection's requests reuse.
        let affinity = Affinity::default();
        let listener_name = name.clone();
        let service = service_fn(move |request| {
            let proxy = service_proxy.clone();
            let affinity = affinity.clone();
            let listener_name = listener_name.clone();
            async move {
                let response = http::handle(
                    &proxy,
                    &listener_name,
                    request,
                    client,
                    secure,
                    Some(&affinity),
                )
                .await;
                Ok::<_, Infallible>(response)
            }
        });
        let builder = builder.clone();
        let watcher = graceful.watcher();
        let tls = tls.clone();
        let handshake_timeout = limits.header_read_timeout;
        let task_proxy = proxy.clone();
        connections.spawn(async move {
            let result = match tls {
                None => {
                    let (stream, reclaim) = head_timeout::watch(stream, handshake_timeout);
                    let connection =
                        builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
                    // Boxed, here and below: the task then holds a pointer instead of a few
                    // KiB of connection state, which spawning copied for every connection
                    // (callgrind: ~2,800 instructions of memcpy per new connection).
                    let result = Box::pin(watcher.watch(connection.into_owned())).await;
                    answer_slow_client(&task_proxy, &result, reclaim, client).await;
                    result
                }
                Some(config) => {
                    let acceptor = tokio_rustls::TlsAcceptor::from(config);
                    // The handshake is bounded like a request head: a slow client holds nothing.
                    let accept = Box::pin(acceptor.accept(stream));
                    match tokio::time::timeout(handshake_timeout, accept).await {
                        Ok(Ok(stream)) => {
                            let (stream, reclaim) = head_timeout::watch(stream, handshake_timeout);
                            let connection = builder
                                .serve_connection_with_upgrades(TokioIo::new(stream), service);
                            let result = Box::pin(watcher.watch(connection.into_owned())).await;
                            answer_slow_client(&task_proxy, &result, reclaim, client).await;
                            result
                        }
                        Ok(Err(error)) => {
                            tracing::debug!(%client, %error, "tls handshake failed");
                            Ok(())
                        }
                        Err(_) => {
                            tracing::debug!(%client, "tls handshake timed out");
                            Ok(())
                        }
                    }
                }
            };
            if let Err(error) = result {
                let error = &*error as &dyn std::error::Error;
                tracing::debug!(%client, error, "connection ended with an error");
            }
            drop((permit, open));
        });
    }

    drop(listener);
    tracing::info!(
        open = graceful.count(),
        "shutting down, draining connections"
    );
    if tokio::time::timeout(limits.drain_timeout, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("drain timeout elapsed, closing the remaining connections");
    }
    connections.shutdown().await;
    Ok(())
}

/// 408 to a client whose request head did not arrive in time (see [`head_timeout`]).
async fn answer_slow_client<S: tokio::io::AsyncWrite + Unpin>(
    proxy: &Proxy,
    result: &Result<(), Box<dyn std::error::Error + Send + Sync>>,
    reclaim: head_timeout::Reclaim<S>,
    client: SocketAddr,
) {
    let timed_out = result
        .as_ref()
        .is_err_and(|error| head_timeout::is_head_timeout(&**error));
    if head_timeout::answer(timed_out, reclaim).await {
        tracing::debug!(%client, "request head timed out, answered 408");
        // Counted like the proxy's other answers (no cluster; no head, so no duration).
        proxy.metrics().request(None, 408, Duration::ZERO);
    }
}

fn builder(limits: &Limits) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_headers(limits.max_header_count)
        .max_buf_size(limits.max_header_bytes)
        // One send(2) per response instead of writev(2) of head and body: ~1 µs less system
        // time per request on loopback (bench/proxy.sh keepalive), for one memcpy of each
        // body chunk into the write buffer.
        .writev(false);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX))
        .max_concurrent_streams(limits.max_concurrent_streams);
    builder
}

/// A connection slot, then a connection; `None` once `shutdown` completes. The slot comes first
/// so that at the bound the backlog queues in the kernel. Errors about one connection are
/// skipped; others (EMFILE and the like) back off briefly instead of spinning. Shared by the
/// HTTP and TCP listeners.
pub(crate) async fn accept_bounded(
    listener: &TcpListener,
    permits: &Arc<Semaphore>,
    shutdown: &mut Pin<Box<dyn Future<Output = ()> + Send>>,
) -> Option<(OwnedSemaphorePermit, TcpStream, SocketAddr)> {
    let permit = tokio::select! {
        biased;
        () = &mut *shutdown => return None,
        // The semaphore is never closed.
        permit = Arc::clone(permits).acquire_owned() => permit.ok()?,
    };
    loop {
        tokio::select! {
            biased;
            () = &mut *shutdown => return None,
            accepted = listener.accept() => match accepted {
                Ok((stream, client)) => return Some((permit, stream, client)),
                Err(error) if is_connection_error(&error) => {}
                Err(error) => {
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(ACCEPT_ERROR_BACKOFF).await;
                }
            },
        }
    }
}

/// Errors about one incoming connection, which leave the listener fine.
fn is_connection_error(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
    )
}
