//! Maglev consistent hashing (Eisenbud et al., NSDI 2016), weighted as Envoy does it.
//!
//! Every endpoint walks its own permutation of a prime-sized table (offset and skip from two
//! hashes of its name) and claims the next free slot in turn; heavier endpoints get more turns.
//! A lookup is one hash and one array index.

use super::{Weighted, ketama_hash};

/// Table size: prime, and large enough that 100 endpoints stay within about 1% of their share.
const TABLE_SIZE: usize = 65_537;

#[derive(Debug)]
pub(crate) struct Maglev {
    /// Endpoint index per slot; empty when there are no endpoints.
    table: Box<[u32]>,
    len: usize,
}

impl Maglev {
    pub(crate) fn new(endpoints: &[Weighted<'_>]) -> Self {
        if endpoints.is_empty() {
            return Self {
                table: Box::default(),
                len: 0,
            };
        }
        let m = TABLE_SIZE as u64;
        let perms: Vec<(u64, u64)> = endpoints
            .iter()
            .map(|e| {
                let offset = u64::from(ketama_hash(format!("{}#offset", e.name).as_bytes())) % m;
                let skip =
                    u64::from(ketama_hash(format!("{}#skip", e.name).as_bytes())) % (m - 1) + 1;
                (offset, skip)
            })
            .collect();
        let max_weight = endpoints
            .iter()
            .map(|e| u64::from(e.weight))
            .max()
            .unwrap_or(1);
        let mut next = vec![0u64; endpoints.len()];
        let mut credit = vec![0u64; endpoints.len()];
        let mut table = vec![u32::MAX; TABLE_SIZE];
        let mut filled = 0;
        'fill: loop {
            for (i, endpoint) in endpoints.iter().enumerate() {
                credit[i] += u64::from(endpoint.weight);
                if credit[i] < max_weight {
                    continue;
                }
                credit[i] -= max_weight;
                let (offset, skip) = perms[i];
                // Walk the permutation to the next free slot; it exists while filled < size.
                loop {
                    let slot = ((offset + next[i] * skip) % m) as usize;
                    next[i] += 1;
                    if table[slot] == u32::MAX {
                        // Endpoint counts are far below u32::MAX (config sizes).
                        table[slot] = i as u32;
                        filled += 1;
                        break;
                    }
                }
                if filled == TABLE_SIZE {
                    break 'fill;
                }
            }
        }
        Self {
            table: table.into_boxed_slice(),
            len: endpoints.len(),
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn pick(&self, key: &[u8]) -> Option<usize> {
        if self.table.is_empty() {
            return None;
        }
        let slot = ketama_hash(key) as usize % self.table.len();
        Some(self.table[slot] as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{endpoints, weighted};
    use super::*;

    fn table(weights: &[u32]) -> Maglev {
        let (names, loads) = endpoints(weights);
        Maglev::new(&weighted(&names, weights, &loads))
    }

    #[test]
    fn shares_follow_weights() {
        let t = table(&[1, 1, 2]);
        let mut counts = [0usize; 3];
        for &i in t.table.iter() {
            counts[i as usize] += 1;
        }
        let m = TABLE_SIZE as f64;
        assert!((counts[0] as f64 / m - 0.25).abs() < 0.01, "{counts:?}");
        assert!((counts[2] as f64 / m - 0.5).abs() < 0.01, "{counts:?}");
        assert_eq!(Maglev::new(&[]).pick(b"k"), None);
    }

    #[test]
    fn removal_moves_few_keys() {
        let weights = vec![1; 10];
        let (names, loads) = endpoints(&weights);
        let before = Maglev::new(&weighted(&names, &weights, &loads));
        let after = Maglev::new(&weighted(&names[..9], &weights[..9], &loads[..9]));
        let moved = (0..5000)
            .filter(|k| {
                let key = format!("k{k}");
                let was = before.pick(key.as_bytes()).unwrap();
                was != 9 && after.pick(key.as_bytes()).unwrap() != was
            })
            .count();
        // Maglev trades a little disruption for balance: well under 5% of the survivors' keys.
        assert!(moved < 250, "{moved} keys of surviving endpoints moved");
    }
}
