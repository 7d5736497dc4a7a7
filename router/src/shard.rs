//! `Shard`: what a router needs of one shard, whether a `Db` in this process or a shard server
//! across the network. Object-safe, so a router holds `Arc<dyn Shard>`s and library users can
//! plug in their own.

use async_trait::async_trait;
use bytes::Bytes;
use cairn_common::{AggregateState, BoxStream, KeyRange, Result, SeqNo, ValueType, WriteBatch};
use cairn_engine::{CheckpointInfo, DbStats};
use cairn_sql::{BatchStream, Fragment};

/// What to do with a shard's named checkpoints (see `Db::create_checkpoint`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckpointOp {
    Create(String),
    Delete(String),
    List,
    /// Make a clone of checkpoint `name` in the store `into` names (`Db::create_clone`).
    Clone {
        name: String,
        into: String,
    },
}

/// Key-value pairs in key order.
pub type PairStream = BoxStream<Result<(Bytes, Bytes)>>;

/// Batches of entries to import, in any order.
pub type ImportStream = BoxStream<Result<Vec<(Bytes, Bytes)>>>;

#[async_trait]
pub trait Shard: Send + Sync {
    /// How errors and stats name it: `shard 0 (local)`, `shard 1 at http://...`.
    fn name(&self) -> &str;
    /// Whether it is served from another process.
    fn is_remote(&self) -> bool;
    /// Makes sure the shard is the one the router means (see `cluster.rs`), taking the
    /// identity if it holds none yet.
    async fn check(&self) -> Result<()>;
    async fn get(&self, key: &[u8]) -> Result<Option<Bytes>>;
    /// Values in the order of `keys`, read at one snapshot.
    async fn multi_get(&self, keys: Vec<Bytes>) -> Result<Vec<Option<Bytes>>>;
    /// Applies `batch` atomically.
    async fn write(&self, batch: WriteBatch) -> Result<SeqNo>;
    /// Live pairs of `range` at one snapshot, in key order, up to `limit`.
    async fn scan(&self, range: KeyRange, limit: Option<usize>) -> Result<PairStream>;
    /// This shard's partial aggregate of `range`.
    async fn aggregate(&self, range: KeyRange, value_type: ValueType) -> Result<AggregateState>;
    /// This shard's part of a SQL statement through the router (`cairn_sql::fragment`): its
    /// rows, or partial aggregates, as Arrow batches.
    async fn query(&self, fragment: Fragment) -> Result<BatchStream>;
    /// Bulk-loads the batches (see `Db::import`); returns the entries loaded. The shard
    /// loads all of them or, if the input fails or the call is cut off, none.
    async fn import(&self, batches: ImportStream) -> Result<u64>;
    async fn flush(&self) -> Result<()>;
    async fn compact(&self) -> Result<()>;
    async fn stats(&self) -> Result<DbStats>;
    /// Creates or deletes a named checkpoint, or does nothing (`List`); answers the
    /// checkpoints the shard holds after it, oldest first.
    async fn checkpoint(&self, op: CheckpointOp) -> Result<Vec<CheckpointInfo>>;
    /// Closes a local shard's database; a remote shard's server stays up.
    async fn close(&self) -> Result<()>;
}
