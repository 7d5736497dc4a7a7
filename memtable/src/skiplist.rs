//! The skiplist memtable: one lock-free ordered map (`crossbeam_skiplist::SkipMap`) keyed by
//! internal key. Writers insert without taking a lock, and a scan walks one ordered map: no
//! merge of shards, and no copying of entries the scan does not return.

use crate::Memtable;
use crate::cursor::{FIRST_RUN, MAX_RUN, internal_bounds};
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
        (k.key.as_ref() == key).then(|| Entry {
            key: k.key.clone(),
            seq: k.seq,
            kind: *kind,
            value: v.clone(),
        })
    }

    fn scan(&self, range: &KeyRange, snapshot: SeqNo) -> Box<dyn Iterator<Item = Entry> + Send> {
        let (from, end) = internal_bounds(range);
        Box::new(SkipCursor {
            map: self.map.clone(),
            from,
            end,
            snapshot,
            buf: VecDeque::new(),
            run: FIRST_RUN,
            done: range.is_empty(),
        })
    }

    fn approximate_bytes(&self) -> usize {
        self.bytes.load(Ordering::Relaxed)
    }

    fn len(&self) -> usize {
        self.map.len()
    }
}

/// Walks the map in runs: each refill seeks to where the last one stopped and copies the next
/// run of visible entries. The map's entries borrow the map, so an iterator that owns its map
/// (as the trait's `'static` iterator must) resumes by key rather than by reference.
struct SkipCursor {
    map: Arc<Map>,
    from: Bound<InternalKey>,
    end: Bound<InternalKey>,
    snapshot: SeqNo,
    buf: VecDeque<Entry>,
    run: usize,
    done: bool,
}

impl SkipCursor {
    fn refill(&mut self) {
        let mut last = None;
        let mut seen = 0;
        for e in self.map.range((self.from.clone(), self.end.clone())) {
            seen += 1;
            let (k, (kind, v)) = (e.key(), e.value());
            if k.seq <= self.snapshot {
                self.buf.push_back(Entry {
                    key: k.key.clone(),
                    seq: k.seq,
                    kind: *kind,
                    value: v.clone(),
                });
            }
            if seen == self.run {
                last = Some(k.clone());
                break;
            }
        }
        match last {
            Some(k) => {
                self.from = Bound::Excluded(k);
                self.run = (self.run * 2).min(MAX_RUN);
            }
            None => self.done = true,
        }
    }
}

impl Iterator for SkipCursor {
    type Item = Entry;

    fn next(&mut self) -> Option<Entry> {
        while self.buf.is_empty() && !self.done {
            self.refill();
        }
        self.buf.pop_front()
    }
}
