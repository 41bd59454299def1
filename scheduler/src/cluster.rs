//! The cluster snapshot the scheduler decides over: nodes, placements and the indexes that make
//! each decision cheap, all updated incrementally.
//!
//! Layout: per-node data that every decision reads (free CPU and memory, room for instances,
//! reciprocals of allocatable, a seeded tie-break) lives in flat arrays indexed by node slot;
//! everything else (labels, ports, the placements on a node) lives in [`Slot`]. Nodes with room
//! are kept ordered by free capacity (see `order`), so a decision walks from the most promising
//! node and stops as soon as no further node can beat the best one found: a few nodes per
//! decision instead of all of them, with the same result as a full scan. Per app, counts per
//! node and per topology domain, and the domains other instances' anti-affinities exclude, are
//! kept up to date on every placement and release, so a constraint check is a hash lookup,
//! never a walk over instances. Label and taint verdicts are cached per distinct selector until
//! a node changes; refusals are cached per request shape until capacity can have grown.

mod compile;
mod fair;
mod order;
mod preempt;
mod scan;

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use ahash::AHashMap;

use crate::constraint::{Constraint, Mode, Topology};
use crate::model::{HostPort, Node, Request, RequestError, Resources};
use crate::unschedulable::Unschedulable;

/// What the scheduler decided for one request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Placed on this node; the snapshot already counts it there.
    Placed {
        /// The chosen node.
        node: String,
    },
    /// Placed on this node after evicting lower-priority instances, which control must stop.
    /// The snapshot has already released the victims and counts the new instance.
    Preempted {
        /// The chosen node.
        node: String,
        /// Identities of the evicted instances (as given to [`Cluster::place`] or in requests).
        victims: Vec<String>,
    },
    /// No node fits, and preemption would not help.
    Unschedulable(Unschedulable),
    /// The request itself is malformed; nothing was placed.
    Invalid(RequestError),
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
    /// The request is malformed.
    #[error(transparent)]
    Invalid(#[from] RequestError),
}

/// What a node holds, as [`Cluster::usage`] reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Usage {
    /// Allocatable resources.
    pub allocatable: Resources,
    /// Resources reserved by placements.
    pub used: Resources,
    /// Number of placements.
    pub instances: u32,
}

/// A topology key id; [`NODE_TOPO`] stands for "each node is a domain".
pub(crate) type Topo = u32;
/// Topology id of [`Topology::Node`].
pub(crate) const NODE_TOPO: Topo = u32::MAX;
/// No domain: the node lacks the label.
pub(crate) const NO_DOMAIN: u32 = u32::MAX;

#[derive(Debug)]
struct Slot {
    node: Node,
    alive: bool,
    used: Resources,
    instances: u32,
    /// Host ports taken: the node's reserved ones and those of its placements (encoded).
    ports: Vec<u32>,
    /// Placement indexes on this node.
    placements: Vec<u32>,
    /// Domain id per topology key id, or [`NO_DOMAIN`].
    domains: Vec<u32>,
    /// Some taint has effect PreferNoSchedule (scored, not filtered).
    prefer_taints: bool,
}

/// The values of one label key used as a topology.
#[derive(Debug, Default)]
struct TopologyKey {
    name: String,
    values: AHashMap<String, u32>,
    /// Live nodes per domain id.
    nodes: Vec<u32>,
    /// Domains with at least one live node.
    live_domains: u32,
}

#[derive(Debug, Default)]
struct AppState {
    per_node: AHashMap<u32, u32>,
    per_domain: AHashMap<(Topo, u32), u32>,
    total: u32,
    /// Bumped on every placement or release of this app (invalidates cached failures).
    version: u64,
    /// Placed instances holding a required anti-affinity against this app, per domain of the
    /// rule's topology: no instance of this app may join such a domain.
    anti_by: AHashMap<(Topo, u32), u32>,
    /// The same holders per topology, to know which topologies to look at.
    anti_topos: AHashMap<Topo, u32>,
}

#[derive(Debug)]
struct Placement {
    id: String,
    app: u32,
    tenant: u32,
    node: u32,
    resources: Resources,
    ports: Vec<u32>,
    priority: i32,
    /// Required anti-affinities of this instance: (target app, topology).
    anti: Vec<(u32, Topo)>,
}

#[derive(Debug)]
struct Tenant {
    usage: Resources,
    tiebreak: u64,
}

