//! The one place where configuration becomes trait objects: each section's `kind` picks an
//! implementation, and the engine receives only `Arc<dyn Trait>`s.

use crate::config::{CompactionKind, Config, JournalKind, MemtableKind, StorageKind};
use cairn_common::Result;
use cairn_compaction::{Compactor, LocalCompactor};
use cairn_engine::{Components, Db};
use cairn_filestore::{SstStorage, Storage};
use cairn_journal::{FileJournal, FileJournalOptions, Journal, MemoryJournal};
use cairn_memtable::MemtableOptions;
use std::sync::Arc;

/// Builds the components `config` describes.
pub fn components(config: &Config) -> Result<Components> {
    let journal: Arc<dyn Journal> = match config.journal.kind {
        JournalKind::File => {
            let mut o = FileJournalOptions::new(config.journal_dir());
            if let Some(sync) = config.journal.sync {
                o.sync = sync;
            }
            if let Some(bytes) = config.journal.segment_bytes {
                o.segment_bytes = bytes;
            }
            Arc::new(FileJournal::open(o)?)
        }
        JournalKind::Memory => Arc::new(MemoryJournal::new()),
    };
    let memtables = match config.memtable.kind {
        MemtableKind::Sharded => MemtableOptions::Sharded {
            shards: config.memtable.shards.unwrap_or(32),
        },
        MemtableKind::SingleLock => MemtableOptions::SingleLock,
    }
    .factory();
    let storage: Arc<dyn Storage> = match config.storage.kind {
        StorageKind::Sstable => Arc::new(SstStorage::open(config.sst_options())?),
    };
    let compactor: Arc<dyn Compactor> = match config.compaction.kind {
        CompactionKind::Local => Arc::new(LocalCompactor::new(storage.clone())),
    };
    Ok(Components {
        journal,
        memtables,
        storage,
        compactor,
    })
}

/// Builds the components and opens the database under `config.data_dir`.
pub async fn open(config: &Config) -> Result<Db> {
    let comps = components(config)?;
    Db::open(&config.data_dir, config.engine_options(), comps).await
}
