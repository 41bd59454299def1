//! The HTTP/1.1 and h2c listener: accept, bound, serve, drain.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use ::http::{Request, Response};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use std::net::SocketAddr;
use tokio::io::{AsyncRead, AsyncWrite};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;

mod drain;
mod sniff;
mod timer;

use crate::Proxy;
use crate::head_timeout::{self, Reclaim, Watched};
use crate::http::{self, Downstream};
use drain::Drain;
use sniff::Sniffed;

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
    let serving = Arc::new(Serving {
        auto: auto_builder(&limits),
        http1: http1_builder(&limits),
        head_timeout: limits.header_read_timeout,
    });
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let drain = Drain::new();
    let listener_metrics = proxy.metrics().listener(&name);
    let mut connections = JoinSet::new();
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, listener = &*name, "serving http");
    }
    // Linux copies a listening socket's options into the sockets it accepts: set here once,
    // not with a setsockopt(2) per connection. TCP_NODELAY; and on plain-text listeners, as
    // HAProxy does on HTTP ones, no quick ACKs: the response acknowledges the request instead
    // of an ACK of its own, one packet less per new connection (set on the listener, it also
    // covers a request that arrives before the connection is accepted). A client whose first
    // bytes are not a whole head gets its quick ACKs back (see `sniff`).
    let socket = socket2::SockRef::from(&listener);
    let nodelay_inherited = socket.set_tcp_nodelay(true).is_ok();
    if tls.is_none()
        && let Err(error) = socket.set_tcp_quickack(false)
    {
        tracing::debug!(%error, listener = &*name, "disabling quick ACKs failed");
    }

    loop {
        let Some((permit, stream, client)) =
            accept_bounded(&listener, &permits, &mut shutdown).await
        else {
            break;
        };
        // Reap finished connections so the set only holds live ones.
        while connections.try_join_next().is_some() {}
        if !nodelay_inherited && let Err(error) = stream.set_nodelay(true) {
            tracing::debug!(%error, %client, "set_nodelay failed");
        }
        // As HAProxy does on HTTP listeners: the request is acknowledged by the response
        // rather than by an ACK of its own, one packet less per new connection (quick ACKs
        // are not inherited, and reset with each connection).

        let open = listener_metrics.connection();
        let downstream = Arc::new(Downstream::new(
            proxy.clone(),
            name.clone(),
            client,
            tls.is_some(),
        ));
        let watcher = drain.watcher();
        let tls = tls.clone();
        let serving = Arc::clone(&serving);
        let task = async move {
            let result = match tls {
                None => serve_plain(&serving, stream, downstream, watcher).await,
                // Boxed: a TLS connection's state would size (and be copied with) every task.
                Some(config) => {
                    Box::pin(serve_tls(&serving, stream, config, downstream, watcher)).await
                }
            };
            if let Err(error) = result {
                let error = &*error as &dyn std::error::Error;
                tracing::debug!(%client, error, "connection ended with an error");
            }
            drop((permit, open));
        };
        // Boxed: the task then holds a pointer, which spawning and the task's stage changes
        // copy instead of the ~900-byte future (callgrind: ~1,000 instructions per connection).
        connections.spawn(Box::pin(task));
    }

    drop(listener);
    tracing::info!(open = drain.count(), "shutting down, draining connections");
    if tokio::time::timeout(limits.drain_timeout, drain.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("drain timeout elapsed, closing the remaining connections");
    }
    connections.shutdown().await;
    Ok(())
}

/// How a listener serves its connections; shared by them, never copied per connection.
struct Serving {
    /// HTTP/1 or h2, told apart by the first bytes (h2 prior knowledge, TLS with ALPN h2).
    auto: auto::Builder<TokioExecutor>,
    /// HTTP/1 connections known to be HTTP/1 before the first read.
    http1: http1::Builder,
    head_timeout: Duration,
}

type ConnectionResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

/// A plain-text connection: HTTP/1 straight to hyper's HTTP/1 server when its first bytes
/// say so (see [`sniff`]), else the auto builder.
async fn serve_plain(
    serving: &Serving,
    mut stream: TcpStream,
    downstream: Arc<Downstream>,
    watcher: drain::Watcher,
) -> ConnectionResult {
    match sniff::sniff(&mut stream, serving.head_timeout).await {
        Sniffed::Http1(first) => {
            let (stream, reclaim) = head_timeout::watch_arrived(stream, first);
            serve_http1(serving, stream, reclaim, downstream, watcher).await
        }
        Sniffed::Undecided(first) => {
            let (stream, reclaim) = head_timeout::watch_arrived(stream, first);
            serve_auto(serving, stream, reclaim, downstream, watcher).await
        }
        Sniffed::Closed => Ok(()),
        Sniffed::TimedOut => {
            // A new connection that sent nothing: 408, as HAProxy answers.
            if head_timeout::answer_now(stream).await {
                answered_slow_client(&downstream);
            }
            Ok(())
        }
        Sniffed::Failed(error) => Err(error.into()),
    }
}

