//! Load balancing: choosing one endpoint of a cluster for each request.
//!
//! A [`Balancer`] is built off the request path for one endpoint set and lives, immutable, in a
//! snapshot. What must outlive a snapshot swap lives in `Arc`s carried over by the snapshot
//! builder: the round-robin cursor in [`LbState`] (by cluster name) and each endpoint's
//! [`EndpointLoad`] (by cluster name and address). Pure logic: no I/O, no clock.

mod least_request;
mod maglev;
mod random;
mod ring_hash;
mod round_robin;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use crate::config::LbPolicy;

pub(crate) use least_request::LeastRequest;
pub(crate) use maglev::Maglev;
pub(crate) use random::WeightedRandom;
pub(crate) use ring_hash::RingHash;
pub(crate) use round_robin::RoundRobin;

/// Per-cluster balancer state shared by every snapshot that contains the cluster.
#[derive(Debug)]
pub(crate) struct LbState {
    /// Position in the round-robin schedule; wraps.
    cursor: AtomicUsize,
    /// Requests of the cluster in flight, for the retry budget.
    active: AtomicU64,
    /// Budgeted retries of the cluster in flight.
    retrying: AtomicU64,
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
            active: AtomicU64::new(0),
            retrying: AtomicU64::new(0),
        }
    }

    /// Counts a request of the cluster as active until the guard drops.
    pub(crate) fn request(self: &Arc<Self>) -> Counted {
        self.active.fetch_add(1, Ordering::Relaxed);
        Counted(self.clone(), Counter::Active)
    }

    /// Like [`Self::request`], unless `max` requests are in flight already (a circuit
    /// breaker): then `None`, and nothing is counted.
    pub(crate) fn request_within(self: &Arc<Self>, max: u64) -> Option<Counted> {
        // Counted first, then checked, so that concurrent requests cannot all slip in.
        let before = self.active.fetch_add(1, Ordering::Relaxed);
        let guard = Counted(self.clone(), Counter::Active);
        (before < max).then_some(guard)
    }

    /// Requests of the cluster in flight.
    pub(crate) fn active(&self) -> u64 {
        self.active.load(Ordering::Relaxed)
    }

    /// A retry slot if fewer than `max(min, percent% of active requests)` retries are in
    /// flight; it is held until the guard drops.
    pub(crate) fn try_retry(self: &Arc<Self>, percent: u32, min: u32) -> Option<Counted> {
        let active = self.active.load(Ordering::Relaxed);
        let allowed = (active * u64::from(percent) / 100).max(u64::from(min));
        let retrying = self.retrying.fetch_add(1, Ordering::Relaxed);
        let guard = Counted(self.clone(), Counter::Retrying);
        (retrying < allowed).then_some(guard)
    }
}

#[derive(Debug)]
enum Counter {
    Active,
    Retrying,
}

/// One request or retry counted in a cluster's [`LbState`].
#[derive(Debug)]
pub(crate) struct Counted(Arc<LbState>, Counter);

