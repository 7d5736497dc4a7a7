//! The baseline: one `RwLock<BTreeMap>` for the whole memtable. Simple, and the yardstick the
//! sharded memtable's benchmark is read against.

use crate::Memtable;
use crate::cursor::{Map, MapCursor, get_in};
use cairn_common::{Entry, InternalKey, KeyRange, SeqNo};
use parking_lot::RwLock;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

#[derive(Default)]
pub struct SingleLockMemtable {
    map: Arc<RwLock<Map>>,
    bytes: AtomicUsize,
    len: AtomicUsize,
}

impl SingleLockMemtable {
    pub fn new() -> Self {
        Self::default()
    }
}

impl Memtable for SingleLockMemtable {
    fn insert(&self, e: Entry) {
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

    fn get(&self, key: &[u8], snapshot: SeqNo) -> Option<Entry> {
        get_in(&self.map.read(), key, snapshot)
    }

    fn scan(&self, range: &KeyRange, snapshot: SeqNo) -> Box<dyn Iterator<Item = Entry> + Send> {
        Box::new(MapCursor::new(self.map.clone(), range, snapshot))
    }

    fn approximate_bytes(&self) -> usize {
        self.bytes.load(Ordering::Relaxed)
    }

    fn len(&self) -> usize {
        self.len.load(Ordering::Relaxed)
    }
}
