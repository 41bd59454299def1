//! Client connections to upstream endpoints.
//!
//! HTTP/1.1 clusters keep idle connections per endpoint, and a downstream connection holds on
//! to the upstream connection its last request used ([`Affinity`]), the way HAProxy's
//! `http-reuse` does: a keep-alive client whose requests go to one endpoint reuses one
//! upstream connection without touching the shared pool (hyper-util's pooled client was ~7% of
//! the proxy's CPU in `perf` on `bench/proxy.sh` keepalive: pool checkout, SipHash of the pool
//! key, URI rewriting). h2 clusters multiplex over one connection per endpoint ([`h2`]).
//!
//! Requests without a body go through berth's own HTTP/1.1 client ([`h1`]), in the request's
//! task; the others through hyper's, whose connections run in tasks of their own. Both kinds
//! of connection share the idle lists, told apart when taken.

mod h1;
pub(crate) mod h2;

pub(crate) use h1::fuzz_response;

use std::collections::hash_map::Entry;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use ahash::AHashMap;
use bytes::Bytes;
use http::uri::Authority;
use http::{HeaderValue, Request, Response, Uri, header};
use hyper::body::{Frame, Incoming, SizeHint};
use hyper::client::conn::http1;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::http::RequestBody;

/// How long an idle pooled connection is kept. Shorter than the usual 60 s+ keep-alive of
/// upstream servers, so that the pool rarely picks a connection the server is closing.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// Idle connections kept per endpoint at most; more are closed when they come back.
const MAX_IDLE_PER_ENDPOINT: usize = 256;

/// Connections held by downstream connections between their requests, per cluster, at most.
/// Idle keep-alive clients would otherwise each pin an upstream connection; past the bound,
/// connections go back to the shared idle lists after each response (as nginx's `keepalive`
/// bounds what a worker keeps).
const MAX_HELD: usize = 1024;

/// TCP keep-alive on upstream connections, to notice dead peers behind idle pooled connections.
const TCP_KEEPALIVE: Duration = Duration::from_secs(60);

/// Reused connections tried before a fresh one when each turns out closed: a server that
/// closed many idle connections at once should not cost a request more than a few tries.
const MAX_STALE_TRIES: usize = 4;

/// A cluster's upstream connections. Cheap to clone: clones share the idle connections, which
/// is how a cluster keeps its warm connections across snapshot swaps.
#[derive(Clone, Debug)]
pub(crate) struct Upstream {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    connect_timeout: Duration,
    /// One multiplexed connection per endpoint, for clusters that speak h2 with prior
    /// knowledge.
    h2: Option<h2::PerEndpoint<HttpConnector>>,
    idle: Mutex<IdlePool>,
    /// Connections sitting in an [`Affinity`] slot, bounded by [`MAX_HELD`].
    held: AtomicUsize,
}

#[derive(Debug, Default)]
struct IdlePool {
    by_endpoint: AHashMap<SocketAddr, Vec<Idle>>,
    /// When every endpoint's list was last swept of expired and closed connections.
    swept: Option<Instant>,
}

#[derive(Debug)]
struct Idle {
    conn: Conn,
    since: Instant,
}

/// An HTTP/1.1 connection: hyper's (its task holds the socket), or berth's.
#[derive(Debug)]
enum Conn {
    Hyper(http1::SendRequest<RequestBody>),
    Own(h1::Conn),
}

impl Conn {
    fn is_own(&self) -> bool {
        matches!(self, Self::Own(_))
    }

    fn is_open(&self) -> bool {
        match self {
            Self::Hyper(sender) => !sender.is_closed(),
            Self::Own(conn) => conn.is_open(),
        }
    }
}

/// A response body from an endpoint, as either client reads it.
#[derive(Debug)]
pub(crate) enum Body {
    Hyper(Incoming),
    Own(h1::Body),
}

impl hyper::body::Body for Body {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match self.get_mut() {
            Self::Hyper(body) => Pin::new(body).poll_frame(cx).map_err(Into::into),
            Self::Own(body) => Pin::new(body).poll_frame(cx).map_err(Into::into),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Self::Hyper(body) => body.is_end_stream(),
            Self::Own(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Self::Hyper(body) => body.size_hint(),
            Self::Own(body) => body.size_hint(),
        }
    }
}

