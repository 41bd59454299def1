//! The cluster snapshot the scheduler decides over, and the decision loop.

use std::collections::{BTreeMap, HashMap};

use crate::model::{Node, Request, Resources, Strategy};
use crate::unschedulable::{Reason, Unschedulable};

/// What the scheduler decided for one request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Placed on this node; the snapshot already counts it there.
    Placed {
        /// The chosen node.
        node: String,
    },
    /// No node fits.
    Unschedulable(Unschedulable),
}

/// A placement the snapshot could not record.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PlacementError {
    /// The named node is not in the snapshot.
    #[error("node {0:?} is not known to the scheduler")]
    UnknownNode(String),
    /// The instance identity is already placed.
    #[error("instance {0:?} is already placed")]
    AlreadyPlaced(String),
}

#[derive(Debug)]
struct NodeState {
    node: Node,
    used: Resources,
    instances: u32,
    per_app: HashMap<String, u32>,
}

#[derive(Debug)]
struct Placement {
    node: String,
    app: String,
    resources: Resources,
}

/// Nodes and the placements on them, updated incrementally.
///
/// Iteration is in node-name order and ties break on the name, so decisions are deterministic.
#[derive(Debug, Default)]
pub struct Cluster {
    nodes: BTreeMap<String, NodeState>,
    placements: HashMap<String, Placement>,
}

impl Cluster {
    /// An empty cluster.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a node, or updates it keeping the placements already on it.
    pub fn upsert_node(&mut self, node: Node) {
        match self.nodes.get_mut(&node.name) {
            Some(state) => state.node = node,
            None => {
                self.nodes.insert(
                    node.name.clone(),
                    NodeState {
                        node,
                        used: Resources::default(),
                        instances: 0,
                        per_app: HashMap::new(),
                    },
                );
            }
        }
    }

    /// Removes a node and forgets the placements on it (their instances are lost with it).
    pub fn remove_node(&mut self, name: &str) {
        if self.nodes.remove(name).is_some() {
            self.placements.retain(|_, p| p.node != name);
        }
    }

    /// Number of nodes known.
    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    /// Records an instance that already runs on `node` (it was placed earlier).
    ///
    /// A placement may over-commit the node: it reflects what is running, not a decision.
    pub fn place(
        &mut self,
        id: &str,
        app: &str,
        resources: Resources,
        node: &str,
    ) -> Result<(), PlacementError> {
        if self.placements.contains_key(id) {
            return Err(PlacementError::AlreadyPlaced(id.to_owned()));
        }
        let state = self
            .nodes
            .get_mut(node)
            .ok_or_else(|| PlacementError::UnknownNode(node.to_owned()))?;
        state.used = state.used.add(resources);
        state.instances += 1;
        *state.per_app.entry(app.to_owned()).or_default() += 1;
        self.placements.insert(
            id.to_owned(),
            Placement {
                node: node.to_owned(),
                app: app.to_owned(),
                resources,
            },
        );
        Ok(())
    }

    /// Releases what an instance held. Unknown identities are ignored.
    pub fn release(&mut self, id: &str) {
        let Some(p) = self.placements.remove(id) else {
            return;
        };
        if let Some(state) = self.nodes.get_mut(&p.node) {
            state.used = state.used.saturating_sub(p.resources);
            state.instances = state.instances.saturating_sub(1);
            if let Some(n) = state.per_app.get_mut(&p.app) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    state.per_app.remove(&p.app);
                }
            }
        }
    }

    /// Free resources on a node, if it is known.
    pub fn free(&self, node: &str) -> Option<Resources> {
        self.nodes
            .get(node)
            .map(|s| s.node.allocatable.saturating_sub(s.used))
    }

    /// Decides a node for each request in order, recording each placement before the next one.
    pub fn schedule(&mut self, batch: &[Request]) -> Vec<Decision> {
        batch.iter().map(|r| self.schedule_one(r)).collect()
    }

    fn schedule_one(&mut self, request: &Request) -> Decision {
        let mut rejected = Unschedulable {
            nodes: self.nodes.len(),
            ..Unschedulable::default()
        };
        let mut best: Option<(Score, &str)> = None;
        for (name, state) in &self.nodes {
            if !filter(state, request, &mut rejected) {
                continue;
            }
            let score = score(state, request);
            if best.as_ref().is_none_or(|(b, _)| score > *b) {
                best = Some((score, name));
            }
        }
        match best {
            Some((_, name)) => {
                let node = name.to_owned();
                // The node was just found in `self.nodes` and no placement exists for a fresh id;
                // a duplicate id is the caller's bug and is reported as unschedulable below.
                match self.place(&request.id, &request.app, request.resources, &node) {
                    Ok(()) => Decision::Placed { node },
                    Err(_) => Decision::Unschedulable(rejected),
                }
            }
            None => Decision::Unschedulable(rejected),
        }
    }
}

