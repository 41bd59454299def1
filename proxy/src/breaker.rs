//! Circuit breakers (Envoy's): per-cluster limits on upstream connections, requests waiting
//! for a connection, and requests in flight. Past a limit a request fails at once with 503
//! instead of queueing on a cluster that is already struggling.
//!
//! The counters outlive snapshot swaps (a cluster keeps its [`Breakers`] while it keeps its
//! name), and so do connections opened under older limits: new limits apply to new requests.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use crate::config::CircuitBreakers;

/// Which limit a request hit; the `kind` label of the overflow metric.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum OverflowKind {
    /// `max_connections`.
    Connections,
    /// `max_pending_requests`.
    Pending,
    /// `max_requests`.
    Requests,
}

impl OverflowKind {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Connections => "connections",
            Self::Pending => "pending",
            Self::Requests => "requests",
        }
    }
}

/// A request refused by a circuit breaker.
#[derive(Clone, Copy, Debug, thiserror::Error)]
#[error("circuit breaker open: too many {}", .0.as_str())]
pub(crate) struct Overflow(pub(crate) OverflowKind);

impl Overflow {
    /// The overflow somewhere in `error`'s source chain, if any.
    pub(crate) fn find(error: &(dyn std::error::Error + 'static)) -> Option<Self> {
        let mut next = Some(error);
        while let Some(error) = next {
            if let Some(overflow) = error.downcast_ref::<Self>() {
                return Some(*overflow);
            }
            next = error.source();
        }
        None
    }
}

/// A cluster's breaker limits and the counters they bound (requests in flight are counted by
/// the cluster's balancer state, which the retry budget shares).
#[derive(Default)]
pub(crate) struct Breakers {
    /// `u32::MAX`: no limit (the cluster has no `circuit_breakers`).
    max_connections: AtomicU32,
    max_pending: AtomicU32,
    max_requests: AtomicU32,
    connections: AtomicU32,
    pending: AtomicU32,
}

impl fmt::Debug for Breakers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Breakers")
            .field("connections", &self.connections.load(Ordering::Relaxed))
            .field("pending", &self.pending.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl Breakers {
    /// Breakers with `config`'s limits, or none.
    pub(crate) fn new(config: Option<&CircuitBreakers>) -> Arc<Self> {
        let breakers = Arc::new(Self::default());
        breakers.set_limits(config);
        breakers
    }

    /// Applies new limits (a config update); counters carry on.
    pub(crate) fn set_limits(&self, config: Option<&CircuitBreakers>) {
        let (connections, pending, requests) = config.map_or((u32::MAX, u32::MAX, u32::MAX), |c| {
            (c.max_connections, c.max_pending_requests, c.max_requests)
        });
        self.max_connections.store(connections, Ordering::Relaxed);
        self.max_pending.store(pending, Ordering::Relaxed);
        self.max_requests.store(requests, Ordering::Relaxed);
    }

    /// How far each counter is from its limit, given the requests in flight (counted
    /// elsewhere); `None` when the cluster has no breakers. Envoy's `remaining_*` gauges.
    pub(crate) fn remaining(&self, requests: u64) -> Option<[(OverflowKind, u64); 3]> {
        let max_requests = self.max_requests()?;
        let left = |max: &AtomicU32, used: &AtomicU32| {
            u64::from(
                max.load(Ordering::Relaxed)
                    .saturating_sub(used.load(Ordering::Relaxed)),
            )
        };
        Some([
            (
                OverflowKind::Connections,
                left(&self.max_connections, &self.connections),
            ),
            (
                OverflowKind::Pending,
                left(&self.max_pending, &self.pending),
            ),
            (
                OverflowKind::Requests,
                max_requests.saturating_sub(requests),
            ),
        ])
    }

    /// The request limit, `None` when unlimited (so that callers skip the check).
    pub(crate) fn max_requests(&self) -> Option<u64> {
        let max = self.max_requests.load(Ordering::Relaxed);
        (max != u32::MAX).then_some(u64::from(max))
    }

    /// A slot for one connection attempt, counted as pending until [`Pending::connected`]
    /// turns it into an open connection.
    pub(crate) fn start_connect(self: &Arc<Self>) -> Result<Pending, Overflow> {
        // Incremented first, then checked, so that concurrent attempts cannot all slip under
        // the limit; a refused attempt gives its slots back as the guards drop.
        let pending = self.pending.fetch_add(1, Ordering::Relaxed);
        let pending_guard = PendingCount(self.clone());
        if pending >= self.max_pending.load(Ordering::Relaxed) {
            return Err(Overflow(OverflowKind::Pending));
        }
        let open = self.connections.fetch_add(1, Ordering::Relaxed);
        let slot = ConnectionSlot(self.clone());
        if open >= self.max_connections.load(Ordering::Relaxed) {
            return Err(Overflow(OverflowKind::Connections));
        }
        Ok(Pending {
            _pending: pending_guard,
            slot,
        })
    }

    /// Open connections.
    #[cfg(test)]
    pub(crate) fn connections(&self) -> u32 {
        self.connections.load(Ordering::Relaxed)
    }
}

/// A connection being established: counts as pending and as a connection.
#[derive(Debug)]
pub(crate) struct Pending {
    _pending: PendingCount,
    slot: ConnectionSlot,
}

impl Pending {
    /// The connection is up: no longer pending, still counted until the slot drops.
    pub(crate) fn connected(self) -> ConnectionSlot {
        let Self { _pending, slot } = self;
        slot
    }
}

#[derive(Debug)]
struct PendingCount(Arc<Breakers>);

impl Drop for PendingCount {
    fn drop(&mut self) {
        self.0.pending.fetch_sub(1, Ordering::Relaxed);
    }
}

/// One open upstream connection, counted until it closes.
#[derive(Debug)]
pub(crate) struct ConnectionSlot(Arc<Breakers>);

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.0.connections.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(connections: u32, pending: u32) -> Arc<Breakers> {
        Breakers::new(Some(&CircuitBreakers {
            max_connections: connections,
            max_pending_requests: pending,
            max_requests: 1,
        }))
    }

    #[test]
    fn connection_and_pending_limits() {
        let b = limits(2, 1);
        let first = b.start_connect().unwrap();
        assert_eq!(
            b.start_connect().unwrap_err().0,
            OverflowKind::Pending,
            "one attempt may be pending"
        );
        let first = first.connected();
        let second = b.start_connect().unwrap().connected();
        assert_eq!(b.connections(), 2);
        assert_eq!(b.start_connect().unwrap_err().0, OverflowKind::Connections);
        drop(first);
        let third = b.start_connect().unwrap();
        drop(third);
        assert_eq!(b.connections(), 1, "a failed attempt gives its slot back");
        drop(second);
        assert_eq!(b.connections(), 0);
        assert_eq!(b.pending.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn no_config_no_limits() {
        let b = Breakers::new(None);
        assert_eq!(b.max_requests(), None);
        let slots: Vec<_> = (0..100)
            .map(|_| b.start_connect().unwrap().connected())
            .collect();
        assert_eq!(b.connections(), 100);
        drop(slots);
        b.set_limits(Some(&CircuitBreakers::default()));
        assert_eq!(b.max_requests(), Some(1024));
    }
}
