//! The sharded memtable: keys are spread over N shards by SeaHash, each shard its own
//! `RwLock<BTreeMap>`, so concurrent writers mostly take different locks. A point lookup
//! touches one shard; a scan merges the shards' cursors with a heap.

use crate::Memtable;
use crate::cursor::{LockedMap, MapCursor};
use cairn_common::{Entry, KeyRange, MergeHead, SeqNo};
use std::collections::BinaryHeap;

pub struct ShardedMemtable {
    shards: Vec<Shard>,
}

/// Padded to its own cache lines so counters of neighbouring shards do not false-share.
#[repr(align(128))]
#[derive(Default)]
struct Shard(LockedMap);

impl ShardedMemtable {
    pub fn new(shards: usize) -> Self {
        ShardedMemtable {
            shards: (0..shards.max(1)).map(|_| Shard::default()).collect(),
        }
    }

    fn shard(&self, key: &[u8]) -> &LockedMap {
        let h = seahash::hash(key);
        &self.shards[(h % self.shards.len() as u64) as usize].0
    }
}

impl Memtable for ShardedMemtable {
    fn insert(&self, e: Entry) {
        self.shard(&e.key).insert(e);
    }

    fn get(&self, key: &[u8], snapshot: SeqNo) -> Option<Entry> {
        self.shard(key).get(key, snapshot)
    }

    fn scan(&self, range: &KeyRange, snapshot: SeqNo) -> Box<dyn Iterator<Item = Entry> + Send> {
        if self.shards.len() == 1 {
            return Box::new(self.shards[0].0.cursor(range, snapshot));
        }
        let cursors = self
            .shards
            .iter()
            .map(|s| s.0.cursor(range, snapshot))
            .collect();
        Box::new(MergeCursor::new(cursors))
    }

    fn approximate_bytes(&self) -> usize {
        self.shards.iter().map(|s| s.0.bytes()).sum()
    }

    fn len(&self) -> usize {
        self.shards.iter().map(|s| s.0.len()).sum()
    }
}

/// K-way merge of shard cursors. A key lives in exactly one shard, so no de-duplication.
struct MergeCursor {
    cursors: Vec<MapCursor>,
    heap: BinaryHeap<MergeHead>,
}

impl MergeCursor {
    fn new(mut cursors: Vec<MapCursor>) -> Self {
        let mut heap = BinaryHeap::with_capacity(cursors.len());
        for (src, c) in cursors.iter_mut().enumerate() {
            if let Some(entry) = c.next() {
                heap.push(MergeHead { entry, src });
            }
        }
        MergeCursor { cursors, heap }
    }
}

impl Iterator for MergeCursor {
    type Item = Entry;

    fn next(&mut self) -> Option<Entry> {
        let MergeHead { entry, src } = self.heap.pop()?;
        if let Some(next) = self.cursors[src].next() {
            self.heap.push(MergeHead { entry: next, src });
        }
        Some(entry)
    }
}