/// Why a request could not be sent upstream or got no response head.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SendError {
    #[error("connect failed")]
    Connect(#[source] std::io::Error),
    #[error("connect timed out after {0:?}")]
    ConnectTimeout(Duration),
    #[error("http/1.1 handshake failed")]
    Handshake(#[source] hyper::Error),
    #[error("request failed")]
    Request(#[source] hyper::Error),
    #[error("http/1.1 exchange failed")]
    Exchange(#[source] h1::Error),
    #[error("pooled request failed")]
    Pooled(#[source] hyper_util::client::legacy::Error),
    #[error("h2 connect failed")]
    H2Connect(#[source] h2::ConnectFailed),
}

impl SendError {
    /// Whether no byte of the request reached the endpoint, so that it is safe to retry.
    pub(crate) fn is_connect(&self) -> bool {
        match self {
            Self::Connect(_) | Self::ConnectTimeout(_) | Self::Handshake(_) => true,
            Self::Request(_) | Self::Exchange(_) => false,
            Self::Pooled(error) => error.is_connect(),
            // Nothing was sent.
            Self::H2Connect(_) => true,
        }
    }
}

/// The upstream connection a downstream connection holds between its requests. Cheap to
/// clone (one Arc); the connection goes back to its endpoint's idle list when the last clone
/// is dropped, that is when the downstream connection ends.
#[derive(Clone, Debug, Default)]
pub(crate) struct Affinity(Arc<Mutex<Option<Held>>>);

/// A connection in an affinity slot, counted in its cluster's [`Inner::held`] while there.
#[derive(Debug)]
struct Held {
    pooled: Option<Pooled>,
    pool: Weak<Inner>,
}

impl Drop for Held {
    fn drop(&mut self) {
        if let Some(pool) = self.pool.upgrade() {
            pool.held.fetch_sub(1, Ordering::Relaxed);
        }
        // `pooled`, if still here, goes back to its idle list as it drops.
    }
}

impl Affinity {
    fn take(&self) -> Option<Pooled> {
        let held = self.0.lock().unwrap_or_else(PoisonError::into_inner).take();
        held.and_then(|mut held| held.pooled.take())
    }

    /// Keeps `pooled` unless the slot is taken (by a concurrent h2 stream's connection) or the
    /// cluster holds [`MAX_HELD`] already, in which cases `pooled` goes back to its idle list.
    fn keep(&self, pooled: Pooled) {
        let Some(pool) = pooled.pool.upgrade() else {
            return;
        };
        if pool.held.fetch_add(1, Ordering::Relaxed) >= MAX_HELD {
            pool.held.fetch_sub(1, Ordering::Relaxed);
            return;
        }
        // Counted from here on: dropping `held` undoes the count.
        let held = Held {
            pooled: Some(pooled),
            pool: Arc::downgrade(&pool),
        };
        let mut slot = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if slot.is_none() {
            *slot = Some(held);
        }
    }
}

/// An HTTP/1.1 connection checked out of an endpoint's idle list (or new); back to the list
/// on drop, unless it was closed or found broken.
#[derive(Debug)]
struct Pooled {
    conn: Option<Conn>,
    endpoint: SocketAddr,
    pool: Weak<Inner>,
}

impl Drop for Pooled {
    fn drop(&mut self) {
        if let (Some(conn), Some(pool)) = (self.conn.take(), self.pool.upgrade()) {
            pool.check_in(self.endpoint, conn);
        }
    }
}

/// What a response holds of its upstream connection: once its body has been read to the end,
/// the connection is free for the next request; if the body is dropped before its end, the
/// connection is closed (the rest of the response would still be on the wire).
#[derive(Debug, Default)]
pub(crate) struct Lease {
    pooled: Option<Pooled>,
    affinity: Option<Affinity>,
}

impl Lease {
    /// Called when the response body ended: the connection is free again. A connection berth's
    /// client reads comes back from `body`, if the body let it go.
    pub(crate) fn release(&mut self, body: &mut Body) {
        let Some(mut pooled) = self.pooled.take() else {
            return;
        };
        if let Body::Own(body) = body {
            pooled.conn = body.take_reusable().map(Conn::Own);
        }
        if pooled.conn.is_none() {
            return;
        }
        match &self.affinity {
            Some(affinity) => affinity.keep(pooled),
            None => drop(pooled),
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        // Not released: the response did not end cleanly; its connection cannot be reused.
        if let Some(pooled) = &mut self.pooled {
            pooled.conn = None;
        }
    }
}

/// A new, empty set of connections whose connects time out after `connect_timeout`; `h2`
/// speaks HTTP/2 with prior knowledge.
pub(crate) fn upstream(connect_timeout: Duration, h2: bool) -> Upstream {
    let h2 = h2.then(|| {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(connect_timeout));
        connector.set_nodelay(true);
        connector.set_keepalive(Some(TCP_KEEPALIVE));
        connector.enforce_http(true);
        h2::PerEndpoint::new(connector, POOL_IDLE_TIMEOUT)
    });
    Upstream {
        inner: Arc::new(Inner {
            connect_timeout,
            h2,
            idle: Mutex::new(IdlePool::default()),
            held: AtomicUsize::new(0),
        }),
    }
}

impl Upstream {
    /// Sends `request` (absolute URI) to `endpoint` and waits for the response head. The
    /// returned lease must travel with the response body and be released at its end.
    ///
    /// `affinity`: the downstream connection's slot, tried first and refilled at the end.
    pub(crate) async fn send(
        &self,
        mut request: Request<RequestBody>,
        endpoint: SocketAddr,
        authority: &Authority,
        affinity: Option<&Affinity>,
    ) -> Result<(Response<Body>, Lease), SendError> {
        if let Some(conns) = &self.inner.h2 {
            // Boxed, as below: a large future, which would otherwise size (and be copied with)
            // every request's future.
            let response = Box::pin(conns.send(request, endpoint, authority)).await?;
            return Ok((response.map(Body::Hyper), Lease::default()));
        }
        if h1::eligible(&request) {
            return self.send_own(request, endpoint, authority, affinity).await;
        }
        origin_form(&mut request, authority);
        let mut stale_tries = 0;
        loop {
            let (mut sender, reused) = self
                .check_out(endpoint, affinity, stale_tries < MAX_STALE_TRIES)
                .await?;
            match sender.try_send_request(request).await {
                Ok(response) => {
                    let lease = self.lease(Some(Conn::Hyper(sender)), endpoint, affinity);
                    return Ok((response.map(Body::Hyper), lease));
                }
                Err(mut error) => match error.take_message() {
                    // The connection closed before the request left: a reused one that the
                    // server was closing. Try again, on a fresh one after a few such tries.
                    Some(again) if reused => {
                        stale_tries += 1;
                        request = again;
                    }
                    _ => return Err(SendError::Request(error.into_error())),
                },
            }
        }
    }

    /// Sends a request without a body with berth's client (see [`h1`]), in this task.
    async fn send_own(
        &self,
        request: Request<RequestBody>,
        endpoint: SocketAddr,
        authority: &Authority,
        affinity: Option<&Affinity>,
    ) -> Result<(Response<Body>, Lease), SendError> {
        // A request that may have reached the endpoint goes again only if idempotent (RFC 9110
        // section 9.2.2); the caller's retry policy then decides about other endpoints.
        let idempotent = crate::http::is_idempotent(request.method());
        let mut stale_tries = 0;
        loop {
            let (conn, reused) = self
                .check_out_own(endpoint, affinity, stale_tries < MAX_STALE_TRIES)
                .await?;
            match conn.send(&request, authority.as_str()).await {
                Ok(response) => {
                    let lease = self.lease(None, endpoint, affinity);
                    return Ok((response.map(Body::Own), lease));
                }
                // A reused connection the server was closing as the request left.
                Err(failure) if reused && failure.unanswered && idempotent => stale_tries += 1,
                Err(failure) => return Err(SendError::Exchange(failure.error)),
            }
        }
    }

    /// The lease of a response on a connection to `endpoint` (`conn`: hyper's, which the
    /// response does not hold; berth's comes back from the body).
    fn lease(
        &self,
        conn: Option<Conn>,
        endpoint: SocketAddr,
        affinity: Option<&Affinity>,
    ) -> Lease {
        Lease {
            pooled: Some(Pooled {
                conn,
                endpoint,
                pool: Arc::downgrade(&self.inner),
            }),
            affinity: affinity.cloned(),
        }
    }

    /// An open connection of berth's client to `endpoint`, as [`Self::check_out`].
    async fn check_out_own(
        &self,
        endpoint: SocketAddr,
        affinity: Option<&Affinity>,
        reuse: bool,
    ) -> Result<(h1::Conn, bool), SendError> {
        if reuse {
            if let Some(mut pooled) = affinity.and_then(Affinity::take)
                && pooled.endpoint == endpoint
                && matches!(&pooled.conn, Some(conn) if conn.is_own())
                && let Some(Conn::Own(conn)) = pooled.conn.take()
                && conn.is_open()
            {
                return Ok((conn, true));
            }
            while let Some(conn) = self.inner.take_idle(endpoint, true) {
                if let Conn::Own(conn) = conn {
                    return Ok((conn, true));
                }
            }
        }
        let stream = Box::pin(self.connect_tcp(endpoint)).await?;
        Ok((h1::Conn::new(stream), false))
    }

    /// A ready connection to `endpoint`: the affinity slot's, an idle one (if `reuse`), or a
    /// new one; with whether it was reused.
    async fn check_out(
        &self,
        endpoint: SocketAddr,
        affinity: Option<&Affinity>,
        reuse: bool,
    ) -> Result<(http1::SendRequest<RequestBody>, bool), SendError> {
        if reuse {
            if let Some(mut pooled) = affinity.and_then(Affinity::take)
                && pooled.endpoint == endpoint
                && matches!(&pooled.conn, Some(conn) if !conn.is_own())
                && let Some(Conn::Hyper(mut sender)) = pooled.conn.take()
                && sender.ready().await.is_ok()
            {
                return Ok((sender, true));
            }
            // A connection held for another endpoint went back to its idle list (on drop).
            while let Some(conn) = self.inner.take_idle(endpoint, false) {
                if let Conn::Hyper(mut sender) = conn
                    && sender.ready().await.is_ok()
                {
                    return Ok((sender, true));
                }
            }
        }
        // Boxed: connecting is rare on a warm cluster, and its large future would otherwise
        // size every request's future, which hyper copies once per request.
        Ok((Box::pin(self.connect(endpoint)).await?, false))
    }

    async fn connect(
        &self,
        endpoint: SocketAddr,
    ) -> Result<http1::SendRequest<RequestBody>, SendError> {
        let stream = self.connect_tcp(endpoint).await?;
        let (sender, connection) = http1::Builder::new()
            // As on the listener side (server.rs): send(2) over writev(2).
            .writev(false)
            .handshake(TokioIo::new(stream))
            .await
            .map_err(SendError::Handshake)?;
        tokio::spawn(async move {
            if let Err(error) = connection.with_upgrades().await {
                tracing::debug!(%endpoint, %error, "upstream connection ended with an error");
            }
        });
        Ok(sender)
    }

    /// A new TCP connection to `endpoint`, with no delay and TCP keep-alive.
    async fn connect_tcp(&self, endpoint: SocketAddr) -> Result<TcpStream, SendError> {
        let timeout = self.inner.connect_timeout;
        let stream = tokio::time::timeout(timeout, TcpStream::connect(endpoint))
            .await
            .map_err(|_| SendError::ConnectTimeout(timeout))?
            .map_err(SendError::Connect)?;
        if let Err(error) = stream.set_nodelay(true) {
            tracing::debug!(%error, %endpoint, "set_nodelay failed");
        }
        let keepalive = socket2::TcpKeepalive::new().with_time(TCP_KEEPALIVE);
        if let Err(error) = socket2::SockRef::from(&stream).set_tcp_keepalive(&keepalive) {
            tracing::debug!(%error, %endpoint, "set_tcp_keepalive failed");
        }
        Ok(stream)
    }
}

impl Inner {
    /// The most recently used idle connection to `endpoint` of berth's client (`own`) or
    /// hyper's that is still open and fresh. Closed and expired ones met on the way go.
    fn take_idle(&self, endpoint: SocketAddr, own: bool) -> Option<Conn> {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        let list = idle.by_endpoint.get_mut(&endpoint)?;
        let now = Instant::now();
        // The newest of the wanted kind; the kinds mix only where requests with and without a
        // body go to one endpoint.
        while let Some(at) = list.iter().rposition(|e| e.conn.is_own() == own) {
            let entry = list.remove(at);
            if entry.conn.is_open() && now.duration_since(entry.since) < POOL_IDLE_TIMEOUT {
                return Some(entry.conn);
            }
        }
        None
    }

    fn check_in(&self, endpoint: SocketAddr, conn: Conn) {
        if !conn.is_open() {
            return;
        }
        let now = Instant::now();
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        // Idle connections of endpoints nobody asks for any more (removed ones) go at the
        // latest one idle timeout after they expire.
        if idle
            .swept
            .is_none_or(|at| now.duration_since(at) >= POOL_IDLE_TIMEOUT)
        {
            idle.swept = Some(now);
            idle.by_endpoint.retain(|_, list| {
                list.retain(|e| {
                    e.conn.is_open() && now.duration_since(e.since) < POOL_IDLE_TIMEOUT
                });
                !list.is_empty()
            });
        }
        let list = match idle.by_endpoint.entry(endpoint) {
            Entry::Occupied(entry) => entry.into_mut(),
            Entry::Vacant(entry) => entry.insert(Vec::new()),
        };
        if list.len() >= MAX_IDLE_PER_ENDPOINT {
            // The oldest goes: the newest are the least likely to be closed by the server.
            list.remove(0);
        }
        list.push(Idle { conn, since: now });
    }
}

/// Turns the absolute URI into origin form (what an HTTP/1.1 request line carries to an origin
/// server) and makes sure the request has a Host header.
fn origin_form(request: &mut Request<RequestBody>, authority: &Authority) {
    let origin = match request.uri().path_and_query() {
        Some(path) if request.uri().scheme().is_some() => Some(Uri::from(path.clone())),
        _ => None,
    };
    if let Some(origin) = origin {
        *request.uri_mut() = origin;
    }
    if !request.headers().contains_key(header::HOST)
        && let Ok(host) = HeaderValue::from_str(authority.as_str())
    {
        request.headers_mut().insert(header::HOST, host);
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use bytes::Bytes;
    use http_body_util::{BodyExt, Full};
    use hyper::service::service_fn;
    use tokio::net::TcpListener;

    use super::*;

    async fn backend() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let service = service_fn(|_| async {
                    Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok"))))
                });
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service),
                );
            }
        });
        addr
    }

    async fn get(upstream: &Upstream, addr: SocketAddr, affinity: &Affinity) {
        let authority: Authority = addr.to_string().parse().unwrap();
        let request = Request::builder()
            .uri(format!("http://{addr}/"))
            .body(RequestBody::empty())
            .unwrap();
        let (response, mut lease) = upstream
            .send(request, addr, &authority, Some(affinity))
            .await
            .unwrap();
        let mut body = response.into_body();
        let bytes = (&mut body).collect().await.unwrap().to_bytes();
        assert_eq!(&bytes[..], b"ok");
        lease.release(&mut body);
    }

    fn idle(upstream: &Upstream, addr: SocketAddr) -> usize {
        let idle = upstream.inner.idle.lock().unwrap();
        idle.by_endpoint.get(&addr).map_or(0, Vec::len)
    }

    #[tokio::test]
    async fn affinity_slots_are_counted_and_bounded() {
        let addr = backend().await;
        let upstream = upstream(Duration::from_secs(1), false);
        let affinity = Affinity::default();
        for _ in 0..3 {
            get(&upstream, addr, &affinity).await;
            assert_eq!(upstream.inner.held.load(Ordering::Relaxed), 1);
            assert_eq!(idle(&upstream, addr), 0, "held, not idle");
        }
        drop(affinity);
        assert_eq!(upstream.inner.held.load(Ordering::Relaxed), 0);
        assert_eq!(idle(&upstream, addr), 1, "back to the idle list");

        // At the bound, a response's connection goes back to the idle list instead.
        upstream.inner.held.store(MAX_HELD, Ordering::Relaxed);
        let affinity = Affinity::default();
        get(&upstream, addr, &affinity).await;
        assert_eq!(upstream.inner.held.load(Ordering::Relaxed), MAX_HELD);
        assert_eq!(idle(&upstream, addr), 1);
        assert!(affinity.take().is_none());
    }
}
