//! The indexes that let a decision look at a few nodes instead of all of them.
//!
//! Every schedulable node with room is kept in two ordered sets keyed by its *free key*: free
//! CPU fraction plus free memory fraction (0..=2). The bin-pack and spread scores of a node
//! are both a function of that key minus the request's share of the node, so walking nodes by
//! key visits them in order of an upper bound of their score:
//!
//! - bin-pack walks keys upward from the smallest key a fitting node can have (nodes with less
//!   free in total than the request asks are never looked at);
//! - spread walks keys downward.
//!
//! The walk stops at the first node whose bound (plus the most preferences could add) cannot
//! beat the best node found, so its result is the one a scan of every node would give (tests
//! compare the two). With identical nodes the bound is the score, so a decision typically
//! looks at a handful of nodes past the first feasible one. Each placement moves one node in
//! both sets: two removals and two insertions, O(log n).

use std::cmp::Reverse;

use super::Cluster;
use super::compile::Compiled;
use crate::model::Strategy;

/// Extremes of the reciprocals of allocatable over live nodes, for bounds that hold on
/// nodes of different sizes.
#[derive(Clone, Copy, Debug)]
pub(super) struct InvBounds {
    min_cpu: f64,
    max_cpu: f64,
    min_mem: f64,
    max_mem: f64,
}

impl InvBounds {
    pub(super) fn widened(self, cpu: f64, mem: f64) -> Self {
        InvBounds {
            min_cpu: self.min_cpu.min(cpu),
            max_cpu: self.max_cpu.max(cpu),
            min_mem: self.min_mem.min(mem),
            max_mem: self.max_mem.max(mem),
        }
    }

    pub(super) fn at_extreme(self, cpu: f64, mem: f64) -> bool {
        cpu <= self.min_cpu || cpu >= self.max_cpu || mem <= self.min_mem || mem >= self.max_mem
    }
}

/// `(score, tiebreak)` beats the best so far: higher score, then lower tie-break.
#[inline]
pub(super) fn beats(score: f64, tiebreak: u64, best: Option<(f64, u64, usize)>) -> bool {
    match best {
        None => true,
        Some((s, t, _)) => score > s || (score == s && tiebreak < t),
    }
}

/// Maps an f64 to bits whose unsigned order is the numeric order (negative values included).
fn ordered_bits(x: f64) -> u64 {
    let b = x.to_bits();
    if b >> 63 == 1 { !b } else { b | (1 << 63) }
}

fn from_ordered_bits(u: u64) -> f64 {
    if u >> 63 == 1 {
        f64::from_bits(u & !(1 << 63))
    } else {
        f64::from_bits(!u)
    }
}

/// The best node so far: score, tie-break, slot, and the key it was found at.
type Best = Option<(f64, u64, usize)>;

/// What the walk does with the next node in its order, given its score bound.
enum Step {
    /// Evaluate it.
    Look,
    /// It cannot win but a later node might (equal bound at another key).
    Skip,
    /// Neither it nor any later node can win.
    Stop,
}

/// Exact stopping rule: bounds never increase along a walk, and among equal keys tie-breaks
/// ascend, so a node that cannot beat the best ends the walk, unless a later node at another
/// key could share its bound (a float coincidence, or the flat band of the balance walk).
fn step(bound: f64, tb: u64, key: u64, best: Best, best_key: u64) -> Step {
    match best {
        _ if beats(bound, tb, best) => Step::Look,
        Some((s, _, _)) if bound == s && key != best_key => Step::Skip,
        _ => Step::Stop,
    }
}

impl Cluster {
    /// Free CPU fraction minus free memory fraction of a slot.
    #[inline]
    pub(super) fn balance_of(&self, i: usize) -> f64 {
        #[allow(clippy::cast_precision_loss)]
        let k =
            self.free_cpu[i] as f64 * self.inv_cpu[i] - self.free_mem[i] as f64 * self.inv_mem[i];
        k
    }

    /// Puts a slot where its free key and room say, after any change to either.
    pub(super) fn reorder(&mut self, idx: u32) {
        let i = idx as usize;
        #[allow(clippy::cast_precision_loss)]
        let key = (self.free_cpu[i] as f64 * self.inv_cpu[i]
            + self.free_mem[i] as f64 * self.inv_mem[i])
            .to_bits();
        let balance = if self.balance_indexed {
            ordered_bits(self.balance_of(i))
        } else {
            0
        };
        let want = self.room[i] > 0;
        let tb = self.tiebreak[i];
        let free = (self.free_cpu[i], self.free_mem[i]);
        if self.ordered[i]
            && (!want
                || key != self.free_key[i]
                || free != self.ordered_free[i]
                || balance != self.balance_key[i])
        {
            let old = self.free_key[i];
            let (fc, fm) = self.ordered_free[i];
            self.by_least_free.remove(&(old, tb, idx, fc, fm));
            self.by_most_free.remove(&(Reverse(old), tb, idx, fc, fm));
            if self.balance_indexed {
                let old = self.balance_key[i];
                self.by_balance.remove(&(old, tb, idx));
                self.by_balance_desc.remove(&(Reverse(old), tb, idx));
            }
            self.ordered[i] = false;
        }
        self.free_key[i] = key;
        self.balance_key[i] = balance;
        if want && !self.ordered[i] {
            self.ordered_free[i] = free;
            self.by_least_free.insert((key, tb, idx, free.0, free.1));
            self.by_most_free
                .insert((Reverse(key), tb, idx, free.0, free.1));
            if self.balance_indexed {
                self.by_balance.insert((balance, tb, idx));
                self.by_balance_desc.insert((Reverse(balance), tb, idx));
            }
            self.ordered[i] = true;
        }
    }

