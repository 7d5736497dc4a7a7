//! The one place where configuration becomes trait objects: each section's `kind` picks an
//! implementation, and the engine receives only `Arc<dyn Trait>`s.

use crate::config::{
    CompactionKind, Config, JournalKind, MemtableKind, StorageKind, StorageSection,
};
use cairn_common::Result;
use cairn_compaction::{Compactor, LocalCompactor};
use cairn_engine::{Components, Db};
use cairn_filestore::{ParquetStorage, SstStorage, Storage};
use cairn_hybrid_store::HybridStore;
use cairn_journal::{FileJournal, FileJournalOptions, Journal, MemoryJournal};
use cairn_memtable::MemtableOptions;
use std::sync::Arc;

/// The table storage a section describes, and the view its compactor reads through (the
/// same storage, except a hybrid store's compaction view, which reads the secondary).
pub async fn storage(
    section: &StorageSection,
    data_dir: &std::path::Path,
) -> Result<(Arc<dyn Storage>, Arc<dyn Storage>)> {
    let leaf = |s: &StorageSection, sub: &str| -> Result<Arc<dyn Storage>> {
        Ok(match s.kind {
            StorageKind::Sstable => Arc::new(SstStorage::open(s.sst_options_in(data_dir, sub))?),
            StorageKind::Parquet => Arc::new(ParquetStorage::open(s.parquet_options(data_dir))?),
            StorageKind::Hybrid => {
                return Err(cairn_common::Error::InvalidArgument(
                    "a hybrid storage cannot nest another hybrid storage".into(),
                ));
            }
        })
    };
    match section.kind {
        StorageKind::Hybrid => {
            fn half<'a>(
                h: &'a Option<Box<StorageSection>>,
                name: &str,
            ) -> Result<&'a StorageSection> {
                h.as_deref().ok_or_else(|| {
                    cairn_common::Error::InvalidArgument(format!(
                        "a hybrid storage needs a [storage.{name}] section"
                    ))
                })
            }
            let primary = leaf(half(&section.primary, "primary")?, "tables")?;
            let secondary = leaf(half(&section.secondary, "secondary")?, "secondary")?;
            let store = HybridStore::open(primary, secondary, section.hybrid_options()).await?;
            Ok((Arc::new(store.clone()), Arc::new(store.compaction_view())))
        }
        _ => {
            let s = leaf(section, "tables")?;
            Ok((s.clone(), s))
        }
    }
}

/// Builds the components `config` describes.
pub async fn components(config: &Config) -> Result<Components> {
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
    let (storage, compaction_storage) = storage(&config.storage, &config.data_dir).await?;
    let compactor: Arc<dyn Compactor> = match config.compaction.kind {
        CompactionKind::Local => Arc::new(LocalCompactor::new(compaction_storage)),
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
    let comps = components(config).await?;
    Db::open(&config.data_dir, config.engine_options(), comps).await
}
