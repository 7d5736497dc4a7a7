//! A compaction job, as the engine describes it to any compactor, local or remote, and the
//! garbage-collection rule every compactor applies to the merged versions.

use bytes::Bytes;
use cairn_common::{Entry, SeqNo, TableId, TableMeta};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompactionJob {
    /// Input tables, from any levels; their versions are merged by internal key.
    pub inputs: Vec<TableMeta>,
    pub output_level: u32,
    /// Ids the outputs must use, in order. The engine reserves more than the job can need.
    pub output_ids: Vec<TableId>,
    /// Versions newer than this may be read by a snapshot or the current state and are kept;
    /// of the versions at or below it, only the newest of each key is.
    pub oldest_snapshot: SeqNo,
    /// No older version of these keys exists below the output level, so a tombstone that no
    /// snapshot needs can go.
    pub drop_tombstones: bool,
    /// Outputs are cut once this large, between keys (a key never spans two tables).
    pub target_table_bytes: u64,
}

/// Decides, entry by entry in internal order, which versions survive a compaction.
pub struct GcFilter {
    oldest_snapshot: SeqNo,
    drop_tombstones: bool,
    current: Option<Bytes>,
    /// Whether the newest version at or below the oldest snapshot has been met for `current`.
    settled: bool,
}

impl GcFilter {
    pub fn new(oldest_snapshot: SeqNo, drop_tombstones: bool) -> Self {
        GcFilter {
            oldest_snapshot,
            drop_tombstones,
            current: None,
            settled: false,
        }
    }

    pub fn keep(&mut self, e: &Entry) -> bool {
        if self.current.as_ref() != Some(&e.key) {
            self.current = Some(e.key.clone());
            self.settled = false;
        }
        if e.seq > self.oldest_snapshot {
            return true;
        }
        if self.settled {
            return false; // shadowed for every reader
        }
        self.settled = true;
        !(e.is_delete() && self.drop_tombstones)
    }
}
