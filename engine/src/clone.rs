//! Clones: a new writable database made from a checkpoint of another, sharing its tables
//! by reference (nothing is copied). The clone's manifest lists, as `Origin`s, the tables
//! that are another database's and the store they live in; it reads them there, compacts
//! them into tables of its own, and never deletes them. The checkpoint it was made from
//! records the clone (`CloneHold`), and is not deleted or replaced while the clone's
//! manifest still references any of its tables: the one reference count, kept where each
//! database's own state is, that checkpoints, clones and shard splits share.

use crate::db::Db;
use crate::manifest::{Body, CloneHold, Manifest, NamedCheckpoint, Origin, Record};
use bytes::Bytes;
use cairn_common::{Error, Result, TableId, TableMeta};
use cairn_filestore::{SharedTables, Storage, TablesAt, Within};
use std::collections::HashSet;
use std::sync::Arc;

/// A clone, as `Db::create_clone` made it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CloneInfo {
    /// The clone's database id.
    pub database: String,
    /// Its storage, as the parent's store names it.
    pub reference: String,
    pub checkpoint: String,
    /// The tables it shares with its parent (and its parent's origins), and their size.
    pub tables: usize,
    pub bytes: u64,
}

impl Db {
    /// Makes a new database from checkpoint `checkpoint`: a clone, writable, that starts
    /// with the checkpoint's contents and shares its tables (nothing is copied, so it takes
    /// a manifest version or two whatever the size). `target` names the clone's store the
    /// way `Storage::reference` does for this database's kind of store (an SSTable
    /// directory, a Parquet URL, a database of the same storage server); it must hold no
    /// database. Open the clone with `Db::open` on a store there, with a journal of its own.
    ///
    /// The checkpoint cannot be deleted or replaced while the clone references any of its
    /// tables; once the clone's compactions have rewritten them all, it can.
    pub async fn create_clone(&self, checkpoint: &str, target: &str) -> Result<CloneInfo> {
        self.create_clone_within(checkpoint, target, &Within::default())
            .await
    }

    /// `create_clone`, for a clone that sees only the keys `within` of the checkpoint: the
    /// child of a shard split. It shares the tables that hold any of those keys and reads
    /// them clipped (`cairn_filestore::Within`), so it never shows, and its compactions never
    /// write, a key outside; writing one is the caller's to refuse.
    pub async fn create_clone_within(
        &self,
        checkpoint: &str,
        target: &str,
        within: &Within,
    ) -> Result<CloneInfo> {
        self.inner.check_writable()?;
        let _one = self.inner.checkpoint_ops.lock().await;
        let storage = &self.inner.comps.storage;
        let reference = storage.reference().ok_or_else(|| {
            Error::InvalidArgument(format!(
                "database {}: its storage cannot be shared with a clone",
                self.inner.database
            ))
        })?;
        if target == reference {
            return Err(Error::InvalidArgument(format!(
                "a clone needs a store of its own: {target} is this database's"
            )));
        }
        let Some(cp) = self.inner.versions.checkpoint(checkpoint).await? else {
            return Err(Error::InvalidArgument(format!(
                "database {} has no checkpoint named {checkpoint:?} (cairn checkpoint list shows them)",
                self.inner.database
            )));
        };
        let into = storage.open_reference(target)?;
        let manifests = into.manifests();
        if !manifests.list().await?.is_empty() || !into.list_tables().await?.is_empty() {
            return Err(Error::InvalidArgument(format!(
                "{target} is not empty: a clone goes into a store that holds no database"
            )));
        }
        // The clone must reach this store by the reference its manifest will record.
        let back = into.open_reference(&reference)?;
        let found = crate::manifest::load(back.manifests().as_ref()).await?;
        if found.as_ref().map(|l| l.state.database.as_str()) != Some(&self.inner.database) {
            return Err(Error::InvalidArgument(format!(
                "a store at {target} would not find this database at {reference}"
            )));
        }

        let database = crate::recovery::new_database_id();
        // The hold first: from here the checkpoint and its tables stay while the clone's
        // manifest references them (and a clone that never got a manifest holds nothing).
        let parent = self
            .inner
            .versions
            .hold_checkpoint(
                checkpoint,
                CloneHold {
                    database: database.clone(),
                    reference: target.to_string(),
                },
            )
            .await?;
        let state = clone_state(&parent, &cp, database.clone(), reference, within);
        let info = CloneInfo::of(&state, target, checkpoint);
        let first = Record {
            database,
            epoch: 1,
            writer: rand::random(),
            body: Body::Checkpoint(state),
            lease: None,
        };
        if !manifests.create(1, Bytes::from(first.encode()?)).await? {
            return Err(Error::InvalidArgument(format!(
                "{target}: another database was created there meanwhile"
            )));
        }
        tracing::info!(clone = %info.database, at = %target, checkpoint, tables = info.tables, "created a clone");
        Ok(info)
    }

    /// The clone of checkpoint `checkpoint` within `within` at `target`, if it was made
    /// there: a split that failed over part way finds what it made and goes on.
    pub async fn find_clone(
        &self,
        checkpoint: &str,
        target: &str,
        within: &Within,
    ) -> Result<Option<CloneInfo>> {
        self.inner.check_open()?;
        let into = self.inner.comps.storage.open_reference(target)?;
        let Some(made) = crate::manifest::load(into.manifests().as_ref()).await? else {
            return Ok(None);
        };
        let same = made.state.origins.iter().any(|o| {
            o.database == self.inner.database && o.checkpoint == checkpoint && o.within() == *within
        });
        Ok(same.then(|| CloneInfo::of(&made.state, target, checkpoint)))
    }

