//! One locked `BTreeMap` with its size counters (the single-lock memtable is one, the sharded
//! memtable many), and a resumable cursor over it: the cursor copies a small run of entries
//! under the read lock, releases it, and resumes after the last key it returned. Scans thus
//! stream without holding a lock across the caller's work, and cost one lock per run. Runs
//! start short and double: a short scan merging many shards copies little more than it
//! returns, and a long one pays for each re-seek with many entries.

use bytes::Bytes;
use cairn_common::{Entry, EntryKind, InternalKey, KeyRange, SeqNo};
use parking_lot::RwLock;
use std::collections::{BTreeMap, VecDeque};
use std::ops::Bound;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

pub type Map = BTreeMap<InternalKey, (EntryKind, Bytes)>;

/// The first run's length, and the longest a run grows to.
pub const FIRST_RUN: usize = 8;
pub const MAX_RUN: usize = 512;

#[derive(Default)]
pub struct LockedMap {
    map: Arc<RwLock<Map>>,
    bytes: AtomicUsize,
    len: AtomicUsize,
}

impl LockedMap {
    pub fn insert(&self, e: Entry) {
        let size = e.approximate_size();
        let old = self.map.write().insert(
            InternalKey {
                key: e.key,
                seq: e.seq,
            },
            (e.kind, e.value),
        );
        if old.is_none() {
            self.bytes.fetch_add(size, Ordering::Relaxed);
            self.len.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn get(&self, key: &[u8], snapshot: SeqNo) -> Option<Entry> {
        get_in(&self.map.read(), key, snapshot)
    }

    pub fn cursor(&self, range: &KeyRange, snapshot: SeqNo) -> MapCursor {
        MapCursor::new(self.map.clone(), range, snapshot)
    }

    pub fn bytes(&self) -> usize {
        self.bytes.load(Ordering::Relaxed)
    }

    pub fn len(&self) -> usize {
        self.len.load(Ordering::Relaxed)
    }
}

pub struct MapCursor {
    map: Arc<RwLock<Map>>,
    next_from: Bound<InternalKey>,
    end: Bound<InternalKey>,
    snapshot: SeqNo,
    buf: VecDeque<Entry>,
    run: usize,
    done: bool,
}

/// The internal-key bounds covering every version of the user keys in `range`.
pub fn internal_bounds(range: &KeyRange) -> (Bound<InternalKey>, Bound<InternalKey>) {
    let ik = |k: &Bytes, seq| InternalKey {
        key: k.clone(),
        seq,
    };
    let start = match &range.start {
        Bound::Included(k) => Bound::Included(ik(k, SeqNo::MAX)),
        Bound::Excluded(k) => Bound::Excluded(ik(k, 0)),
        Bound::Unbounded => Bound::Unbounded,
    };
    let end = match &range.end {
        Bound::Included(k) => Bound::Included(ik(k, 0)),
        Bound::Excluded(k) => Bound::Excluded(ik(k, SeqNo::MAX)),
        Bound::Unbounded => Bound::Unbounded,
    };
    (start, end)
}

impl MapCursor {
    pub fn new(map: Arc<RwLock<Map>>, range: &KeyRange, snapshot: SeqNo) -> Self {
        let (next_from, end) = internal_bounds(range);
        MapCursor {
            map,
            next_from,
            end,
            snapshot,
            buf: VecDeque::new(),
            run: FIRST_RUN,
            // BTreeMap::range panics on an inverted range; an empty one has nothing to give.
            done: range.is_empty(),
        }
    }

    fn refill(&mut self) {
        let map = self.map.read();
        let mut last = None;
        let mut seen = 0;
        for (k, (kind, v)) in map.range((self.next_from.clone(), self.end.clone())) {
            seen += 1;
            last = Some(k);
            if k.seq <= self.snapshot {
                self.buf.push_back(Entry {
                    key: k.key.clone(),
                    seq: k.seq,
                    kind: *kind,
                    value: v.clone(),
                });
            }
            if seen == self.run {
                break;
            }
        }
        match last {
            Some(k) if seen == self.run => {
                self.next_from = Bound::Excluded(k.clone());
                self.run = (self.run * 2).min(MAX_RUN);
            }
            _ => self.done = true,
        }
    }
}

impl Iterator for MapCursor {
    type Item = Entry;

    fn next(&mut self) -> Option<Entry> {
        while self.buf.is_empty() && !self.done {
            self.refill();
        }
        self.buf.pop_front()
    }
}

/// The newest version of `key` at or below `snapshot` in one map.
fn get_in(map: &Map, key: &[u8], snapshot: SeqNo) -> Option<Entry> {
    let probe = InternalKey {
        key: Bytes::copy_from_slice(key),
        seq: snapshot,
    };
    let (k, (kind, v)) = map.range(probe..).next()?;
    (k.key.as_ref() == key).then(|| Entry {
        key: k.key.clone(),
        seq: k.seq,
        kind: *kind,
        value: v.clone(),
    })
}
