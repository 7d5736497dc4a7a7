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
}

impl BlockLayout {
    pub(crate) fn new(last_keys: Vec<(Bytes, SeqNo)>, filter: Bloom) -> Self {
        BlockLayout { last_keys, filter }
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
        Ok(BlockLayout { last_keys, filter })
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
        self.last_keys
            .partition_point(|(k, s)| compare_internal(k, *s, key, seq) == Ordering::Less)
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
