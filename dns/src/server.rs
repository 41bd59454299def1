//! The DNS server handle: the live snapshot, updates, and the socket loops.

mod tcp;
mod udp;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use arc_swap::{ArcSwap, ArcSwapOption};
use tokio::net::{TcpListener, UdpSocket};
use tracing::{debug, info};

pub use self::udp::Listeners;
use crate::answer::{self, Action, Options, Transport};
use crate::error::ZoneError;
use crate::forward::Forwarder;
use crate::metrics::{self, Metrics, QType, Rcode};
use crate::snapshot::{Change, Snapshot, Updater};
use crate::zone::{ServiceRecord, Zone};

/// An authoritative DNS server for one cluster zone (and the reverse names of its addresses),
/// forwarding the rest when the zone says so.
///
/// Cheap to clone (Arc inside); all clones share the live snapshot. Queries read the snapshot
/// without locking; [`DnsServer::apply`] builds a new one beside it and swaps it in.
#[derive(Clone)]
pub struct DnsServer {
    inner: Arc<Inner>,
}

struct Inner {
    snapshot: ArcSwap<Snapshot>,
    forwarder: ArcSwapOption<Forwarder>,
    /// Serialises updates, so that revisions increase in the order snapshots are swapped in.
    writer: Mutex<Writer>,
    precomputed: AtomicBool,
    metrics: Metrics,
}

/// What updates need besides the live snapshot.
struct Writer {
    /// The settings of the zone last applied (its services are in the snapshot, not here).
    zone: Zone,
    updater: Updater,
}

impl std::fmt::Debug for DnsServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let snapshot = self.inner.snapshot.load();
        f.debug_struct("DnsServer")
            .field("origin", &snapshot.origin().to_string())
            .field("revision", &snapshot.revision())
            .finish_non_exhaustive()
    }
}

impl DnsServer {
    /// A server for `zone`, at revision 1.
    pub fn new(zone: Zone) -> Result<Self, ZoneError> {
        let snapshot = Snapshot::build(&zone, 1)?;
        let metrics = Metrics::new();
        metrics.zone(1, snapshot.record_count());
        let forwarder = zone.forward.clone().map(|c| Arc::new(new_forwarder(c)));
        Ok(Self {
            inner: Arc::new(Inner {
                snapshot: ArcSwap::from_pointee(snapshot),
                forwarder: ArcSwapOption::new(forwarder),
                writer: Mutex::new(Writer {
                    zone: Zone {
                        services: Vec::new(),
                        ..zone
                    },
                    updater: Updater::default(),
                }),
                precomputed: AtomicBool::new(true),
                metrics,
            }),
        })
    }

    /// Builds a new snapshot off the query path and swaps it in atomically; a query that starts
    /// after this returns sees the new zone. Services equal to those of the previous zone are
    /// reused, not rebuilt. On error the old zone stays.
    pub fn apply(&self, mut zone: Zone) -> Result<(), ZoneError> {
        let mut writer = self.lock_writer();
        let Writer { updater, .. } = &mut *writer;
        updater.update(&self.inner.snapshot, &zone, Change::Zone)?;
        let forwarding_changed = self
            .inner
            .forwarder
            .load()
            .as_ref()
            .map(|f| f.config().clone())
            != zone.forward;
        if forwarding_changed {
            let forwarder = zone.forward.clone().map(|c| Arc::new(new_forwarder(c)));
            self.inner.forwarder.store(forwarder);
        }
        let services = std::mem::take(&mut zone.services).len();
        writer.zone = zone;
        self.applied(services);
        Ok(())
    }

    /// Replaces (or adds) one service, keeping the rest of the zone: only that service's names
    /// are rebuilt, and the update costs the size of that service, not of the zone.
    pub fn apply_service(&self, service: ServiceRecord) -> Result<(), ZoneError> {
        let mut writer = self.lock_writer();
        let Writer { zone, updater } = &mut *writer;
        updater.update(&self.inner.snapshot, zone, Change::Service(service))?;
        self.applied(1);
        Ok(())
    }

    /// Removes one service; `false` if it was not in the zone.
    pub fn remove_service(&self, namespace: &str, name: &str) -> Result<bool, ZoneError> {
        let mut writer = self.lock_writer();
        let Writer { zone, updater } = &mut *writer;
        let removed = updater.update(
            &self.inner.snapshot,
            zone,
            Change::Remove { namespace, name },
        )?;
        if removed {
            self.applied(1);
        }
        Ok(removed)
    }

    fn lock_writer(&self) -> std::sync::MutexGuard<'_, Writer> {
        // A panic while holding the lock happens before the swap or after it, never half-way:
        // the snapshot served is always whole. Recover from poisoning.
        self.inner
            .writer
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Records that a new snapshot is live; `services` changed.
    fn applied(&self, services: usize) {
        let snapshot = self.inner.snapshot.load();
        self.inner
            .metrics
            .zone(snapshot.revision(), snapshot.record_count());
        debug!(revision = snapshot.revision(), services, "dns zone applied");
    }

    /// The revision of the zone served: 1 after [`DnsServer::new`], one more per successful
    /// apply. The SOA serial is its low 32 bits.
    pub fn revision(&self) -> u64 {
        self.inner.snapshot.load().revision()
    }

