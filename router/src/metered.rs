//! `MeteredShard`: a `Shard` decorator that counts, fails and times the router's calls to one
//! shard, labelled with the shard's index and the operation, so an operator sees which shard is
//! slow or failing. A scan's failure while it streams counts too.

use crate::shard::{CheckpointOp, ImportStream, PairStream, Shard};
use async_trait::async_trait;
use bytes::Bytes;
use cairn_common::{AggregateState, KeyRange, Result, SeqNo, ValueType, WriteBatch};
use cairn_engine::{CheckpointInfo, DbStats};
use cairn_sql::{BatchStream, Fragment};
use futures::StreamExt;
use metrics::{Counter, Histogram};
use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

/// One operation's handles, registered once so a call pays atomic updates only.
struct Op {
    calls: Counter,
    errors: Counter,
    seconds: Histogram,
}

impl Op {
    fn new(shard: &str, op: &'static str) -> Op {
        let l = [("shard", shard.to_string()), ("op", op.to_string())];
        Op {
            calls: metrics::counter!("cairn_router_shard_calls_total", &l),
            errors: metrics::counter!("cairn_router_shard_errors_total", &l),
            seconds: metrics::histogram!("cairn_router_shard_seconds", &l),
        }
    }

    async fn time<T>(&self, call: impl Future<Output = Result<T>>) -> Result<T> {
        let started = Instant::now();
        let out = call.await;
        self.calls.increment(1);
        self.seconds.record(started.elapsed().as_secs_f64());
        if out.is_err() {
            self.errors.increment(1);
        }
        out
    }
}

/// Records every call to `inner` under `cairn_router_shard_{calls_total,errors_total,seconds}`
/// with labels `shard` (its index in the cluster) and `op`.
pub struct MeteredShard {
    inner: Arc<dyn Shard>,
    get: Op,
    multi_get: Op,
    write: Op,
    scan: Op,
    aggregate: Op,
    query: Op,
    import: Op,
    admin: Op,
}

impl MeteredShard {
    pub fn new(index: u32, inner: Arc<dyn Shard>) -> MeteredShard {
        let s = index.to_string();
        MeteredShard {
            inner,
            get: Op::new(&s, "get"),
            multi_get: Op::new(&s, "multi_get"),
            write: Op::new(&s, "write"),
            scan: Op::new(&s, "scan"),
            aggregate: Op::new(&s, "aggregate"),
            query: Op::new(&s, "query"),
            import: Op::new(&s, "import"),
            // flush, compact, stats and close: rare, and one series is enough to see them fail.
            admin: Op::new(&s, "admin"),
        }
    }
}

#[async_trait]
impl Shard for MeteredShard {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn is_remote(&self) -> bool {
        self.inner.is_remote()
    }

    async fn check(&self) -> Result<()> {
        self.admin.time(self.inner.check()).await
    }

    async fn get(&self, key: &[u8]) -> Result<Option<Bytes>> {
        self.get.time(self.inner.get(key)).await
    }

    async fn multi_get(&self, keys: Vec<Bytes>) -> Result<Vec<Option<Bytes>>> {
        self.multi_get.time(self.inner.multi_get(keys)).await
    }

    async fn write(&self, batch: WriteBatch) -> Result<SeqNo> {
        self.write.time(self.inner.write(batch)).await
    }

    async fn scan(&self, range: KeyRange, limit: Option<usize>) -> Result<PairStream> {
        let pairs = self.scan.time(self.inner.scan(range, limit)).await?;
        let errors = self.scan.errors.clone();
        Ok(Box::pin(pairs.inspect(move |item| {
            if item.is_err() {
                errors.increment(1);
            }
        })))
    }

    async fn aggregate(&self, range: KeyRange, value_type: ValueType) -> Result<AggregateState> {
        self.aggregate
            .time(self.inner.aggregate(range, value_type))
            .await
    }

    async fn query(&self, fragment: Fragment) -> Result<BatchStream> {
        let batches = self.query.time(self.inner.query(fragment)).await?;
        let errors = self.query.errors.clone();
        Ok(Box::pin(batches.inspect(move |item| {
            if item.is_err() {
                errors.increment(1);
            }
        })))
    }

    async fn import(&self, batches: ImportStream) -> Result<u64> {
        self.import.time(self.inner.import(batches)).await
    }

    async fn flush(&self) -> Result<()> {
        self.admin.time(self.inner.flush()).await
    }

    async fn compact(&self) -> Result<()> {
        self.admin.time(self.inner.compact()).await
    }

    async fn stats(&self) -> Result<DbStats> {
        self.admin.time(self.inner.stats()).await
    }

    async fn checkpoint(&self, op: CheckpointOp) -> Result<Vec<CheckpointInfo>> {
        self.admin.time(self.inner.checkpoint(op)).await
    }

    async fn close(&self) -> Result<()> {
        self.admin.time(self.inner.close()).await
    }
}
