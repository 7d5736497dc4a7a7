//! The block cache: decoded data blocks keyed by (table, offset), weighed by their bytes, so
//! hot reads skip the disk, the checksum and the decoding.

use crate::prefix_index::PrefixIndex;
use bytes::Bytes;
use cairn_common::{Entry, EntryKind, SeqNo, TableId, compare_internal};
use quick_cache::{Weighter, sync::Cache};
use std::cmp::Ordering;
use std::sync::Arc;

/// A decoded data block, shared by the cache and its readers.
pub type Block = Arc<BlockEntries>;

/// A data block: its bytes, and where each entry's key and value lie in them, in internal
/// order, with a prefix index for lookups. An `Entry` (two reference counts on the bytes) is
/// made only for an entry that is read: a lookup reads one entry of its block, and a scan
/// skips every version its snapshot does not see.
#[derive(Debug, Clone)]
pub struct BlockEntries {
    data: Bytes,
    items: Vec<Item>,
    search: PrefixIndex,
}

#[derive(Debug, Clone, Copy)]
struct Item {
    key: (u32, u32),
    value: (u32, u32),
    seq: SeqNo,
    kind: EntryKind,
}

impl BlockEntries {
    /// Over `data`, each entry given as (key, seq, kind, value) with key and value slices of
    /// `data`. Errors if a slice lies outside it.
    pub(crate) fn over<'a>(
        data: Bytes,
        entries: impl ExactSizeIterator<Item = (&'a [u8], SeqNo, EntryKind, &'a [u8])>,
    ) -> Result<Self, String> {
        let base = data.as_ptr() as usize;
        let span = |s: &[u8]| -> Result<(u32, u32), String> {
            let at = (s.as_ptr() as usize).wrapping_sub(base);
            if s.is_empty() {
                return Ok((0, 0));
            }
            match (u32::try_from(at), u32::try_from(s.len())) {
                (Ok(at), Ok(len)) if at as usize + len as usize <= data.len() => Ok((at, len)),
                _ => Err("entry outside its block".into()),
            }
        };
        let mut items = Vec::with_capacity(entries.len());
        for (key, seq, kind, value) in entries {
            items.push(Item {
                key: span(key)?,
                value: span(value)?,
                seq,
                kind,
            });
        }
        let slice = |(at, len): (u32, u32)| &data[at as usize..(at + len) as usize];
        let search = PrefixIndex::new(items.iter().map(|it| slice(it.key)));
        Ok(BlockEntries {
            data,
            items,
            search,
        })
    }

    /// A block of entries that arrived one by one (from a storage server), copied into one
    /// buffer.
    pub fn from_entries(entries: &[Entry]) -> Self {
        let mut data =
            Vec::with_capacity(entries.iter().map(|e| e.key.len() + e.value.len()).sum());
        let mut items = Vec::with_capacity(entries.len());
        let push = |b: &[u8], data: &mut Vec<u8>| {
            let at = (data.len() as u32, b.len() as u32);
            data.extend_from_slice(b);
            at
        };
        for e in entries {
            let key = push(&e.key, &mut data);
            let value = push(&e.value, &mut data);
            items.push(Item {
                key,
                value,
                seq: e.seq,
                kind: e.kind,
            });
        }
        let search = PrefixIndex::new(entries.iter().map(|e| e.key.as_ref()));
        BlockEntries {
            data: Bytes::from(data),
            items,
            search,
        }
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    fn slice(&self, (at, len): (u32, u32)) -> &[u8] {
        &self.data[at as usize..(at + len) as usize]
    }

    /// The key of entry `i` (which must exist).
    pub fn key(&self, i: usize) -> &[u8] {
        self.slice(self.items[i].key)
    }

    /// Entry `i`, sharing the block's bytes.
    pub fn entry(&self, i: usize) -> Option<Entry> {
        let it = self.items.get(i)?;
        let share = |(at, len): (u32, u32)| {
            if len == 0 {
                Bytes::new()
            } else {
                self.data.slice(at as usize..(at + len) as usize)
            }
        };
        Some(Entry {
            key: share(it.key),
            seq: it.seq,
            kind: it.kind,
            value: share(it.value),
        })
    }

    pub fn entries(&self) -> impl Iterator<Item = Entry> + '_ {
        (0..self.len()).filter_map(|i| self.entry(i))
    }

    /// Position of the first entry at or after (key, seq) in internal order.
    pub fn seek(&self, key: &[u8], seq: SeqNo) -> usize {
        self.search.partition_point(key, |i| {
            compare_internal(self.key(i), self.items[i].seq, key, seq) == Ordering::Less
        })
    }

    /// Memory held, for the cache's accounting.
    fn weight(&self) -> u64 {
        (self.data.len() + self.items.len() * std::mem::size_of::<Item>() + 64) as u64
    }
}

#[derive(Clone)]
struct BlockWeight;

impl Weighter<(TableId, u64), Block> for BlockWeight {
    fn weight(&self, _key: &(TableId, u64), block: &Block) -> u64 {
        block.weight()
    }
}

type Blocks = Cache<(TableId, u64), Block, BlockWeight>;

#[derive(Clone)]
pub struct BlockCache {
    inner: Option<Arc<Blocks>>,
    hits: metrics::Counter,
    misses: metrics::Counter,
}

impl BlockCache {
    /// A cache holding up to `bytes`; 0 disables caching.
    pub fn new(bytes: u64) -> Self {
        let hits = metrics::counter!("cairn_block_cache_hits_total");
        let misses = metrics::counter!("cairn_block_cache_misses_total");
        if bytes == 0 {
            return BlockCache {
                inner: None,
                hits,
                misses,
            };
        }
        // Estimated item count only sizes the hash table; assume ~4 KiB blocks.
        let items = (bytes / 4096).max(16) as usize;
        BlockCache {
            inner: Some(Arc::new(Cache::with_weighter(items, bytes, BlockWeight))),
            hits,
            misses,
        }
    }

    pub fn get(&self, table: TableId, offset: u64) -> Option<Block> {
        let found = self.inner.as_ref()?.get(&(table, offset));
        match &found {
            Some(_) => self.hits.increment(1),
            None => self.misses.increment(1),
        }
        found
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::{decode_data_block, encode_data_block};

    #[test]
    fn a_block_gives_back_its_entries_from_its_bytes_or_from_entries() {
        let entries = vec![
            Entry::put("", 9, "empty key"),
            Entry::put("a", 7, "a7"),
            Entry::delete("a", 5),
            Entry::put("b", 1, vec![0u8; 300]),
        ];
        let decoded = decode_data_block(Bytes::from(encode_data_block(&entries).unwrap())).unwrap();
        for block in [decoded, BlockEntries::from_entries(&entries)] {
            assert_eq!(block.entries().collect::<Vec<_>>(), entries);
            assert_eq!((block.len(), block.key(1)), (4, &b"a"[..]));
            assert_eq!(block.seek(b"a", 6), 2, "a@5 is the first at or after a@6");
            assert_eq!(block.entry(4), None);
        }
    }

    #[test]
    fn an_entry_outside_its_block_is_refused() {
        let data = Bytes::from_static(b"keyvalue");
        let elsewhere = b"other".to_vec();
        let outside = [(&elsewhere[..], 1, EntryKind::Put, &data[3..])];
        assert!(BlockEntries::over(data.clone(), outside.into_iter()).is_err());
        let inside = [(&data[..3], 1, EntryKind::Put, &data[3..])];
        let block = BlockEntries::over(data.clone(), inside.into_iter()).unwrap();
        assert_eq!(block.entry(0), Some(Entry::put("key", 1, "value")));
    }
}
