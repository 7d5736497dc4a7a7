//! Builds engines from real local components for the integration tests.

#![allow(dead_code)]

use cairn_compaction::{LocalCompactor, PickerOptions};
use cairn_engine::{Components, Db, EngineOptions};
use cairn_filestore::{ParquetOptions, ParquetStorage, SstOptions, SstStorage, Storage};
use cairn_hybrid_store::{HybridOptions, HybridStore, OnSecondaryFailure};
use cairn_journal::{FileJournal, FileJournalOptions, Journal, MemoryJournal};
use cairn_memtable::MemtableOptions;
use cairn_testkit::S3Endpoint;
use std::path::Path;
use std::sync::Arc;

/// Every pair the database shows now, in key order.
pub async fn all(db: &Db) -> Vec<(bytes::Bytes, bytes::Bytes)> {
    db.scan(cairn_common::KeyRange::all())
        .await
        .unwrap()
        .collect(None)
        .await
        .unwrap()
}

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
        reader_poll_ms: 5,
        reader_max_staleness_ms: 5_000,
        table_grace_ms: 0,
        lease_ms: 1_000,
        compaction: PickerOptions {
            l0_trigger: 3,
            levels: 4,
            base_level_bytes: 48 << 10,
            level_size_ratio: 4,
            target_table_bytes: 16 << 10,
            // Jobs of 32 KiB and more run as subcompactions, on every test of the engine.
            subcompactions: 3,
        },
        ..EngineOptions::default()
    }
}

/// Which table storage the engine runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StorageKind {
    Sst,
    /// Parquet alone, in local files.
    Parquet,
    /// SSTables plus Parquet on the harness's S3 endpoint; compaction reads the Parquet copy.
    Hybrid,
}

pub struct Harness {
    pub dir: tempfile::TempDir,
    pub storage_kind: StorageKind,
    /// The S3 endpoint of the hybrid store's secondary.
    pub s3: Option<S3Endpoint>,
    pub journal_kind: JournalKind,
    pub memtable: MemtableOptions,
    /// Kept across reopens so a memory journal survives a "crash".
    pub memory_journal: Arc<MemoryJournal>,
    pub opts: EngineOptions,
    /// The compute node's data directory: `dir` itself until a take-over moves the engine to a
    /// new, empty one. The journal and the SSTable store stay in `dir` (they stand for servers);
    /// a hybrid store's primary copy is the node's own and starts empty on a new node.
    node: std::sync::Mutex<std::path::PathBuf>,
    takeovers: std::sync::atomic::AtomicU32,
}

