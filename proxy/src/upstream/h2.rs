//! HTTP/2 towards upstreams: one multiplexed connection per endpoint.
//!
//! An HTTP/2 request carries its host in the `:authority` pseudo-header, which hyper takes
//! from the request's URI; RFC 9113 §8.3.1 wants the host there (a `Host` header naming
//! another authority makes the request malformed), so the URI holds the client's (or the
//! route's rewritten) host, not the endpoint's address. hyper-util's pooled client would
//! connect to, and pool by, that host; here connections are kept by endpoint, so that however
//! many hosts clients name, an endpoint gets one connection, whose streams carry them all.

use std::collections::HashMap;
use std::error::Error as StdError;
use std::fmt;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, Instant};

use http::uri::Authority;
use http::{Request, Response, Uri};
use hyper::body::Incoming;
use hyper::client::conn::http2::{self, SendRequest};
use hyper::rt::{Read, Write};
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tokio::sync::OnceCell;

use super::SendError;
use crate::http::RequestBody;

type BoxError = Box<dyn StdError + Send + Sync>;

/// The HTTP/2 connections of one cluster, one per endpoint, opened on first use through
/// `connector` (plain TCP, or berth's connector with TLS and breaker accounting). A connection
/// no request used for `idle_timeout` is let go (it closes once its last stream ends), as
/// hyper-util's pool does with idle ones; what a failed connect left is swept when the set
/// grows past twice the size it had after the last sweep.
pub(crate) struct PerEndpoint<C> {
    connector: C,
    idle_timeout: Duration,
    conns: Arc<Mutex<Conns>>,
}

struct Conns {
    /// Filled by the first request that needs the connection; the others wait for it rather
    /// than open their own.
    by_endpoint: HashMap<SocketAddr, (Arc<Slot>, Instant)>,
    sweep_at: usize,
}

/// An endpoint's connection, or the wait for it, or why it could not be opened: requests that
/// waited for a connect that failed fail with it, instead of each trying again in turn.
type Slot = OnceCell<Result<SendRequest<RequestBody>, ConnectFailed>>;

/// A failed connect, shared by the requests that waited for it: the error itself, behind an
/// `Arc`, so that its sources (a circuit breaker's refusal among them) stay in the chain.
#[derive(Clone, Debug)]
pub(crate) struct ConnectFailed(Arc<dyn StdError + Send + Sync>);

impl fmt::Display for ConnectFailed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl StdError for ConnectFailed {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        Some(&*self.0)
    }
}

/// The size below which the set is never swept.
const MIN_SWEEP: usize = 16;

