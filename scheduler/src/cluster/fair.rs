//! The order a batch is decided in: priority first; and when the batch asks for more than is
//! free, tenants take turns by dominant resource fairness (DRF, as Mesos' allocator does): the
//! next instance comes from the tenant whose largest share of any cluster resource is smallest.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};

use ahash::AHashSet;

use super::{Cluster, Decision};
use crate::model::{Request, RequestError, Resources};

/// A share ordered for the heap: total order over f64 (shares are never NaN).
#[derive(Clone, Copy, Debug, PartialEq)]
struct Share(f64);

impl Eq for Share {}

impl PartialOrd for Share {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Share {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.total_cmp(&other.0)
    }
}

impl Cluster {
    /// Decides a node for each request and returns the decisions in the order of `batch`.
    ///
    /// Requests are decided by priority, highest first; within a priority in batch order, or,
    /// when the batch asks for more CPU or memory than the cluster has free, by dominant
    /// resource fairness between tenants. Each placement is recorded before the next decision.
    pub fn schedule(&mut self, batch: &[Request]) -> Vec<Decision> {
        let mut out: Vec<Option<Decision>> = vec![None; batch.len()];
        let mut seen = AHashSet::with_capacity(batch.len());
        let mut order = Vec::with_capacity(batch.len());
        let mut demand = Resources::default();
        for (i, r) in batch.iter().enumerate() {
            if !seen.insert(r.id.as_str()) {
                out[i] = Some(Decision::Invalid(RequestError::Duplicate {
                    id: r.id.clone(),
                }));
                continue;
            }
            demand = demand.add(r.resources);
            order.push(i);
        }
        order.sort_by_key(|&i| Reverse(batch[i].priority));
        let free = self.total_alloc.saturating_sub(self.total_used);
        if demand.fits_in(&free) {
            for i in order {
                out[i] = Some(self.schedule_one(&batch[i]));
            }
        } else {
            let mut start = 0;
            while start < order.len() {
                let priority = batch[order[start]].priority;
                let end = order[start..]
                    .iter()
                    .position(|&i| batch[i].priority != priority)
                    .map_or(order.len(), |n| start + n);
                self.fair_round(batch, &order[start..end], &mut out);
                start = end;
            }
        }
        out.into_iter()
            .map(|d| {
                // Every index is either marked invalid above or is in `order` and decided.
                d.unwrap_or_else(|| {
                    Decision::Invalid(RequestError::Invalid {
                        id: String::new(),
                        field: String::new(),
                        reason: "not decided",
                    })
                })
            })
            .collect()
    }

    /// One priority level, tenants interleaved by DRF.
    fn fair_round(&mut self, batch: &[Request], group: &[usize], out: &mut [Option<Decision>]) {
        let mut queues: Vec<(u32, VecDeque<usize>)> = Vec::new();
        for &i in group {
            let t = self.tenant(&batch[i].tenant);
            match queues.iter_mut().find(|(q, _)| *q == t) {
                Some((_, q)) => q.push_back(i),
                None => queues.push((t, VecDeque::from([i]))),
            }
        }
        let mut heap = BinaryHeap::new();
        for (slot, (t, _)) in queues.iter().enumerate() {
            heap.push(Reverse((
                self.dominant_share(*t),
                self.tenants[*t as usize].tiebreak,
                slot,
            )));
        }
        while let Some(Reverse((_, _, slot))) = heap.pop() {
            let (t, queue) = &mut queues[slot];
            let t = *t;
            let Some(i) = queue.pop_front() else {
                continue;
            };
            out[i] = Some(self.schedule_one(&batch[i]));
            if !queues[slot].1.is_empty() {
                heap.push(Reverse((
                    self.dominant_share(t),
                    self.tenants[t as usize].tiebreak,
                    slot,
                )));
            }
        }
    }

    /// The tenant's largest share of any resource of the cluster.
    fn dominant_share(&self, tenant: u32) -> Share {
        let u = self.tenants[tenant as usize].usage;
        #[allow(clippy::cast_precision_loss)]
        let share = |used: u64, total: u64| {
            if total == 0 {
                0.0
            } else {
                used as f64 / total as f64
            }
        };
        Share(
            share(u.cpu_millis, self.total_alloc.cpu_millis)
                .max(share(u.memory_bytes, self.total_alloc.memory_bytes)),
        )
    }
}
