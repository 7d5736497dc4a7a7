//! Named checkpoints: durable, read-only views of a database that share its tables (see
//! `manifest::NamedCheckpoint`). Making one is a flush and a manifest version; reading one
//! opens its tables alone; deleting one deletes the tables nothing else references.

use crate::db::{Db, Parts, assemble, lock_dir};
use crate::version::Deletion;
use crate::write_path::MemSlot;
use crate::{Components, EngineOptions};
use cairn_common::{Error, Result, SeqNo};
use parking_lot::Mutex;
use std::path::Path;
use tokio::sync::mpsc;

impl Db {
    /// Opens checkpoint `name` of the database in `comps.storage`, read-only: its tables as
    /// they were when it was made, with nothing from the journal (`comps.journal` is not
    /// read). `dir` holds only its lock. The checkpoint's tables stay until it is deleted.
    pub async fn open_checkpoint(
        dir: impl AsRef<Path>,
        opts: EngineOptions,
        mut comps: Components,
        name: &str,
    ) -> Result<Db> {
        let dir = dir.as_ref().to_path_buf();
        let ops = crate::operators::DbOperators::new(&opts)?;
        let lock_file = lock_dir(&dir)?;
        let store = comps.storage.manifests();
        let location = store.location();
        let loaded = crate::manifest::load(store.as_ref())
            .await?
            .ok_or_else(|| Error::InvalidArgument(format!("{location} holds no database")))?;
        let checkpoint = loaded.state.checkpoint(name).cloned().ok_or_else(|| {
            Error::InvalidArgument(format!(
                "database {} has no checkpoint named {name:?} (cairn checkpoint list shows them)",
                loaded.state.database
            ))
        })?;
        let mut state = loaded.state;
        state.levels = checkpoint.levels;
        state.last_seq = checkpoint.seq;
        comps.storage = crate::clone::shared_storage(comps.storage, &state)?;
        // Nothing here retires a table: the channel has no receiver.
        let deleter = mpsc::unbounded_channel().0;
        let version =
            crate::follow::open_version(&state, None, comps.storage.as_ref(), &deleter).await?;
        let inner = assemble(Parts {
            dir,
            opts,
            ops,
            active: MemSlot::new((comps.memtables)(), 0),
            comps,
            version,
            last_seq: checkpoint.seq,
            manifest_version: loaded.version,
            manifest_location: location,
            state,
            log: None,
            follower: None,
            lease: None,
            deleter,
            lock_file,
        });
        Ok(Db {
            inner,
            bg: Mutex::new(None),
        })
    }

    /// Records checkpoint `name`: a durable, read-only view of the database as it is now,
    /// which shares its tables (nothing is copied; creating one takes a flush and a manifest
    /// version, whatever the database's size). Every write acknowledged before the call is
    /// in it. A checkpoint of the same name is replaced, unless a clone holds it. Its tables
    /// are kept, even once compacted away, until it is deleted.
    pub async fn create_checkpoint(&self, name: &str) -> Result<CheckpointInfo> {
        self.inner.check_writable()?;
        check_checkpoint_name(name)?;
        let _one = self.inner.checkpoint_ops.lock().await;
        self.check_unheld(name).await?;
        self.inner.flush_all().await?;
        let made = self.inner.versions.create_checkpoint(name).await?;
        Ok(CheckpointInfo::of(&made))
    }

    /// Deletes checkpoint `name`; the tables only it referenced are deleted after
    /// `engine.table_grace_ms`, as compacted ones are. Refused while a clone made from it
    /// still references its tables (`Db::create_clone`).
    pub async fn delete_checkpoint(&self, name: &str) -> Result<()> {
        self.inner.check_writable()?;
        let _one = self.inner.checkpoint_ops.lock().await;
        self.check_unheld(name).await?;
        for id in self.inner.versions.delete_checkpoint(name).await? {
            let _ = self.inner.deleter.send(Deletion { id, was_live: true });
        }
        Ok(())
    }

    /// The database's checkpoints, oldest first, as its storage holds them now.
    pub async fn checkpoints(&self) -> Result<Vec<CheckpointInfo>> {
        self.inner.check_open()?;
        let store = self.inner.comps.storage.manifests();
        let state = crate::manifest::load(store.as_ref())
            .await?
            .map(|l| l.state.checkpoints)
            .unwrap_or_default();
        Ok(state.iter().map(CheckpointInfo::of).collect())
    }
}

/// A checkpoint, as `Db::checkpoints` lists it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CheckpointInfo {
    pub name: String,
    /// Milliseconds since the Unix epoch, by the clock of the writer that made it.
    pub created_ms: u64,
    /// The newest sequence number it holds.
    pub seq: SeqNo,
    pub tables: usize,
    /// The size of its tables (shared with the database and other checkpoints).
    pub bytes: u64,
}

impl CheckpointInfo {
    fn of(c: &crate::manifest::NamedCheckpoint) -> CheckpointInfo {
        let tables = c.levels.iter().flatten();
        CheckpointInfo {
            name: c.name.clone(),
            created_ms: c.created_ms,
            seq: c.seq,
            tables: tables.clone().count(),
            bytes: tables.map(|t| t.size).sum(),
        }
    }
}

/// A name a checkpoint may have: 1 to 200 letters, digits, `-`, `_` and `.`, so that it is
/// the same word in a shell, a URL and a file name.
fn check_checkpoint_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 200
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidArgument(format!(
            "{name:?} is not a checkpoint name: use 1 to 200 letters, digits, '-', '_' and '.'"
        )))
    }
}