impl<C> PerEndpoint<C>
where
    C: tower_service::Service<Uri> + Clone + Send + 'static,
    C::Response: Read + Write + Unpin + Send + 'static,
    C::Error: Into<BoxError>,
    C::Future: Send,
{
    pub(crate) fn new(connector: C, idle_timeout: Duration) -> Self {
        Self {
            connector,
            idle_timeout,
            conns: Arc::new(Mutex::new(Conns {
                by_endpoint: HashMap::new(),
                sweep_at: MIN_SWEEP,
            })),
        }
    }

    /// Sends `request` (its URI's authority becomes `:authority`) over `endpoint`'s
    /// connection, opening one if there is none or the one there has closed; `authority` is
    /// the endpoint's address in that form, which the connector dials.
    pub(crate) async fn send(
        &self,
        request: Request<RequestBody>,
        endpoint: SocketAddr,
        authority: &Authority,
    ) -> Result<Response<Incoming>, SendError> {
        let mut sender = self.sender(endpoint, authority).await?;
        if sender.ready().await.is_err() {
            // Closed by the server (GOAWAY, idle close) since it was last used: a new one.
            sender = self.sender(endpoint, authority).await?;
            sender.ready().await.map_err(SendError::Handshake)?;
        }
        sender
            .send_request(request)
            .await
            .map_err(SendError::Request)
    }

    /// `endpoint`'s connection: the open one, or a new one (one connect for all the requests
    /// that wait for it).
    async fn sender(
        &self,
        endpoint: SocketAddr,
        authority: &Authority,
    ) -> Result<SendRequest<RequestBody>, SendError> {
        let cell = {
            let now = Instant::now();
            let mut conns = self.conns.lock().unwrap_or_else(PoisonError::into_inner);
            match conns.by_endpoint.get_mut(&endpoint) {
                Some((cell, used)) if !is_closed(cell) => {
                    *used = now;
                    cell.clone()
                }
                _ => {
                    if conns.by_endpoint.len() >= conns.sweep_at {
                        let idle_timeout = self.idle_timeout;
                        conns.by_endpoint.retain(|_, (cell, used)| {
                            !is_closed(cell) && now.duration_since(*used) < idle_timeout
                        });
                        conns.sweep_at = (conns.by_endpoint.len() * 2).max(MIN_SWEEP);
                    }
                    let cell = Arc::new(OnceCell::new());
                    conns.by_endpoint.insert(endpoint, (cell.clone(), now));
                    cell
                }
            }
        };
        cell.get_or_init(|| self.connect(endpoint, authority, Arc::downgrade(&cell)))
            .await
            .clone()
            .map_err(SendError::H2Connect)
    }

    /// Opens `endpoint`'s connection, for the slot `cell`; the connection's task lets it go
    /// from the set when it has been idle for the idle timeout.
    async fn connect(
        &self,
        endpoint: SocketAddr,
        authority: &Authority,
        cell: Weak<Slot>,
    ) -> Result<SendRequest<RequestBody>, ConnectFailed> {
        let failed = |error: BoxError| ConnectFailed(Arc::from(error));
        // `http://ADDR/`: what the connectors dial.
        let mut uri = http::uri::Parts::default();
        uri.scheme = Some(http::uri::Scheme::HTTP);
        uri.authority = Some(authority.clone());
        uri.path_and_query = Some(http::uri::PathAndQuery::from_static("/"));
        let uri = Uri::from_parts(uri).map_err(|error| failed(error.into()))?;
        let mut connector = self.connector.clone();
        std::future::poll_fn(|cx| connector.poll_ready(cx))
            .await
            .map_err(|error| failed(error.into()))?;
        let io = connector
            .call(uri)
            .await
            .map_err(|error| failed(error.into()))?;
        let (sender, connection) = http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .handshake(io)
            .await
            .map_err(|error| failed(error.into()))?;
        let (conns, idle_timeout) = (Arc::downgrade(&self.conns), self.idle_timeout);
        tokio::spawn(async move {
            let mut connection = std::pin::pin!(connection);
            // (A zero timeout would make `interval` panic.)
            let mut check = tokio::time::interval(idle_timeout.max(Duration::from_millis(1)));
            check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            check.tick().await;
            let ended = loop {
                tokio::select! {
                    ended = &mut connection => break ended,
                    _ = check.tick() => {
                        if let Some(conns) = conns.upgrade() {
                            let_go_if_idle(&conns, endpoint, &cell, idle_timeout);
                        }
                    }
                }
            };
            if let Err(error) = ended {
                tracing::debug!(%endpoint, %error, "h2 upstream connection ended");
            }
        });
        Ok(sender)
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.conns
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .by_endpoint
            .len()
    }
}

/// Removes `endpoint`'s slot from the set if it is still `cell` and no request took it for
/// `idle_timeout`: the set's handle on the connection goes, and hyper closes the connection
/// when the requests still holding one have ended.
fn let_go_if_idle(
    conns: &Mutex<Conns>,
    endpoint: SocketAddr,
    cell: &Weak<Slot>,
    idle_timeout: Duration,
) {
    let mut conns = conns.lock().unwrap_or_else(PoisonError::into_inner);
    let idle = conns
        .by_endpoint
        .get(&endpoint)
        .is_some_and(|(slot, used)| {
            std::ptr::eq(Arc::as_ptr(slot), cell.as_ptr()) && used.elapsed() >= idle_timeout
        });
    if idle {
        conns.by_endpoint.remove(&endpoint);
    }
}

/// Whether the connection in `cell` has closed or could not be opened (one still connecting
/// has not).
fn is_closed(cell: &Slot) -> bool {
    cell.get()
        .is_some_and(|conn| conn.as_ref().map_or(true, SendRequest::is_closed))
}

