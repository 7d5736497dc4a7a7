//! The skiplist memtable: one lock-free ordered map (`crossbeam_skiplist::SkipMap`) keyed by
//! internal key. Writers insert without taking a lock, and a scan walks one ordered map in runs
//! (the shared `RunCursor`), with no merge of shards.

use crate::Memtable;
use crate::cursor::{RunCursor, RunSource, copied};
use bytes::Bytes;
use cairn_common::{Entry, EntryKind, InternalKey, KeyRange, SeqNo};
use crossbeam_skiplist::SkipMap;
use std::collections::VecDeque;
use std::ops::Bound;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

type Map = SkipMap<InternalKey, (EntryKind, Bytes)>;

#[derive(Default)]
pub struct SkipListMemtable {
    map: Arc<Map>,
    bytes: AtomicUsize,
}

impl SkipListMemtable {
    pub fn new() -> Self {
        Self::default()
    }
}

impl Memtable for SkipListMemtable {
    fn insert(&self, e: Entry) {
        let size = e.approximate_size();
        let key = InternalKey {
            key: e.key,
            seq: e.seq,
        };
        // The same (key, seq) is the same write (a replayed record): the first copy stays,
        // and is counted once.
        let mut inserted = false;
        self.map.get_or_insert_with(key, || {
            inserted = true;
            (e.kind, e.value)
        });
        if inserted {
            self.bytes.fetch_add(size, Ordering::Relaxed);
        }
    }

    fn get(&self, key: &[u8], snapshot: SeqNo) -> Option<Entry> {
        let probe = InternalKey {
            key: Bytes::copy_from_slice(key),
            seq: snapshot,
        };
        let found = self.map.lower_bound(Bound::Included(&probe))?;
        let (k, (kind, v)) = (found.key(), found.value());
        (k.key.as_ref() == key).then(|| copied(k, *kind, v))
    }

    fn scan(&self, range: &KeyRange, snapshot: SeqNo) -> Box<dyn Iterator<Item = Entry> + Send> {
        Box::new(RunCursor::new(self.map.clone(), range, snapshot))
    }

    fn approximate_bytes(&self) -> usize {
        self.bytes.load(Ordering::Relaxed)
    }

    fn len(&self) -> usize {
        self.map.len()
    }
}

/// The map's entries borrow the map, so an iterator that owns its map (as the trait's
/// `'static` iterator must) resumes by key rather than by reference.
impl RunSource for Map {
    fn copy_run(
        &self,
        bounds: (Bound<InternalKey>, Bound<InternalKey>),
        snapshot: SeqNo,
        run: usize,
        buf: &mut VecDeque<Entry>,
    ) -> Option<InternalKey> {
        for (seen, e) in self.range(bounds).enumerate() {
            let (k, (kind, v)) = (e.key(), e.value());
            if k.seq <= snapshot {
                buf.push_back(copied(k, *kind, v));
            }
            if seen + 1 == run {
                return Some(k.clone());
            }
        }
        None
    }
}
