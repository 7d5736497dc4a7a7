//! The block cache: decoded data blocks keyed by (table, offset), weighed by their bytes, so
//! hot reads skip the disk, the checksum and the decoding.

use crate::prefix_index::PrefixIndex;
use cairn_common::{Entry, SeqNo, TableId, compare_internal};
use quick_cache::{Weighter, sync::Cache};
use std::cmp::Ordering;
use std::sync::Arc;

/// A decoded data block, shared by the cache and its readers.
pub type Block = Arc<BlockEntries>;

/// A data block's entries (keys and values sharing one buffer), in internal order, with a
/// prefix index for lookups.
#[derive(Debug, Clone, PartialEq)]
pub struct BlockEntries {
    entries: Vec<Entry>,
    search: PrefixIndex,
}

impl BlockEntries {
    pub fn new(entries: Vec<Entry>) -> Self {
        let search = PrefixIndex::new(entries.iter().map(|e| e.key.as_ref()));
        BlockEntries { entries, search }
    }

    /// Position of the first entry at or after (key, seq) in internal order.
    pub fn seek(&self, key: &[u8], seq: SeqNo) -> usize {
        self.search.partition_point(key, |i| {
            let e = &self.entries[i];
            compare_internal(&e.key, e.seq, key, seq) == Ordering::Less
        })
    }
}

impl std::ops::Deref for BlockEntries {
    type Target = [Entry];

    fn deref(&self) -> &[Entry] {
        &self.entries
    }
}

#[derive(Clone)]
struct BlockWeight;

impl Weighter<(TableId, u64), Block> for BlockWeight {
    fn weight(&self, _key: &(TableId, u64), block: &Block) -> u64 {
        block
            .iter()
            .map(|e| e.key.len() + e.value.len() + 64)
            .sum::<usize>() as u64
            + 64
    }
}

type Blocks = Cache<(TableId, u64), Block, BlockWeight>;

#[derive(Clone)]
pub struct BlockCache {
    inner: Option<Arc<Blocks>>,
}

impl BlockCache {
    /// A cache holding up to `bytes`; 0 disables caching.
    pub fn new(bytes: u64) -> Self {
        if bytes == 0 {
            return BlockCache { inner: None };
        }
        // Estimated item count only sizes the hash table; assume ~4 KiB blocks.
        let items = (bytes / 4096).max(16) as usize;
        BlockCache {
            inner: Some(Arc::new(Cache::with_weighter(items, bytes, BlockWeight))),
        }
    }

    pub fn get(&self, table: TableId, offset: u64) -> Option<Block> {
        self.inner.as_ref()?.get(&(table, offset))
    }

    pub fn insert(&self, table: TableId, offset: u64, block: Block) {
        if let Some(c) = &self.inner {
            c.insert((table, offset), block);
        }
    }

    pub fn weight(&self) -> u64 {
        self.inner.as_ref().map_or(0, |c| c.weight())
    }
}