impl Drop for Counted {
    fn drop(&mut self) {
        let counter = match self.1 {
            Counter::Active => &self.0.active,
            Counter::Retrying => &self.0.retrying,
        };
        counter.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Live counters of one endpoint, shared by every snapshot that lists it, so that a config
/// update neither resets `least_request` nor loses track of requests still running.
#[derive(Debug, Default)]
pub(crate) struct EndpointLoad {
    /// Requests (or TCP connections) sent and not finished.
    in_flight: AtomicU64,
    /// Requests (or TCP connections) sent, ever.
    total: AtomicU64,
    /// Requests that failed at the upstream (connect error, reset, timeout), ever.
    failures: AtomicU64,
    /// Passive and active health; see [`crate::health`].
    pub(crate) health: crate::health::EndpointHealth,
    /// Set when the endpoint was removed and its drain timeout passed: responses still
    /// streaming from it are cut.
    cut: std::sync::atomic::AtomicBool,
}

impl EndpointLoad {
    /// Counts a request as in flight until the returned guard drops.
    pub(crate) fn start(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        self.total.fetch_add(1, Ordering::Relaxed);
        InFlight(self.clone())
    }

    pub(crate) fn in_flight(&self) -> u64 {
        self.in_flight.load(Ordering::Relaxed)
    }

    pub(crate) fn total(&self) -> u64 {
        self.total.load(Ordering::Relaxed)
    }

    pub(crate) fn failures(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }

    pub(crate) fn record_failure(&self) {
        self.failures.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn is_cut(&self) -> bool {
        self.cut.load(Ordering::Relaxed)
    }

    /// Cuts what still streams from this endpoint after `timeout`, if a runtime is there to
    /// keep the time (there always is when requests are being served).
    pub(crate) fn cut_after(self: &Arc<Self>, timeout: std::time::Duration) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let load = Arc::downgrade(self);
        runtime.spawn(async move {
            tokio::time::sleep(timeout).await;
            // Gone already: nothing in flight held it.
            if let Some(load) = load.upgrade() {
                load.cut.store(true, Ordering::Relaxed);
            }
        });
    }
}

/// One request in flight on an endpoint.
#[derive(Debug)]
pub(crate) struct InFlight(Arc<EndpointLoad>);

impl InFlight {
    pub(crate) fn endpoint(&self) -> &EndpointLoad {
        &self.0
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// An immutable balancer over one endpoint set.
#[derive(Debug)]
pub(crate) enum Balancer {
    /// Smooth weighted round robin.
    RoundRobin(RoundRobin),
    /// Power of two choices over in-flight counts.
    LeastRequest(LeastRequest),
    /// Weighted random.
    Random(WeightedRandom),
    /// Ketama ring.
    RingHash(RingHash),
    /// Maglev table.
    Maglev(Maglev),
}

/// An endpoint as the balancer sees it.
pub(crate) struct Weighted<'a> {
    /// Identity hashed by the consistent-hashing policies: "ip:port", as libketama does.
    pub(crate) name: &'a str,
    /// At least 1.
    pub(crate) weight: u32,
    pub(crate) load: &'a Arc<EndpointLoad>,
}

impl Balancer {
    /// Builds the balancer for `policy` over these endpoints.
    pub(crate) fn new(policy: LbPolicy, endpoints: &[Weighted<'_>], state: Arc<LbState>) -> Self {
        let weights: Vec<u32> = endpoints.iter().map(|e| e.weight).collect();
        match policy {
            LbPolicy::RoundRobin => Self::RoundRobin(RoundRobin::new(&weights, state)),
            LbPolicy::LeastRequest => Self::LeastRequest(LeastRequest::new(endpoints)),
            LbPolicy::Random => Self::Random(WeightedRandom::new(&weights)),
            LbPolicy::RingHash => Self::RingHash(RingHash::new(endpoints)),
            LbPolicy::Maglev => Self::Maglev(Maglev::new(endpoints)),
        }
    }

    /// Whether [`Self::pick`] uses a key, so that callers only extract one when it does.
    pub(crate) fn wants_key(&self) -> bool {
        matches!(self, Self::RingHash(_) | Self::Maglev(_))
    }

    /// Index of the endpoint for the next request, or `None` when there are no endpoints.
    /// `key` feeds the hashing policies; without one they pick at random.
    pub(crate) fn pick(&self, key: Option<&[u8]>) -> Option<usize> {
        match self {
            Self::RoundRobin(rr) => rr.pick(),
            Self::LeastRequest(lr) => lr.pick(),
            Self::Random(r) => r.pick(),
            Self::RingHash(ring) => match key {
                Some(key) => ring.pick(key),
                None => random_index(ring.len()),
            },
            Self::Maglev(table) => match key {
                Some(key) => table.pick(key),
                None => random_index(table.len()),
            },
        }
    }

    /// An endpoint other than `tried`, for a retry; `None` when `tried` is the only one.
    pub(crate) fn pick_other(&self, tried: usize) -> Option<usize> {
        match self {
            Self::RoundRobin(rr) => rr.pick_other(tried),
            Self::LeastRequest(lr) => lr.pick_other(tried),
            Self::Random(r) => other_index(r.len(), tried),
            Self::RingHash(ring) => other_index(ring.len(), tried),
            Self::Maglev(table) => other_index(table.len(), tried),
        }
    }
}

fn random_index(len: usize) -> Option<usize> {
    (len > 0).then(|| fastrand::usize(..len))
}

/// A uniformly random index of `0..len` other than `tried`.
fn other_index(len: usize, tried: usize) -> Option<usize> {
    if len < 2 {
        return None;
    }
    Some((tried % len + 1 + fastrand::usize(..len - 1)) % len)
}

/// libketama's hash: the first four bytes of the MD5 digest, little-endian.
pub(crate) fn ketama_hash(key: &[u8]) -> u32 {
    use md5::Digest;
    let digest = md5::Md5::digest(key);
    u32::from_le_bytes([digest[0], digest[1], digest[2], digest[3]])
}

#[cfg(test)]
pub(crate) mod testing {
    use super::*;

    /// Endpoints "10.0.0.i:80" with these weights, and their loads.
    pub(crate) fn endpoints(weights: &[u32]) -> (Vec<String>, Vec<Arc<EndpointLoad>>) {
        let names = (0..weights.len())
            .map(|i| format!("10.0.{}.{}:80", i / 250, i % 250))
            .collect();
        let loads = weights.iter().map(|_| Arc::default()).collect();
        (names, loads)
    }

    pub(crate) fn weighted<'a>(
        names: &'a [String],
        weights: &[u32],
        loads: &'a [Arc<EndpointLoad>],
    ) -> Vec<Weighted<'a>> {
        names
            .iter()
            .zip(weights)
            .zip(loads)
            .map(|((name, &weight), load)| Weighted { name, weight, load })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_budget() {
        let state = Arc::new(LbState::starting_at(0));
        let active: Vec<_> = (0..50).map(|_| state.request()).collect();
        // 20% of 50 = 10 retries at once.
        let held: Vec<_> = (0..10).map(|_| state.try_retry(20, 3).unwrap()).collect();
        assert!(state.try_retry(20, 3).is_none());
        drop(held);
        assert!(state.try_retry(20, 3).is_some());
        drop(active);
        let held: Vec<_> = (0..3).map(|_| state.try_retry(20, 3).unwrap()).collect();
        assert!(
            state.try_retry(20, 3).is_none(),
            "the minimum applies when idle"
        );
        drop(held);
        assert_eq!(state.retrying.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn other_index_never_returns_tried() {
        assert_eq!(other_index(1, 0), None);
        for _ in 0..200 {
            let i = other_index(5, 3).unwrap();
            assert!(i < 5 && i != 3);
        }
    }

    #[test]
    fn ketama_hash_matches_libketama() {
        // md5("") = d41d8cd98f00b204..., libketama reads bytes 0..4 little-endian.
        assert_eq!(ketama_hash(b""), 0xd98c_1dd4);
    }
}
