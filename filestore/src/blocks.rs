//! A table seen as blocks: the last internal key of each block and the table's key filter.
//! A reader that holds this can find the one block that may answer a lookup and fetch only
//! that block, from wherever blocks come from: the local file (the SSTable store) or a
//! storage server across the network (the gRPC client, which caches them).

use crate::bloom::Bloom;
use crate::cache::Block;
use crate::format;
use crate::prefix_index::PrefixIndex;
use bytes::Bytes;
use cairn_common::{Entry, Error, Result, SeqNo, TableMeta, compare_internal};
use std::cmp::Ordering;

#[derive(Debug, Clone)]
pub struct BlockLayout {
    last_keys: Vec<(Bytes, SeqNo)>,
    filter: Bloom,
    search: PrefixIndex,
}

impl BlockLayout {
    pub(crate) fn new(last_keys: Vec<(Bytes, SeqNo)>, filter: Bloom) -> Self {
        let search = PrefixIndex::new(last_keys.iter().map(|(k, _)| k.as_ref()));
        BlockLayout {
            last_keys,
            filter,
            search,
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
        self.search.partition_point(key, |i| {
            let (k, s) = &self.last_keys[i];
            compare_internal(k, *s, key, seq) == Ordering::Less
        })
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
    let pos = block.seek(key, snapshot);
    (pos < block.len() && block.key(pos) == key)
        .then(|| block.entry(pos))
        .flatten()
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
