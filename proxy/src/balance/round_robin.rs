//! Smooth weighted round robin, lock-free.
//!
//! The schedule for one cycle (sum of weights picks) is computed once, when the snapshot is
//! built; a request then costs one relaxed `fetch_add` on a shared cursor and one index.
//!
//! The schedule orders picks by their ideal position in the cycle: endpoint `i` with weight `w`
//! wants its `k`-th pick at `(k + 1/2) / w` (Webster's apportionment). Ties go to the lower
//! index. This is the same cycle nginx's smooth weighted round robin produces for the usual
//! small weight sets (1:2:3 gives `c b a c b c`; 5:1:1 spreads the light endpoints through the
//! cycle), every endpoint gets exactly its weight per cycle, and it is built in
//! `O(total · log n)` instead of nginx's `O(total · n)`.

use std::cmp::Ordering as CmpOrdering;
use std::collections::BinaryHeap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::LbState;

/// Longest schedule kept per cluster; weights are scaled down proportionally (each at least 1)
/// when their sum, after dividing by their gcd, exceeds it.
pub(crate) const MAX_SCHEDULE: u64 = 1 << 16;

/// Round robin over one endpoint set.
#[derive(Debug)]
pub(crate) struct RoundRobin {
    /// Endpoint count, for the unweighted fast path.
    endpoints: usize,
    /// One cycle of endpoint indices; empty when all weights are equal (plain rotation).
    schedule: Box<[usize]>,
    state: Arc<LbState>,
}

impl RoundRobin {
    pub(crate) fn new(weights: &[u32], state: Arc<LbState>) -> Self {
        let schedule = if weights.windows(2).all(|w| w[0] == w[1]) {
            Box::default()
        } else {
            schedule(&scale(weights))
        };
        Self {
            endpoints: weights.len(),
            schedule,
            state,
        }
    }

    pub(crate) fn pick(&self) -> Option<usize> {
        if self.endpoints == 0 {
            return None;
        }
        let n = self.state.cursor.fetch_add(1, Ordering::Relaxed);
        Some(self.at(n))
    }

    pub(crate) fn pick_other(&self, tried: usize) -> Option<usize> {
        if self.endpoints < 2 {
            return None;
        }
        let start = self.state.cursor.fetch_add(1, Ordering::Relaxed);
        let cycle = self.schedule.len().max(self.endpoints);
        // Every endpoint appears in a cycle, so a different one is found within one cycle.
        (0..cycle)
            .map(|i| self.at(start.wrapping_add(i)))
            .find(|&i| i != tried)
    }

    fn at(&self, n: usize) -> usize {
        if self.schedule.is_empty() {
            n % self.endpoints
        } else {
            self.schedule[n % self.schedule.len()]
        }
    }
}

/// Divides the weights by their gcd and caps their sum at [`MAX_SCHEDULE`].
fn scale(weights: &[u32]) -> Vec<u64> {
    let g = weights
        .iter()
        .fold(0u64, |g, &w| gcd(g, u64::from(w)))
        .max(1);
    let reduced: Vec<u64> = weights.iter().map(|&w| (u64::from(w) / g).max(1)).collect();
    let total: u64 = reduced.iter().sum();
    if total <= MAX_SCHEDULE {
        return reduced;
    }
    reduced
        .iter()
        .map(|&w| (w * MAX_SCHEDULE / total).max(1))
        .collect()
}

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// A pending pick: endpoint `index` wants its `k`-th pick at `(2k + 1) / (2 weight)`.
#[derive(PartialEq, Eq)]
struct Slot {
    index: usize,
    k: u64,
    weight: u64,
}

impl Ord for Slot {
    fn cmp(&self, other: &Self) -> CmpOrdering {
        // Compare the positions as exact fractions; BinaryHeap is a max-heap, so reverse to pop
        // the earliest position, then the lowest index. u128 products cannot overflow.
        let ours = u128::from(2 * self.k + 1) * u128::from(other.weight);
        let theirs = u128::from(2 * other.k + 1) * u128::from(self.weight);
        theirs.cmp(&ours).then_with(|| other.index.cmp(&self.index))
    }
}

impl PartialOrd for Slot {
    fn partial_cmp(&self, other: &Self) -> Option<CmpOrdering> {
        Some(self.cmp(other))
    }
}

