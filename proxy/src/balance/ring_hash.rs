//! Consistent hashing on a ketama ring, point for point what libketama builds.
//!
//! Each endpoint "ip:port" of weight share `p` gets `floor(p · 40 · N)` MD5 digests of
//! "ip:port-k", four points each (bytes read little-endian), so 160 points per endpoint when
//! weights are equal. A key hashes to the first four bytes of its MD5 digest and goes to the
//! first point at or after it, wrapping. Clients that use libketama (memcached, twemproxy)
//! therefore agree with us on where a key lives.

use super::{Weighted, ketama_hash};

#[derive(Debug)]
pub(crate) struct RingHash {
    /// (point, endpoint index), sorted by point.
    points: Box<[(u32, usize)]>,
    len: usize,
}

impl RingHash {
    pub(crate) fn new(endpoints: &[Weighted<'_>]) -> Self {
        let total: u64 = endpoints.iter().map(|e| u64::from(e.weight)).sum();
        let n = endpoints.len() as u64;
        let mut points = Vec::with_capacity(endpoints.len() * 160);
        let mut label = String::new();
        for (index, endpoint) in endpoints.iter().enumerate() {
            // libketama's floor(share · 40 · N), in integers: its floats give 39 instead of 40
            // for some N, which would move keys of endpoints that did not change. Every
            // endpoint keeps at least one digest so that a tiny weight stays reachable.
            let digests = (u64::from(endpoint.weight) * 40 * n / total).max(1);
            for k in 0..digests {
                use md5::Digest;
                use std::fmt::Write;
                label.clear();
                let _ = write!(label, "{}-{k}", endpoint.name);
                let digest = md5::Md5::digest(label.as_bytes());
                for h in 0..4 {
                    let b = &digest[h * 4..h * 4 + 4];
                    points.push((u32::from_le_bytes([b[0], b[1], b[2], b[3]]), index));
                }
            }
        }
        points.sort_unstable();
        Self {
            points: points.into_boxed_slice(),
            len: endpoints.len(),
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn pick(&self, key: &[u8]) -> Option<usize> {
        let hash = ketama_hash(key);
        let at = self.points.partition_point(|&(point, _)| point < hash);
        self.points
            .get(at)
            .or_else(|| self.points.first())
            .map(|&(_, index)| index)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::super::testing::{endpoints, weighted};
    use super::*;

    fn ring(weights: &[u32]) -> (RingHash, Vec<String>) {
        let (names, loads) = endpoints(weights);
        (RingHash::new(&weighted(&names, weights, &loads)), names)
    }

    #[test]
    fn points_per_endpoint_match_libketama() {
        let (r, _) = ring(&[1, 1, 1]);
        assert_eq!(r.points.len(), 3 * 160);
        let (r, _) = ring(&[1, 3]);
        // Shares 1/4 and 3/4 of 40 · 2 digests: 20 and 60, four points each.
        assert_eq!(r.points.len(), (20 + 60) * 4);
        assert_eq!(RingHash::new(&[]).pick(b"x"), None);
    }

    #[test]
    fn same_key_same_endpoint_and_spread() {
        let (r, _) = ring(&[1, 1, 1, 1]);
        let mut counts = [0usize; 4];
        for i in 0..4000 {
            let key = format!("user-{i}");
            let first = r.pick(key.as_bytes()).unwrap();
            assert_eq!(r.pick(key.as_bytes()), Some(first));
            counts[first] += 1;
        }
        assert!(
            counts.iter().all(|&c| (600..1400).contains(&c)),
            "{counts:?}"
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]

        /// Removing one of N endpoints moves only the keys it owned (about 1/N of them);
        /// every other key stays where it was.
        #[test]
        fn removing_one_of_n_moves_about_one_nth(n in 3usize..24, removed in 0usize..24, salt in any::<u32>()) {
            let removed = removed % n;
            let weights = vec![1; n];
            let (names, loads) = endpoints(&weights);
            let before = RingHash::new(&weighted(&names, &weights, &loads));
            let kept: Vec<usize> = (0..n).filter(|&i| i != removed).collect();
            let kept_names: Vec<String> = kept.iter().map(|&i| names[i].clone()).collect();
            let kept_loads: Vec<_> = kept.iter().map(|&i| loads[i].clone()).collect();
            let after = RingHash::new(&weighted(&kept_names, &weights[1..], &kept_loads));
            let keys = 4000;
            let mut moved = 0;
            for k in 0..keys {
                let key = format!("{salt}-{k}");
                let was = before.pick(key.as_bytes()).unwrap();
                let now = kept[after.pick(key.as_bytes()).unwrap()];
                if was == removed {
                    moved += 1;
                } else {
                    prop_assert_eq!(was, now, "a key not on the removed endpoint moved");
                }
            }
            let share = moved as f64 / f64::from(keys);
            let ideal = 1.0 / n as f64;
            // 160 points per endpoint keep each share within about ±40% of ideal.
            prop_assert!(share > ideal * 0.5 && share < ideal * 1.6,
                "moved {share:.3} of keys, ideal {ideal:.3}");
        }
    }
}
