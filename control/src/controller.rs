//! Controllers: pure reconcile functions over a snapshot of the store ([`World`]), and the loop
//! that runs them whenever the store changes.
//!
//! Each pass reads every object once, lets the reconcilers change the in-memory world in order
//! (deploy, then scheduling, then endpoints, so that each sees the others' decisions), and
//! commits what changed in one transaction. Updates are compare-and-swap against the revision
//! that was read, so an agent's status write in between is never overwritten: the object is
//! skipped and reconciled again on the next pass, which the write itself triggers.

mod deploy;
mod endpoints;
mod incremental;
pub mod network;
mod nodes;
mod schedule;
mod subnets;
mod vips;

pub use deploy::reconcile_apps;
pub use endpoints::reconcile_endpoints;
pub use network::Network;
pub use nodes::{NodePolicy, node_ready, reconcile_nodes};
pub use schedule::reconcile_scheduling;
pub use subnets::reconcile_pod_subnets;
pub use vips::{check_cluster_ip, reconcile_vips};

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::api::{Kind, Object};
use crate::store::{Store, StoreError};

/// Everything the controllers look at, by store key, plus what they changed.
#[derive(Debug, Default, Clone)]
pub struct World {
    /// Shared with the store's snapshot: a pass copies only what it changes.
    objects: BTreeMap<String, Arc<Object>>,
    dirty: BTreeSet<String>,
    /// The time of this pass, seconds since the Unix epoch: the reconcilers read no clock.
    pub now: u64,
    /// When nodes count as lost.
    pub node_policy: NodePolicy,
    /// Where node subnets and service VIPs come from.
    pub network: Network,
}

/// What the controllers are told at start.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Config {
    /// When nodes count as lost.
    pub node_policy: NodePolicy,
    /// Where node subnets and service VIPs come from.
    pub network: Network,
}

impl World {
    /// A world holding these objects.
    pub fn new(objects: impl IntoIterator<Item = Object>) -> Self {
        Self::shared(objects.into_iter().map(Arc::new))
    }

    /// A world over objects shared with the store (no copy until one is changed).
    pub fn shared(objects: impl IntoIterator<Item = Arc<Object>>) -> Self {
        World {
            objects: objects.into_iter().map(|o| (o.key(), o)).collect(),
            dirty: BTreeSet::new(),
            now: 0,
            node_policy: NodePolicy::default(),
            network: Network::default(),
        }
    }

    /// Objects of one kind, in key order.
    pub fn of(&self, kind: Kind) -> impl Iterator<Item = &Object> {
        self.of_shared(kind).map(|o| &**o)
    }

    /// Objects of one kind, shared (cheap to keep while the world changes).
    pub fn of_shared(&self, kind: Kind) -> impl Iterator<Item = &Arc<Object>> {
        let prefix = format!("{}/", kind.plural());
        self.objects
            .range(prefix.clone()..)
            .take_while(move |(k, _)| k.starts_with(&prefix))
            .map(|(_, o)| o)
    }

    /// One object.
    pub fn get(&self, key: &str) -> Option<&Object> {
        self.objects.get(key).map(|o| &**o)
    }

    /// Creates or replaces an object and marks it changed.
    pub fn put(&mut self, obj: Object) {
        let k = obj.key();
        self.dirty.insert(k.clone());
        self.objects.insert(k, Arc::new(obj));
    }

    /// Deletes an object and marks it changed.
    pub fn delete(&mut self, key: &str) {
        if self.objects.remove(key).is_some() {
            self.dirty.insert(key.to_owned());
        }
    }

    /// Changes an object in place if `f` says it changed something.
    pub fn update(&mut self, key: &str, f: impl FnOnce(&mut Object) -> bool) {
        if let Some(o) = self.objects.get_mut(key) {
            // A copy, kept only if `f` changed it: the original may be the store's.
            let mut copy = (**o).clone();
            if f(&mut copy) {
                *o = Arc::new(copy);
                self.dirty.insert(key.to_owned());
            }
        }
    }

