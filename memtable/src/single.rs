//! The baseline: one `RwLock<BTreeMap>` for the whole memtable. Simple, and the yardstick the
//! sharded memtable's benchmark is read against.

use crate::Memtable;
use crate::cursor::LockedMap;
use cairn_common::{Entry, KeyRange, SeqNo};

#[derive(Default)]
pub struct SingleLockMemtable {
    map: LockedMap,
}

impl SingleLockMemtable {
    pub fn new() -> Self {
        Self::default()
    }
}

impl Memtable for SingleLockMemtable {
    fn insert(&self, e: Entry) {
        self.map.insert(e);
    }

    fn get(&self, key: &[u8], snapshot: SeqNo) -> Option<Entry> {
        self.map.get(key, snapshot)
    }

    fn scan(&self, range: &KeyRange, snapshot: SeqNo) -> Box<dyn Iterator<Item = Entry> + Send> {
        Box::new(self.map.cursor(range, snapshot))
    }

    fn approximate_bytes(&self) -> usize {
        self.map.bytes()
    }

    fn len(&self) -> usize {
        self.map.len()
    }
}