/// The static part of a request (labels and taints), whose verdict per node only changes when
/// nodes do: cached per distinct value.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct StaticKey {
    node_selector: BTreeMap<String, String>,
    node_affinity: Vec<crate::selector::Expression>,
    tolerations: Vec<crate::taint::Toleration>,
}

/// Per node: 0 passes, else the reason code (see `compile::static_code`).
type StaticVerdict = Arc<[u8]>;

#[derive(Debug)]
struct Failure {
    epoch: u64,
    app_version: u64,
    why: Unschedulable,
}

/// Nodes and the placements on them, updated incrementally.
///
/// Decisions are deterministic for a given seed and sequence of calls: ties between equally
/// good nodes break on a hash of the node name and the seed.
#[derive(Debug, Default)]
pub struct Cluster {
    seed: u64,
    // Hot per-slot arrays, read by every decision.
    free_cpu: Vec<u64>,
    free_mem: Vec<u64>,
    /// Instances the slot may still take; 0 when dead or not schedulable.
    room: Vec<u32>,
    inv_cpu: Vec<f64>,
    inv_mem: Vec<f64>,
    tiebreak: Vec<u64>,
    /// Has a NoSchedule/NoExecute taint.
    tainted: Vec<bool>,
    /// Free fraction of CPU plus free fraction of memory, as f64 bits (see `order`).
    free_key: Vec<u64>,
    /// Whether the slot is in the two orders below (alive, schedulable, room for one more).
    ordered: Vec<bool>,
    /// Slots by free key ascending, then tie-break: the bin-pack walk.
    /// Entries carry the slot's free CPU and memory so that the walks reject nodes that fit
    /// in total but not per resource without touching the per-slot arrays.
    by_least_free: BTreeSet<(u64, u64, u32, u64, u64)>,
    /// Slots by free key descending, then tie-break: the spread walk.
    by_most_free: BTreeSet<(Reverse<u64>, u64, u32, u64, u64)>,
    /// Free CPU and memory as recorded in the two entries above.
    ordered_free: Vec<(u64, u64)>,
    /// Free CPU fraction minus free memory fraction, as order-preserving bits (see `order`);
    /// kept only once a balanced request has been seen.
    balance_key: Vec<u64>,
    /// Whether the two balance orders below are kept.
    balance_indexed: bool,
    /// Slots by balance key ascending, then tie-break.
    by_balance: BTreeSet<(u64, u64, u32)>,
    /// Slots by balance key descending, then tie-break.
    by_balance_desc: BTreeSet<(Reverse<u64>, u64, u32)>,
    /// Smallest and largest reciprocals of allocatable over live nodes; `None` when a node
    /// changed since they were computed.
    inv_bounds: Option<order::InvBounds>,
    // Cold per-slot data.
    slots: Vec<Slot>,
    free_slots: Vec<u32>,
    by_name: AHashMap<String, u32>,
    live: usize,
    total_alloc: Resources,
    total_used: Resources,
    // Topology keys.
    keys: Vec<TopologyKey>,
    key_ids: AHashMap<String, Topo>,
    // Apps and tenants.
    apps: Vec<AppState>,
    app_ids: AHashMap<String, u32>,
    tenants: Vec<Tenant>,
    tenant_ids: AHashMap<String, u32>,
    // Placements.
    placements: Vec<Option<Placement>>,
    free_placements: Vec<u32>,
    by_id: AHashMap<String, u32>,
    /// Placements per priority, so that preemption is skipped at once when nothing placed
    /// has a lower priority than the request.
    priorities: BTreeMap<i32, u32>,
    // Caches.
    static_cache: AHashMap<StaticKey, StaticVerdict>,
    /// Per node selector (by its verdict) and topology: the domains of the nodes the selector
    /// admits, over which spread skew is measured. Cleared with `static_cache`.
    eligible_cache: AHashMap<(usize, Topo), Arc<[u32]>>,
    failures: AHashMap<Request, Failure>,
    failures_max_priority: i32,
    /// Bumped whenever capacity may have grown (release, node change): cached failures expire.
    epoch: u64,
}

/// FNV-1a then splitmix64: a stable, platform-independent hash for tie-breaks.
pub(crate) fn stable_hash(seed: u64, s: &str) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325_u64 ^ seed;
    for b in s.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x100_0000_01b3);
    }
    h = h.wrapping_add(0x9e37_79b9_7f4a_7c15);
    h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

