//! One locked `BTreeMap` with its size counters (the single-lock memtable is one, the sharded
//! memtable many), and the resumable cursor every memtable scans with: it copies a small run
//! of entries (under the read lock, for a locked map), lets go, and resumes after the last key
//! it looked at. Scans thus stream without holding a lock across the caller's work, and cost
//! one lock per run. Runs start short and double: a short scan merging many shards copies
//! little more than it returns, and a long one pays for each re-seek with many entries.

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
        RunCursor::new(self.map.clone(), range, snapshot)
    }

    pub fn bytes(&self) -> usize {
        self.bytes.load(Ordering::Relaxed)
    }

    pub fn len(&self) -> usize {
        self.len.load(Ordering::Relaxed)
    }
}

/// A cursor over one locked map.
pub type MapCursor = RunCursor<RwLock<Map>>;

/// An ordered map a `RunCursor` copies runs from.
pub trait RunSource: Send + Sync + 'static {
    /// Looks at up to `run` entries of `(from, end)` in order and copies those at or below
    /// `snapshot` into `buf`. Returns the last key looked at when all `run` were looked at
    /// (more may follow), `None` when the range ended first.
    fn copy_run(
        &self,
        bounds: (Bound<InternalKey>, Bound<InternalKey>),
        snapshot: SeqNo,
        run: usize,
        buf: &mut VecDeque<Entry>,
    ) -> Option<InternalKey>;
}

/// A visible version copied out of a map.
pub fn copied(k: &InternalKey, kind: EntryKind, value: &Bytes) -> Entry {
    Entry {
        key: k.key.clone(),
        seq: k.seq,
        kind,
        value: value.clone(),
    }
}

/// Walks a map in runs that start at `FIRST_RUN` entries and double up to `MAX_RUN`; each
/// refill resumes after the last key the previous one looked at.
pub struct RunCursor<S> {
    source: Arc<S>,
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

impl<S: RunSource> RunCursor<S> {
    pub fn new(source: Arc<S>, range: &KeyRange, snapshot: SeqNo) -> Self {
        let (next_from, end) = internal_bounds(range);
        RunCursor {
            source,
            next_from,
            end,
            snapshot,
            buf: VecDeque::new(),
            run: FIRST_RUN,
            // A map's range panics on an inverted range; an empty one has nothing to give.
            done: range.is_empty(),
        }
    }

    fn refill(&mut self) {
        let bounds = (self.next_from.clone(), self.end.clone());
        match self
            .source
            .copy_run(bounds, self.snapshot, self.run, &mut self.buf)
        {
            Some(last) => {
                self.next_from = Bound::Excluded(last);
                self.run = (self.run * 2).min(MAX_RUN);
            }
            None => self.done = true,
        }
    }
}

impl<S: RunSource> Iterator for RunCursor<S> {
    type Item = Entry;

    fn next(&mut self) -> Option<Entry> {
        while self.buf.is_empty() && !self.done {
            self.refill();
        }
        self.buf.pop_front()
    }
}

impl RunSource for RwLock<Map> {
    fn copy_run(
        &self,
        bounds: (Bound<InternalKey>, Bound<InternalKey>),
        snapshot: SeqNo,
        run: usize,
        buf: &mut VecDeque<Entry>,
    ) -> Option<InternalKey> {
        let map = self.read();
        for (seen, (k, (kind, v))) in map.range(bounds).enumerate() {
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

/// The newest version of `key` at or below `snapshot` in one map.
fn get_in(map: &Map, key: &[u8], snapshot: SeqNo) -> Option<Entry> {
    let probe = InternalKey {
        key: Bytes::copy_from_slice(key),
        seq: snapshot,
    };
    let (k, (kind, v)) = map.range(probe..).next()?;
    (k.key.as_ref() == key).then(|| copied(k, *kind, v))
}
