//! DNS over UDP: one SO_REUSEPORT socket per worker, each served by its own thread with a
//! blocking receive-answer-send loop (the kernel spreads datagrams over the sockets), and a
//! single-socket loop on a tokio runtime for callers that bring their own socket.

use std::future::Future;
use std::io::ErrorKind;
use std::net::{SocketAddr, TcpListener as StdTcpListener, UdpSocket as StdUdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, RawFd};

use nix::errno::Errno;
use nix::sys::socket::{MsgFlags, MultiHeaders, SockaddrStorage, recvmmsg, sendmmsg};
use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::UdpSocket;
use tokio::sync::{Semaphore, watch};
use tracing::{debug, warn};

use super::DnsServer;
use crate::answer::{Action, Transport};
use crate::forward::{self, MAX_IN_FLIGHT};

/// Largest datagram read by the single-socket loop; anything longer arrives cut and fails to
/// parse.
const MAX_DATAGRAM: usize = 65535;
/// Datagrams received and answers sent per system call by a worker.
const BATCH: usize = 32;
/// Room for one query, and for one UDP answer (at most 1232 octets), in a worker.
const SLOT: usize = 4096;
/// How often a worker blocked in receive looks at the stop flag.
const STOP_POLL: Duration = Duration::from_millis(100);
/// Receive buffer asked for each UDP socket, so that a burst waits in the kernel rather than
/// being dropped (the kernel caps it at net.core.rmem_max).
const RECV_BUFFER: usize = 4 << 20;
/// TCP accept backlog.
const BACKLOG: i32 = 1024;

/// Sockets bound by [`DnsServer::bind`], not yet served.
#[derive(Debug)]
pub struct Listeners {
    udp: Vec<StdUdpSocket>,
    tcp: Vec<StdTcpListener>,
    addrs: Vec<SocketAddr>,
    workers: usize,
}

impl Listeners {
    pub(super) fn bind(listen: &[SocketAddr], workers: usize) -> std::io::Result<Self> {
        let workers = workers.max(1);
        let mut listeners = Self {
            udp: Vec::new(),
            tcp: Vec::new(),
            addrs: Vec::new(),
            workers,
        };
        for &addr in listen {
            let (udp, tcp, bound) = bind_one(addr, workers)?;
            listeners.udp.extend(udp);
            listeners.tcp.push(tcp);
            listeners.addrs.push(bound);
        }
        Ok(listeners)
    }

    /// The addresses bound, one per listen address, ports resolved.
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// UDP sockets (and threads) per address.
    pub fn workers(&self) -> usize {
        self.workers
    }
}

/// Attempts at finding a port free for both UDP and TCP when asked for port 0.
const PORT_ATTEMPTS: usize = 16;

/// `workers` UDP sockets and a TCP listener on one address. With port 0 the kernel picks the
/// UDP port, which TCP may already use (another process's connection): pick again then.
fn bind_one(
    addr: SocketAddr,
    workers: usize,
) -> std::io::Result<(Vec<StdUdpSocket>, StdTcpListener, SocketAddr)> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let result = (|| -> std::io::Result<_> {
            let first = udp_socket(addr)?;
            let bound = first.local_addr()?;
            let mut udp = vec![first];
            for _ in 1..workers {
                udp.push(udp_socket(bound)?);
            }
            Ok((udp, tcp_listener(bound)?, bound))
        })();
        match result {
            Err(error)
                if addr.port() == 0
                    && error.kind() == std::io::ErrorKind::AddrInUse
                    && attempt < PORT_ATTEMPTS => {}
            result => return result,
        }
    }
}

fn domain(addr: SocketAddr) -> Domain {
    if addr.is_ipv4() {
        Domain::IPV4
    } else {
        Domain::IPV6
    }
}

fn udp_socket(addr: SocketAddr) -> std::io::Result<StdUdpSocket> {
    let socket = Socket::new(domain(addr), Type::DGRAM, Some(Protocol::UDP))?;
    socket.set_reuse_port(true)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    // Best effort: a smaller buffer only means more drops under bursts.
    let _ = socket.set_recv_buffer_size(RECV_BUFFER);
    socket.bind(&addr.into())?;
    socket.set_read_timeout(Some(STOP_POLL))?;
    Ok(socket.into())
}