    /// The live snapshot.
    #[cfg(test)]
    pub(crate) fn live(&self) -> Arc<Snapshot> {
        self.inner.snapshot.load_full()
    }

    /// Number of records in the zone served (PTR included).
    pub fn record_count(&self) -> usize {
        self.inner.snapshot.load().record_count()
    }

    /// The server's metrics in the Prometheus text exposition format: `berth_dns_queries_total`
    /// by `qtype` and `rcode`, `berth_dns_answer_duration_seconds`, `berth_dns_zone_revision`,
    /// `berth_dns_zone_records`.
    pub fn metrics_text(&self) -> String {
        self.inner.metrics.encode()
    }

    /// Whether answers come from responses precomputed in the snapshot (the default) or are
    /// all encoded per query by the general path. Both answer the same; the switch exists to
    /// measure one against the other.
    pub fn set_precomputed(&self, on: bool) {
        self.inner.precomputed.store(on, Ordering::Relaxed);
    }

    /// Answer one wire-format query from the zone, without forwarding (names outside the zone
    /// get REFUSED here; the serving loops forward them when the zone says so).
    ///
    /// The response fits the transport: over UDP 512 octets without EDNS, or the client's EDNS
    /// payload size capped at 1232; over TCP 65535. `None` means send nothing (a response
    /// packet, or not even a readable header).
    pub fn answer(&self, query: &[u8], transport: Transport) -> Option<Vec<u8>> {
        let mut out = Vec::new();
        let options = Options {
            precomputed: self.inner.precomputed.load(Ordering::Relaxed),
            forwarding: false,
        };
        let snapshot = self.inner.snapshot.load();
        match answer::answer_into(&snapshot, query, transport, options, &mut out) {
            Action::Send => Some(out),
            Action::Drop | Action::Forward => None,
        }
    }

    /// Answers `query` into `out`, counting it; `Forward` when the forwarder must answer.
    pub(crate) fn answer_counted(
        &self,
        query: &[u8],
        transport: Transport,
        out: &mut Vec<u8>,
    ) -> Action {
        let start = Instant::now();
        let options = Options {
            precomputed: self.inner.precomputed.load(Ordering::Relaxed),
            forwarding: self.inner.forwarder.load().is_some(),
        };
        let action = {
            let snapshot = self.inner.snapshot.load();
            answer::answer_into(&snapshot, query, transport, options, out)
        };
        match action {
            Action::Send => self.count(out, start),
            Action::Drop => self
                .inner
                .metrics
                .query(QType::other, Rcode::dropped, start.elapsed()),
            Action::Forward => {}
        }
        action
    }

    /// Counts a response sent.
    pub(crate) fn count(&self, response: &[u8], start: Instant) {
        let (qtype, rcode) = metrics::summarize(response);
        self.inner.metrics.query(qtype, rcode, start.elapsed());
    }

    /// The forwarder, when forwarding is on.
    pub(crate) fn forwarder(&self) -> Option<Arc<Forwarder>> {
        self.inner.forwarder.load_full()
    }

    /// Serve UDP queries on an already bound socket until `shutdown` completes (one loop on the
    /// caller's runtime; [`DnsServer::serve`] runs one thread per worker instead).
    pub async fn serve_udp(
        &self,
        socket: UdpSocket,
        shutdown: impl Future<Output = ()> + Send,
    ) -> std::io::Result<()> {
        udp::serve_tokio(self, socket, shutdown).await
    }

    /// Serve DNS over TCP (2-byte length prefix, pipelined queries answered in order, idle
    /// timeout 10 s, bounded per-connection and total connections) until `shutdown`.
    pub async fn serve_tcp(
        &self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send,
    ) -> std::io::Result<()> {
        tcp::serve(self, listener, shutdown).await
    }

    /// Binds UDP and TCP on every address in `listen`, UDP with `workers` SO_REUSEPORT sockets
    /// per address (port 0 picks one port per address, shared by its UDP and TCP sockets).
    pub fn bind(listen: &[SocketAddr], workers: usize) -> std::io::Result<Listeners> {
        Listeners::bind(listen, workers)
    }

    /// Serves `listeners` until `shutdown` completes: one thread per UDP socket, each a
    /// receive-answer-send loop that allocates nothing per query, and TCP on the caller's
    /// runtime. Must be called within a tokio runtime (forwarding and TCP run on it).
    pub async fn serve_listeners(
        &self,
        listeners: Listeners,
        shutdown: impl Future<Output = ()> + Send,
    ) -> std::io::Result<()> {
        info!(addresses = ?listeners.local_addrs(), workers = listeners.workers(), "dns serving");
        udp::serve_listeners(self, listeners, shutdown).await
    }

    /// [`DnsServer::bind`] then [`DnsServer::serve_listeners`].
    pub async fn serve(
        &self,
        listen: &[SocketAddr],
        workers: usize,
        shutdown: impl Future<Output = ()> + Send,
    ) -> std::io::Result<()> {
        let listeners = Self::bind(listen, workers)?;
        self.serve_listeners(listeners, shutdown).await
    }
}

fn new_forwarder(config: crate::forward::ForwardConfig) -> Forwarder {
    Forwarder::new(config, || {
        std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default()
    })
}
