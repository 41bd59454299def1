//! A request turned into ids and precomputed values once per decision, and the per-node checks
//! and scores over it.

use std::sync::Arc;

use super::{Cluster, NO_DOMAIN, NODE_TOPO, StaticKey, StaticVerdict, Topo};
use crate::constraint::{Constraint, Mode};
use crate::model::{Request, Strategy};
use crate::taint::{Effect, Toleration, tolerated};
use crate::unschedulable::Reason;

/// A required constraint, with what the decision needs precomputed.
#[derive(Debug)]
pub(super) enum Hard {
    MaxPer {
        topo: Topo,
        max: u32,
    },
    Spread {
        topo: Topo,
        max_skew: u32,
        min: u32,
    },
    /// `vacuous`: the target app runs nowhere and is the instance's own app, so the first
    /// instance may go anywhere (as Kubernetes does for self-affinity).
    Affinity {
        app: u32,
        topo: Topo,
        vacuous: bool,
    },
    Anti {
        app: u32,
        topo: Topo,
    },
}

/// A preferred constraint or score term.
#[derive(Debug)]
pub(super) enum Soft {
    /// Fewer instances of the same app on the node (the spread strategy).
    SameApp,
    Spread {
        topo: Topo,
        min: u32,
    },
    Affinity {
        app: u32,
        topo: Topo,
        weight: f64,
    },
    Anti {
        app: u32,
        topo: Topo,
        weight: f64,
    },
}

/// A request ready for the scan.
#[derive(Debug)]
pub(super) struct Compiled {
    pub(super) app: u32,
    pub(super) cpu: u64,
    pub(super) mem: u64,
    pub(super) ports: Vec<u32>,
    /// `None` when the request has no selector, affinity or toleration: only tainted nodes fail.
    pub(super) statics: Option<StaticVerdict>,
    pub(super) hard: Vec<Hard>,
    /// Topologies in which placed instances hold anti-affinities against this app.
    pub(super) anti_by: Vec<Topo>,
    pub(super) soft: Vec<Soft>,
    /// Largest total the soft terms can add (they may also subtract).
    pub(super) bonus_max: f64,
    pub(super) strategy: Strategy,
    pub(super) priority: i32,
    pub(super) tolerations: Vec<Toleration>,
}

const STATIC_OK: u8 = 0;
const STATIC_TAINT: u8 = 1;
const STATIC_SELECTOR: u8 = 2;

/// Penalty per untolerated PreferNoSchedule taint, in units of the allocation score (0..1).
const PREFER_TAINT_PENALTY: f64 = 0.5;

impl Cluster {
    pub(super) fn compile(&mut self, r: &Request) -> Compiled {
        if r.strategy == Strategy::Balanced {
            self.index_balance();
        }
        let app = self.app(&r.app);
        let statics =
            if r.node_selector.is_empty() && r.node_affinity.is_empty() && r.tolerations.is_empty()
            {
                None
            } else {
                Some(self.static_verdict(r))
            };
        let mut hard = Vec::new();
        let mut soft = Vec::new();
        let mut bonus_max = 0.0;
        if r.strategy == Strategy::Spread {
            soft.push(Soft::SameApp);
        }
        for c in &r.constraints {
            let topo = self.topo(c.topology());
            match c {
                Constraint::MaxPer { max, .. } => hard.push(Hard::MaxPer { topo, max: *max }),
                Constraint::Spread { max_skew, mode, .. } => {
                    let eligible = statics.as_ref().map(|v| self.eligible(r, v, topo));
                    let min = self.min_domain_count(app, topo, eligible.as_deref());
                    match mode {
                        Mode::Required => hard.push(Hard::Spread {
                            topo,
                            max_skew: *max_skew,
                            min,
                        }),
                        Mode::Preferred { .. } => soft.push(Soft::Spread { topo, min }),
                    }
                }
                Constraint::Affinity {
                    app: target, mode, ..
                } => {
                    let target = self.app(target);
                    match mode {
                        Mode::Required => hard.push(Hard::Affinity {
                            app: target,
                            topo,
                            vacuous: target == app && self.apps[target as usize].total == 0,
                        }),
                        Mode::Preferred { weight } => {
                            let weight = f64::from(*weight) / 100.0;
                            bonus_max += weight;
                            soft.push(Soft::Affinity {
                                app: target,
                                topo,
                                weight,
                            });
                        }
                    }
                }
                Constraint::AntiAffinity {
                    app: target, mode, ..
                } => {
                    let target = self.app(target);
                    match mode {
                        Mode::Required => hard.push(Hard::Anti { app: target, topo }),
                        Mode::Preferred { weight } => soft.push(Soft::Anti {
                            app: target,
                            topo,
                            weight: f64::from(*weight) / 100.0,
                        }),
                    }
                }
            }
        }
        let mut anti_by: Vec<Topo> = self.apps[app as usize].anti_topos.keys().copied().collect();
        anti_by.sort_unstable();
        Compiled {
            app,
            cpu: r.resources.cpu_millis,
            mem: r.resources.memory_bytes,
            ports: r.host_ports.iter().map(|p| p.code()).collect(),
            statics,
            hard,
            anti_by,
            soft,
            bonus_max,
            strategy: r.strategy,
            priority: r.priority,
            tolerations: r.tolerations.clone(),
        }
    }

