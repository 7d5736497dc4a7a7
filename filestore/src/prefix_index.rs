//! A search aid for sorted keys: the 8 bytes each key has after the prefix all of them share,
//! in one dense array (`key_prefix_after`). A binary search compares these numbers first,
//! reading a few cache lines instead of an entry and a key per step, and reads a key itself
//! only where two prefixes tie. Tables use one over their blocks' last keys, blocks one over
//! their entries; on a large table it halves a lookup's cache misses.

use cairn_common::{key_prefix_after, shared_prefix_len};

#[derive(Debug, Clone, PartialEq, Default)]
pub struct PrefixIndex {
    /// The prefix every key shares (that of the first and the last).
    shared: Vec<u8>,
    prefixes: Vec<u64>,
}

impl PrefixIndex {
    /// Over `keys`, which must be sorted.
    pub fn new<'a>(keys: impl ExactSizeIterator<Item = &'a [u8]> + Clone) -> Self {
        let (first, last) = (keys.clone().next(), keys.clone().last());
        let shared = match (first, last) {
            (Some(a), Some(b)) => a[..shared_prefix_len(a, b)].to_vec(),
            _ => Vec::new(),
        };
        let prefixes = keys.map(|k| key_prefix_after(k, shared.len())).collect();
        PrefixIndex { shared, prefixes }
    }

    /// The first position whose key is not `less` than the probe `key`, where `less(i)`
    /// compares key `i` with the probe in full (the caller's order may add more, such as
    /// sequence numbers, after the key).
    pub fn partition_point(&self, key: &[u8], less: impl Fn(usize) -> bool) -> usize {
        let (mut lo, mut hi) = (0, self.prefixes.len());
        if !key.starts_with(&self.shared) {
            // The prefixes order only keys with the shared prefix.
            while lo < hi {
                let mid = lo + (hi - lo) / 2;
                if less(mid) { lo = mid + 1 } else { hi = mid }
            }
            return lo;
        }
        let p = key_prefix_after(key, self.shared.len());
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            let below = match self.prefixes[mid].cmp(&p) {
                std::cmp::Ordering::Less => true,
                std::cmp::Ordering::Greater => false,
                std::cmp::Ordering::Equal => less(mid),
            };
            if below { lo = mid + 1 } else { hi = mid }
        }
        lo
    }
}
