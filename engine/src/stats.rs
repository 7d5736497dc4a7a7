//! What `Db::stats` reports, and how it is gathered: per-level table counts and sizes,
//! memtables, sequence numbers, background-work counters and the compaction running now.
//! Serializable for `cairn stats --json`.

use crate::db::Db;
use serde::{Deserialize, Serialize};
use std::sync::atomic::Ordering;

impl Db {
    pub fn stats(&self) -> DbStats {
        let inner = &self.inner;
        let version = inner.versions.current();
        let mem = inner.writes.mem();
        let c = inner.jobs.counters();
        DbStats {
            database: inner.database.clone(),
            // A reader reports the epoch of the writer it follows now.
            epoch: inner.follower.as_ref().map_or(inner.epoch, |f| f.epoch()),
            manifest_version: inner.versions.manifest_version(),
            manifest_location: inner.versions.location().to_string(),
            levels: version
                .levels
                .iter()
                .enumerate()
                .map(|(level, tables)| LevelStats {
                    level,
                    tables: tables.len(),
                    bytes: tables.iter().map(|t| t.meta.size).sum(),
                    entries: tables.iter().map(|t| t.meta.entries).sum(),
                })
                .collect(),
            memtable_bytes: mem.active.approximate_bytes() as u64,
            memtable_entries: mem.active.table.len() as u64,
            immutable_memtables: mem.immutables.len(),
            last_seq: inner.writes.visible(),
            history_floor: inner.versions.history_floor(),
            next_table_id: inner.versions.reserved_ids(),
            live_snapshots: inner.snapshots.count(),
            flushes: c.flushes.load(Ordering::Relaxed),
            compactions: c.compactions.load(Ordering::Relaxed),
            split_compactions: c.split_compactions.load(Ordering::Relaxed),
            subcompactions: c.subcompactions.load(Ordering::Relaxed),
            journal_bytes: c.journal_bytes.load(Ordering::Relaxed),
            bytes_flushed: c.bytes_flushed.load(Ordering::Relaxed),
            bytes_compacted: c.bytes_compacted.load(Ordering::Relaxed),
            write_stalls: c.stalls.load(Ordering::Relaxed),
            imports: c.imports.load(Ordering::Relaxed),
            bytes_imported: c.bytes_imported.load(Ordering::Relaxed),
            background_error: inner.jobs.last_failure(),
            reader: inner.follower.as_ref().map(|f| f.stats()),
            compacting: inner
                .jobs
                .in_progress()
                .map(|c| c.shown(&inner.comps.compactor.placements())),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LevelStats {
    pub level: usize,
    pub tables: usize,
    pub bytes: u64,
    pub entries: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DbStats {
    /// The database's id, made when it was created and kept in its manifest.
    #[serde(default)]
    pub database: String,
    /// This writer's epoch: bumped by every open, so a newer open fences this one.
    #[serde(default)]
    pub epoch: u64,
    /// The newest manifest version, and where the manifest lives.
    #[serde(default)]
    pub manifest_version: u64,
    #[serde(default)]
    pub manifest_location: String,
    pub levels: Vec<LevelStats>,
    pub memtable_bytes: u64,
    pub memtable_entries: u64,
    pub immutable_memtables: usize,
    /// Newest sequence number visible to readers.
    pub last_seq: u64,
    /// The oldest sequence number a read may ask for (`Db::snapshot_at`): below it, a flush
    /// or compaction may have dropped versions.
    #[serde(default)]
    pub history_floor: u64,
    pub next_table_id: u64,
    pub live_snapshots: usize,
    pub flushes: u64,
    pub compactions: u64,
    /// Compactions run as subcompactions (`compaction.subcompactions`), and the parts they
    /// were cut into.
    #[serde(default)]
    pub split_compactions: u64,
    #[serde(default)]
    pub subcompactions: u64,
    /// Journal record bytes appended by this process (payloads, without record headers).
    pub journal_bytes: u64,
    /// Bytes of tables written by flushes and by compactions, since open.
    pub bytes_flushed: u64,
    pub bytes_compacted: u64,
    pub write_stalls: u64,
    /// Bulk imports (`Db::import`) since open, and the bytes of the tables they wrote.
    #[serde(default)]
    pub imports: u64,
    #[serde(default)]
    pub bytes_imported: u64,
    /// The last background failure, cleared by the next success.
    pub background_error: Option<String>,
    /// For a reader (`Db::open_reader`): how far behind its writer it may be.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reader: Option<crate::follow::ReaderStats>,
    /// The compaction running now, if one is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compacting: Option<CompactionInProgress>,
}

/// A compaction running now, and where each of its parts runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompactionInProgress {
    pub level: usize,
    pub output_level: usize,
    pub input_bytes: u64,
    pub running_ms: u64,
    /// Per part (one for a compaction that is not cut): the compaction server it runs on, or
    /// `None` when it runs in this process (or is between attempts).
    pub parts: Vec<Option<String>>,
}

impl DbStats {
    pub fn table_count(&self) -> usize {
        self.levels.iter().map(|l| l.tables).sum()
    }

    pub fn table_bytes(&self) -> u64 {
        self.levels.iter().map(|l| l.bytes).sum()
    }
}
