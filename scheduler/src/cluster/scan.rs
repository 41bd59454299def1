//! One decision: the scan for the best feasible node, and the explanation when there is none.
//!
//! The scan reads only the flat per-node arrays until a node fits by resources and could beat
//! the best node so far on score; only then are labels, ports and constraints checked. The
//! allocation score plus the largest bonus preferences could add bounds a node's total, so most
//! nodes cost a few loads and compares, and the expensive checks run on a handful per decision.

use super::compile::Compiled;
#[cfg(test)]
use super::order::beats;
use super::{Cluster, Decision, Failure};
use crate::constraint::{Constraint, Mode};
use crate::model::{Request, RequestError};
use crate::unschedulable::Unschedulable;

/// Cached failures kept at most; beyond, the cache starts over.
const MAX_FAILURES: usize = 4096;

impl Cluster {
    pub(super) fn schedule_one(&mut self, r: &Request) -> Decision {
        if let Err(e) = r.validate() {
            return Decision::Invalid(e);
        }
        if self.by_id.contains_key(&r.id) {
            return Decision::Invalid(RequestError::AlreadyPlaced { id: r.id.clone() });
        }
        // A failure can only turn into success when capacity grows (the epoch moves), when the
        // app's own instances move (spread minimums), or when another app appears (required
        // affinity, which is therefore never cached).
        let cacheable = !r.constraints.iter().any(|c| {
            matches!(
                c,
                Constraint::Affinity {
                    mode: Mode::Required,
                    ..
                }
            )
        });
        // The request without what cannot change its fate; built only when a cache is in use.
        let shape = || Request {
            id: String::new(),
            tenant: String::new(),
            ..r.clone()
        };
        if cacheable
            && !self.failures.is_empty()
            && let Some(f) = self.failures.get(&shape())
            && f.epoch == self.epoch
            && self
                .app_ids
                .get(&r.app)
                .is_some_and(|&a| self.apps[a as usize].version == f.app_version)
        {
            return Decision::Unschedulable(f.why.clone());
        }
        let bounds = self.inv_bounds();
        let c = self.compile(r);
        if let Some(i) = self.best_ordered(&c, bounds) {
            let node = u32::try_from(i).unwrap_or(u32::MAX);
            let pl = self.placement_of(r, node);
            self.commit(pl);
            return Decision::Placed {
                node: self.slots[i].node.name.clone(),
            };
        }
        if let Some(d) = self.preempt(r, &c) {
            return d;
        }
        let why = self.explain(&c);
        if cacheable {
            if self.failures.len() >= MAX_FAILURES {
                self.failures.clear();
            }
            if self.failures.is_empty() {
                self.failures_max_priority = i32::MIN;
            }
            self.failures_max_priority = self.failures_max_priority.max(r.priority);
            self.failures.insert(
                shape(),
                Failure {
                    epoch: self.epoch,
                    app_version: self.apps[c.app as usize].version,
                    why: why.clone(),
                },
            );
        }
        Decision::Unschedulable(why)
    }

    /// The best feasible node, if any, by looking at every node: the reference the ordered
    /// walks are tested against.
    #[cfg(test)]
    pub(super) fn best_flat(&self, c: &Compiled) -> Option<usize> {
        let n = self.room.len();
        let (room, free_cpu, free_mem, tiebreak) = (
            &self.room[..n],
            &self.free_cpu[..n],
            &self.free_mem[..n],
            &self.tiebreak[..n],
        );
        let mut best: Option<(f64, u64, usize)> = None;
        for i in 0..n {
            if room[i] == 0 || free_cpu[i] < c.cpu || free_mem[i] < c.mem {
                continue;
            }
            let alloc = self.alloc_score(c, i);
            if !beats(alloc + c.bonus_max, tiebreak[i], best) {
                continue;
            }
            if self.static_reason(c, i).is_some()
                || !self.ports_free(c, i)
                || self.constraint_reason(c, i).is_some()
            {
                continue;
            }
            let total = if c.soft.is_empty() && !self.slots[i].prefer_taints {
                alloc
            } else {
                alloc + self.soft_score(c, i)
            };
            if beats(total, tiebreak[i], best) {
                best = Some((total, tiebreak[i], i));
            }
        }
        best.map(|(_, _, i)| i)
    }

    /// Why no node fits, counted per reason over every node.
    pub(super) fn explain(&self, c: &Compiled) -> Unschedulable {
        let mut why = Unschedulable {
            nodes: self.live,
            ..Unschedulable::default()
        };
        let mut reasons = Vec::new();
        for (i, slot) in self.slots.iter().enumerate() {
            if !slot.alive {
                continue;
            }
            reasons.clear();
            self.reasons(c, i, &mut reasons);
            for r in &reasons {
                *why.reasons.entry(*r).or_default() += 1;
            }
        }
        why
    }
}