impl Harness {
    pub fn new(journal_kind: JournalKind, memtable: MemtableOptions) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        Harness {
            node: std::sync::Mutex::new(dir.path().to_path_buf()),
            takeovers: Default::default(),
            dir,
            storage_kind: StorageKind::Sst,
            s3: None,
            journal_kind,
            memtable,
            memory_journal: Arc::new(MemoryJournal::new()),
            opts: tiny_options(),
        }
    }

    pub fn storage(&self) -> Arc<dyn Storage> {
        self.sst_in(self.dir.path())
    }

    fn sst_in(&self, dir: &Path) -> Arc<dyn Storage> {
        let mut o = SstOptions::new(dir.join("tables"));
        o.block_bytes = 1024;
        o.block_cache_bytes = 1 << 20;
        Arc::new(SstStorage::open(o).expect("sst storage"))
    }

    pub fn with_storage(mut self, kind: StorageKind) -> Self {
        self.storage_kind = kind;
        if kind == StorageKind::Hybrid {
            self.s3 = Some(S3Endpoint::start());
        }
        self
    }

    fn parquet(&self, url: String) -> Arc<dyn Storage> {
        let mut o = ParquetOptions {
            url,
            row_group_rows: 256,
            page_bytes: 2048,
            ..ParquetOptions::default()
        };
        if let Some(s3) = &self.s3 {
            o.endpoint = Some(s3.endpoint.clone());
            o.region = Some(s3.region.clone());
            o.access_key_id = Some(s3.access_key_id.clone());
            o.secret_access_key = Some(s3.secret_access_key.clone());
            o.allow_http = true;
            o.timeout_ms = 2_000;
            o.max_retries = 0;
        }
        Arc::new(ParquetStorage::open(o).expect("parquet storage"))
    }

    /// The engine's storage and the one its compactor reads through.
    pub async fn storages(&self) -> (Arc<dyn Storage>, Arc<dyn Storage>) {
        match self.storage_kind {
            StorageKind::Sst => {
                let s = self.storage();
                (s.clone(), s)
            }
            StorageKind::Parquet => {
                let s = self.parquet(format!("file://{}/parquet", self.dir.path().display()));
                (s.clone(), s)
            }
            StorageKind::Hybrid => {
                let s3 = self.s3.as_ref().expect("hybrid harness has an endpoint");
                let hybrid = HybridStore::open(
                    self.sst_in(&self.node_dir()),
                    self.parquet(s3.url("tables")),
                    HybridOptions {
                        on_secondary_failure: OnSecondaryFailure::Retry,
                        retry_initial_ms: 20,
                        retry_max_ms: 500,
                    },
                )
                .await
                .expect("hybrid store");
                (Arc::new(hybrid.clone()), Arc::new(hybrid.compaction_view()))
            }
        }
    }

    /// A store of the harness's kind for another database, `name`, beside this one's (on
    /// the same S3 endpoint for the hybrid store), and the view its compactor reads through.
    pub async fn storages_of(&self, name: &str) -> (Arc<dyn Storage>, Arc<dyn Storage>) {
        let dir = self.dir.path().join(name);
        match self.storage_kind {
            StorageKind::Sst => {
                let s = self.sst_in(&dir);
                (s.clone(), s)
            }
            StorageKind::Parquet => {
                let s = self.parquet(format!("file://{}/parquet", dir.display()));
                (s.clone(), s)
            }
            StorageKind::Hybrid => {
                let s3 = self.s3.as_ref().expect("hybrid harness has an endpoint");
                let hybrid = HybridStore::open(
                    self.sst_in(&dir),
                    self.parquet(s3.url(name)),
                    HybridOptions::default(),
                )
                .await
                .expect("hybrid store");
                (Arc::new(hybrid.clone()), Arc::new(hybrid.compaction_view()))
            }
        }
    }

    pub fn components(&self, storage: Arc<dyn Storage>) -> Components {
        self.components_with(storage.clone(), storage)
    }

    pub fn components_with(
        &self,
        storage: Arc<dyn Storage>,
        compaction_storage: Arc<dyn Storage>,
    ) -> Components {
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
            compactor: Arc::new(LocalCompactor::new(compaction_storage)),
            storage,
        }
    }

    fn node_dir(&self) -> std::path::PathBuf {
        self.node.lock().expect("node dir").clone()
    }

    /// Opens the database on a new compute node: an empty data directory (and, for the
    /// hybrid store, an empty local copy), the same journal and table store.
    pub async fn take_over(&self) -> Db {
        let n = self
            .takeovers
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let fresh = self.dir.path().join(format!("node-{n}"));
        *self.node.lock().expect("node dir") = fresh;
        self.open().await
    }

    pub fn takeovers(&self) -> u32 {
        self.takeovers.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub async fn open(&self) -> Db {
        let (storage, compaction) = self.storages().await;
        Db::open(
            self.node_dir(),
            self.opts.clone(),
            self.components_with(storage, compaction),
        )
        .await
        .expect("open db")
    }

    pub async fn open_with(&self, storage: Arc<dyn Storage>) -> Db {
        Db::open(self.dir.path(), self.opts.clone(), self.components(storage))
            .await
            .expect("open db")
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// A read replica on a data directory of its own, following the same journal and table
    /// store as the writer.
    pub async fn open_reader(&self, name: &str) -> Db {
        let node = self.dir.path().join(name);
        let storage = match self.storage_kind {
            // The hybrid store's primary is each node's own copy.
            StorageKind::Hybrid => {
                let s3 = self.s3.as_ref().expect("hybrid harness has an endpoint");
                let hybrid = HybridStore::open(
                    self.sst_in(&node),
                    self.parquet(s3.url("tables")),
                    HybridOptions::default(),
                )
                .await
                .expect("hybrid store");
                Arc::new(hybrid) as Arc<dyn Storage>
            }
            _ => self.storages().await.0,
        };
        Db::open_reader(&node, self.opts.clone(), self.components(storage))
            .await
            .expect("open reader")
    }
}
