//! Nodes: a node whose heartbeats stop is marked not ready (its instances leave endpoints at
//! once, by the endpoints reconciler); after the eviction grace its instances are given up and
//! replaced elsewhere, as kube-controller-manager's node lifecycle controller does. Instances on
//! a node with a `NoExecute` taint they do not tolerate are stopped (drained like any stop) and
//! replaced, as Kubernetes' taint manager evicts them.

use std::collections::BTreeMap;

use crate::api::{Kind, Object, Taint, TaintEffect};

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

/// Stops instances on nodes with a `NoExecute` taint that their app does not tolerate.
fn evict_untolerated(world: &mut World) {
    let no_execute: BTreeMap<String, Vec<Taint>> = world
        .of(Kind::Node)
        .filter_map(|o| match o {
            Object::Node(n) => {
                let t: Vec<Taint> = n
                    .spec
                    .taints
                    .iter()
                    .filter(|t| t.effect == TaintEffect::NoExecute)
                    .cloned()
                    .collect();
                (!t.is_empty()).then(|| (n.metadata.name.clone(), t))
            }
            _ => None,
        })
        .collect();
    if no_execute.is_empty() {
        return;
    }
    let mut doomed = Vec::new();
    for o in world.of(Kind::Instance) {
        let Object::Instance(i) = o else { continue };
        let Some(taints) = i.spec.node.as_ref().and_then(|n| no_execute.get(n)) else {
            continue;
        };
        if i.spec.stop {
            continue;
        }
        let app = crate::api::key(Kind::App, &i.metadata.namespace, &i.spec.app);
        let tolerations = match world.get(&app) {
            Some(Object::App(a)) => a.spec.tolerations.as_slice(),
            _ => &[],
        };
        if let Some(t) = taints
            .iter()
            .find(|t| !tolerations.iter().any(|x| x.tolerates(t)))
        {
            doomed.push((o.key(), t.clone()));
        }
    }
    for (key, taint) in doomed {
        world.update(&key, |o| {
            let Object::Instance(i) = o else { return false };
            tracing::info!(instance = %key, %taint, "evicted: NoExecute taint not tolerated");
            i.spec.stop = true;
            i.status.message = Some(format!(
                "evicted: node {} has the taint {taint}, which the app does not tolerate",
                i.spec.node.as_deref().unwrap_or("")
            ));
            true
        });
    }
}

/// Expires leases, evicts the instances of nodes gone for longer than the grace, and those
/// that do not tolerate a `NoExecute` taint of their node.
pub fn reconcile_nodes(world: &mut World) {
    evict_untolerated(world);
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
