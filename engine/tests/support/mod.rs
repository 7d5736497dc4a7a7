//! Builds engines from real local components for the integration tests.

#![allow(dead_code)]

use cairn_compaction::{LocalCompactor, PickerOptions};
use cairn_engine::{Components, Db, EngineOptions};
use cairn_filestore::{SstOptions, SstStorage, Storage};
use cairn_journal::{FileJournal, FileJournalOptions, Journal, MemoryJournal};
use cairn_memtable::MemtableOptions;
use std::path::Path;
use std::sync::Arc;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JournalKind {
    Memory,
    File { sync: bool },
}

/// Small sizes, so a few thousand operations flush and compact many times.
pub fn tiny_options() -> EngineOptions {
    EngineOptions {
        memtable_bytes: 16 << 10,
        max_immutable_memtables: 2,
        l0_stop_writes: 12,
        background_threads: 1,
        compaction: PickerOptions {
            l0_trigger: 3,
            levels: 4,
            base_level_bytes: 48 << 10,
            level_size_ratio: 4,
            target_table_bytes: 16 << 10,
        },
    }
}

pub struct Harness {
    pub dir: tempfile::TempDir,
    pub journal_kind: JournalKind,
    pub memtable: MemtableOptions,
    /// Kept across reopens so a memory journal survives a "crash".
    pub memory_journal: Arc<MemoryJournal>,
    pub opts: EngineOptions,
}

impl Harness {
    pub fn new(journal_kind: JournalKind, memtable: MemtableOptions) -> Self {
        Harness {
            dir: tempfile::tempdir().expect("tempdir"),
            journal_kind,
            memtable,
            memory_journal: Arc::new(MemoryJournal::new()),
            opts: tiny_options(),
        }
    }

    pub fn storage(&self) -> Arc<dyn Storage> {
        let mut o = SstOptions::new(self.dir.path().join("tables"));
        o.block_bytes = 1024;
        o.block_cache_bytes = 1 << 20;
        Arc::new(SstStorage::open(o).expect("sst storage"))
    }

    pub fn components(&self, storage: Arc<dyn Storage>) -> Components {
        let journal: Arc<dyn Journal> = match self.journal_kind {
            JournalKind::Memory => self.memory_journal.clone(),
            JournalKind::File { sync } => {
                let mut o = FileJournalOptions::new(self.dir.path().join("journal"));
                o.sync = sync;
                o.segment_bytes = 32 << 10;
                Arc::new(FileJournal::open(o).expect("file journal"))
            }
        };
        Components {
            journal,
            memtables: self.memtable.factory(),
            compactor: Arc::new(LocalCompactor::new(storage.clone())),
            storage,
        }
    }

    pub async fn open(&self) -> Db {
        self.open_with(self.storage()).await
    }

    pub async fn open_with(&self, storage: Arc<dyn Storage>) -> Db {
        Db::open(self.dir.path(), self.opts.clone(), self.components(storage))
            .await
            .expect("open db")
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

/// A storage decorator for fault tests: fails the next `fail_next` table creations, and
/// holds every creation while `hold` has no permits.
pub struct FaultyStorage {
    pub inner: Arc<dyn Storage>,
    pub fail_next: std::sync::atomic::AtomicUsize,
    pub hold: tokio::sync::Semaphore,
}

impl FaultyStorage {
    pub fn new(inner: Arc<dyn Storage>) -> Arc<Self> {
        Arc::new(FaultyStorage {
            inner,
            fail_next: Default::default(),
            hold: tokio::sync::Semaphore::new(tokio::sync::Semaphore::MAX_PERMITS),
        })
    }
}

#[async_trait::async_trait]
impl Storage for FaultyStorage {
    async fn create_table(
        &self,
        id: u64,
    ) -> cairn_common::Result<Box<dyn cairn_filestore::TableBuilder>> {
        drop(self.hold.acquire().await.expect("semaphore"));
        let failing = self
            .fail_next
            .fetch_update(
                std::sync::atomic::Ordering::SeqCst,
                std::sync::atomic::Ordering::SeqCst,
                |n| n.checked_sub(1),
            )
            .is_ok();
        if failing {
            return Err(cairn_common::Error::component(
                "faulty storage",
                "injected failure",
            ));
        }
        self.inner.create_table(id).await
    }
    async fn open_table(
        &self,
        meta: &cairn_common::TableMeta,
    ) -> cairn_common::Result<Arc<dyn cairn_filestore::Table>> {
        self.inner.open_table(meta).await
    }
    async fn delete_table(&self, id: u64) -> cairn_common::Result<()> {
        self.inner.delete_table(id).await
    }
    async fn list_tables(&self) -> cairn_common::Result<Vec<u64>> {
        self.inner.list_tables().await
    }
}
