//! The version set: the manifest log (the writer's; a reader has none) and the version of
//! tables readers see, changed together and only here.
//!
//! Invariants:
//! - The stored manifest changes first, the version readers see second (`install`): a
//!   reader never sees a table the manifest does not hold, and a table the manifest drops
//!   stays readable until the new version is out.
//! - One change at a time: installs, id reservations and lease renewals queue on the log.
//! - `manifest_version` and `reserved_ids` mirror the log after every change, for `stats`
//!   and for a reader's check of whether its view moved, neither of which takes the lock.

use crate::manifest::{
    CheckpointEdit, CloneHold, Manifest, ManifestLog, NamedCheckpoint, VersionEdit,
};
use crate::version::{TableHandle, Version};
use arc_swap::ArcSwap;
use cairn_common::{Error, Result, SeqNo, TableId};
use std::collections::HashMap;
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

pub(crate) struct VersionSet {
    log: Option<tokio::sync::Mutex<ManifestLog>>,
    current: ArcSwap<Version>,
    manifest_version: AtomicU64,
    reserved_ids: AtomicU64,
    /// The manifest's `history_floor`, set before a version that needs it is out.
    history_floor: AtomicU64,
    location: String,
    database: String,
}

impl VersionSet {
    /// A writer's (with its log) or a reader's (without), starting at `version`, which
    /// manifest version `manifest_version` describes.
    pub fn new(
        log: Option<ManifestLog>,
        version: Version,
        manifest_version: u64,
        reserved_ids: TableId,
        history_floor: SeqNo,
        location: String,
        database: String,
    ) -> VersionSet {
        VersionSet {
            log: log.map(tokio::sync::Mutex::new),
            current: ArcSwap::from_pointee(version),
            manifest_version: AtomicU64::new(manifest_version),
            reserved_ids: AtomicU64::new(reserved_ids),
            history_floor: AtomicU64::new(history_floor),
            location,
            database,
        }
    }

    /// The version readers see now.
    pub fn current(&self) -> Arc<Version> {
        self.current.load_full()
    }

    /// Tables in level 0 now, without taking a reference to the version: checked on every
    /// write, for the stall.
    pub fn l0_tables(&self) -> usize {
        self.current.load().levels.first().map_or(0, Vec::len)
    }

    /// Ok for the writer; a reader changes nothing and says where changes go.
    pub fn check_writer(&self) -> Result<()> {
        self.log().map(|_| ())
    }

    pub fn is_writer(&self) -> bool {
        self.log.is_some()
    }

    fn log(&self) -> Result<&tokio::sync::Mutex<ManifestLog>> {
        self.log.as_ref().ok_or_else(|| {
            Error::InvalidArgument(format!(
                "database {} is open read-only here (a reader that follows its writer, or a checkpoint): send writes, flushes, compactions and imports to the writer",
                self.database
            ))
        })
    }

    /// `n` table ids no writer of this database ever had, reserved in the manifest.
    pub async fn reserve_table_ids(&self, n: u64) -> Result<Range<TableId>> {
        let mut log = self.log()?.lock().await;
        let ids = log.reserve_ids(n).await;
        self.mirror(&log);
        ids
    }

    /// Applies `edit` to the stored manifest, then to the version readers see. `opened` are
    /// the handles of the tables it adds, other than moved ones. Returns the handles it
    /// removed, for the caller to retire, and the tables now in level 0.
    pub async fn install(
        &self,
        edit: VersionEdit,
        opened: Vec<Arc<TableHandle>>,
    ) -> Result<(Vec<Arc<TableHandle>>, usize)> {
        let mut opened: HashMap<TableId, Arc<TableHandle>> =
            opened.into_iter().map(|h| (h.meta.id, h)).collect();
        if let Some((_, t)) = edit
            .added
            .iter()
            .find(|(_, t)| !opened.contains_key(&t.id) && !edit.removed.contains(&t.id))
        {
            return Err(Error::InvalidArgument(format!(
                "installing table {} with no open handle",
                t.id
            )));
        }
        let mut log = self.log()?.lock().await;
        let committed = log.commit(edit.clone()).await;
        self.mirror(&log);
        committed?;
        let mut v = Version::clone(&self.current.load());
        let mut removed = edit.apply_to(&mut v.levels, |h| &h.meta, |m| opened.remove(&m.id));
        // A table a checkpoint still references is not the caller's to retire.
        removed.retain(|h| !log.state().checkpoint_holds(h.meta.id));
        let l0 = v.levels.first().map_or(0, Vec::len);
        self.current.store(Arc::new(v));
        Ok((removed, l0))
    }