fn tcp_listener(addr: SocketAddr) -> std::io::Result<StdTcpListener> {
    let socket = Socket::new(domain(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

pub(super) async fn serve_listeners(
    server: &DnsServer,
    listeners: Listeners,
    shutdown: impl Future<Output = ()> + Send,
) -> std::io::Result<()> {
    let stop = Arc::new(AtomicBool::new(false));
    let in_flight = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    let runtime = tokio::runtime::Handle::current();
    let mut threads = Vec::new();
    for (index, socket) in listeners.udp.into_iter().enumerate() {
        let worker = Worker {
            server: server.clone(),
            socket: Arc::new(socket),
            stop: Arc::clone(&stop),
            in_flight: Arc::clone(&in_flight),
            runtime: runtime.clone(),
        };
        let thread = std::thread::Builder::new()
            .name(format!("dns-udp-{index}"))
            .spawn(move || worker.run())?;
        threads.push(thread);
    }
    let (tcp_stop, tcp_stopped) = watch::channel(false);
    let mut tcp_tasks = Vec::new();
    for listener in listeners.tcp {
        let listener = tokio::net::TcpListener::from_std(listener)?;
        let server = server.clone();
        let mut stopped = tcp_stopped.clone();
        tcp_tasks.push(tokio::spawn(async move {
            let shutdown = async move {
                let _ = stopped.wait_for(|s| *s).await;
            };
            server.serve_tcp(listener, shutdown).await
        }));
    }

    shutdown.await;
    stop.store(true, Ordering::Relaxed);
    let _ = tcp_stop.send(true);
    let mut result = Ok(());
    for task in tcp_tasks {
        match task.await {
            Ok(Err(error)) => result = Err(error),
            Err(join) => result = Err(std::io::Error::other(join)),
            Ok(Ok(())) => {}
        }
    }
    let joined = tokio::task::spawn_blocking(move || {
        threads
            .into_iter()
            .map(|t| t.join().unwrap_or_else(|_| Err(ErrorKind::Other.into())))
            .collect::<Vec<_>>()
    })
    .await
    .map_err(std::io::Error::other)?;
    for outcome in joined {
        if let Err(error) = outcome {
            result = Err(error);
        }
    }
    result
}

/// One UDP socket and its thread.
struct Worker {
    server: DnsServer,
    socket: Arc<StdUdpSocket>,
    stop: Arc<AtomicBool>,
    in_flight: Arc<Semaphore>,
    runtime: tokio::runtime::Handle,
}

impl Worker {
    /// Receives up to [`BATCH`] datagrams per system call (recvmmsg), answers them, and sends
    /// the answers with one system call (sendmmsg). Buffers are allocated once per worker.
    fn run(self) -> std::io::Result<()> {
        let fd = self.socket.as_raw_fd();
        let mut bufs: Box<[[u8; SLOT]; BATCH]> = Box::new([[0u8; SLOT]; BATCH]);
        let mut outs: [Vec<u8>; BATCH] = std::array::from_fn(|_| Vec::with_capacity(SLOT));
        let mut recv_headers = MultiHeaders::<SockaddrStorage>::preallocate(BATCH, None);
        let mut send_headers = MultiHeaders::<SockaddrStorage>::preallocate(BATCH, None);
        let mut received: [(usize, Option<SockaddrStorage>); BATCH] = [(0, None); BATCH];
        while !self.stop.load(Ordering::Relaxed) {
            let count = {
                let mut slices = bufs.each_mut().map(|b| [IoSliceMut::new(b)]);
                // MSG_WAITFORONE: block (up to the receive timeout) for the first datagram
                // only, then take what is already queued.
                match recvmmsg(
                    fd,
                    &mut recv_headers,
                    slices.iter_mut(),
                    MsgFlags::MSG_WAITFORONE,
                    None,
                ) {
                    Ok(results) => {
                        let mut count = 0;
                        for (slot, message) in received.iter_mut().zip(results) {
                            *slot = (message.bytes, message.address);
                            count += 1;
                        }
                        count
                    }
                    Err(Errno::EAGAIN | Errno::EINTR) => continue,
                    Err(errno) => {
                        let error = std::io::Error::from(errno);
                        if is_transient(&error) {
                            continue;
                        }
                        return Err(error);
                    }
                }
            };

            let mut to_send: [usize; BATCH] = [0; BATCH];
            let mut sending = 0;
            for index in 0..count {
                let (len, address) = received[index];
                // A datagram longer than a slot arrives cut and fails to parse (FORMERR).
                let query = &bufs[index][..len.min(SLOT)];
                match self
                    .server
                    .answer_counted(query, Transport::Udp, &mut outs[index])
                {
                    Action::Send if address.is_some() => {
                        to_send[sending] = index;
                        sending += 1;
                    }
                    Action::Send | Action::Drop => {}
                    Action::Forward => {
                        if let Some(peer) = address.as_ref().and_then(to_socket_addr) {
                            self.forward(query, peer);
                        }
                    }
                }
            }
            self.send_all(fd, &mut send_headers, &outs, &received, &to_send[..sending]);
        }
        Ok(())
    }

    /// Sends `outs[i]` to the sender of `received[i]` for each `i` of `indices`, batched; a
    /// message the kernel refuses is skipped (it costs that answer only).
    fn send_all(
        &self,
        fd: RawFd,
        headers: &mut MultiHeaders<SockaddrStorage>,
        outs: &[Vec<u8>; BATCH],
        received: &[(usize, Option<SockaddrStorage>); BATCH],
        indices: &[usize],
    ) {
        let mut done = 0;
        while done < indices.len() {
            let rest = &indices[done..];
            let mut iov: [[IoSlice<'_>; 1]; BATCH] = std::array::from_fn(|_| [IoSlice::new(&[])]);
            let mut addrs: [Option<SockaddrStorage>; BATCH] = [None; BATCH];
            for (n, &index) in rest.iter().enumerate() {
                iov[n] = [IoSlice::new(&outs[index])];
                addrs[n] = received[index].1;
            }
            let sent = sendmmsg(
                fd,
                headers,
                iov[..rest.len()].iter(),
                &addrs[..rest.len()],
                [],
                MsgFlags::empty(),
            );
            match sent {
                // The count of messages sent is not read: nix's result iterator reads sender
                // addresses, which a send never fills in. On a blocking socket the kernel sends
                // all of them or reports the error of the first, so a short count only follows
                // an error on a later message, which costs those answers.
                Ok(_) => done = indices.len(),
                Err(Errno::EINTR) => {}
                Err(errno) => {
                    debug!(error = %errno, "udp send failed");
                    done += 1;
                }
            }
        }
    }

    /// Hands a query to the forwarder on the runtime; SERVFAIL at once when too many are in
    /// flight.
    fn forward(&self, query: &[u8], peer: SocketAddr) {
        let start = Instant::now();
        let (Some(forwarder), Ok(permit)) = (
            self.server.forwarder(),
            Arc::clone(&self.in_flight).try_acquire_owned(),
        ) else {
            if let Some(response) = forward::servfail_bytes(query) {
                self.server.count(&response, start);
                let _ = self.socket.send_to(&response, peer);
            }
            return;
        };
        let query = query.to_vec();
        let socket = Arc::clone(&self.socket);
        let server = self.server.clone();
        self.runtime.spawn(async move {
            let _permit = permit;
            if let Some(response) = forwarder.resolve(&query, Transport::Udp).await {
                server.count(&response, start);
                if let Err(error) = socket.send_to(&response, peer) {
                    debug!(%error, %peer, "udp send failed");
                }
            }
        });
    }
}

fn to_socket_addr(address: &SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = address.as_sockaddr_in() {
        return Some(SocketAddr::V4((*v4).into()));
    }
    address
        .as_sockaddr_in6()
        .map(|v6| SocketAddr::V6((*v6).into()))
}

/// Serves one socket on the caller's runtime until `shutdown`.
pub(super) async fn serve_tokio(
    server: &DnsServer,
    socket: UdpSocket,
    shutdown: impl Future<Output = ()> + Send,
) -> std::io::Result<()> {
    let socket = Arc::new(socket);
    let in_flight = Arc::new(Semaphore::new(MAX_INFLIGHT_TOKIO));
    let mut buf = vec![0u8; MAX_DATAGRAM];
    let mut out = Vec::with_capacity(MAX_DATAGRAM);
    tokio::pin!(shutdown);
    loop {
        let (len, peer) = tokio::select! {
            () = &mut shutdown => return Ok(()),
            received = socket.recv_from(&mut buf) => match received {
                Ok(received) => received,
                Err(error) if is_transient(&error) => {
                    debug!(%error, "udp receive failed");
                    continue;
                }
                Err(error) => return Err(error),
            },
        };
        let Some(query) = buf.get(..len) else {
            continue;
        };
        match server.answer_counted(query, Transport::Udp, &mut out) {
            Action::Send => {
                if let Err(error) = socket.send_to(&out, peer).await {
                    warn!(%error, %peer, "udp send failed");
                }
            }
            Action::Drop => {}
            Action::Forward => {
                let start = Instant::now();
                let forwarder = server.forwarder();
                let permit = Arc::clone(&in_flight).try_acquire_owned();
                let (Some(forwarder), Ok(permit)) = (forwarder, permit) else {
                    if let Some(response) = forward::servfail_bytes(query) {
                        server.count(&response, start);
                        let _ = socket.send_to(&response, peer).await;
                    }
                    continue;
                };
                let (query, socket, server) = (query.to_vec(), Arc::clone(&socket), server.clone());
                tokio::spawn(async move {
                    let _permit = permit;
                    if let Some(response) = forwarder.resolve(&query, Transport::Udp).await {
                        server.count(&response, start);
                        let _ = socket.send_to(&response, peer).await;
                    }
                });
            }
        }
    }
}

const MAX_INFLIGHT_TOKIO: usize = MAX_IN_FLIGHT;

/// Errors that concern one datagram or peer (an ICMP error reported on a later call), not the
/// socket.
fn is_transient(error: &std::io::Error) -> bool {
    matches!(
        error.kind(),
        ErrorKind::ConnectionRefused
            | ErrorKind::ConnectionReset
            | ErrorKind::Interrupted
            | ErrorKind::WouldBlock
            | ErrorKind::HostUnreachable
            | ErrorKind::NetworkUnreachable
    )
}
