//! The manifest: which tables are live at which level, which table ids are reserved, the
//! newest sequence number in a table, the journal position up to which everything is in
//! tables, whose database this is (its id and the epoch of its current writer), and its
//! named checkpoints, each the tables of one earlier version, kept while it exists.
//!
//! It is stored where the tables are (`Storage::manifests`), as a log of numbered versions:
//! each is a [`VersionEdit`] or, every so often, a checkpoint of the whole state (see
//! `log.rs`). One `VersionEdit` changes the stored manifest and the in-memory version alike.

mod log;
mod older;
mod record;

pub use log::{CHECKPOINT_EVERY, Holder, Loaded, ManifestLog, checkpoint_at_or_above, load};
pub use record::{Body, Lease, Record};

use cairn_common::{Lsn, SeqNo, TableId, TableMeta};

#[derive(Debug, Clone, PartialEq, Eq, bincode::Encode, bincode::Decode)]
pub struct Manifest {
    /// The database's id, made once when it is created.
    pub database: String,
    /// The epoch of the writer that wrote the newest version; each open as writer bumps it.
    pub epoch: u64,
    /// Table ids below this are reserved (used, or handed out to a job): never given again.
    pub next_table_id: TableId,
    /// Every sequence number at or below this is either in a table or was never applied:
    /// what a replica may show from the tables alone. Tables may hold newer writes (a flush
    /// taken while an import held visibility back); `newest_seq` is the bound for numbering.
    pub last_seq: SeqNo,
    /// Journal records at or below this LSN are in tables and need no replay.
    pub flushed_lsn: Lsn,
    /// The journal `flushed_lsn` counts in (its id; empty before the first claim). Another
    /// journal's records are not this database's history.
    pub journal: String,
    /// `levels[0]` newest first; deeper levels sorted by smallest key.
    pub levels: Vec<Vec<TableMeta>>,
    /// Named checkpoints, oldest first. Their tables are not deleted while they exist.
    pub checkpoints: Vec<NamedCheckpoint>,
    /// For a clone: the databases whose tables it started from, and which of its tables
    /// are theirs (it never deletes those). Set when the clone is made, never changed.
    pub origins: Vec<Origin>,
    /// A read at a sequence number below this may miss versions that a flush or compaction
    /// dropped (each drops what no reader at or above its oldest snapshot can see); at or
    /// above it, every version a read needs is still there. Only goes up.
    pub history_floor: SeqNo,
}

/// Tables a clone shares with the database it was cloned from (or with that database's own
/// origins, for a clone of a clone).
#[derive(Debug, Clone, PartialEq, Eq, bincode::Encode, bincode::Decode)]
pub struct Origin {
    /// The id of the database the tables belong to.
    pub database: String,
    /// Its storage, as `Storage::reference` names it.
    pub reference: String,
    /// The checkpoint of it that keeps the tables (it refuses to delete the checkpoint while
    /// the clone references any of them).
    pub checkpoint: String,
    pub ids: Vec<TableId>,
    /// The keys `[lower, upper)` of these tables this database sees (either side open when
    /// absent): a child of a shard split sees its parent's tables only within its range.
    pub lower: Option<Vec<u8>>,
    pub upper: Option<Vec<u8>>,
}

impl Origin {
    pub fn within(&self) -> cairn_filestore::Within {
        cairn_filestore::Within {
            lower: self.lower.clone(),
            upper: self.upper.clone(),
        }
    }
}

/// A clone made from a checkpoint, which holds the checkpoint's tables while it references
/// any of them.
#[derive(Debug, Clone, PartialEq, Eq, bincode::Encode, bincode::Decode)]
pub struct CloneHold {
    /// The clone's database id.
    pub database: String,
    /// Its storage, as `Storage::reference` names it.
    pub reference: String,
}

