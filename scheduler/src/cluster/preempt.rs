//! Preemption: when no node fits, evict a minimal set of lower-priority instances from the node
//! where that costs least, as kube-scheduler's default preemption does.
//!
//! Per node: remove every lower-priority instance; if the request still does not fit by
//! resources, instance count and ports, the node cannot help. Otherwise give instances back
//! ("reprieve") from the highest priority down, smaller ones first within a priority, keeping
//! each that still leaves room: the victims left are a minimal set (none can be given back) made
//! of the lowest priorities. Nodes are ranked by highest victim priority, then number of
//! victims, then sum of victim priorities. The best node is then tried for real, with every
//! constraint re-checked against the state without its victims.

use super::compile::Compiled;
use super::{Cluster, Decision, Placement};
use crate::model::{Request, Resources};

/// Candidate nodes tried for real at most, best first (each try is a few index updates).
const MAX_TRIES: usize = 16;

struct Candidate {
    max_priority: i32,
    victims: Vec<u32>,
    priority_sum: i64,
    tiebreak: u64,
    node: usize,
}

impl Cluster {
    pub(super) fn preempt(&mut self, r: &Request, c: &Compiled) -> Option<Decision> {
        if self
            .priorities
            .first_key_value()
            .is_none_or(|(&lowest, _)| lowest >= c.priority)
        {
            return None;
        }
        let mut candidates = Vec::new();
        for i in 0..self.slots.len() {
            if let Some(cand) = self.candidate(c, i) {
                candidates.push(cand);
            }
        }
        candidates.sort_by_key(|k| (k.max_priority, k.victims.len(), k.priority_sum, k.tiebreak));
        for cand in candidates.into_iter().take(MAX_TRIES) {
            let removed: Vec<Placement> = cand
                .victims
                .iter()
                .filter_map(|&v| self.unplace(v))
                .collect();
            // Constraint state moved with the victims: recompile before the final check.
            let again = self.compile(r);
            let mut reasons = Vec::new();
            self.reasons(&again, cand.node, &mut reasons);
            if reasons.is_empty() {
                let node = u32::try_from(cand.node).unwrap_or(u32::MAX);
                let pl = self.placement_of(r, node);
                self.commit(pl);
                return Some(Decision::Preempted {
                    node: self.slots[cand.node].node.name.clone(),
                    victims: removed.into_iter().map(|p| p.id).collect(),
                });
            }
            for p in removed {
                self.commit(p);
            }
        }
        None
    }

    /// The minimal victims on node `i`, if evicting lower priorities lets the request fit.
    fn candidate(&self, c: &Compiled, i: usize) -> Option<Candidate> {
        let slot = &self.slots[i];
        if !slot.alive || !slot.node.schedulable || self.static_reason(c, i).is_some() {
            return None;
        }
        let mut lower: Vec<(&Placement, u32)> = slot
            .placements
            .iter()
            .filter_map(|&p| Some((self.placements[p as usize].as_ref()?, p)))
            .filter(|(p, _)| p.priority < c.priority)
            .collect();
        if lower.is_empty() {
            return None;
        }
        let mut used = slot.used;
        let mut count = slot.instances;
        let mut ports = slot.ports.clone();
        for (p, _) in &lower {
            used = used.saturating_sub(p.resources);
            count -= 1;
            for port in &p.ports {
                if let Some(at) = ports.iter().position(|x| x == port) {
                    ports.swap_remove(at);
                }
            }
        }
        let alloc = slot.node.allocatable;
        let request = Resources {
            cpu_millis: c.cpu,
            memory_bytes: c.mem,
        };
        let fits = |used: Resources, count: u32, ports: &[u32]| {
            used.add(request).fits_in(&alloc)
                && count < slot.node.max_instances
                && !c.ports.iter().any(|p| ports.contains(p))
        };
        if !fits(used, count, &ports) {
            return None;
        }
        // Highest priority first; within one, smaller first so that fewer, larger ones go.
        lower.sort_by_key(|(p, idx)| {
            (
                std::cmp::Reverse(p.priority),
                p.resources.cpu_millis.max(p.resources.memory_bytes >> 20),
                *idx,
            )
        });
        let mut victims = Vec::new();
        let mut max_priority = i32::MIN;
        let mut priority_sum = 0i64;
        for (p, idx) in lower {
            let mut with = ports.clone();
            with.extend(&p.ports);
            if fits(used.add(p.resources), count + 1, &with) {
                used = used.add(p.resources);
                count += 1;
                ports = with;
            } else {
                victims.push(idx);
                max_priority = max_priority.max(p.priority);
                priority_sum += i64::from(p.priority);
            }
        }
        if victims.is_empty() {
            // Resources were never the problem here; a constraint is, and eviction of
            // lower priorities is not how this scheduler resolves constraints.
            return None;
        }
        Some(Candidate {
            max_priority,
            victims,
            priority_sum,
            tiebreak: self.tiebreak[i],
            node: i,
        })
    }
}
