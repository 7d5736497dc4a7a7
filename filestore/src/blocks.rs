//! A table seen as blocks: the last internal key of each block and the table's key filter.
//! A reader that holds this can find the one block that may answer a lookup and fetch only
//! that block, from wherever blocks come from: the local file (the SSTable store) or a
//! storage server across the network (the gRPC client, which caches them).

use crate::bloom::Bloom;
use crate::cache::Block;
use crate::format;
use bytes::Bytes;
use cairn_common::{Entry, Error, Result, SeqNo, TableMeta, compare_internal};
use std::cmp::Ordering;

#[derive(Debug, Clone)]
pub struct BlockLayout {
    last_keys: Vec<(Bytes, SeqNo)>,
    filter: Bloom,
    /// Length of the prefix every last key shares (that of the first and the last).
    shared: usize,
    /// The 8 bytes after `shared` of each last key, big-endian and zero-padded: a lookup's
    /// binary search compares these first, in one small array that stays in the CPU's cache,
    /// and reads a key itself only on a tie. On a large table this halves a lookup's cache
    /// misses.
    prefixes: Vec<u64>,
}

/// The 8 bytes of `key` after its first `skip`, as a number that orders like the bytes.
fn prefix_after(key: &[u8], skip: usize) -> u64 {
    let rest = key.get(skip..).unwrap_or_default();
    let mut b = [0u8; 8];
    let n = rest.len().min(8);
    b[..n].copy_from_slice(&rest[..n]);
    u64::from_be_bytes(b)
}

impl BlockLayout {
    pub(crate) fn new(last_keys: Vec<(Bytes, SeqNo)>, filter: Bloom) -> Self {
        let shared = match (last_keys.first(), last_keys.last()) {
            (Some((a, _)), Some((b, _))) => {
                a.iter().zip(b.iter()).take_while(|(x, y)| x == y).count()
            }
            _ => 0,
        };
        let prefixes = last_keys
            .iter()
            .map(|(k, _)| prefix_after(k, shared))
            .collect();
        BlockLayout {
            last_keys,
            filter,
            shared,
            prefixes,
        }
    }

    /// Rebuilds a layout from its parts, as `last_keys` and `encoded_filter` gave them.
    pub fn decode(last_keys: Vec<(Bytes, SeqNo)>, encoded_filter: &[u8]) -> Result<Self> {
        let filter = if encoded_filter.is_empty() {
            Bloom {
                k: 0,
                bits: Vec::new(),
            }
        } else {
            format::decode(encoded_filter)
                .map_err(|d| Error::InvalidArgument(format!("block filter: {d}")))?
        };
        Ok(BlockLayout::new(last_keys, filter))
    }

    pub fn last_keys(&self) -> &[(Bytes, SeqNo)] {
        &self.last_keys
    }

    pub fn encoded_filter(&self) -> Vec<u8> {
        if self.filter.k == 0 {
            return Vec::new();
        }
        format::encode(&self.filter).unwrap_or_default()
    }

    pub fn len(&self) -> usize {
        self.last_keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.last_keys.is_empty()
    }

    /// Index of the first block whose last internal key is at or after (key, seq).
    pub fn seek(&self, key: &[u8], seq: SeqNo) -> usize {
        let full = |i: usize| {
            let (k, s) = &self.last_keys[i];
            compare_internal(k, *s, key, seq) == Ordering::Less
        };
        let Some((first, _)) = self.last_keys.first() else {
            return 0;
        };
        if !key.starts_with(&first[..self.shared]) {
            // Outside the keys' shared prefix: the prefixes say nothing, compare whole keys.
            return self
                .last_keys
                .partition_point(|(k, s)| compare_internal(k, *s, key, seq) == Ordering::Less);
        }
        // Every last key and `key` share the prefix, so where their next 8 bytes differ,
        // those decide the order.
        let p = prefix_after(key, self.shared);
        let (mut lo, mut hi) = (0, self.prefixes.len());
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            let less = match self.prefixes[mid].cmp(&p) {
                Ordering::Less => true,
                Ordering::Greater => false,
                Ordering::Equal => full(mid),
            };
            if less {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        lo
    }

    /// The block that holds the newest version of `key` at or below `snapshot`, if the table
    /// may hold one at all (key bounds, then the filter).
    pub fn locate(&self, meta: &TableMeta, key: &[u8], snapshot: SeqNo) -> Option<usize> {
        if key < meta.smallest.as_slice() || key > meta.largest.as_slice() {
            return None;
        }
        if self.filter.k > 0 && !self.filter.may_contain(Bloom::hash(key)) {
            return None;
        }
        let i = self.seek(key, snapshot);
        (i < self.last_keys.len()).then_some(i)
    }
}

/// The answer to a lookup within the block `locate` named.
pub fn find_in_block(block: &Block, key: &[u8], snapshot: SeqNo) -> Option<Entry> {
    let pos =
        block.partition_point(|e| compare_internal(&e.key, e.seq, key, snapshot) == Ordering::Less);
    block.get(pos).filter(|e| e.key.as_ref() == key).cloned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    /// The prefix search finds what a plain binary search finds, for keys of every shape:
    /// shorter and longer than the prefix, with zero bytes, and outside the shared prefix.
    #[test]
    fn prefix_search_agrees_with_a_plain_search() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let no_filter = || Bloom {
            k: 0,
            bits: Vec::new(),
        };
        for round in 0..300 {
            let shared: Vec<u8> = (0..rng.random_range(0..6))
                .map(|_| rng.random_range(0..3))
                .collect();
            let mut keys: Vec<(Bytes, SeqNo)> = (0..rng.random_range(1..60))
                .map(|_| {
                    let mut k = shared.clone();
                    for _ in 0..rng.random_range(0..12) {
                        k.push(rng.random_range(0..3));
                    }
                    (Bytes::from(k), rng.random_range(0..4))
                })
                .collect();
            keys.sort_by(|a, b| compare_internal(&a.0, a.1, &b.0, b.1));
            keys.dedup();
            let layout = BlockLayout::new(keys.clone(), no_filter());
            for _ in 0..300 {
                let mut probe = if rng.random_bool(0.7) {
                    shared.clone()
                } else {
                    Vec::new()
                };
                for _ in 0..rng.random_range(0..14) {
                    probe.push(rng.random_range(0..3));
                }
                let seq = rng.random_range(0..5);
                let want = keys.partition_point(|(k, s)| {
                    compare_internal(k, *s, &probe, seq) == Ordering::Less
                });
                assert_eq!(
                    layout.seek(&probe, seq),
                    want,
                    "round {round}: {probe:?}@{seq} in {keys:?}"
                );
            }
        }
    }
}