    /// Records a checkpoint named `name` of the tables as they are now (replacing one of
    /// that name).
    pub async fn create_checkpoint(&self, name: &str) -> Result<NamedCheckpoint> {
        let created_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let mut log = self.log()?.lock().await;
        let committed = log
            .commit(VersionEdit {
                checkpoint: Some(CheckpointEdit::Create {
                    name: name.to_string(),
                    created_ms,
                }),
                ..VersionEdit::default()
            })
            .await;
        self.mirror(&log);
        committed?;
        log.state().checkpoint(name).cloned().ok_or_else(|| {
            Error::component(
                "checkpoint",
                format!("{name} is missing after its creation"),
            )
        })
    }

    /// The checkpoint named `name`, as the writer's manifest holds it now.
    pub async fn checkpoint(&self, name: &str) -> Result<Option<NamedCheckpoint>> {
        Ok(self.log()?.lock().await.state().checkpoint(name).cloned())
    }

    /// Records that `clone` was made from checkpoint `name`; returns the manifest after.
    pub async fn hold_checkpoint(&self, name: &str, clone: CloneHold) -> Result<Manifest> {
        let mut log = self.log()?.lock().await;
        let committed = log
            .commit(VersionEdit {
                checkpoint: Some(CheckpointEdit::Hold {
                    name: name.to_string(),
                    clone,
                }),
                ..VersionEdit::default()
            })
            .await;
        self.mirror(&log);
        committed?;
        Ok(log.state().clone())
    }

    /// Deletes the checkpoint `name`; returns the tables nothing references any more, for
    /// the caller to delete. An error if there is none of that name.
    pub async fn delete_checkpoint(&self, name: &str) -> Result<Vec<TableId>> {
        let mut log = self.log()?.lock().await;
        let Some(gone) = log.state().checkpoint(name).cloned() else {
            return Err(Error::InvalidArgument(format!(
                "database {} has no checkpoint named {name:?}",
                self.database
            )));
        };
        let committed = log
            .commit(VersionEdit {
                checkpoint: Some(CheckpointEdit::Delete {
                    name: name.to_string(),
                }),
                ..VersionEdit::default()
            })
            .await;
        self.mirror(&log);
        committed?;
        let live: std::collections::HashSet<TableId> = log.state().live_ids().collect();
        let mut orphans: Vec<TableId> = gone
            .levels
            .iter()
            .flatten()
            .map(|t| t.id)
            .filter(|id| !live.contains(id))
            .collect();
        orphans.sort_unstable();
        orphans.dedup();
        Ok(orphans)
    }

    /// Renews the writer's lease with an empty version; `None` for a reader.
    pub async fn renew(&self) -> Option<Result<()>> {
        let log = self.log.as_ref()?;
        let mut log = log.lock().await;
        let renewed = log.renew().await;
        self.mirror(&log);
        Some(renewed)
    }

    /// Lets go of the writer's lease, for a writer that stops cleanly.
    pub async fn release(&self) -> Result<()> {
        let Some(log) = &self.log else {
            return Ok(());
        };
        let mut log = log.lock().await;
        let released = log.release().await;
        self.mirror(&log);
        released
    }

    /// A reader follows its writer to manifest version `manifest_version`, with the tables
    /// of `version` if they changed.
    pub fn follow(&self, version: Option<(Version, SeqNo)>, manifest_version: u64) {
        if let Some((v, floor)) = version {
            self.history_floor.fetch_max(floor, Ordering::SeqCst);
            self.current.store(Arc::new(v));
        }
        self.manifest_version
            .store(manifest_version, Ordering::Relaxed);
    }

    pub fn manifest_version(&self) -> u64 {
        self.manifest_version.load(Ordering::Relaxed)
    }

    /// See `Manifest::history_floor`. Read after taking a version, it covers every
    /// flush and compaction that version holds.
    pub fn history_floor(&self) -> SeqNo {
        self.history_floor.load(Ordering::SeqCst)
    }

    pub fn reserved_ids(&self) -> TableId {
        self.reserved_ids.load(Ordering::Relaxed)
    }

    /// Where the manifest is kept.
    pub fn location(&self) -> &str {
        &self.location
    }

    fn mirror(&self, log: &ManifestLog) {
        self.manifest_version
            .store(log.version(), Ordering::Relaxed);
        self.reserved_ids
            .store(log.state().next_table_id, Ordering::Relaxed);
        self.history_floor
            .fetch_max(log.state().history_floor, Ordering::SeqCst);
    }
}
