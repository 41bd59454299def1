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
mod nodes;
mod schedule;

pub use deploy::reconcile_apps;
pub use endpoints::reconcile_endpoints;
pub use nodes::{NodePolicy, node_ready, reconcile_nodes};
pub use schedule::reconcile_scheduling;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::api::{Kind, Object};
use crate::store::{Store, StoreError};

/// Everything the controllers look at, by store key, plus what they changed.
#[derive(Debug, Default, Clone)]
pub struct World {
    objects: BTreeMap<String, Object>,
    dirty: BTreeSet<String>,
    /// The time of this pass, seconds since the Unix epoch: the reconcilers read no clock.
    pub now: u64,
    /// When nodes count as lost.
    pub node_policy: NodePolicy,
}

impl World {
    /// A world holding these objects.
    pub fn new(objects: impl IntoIterator<Item = Object>) -> Self {
        World {
            objects: objects.into_iter().map(|o| (o.key(), o)).collect(),
            dirty: BTreeSet::new(),
            now: 0,
            node_policy: NodePolicy::default(),
        }
    }

    /// Objects of one kind, in key order.
    pub fn of(&self, kind: Kind) -> impl Iterator<Item = &Object> {
        let prefix = format!("{}/", kind.plural());
        self.objects
            .range(prefix.clone()..)
            .take_while(move |(k, _)| k.starts_with(&prefix))
            .map(|(_, o)| o)
    }

    /// One object.
    pub fn get(&self, key: &str) -> Option<&Object> {
        self.objects.get(key)
    }

    /// Creates or replaces an object and marks it changed.
    pub fn put(&mut self, obj: Object) {
        let k = obj.key();
        self.dirty.insert(k.clone());
        self.objects.insert(k, obj);
    }

    /// Deletes an object and marks it changed.
    pub fn delete(&mut self, key: &str) {
        if self.objects.remove(key).is_some() {
            self.dirty.insert(key.to_owned());
        }
    }

    /// Changes an object in place if `f` says it changed something.
    pub fn update(&mut self, key: &str, f: impl FnOnce(&mut Object) -> bool) {
        if let Some(o) = self.objects.get_mut(key)
            && f(o)
        {
            self.dirty.insert(key.to_owned());
        }
    }

    /// Keys changed since the world was built.
    pub fn changed(&self) -> impl Iterator<Item = (&String, Option<&Object>)> {
        self.dirty.iter().map(|k| (k, self.objects.get(k)))
    }
}

/// Runs every reconciler once over `world`. `new_name` makes instance names for an app.
pub fn reconcile(world: &mut World, new_name: &mut dyn FnMut(&str) -> String) {
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

/// One reconcile pass against the store; returns how many objects it wrote.
pub fn pass(store: &Store, node_policy: NodePolicy) -> Result<usize, StoreError> {
    let mut objects = Vec::new();
    for kind in [
        Kind::App,
        Kind::Service,
        Kind::Node,
        Kind::Instance,
        Kind::Endpoints,
    ] {
        objects.extend(store.list(kind, None).0.iter().map(|o| (**o).clone()));
    }
    let read: BTreeMap<String, u64> = objects
        .iter()
        .map(|o| (o.key(), o.meta().revision))
        .collect();
    let mut world = World::new(objects);
    world.now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    world.node_policy = node_policy;
    reconcile(&mut world, &mut random_name);
    store.transaction(|tx| {
        let mut written = 0;
        for (key, obj) in world.changed() {
            let expected = read.get(key).copied();
            let current = tx.get(key).map(|o| o.meta().revision);
            if current != expected {
                // Changed under us: the next pass sees the new version.
                continue;
            }
            match obj {
                Some(o) => tx.put(o.clone()),
                None => tx.delete(key),
            }
            written += 1;
        }
        Ok(written)
    })
}

/// Runs reconcile passes whenever the store changes (and every few seconds regardless) until
/// `shutdown`.
pub async fn run(store: Store, node_policy: NodePolicy, shutdown: CancellationToken) {
    let mut watcher = None;
    loop {
        match pass(&store, node_policy) {
            Ok(n) if n > 0 => tracing::debug!(written = n, "reconciled"),
            Ok(_) => {}
            Err(e) => tracing::error!(error = %e, "reconcile pass failed"),
        }
        let w = match watcher.as_mut() {
            Some(w) => w,
            None => match store.watch(store.revision()) {
                Ok(w) => watcher.insert(w),
                Err(_) => continue,
            },
        };
        tokio::select! {
            _ = shutdown.cancelled() => return,
            r = tokio::time::timeout(Duration::from_secs(5), w.next()) => {
                if let Ok(Err(_)) = r {
                    // Fell behind the history: a full pass needs no events, just watch anew.
                    watcher = None;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
