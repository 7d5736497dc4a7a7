//! What the engine benches share: a database of the default components (file journal,
//! SSTables, local compactor) in a directory, the memtable kinds they compare, and the
//! runtime they drive it from (two threads, or one per worker where they are few).

use cairn_compaction::LocalCompactor;
use cairn_engine::{Components, Db, EngineOptions};
use cairn_filestore::{SstOptions, SstStorage, Storage};
use cairn_journal::{FileJournal, FileJournalOptions};
use cairn_memtable::MemtableOptions;
use std::sync::Arc;

pub async fn open(dir: &std::path::Path, sync: bool, memtable: MemtableOptions) -> Db {
    let mut jo = FileJournalOptions::new(dir.join("journal"));
    jo.sync = sync;
    let storage: Arc<dyn Storage> =
        Arc::new(SstStorage::open(SstOptions::new(dir.join("tables"))).unwrap());
    let comps = Components {
        journal: Arc::new(FileJournal::open(jo).unwrap()),
        memtables: memtable.factory(),
        compactor: Arc::new(LocalCompactor::new(storage.clone())),
        storage,
    };
    Db::open(dir, EngineOptions::default(), comps)
        .await
        .unwrap()
}

pub fn memtable_kinds() -> [(&'static str, MemtableOptions); 3] {
    [
        ("single_lock", MemtableOptions::SingleLock),
        ("sharded32", MemtableOptions::Sharded { shards: 32 }),
        ("skiplist", MemtableOptions::SkipList),
    ]
}

pub fn runtime(threads: usize) -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
        .unwrap()
}