    /// The per-node verdict of labels and taints, cached until a node changes.
    fn static_verdict(&mut self, r: &Request) -> StaticVerdict {
        let key = StaticKey {
            node_selector: r.node_selector.clone(),
            node_affinity: r.node_affinity.clone(),
            tolerations: r.tolerations.clone(),
        };
        if let Some(v) = self.static_cache.get(&key) {
            return Arc::clone(v);
        }
        let verdict: StaticVerdict =
            self.slots
                .iter()
                .map(|s| {
                    let untolerated = s.node.taints.iter().any(|t| {
                        t.effect != Effect::PreferNoSchedule && !tolerated(&r.tolerations, t)
                    });
                    let selected = r
                        .node_selector
                        .iter()
                        .all(|(k, v)| s.node.labels.get(k) == Some(v))
                        && r.node_affinity.iter().all(|e| e.matches(&s.node.labels));
                    if untolerated {
                        STATIC_TAINT
                    } else if !selected {
                        STATIC_SELECTOR
                    } else {
                        STATIC_OK
                    }
                })
                .collect();
        // Bounded: many distinct selectors in one snapshot would otherwise pile up verdicts.
        if self.static_cache.len() >= 1024 {
            self.static_cache.clear();
            self.eligible_cache.clear();
        }
        self.static_cache.insert(key, Arc::clone(&verdict));
        verdict
    }

    /// The domains of `topo` holding a live node that the request's node selector and node
    /// affinity admit (taints and cordons do not matter here: Kubernetes' default
    /// `nodeAffinityPolicy: Honor`, `nodeTaintsPolicy: Ignore`).
    fn eligible(&mut self, r: &Request, verdict: &StaticVerdict, topo: Topo) -> Arc<[u32]> {
        let key = (Arc::as_ptr(verdict).cast::<u8>() as usize, topo);
        if let Some(e) = self.eligible_cache.get(&key) {
            return Arc::clone(e);
        }
        let mut domains: Vec<u32> = self
            .slots
            .iter()
            .enumerate()
            .filter(|(_, s)| {
                s.alive
                    && r.node_selector
                        .iter()
                        .all(|(k, v)| s.node.labels.get(k) == Some(v))
                    && r.node_affinity.iter().all(|e| e.matches(&s.node.labels))
            })
            .map(|(i, _)| self.domain(u32::try_from(i).unwrap_or(u32::MAX), topo))
            .filter(|&d| d != NO_DOMAIN)
            .collect();
        domains.sort_unstable();
        domains.dedup();
        let domains: Arc<[u32]> = domains.into();
        self.eligible_cache.insert(key, Arc::clone(&domains));
        domains
    }

    /// Smallest count of the app over the domains of a topology (0 while a domain has none);
    /// over `eligible` domains only when the request selects nodes.
    fn min_domain_count(&self, app: u32, topo: Topo, eligible: Option<&[u32]>) -> u32 {
        if let Some(domains) = eligible {
            return domains
                .iter()
                .map(|&d| self.count_in(app, topo, d))
                .min()
                .unwrap_or(0);
        }
        let a = &self.apps[app as usize];
        if topo == NODE_TOPO {
            if a.per_node.len() < self.live {
                return 0;
            }
            return a.per_node.values().copied().min().unwrap_or(0);
        }
        let key = &self.keys[topo as usize];
        let mut nonzero = 0;
        let mut min = u32::MAX;
        for (&(k, d), &n) in &a.per_domain {
            if k == topo && key.nodes.get(d as usize).is_some_and(|&c| c > 0) {
                nonzero += 1;
                min = min.min(n);
            }
        }
        if nonzero < key.live_domains { 0 } else { min }
    }

    /// Labels and taints (the node must be alive and schedulable).
    #[inline]
    pub(super) fn static_reason(&self, c: &Compiled, i: usize) -> Option<Reason> {
        let code = match &c.statics {
            None => {
                if self.tainted[i] {
                    STATIC_TAINT
                } else {
                    STATIC_OK
                }
            }
            Some(v) => v.get(i).copied().unwrap_or(STATIC_SELECTOR),
        };
        match code {
            STATIC_OK => None,
            STATIC_TAINT => Some(Reason::Taint),
            _ => Some(Reason::NodeSelector),
        }
    }

    #[inline]
    pub(super) fn ports_free(&self, c: &Compiled, i: usize) -> bool {
        c.ports.is_empty() || {
            let taken = &self.slots[i].ports;
            !c.ports.iter().any(|p| taken.contains(p))
        }
    }