fn reciprocal(total: u64) -> f64 {
    if total == 0 {
        0.0
    } else {
        // Precision loss is irrelevant for a score.
        #[allow(clippy::cast_precision_loss)]
        let t = total as f64;
        1.0 / t
    }
}

impl Cluster {
    /// An empty cluster with seed 0.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty cluster whose tie-breaks follow `seed`.
    pub fn with_seed(seed: u64) -> Self {
        Cluster {
            seed,
            ..Self::default()
        }
    }

    /// Number of nodes known.
    pub fn node_count(&self) -> usize {
        self.live
    }

    /// Number of placements recorded.
    pub fn placement_count(&self) -> usize {
        self.by_id.len()
    }

    /// Adds a node, or updates it keeping the placements already on it.
    pub fn upsert_node(&mut self, node: Node) {
        self.epoch += 1;
        self.static_cache.clear();
        self.eligible_cache.clear();
        if let Some(&idx) = self.by_name.get(&node.name) {
            self.update_node(idx, node);
            return;
        }
        let idx = match self.free_slots.pop() {
            Some(i) => i,
            None => {
                let i = u32::try_from(self.slots.len()).unwrap_or(u32::MAX - 1);
                self.slots.push(Slot {
                    node: Node::default(),
                    alive: false,
                    used: Resources::default(),
                    instances: 0,
                    ports: Vec::new(),
                    placements: Vec::new(),
                    domains: Vec::new(),
                    prefer_taints: false,
                });
                self.free_cpu.push(0);
                self.free_mem.push(0);
                self.room.push(0);
                self.inv_cpu.push(0.0);
                self.inv_mem.push(0.0);
                self.tiebreak.push(0);
                self.tainted.push(false);
                self.free_key.push(0);
                self.balance_key.push(0);
                self.ordered_free.push((0, 0));
                self.ordered.push(false);
                i
            }
        };
        self.by_name.insert(node.name.clone(), idx);
        let i = idx as usize;
        self.tiebreak[i] = stable_hash(self.seed, &node.name);
        let slot = &mut self.slots[i];
        slot.node = node;
        slot.alive = true;
        slot.used = Resources::default();
        slot.instances = 0;
        slot.placements.clear();
        self.live += 1;
        self.attach(idx);
    }

    /// Removes a node and forgets the placements on it (their instances are lost with it).
    pub fn remove_node(&mut self, name: &str) {
        let Some(idx) = self.by_name.remove(name) else {
            return;
        };
        self.epoch += 1;
        self.static_cache.clear();
        self.eligible_cache.clear();
        for p in std::mem::take(&mut self.slots[idx as usize].placements) {
            self.unplace(p);
        }
        self.detach(idx);
        let i = idx as usize;
        self.slots[i].alive = false;
        self.refresh(idx);
        self.live -= 1;
        self.free_slots.push(idx);
    }

    /// Node-derived state: labels to domains, ports, taints, totals, hot arrays.
    fn attach(&mut self, idx: u32) {
        let i = idx as usize;
        let slot = &mut self.slots[i];
        slot.domains.clear();
        for key in &mut self.keys {
            let d = match slot.node.labels.get(&key.name) {
                Some(v) => {
                    let next = u32::try_from(key.values.len()).unwrap_or(NO_DOMAIN - 1);
                    let d = *key.values.entry(v.clone()).or_insert(next);
                    if d as usize >= key.nodes.len() {
                        key.nodes.resize(d as usize + 1, 0);
                    }
                    key.nodes[d as usize] += 1;
                    if key.nodes[d as usize] == 1 {
                        key.live_domains += 1;
                    }
                    d
                }
                None => NO_DOMAIN,
            };
            slot.domains.push(d);
        }
        slot.ports = slot.node.reserved_ports.iter().map(|p| p.code()).collect();
        slot.prefer_taints = slot
            .node
            .taints
            .iter()
            .any(|t| t.effect == crate::taint::Effect::PreferNoSchedule);
        self.tainted[i] = slot
            .node
            .taints
            .iter()
            .any(|t| t.effect != crate::taint::Effect::PreferNoSchedule);
        self.inv_cpu[i] = reciprocal(slot.node.allocatable.cpu_millis);
        self.inv_mem[i] = reciprocal(slot.node.allocatable.memory_bytes);
        self.total_alloc = self.total_alloc.add(slot.node.allocatable);
        // A node joining only widens the extremes; a first node sets them.
        self.inv_bounds = match self.inv_bounds {
            Some(b) if self.live > 1 => Some(b.widened(self.inv_cpu[i], self.inv_mem[i])),
            _ => None,
        };
        self.refresh(idx);
    }

