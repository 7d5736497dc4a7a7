//! `ReplicatedShard`: a shard with read replicas (`cairn serve shard --read-only` servers
//! following it). Writes, imports and maintenance go to the shard; gets, multi-gets, scans
//! and aggregates take turns over the shard and its replicas, and a replica that fails a read
//! hands it to the shard. A replica answers at its own snapshot, which may be a poll behind
//! the shard: reads spread this way see every write acknowledged before about a poll
//! interval ago, not necessarily the caller's last one. A replica that cannot follow (its
//! polls fail) refuses reads once it is `engine.reader_max_staleness_ms` behind, so they
//! go to the shard rather than to an ever older view.

use crate::shard::{CheckpointOp, ImportStream, PairStream, Shard};
use async_trait::async_trait;
use bytes::Bytes;
use cairn_common::{AggregateState, KeyRange, Result, SeqNo, ValueType, WriteBatch};
use cairn_engine::{CheckpointInfo, DbStats};
use cairn_sql::{BatchStream, Fragment};
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

pub struct ReplicatedShard {
    primary: Arc<dyn Shard>,
    replicas: Vec<Arc<dyn Shard>>,
    turn: AtomicUsize,
}

impl ReplicatedShard {
    pub fn new(primary: Arc<dyn Shard>, replicas: Vec<Arc<dyn Shard>>) -> ReplicatedShard {
        ReplicatedShard {
            primary,
            replicas,
            turn: AtomicUsize::new(0),
        }
    }

    /// Runs a read on the next in turn; a replica's failure falls back to the shard.
    async fn read<T, F, Fut>(&self, read: F) -> Result<T>
    where
        F: Fn(Arc<dyn Shard>) -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let turn = self.turn.fetch_add(1, Ordering::Relaxed) % (self.replicas.len() + 1);
        if turn == 0 {
            return read(self.primary.clone()).await;
        }
        let replica = &self.replicas[turn - 1];
        match read(replica.clone()).await {
            Ok(v) => Ok(v),
            Err(e) => {
                tracing::warn!(replica = replica.name(), error = %e, "a read replica failed a read; asking the shard");
                read(self.primary.clone()).await
            }
        }
    }
}

#[async_trait]
impl Shard for ReplicatedShard {
    fn name(&self) -> &str {
        self.primary.name()
    }

    fn is_remote(&self) -> bool {
        self.primary.is_remote()
    }

    async fn check(&self) -> Result<()> {
        self.primary.check().await?;
        // A replica that is down or elsewhere is skipped by the reads it fails, not fatal.
        for r in &self.replicas {
            if let Err(e) = r.check().await {
                tracing::warn!(replica = r.name(), error = %e, "a read replica failed its check");
            }
        }
        Ok(())
    }

    async fn get(&self, key: &[u8]) -> Result<Option<Bytes>> {
        self.read(|s| {
            let key = Bytes::copy_from_slice(key);
            async move { s.get(&key).await }
        })
        .await
    }

    async fn multi_get(&self, keys: Vec<Bytes>) -> Result<Vec<Option<Bytes>>> {
        self.read(|s| {
            let keys = keys.clone();
            async move { s.multi_get(keys).await }
        })
        .await
    }

    async fn write(&self, batch: WriteBatch) -> Result<SeqNo> {
        self.primary.write(batch).await
    }

    async fn scan(&self, range: KeyRange, limit: Option<usize>) -> Result<PairStream> {
        self.read(|s| {
            let range = range.clone();
            async move { s.scan(range, limit).await }
        })
        .await
    }

    async fn aggregate(&self, range: KeyRange, value_type: ValueType) -> Result<AggregateState> {
        self.read(|s| {
            let range = range.clone();
            async move { s.aggregate(range, value_type).await }
        })
        .await
    }

    async fn query(&self, fragment: Fragment) -> Result<BatchStream> {
        self.read(|s| {
            let fragment = fragment.clone();
            async move { s.query(fragment).await }
        })
        .await
    }

    async fn import(&self, batches: ImportStream) -> Result<u64> {
        self.primary.import(batches).await
    }

    async fn flush(&self) -> Result<()> {
        self.primary.flush().await
    }

    async fn compact(&self) -> Result<()> {
        self.primary.compact().await
    }

    async fn stats(&self) -> Result<DbStats> {
        self.primary.stats().await
    }

    async fn checkpoint(&self, op: CheckpointOp) -> Result<Vec<CheckpointInfo>> {
        self.primary.checkpoint(op).await
    }

    async fn close(&self) -> Result<()> {
        self.primary.close().await
    }
}