fn schedule(weights: &[u64]) -> Box<[usize]> {
    let total: u64 = weights.iter().sum();
    let mut heap: BinaryHeap<Slot> = weights
        .iter()
        .enumerate()
        .map(|(index, &weight)| Slot {
            index,
            k: 0,
            weight,
        })
        .collect();
    let mut out = Vec::with_capacity(usize::try_from(total).unwrap_or(0));
    for _ in 0..total {
        let Some(mut slot) = heap.pop() else { break };
        out.push(slot.index);
        slot.k += 1;
        heap.push(slot);
    }
    out.into_boxed_slice()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rr(weights: &[u32], start: usize) -> RoundRobin {
        RoundRobin::new(weights, Arc::new(LbState::starting_at(start)))
    }

    fn counts(rr: &RoundRobin, n: usize, endpoints: usize) -> Vec<usize> {
        let mut counts = vec![0; endpoints];
        for _ in 0..n {
            counts[rr.pick().unwrap()] += 1;
        }
        counts
    }

    #[test]
    fn weights_one_two_three_over_600_picks() {
        for start in [0, 1, 5, usize::MAX - 3] {
            assert_eq!(
                counts(&rr(&[1, 2, 3], start), 600, 3),
                [100, 200, 300],
                "start {start}"
            );
        }
    }

    #[test]
    fn weighted_cycle_is_interleaved_like_nginx() {
        let lb = rr(&[1, 2, 3], 0);
        let cycle: Vec<usize> = (0..6).map(|_| lb.pick().unwrap()).collect();
        assert_eq!(cycle, [2, 1, 0, 2, 1, 2]);

        // nginx's example: {a:5, b:1, c:1} must not send five a's in a row.
        let lb = rr(&[5, 1, 1], 0);
        let cycle: Vec<usize> = (0..7).map(|_| lb.pick().unwrap()).collect();
        assert_eq!(cycle.iter().filter(|&&i| i == 0).count(), 5);
        let longest_run = cycle
            .chunk_by(|a, b| a == b)
            .map(<[usize]>::len)
            .max()
            .unwrap();
        assert!(longest_run <= 3, "{cycle:?}");
        assert_ne!(
            cycle[5..],
            [1, 2],
            "light endpoints not all at the end: {cycle:?}"
        );
    }

    #[test]
    fn equal_weights_rotate() {
        let lb = rr(&[7, 7, 7], 0);
        let seq: Vec<usize> = (0..6).map(|_| lb.pick().unwrap()).collect();
        assert_eq!(seq, [0, 1, 2, 0, 1, 2]);
        assert!(lb.schedule.is_empty(), "equal weights need no schedule");
    }

    #[test]
    fn gcd_reduces_schedule() {
        let lb = rr(&[100, 200, 300], 0);
        assert_eq!(lb.schedule.len(), 6);
    }

    #[test]
    fn huge_weights_are_capped_and_keep_proportions() {
        let lb = rr(&[u32::MAX, u32::MAX - 1, 1], 0);
        assert!(lb.schedule.len() as u64 <= MAX_SCHEDULE + 3);
        let c = counts(&lb, lb.schedule.len(), 3);
        assert!(c[2] >= 1, "every endpoint stays reachable: {c:?}");
        assert!(c[0].abs_diff(c[1]) <= 1, "{c:?}");
    }

    #[test]
    fn empty_and_single() {
        assert_eq!(rr(&[], 0).pick(), None);
        assert_eq!(rr(&[], 0).pick_other(0), None);
        let one = rr(&[3], 0);
        assert_eq!(one.pick(), Some(0));
        assert_eq!(one.pick_other(0), None);
    }

    #[test]
    fn pick_other_avoids_the_tried_endpoint() {
        let lb = rr(&[10, 1], 0);
        for _ in 0..50 {
            assert_eq!(lb.pick_other(0), Some(1));
            assert_eq!(lb.pick_other(1), Some(0));
        }
    }

    #[test]
    fn cursor_shared_by_rebuilt_balancers() {
        let state = Arc::new(LbState::starting_at(0));
        let a = RoundRobin::new(&[1, 1, 1], state.clone());
        assert_eq!(a.pick(), Some(0));
        let b = RoundRobin::new(&[1, 1, 1], state);
        assert_eq!(
            b.pick(),
            Some(1),
            "a swapped-in balancer continues the rotation"
        );
    }
}
