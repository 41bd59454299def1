//! Opens upstream connections for a cluster's pool: TCP, circuit-breaker accounting and,
//! when the cluster asks for it, TLS with SNI, verification and ALPN.

use std::error::Error as StdError;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::uri::Authority;
use http::{Request, Response, Uri};
use hyper::body::Incoming;
use hyper::rt::{Read, ReadBufCursor, Write};
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;

use crate::breaker::{Breakers, ConnectionSlot};
use crate::http::RequestBody;
use crate::upstream::SendError;
use crate::upstream::h2::PerEndpoint;

/// TLS towards a cluster's endpoints.
#[derive(Clone, Debug)]
pub(crate) struct UpstreamTls {
    pub(crate) config: Arc<rustls::ClientConfig>,
    /// Fixed SNI and verified name; `None`: the endpoint's IP address.
    pub(crate) server_name: Option<ServerName<'static>>,
}

impl UpstreamTls {
    /// The TLS handshake over `tcp` to the endpoint named `name`.
    pub(crate) fn connect(
        &self,
        name: ServerName<'static>,
        tcp: TcpStream,
    ) -> tokio_rustls::Connect<TcpStream> {
        tokio_rustls::TlsConnector::from(self.config.clone()).connect(name, tcp)
    }

    /// The name to verify an endpoint's certificate against: the configured one, else its
    /// address.
    pub(crate) fn name_for(&self, endpoint: std::net::SocketAddr) -> ServerName<'static> {
        self.server_name
            .clone()
            .unwrap_or_else(|| ServerName::IpAddress(endpoint.ip().into()))
    }
}

/// The connector of one cluster's pool. Cheap to clone.
#[derive(Clone, Debug)]
pub(crate) struct Connector {
    tcp: HttpConnector,
    breakers: Arc<Breakers>,
    tls: Option<UpstreamTls>,
    /// Bounds the TLS handshake (the TCP connect has its own bound in `tcp`).
    handshake_timeout: Duration,
}

impl Connector {
    pub(crate) fn new(
        tcp: HttpConnector,
        breakers: Arc<Breakers>,
        tls: Option<UpstreamTls>,
        handshake_timeout: Duration,
    ) -> Self {
        Self {
            tcp,
            breakers,
            tls,
            handshake_timeout,
        }
    }
}

type BoxError = Box<dyn StdError + Send + Sync>;

impl tower_service::Service<Uri> for Connector {
    type Response = Conn;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Conn, BoxError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            // Refused before any socket is opened: the point of a breaker.
            let pending = this.breakers.start_connect()?;
            let mut tcp = this.tcp;
            std::future::poll_fn(|cx| tower_service::Service::<Uri>::poll_ready(&mut tcp, cx))
                .await?;
            let stream = tower_service::Service::call(&mut tcp, uri.clone()).await?;
            let io = match &this.tls {
                None => Io::Plain(stream),
                Some(tls) => {
                    let name = match &tls.server_name {
                        Some(name) => name.clone(),
                        None => endpoint_name(&uri)?,
                    };
                    let handshake = tls.connect(name, stream.into_inner());
                    let stream = tokio::time::timeout(this.handshake_timeout, handshake)
                        .await
                        .map_err(|_| {
                            io::Error::new(io::ErrorKind::TimedOut, "tls handshake timed out")
                        })??;
                    Io::Tls(Box::new(TokioIo::new(stream)))
                }
            };
            Ok(Conn {
                io,
                _slot: pending.connected(),
            })
        })
    }
}

/// The endpoint's IP address as the name to verify (endpoints are addresses, never names).
fn endpoint_name(uri: &Uri) -> io::Result<ServerName<'static>> {
    let host = uri.host().unwrap_or_default();
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    host.parse::<IpAddr>()
        .map(|ip| ServerName::IpAddress(ip.into()))
        .map_err(|_| io::Error::other(format!("endpoint host {host:?} is not an IP address")))
}

