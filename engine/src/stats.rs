//! What `Db::stats` reports: per-level table counts and sizes, memtables, sequence numbers and
//! background-work counters. Serializable for `cairn stats --json`.

use serde::{Deserialize, Serialize};

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