/// A TLS connection: the handshake, bounded like a request head, then the auto builder if ALPN
/// chose h2, else HTTP/1 directly: HTTP/2 over TLS is negotiated with ALPN (RFC 9113 §3.2;
/// prior knowledge is for cleartext), so without `h2` the client speaks HTTP/1.
async fn serve_tls(
    serving: &Serving,
    stream: TcpStream,
    config: Arc<rustls::ServerConfig>,
    downstream: Arc<Downstream>,
    watcher: drain::Watcher,
) -> ConnectionResult {
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    // Boxed: the handshake state is large and only lives this long.
    let accept = Box::pin(acceptor.accept(stream));
    let client = downstream.client;
    match tokio::time::timeout(serving.head_timeout, accept).await {
        Ok(Ok(stream)) => {
            let http1 = stream.get_ref().1.alpn_protocol() != Some(b"h2");
            let (stream, reclaim) = head_timeout::watch(stream, serving.head_timeout);
            if http1 {
                serve_http1(serving, stream, reclaim, downstream, watcher).await
            } else {
                serve_auto(serving, stream, reclaim, downstream, watcher).await
            }
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

async fn serve_http1<S>(
    serving: &Serving,
    stream: Watched<S>,
    reclaim: Reclaim<S>,
    downstream: Arc<Downstream>,
    watcher: drain::Watcher,
) -> ConnectionResult
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    // The head timeout's timer is the connection's own (see `timer`).
    let mut builder = serving.http1.clone();
    builder.timer(timer::ConnectionTimer::default());
    // Boxed where it is made, here and below: the task then holds a pointer instead of a few
    // KiB of connection state, which spawning copied for every connection (callgrind: ~2,800
    // instructions of memcpy per new connection).
    let connection = Box::pin(
        builder
            .serve_connection(TokioIo::new(stream), service(Arc::clone(&downstream)))
            .with_upgrades(),
    );
    let result = drain::serve(connection, watcher, |c| c.as_mut().graceful_shutdown())
        .await
        .map_err(Into::into);
    answer_slow_client(&downstream, &result, reclaim).await;
    result
}

async fn serve_auto<S>(
    serving: &Serving,
    stream: Watched<S>,
    reclaim: Reclaim<S>,
    downstream: Arc<Downstream>,
    watcher: drain::Watcher,
) -> ConnectionResult
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let connection = Box::pin(
        serving
            .auto
            .serve_connection_with_upgrades(TokioIo::new(stream), service(Arc::clone(&downstream))),
    );
    let result = drain::serve(connection, watcher, |c| c.as_mut().graceful_shutdown()).await;
    answer_slow_client(&downstream, &result, reclaim).await;
    result
}

/// The per-request entry point: one reference count per request. The future is not boxed:
/// hyper keeps it in a slot allocated once per connection.
fn service(
    downstream: Arc<Downstream>,
) -> impl hyper::service::Service<
    Request<Incoming>,
    Response = Response<http::ResponseBody>,
    Error = Infallible,
    Future = impl Future<Output = Result<Response<http::ResponseBody>, Infallible>> + Send + 'static,
> + Send
+ 'static {
    hyper::service::service_fn(move |request| {
        let downstream = Arc::clone(&downstream);
        async move { Ok(http::handle(&downstream, request).await) }
    })
}

fn answered_slow_client(downstream: &Downstream) {
    tracing::debug!(client = %downstream.client, "request head timed out, answered 408");
    // Counted like the proxy's other answers (no cluster; no head, so no duration).
    downstream
        .proxy
        .metrics()
        .request(None, 408, Duration::ZERO);
}

/// 408 to a client whose request head did not arrive in time (see [`head_timeout`]).
async fn answer_slow_client<S: AsyncWrite + Unpin>(
    downstream: &Downstream,
    result: &ConnectionResult,
    reclaim: Reclaim<S>,
) {
    let timed_out = result
        .as_ref()
        .is_err_and(|error| head_timeout::is_head_timeout(&**error));
    if head_timeout::answer(timed_out, reclaim).await {
        answered_slow_client(downstream);
    }
}

fn http1_builder(limits: &Limits) -> http1::Builder {
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_headers(limits.max_header_count)
        .max_buf_size(limits.max_header_bytes)
        // As below.
        .writev(false);
    builder
}

fn auto_builder(limits: &Limits) -> auto::Builder<TokioExecutor> {
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

#[cfg(test)]
mod tests {
    /// `serve_http` sets TCP_NODELAY and TCP_QUICKACK on the listener only, relying on
    /// accepted sockets to inherit them.
    #[tokio::test]
    async fn accepted_sockets_inherit_nodelay_and_quickack() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let socket = socket2::SockRef::from(&listener);
        socket.set_tcp_nodelay(true).unwrap();
        socket.set_tcp_quickack(false).unwrap();
        let addr = listener.local_addr().unwrap();
        let client = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (accepted, _) = listener.accept().await.unwrap();
        assert!(accepted.nodelay().unwrap());
        assert!(!socket2::SockRef::from(&accepted).tcp_quickack().unwrap());
        assert!(!client.nodelay().unwrap(), "not on by default");
        assert!(
            socket2::SockRef::from(&client).tcp_quickack().unwrap(),
            "on by default"
        );
    }
}
