//! A compaction job, as the engine describes it to any compactor, local or remote.

use bytes::Bytes;
use cairn_common::{KeyRange, Operators, RangeTombstone, SeqNo, TableId, TableMeta};
use cairn_filestore::TablesAt;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
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
    /// The database's merge operator and compaction filter, by name: the compactor runs its
    /// own registered copies, and refuses a name it does not know.
    pub merge_operator: Option<String>,
    pub compaction_filter: Option<String>,
    /// The database's clock when the job was made: expiring puts are judged against it, so
    /// a worker's clock does not matter.
    pub now_ms: u64,
    /// Inputs that live in another database's store (a clone's parent), and where: the
    /// compactor reads them there and writes its outputs to its own store.
    pub shared: Vec<TablesAt>,
    /// Only the keys from `lower` (included) to `upper` (excluded), either side open when
    /// `None`: one of the subcompactions a large job is split into, each a key range of it,
    /// run at once on different workers. Range tombstones are cut to the range, so the
    /// outputs of two subcompactions never overlap.
    pub lower: Option<Bytes>,
    pub upper: Option<Bytes>,
    /// The engine's own registry, for a compactor in its process; not sent over the wire.
    #[serde(skip)]
    pub operators: Option<Operators>,
}

impl CompactionJob {
    /// The keys this job covers.
    pub fn key_range(&self) -> KeyRange {
        KeyRange::new(self.lower.clone(), self.upper.clone())
    }

    /// `t` cut to the job's key range; `None` if nothing of it is inside.
    pub fn clip(&self, t: &RangeTombstone) -> Option<RangeTombstone> {
        let start = match &self.lower {
            Some(l) if *l > t.start => l.clone(),
            _ => t.start.clone(),
        };
        let end = match &self.upper {
            Some(u) if *u < t.end => u.clone(),
            _ => t.end.clone(),
        };
        (start < end).then(|| RangeTombstone::new(start, end, t.seq))
    }
}
