//! The L4 listener: each accepted connection is spliced to one endpoint of a cluster.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::Proxy;
use crate::config::ProxyProtocol;
use crate::http::with_ip_key;
use crate::proxy_protocol;
use crate::snapshot::ClusterEntry;

/// Connect attempts per client connection: the first pick and up to two others.
const CONNECT_ATTEMPTS: usize = 3;

/// What a TCP listener forwards to.
#[derive(Clone, Debug)]
pub(crate) struct TcpRoute {
    pub(crate) listener: Arc<str>,
    pub(crate) cluster: Arc<str>,
    pub(crate) proxy_protocol: Option<ProxyProtocol>,
    /// A connection with no byte either way for this long is closed; `None`: never.
    pub(crate) idle_timeout: Option<Duration>,
}

pub(crate) async fn serve_tcp(
    proxy: Proxy,
    listener: TcpListener,
    route: TcpRoute,
    mut shutdown: Pin<Box<dyn Future<Output = ()> + Send>>,
) -> io::Result<()> {
    let limits = proxy.limits();
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let mut connections = JoinSet::new();
    let listener_metrics = proxy.metrics().listener(&route.listener);
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, listener = &*route.listener, cluster = &*route.cluster, "serving tcp");
    }
    loop {
        let Some((permit, stream, client)) =
            crate::server::accept_bounded(&listener, &permits, &mut shutdown).await
        else {
            break;
        };
        while connections.try_join_next().is_some() {}
        let open = listener_metrics.connection();
        let proxy = proxy.clone();
        let route = route.clone();
        connections.spawn(async move {
            if let Err(error) = splice(&proxy, &route, stream, client).await {
                tracing::debug!(%client, cluster = &*route.cluster, %error, "tcp connection ended with an error");
            }
            drop((permit, open));
        });
    }
    drop(listener);
    // Open connections get the drain timeout to finish on their own, then are cut.
    let drained = tokio::time::timeout(limits.drain_timeout, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            listener = &*route.listener,
            "drain timeout elapsed, closing tcp connections"
        );
    }
    connections.shutdown().await;
    Ok(())
}

async fn splice(
    proxy: &Proxy,
    route: &TcpRoute,
    mut downstream: TcpStream,
    client: SocketAddr,
) -> io::Result<()> {
    let _ = downstream.set_nodelay(true);
    // One snapshot for the connection's lifetime: the endpoint set it picks from.
    let Some(cluster) = proxy.snapshots().load().cluster(&route.cluster).cloned() else {
        return Err(io::Error::other("cluster is gone"));
    };
    // The cluster's connection breaker bounds L4 connections as it bounds pooled ones.
    let pending = match cluster.breakers.start_connect() {
        Ok(pending) => pending,
        Err(overflow) => {
            proxy.metrics().overflow(&cluster.name, overflow.0);
            return Err(io::Error::other(overflow));
        }
    };
    let (index, mut upstream) = connect(&cluster, client).await?;
    let _slot = pending.connected();
    let endpoint = &cluster.endpoints[index];
    let _in_flight = endpoint.load.start();
    if let Some(version) = route.proxy_protocol {
        let local = downstream.local_addr()?;
        upstream
            .write_all(&proxy_protocol::header(version, client, local))
            .await?;
    }
    match &cluster.upstream_tls {
        None => relay(&mut downstream, &mut upstream, route.idle_timeout).await,
        // TLS origination, after the PROXY header (which goes in clear, as HAProxy sends it).
        Some(tls) => {
            let handshake = tls.connect(tls.name_for(endpoint.address), upstream);
            let mut upstream = tokio::time::timeout(cluster.connect_timeout, handshake)
                .await
                .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "tls handshake timed out"))?
                .inspect_err(|_| cluster.record_failure(index))?;
            relay(&mut downstream, &mut upstream, route.idle_timeout).await
        }
    }
}

async fn relay<U: AsyncRead + AsyncWrite + Unpin>(
    downstream: &mut TcpStream,
    upstream: &mut U,
    idle_timeout: Option<Duration>,
) -> io::Result<()> {
    match idle_timeout {
        None => tokio::io::copy_bidirectional(downstream, upstream)
            .await
            .map(drop),
        Some(timeout) => copy_until_idle(downstream, upstream, timeout).await,
    }
}

/// Copies both ways like [`tokio::io::copy_bidirectional`] until both sides are done, or until
/// no byte was read from either side for `timeout`; then both connections are dropped (closed).
async fn copy_until_idle<U: AsyncRead + AsyncWrite + Unpin>(
    downstream: &mut TcpStream,
    upstream: &mut U,
    timeout: Duration,
) -> io::Result<()> {
    let start = Instant::now();
    // Milliseconds since `start` of the last read that returned data, on either side.
    let last = AtomicU64::new(0);
    let mut downstream = Active {
        inner: downstream,
        start,
        last: &last,
    };
    let mut upstream = Active {
        inner: upstream,
        start,
        last: &last,
    };
    let idle = async {
        loop {
            let since_start = Duration::from_millis(last.load(Ordering::Relaxed));
            let deadline = start + since_start + timeout;
            if Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep_until(deadline).await;
        }
    };
    tokio::select! {
        copied = tokio::io::copy_bidirectional(&mut downstream, &mut upstream) => {
            copied.map(drop)
        }
        () = idle => {
            tracing::debug!(?timeout, "closing idle tcp connection");
            Err(io::Error::new(io::ErrorKind::TimedOut, "idle timeout"))
        }
    }
}

/// A stream that notes when it last read data.
struct Active<'a, S> {
    inner: &'a mut S,
    start: Instant,
    last: &'a AtomicU64,
}

impl<S: AsyncRead + Unpin> AsyncRead for Active<'_, S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut *self.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            let elapsed = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
            self.last.store(elapsed, Ordering::Relaxed);
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Active<'_, S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.inner).poll_shutdown(cx)
    }
}

/// Connects to the endpoint the balancer picks, trying others on connect failure.
async fn connect(cluster: &ClusterEntry, client: SocketAddr) -> io::Result<(usize, TcpStream)> {
    let first = if cluster.balancer.wants_key() {
        with_ip_key(client.ip(), |key| cluster.pick(Some(key)))
    } else {
        cluster.pick(None)
    };
    let mut index = first.ok_or_else(|| io::Error::other("no healthy endpoint"))?;
    let mut last = None;
    for _ in 0..CONNECT_ATTEMPTS.min(cluster.endpoints.len()) {
        let endpoint = &cluster.endpoints[index];
        match tokio::time::timeout(
            cluster.connect_timeout,
            TcpStream::connect(endpoint.address),
        )
        .await
        {
            Ok(Ok(stream)) => {
                cluster.record_success(index);
                let _ = stream.set_nodelay(true);
                return Ok((index, stream));
            }
            Ok(Err(error)) => last = Some(error),
            Err(_) => last = Some(io::Error::from(io::ErrorKind::TimedOut)),
        }
        cluster.record_failure(index);
        match cluster.pick_other(index) {
            Some(next) => index = next,
            None => break,
        }
    }
    Err(last.unwrap_or_else(|| io::Error::other("no endpoint to connect to")))
}
