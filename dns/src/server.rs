//! The DNS server handle: the live snapshot, updates, and the socket loops.

mod tcp;
mod udp;

use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};

use arc_swap::ArcSwap;
use tokio::net::{TcpListener, UdpSocket};
use tracing::debug;

use crate::answer::{self, Transport};
use crate::error::ZoneError;
use crate::snapshot::Snapshot;
use crate::zone::Zone;

/// An authoritative DNS server for one cluster zone.
///
/// Cheap to clone (Arc inside); all clones share the live snapshot. Queries read the snapshot
/// without locking; [`DnsServer::apply`] builds a new one beside it and swaps it in.
#[derive(Clone)]
pub struct DnsServer {
    inner: Arc<Inner>,
}

struct Inner {
    snapshot: ArcSwap<Snapshot>,
    /// Serialises applies, so that revisions increase in the order snapshots are swapped in.
    apply: Mutex<()>,
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
        Ok(Self {
            inner: Arc::new(Inner {
                snapshot: ArcSwap::from_pointee(snapshot),
                apply: Mutex::new(()),
            }),
        })
    }

    /// Build a new snapshot off the query path and swap it in atomically. On error the old one
    /// stays.
    pub fn apply(&self, zone: Zone) -> Result<(), ZoneError> {
        // The guard protects no data, so a panic elsewhere while holding it leaves nothing
        // inconsistent: recover from poisoning.
        let _guard = self
            .inner
            .apply
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let revision = self.inner.snapshot.load().revision() + 1;
        let snapshot = Snapshot::build(&zone, revision)?;
        self.inner.snapshot.store(Arc::new(snapshot));
        debug!(revision, services = zone.services.len(), "dns zone applied");
        Ok(())
    }

    /// Number of successful applies (starts at 1 after new). Exposed later as the zone
    /// serial/metric.
    pub fn revision(&self) -> u64 {
        self.inner.snapshot.load().revision()
    }

    /// Answer one wire-format query.
    ///
    /// The response fits the transport: over UDP 512 octets without EDNS, or the client's EDNS
    /// payload size capped at 1232; over TCP 65535. `None` means send nothing (a response
    /// packet, or not even a readable header).
    pub fn answer(&self, query: &[u8], transport: Transport) -> Option<Vec<u8>> {
        answer::answer(&self.inner.snapshot.load(), query, transport)
    }

    /// Serve UDP queries on an already bound socket until `shutdown` completes.
    pub async fn serve_udp(
        &self,
        socket: UdpSocket,
        shutdown: impl Future<Output = ()> + Send,
    ) -> std::io::Result<()> {
        udp::serve(self, socket, shutdown).await
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
}