    /// Reverses [`Self::attach`] (placements are handled by the caller).
    fn detach(&mut self, idx: u32) {
        let slot = &mut self.slots[idx as usize];
        for (k, &d) in slot.domains.iter().enumerate() {
            if d != NO_DOMAIN {
                let key = &mut self.keys[k];
                key.nodes[d as usize] -= 1;
                if key.nodes[d as usize] == 0 {
                    key.live_domains -= 1;
                }
            }
        }
        slot.domains.clear();
        self.total_alloc = self.total_alloc.saturating_sub(slot.node.allocatable);
        // Only a node at an extreme can move it: recompute on the next decision then.
        if self
            .inv_bounds
            .is_some_and(|b| b.at_extreme(self.inv_cpu[idx as usize], self.inv_mem[idx as usize]))
        {
            self.inv_bounds = None;
        }
    }

    fn update_node(&mut self, idx: u32, node: Node) {
        let on_node = self.slots[idx as usize].placements.clone();
        // Domains may change with labels: take the placements out of the domain counts and put
        // them back once the node is re-attached.
        for &p in &on_node {
            self.count(p, false);
        }
        self.detach(idx);
        self.slots[idx as usize].node = node;
        self.attach(idx);
        for &p in &on_node {
            self.count(p, true);
            let slot = &mut self.slots[idx as usize];
            if let Some(pl) = &self.placements[p as usize] {
                slot.ports.extend(&pl.ports);
            }
        }
    }

    /// Recomputes the hot arrays of a slot from its cold data.
    fn refresh(&mut self, idx: u32) {
        let i = idx as usize;
        let slot = &self.slots[i];
        let free = slot.node.allocatable.saturating_sub(slot.used);
        self.free_cpu[i] = free.cpu_millis;
        self.free_mem[i] = free.memory_bytes;
        self.room[i] = if slot.alive && slot.node.schedulable {
            slot.node.max_instances.saturating_sub(slot.instances)
        } else {
            0
        };
        self.reorder(idx);
    }

    /// Interns a topology, indexing every node and placement for a label key seen first.
    fn topo(&mut self, t: &Topology) -> Topo {
        let name = match t {
            Topology::Node => return NODE_TOPO,
            Topology::Label(name) => name,
        };
        if let Some(&k) = self.key_ids.get(name) {
            return k;
        }
        let k = u32::try_from(self.keys.len()).unwrap_or(NODE_TOPO - 1);
        self.keys.push(TopologyKey {
            name: name.clone(),
            ..TopologyKey::default()
        });
        self.key_ids.insert(name.clone(), k);
        let key = &mut self.keys[k as usize];
        for slot in &mut self.slots {
            let d = match slot.node.labels.get(name) {
                Some(v) if slot.alive => {
                    let next = u32::try_from(key.values.len()).unwrap_or(NO_DOMAIN - 1);
                    let d = *key.values.entry(v.clone()).or_insert(next);
                    if d as usize >= key.nodes.len() {
                        key.nodes.resize(d as usize + 1, 0);
                    }
                    key.nodes[d as usize] += 1;
                    if key.nodes[d as usize] == 1 {
                        key.live_domains += 1;
                    }
                    d
                }
                _ => NO_DOMAIN,
            };
            slot.domains.push(d);
        }
        for p in self.placements.iter().flatten() {
            let d = self.slots[p.node as usize].domains[k as usize];
            if d != NO_DOMAIN {
                *self.apps[p.app as usize]
                    .per_domain
                    .entry((k, d))
                    .or_default() += 1;
            }
        }
        k
    }

    fn app(&mut self, name: &str) -> u32 {
        if let Some(&a) = self.app_ids.get(name) {
            return a;
        }
        let a = u32::try_from(self.apps.len()).unwrap_or(u32::MAX);
        self.apps.push(AppState::default());
        self.app_ids.insert(name.to_owned(), a);
        a
    }

    fn tenant(&mut self, name: &str) -> u32 {
        if let Some(&t) = self.tenant_ids.get(name) {
            return t;
        }
        let t = u32::try_from(self.tenants.len()).unwrap_or(u32::MAX);
        self.tenants.push(Tenant {
            usage: Resources::default(),
            tiebreak: stable_hash(self.seed, name),
        });
        self.tenant_ids.insert(name.to_owned(), t);
        t
    }

