//! Compaction: `trait Compactor` runs one job (merge input tables into new tables of the
//! output level, dropping what no reader can see), and the leveled picker decides which job
//! comes next. The engine asks the picker, hands the job to whatever compactor is configured,
//! and installs the result.

pub mod grpc;
mod job;
mod local;
mod picker;
mod split;
mod versions;

#[cfg(any(test, feature = "conformance"))]
pub mod conformance;

pub use grpc::{
    DEFAULT_SLOTS, GrpcCompactor, RemoteCompactionStats, compaction_service, compaction_service_for,
};
pub use job::CompactionJob;
pub use local::LocalCompactor;
pub use picker::{LeveledPicker, Pick, PickerOptions};
pub use versions::{Rules, Survivors, VersionFilter};

use async_trait::async_trait;
use cairn_common::{Result, TableId, TableMeta};

#[async_trait]
pub trait Compactor: Send + Sync + 'static {
    /// Runs `job` and returns the output tables, already durable in the job's storage, in key
    /// order. On error, outputs written so far are deleted; the inputs are never touched.
    async fn compact(&self, job: CompactionJob) -> Result<Vec<TableMeta>>;

    /// Where the jobs running now run, for `stats`; nothing (the default) when they run in
    /// this process.
    fn placements(&self) -> Vec<Placement> {
        Vec::new()
    }
}

/// Where one attempt at a job runs: the first output id it was given, and the worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    pub first_id: TableId,
    pub worker: String,
}

#[cfg(test)]
mod tests;
