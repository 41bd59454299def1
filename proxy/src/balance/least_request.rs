//! Least request by the power of two choices (Mitzenmacher; Envoy's default for this policy).
//!
//! Two distinct endpoints are drawn at random and the one with fewer requests in flight per
//! unit of weight wins. This avoids the herd that "always the global minimum" causes when many
//! proxies see the same counts, and costs two atomic loads. The counts live in the endpoints'
//! [`EndpointLoad`], which outlives config swaps.

use std::sync::Arc;

use super::{EndpointLoad, Weighted, other_index};

#[derive(Debug)]
pub(crate) struct LeastRequest {
    loads: Box<[(Arc<EndpointLoad>, u64)]>,
}

impl LeastRequest {
    pub(crate) fn new(endpoints: &[Weighted<'_>]) -> Self {
        Self {
            loads: endpoints
                .iter()
                .map(|e| (e.load.clone(), u64::from(e.weight)))
                .collect(),
        }
    }

    pub(crate) fn pick(&self) -> Option<usize> {
        let n = self.loads.len();
        match n {
            0 => None,
            1 => Some(0),
            _ => {
                let a = fastrand::usize(..n);
                let b = other_index(n, a)?;
                Some(self.better(a, b))
            }
        }
    }

    pub(crate) fn pick_other(&self, tried: usize) -> Option<usize> {
        let n = self.loads.len();
        let a = other_index(n, tried)?;
        if n < 3 {
            return Some(a);
        }
        // A second candidate that is neither `tried` nor `a`.
        let b = loop {
            let b = other_index(n, tried)?;
            if b != a {
                break b;
            }
        };
        Some(self.better(a, b))
    }

    /// The endpoint with the lower in-flight count per weight; `a` on a tie.
    fn better(&self, a: usize, b: usize) -> usize {
        let (load_a, weight_a) = &self.loads[a];
        let (load_b, weight_b) = &self.loads[b];
        // in_a / w_a <= in_b / w_b without division; u128 cannot overflow.
        let lhs = u128::from(load_a.in_flight()) * u128::from(*weight_b);
        let rhs = u128::from(load_b.in_flight()) * u128::from(*weight_a);
        if lhs <= rhs { a } else { b }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{endpoints, weighted};
    use super::*;

    #[test]
    fn busy_endpoint_is_avoided() {
        let weights = [1, 1, 1];
        let (names, loads) = endpoints(&weights);
        let lr = LeastRequest::new(&weighted(&names, &weights, &loads));
        let held: Vec<_> = (0..10).map(|_| loads[0].start()).collect();
        let mut counts = [0; 3];
        for _ in 0..3000 {
            counts[lr.pick().unwrap()] += 1;
        }
        // Endpoint 0 only wins when both draws... never: two distinct draws always include an
        // idle endpoint when 0 is drawn.
        assert_eq!(counts[0], 0, "{counts:?}");
        assert!(counts[1] > 1000 && counts[2] > 1000, "{counts:?}");
        drop(held);
        assert_eq!(loads[0].in_flight(), 0);
        let mut counts = [0; 3];
        for _ in 0..3000 {
            counts[lr.pick().unwrap()] += 1;
        }
        assert!(counts.iter().all(|&c| c > 600), "{counts:?}");
    }

    #[test]
    fn weight_scales_the_load() {
        let weights = [1, 4];
        let (names, loads) = endpoints(&weights);
        let lr = LeastRequest::new(&weighted(&names, &weights, &loads));
        // 2 in flight on weight 1 (2.0 per weight) vs 4 on weight 4 (1.0): the heavy one wins.
        let _a: Vec<_> = (0..2).map(|_| loads[0].start()).collect();
        let _b: Vec<_> = (0..4).map(|_| loads[1].start()).collect();
        for _ in 0..100 {
            assert_eq!(lr.pick(), Some(1));
        }
    }

    #[test]
    fn counts_survive_a_rebuild() {
        let weights = [1, 1];
        let (names, loads) = endpoints(&weights);
        let first = LeastRequest::new(&weighted(&names, &weights, &loads));
        let _held = loads[1].start();
        let second = LeastRequest::new(&weighted(&names, &weights, &loads));
        drop(first);
        for _ in 0..50 {
            assert_eq!(second.pick(), Some(0));
        }
    }

    #[test]
    fn small_sets() {
        let lr = LeastRequest::new(&[]);
        assert_eq!(lr.pick(), None);
        let weights = [1];
        let (names, loads) = endpoints(&weights);
        let one = LeastRequest::new(&weighted(&names, &weights, &loads));
        assert_eq!(one.pick(), Some(0));
        assert_eq!(one.pick_other(0), None);
        let weights = [1, 1, 1];
        let (names, loads) = endpoints(&weights);
        let three = LeastRequest::new(&weighted(&names, &weights, &loads));
        for _ in 0..100 {
            assert_ne!(three.pick_other(1), Some(1));
        }
    }
}