    /// Keys changed since the world was built.
    pub fn changed(&self) -> impl Iterator<Item = (&String, Option<&Object>)> {
        self.dirty
            .iter()
            .map(|k| (k, self.objects.get(k).map(|o| &**o)))
    }
}

/// Runs every reconciler once over `world`. `new_name` makes instance names for an app.
pub fn reconcile(world: &mut World, new_name: &mut dyn FnMut(&str) -> String) {
    reconcile_pod_subnets(world);
    reconcile_vips(world);
    reconcile_nodes(world);
    reconcile_apps(world, new_name);
    reconcile_scheduling(world);
    reconcile_endpoints(world);
}

/// A random instance name `<app>-xxxxx`, from the letters Kubernetes uses (no vowels, so no
/// words).
pub fn random_name(app: &str) -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let suffix: String = (0..5)
        .map(|_| char::from(ALPHABET[fastrand::usize(..ALPHABET.len())]))
        .collect();
    format!("{app}-{suffix}")
}

/// The addresses held in the store as a pass commits, read once per commit when an allocation
/// is about to be written.
///
/// Allocation is decided on a snapshot; checking each new address against what is held at
/// commit time (an admin's PUT, or another server's pass, may have taken it meanwhile) makes it
/// exact.
#[derive(Default)]
struct Holders {
    vips: Option<std::collections::HashMap<std::net::IpAddr, String>>,
    subnets: Option<Vec<(String, ipnet::IpNet)>>,
}

fn subnet_of(o: &Object) -> Option<ipnet::IpNet> {
    match o {
        Object::Node(n) => n.spec.pod_subnet.as_deref()?.parse().ok(),
        _ => None,
    }
}

fn vip_of(o: &Object) -> Option<std::net::IpAddr> {
    match o {
        Object::Service(s) => s.status.vip,
        _ => None,
    }
}

impl Holders {
    /// Why `obj` must not be written: an address it newly holds is someone else's now.
    fn conflict(&mut self, tx: &crate::store::Txn<'_>, obj: &Object) -> Option<String> {
        let key = obj.key();
        match obj {
            Object::Service(_) => {
                let vip = vip_of(obj)?;
                if tx.get(&key).as_ref().and_then(vip_of) == Some(vip) {
                    return None;
                }
                let held = self.vips.get_or_insert_with(|| {
                    tx.list(Kind::Service)
                        .iter()
                        .filter_map(|o| Some((vip_of(o)?, o.key())))
                        .collect()
                });
                match held.get(&vip) {
                    Some(holder) if *holder != key => {
                        Some(format!("VIP {vip} was taken by {holder} meanwhile"))
                    }
                    _ => None,
                }
            }
            Object::Node(_) => {
                let subnet = subnet_of(obj)?;
                if tx.get(&key).as_ref().and_then(subnet_of) == Some(subnet) {
                    return None;
                }
                let held = self.subnets.get_or_insert_with(|| {
                    tx.list(Kind::Node)
                        .iter()
                        .filter_map(|o| Some((o.key(), subnet_of(o)?)))
                        .collect()
                });
                held.iter()
                    .find(|(k, other)| *k != key && network::overlaps(other, &subnet))
                    .map(|(k, other)| format!("pod subnet {subnet} overlaps {other} of {k} now"))
            }
            _ => None,
        }
    }

    /// Notes what `obj`, just written, holds.
    fn record(&mut self, obj: &Object) {
        let key = obj.key();
        if let Some(held) = self.vips.as_mut()
            && matches!(obj, Object::Service(_))
        {
            held.retain(|_, k| *k != key);
            if let Some(vip) = vip_of(obj) {
                held.insert(vip, key.clone());
            }
        }
        if let Some(held) = self.subnets.as_mut()
            && matches!(obj, Object::Node(_))
        {
            held.retain(|(k, _)| *k != key);
            if let Some(net) = subnet_of(obj) {
                held.push((key, net));
            }
        }
    }
}

