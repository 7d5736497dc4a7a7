//! `HybridStore`: a `Storage` over two storages, typically SSTables on a local disk (primary)
//! and Parquet on object storage (secondary). Every table is written to both at once; point
//! lookups and scans read the primary, while analytics and compaction inputs read the
//! secondary, so bulk reads leave the latency-sensitive copy alone.
//!
//! The secondary is the durable copy (the database's manifest lives there too); the primary is
//! a cache, rebuilt from the secondary when a table is missing from it. So a table is finished
//! only once the secondary holds it: a secondary that fails either fails the write at once
//! (`fail`) or is retried first (`retry`: the table is re-uploaded from its primary copy, with
//! backoff, a few times before the write fails). Tables the secondary lacks at open (written
//! by older versions, which finished tables on the primary alone) are found by listing both and
//! uploaded in the background as soon as the engine opens them.

mod builder;
mod certify;
mod table;
mod uploader;

use async_trait::async_trait;
use cairn_common::{Error, Result, TableId, TableMeta};
use cairn_filestore::{ManifestStore, Storage, Table, TableBuilder, copy_table};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::sync::Notify;

/// What a failed secondary write does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnSecondaryFailure {
    /// The write fails (and the engine retries the flush or compaction).
    Fail,
    /// The table is re-uploaded from its primary copy, with backoff, up to
    /// [`FINISH_ATTEMPTS`] times, before the write fails.
    #[default]
    Retry,
}

/// Re-uploads a `retry` store makes before a table's write fails.
pub const FINISH_ATTEMPTS: u32 = 5;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HybridOptions {
    pub on_secondary_failure: OnSecondaryFailure,
    /// Backoff between re-upload attempts: starts here, doubles, stops growing at the max.
    pub retry_initial_ms: u64,
    pub retry_max_ms: u64,
}

impl Default for HybridOptions {
    fn default() -> Self {
        HybridOptions {
            on_secondary_failure: OnSecondaryFailure::Retry,
            retry_initial_ms: 100,
            retry_max_ms: 30_000,
        }
    }
}

/// Counters for operators and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct HybridStats {
    /// Tables the secondary does not have yet, queued for upload.
    pub pending_uploads: usize,
    pub secondary_failures: u64,
    pub reuploads: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Primary,
    Secondary,
}

pub(crate) struct Shared {
    primary: Arc<dyn Storage>,
    secondary: Arc<dyn Storage>,
    opts: HybridOptions,
    /// Tables to upload to the secondary, with the metadata to open their primary copy.
    pending: Mutex<BTreeMap<TableId, TableMeta>>,
    /// In the primary but not the secondary at open; queued when first opened.
    missing: Mutex<HashSet<TableId>>,
    wake: Notify,
    secondary_failures: AtomicU64,
    reuploads: AtomicU64,
}

impl Shared {
    fn enqueue(&self, meta: TableMeta) {
        self.pending.lock().insert(meta.id, meta);
        self.wake.notify_one();
    }

    /// Whether the secondary is known to hold `id`.
    fn secondary_has(&self, id: TableId) -> bool {
        !self.pending.lock().contains_key(&id) && !self.missing.lock().contains(&id)
    }
}

/// See the crate documentation. Cloning is cheap; clones share the upload queue.
#[derive(Clone)]
pub struct HybridStore {
    shared: Arc<Shared>,
    /// Where `Table::scan` reads: the primary, or the secondary for the compaction view.
    scans: Side,
}

impl HybridStore {
    /// Lists both storages to find tables the secondary lacks, and starts the background
    /// uploader on the current runtime.
    pub async fn open(
        primary: Arc<dyn Storage>,
        secondary: Arc<dyn Storage>,
        opts: HybridOptions,
    ) -> Result<Self> {
        let (p, s) = futures::join!(primary.list_tables(), secondary.list_tables());
        let p = p?;
        let missing = match s {
            Ok(s) => {
                let in_secondary: HashSet<TableId> = s.into_iter().collect();
                p.into_iter()
                    .filter(|id| !in_secondary.contains(id))
                    .collect()
            }
            // Unknown which tables it has: upload each again as it is opened (an overwrite
            // with the same content where it had one).
            Err(e) if opts.on_secondary_failure == OnSecondaryFailure::Retry => {
                tracing::warn!(error = %e, "secondary unavailable at open; will re-upload");
                p.into_iter().collect()
            }
            Err(e) => return Err(e),
        };
        let shared = Arc::new(Shared {
            primary,
            secondary,
            opts,
            pending: Mutex::new(BTreeMap::new()),
            missing: Mutex::new(missing),
            wake: Notify::new(),
            secondary_failures: AtomicU64::new(0),
            reuploads: AtomicU64::new(0),
        });
        tokio::spawn(uploader::run(Arc::downgrade(&shared)));
        Ok(HybridStore {
            shared,
            scans: Side::Primary,
        })
    }

    /// The same store, with table scans served by the secondary: what a compactor reads its
    /// inputs through. Writes and deletes still go to both.
    pub fn compaction_view(&self) -> HybridStore {
        HybridStore {
            shared: self.shared.clone(),
            scans: Side::Secondary,
        }
    }