impl<C> fmt::Debug for PerEndpoint<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let conns = self.conns.lock().unwrap_or_else(PoisonError::into_inner);
        f.debug_struct("PerEndpoint")
            .field("endpoints", &conns.by_endpoint.len())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use crate::breaker::Overflow;

    use bytes::Bytes;
    use http_body_util::Full;
    use hyper_util::client::legacy::connect::HttpConnector;
    use hyper_util::rt::TokioIo;

    use super::*;

    async fn body(response: Response<Incoming>) -> Bytes {
        http_body_util::BodyExt::collect(response.into_body())
            .await
            .unwrap()
            .to_bytes()
    }

    fn authority(endpoint: SocketAddr) -> Authority {
        endpoint.to_string().parse().unwrap()
    }

    /// A connector that counts its connects and refuses each after `delay`, as a circuit
    /// breaker does.
    #[derive(Clone)]
    struct Refusing {
        connects: Arc<AtomicUsize>,
        delay: Duration,
    }

    impl tower_service::Service<Uri> for Refusing {
        type Response = TokioIo<tokio::net::TcpStream>;
        type Error = BoxError;
        type Future = std::pin::Pin<
            Box<dyn std::future::Future<Output = Result<Self::Response, BoxError>> + Send>,
        >;

        fn poll_ready(
            &mut self,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Result<(), BoxError>> {
            std::task::Poll::Ready(Ok(()))
        }

        fn call(&mut self, _: Uri) -> Self::Future {
            self.connects.fetch_add(1, Ordering::SeqCst);
            let delay = self.delay;
            Box::pin(async move {
                tokio::time::sleep(delay).await;
                Err(Box::new(Overflow(crate::breaker::OverflowKind::Pending)) as BoxError)
            })
        }
    }

    /// An h2 server counting the connections it accepted and those still open; answers with
    /// the `:authority`.
    async fn h2_server_counting() -> (SocketAddr, Arc<AtomicUsize>, Arc<AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let open = Arc::new(AtomicUsize::new(0));
        let (count, still_open) = (accepted.clone(), open.clone());
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                still_open.fetch_add(1, Ordering::SeqCst);
                let still_open = still_open.clone();
                let service = hyper::service::service_fn(|request: Request<Incoming>| async move {
                    let authority = request.uri().authority().map(ToString::to_string);
                    Ok::<_, std::convert::Infallible>(Response::new(Full::new(Bytes::from(
                        authority.unwrap_or_default(),
                    ))))
                });
                tokio::spawn(async move {
                    let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                    still_open.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        (addr, accepted, open)
    }

    async fn h2_server() -> (SocketAddr, Arc<AtomicUsize>) {
        let (addr, accepted, _) = h2_server_counting().await;
        (addr, accepted)
    }

    fn request(host: &str) -> Request<RequestBody> {
        let mut request = Request::new(RequestBody::empty());
        *request.uri_mut() = format!("http://{host}/").parse().unwrap();
        *request.version_mut() = http::Version::HTTP_2;
        request
    }

    #[tokio::test]
    async fn one_connection_per_endpoint_whatever_the_hosts() {
        let (addr, accepted) = h2_server().await;
        let conns = PerEndpoint::new(HttpConnector::new(), Duration::from_secs(60));
        for i in 0..20 {
            let host = format!("host-{i}.example");
            let response = conns
                .send(request(&host), addr, &authority(addr))
                .await
                .unwrap();
            assert_eq!(
                body(response).await,
                host.as_bytes(),
                "the host went as :authority"
            );
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
        assert_eq!(conns.len(), 1);
    }

    #[tokio::test]
    async fn requests_that_arrive_together_share_one_connect() {
        let (addr, accepted) = h2_server().await;
        let conns = Arc::new(PerEndpoint::new(
            HttpConnector::new(),
            Duration::from_secs(60),
        ));
        let mut sends = tokio::task::JoinSet::new();
        for i in 0..50 {
            let conns = conns.clone();
            sends.spawn(async move {
                conns
                    .send(request(&format!("h{i}")), addr, &authority(addr))
                    .await
            });
        }
        while let Some(response) = sends.join_next().await {
            assert_eq!(response.unwrap().unwrap().status(), http::StatusCode::OK);
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn an_idle_connection_is_let_go_and_closes() {
        let (addr, accepted, open) = h2_server_counting().await;
        let conns = PerEndpoint::new(HttpConnector::new(), Duration::from_millis(100));
        conns
            .send(request("x"), addr, &authority(addr))
            .await
            .unwrap();
        let sender = conns.sender(addr, &authority(addr)).await.unwrap();
        assert_eq!(conns.len(), 1);
        drop(sender);
        // Let go within two checks of the idle timeout, and closed, nothing holding it.
        let deadline = Instant::now() + Duration::from_secs(5);
        while conns.len() > 0 || open.load(Ordering::SeqCst) > 0 {
            assert!(Instant::now() < deadline, "never let go, or never closed");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // The next request opens a new connection.
        conns
            .send(request("x"), addr, &authority(addr))
            .await
            .unwrap();
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }

    /// A response body that keeps streaming after its connection was let go.
    #[tokio::test]
    async fn a_stream_outlives_its_idle_connection_being_let_go() {
        struct Slow(tokio::sync::mpsc::Receiver<Bytes>);
        impl hyper::body::Body for Slow {
            type Data = Bytes;
            type Error = std::convert::Infallible;
            fn poll_frame(
                mut self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
            ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Self::Error>>>
            {
                self.0
                    .poll_recv(cx)
                    .map(|chunk| chunk.map(|chunk| Ok(hyper::body::Frame::data(chunk))))
            }
        }
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            let service = hyper::service::service_fn(|_: Request<Incoming>| async {
                let (send, receive) = tokio::sync::mpsc::channel(1);
                tokio::spawn(async move {
                    for i in 0..6 {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        let _ = send.send(Bytes::from(format!("{i}"))).await;
                    }
                });
                Ok::<_, std::convert::Infallible>(Response::new(Slow(receive)))
            });
            let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
        // Let go after 20 ms idle, while the body takes 300 ms.
        let conns = PerEndpoint::new(HttpConnector::new(), Duration::from_millis(20));
        let response = conns
            .send(request("x"), addr, &authority(addr))
            .await
            .unwrap();
        assert_eq!(body(response).await, "012345");
        assert_eq!(conns.len(), 0, "let go meanwhile");
    }

    #[tokio::test]
    async fn a_refused_connect_is_a_connect_error() {
        let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = closed.local_addr().unwrap();
        drop(closed);
        let conns = PerEndpoint::new(HttpConnector::new(), Duration::from_secs(60));
        let error = conns
            .send(request("x"), addr, &authority(addr))
            .await
            .unwrap_err();
        assert!(error.is_connect(), "{error:?}");
    }

    #[tokio::test]
    async fn failed_endpoints_are_swept() {
        // What failed connects leave has no connection task to let it go: the sweep bounds it.
        let conns = PerEndpoint::new(
            Refusing {
                connects: Arc::default(),
                delay: Duration::ZERO,
            },
            Duration::from_secs(60),
        );
        for port in 1..200 {
            let addr = SocketAddr::from(([127, 0, 0, 1], port));
            conns
                .send(request("x"), addr, &authority(addr))
                .await
                .unwrap_err();
            assert!(conns.len() <= MIN_SWEEP, "{}", conns.len());
        }
    }

    #[tokio::test]
    async fn requests_waiting_for_a_failed_connect_fail_with_it() {
        let connects = Arc::new(AtomicUsize::new(0));
        let conns = Arc::new(PerEndpoint::new(
            Refusing {
                connects: connects.clone(),
                delay: Duration::from_millis(50),
            },
            Duration::from_secs(60),
        ));
        let addr: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let mut sends = tokio::task::JoinSet::new();
        for _ in 0..20 {
            let conns = conns.clone();
            sends.spawn(async move { conns.send(request("x"), addr, &authority(addr)).await });
        }
        while let Some(result) = sends.join_next().await {
            let error = result.unwrap().unwrap_err();
            assert!(error.is_connect(), "{error:?}");
            assert!(
                Overflow::find(&error).is_some(),
                "the breaker's refusal kept"
            );
        }
        assert_eq!(connects.load(Ordering::SeqCst), 1);
        // The next request tries again.
        conns
            .send(request("x"), addr, &authority(addr))
            .await
            .unwrap_err();
        assert_eq!(connects.load(Ordering::SeqCst), 2);
    }
}
