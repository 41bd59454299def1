//! The L4 listener: each accepted connection is spliced to one endpoint of a cluster.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

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
    let (index, mut upstream) = connect(&cluster, client).await?;
    let endpoint = &cluster.endpoints[index];
    let _in_flight = endpoint.load.start();
    if let Some(version) = route.proxy_protocol {
        let local = downstream.local_addr()?;
        upstream
            .write_all(&proxy_protocol::header(version, client, local))
            .await?;
    }
    tokio::io::copy_bidirectional(&mut downstream, &mut upstream).await?;
    Ok(())
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