    /// The domain of a node in a topology.
    fn domain(&self, node: u32, topo: Topo) -> u32 {
        if topo == NODE_TOPO {
            node
        } else {
            self.slots[node as usize].domains[topo as usize]
        }
    }

    /// Instances of `app` in a domain.
    fn count_in(&self, app: u32, topo: Topo, domain: u32) -> u32 {
        let a = &self.apps[app as usize];
        if topo == NODE_TOPO {
            a.per_node.get(&domain).copied().unwrap_or(0)
        } else {
            a.per_domain.get(&(topo, domain)).copied().unwrap_or(0)
        }
    }

    /// Adds or removes a placement in its app's per-node and per-domain counts, and its
    /// required anti-affinities in the per-domain holders of their target apps.
    fn count(&mut self, p: u32, add: bool) {
        let Some(pl) = &self.placements[p as usize] else {
            return;
        };
        let slot = &self.slots[pl.node as usize];
        let bump = |c: &mut u32| {
            if add {
                *c += 1;
            } else {
                *c = c.saturating_sub(1);
            }
        };
        for &(target, topo) in &pl.anti {
            let d = if topo == NODE_TOPO {
                pl.node
            } else {
                slot.domains[topo as usize]
            };
            if d == NO_DOMAIN {
                continue;
            }
            let t = &mut self.apps[target as usize];
            bump(t.anti_by.entry((topo, d)).or_default());
            if t.anti_by.get(&(topo, d)) == Some(&0) {
                t.anti_by.remove(&(topo, d));
            }
            bump(t.anti_topos.entry(topo).or_default());
            if t.anti_topos.get(&topo) == Some(&0) {
                t.anti_topos.remove(&topo);
            }
        }
        let app = &mut self.apps[pl.app as usize];
        bump(app.per_node.entry(pl.node).or_default());
        if app.per_node.get(&pl.node) == Some(&0) {
            app.per_node.remove(&pl.node);
        }
        for (k, &d) in slot.domains.iter().enumerate() {
            if d != NO_DOMAIN {
                let key = (u32::try_from(k).unwrap_or(NODE_TOPO - 1), d);
                bump(app.per_domain.entry(key).or_default());
                if app.per_domain.get(&key) == Some(&0) {
                    app.per_domain.remove(&key);
                }
            }
        }
    }

    /// Records a placement and updates every index. The node must be alive.
    fn commit(&mut self, pl: Placement) -> u32 {
        let idx = match self.free_placements.pop() {
            Some(i) => i,
            None => {
                self.placements.push(None);
                u32::try_from(self.placements.len() - 1).unwrap_or(u32::MAX)
            }
        };
        let node = pl.node;
        let slot = &mut self.slots[node as usize];
        slot.used = slot.used.add(pl.resources);
        slot.instances += 1;
        slot.ports.extend(&pl.ports);
        slot.placements.push(idx);
        self.total_used = self.total_used.add(pl.resources);
        let t = &mut self.tenants[pl.tenant as usize];
        t.usage = t.usage.add(pl.resources);
        *self.priorities.entry(pl.priority).or_default() += 1;
        let app = &mut self.apps[pl.app as usize];
        app.total += 1;
        app.version += 1;
        if pl.priority < self.failures_max_priority && !self.failures.is_empty() {
            // A new lower-priority placement is a new possible preemption victim.
            self.failures.clear();
        }
        self.by_id.insert(pl.id.clone(), idx);
        self.placements[idx as usize] = Some(pl);
        self.count(idx, true);
        self.refresh(node);
        idx
    }

    /// Removes a placement from every index and returns it.
    fn unplace(&mut self, idx: u32) -> Option<Placement> {
        self.count(idx, false);
        let pl = self.placements[idx as usize].take()?;
        self.free_placements.push(idx);
        self.by_id.remove(&pl.id);
        self.epoch += 1;
        let slot = &mut self.slots[pl.node as usize];
        slot.used = slot.used.saturating_sub(pl.resources);
        slot.instances = slot.instances.saturating_sub(1);
        for port in &pl.ports {
            if let Some(at) = slot.ports.iter().position(|p| p == port) {
                slot.ports.swap_remove(at);
            }
        }
        if let Some(at) = slot.placements.iter().position(|&p| p == idx) {
            slot.placements.swap_remove(at);
        }
        self.total_used = self.total_used.saturating_sub(pl.resources);
        let t = &mut self.tenants[pl.tenant as usize];
        t.usage = t.usage.saturating_sub(pl.resources);
        if let Some(n) = self.priorities.get_mut(&pl.priority) {
            *n -= 1;
            if *n == 0 {
                self.priorities.remove(&pl.priority);
            }
        }
        let app = &mut self.apps[pl.app as usize];
        app.total = app.total.saturating_sub(1);
        app.version += 1;
        self.refresh(pl.node);
        Some(pl)
    }

