//! Cairn: an LSM-tree key-value engine whose journal, memtable, table storage and compactor
//! are separate components behind traits. This facade re-exports the pieces, reads the one
//! config file ([`Config`]) and turns it into trait objects and an open [`Db`] ([`open`]).
//!
//! Library users who bring their own components skip the config entirely and call
//! [`Db::open`] with a [`Components`] of their making (see `examples/custom_components.rs`).

mod config;
mod metrics;
pub mod serve;
mod wiring;

pub use config::{
    ClusterSection, CompactionFallback, CompactionKind, CompactionSection, Config, ConfigError,
    JournalKind, JournalSection, MapKind, MemtableKind, MemtableSection, RouterSection, RpcSection,
    ShardKind, ShardSection, StorageKind, StorageSection, check_node_id, shard_dir_name,
};
pub use metrics::{check_exposure as check_metrics_exposure, export_metrics};
pub use wiring::{components, map_store, open, open_router};

pub use cairn_common::{
    AggregateOp, AggregateState, AggregateValue, Clock, CompactionFilter, Entry, EntryKind, Error,
    FilterDecision, KeyRange, ManualClock, MergeOperator, Operators, RangeDeletes, RangeTombstone,
    Result, SeqNo, SharedClock, SystemClock, TableMeta, ValueType, WriteBatch,
};
pub use cairn_compaction::{CompactionJob, Compactor, LocalCompactor, PickerOptions};
pub use cairn_engine::{
    CheckpointInfo, Components, Db, DbIter, DbStats, EngineOptions, Isolation, LevelStats,
    Snapshot, Transaction,
};
pub use cairn_filestore::{
    Compression, FilterKind, SstOptions, SstStorage, Storage, Table, TableBuilder,
};
pub use cairn_journal::{FileJournal, FileJournalOptions, Journal, JournalClaim, MemoryJournal};
pub use cairn_memtable::{
    Memtable, MemtableFactory, MemtableOptions, ShardedMemtable, SingleLockMemtable,
};
pub use cairn_router::map::{ClusterMap, MapStore, ShardEntry, request_merge, request_split};
pub use cairn_router::{
    CheckpointOp, Cluster, GrpcShard, LocalShard, Node, PairStream, Partitioner, Router, Shard,
    ShardIdentity, ShardStats,
};
