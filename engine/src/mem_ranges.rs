//! A memtable's range tombstones, kept beside it by the engine so that any `Memtable`
//! implementation, a library user's included, gets range deletes without knowing of them.
//! Tombstones are few and written rarely; reads check them cut into pieces
//! (`RangeDeletes`), built again by the first read after a write and shared, lock-free, by
//! the reads after it.

use arc_swap::ArcSwapOption;
use cairn_common::{RangeDeletes, RangeTombstone};
use parking_lot::Mutex;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

#[derive(Default)]
pub(crate) struct MemRanges {
    /// Set once the first tombstone is in, so that a memtable without any (nearly all) costs
    /// a read one load.
    any: AtomicBool,
    bytes: AtomicUsize,
    all: Mutex<Vec<RangeTombstone>>,
    /// `all` cut into pieces; emptied by every insert.
    built: ArcSwapOption<RangeDeletes>,
}

impl MemRanges {
    pub fn insert(&self, t: RangeTombstone) {
        self.bytes
            .fetch_add(t.start.len() + t.end.len() + 24, Ordering::Relaxed);
        let mut all = self.all.lock();
        all.push(t);
        self.built.store(None);
        self.any.store(true, Ordering::Release);
    }

    /// The tombstones cut into pieces, or `None` if there are none.
    pub fn get(&self) -> Option<Arc<RangeDeletes>> {
        if !self.any.load(Ordering::Acquire) {
            return None;
        }
        if let Some(built) = self.built.load_full() {
            return Some(built);
        }
        // Under the lock, so that an insert cannot empty `built` between this build and its
        // store and leave a stale one behind.
        let all = self.all.lock();
        let built = Arc::new(RangeDeletes::new(all.iter().cloned()));
        self.built.store(Some(built.clone()));
        Some(built)
    }

    pub fn is_empty(&self) -> bool {
        !self.any.load(Ordering::Acquire)
    }

    pub fn bytes(&self) -> usize {
        self.bytes.load(Ordering::Relaxed)
    }
}