/// An upstream connection, counted by the cluster's breakers until it closes.
#[derive(Debug)]
pub(crate) struct Conn {
    io: Io,
    _slot: ConnectionSlot,
}

#[derive(Debug)]
enum Io {
    Plain(TokioIo<TcpStream>),
    /// Boxed: a TLS session is a kilobyte, and the connection lives on the heap anyway.
    Tls(Box<TokioIo<tokio_rustls::client::TlsStream<TcpStream>>>),
}

impl Connection for Conn {
    fn connected(&self) -> Connected {
        match &self.io {
            Io::Plain(stream) => stream.connected(),
            Io::Tls(stream) => {
                let (tcp, session) = stream.inner().get_ref();
                let connected = tcp.connected();
                if session.alpn_protocol() == Some(b"h2") {
                    connected.negotiated_h2()
                } else {
                    connected
                }
            }
        }
    }
}

impl Read for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Io::Tls(s) => Pin::new(&mut **s).poll_read(cx, buf),
        }
    }
}

impl Write for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Io::Tls(s) => Pin::new(&mut **s).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Io::Tls(s) => Pin::new(&mut **s).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match &self.io {
            Io::Plain(s) => s.is_write_vectored(),
            Io::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s).poll_flush(cx),
            Io::Tls(s) => Pin::new(&mut **s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Io::Tls(s) => Pin::new(&mut **s).poll_shutdown(cx),
        }
    }
}

/// The upstream connections of clusters with TLS or circuit breakers, opened through a
/// [`Connector`] for its accounting and handshake: hyper-util's pool for HTTP/1.1, one
/// multiplexed connection per endpoint for HTTP/2.
#[derive(Clone, Debug)]
pub(crate) enum PooledClient {
    /// HTTP/1.1: the request's URI names the endpoint, which keys hyper-util's pool.
    /// Boxed: a client is a few hundred bytes, the other variant a pointer.
    Http1(Box<hyper_util::client::legacy::Client<Connector, RequestBody>>),
    /// HTTP/2: the URI carries the request's host (its `:authority`); a connection per
    /// endpoint.
    Http2(Arc<PerEndpoint<Connector>>),
}

impl PooledClient {
    /// Sends `request` to `endpoint` (which the URI names for HTTP/1.1), whose address in
    /// authority form is `authority`.
    pub(crate) async fn send(
        &self,
        request: Request<RequestBody>,
        endpoint: SocketAddr,
        authority: &Authority,
    ) -> Result<Response<Incoming>, SendError> {
        match self {
            Self::Http1(client) => client.request(request).await.map_err(SendError::Pooled),
            Self::Http2(conns) => conns.send(request, endpoint, authority).await,
        }
    }
}

/// How long an idle pooled connection is kept (as the plain upstream pool does).
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// TCP keep-alive on upstream connections, to notice dead peers behind idle ones.
const TCP_KEEPALIVE: Duration = Duration::from_secs(60);

/// A new pool for one cluster.
pub(crate) fn pooled_client(
    connect_timeout: Duration,
    h2: bool,
    breakers: Arc<Breakers>,
    tls: Option<UpstreamTls>,
) -> PooledClient {
    let mut tcp = HttpConnector::new();
    tcp.set_connect_timeout(Some(connect_timeout));
    tcp.set_nodelay(true);
    tcp.set_keepalive(Some(TCP_KEEPALIVE));
    tcp.enforce_http(true);
    let connector = Connector::new(tcp, breakers, tls, connect_timeout);
    if h2 {
        return PooledClient::Http2(Arc::new(PerEndpoint::new(connector, POOL_IDLE_TIMEOUT)));
    }
    PooledClient::Http1(Box::new(
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .pool_timer(hyper_util::rt::TokioTimer::new())
            .timer(hyper_util::rt::TokioTimer::new())
            .build(connector),
    ))
}