    /// Starts keeping the balance orders (the first balanced request pays O(n log n) once).
    pub(super) fn index_balance(&mut self) {
        if self.balance_indexed {
            return;
        }
        self.balance_indexed = true;
        for i in 0..self.slots.len() {
            let idx = u32::try_from(i).unwrap_or(u32::MAX);
            let key = ordered_bits(self.balance_of(i));
            self.balance_key[i] = key;
            if self.ordered[i] {
                let tb = self.tiebreak[i];
                self.by_balance.insert((key, tb, idx));
                self.by_balance_desc.insert((Reverse(key), tb, idx));
            }
        }
    }

    /// Recomputes the reciprocal extremes if a node changed since the last decision.
    pub(super) fn inv_bounds(&mut self) -> InvBounds {
        if let Some(b) = self.inv_bounds {
            return b;
        }
        let mut b = InvBounds {
            min_cpu: f64::INFINITY,
            max_cpu: 0.0,
            min_mem: f64::INFINITY,
            max_mem: 0.0,
        };
        for (i, slot) in self.slots.iter().enumerate() {
            if slot.alive {
                b.min_cpu = b.min_cpu.min(self.inv_cpu[i]);
                b.max_cpu = b.max_cpu.max(self.inv_cpu[i]);
                b.min_mem = b.min_mem.min(self.inv_mem[i]);
                b.max_mem = b.max_mem.max(self.inv_mem[i]);
            }
        }
        if b.min_cpu > b.max_cpu {
            b.min_cpu = 0.0;
            b.min_mem = 0.0;
        }
        self.inv_bounds = Some(b);
        b
    }

    /// Full check of a node the walk reached; returns its total score if feasible.
    #[inline]
    fn evaluate(&self, c: &Compiled, i: usize) -> Option<f64> {
        if self.free_cpu[i] < c.cpu || self.free_mem[i] < c.mem {
            return None;
        }
        if self.static_reason(c, i).is_some()
            || !self.ports_free(c, i)
            || self.constraint_reason(c, i).is_some()
        {
            return None;
        }
        let alloc = self.alloc_score(c, i);
        Some(if c.soft.is_empty() && !self.slots[i].prefer_taints {
            alloc
        } else {
            alloc + self.soft_score(c, i)
        })
    }

    /// The best feasible node by walking the order of the request's strategy.
    pub(super) fn best_ordered(&self, c: &Compiled, b: InvBounds) -> Option<usize> {
        #[allow(clippy::cast_precision_loss)]
        let (cpu, mem) = (c.cpu as f64, c.mem as f64);
        // The request's share of the largest and of the smallest node.
        let share_min = cpu * b.min_cpu + mem * b.min_mem;
        let share_max = cpu * b.max_cpu + mem * b.max_mem;
        let mut best: Best = None;
        let mut best_key = 0;
        // Visits one node of a walk; false ends the walk.
        // `misfit`: the entry already shows the node short of CPU or memory.
        let mut visit = |bound: f64, key: u64, tb: u64, idx: u32, misfit: bool, best: &mut Best| {
            match step(bound, tb, key, *best, best_key) {
                Step::Stop => return false,
                Step::Skip => return true,
                Step::Look if misfit => return true,
                Step::Look => {}
            }
            let i = idx as usize;
            if let Some(score) = self.evaluate(c, i)
                && beats(score, tb, *best)
            {
                *best = Some((score, tb, i));
                best_key = key;
            }
            true
        };
        match c.strategy {
            Strategy::BinPack => {
                // A fitting node has key >= its own share >= share_min.
                let from = (share_min.to_bits(), 0, 0, 0, 0);
                for &(key, tb, idx, fc, fm) in self.by_least_free.range(from..) {
                    let bound = 1.0 - (f64::from_bits(key) - share_max) * 0.5 + c.bonus_max;
                    if !visit(bound, key, tb, idx, fc < c.cpu || fm < c.mem, &mut best) {
                        break;
                    }
                }
            }
            Strategy::Spread => {
                for &(Reverse(key), tb, idx, fc, fm) in &self.by_most_free {
                    let k = f64::from_bits(key);
                    if k < share_min {
                        break;
                    }
                    let bound = (k - share_min) * 0.5 + c.bonus_max;
                    if !visit(bound, key, tb, idx, fc < c.cpu || fm < c.mem, &mut best) {
                        break;
                    }
                }
            }
            Strategy::Balanced => {
                // The request's shape on any node lies in [d_min, d_max]; a node's score is
                // 1 - |balance key - shape|. Walk up from d_min, then down from below it.
                let d_min = cpu * b.min_cpu - mem * b.max_mem;
                let d_max = cpu * b.max_cpu - mem * b.min_mem;
                let from = ordered_bits(d_min);
                for &(key, tb, idx) in self.by_balance.range((from, 0, 0)..) {
                    let over = (from_ordered_bits(key) - d_max).max(0.0);
                    if !visit(1.0 - over + c.bonus_max, key, tb, idx, false, &mut best) {
                        break;
                    }
                }
                let below = (
                    std::ops::Bound::Excluded((Reverse(from), u64::MAX, u32::MAX)),
                    std::ops::Bound::Unbounded,
                );
                for &(Reverse(key), tb, idx) in self.by_balance_desc.range(below) {
                    if key >= from {
                        continue;
                    }
                    let under = d_min - from_ordered_bits(key);
                    if !visit(1.0 - under + c.bonus_max, key, tb, idx, false, &mut best) {
                        break;
                    }
                }
            }
        }
        best.map(|(_, _, i)| i)
    }
}
