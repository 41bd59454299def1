//! Nodes: a node whose heartbeats stop is marked not ready (its instances leave endpoints at
//! once, by the endpoints reconciler); after the eviction grace its instances are given up and
//! replaced elsewhere, as kube-controller-manager's node lifecycle controller does.

use crate::api::{Kind, Object};

use super::World;

/// How long heartbeats may be missing, and how long a node may stay not ready.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NodePolicy {
    /// Seconds without a heartbeat before a node is not ready. Default 10.
    pub lease_seconds: u64,
    /// Seconds a node stays not ready before its instances are replaced. Default 30.
    pub eviction_seconds: u64,
}

impl Default for NodePolicy {
    fn default() -> Self {
        NodePolicy {
            lease_seconds: 10,
            eviction_seconds: 30,
        }
    }
}

/// Whether a node is ready in `world` (unknown nodes are not).
pub fn node_ready(world: &World, name: &str) -> bool {
    matches!(world.get(&crate::api::key(Kind::Node, "", name)), Some(Object::Node(n)) if n.status.ready)
}

/// Expires leases and evicts the instances of nodes gone for longer than the grace.
pub fn reconcile_nodes(world: &mut World) {
    let now = world.now;
    let policy = world.node_policy;
    let mut evicted = Vec::new();
    let keys: Vec<String> = world.of(Kind::Node).map(|o| o.key()).collect();
    for key in keys {
        world.update(&key, |o| {
            let Object::Node(n) = o else { return false };
            let silent = now.saturating_sub(n.status.heartbeat_at);
            if n.status.ready && silent > policy.lease_seconds {
                n.status.ready = false;
                n.status.since = now;
                n.status.message = Some(format!("no heartbeat for {silent} s"));
                return true;
            }
            false
        });
        if let Some(Object::Node(n)) = world.get(&key)
            && !n.status.ready
            && now.saturating_sub(n.status.since) > policy.eviction_seconds
        {
            evicted.push(n.metadata.name.clone());
        }
    }
    if evicted.is_empty() {
        return;
    }
    let doomed: Vec<String> = world
        .of(Kind::Instance)
        .filter_map(|o| match o {
            Object::Instance(i) if i.spec.node.as_ref().is_some_and(|n| evicted.contains(n)) => {
                Some(o.key())
            }
            _ => None,
        })
        .collect();
    // Nothing can stop them there and report it: forget them, and the deploy reconciler starts
    // replacements. An agent that comes back stops what it no longer finds.
    for key in doomed {
        tracing::warn!(instance = %key, "node lost: instance replaced elsewhere");
        world.delete(&key);
    }
}
