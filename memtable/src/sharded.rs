//! The sharded memtable: keys are spread over N shards by SeaHash, each shard its own
//! `RwLock<BTreeMap>`, so concurrent writers mostly take different locks. A point lookup
//! touches one shard; a scan merges the shards' cursors with a heap.

use crate::Memtable;
use crate::cursor::{Map, MapCursor, get_in};
use cairn_common::{Entry, InternalKey, KeyRange, SeqNo};
use parking_lot::RwLock;
use std::cmp::Ordering as CmpOrdering;
use std::collections::BinaryHeap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

pub struct ShardedMemtable {
    shards: Vec<Shard>,
}

/// Padded to its own cache lines so counters of neighbouring shards do not false-share.
#[repr(align(128))]
struct Shard {
    map: Arc<RwLock<Map>>,
    bytes: AtomicUsize,
    len: AtomicUsize,
}

impl ShardedMemtable {
    pub fn new(shards: usize) -> Self {
        ShardedMemtable {
            shards: (0..shards.max(1))
                .map(|_| Shard {
                    map: Arc::default(),
                    bytes: AtomicUsize::new(0),
                    len: AtomicUsize::new(0),
                })
                .collect(),
        }
    }

    fn shard(&self, key: &[u8]) -> &Shard {
        let h = seahash::hash(key);
        &self.shards[(h % self.shards.len() as u64) as usize]
    }
}

impl Memtable for ShardedMemtable {
    fn insert(&self, e: Entry) {
        let shard = self.shard(&e.key);
        let size = e.approximate_size();
        let old = shard.map.write().insert(
            InternalKey {
                key: e.key,
                seq: e.seq,
            },
            (e.kind, e.value),
        );
        if old.is_none() {
            shard.bytes.fetch_add(size, Ordering::Relaxed);
            shard.len.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn get(&self, key: &[u8], snapshot: SeqNo) -> Option<Entry> {
        get_in(&self.shard(key).map.read(), key, snapshot)
    }

    fn scan(&self, range: &KeyRange, snapshot: SeqNo) -> Box<dyn Iterator<Item = Entry> + Send> {
        if self.shards.len() == 1 {
            return Box::new(MapCursor::new(self.shards[0].map.clone(), range, snapshot));
        }
        let cursors = self
            .shards
            .iter()
            .map(|s| MapCursor::new(s.map.clone(), range, snapshot))
            .collect();
        Box::new(MergeCursor::new(cursors))
    }

    fn approximate_bytes(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.bytes.load(Ordering::Relaxed))
            .sum()
    }

    fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.len.load(Ordering::Relaxed))
            .sum()
    }
}

/// K-way merge of shard cursors. A key lives in exactly one shard, so no de-duplication.
struct MergeCursor {
    cursors: Vec<MapCursor>,
    heap: BinaryHeap<Head>,
}

struct Head {
    entry: Entry,
    src: usize,
}

impl PartialEq for Head {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == CmpOrdering::Equal
    }
}
impl Eq for Head {}
impl PartialOrd for Head {
    fn partial_cmp(&self, other: &Self) -> Option<CmpOrdering> {
        Some(self.cmp(other))
    }
}
impl Ord for Head {
    // BinaryHeap is a max-heap: reverse so the smallest internal key is on top.
    fn cmp(&self, other: &Self) -> CmpOrdering {
        other.entry.cmp_internal(&self.entry)
    }
}

impl MergeCursor {
    fn new(mut cursors: Vec<MapCursor>) -> Self {
        let mut heap = BinaryHeap::with_capacity(cursors.len());
        for (src, c) in cursors.iter_mut().enumerate() {
            if let Some(entry) = c.next() {
                heap.push(Head { entry, src });
            }
        }
        MergeCursor { cursors, heap }
    }
}

impl Iterator for MergeCursor {
    type Item = Entry;

    fn next(&mut self) -> Option<Entry> {
        let Head { entry, src } = self.heap.pop()?;
        if let Some(next) = self.cursors[src].next() {
            self.heap.push(Head { entry: next, src });
        }
        Some(entry)
    }
}