/// Whether the node can take the request; records each reason it cannot.
fn filter(state: &NodeState, request: &Request, rejected: &mut Unschedulable) -> bool {
    let mut reasons = Vec::new();
    if !state.node.schedulable {
        reasons.push(Reason::NotSchedulable);
    } else if !request
        .node_selector
        .iter()
        .all(|(k, v)| state.node.labels.get(k) == Some(v))
    {
        reasons.push(Reason::NodeSelector);
    } else {
        let free = state.node.allocatable.saturating_sub(state.used);
        if state.instances >= state.node.max_instances {
            reasons.push(Reason::TooManyInstances);
        }
        if request.resources.cpu_millis > free.cpu_millis {
            reasons.push(Reason::InsufficientCpu);
        }
        if request.resources.memory_bytes > free.memory_bytes {
            reasons.push(Reason::InsufficientMemory);
        }
    }
    for r in &reasons {
        *rejected.reasons.entry(*r).or_default() += 1;
    }
    reasons.is_empty()
}

/// Higher is better. Compared lexicographically: fewer replicas of the same app first when
/// spreading, then the allocation score of the strategy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Score {
    spread: i64,
    allocation: i64,
}

fn score(state: &NodeState, request: &Request) -> Score {
    let after = state.used.add(request.resources);
    // Dominant share after placement, in parts per million of the node.
    let share = |used: u64, total: u64| -> i64 {
        used.saturating_mul(1_000_000)
            .checked_div(total)
            .map_or(1_000_000, |s| i64::try_from(s).unwrap_or(i64::MAX))
    };
    let dominant = share(after.cpu_millis, state.node.allocatable.cpu_millis).max(share(
        after.memory_bytes,
        state.node.allocatable.memory_bytes,
    ));
    let same_app = i64::from(state.per_app.get(&request.app).copied().unwrap_or(0));
    match request.strategy {
        Strategy::Spread => Score {
            spread: -same_app,
            allocation: -dominant,
        },
        Strategy::BinPack => Score {
            spread: 0,
            allocation: dominant,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Strategy;
    use proptest::prelude::*;

    fn node(name: &str, cpu: u64, mem: u64) -> Node {
        Node {
            name: name.into(),
            allocatable: Resources {
                cpu_millis: cpu,
                memory_bytes: mem,
            },
            max_instances: 110,
            labels: BTreeMap::new(),
            schedulable: true,
        }
    }

    fn req(id: &str, app: &str, cpu: u64, mem: u64, strategy: Strategy) -> Request {
        Request {
            id: id.into(),
            app: app.into(),
            resources: Resources {
                cpu_millis: cpu,
                memory_bytes: mem,
            },
            node_selector: BTreeMap::new(),
            strategy,
        }
    }

    #[test]
    fn spread_puts_replicas_on_different_nodes() {
        let mut c = Cluster::new();
        for n in ["a", "b", "c"] {
            c.upsert_node(node(n, 4000, 8 << 30));
        }
        let batch: Vec<_> = (0..3)
            .map(|i| {
                req(
                    &format!("hello-{i}"),
                    "hello",
                    100,
                    64 << 20,
                    Strategy::Spread,
                )
            })
            .collect();
        let mut nodes: Vec<_> = c
            .schedule(&batch)
            .into_iter()
            .map(|d| match d {
                Decision::Placed { node } => node,
                other => panic!("{other:?}"),
            })
            .collect();
        nodes.sort();
        assert_eq!(nodes, ["a", "b", "c"]);
    }

    #[test]
    fn bin_pack_fills_one_node_first() {
        let mut c = Cluster::new();
        for n in ["a", "b"] {
            c.upsert_node(node(n, 1000, 1 << 30));
        }
        let batch: Vec<_> = (0..4)
            .map(|i| req(&format!("job-{i}"), "job", 250, 1 << 20, Strategy::BinPack))
            .collect();
        let placed: Vec<_> = c.schedule(&batch);
        assert!(
            placed
                .iter()
                .all(|d| *d == Decision::Placed { node: "a".into() })
        );
    }

    #[test]
    fn reasons_are_counted_like_kube_scheduler() {
        let mut c = Cluster::new();
        c.upsert_node(node("small", 100, 1 << 30));
        c.upsert_node(node("tiny", 50, 1 << 20));
        let mut cordoned = node("cordoned", 8000, 8 << 30);
        cordoned.schedulable = false;
        c.upsert_node(cordoned);
        let d = c.schedule(&[req("x", "x", 500, 512 << 20, Strategy::Spread)]);
        let Decision::Unschedulable(u) = &d[0] else {
            panic!("{d:?}")
        };
        assert_eq!(
            u.to_string(),
            "0/3 nodes available: 2 insufficient cpu, 1 insufficient memory, 1 unschedulable"
        );
    }

    #[test]
    fn release_frees_resources_and_node_selector_filters() {
        let mut c = Cluster::new();
        let mut labelled = node("east", 1000, 1 << 30);
        labelled.labels.insert("zone".into(), "east".into());
        c.upsert_node(labelled);
        c.upsert_node(node("west", 1000, 1 << 30));
        let mut r = req("a", "a", 1000, 1, Strategy::Spread);
        r.node_selector.insert("zone".into(), "east".into());
        assert_eq!(
            c.schedule(std::slice::from_ref(&r)),
            [Decision::Placed {
                node: "east".into()
            }]
        );
        r.id = "b".into();
        assert!(matches!(
            c.schedule(std::slice::from_ref(&r))[0],
            Decision::Unschedulable(_)
        ));
        c.release("a");
        assert_eq!(
            c.schedule(&[r]),
            [Decision::Placed {
                node: "east".into()
            }]
        );
        assert_eq!(c.free("east").map(|f| f.cpu_millis), Some(0));
    }

    proptest! {
        /// Whatever the cluster and the batch, no node is ever given more than it has, and an
        /// instance is only refused when no node could take it.
        #[test]
        fn never_over_commits(
            nodes in prop::collection::vec((1u64..4000, 1u64..4096, 1u32..8), 1..12),
            reqs in prop::collection::vec((0u64..1500, 0u64..2048, any::<bool>()), 0..80),
        ) {
            let mut c = Cluster::new();
            for (i, (cpu, mem, max)) in nodes.iter().enumerate() {
                let mut n = node(&format!("n{i}"), *cpu, *mem);
                n.max_instances = *max;
                c.upsert_node(n);
            }
            let batch: Vec<_> = reqs.iter().enumerate().map(|(i, (cpu, mem, pack))| {
                let s = if *pack { Strategy::BinPack } else { Strategy::Spread };
                req(&format!("r{i}"), &format!("app{}", i % 3), *cpu, *mem, s)
            }).collect();
            let decisions = c.schedule(&batch);
            for (name, state) in &c.nodes {
                prop_assert!(state.used.fits_in(&state.node.allocatable), "{name} over-committed");
                prop_assert!(state.instances <= state.node.max_instances);
            }
            for (r, d) in batch.iter().zip(&decisions) {
                if let Decision::Unschedulable(u) = d {
                    prop_assert_eq!(u.nodes, nodes.len());
                    // At the end no node has room for it either (resources only grow).
                    for state in c.nodes.values() {
                        let free = state.node.allocatable.saturating_sub(state.used);
                        prop_assert!(!(r.resources.fits_in(&free) && state.instances < state.node.max_instances));
                    }
                }
            }
        }
    }
}