    /// Builds the placement record of a request on a node.
    fn placement_of(&mut self, request: &Request, node: u32) -> Placement {
        let app = self.app(&request.app);
        let tenant = self.tenant(&request.tenant);
        let mut anti = Vec::new();
        for c in &request.constraints {
            if let Constraint::AntiAffinity {
                app: target,
                topology,
                mode: Mode::Required,
            } = c
            {
                let target = self.app(target);
                let topo = self.topo(topology);
                anti.push((target, topo));
            }
        }
        Placement {
            id: request.id.clone(),
            app,
            tenant,
            node,
            resources: request.resources,
            ports: request.host_ports.iter().map(|p| p.code()).collect(),
            priority: request.priority,
            anti,
        }
    }

    /// Records an instance that already runs on `node` (it was placed earlier), with app
    /// `app`, priority 0 and the empty tenant.
    ///
    /// A placement may over-commit the node: it reflects what is running, not a decision.
    pub fn place(
        &mut self,
        id: &str,
        app: &str,
        resources: Resources,
        node: &str,
    ) -> Result<(), PlacementError> {
        self.place_request(
            &Request {
                id: id.to_owned(),
                app: app.to_owned(),
                resources,
                ..Request::default()
            },
            node,
        )
    }

    /// Records a running instance with everything the scheduler accounts for: its priority
    /// (for preemption), tenant (for fairness), host ports and anti-affinities (which later
    /// placements must respect).
    pub fn place_request(&mut self, request: &Request, node: &str) -> Result<(), PlacementError> {
        request.validate()?;
        if self.by_id.contains_key(&request.id) {
            return Err(PlacementError::AlreadyPlaced(request.id.clone()));
        }
        let idx = *self
            .by_name
            .get(node)
            .ok_or_else(|| PlacementError::UnknownNode(node.to_owned()))?;
        let pl = self.placement_of(request, idx);
        self.commit(pl);
        Ok(())
    }

    /// Releases what an instance held. Unknown identities are ignored.
    pub fn release(&mut self, id: &str) {
        if let Some(&idx) = self.by_id.get(id) {
            self.unplace(idx);
        }
    }

    /// Free resources on a node, if it is known.
    pub fn free(&self, node: &str) -> Option<Resources> {
        self.usage(node)
            .map(|u| u.allocatable.saturating_sub(u.used))
    }

    /// What a node holds, if it is known.
    pub fn usage(&self, node: &str) -> Option<Usage> {
        let slot = &self.slots[*self.by_name.get(node)? as usize];
        Some(Usage {
            allocatable: slot.node.allocatable,
            used: slot.used,
            instances: slot.instances,
        })
    }

    /// The node an instance is placed on.
    pub fn node_of(&self, id: &str) -> Option<&str> {
        let p = self.placements[*self.by_id.get(id)? as usize].as_ref()?;
        Some(&self.slots[p.node as usize].node.name)
    }

    /// Host ports taken on a node (reserved and placed), if it is known.
    pub fn ports_in_use(&self, node: &str) -> Option<Vec<HostPort>> {
        let slot = &self.slots[*self.by_name.get(node)? as usize];
        Some(
            slot.ports
                .iter()
                .map(|&c| HostPort {
                    port: u16::try_from(c & 0xffff).unwrap_or(0),
                    protocol: if c >> 16 == 1 {
                        crate::model::Protocol::Udp
                    } else {
                        crate::model::Protocol::Tcp
                    },
                })
                .collect(),
        )
    }

    /// Resources held per tenant (by placements), for fairness reporting.
    pub fn tenant_usage(&self, tenant: &str) -> Resources {
        self.tenant_ids
            .get(tenant)
            .map_or_else(Resources::default, |&t| self.tenants[t as usize].usage)
    }
}

#[cfg(test)]
mod tests;