/// A durable, named view of the database: the tables of the manifest version that created it.
#[derive(Debug, Clone, PartialEq, Eq, bincode::Encode, bincode::Decode)]
pub struct NamedCheckpoint {
    pub name: String,
    /// Milliseconds since the Unix epoch, by the creating writer's clock.
    pub created_ms: u64,
    /// The newest sequence number in its tables: what a reader of it shows.
    pub seq: SeqNo,
    pub levels: Vec<Vec<TableMeta>>,
    /// The clones made from it.
    pub clones: Vec<CloneHold>,
}

/// A change to the named checkpoints, made by a `VersionEdit`.
#[derive(Debug, Clone, PartialEq, Eq, bincode::Encode, bincode::Decode)]
pub enum CheckpointEdit {
    /// A checkpoint of the tables as this edit leaves them.
    Create {
        name: String,
        created_ms: u64,
    },
    Delete {
        name: String,
    },
    /// A clone was made from checkpoint `name`.
    Hold {
        name: String,
        clone: CloneHold,
    },
}

impl Manifest {
    pub fn new(database: String, levels: usize) -> Self {
        Manifest {
            database,
            epoch: 1,
            next_table_id: 1,
            last_seq: 0,
            flushed_lsn: 0,
            journal: String::new(),
            levels: vec![Vec::new(); levels.max(2)],
            checkpoints: Vec::new(),
            origins: Vec::new(),
            history_floor: 0,
        }
    }

    /// The newest sequence number in any table (or `last_seq`, if that is newer): a writer
    /// numbers on after it, and a journal batch at or below it is in the tables already.
    pub fn newest_seq(&self) -> SeqNo {
        self.levels
            .iter()
            .flatten()
            .map(|t| t.max_seq)
            .fold(self.last_seq, SeqNo::max)
    }

    /// Every table the database or one of its checkpoints references (a table may appear
    /// more than once).
    pub fn live_ids(&self) -> impl Iterator<Item = TableId> + '_ {
        self.levels
            .iter()
            .chain(self.checkpoints.iter().flat_map(|c| c.levels.iter()))
            .flatten()
            .map(|t| t.id)
    }

    /// Whether a checkpoint references table `id`: then it is not deleted when it leaves
    /// the levels.
    pub fn checkpoint_holds(&self, id: TableId) -> bool {
        self.checkpoints
            .iter()
            .any(|c| c.levels.iter().flatten().any(|t| t.id == id))
    }

    /// The tables of each origin that a clone's levels or checkpoints still reference:
    /// where its storage reads them (`SharedTables`).
    pub fn shared_tables(&self) -> Vec<cairn_filestore::TablesAt> {
        let live: std::collections::HashSet<TableId> = self.live_ids().collect();
        self.origins
            .iter()
            .map(|o| cairn_filestore::TablesAt {
                reference: o.reference.clone(),
                within: o.within(),
                ids: o
                    .ids
                    .iter()
                    .copied()
                    .filter(|id| live.contains(id))
                    .collect(),
            })
            .filter(|t| !t.ids.is_empty())
            .collect()
    }

    pub fn checkpoint(&self, name: &str) -> Option<&NamedCheckpoint> {
        self.checkpoints.iter().find(|c| c.name == name)
    }

    /// The state after `edit`.
    pub fn apply(&self, edit: &VersionEdit) -> Manifest {
        let mut next = self.clone();
        edit.apply_to(&mut next.levels, |t| t, |m| Some(m.clone()));
        if let Some(s) = edit.last_seq {
            next.last_seq = next.last_seq.max(s);
        }
        if let Some(l) = edit.flushed_lsn {
            next.flushed_lsn = next.flushed_lsn.max(l);
        }
        if let Some(id) = edit.next_table_id {
            next.next_table_id = next.next_table_id.max(id);
        }
        if let Some(j) = &edit.journal {
            next.journal = j.clone();
            next.flushed_lsn = edit.flushed_lsn.unwrap_or(next.flushed_lsn);
        }
        if let Some(f) = edit.history_floor {
            // A dropped version was shadowed by a newer one in a table: nothing a read at
            // or above the tables' newest number needs was dropped.
            next.history_floor = next.history_floor.max(f.min(next.newest_seq()));
        }
        match &edit.checkpoint {
            Some(CheckpointEdit::Create { name, created_ms }) => {
                next.checkpoints.retain(|c| &c.name != name);
                next.checkpoints.push(NamedCheckpoint {
                    name: name.clone(),
                    created_ms: *created_ms,
                    seq: next.newest_seq(),
                    levels: next.levels.clone(),
                    clones: Vec::new(),
                });
            }
            Some(CheckpointEdit::Delete { name }) => next.checkpoints.retain(|c| &c.name != name),
            Some(CheckpointEdit::Hold { name, clone }) => {
                if let Some(c) = next.checkpoints.iter_mut().find(|c| &c.name == name) {
                    c.clones.push(clone.clone());
                }
            }
            None => {}
        }
        next
    }
}

