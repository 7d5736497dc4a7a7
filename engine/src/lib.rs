//! The Cairn LSM engine. `Db` owns the write path (journal, then memtable), the read path
//! (memtables, then tables level by level), background flushes and compactions on their own
//! runtime, the manifest, and recovery. It sees its components only through their traits:
//! `Journal`, `Memtable`, `Storage`/`Table` and `Compactor`.

mod aggregate;
mod background;
mod changes;
mod checkpoint;
mod clone;
mod completing;
mod db;
mod follow;
mod import;
mod jobs;
mod lease;
mod legacy_manifest;
mod lookup;
pub mod manifest;
mod mem_ranges;
mod metrics;
mod operators;
mod options;
mod recovery;
mod scan;
mod seq;
mod snapshot;
mod split_read;
mod stats;
mod transaction;
mod version;
mod version_set;
mod write_group;
mod write_path;

pub use checkpoint::CheckpointInfo;
pub use clone::CloneInfo;
pub use db::{Components, Db};
pub use follow::ReaderStats;
pub use import::Import;
pub use options::EngineOptions;
pub use scan::DbIter;
pub use snapshot::Snapshot;
pub use split_read::SplitRead;
pub use stats::{CompactionInProgress, DbStats, LevelStats};
pub use transaction::{Isolation, Transaction};