/// One reconcile pass against the store; returns how many objects it wrote.
pub fn pass(store: &Store, config: &Config) -> Result<usize, StoreError> {
    let (objects, _) = store.snapshot(&incremental::KINDS);
    full_pass(store, config, objects).map(|(n, _)| n)
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A pass over every object in `objects` (of [`incremental::KINDS`]), committed; returns how
/// many objects it wrote and the revisions of those writes.
fn full_pass(
    store: &Store,
    config: &Config,
    objects: Vec<Arc<Object>>,
) -> Result<(usize, Option<std::ops::RangeInclusive<u64>>), StoreError> {
    let read: BTreeMap<String, u64> = objects
        .iter()
        .map(|o| (o.key(), o.meta().revision))
        .collect();
    let mut world = World::shared(objects);
    world.now = unix_now();
    world.node_policy = config.node_policy;
    world.network = config.network.clone();
    reconcile(&mut world, &mut random_name);
    commit(store, &world, &read)
}

/// Writes what `world` changed, each object only if the store still holds the revision the
/// pass read (`read`): an agent's write in between wins, and the pass it triggers decides again.
fn commit(
    store: &Store,
    world: &World,
    read: &BTreeMap<String, u64>,
) -> Result<(usize, Option<std::ops::RangeInclusive<u64>>), StoreError> {
    store.transaction_with_revisions(|tx| {
        let mut written = 0;
        let mut holders = Holders::default();
        for (key, obj) in world.changed() {
            let expected = read.get(key).copied();
            let current = tx.get(key).map(|o| o.meta().revision);
            if current != expected {
                // Changed under us: the next pass sees the new version.
                continue;
            }
            if let Some(why) = obj.and_then(|o| holders.conflict(tx, o)) {
                // The next pass, which that write triggers, allocates again.
                tracing::info!(object = %key, reason = %why, "allocation retried");
                continue;
            }
            match obj {
                Some(o) => {
                    holders.record(o);
                    tx.put(o.clone());
                }
                None => tx.delete(key),
            }
            written += 1;
        }
        Ok(written)
    })
}

/// What the controllers' loop counts, for the API server's `/metrics`.
struct PassMetrics {
    registry: prometheus_client::registry::Registry,
    passes: prometheus_client::metrics::family::Family<
        PassLabels,
        prometheus_client::metrics::counter::Counter,
    >,
    duration: prometheus_client::metrics::family::Family<
        PassLabels,
        prometheus_client::metrics::histogram::Histogram,
        fn() -> prometheus_client::metrics::histogram::Histogram,
    >,
}

/// Which kind of pass: `full` or `app` (scoped to one app).
#[derive(Clone, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
struct PassLabels {
    scope: &'static str,
}

fn pass_histogram() -> prometheus_client::metrics::histogram::Histogram {
    // 50 us to ~1.6 s.
    prometheus_client::metrics::histogram::Histogram::new(
        prometheus_client::metrics::histogram::exponential_buckets(0.00005, 2.0, 16),
    )
}

/// One registry per process: every controller loop of the process counts into it (one per
/// server; tests run several).
static METRICS: std::sync::LazyLock<PassMetrics> = std::sync::LazyLock::new(|| {
    let mut registry = prometheus_client::registry::Registry::with_prefix("berth_controller");
    let passes = prometheus_client::metrics::family::Family::default();
    let duration = prometheus_client::metrics::family::Family::new_with_constructor(
        pass_histogram as fn() -> _,
    );
    registry.register(
        "passes",
        "Reconcile passes, by scope: full (every object) or app (one app after a status change)",
        passes.clone(),
    );
    registry.register(
        "pass_duration_seconds",
        "Time of one reconcile pass including its commit, by scope",
        duration.clone(),
    );
    PassMetrics {
        registry,
        passes,
        duration,
    }
});

fn count_pass(scope: &'static str, started: std::time::Instant) {
    let labels = PassLabels { scope };
    METRICS.passes.get_or_create(&labels).inc();
    METRICS
        .duration
        .get_or_create(&labels)
        .observe(started.elapsed().as_secs_f64());
}

/// The controllers' metrics in the text exposition format.
pub fn metrics_text() -> String {
    let mut out = String::new();
    if prometheus_client::encoding::text::encode_registry(&mut out, &METRICS.registry).is_err() {
        out.clear();
    }
    out
}

/// How often the loop checks whether the clock made a decision due (a node lease expired, an
/// eviction grace or a rollout deadline passed), which a full pass then takes.
const CLOCK_CHECK_EVERY: Duration = Duration::from_secs(1);

/// How often a full pass runs even when nothing asks for one, as a safety net: each costs
/// O(cluster) (~40 ms at 10,000 instances) and holds up the status changes behind it.
const FULL_PASS_EVERY: Duration = Duration::from_secs(60);

/// Runs reconcile passes whenever the store changes (and every few seconds regardless) until
/// `shutdown`: a full pass over a consistent snapshot, then, from the watch that starts at the
/// snapshot's revision, passes scoped to the apps whose instances reported a new status, until
/// something changes the cluster's shape, the clock makes a decision due, or the minute's
/// safety-net pass comes.
pub async fn run(store: Store, config: Config, shutdown: CancellationToken) {
    'full: loop {
        if shutdown.is_cancelled() {
            return;
        }
        let (objects, revision) = store.snapshot(&incremental::KINDS);
        let mut mirror = incremental::Mirror::new(objects.iter().cloned());
        let mut own: Vec<std::ops::RangeInclusive<u64>> = Vec::new();
        let started = std::time::Instant::now();
        let result = full_pass(&store, &config, objects);
        count_pass("full", started);
        match result {
            Ok((n, written)) => {
                if n > 0 {
                    tracing::debug!(written = n, "reconciled");
                }
                own.extend(written);
            }
            Err(e) => tracing::error!(error = %e, "reconcile pass failed"),
        }
        let Ok(mut w) = store.watch(revision) else {
            continue;
        };
        let last_full = tokio::time::Instant::now();
        let mut clock_check = last_full + CLOCK_CHECK_EVERY;
        let mut pending = incremental::Trigger::default();
        loop {
            // Checked here too: a steady stream of status changes must not starve them.
            let now = tokio::time::Instant::now();
            if now >= clock_check {
                if now >= last_full + FULL_PASS_EVERY || mirror.due(unix_now(), config.node_policy)
                {
                    continue 'full;
                }
                clock_check = now + CLOCK_CHECK_EVERY;
            }
            if pending.full {
                continue 'full;
            }
            if let Some(app) = pending.apps.pop_first() {
                let started = std::time::Instant::now();
                let result = incremental::scoped_pass(&store, &config, &mirror, &app, unix_now());
                count_pass("app", started);
                match result {
                    Ok(incremental::Scoped::Done(written)) => {
                        // Read our own writes back before the next pass reads the mirror:
                        // a pass over a stale copy would lose its writes to the revision check.
                        if let Some(range) = written {
                            let end = *range.end();
                            own.push(range);
                            while w.revision() < end {
                                let events = tokio::select! {
                                    _ = shutdown.cancelled() => return,
                                    r = w.next() => r,
                                };
                                match events {
                                    Ok(events) => {
                                        let t = mirror.apply(&events, &own);
                                        pending.full |= t.full;
                                        pending.apps.extend(t.apps);
                                    }
                                    Err(_) => continue 'full,
                                }
                            }
                        }
                    }
                    Ok(incremental::Scoped::NeedsFull) => continue 'full,
                    Err(e) => {
                        tracing::error!(error = %e, "reconcile pass failed");
                        continue 'full;
                    }
                }
                own.retain(|r| *r.end() > w.revision());
                continue;
            }
            own.retain(|r| *r.end() > w.revision());
            tokio::select! {
                _ = shutdown.cancelled() => return,
                r = tokio::time::timeout_at(clock_check, w.next()) => match r {
                    Ok(Ok(events)) => pending = mirror.apply(&events, &own),
                    // Fell behind the history: a full pass needs no events.
                    Ok(Err(_)) => continue 'full,
                    // Time for the clock check.
                    Err(_) => {}
                },
            }
        }
    }
}

#[cfg(test)]
mod tests;