    /// The clones that still reference tables of checkpoint `cp`: each, and why it holds.
    pub(crate) async fn holders(&self, cp: &NamedCheckpoint) -> Result<Vec<String>> {
        let ids: HashSet<TableId> = cp.levels.iter().flatten().map(|t| t.id).collect();
        let mut held = Vec::new();
        for c in &cp.clones {
            let store = self.inner.comps.storage.open_reference(&c.reference)?;
            let loaded = crate::manifest::load(store.manifests().as_ref()).await?;
            // Gone, or another database in its place: it holds nothing.
            let Some(l) = loaded.filter(|l| l.state.database == c.database) else {
                continue;
            };
            let n = l
                .state
                .live_ids()
                .filter(|id| ids.contains(id))
                .collect::<HashSet<_>>()
                .len();
            if n > 0 {
                held.push(format!(
                    "clone {} at {} references {n} of its tables",
                    c.database, c.reference
                ));
            }
        }
        Ok(held)
    }

    /// Refuses to drop checkpoint `name` (to delete or replace it) while a clone holds it.
    pub(crate) async fn check_unheld(&self, name: &str) -> Result<()> {
        let Some(cp) = self.inner.versions.checkpoint(name).await? else {
            return Ok(());
        };
        let held = self.holders(&cp).await?;
        if held.is_empty() {
            return Ok(());
        }
        Err(Error::InvalidArgument(format!(
            "checkpoint {name:?} is held: {}; it is released once a clone's compactions have rewritten the tables it shares (or the clone is destroyed)",
            held.join("; ")
        )))
    }
}

impl CloneInfo {
    fn of(state: &Manifest, target: &str, checkpoint: &str) -> CloneInfo {
        let tables = state.levels.iter().flatten();
        CloneInfo {
            database: state.database.clone(),
            reference: target.to_string(),
            checkpoint: checkpoint.to_string(),
            tables: tables.clone().count(),
            bytes: tables.map(|t| t.size).sum(),
        }
    }
}

/// The clone's first manifest: the checkpoint's tables that hold keys `within`, and its
/// sequence number, its ids numbered after every id the parent ever reserved, and where
/// each shared table lives and which of its keys the clone sees.
fn clone_state(
    parent: &Manifest,
    cp: &NamedCheckpoint,
    database: String,
    reference: String,
    within: &Within,
) -> Manifest {
    let overlaps = |t: &TableMeta| {
        within
            .lower
            .as_deref()
            .is_none_or(|l| t.largest.as_slice() >= l)
            && within
                .upper
                .as_deref()
                .is_none_or(|u| t.smallest.as_slice() < u)
    };
    // A table wholly outside is left out; the levels keep their order without it.
    let levels: Vec<Vec<TableMeta>> = cp
        .levels
        .iter()
        .map(|l| l.iter().filter(|t| overlaps(t)).cloned().collect())
        .collect();
    let ids: Vec<TableId> = levels.iter().flatten().map(|t| t.id).collect();
    // A table the parent itself shares is its origin's, not the parent's.
    let mut origins: Vec<Origin> = parent
        .origins
        .iter()
        .map(|o| Origin {
            ids: o
                .ids
                .iter()
                .copied()
                .filter(|id| ids.contains(id))
                .collect(),
            lower: o.within().and(within).lower,
            upper: o.within().and(within).upper,
            ..o.clone()
        })
        .filter(|o| !o.ids.is_empty())
        .collect();
    let inherited: HashSet<TableId> = origins.iter().flat_map(|o| o.ids.clone()).collect();
    origins.push(Origin {
        database: parent.database.clone(),
        reference,
        checkpoint: cp.name.clone(),
        ids: ids
            .into_iter()
            .filter(|id| !inherited.contains(id))
            .collect(),
        lower: within.lower.clone(),
        upper: within.upper.clone(),
    });
    let mut state = Manifest::new(database, parent.levels.len());
    state.next_table_id = parent.next_table_id;
    state.last_seq = cp.seq;
    // The checkpoint is exact at its own number; what is older is the parent's history.
    state.history_floor = cp.seq;
    state.levels = levels;
    state.levels.resize(parent.levels.len().max(2), Vec::new());
    state.origins = origins;
    state
}

/// `storage`, reading the tables `state` shares with the databases it was cloned from where
/// they live.
pub(crate) fn shared_storage(
    storage: Arc<dyn Storage>,
    state: &Manifest,
) -> Result<Arc<dyn Storage>> {
    SharedTables::wrap(storage, &state.shared_tables())
}

/// Which of a job's `inputs` are shared tables, and where they live.
pub(crate) fn shared_inputs(shared: &[TablesAt], inputs: &[TableMeta]) -> Vec<TablesAt> {
    shared
        .iter()
        .map(|s| TablesAt {
            reference: s.reference.clone(),
            ids: s
                .ids
                .iter()
                .copied()
                .filter(|id| inputs.iter().any(|t| t.id == *id))
                .collect(),
            within: s.within.clone(),
        })
        .filter(|s| !s.ids.is_empty())
        .collect()
}
