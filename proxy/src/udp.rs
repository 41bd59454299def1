//! The UDP listener: each client address gets a session, a socket connected to one endpoint
//! of the cluster (chosen like a TCP connection), that lives until it has been idle for the
//! idle timeout. Datagrams are relayed as they are, both ways.

use std::future::Future;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use ahash::AHashMap;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::Proxy;
use crate::http::with_ip_key;

/// Largest datagram relayed (the UDP maximum).
const MAX_DATAGRAM: usize = 65_535;

/// Datagrams queued towards one upstream at most; more are dropped, as a router would.
const SESSION_QUEUE: usize = 256;

/// What a UDP listener forwards to.
#[derive(Clone, Debug)]
pub(crate) struct UdpRoute {
    pub(crate) listener: Arc<str>,
    pub(crate) cluster: Arc<str>,
    pub(crate) idle_timeout: Duration,
}

type Sessions = Arc<Mutex<AHashMap<SocketAddr, mpsc::Sender<Vec<u8>>>>>;

pub(crate) async fn serve_udp(
    proxy: Proxy,
    socket: UdpSocket,
    route: UdpRoute,
    mut shutdown: Pin<Box<dyn Future<Output = ()> + Send>>,
) -> io::Result<()> {
    let socket = Arc::new(socket);
    let max_sessions = proxy.limits().max_connections;
    let listener_metrics = proxy.metrics().listener(&route.listener);
    let sessions: Sessions = Arc::default();
    let mut tasks = JoinSet::new();
    let mut buf = vec![0u8; MAX_DATAGRAM];
    if let Ok(addr) = socket.local_addr() {
        tracing::info!(%addr, listener = &*route.listener, cluster = &*route.cluster, "serving udp");
    }
    loop {
        let (len, client) = tokio::select! {
            () = &mut shutdown => break,
            received = socket.recv_from(&mut buf) => match received {
                Ok(received) => received,
                // ICMP errors surface here on some systems; they concern one peer only.
                Err(_) => continue,
            },
        };
        while tasks.try_join_next().is_some() {}
        let datagram = buf[..len].to_vec();
        let existing = sessions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&client)
            .cloned();
        let sender = match existing {
            Some(sender) => sender,
            None => {
                if tasks.len() >= max_sessions {
                    tracing::debug!(%client, "udp session limit reached, dropping datagram");
                    continue;
                }
                let Some(upstream) = open_session(&proxy, &route, client).await else {
                    continue;
                };
                let (sender, receiver) = mpsc::channel(SESSION_QUEUE);
                sessions
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .insert(client, sender.clone());
                let open = listener_metrics.connection();
                let (socket, sessions, idle) =
                    (socket.clone(), sessions.clone(), route.idle_timeout);
                tasks.spawn(async move {
                    relay(upstream, receiver, &socket, client, idle).await;
                    sessions
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .remove(&client);
                    drop(open);
                });
                sender
            }
        };
        // A full queue means the upstream is slower than the client: drop, like a router.
        let _ = sender.try_send(datagram);
    }
    tasks.shutdown().await;
    Ok(())
}

/// A socket connected to the endpoint the cluster picks for `client`.
async fn open_session(
    proxy: &Proxy,
    route: &UdpRoute,
    client: SocketAddr,
) -> Option<(UdpSocket, usize, Arc<crate::snapshot::ClusterEntry>)> {
    let cluster = proxy.snapshots().load().cluster(&route.cluster).cloned()?;
    let index = if cluster.balancer.wants_key() {
        with_ip_key(client.ip(), |key| cluster.pick(Some(key)))
    } else {
        cluster.pick(None)
    }?;
    let endpoint = cluster.endpoints[index].address;
    let local: SocketAddr = if endpoint.is_ipv4() {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let socket = UdpSocket::bind(local).await.ok()?;
    if let Err(error) = socket.connect(endpoint).await {
        tracing::debug!(%client, %endpoint, %error, "udp connect failed");
        cluster.record_failure(index);
        return None;
    }
    Some((socket, index, cluster))
}

/// Moves datagrams both ways until neither side has sent anything for `idle`.
async fn relay(
    (upstream, index, cluster): (UdpSocket, usize, Arc<crate::snapshot::ClusterEntry>),
    mut from_client: mpsc::Receiver<Vec<u8>>,
    listener: &UdpSocket,
    client: SocketAddr,
    idle: Duration,
) {
    let _in_flight = cluster.endpoints[index].load.start();
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        tokio::select! {
            datagram = from_client.recv() => {
                let Some(datagram) = datagram else { return };
                if upstream.send(&datagram).await.is_err() {
                    // ECONNREFUSED from an earlier ICMP: the endpoint is not listening.
                    cluster.record_failure(index);
                }
            }
            received = upstream.recv(&mut buf) => match received {
                Ok(len) => {
                    let _ = listener.send_to(&buf[..len], client).await;
                }
                Err(_) => cluster.record_failure(index),
            },
            () = tokio::time::sleep(idle) => return,
        }
    }
}
