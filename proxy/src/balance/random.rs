//! Weighted random choice: a binary search over cumulative weights.

#[derive(Debug)]
pub(crate) struct WeightedRandom {
    /// Cumulative weights; empty when all weights are equal (uniform fast path).
    cumulative: Box<[u64]>,
    len: usize,
}

impl WeightedRandom {
    pub(crate) fn new(weights: &[u32]) -> Self {
        let cumulative = if weights.windows(2).all(|w| w[0] == w[1]) {
            Box::default()
        } else {
            weights
                .iter()
                .scan(0u64, |sum, &w| {
                    *sum += u64::from(w);
                    Some(*sum)
                })
                .collect()
        };
        Self {
            cumulative,
            len: weights.len(),
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn pick(&self) -> Option<usize> {
        if self.len == 0 {
            return None;
        }
        let Some(&total) = self.cumulative.last() else {
            return Some(fastrand::usize(..self.len));
        };
        let ticket = fastrand::u64(..total);
        // The first endpoint whose cumulative weight exceeds the ticket.
        Some(self.cumulative.partition_point(|&c| c <= ticket))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_are_honoured() {
        let r = WeightedRandom::new(&[1, 3]);
        let mut counts = [0usize; 2];
        for _ in 0..8000 {
            counts[r.pick().unwrap()] += 1;
        }
        // Expect 2000/6000; the bound is ~10 standard deviations wide.
        assert!((1600..2400).contains(&counts[0]), "{counts:?}");
        let uniform = WeightedRandom::new(&[2, 2, 2]);
        let mut counts = [0usize; 3];
        for _ in 0..3000 {
            counts[uniform.pick().unwrap()] += 1;
        }
        assert!(counts.iter().all(|&c| c > 700), "{counts:?}");
        assert_eq!(WeightedRandom::new(&[]).pick(), None);
    }
}