    pub fn stats(&self) -> HybridStats {
        HybridStats {
            pending_uploads: self.shared.pending.lock().len(),
            secondary_failures: self.shared.secondary_failures.load(Ordering::Relaxed),
            reuploads: self.shared.reuploads.load(Ordering::Relaxed),
        }
    }

    pub fn primary(&self) -> &Arc<dyn Storage> {
        &self.shared.primary
    }

    pub fn secondary(&self) -> &Arc<dyn Storage> {
        &self.shared.secondary
    }
}

#[async_trait]
impl Storage for HybridStore {
    async fn create_table(&self, id: TableId, level: u32) -> Result<Box<dyn TableBuilder>> {
        builder::HybridBuilder::start(self.shared.clone(), id, level).await
    }

    async fn open_table(&self, meta: &TableMeta) -> Result<Arc<dyn Table>> {
        if self.shared.missing.lock().remove(&meta.id) {
            tracing::info!(table = meta.id, "secondary lacks table; queueing upload");
            self.shared.enqueue(meta.clone());
        }
        let primary = match self.shared.primary.open_table(meta).await {
            Ok(t) => t,
            Err(e) if is_missing_or_foreign(&e) => self.shared.rebuild_primary(meta, e).await?,
            Err(e) => return Err(e),
        };
        Ok(Arc::new(table::HybridTable::new(
            primary,
            self.shared.clone(),
            self.scans,
        )))
    }

    async fn delete_table(&self, id: TableId) -> Result<()> {
        self.shared.pending.lock().remove(&id);
        self.shared.missing.lock().remove(&id);
        let (p, s) = futures::join!(
            self.shared.primary.delete_table(id),
            self.shared.secondary.delete_table(id)
        );
        match s {
            // An orphaned secondary copy is harmless (ids are never reused) and is deleted at
            // a later open, when listing finds it again.
            Err(e) if self.shared.opts.on_secondary_failure == OnSecondaryFailure::Retry => {
                tracing::warn!(table = id, error = %e, "deleting the secondary copy failed");
                p
            }
            s => p.and(s),
        }
    }

    /// The secondary's: it is the durable copy (the primary is a cache that a lost disk
    /// takes with it).
    fn manifests(&self) -> Arc<dyn ManifestStore> {
        self.shared.secondary.manifests()
    }

    /// The secondary's, for the same reason: a clone on another node reads its parent's
    /// tables from the durable copy, since the primary is on the parent's disk.
    fn reference(&self) -> Option<String> {
        self.shared.secondary.reference()
    }

    fn open_reference(&self, reference: &str) -> Result<Arc<dyn Storage>> {
        self.shared.secondary.open_reference(reference)
    }

    async fn list_tables(&self) -> Result<Vec<TableId>> {
        let (p, s) = futures::join!(
            self.shared.primary.list_tables(),
            self.shared.secondary.list_tables()
        );
        let mut p = p?;
        match s {
            Ok(s) => p.extend(s),
            // The primary's list is the engine's truth; the secondary's orphans wait for the
            // next listing.
            Err(e) if self.shared.opts.on_secondary_failure == OnSecondaryFailure::Retry => {
                tracing::warn!(error = %e, "secondary unavailable; listing the primary only");
            }
            Err(e) => return Err(e),
        }
        p.sort_unstable();
        p.dedup();
        Ok(p)
    }
}

/// A primary copy that is not there (a new disk, a new node), or that is not this table (a
/// file of the same id left by another database, which its size check gives away).
fn is_missing_or_foreign(e: &Error) -> bool {
    match e {
        Error::Io { source, .. } => source.kind() == std::io::ErrorKind::NotFound,
        Error::Corruption { .. } => true,
        _ => false,
    }
}

impl Shared {
    /// The primary is a cache of the secondary: a table it lacks is copied back from the
    /// secondary, checked against the manifest's metadata, and opened.
    async fn rebuild_primary(&self, meta: &TableMeta, why: Error) -> Result<Arc<dyn Table>> {
        tracing::info!(table = meta.id, why = %why, "rebuilding the primary copy from the secondary");
        let copy = async {
            let source = self.secondary.open_table(meta).await?;
            self.primary.delete_table(meta.id).await?;
            // A table's level is not in its metadata: the copy takes level 0's encoding.
            let built = copy_table(self.primary.as_ref(), meta.id, 0, source.as_ref()).await?;
            let same = built.entries == meta.entries
                && built.smallest == meta.smallest
                && built.largest == meta.largest
                && built.min_seq == meta.min_seq
                && built.max_seq == meta.max_seq;
            if !same {
                let _ = self.primary.delete_table(meta.id).await;
                return Err(Error::corruption(
                    format!("table {}", meta.id),
                    format!(
                        "the secondary's copy does not match the manifest: {built:?} against {meta:?}"
                    ),
                ));
            }
            // The rebuilt file may differ in size from the lost one (other block settings).
            self.primary.open_table(&built).await
        };
        copy.await.map_err(|e| {
            Error::component(
                format!("hybrid store, table {}", meta.id),
                format!("the primary copy is unusable ({why}) and rebuilding it from the secondary failed: {e}"),
            )
        })
    }
}

#[cfg(test)]
mod tests;