    /// The first required constraint the node breaks.
    pub(super) fn constraint_reason(&self, c: &Compiled, i: usize) -> Option<Reason> {
        let node = u32::try_from(i).unwrap_or(u32::MAX);
        for h in &c.hard {
            let broken = match *h {
                Hard::MaxPer { topo, max } => {
                    let d = self.domain(node, topo);
                    (d == NO_DOMAIN || self.count_in(c.app, topo, d) >= max)
                        .then_some(Reason::MaxPerTopology)
                }
                Hard::Spread {
                    topo,
                    max_skew,
                    min,
                } => {
                    let d = self.domain(node, topo);
                    (d == NO_DOMAIN || self.count_in(c.app, topo, d) + 1 > min + max_skew)
                        .then_some(Reason::TopologySpread)
                }
                Hard::Affinity { app, topo, vacuous } => {
                    let d = self.domain(node, topo);
                    let ok = vacuous || (d != NO_DOMAIN && self.count_in(app, topo, d) > 0);
                    (!ok).then_some(Reason::Affinity)
                }
                Hard::Anti { app, topo } => {
                    let d = self.domain(node, topo);
                    (d != NO_DOMAIN && self.count_in(app, topo, d) > 0)
                        .then_some(Reason::AntiAffinity)
                }
            };
            if broken.is_some() {
                return broken;
            }
        }
        for &topo in &c.anti_by {
            let d = self.domain(node, topo);
            if d != NO_DOMAIN && self.apps[c.app as usize].anti_by.contains_key(&(topo, d)) {
                return Some(Reason::ExistingAntiAffinity);
            }
        }
        None
    }

    /// Every reason the node cannot take the request, kube-scheduler style: checks run in
    /// groups and the first failing group is reported (all resource shortages together).
    pub(super) fn reasons(&self, c: &Compiled, i: usize, out: &mut Vec<Reason>) {
        let slot = &self.slots[i];
        if !slot.node.schedulable {
            out.push(Reason::NotSchedulable);
            return;
        }
        if let Some(r) = self.static_reason(c, i) {
            out.push(r);
            return;
        }
        if !self.ports_free(c, i) {
            out.push(Reason::HostPorts);
            return;
        }
        let before = out.len();
        if self.room[i] == 0 {
            out.push(Reason::TooManyInstances);
        }
        if self.free_cpu[i] < c.cpu {
            out.push(Reason::InsufficientCpu);
        }
        if self.free_mem[i] < c.mem {
            out.push(Reason::InsufficientMemory);
        }
        if out.len() > before {
            return;
        }
        if let Some(r) = self.constraint_reason(c, i) {
            out.push(r);
        }
    }

    /// The strategy's score after placement, 0..=1, higher is better. The node must fit.
    ///
    /// Written in terms of the node's free key so that the walks in `order` can bound it
    /// exactly: for identical nodes the bound equals the score, bit for bit.
    #[inline]
    pub(super) fn alloc_score(&self, c: &Compiled, i: usize) -> f64 {
        #[allow(clippy::cast_precision_loss)]
        let (cpu, mem) = (c.cpu as f64, c.mem as f64);
        match c.strategy {
            Strategy::Spread => {
                (f64::from_bits(self.free_key[i]) - (cpu * self.inv_cpu[i] + mem * self.inv_mem[i]))
                    * 0.5
            }
            Strategy::BinPack => {
                1.0 - (f64::from_bits(self.free_key[i])
                    - (cpu * self.inv_cpu[i] + mem * self.inv_mem[i]))
                    * 0.5
            }
            Strategy::Balanced => {
                // Free CPU fraction minus free memory fraction after placement: the balance
                // key minus the request's shape.
                1.0 - (self.balance_of(i) - (cpu * self.inv_cpu[i] - mem * self.inv_mem[i])).abs()
            }
        }
    }

    /// What preferences add to (or take from) the allocation score; at most `bonus_max`.
    pub(super) fn soft_score(&self, c: &Compiled, i: usize) -> f64 {
        let node = u32::try_from(i).unwrap_or(u32::MAX);
        let mut s = 0.0;
        for t in &c.soft {
            match *t {
                // Each instance already there costs a whole allocation range: replicas spread
                // first, and only then does the allocation score choose.
                Soft::SameApp => s -= f64::from(self.count_in(c.app, NODE_TOPO, node)),
                Soft::Spread { topo, min } => {
                    let d = self.domain(node, topo);
                    s -= if d == NO_DOMAIN {
                        f64::from(self.apps[c.app as usize].total) + 1.0
                    } else {
                        f64::from(self.count_in(c.app, topo, d).saturating_sub(min))
                    };
                }
                Soft::Affinity { app, topo, weight } => {
                    let d = self.domain(node, topo);
                    if d != NO_DOMAIN && self.count_in(app, topo, d) > 0 {
                        s += weight;
                    }
                }
                Soft::Anti { app, topo, weight } => {
                    let d = self.domain(node, topo);
                    if d != NO_DOMAIN && self.count_in(app, topo, d) > 0 {
                        s -= weight;
                    }
                }
            }
        }
        if self.slots[i].prefer_taints {
            for t in &self.slots[i].node.taints {
                if t.effect == Effect::PreferNoSchedule && !tolerated(&c.tolerations, t) {
                    s -= PREFER_TAINT_PENALTY;
                }
            }
        }
        s
    }
}