/// One change to the manifest: tables added and removed (a table moved between levels is
/// both), and positions that only move forward.
#[derive(Debug, Clone, Default, PartialEq, Eq, bincode::Encode, bincode::Decode)]
pub struct VersionEdit {
    /// (level, table).
    pub added: Vec<(u32, TableMeta)>,
    pub removed: Vec<TableId>,
    pub last_seq: Option<SeqNo>,
    pub flushed_lsn: Option<Lsn>,
    /// Reserves the ids below this.
    pub next_table_id: Option<TableId>,
    /// The database moves to another journal: `flushed_lsn` (required with it) then counts
    /// in that journal and may go down.
    pub journal: Option<String>,
    pub checkpoint: Option<CheckpointEdit>,
    /// The oldest snapshot a flush or compaction kept versions for: it may have dropped
    /// older ones (see `Manifest::history_floor`).
    pub history_floor: Option<SeqNo>,
}

impl VersionEdit {
    /// Applies the table changes to levels of anything that has table metadata: the stored
    /// manifest's `TableMeta`s, or the open handles readers use. A removed item whose id is
    /// added again (a move) is reused; other added items are made by `make` (`None` leaves
    /// one out: callers check beforehand that they can make every one). Returns the removed
    /// items that were not reused.
    ///
    /// Level 0 stays ordered newest first (by largest sequence number: a flush or an import
    /// goes behind the tables newer than it); deeper levels stay sorted by smallest key.
    pub fn apply_to<T>(
        &self,
        levels: &mut Vec<Vec<T>>,
        meta: impl Fn(&T) -> &TableMeta,
        mut make: impl FnMut(&TableMeta) -> Option<T>,
    ) -> Vec<T> {
        let mut removed = Vec::new();
        for level in levels.iter_mut() {
            let mut i = 0;
            while i < level.len() {
                if self.removed.contains(&meta(&level[i]).id) {
                    removed.push(level.remove(i));
                } else {
                    i += 1;
                }
            }
        }
        for (level, t) in &self.added {
            let level = *level as usize;
            if levels.len() <= level {
                levels.resize_with(level + 1, Vec::new);
            }
            let item = match removed.iter().position(|r| meta(r).id == t.id) {
                Some(i) => removed.swap_remove(i),
                None => match make(t) {
                    Some(item) => item,
                    None => continue,
                },
            };
            let l = &mut levels[level];
            if level == 0 {
                let at = l
                    .iter()
                    .position(|x| meta(x).max_seq < t.max_seq)
                    .unwrap_or(l.len());
                l.insert(at, item);
            } else {
                let at = l.partition_point(|x| meta(x).smallest <= t.smallest);
                l.insert(at, item);
            }
        }
        removed
    }

    pub fn is_empty(&self) -> bool {
        self == &VersionEdit::default()
    }
}

#[cfg(any(test, feature = "conformance"))]
pub mod conformance;

#[cfg(test)]
mod tests;
