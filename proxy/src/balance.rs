//! Load balancing: choosing one endpoint of a cluster for each request.
//!
//! A [`Balancer`] is built off the request path for one endpoint set and lives, immutable, in a
//! snapshot. What must outlive a snapshot swap (the round-robin position today; in-flight counts
//! and outlier state later) lives in a [`LbState`] that the snapshot builder carries over by
//! cluster name. Pure logic: no I/O, no clock.

mod round_robin;

use std::sync::Arc;
use std::sync::atomic::AtomicUsize;

use crate::config::LbPolicy;

pub(crate) use round_robin::RoundRobin;

/// Per-cluster balancer state shared by every snapshot that contains the cluster.
#[derive(Debug)]
pub(crate) struct LbState {
    /// Position in the round-robin schedule; wraps.
    cursor: AtomicUsize,
}

impl LbState {
    /// State for a cluster seen for the first time. The cursor starts at a random position so
    /// that proxies on many nodes do not all send their first requests to the same endpoint.
    pub(crate) fn new(seed_name: &str) -> Self {
        let start = ahash::RandomState::new().hash_one(seed_name);
        // Truncation on 32-bit targets is fine: any start position will do.
        Self::starting_at(start as usize)
    }

    /// State whose cursor starts at `start` (deterministic, for tests).
    pub(crate) fn starting_at(start: usize) -> Self {
        Self {
            cursor: AtomicUsize::new(start),
        }
    }
}

/// An immutable balancer over one endpoint set.
#[derive(Debug)]
pub(crate) enum Balancer {
    /// Smooth weighted round robin.
    RoundRobin(RoundRobin),
}

impl Balancer {
    /// Builds the balancer for `policy` over endpoints with these weights (all at least 1).
    pub(crate) fn new(policy: LbPolicy, weights: &[u32], state: Arc<LbState>) -> Self {
        match policy {
            LbPolicy::RoundRobin => Self::RoundRobin(RoundRobin::new(weights, state)),
        }
    }

    /// Index of the endpoint for the next request, or `None` when there are no endpoints.
    pub(crate) fn pick(&self) -> Option<usize> {
        match self {
            Self::RoundRobin(rr) => rr.pick(),
        }
    }

    /// An endpoint other than `tried`, for a retry; `None` when `tried` is the only one.
    pub(crate) fn pick_other(&self, tried: usize) -> Option<usize> {
        match self {
            Self::RoundRobin(rr) => rr.pick_other(tried),
        }
    }
}
