//! `Router`: one keyspace over many shards. Each operation goes where it is cheapest: a key
//! to its one shard (a direct call for a local shard, one RPC for a remote one), a batch split
//! per shard, a multi-get as one batched call per shard, scans and aggregates to every shard
//! at once, merged (scans, in key order) or combined (aggregates, from one partial per shard).
//!
//! Which shards there are and which keys each holds is a `Routing`: a fixed list (keys by
//! hash), or one version of a cluster map (keys by range). A router that follows a map
//! (`following.rs`) swaps in a new routing when the map changes, and when a call finds its
//! map stale it refreshes and sends the call again: a read freely, a write only when the
//! answer proves it was not applied (`Error::not_applied`).

use crate::cluster::Cluster;
use crate::following::MapFollower;
use crate::query::RoutedShards;
use crate::routing::Routing;
use crate::shard::{CheckpointOp, ImportStream, PairStream, Shard};
use arc_swap::ArcSwap;
use bytes::Bytes;
use cairn_common::{
    AggregateState, Entry, EntryKind, Error, KeyRange, Result, ValueType, WriteBatch, merge_sorted,
};
use cairn_engine::{CheckpointInfo, DbStats};
use cairn_filestore::ValueColumns;
use cairn_sql::datafusion::arrow::array::RecordBatch;
use futures::{Stream, StreamExt, TryStreamExt};
use std::future::Future;
use std::sync::Arc;

/// Entries an import hands a shard at a time.
const IMPORT_BATCH: usize = 4096;
/// Batches an import queues for each shard before the input waits for the slowest shard.
const IMPORT_QUEUE: usize = 4;

pub struct Router {
    routes: Routes,
    cluster: Option<Cluster>,
}

/// Where a router's routing comes from.
enum Routes {
    /// Set at open for good: calls borrow it, so a call costs no shared reference count.
    Fixed(Arc<Routing>),
    /// The map's newest version, swapped in by the follower.
    Following {
        current: Arc<ArcSwap<Routing>>,
        follower: Arc<MapFollower>,
    },
}

/// The routing one call uses.
enum RoutingRef<'a> {
    Fixed(&'a Routing),
    Current(Arc<Routing>),
}

impl std::ops::Deref for RoutingRef<'_> {
    type Target = Routing;

    fn deref(&self) -> &Routing {
        match self {
            RoutingRef::Fixed(r) => r,
            RoutingRef::Current(r) => r,
        }
    }
}

/// Whether a failed call may be sent again after the map is refreshed.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Resend {
    /// A read: whenever it failed for want of the right shard (moved, or its node
    /// unreachable).
    Freely,
    /// A write: only when it was certainly not applied.
    IfNotApplied,
}

/// One shard's stats, or why they could not be had.
pub struct ShardStats {
    pub shard: String,
    pub stats: Result<DbStats>,
}

impl Router {
    /// A router over `shards`, listed in the cluster's order. Each shard is checked to be the
    /// one its position says (see `cluster.rs`); a shard that is another is refused, and one
    /// that cannot be reached now is checked by every call that reaches it later.
    pub async fn open(cluster: Cluster, shards: Vec<Arc<dyn Shard>>) -> Result<Router> {
        if shards.len() != cluster.shards as usize {
            return Err(Error::InvalidArgument(format!(
                "the cluster has {} shards, and {} were given",
                cluster.shards,
                shards.len()
            )));
        }
        let checks = futures::future::join_all(shards.iter().map(|s| s.check())).await;
        for (shard, check) in shards.iter().zip(checks) {
            match check {
                Ok(()) => {}
                Err(e @ (Error::InvalidArgument(_) | Error::Corruption { .. })) => {
                    // Local shards were opened for this router: close them, not abandon them.
                    for s in &shards {
                        if let Err(c) = s.close().await {
                            tracing::warn!(shard = s.name(), error = %c, "closing after a refused open");
                        }
                    }
                    return Err(e);
                }
                Err(e) => tracing::warn!(
                    shard = shard.name(),
                    error = %e,
                    "shard unreachable at open; every call to it checks its identity"
                ),
            }
        }
        Ok(Router {
            routes: Routes::Fixed(Arc::new(Routing::hashed(cluster.shards, shards))),
            cluster: Some(cluster),
        })
    }

    /// A router over one shard that is the whole database: an unsharded profile.
    pub fn single(shard: Arc<dyn Shard>) -> Router {
        Router {
            routes: Routes::Fixed(Arc::new(Routing::hashed(1, vec![shard]))),
            cluster: None,
        }
    }

    /// A router that follows the cluster map `follower` reads, starting from its newest
    /// version, and keeps following it in the background while the router lives.
    pub async fn following(follower: MapFollower) -> Result<Router> {
        let follower = Arc::new(follower);
        let current = Arc::new(ArcSwap::from_pointee(follower.first().await?));
        follower.clone().watch(Arc::downgrade(&current));
        Ok(Router {
            routes: Routes::Following { current, follower },
            cluster: None,
        })
    }

    /// The shards of the current routing, in its order.
    pub fn shards(&self) -> Vec<Arc<dyn Shard>> {
        self.routing_ref().shards.clone()
    }

    /// The routing calls use now.
    pub fn routing(&self) -> Arc<Routing> {
        match &self.routes {
            Routes::Fixed(r) => r.clone(),
            Routes::Following { current, .. } => current.load_full(),
        }
    }

    fn routing_ref(&self) -> RoutingRef<'_> {
        match &self.routes {
            Routes::Fixed(r) => RoutingRef::Fixed(r),
            Routes::Following { current, .. } => RoutingRef::Current(current.load_full()),
        }
    }

    pub fn cluster(&self) -> Option<&Cluster> {
        self.cluster.as_ref()
    }

    /// The shard that holds `key`, by its position in the current routing.
    pub fn shard_of(&self, key: &[u8]) -> usize {
        self.routing_ref().shard_of(key)
    }

    /// Runs `call` on the current routing; for a router that follows a map, a call that
    /// found the map stale is sent again on a refreshed one, within the follower's retry
    /// bound, as `resend` allows.
    async fn routed<'a, T, F, Fut>(&'a self, resend: Resend, call: F) -> Result<T>
    where
        F: Fn(RoutingRef<'a>) -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let Routes::Following { current, follower } = &self.routes else {
            return call(self.routing_ref()).await;
        };
        let deadline = tokio::time::Instant::now() + follower.retry_for();
        let mut attempt = 0u32;
        loop {
            let routing = current.load_full();
            let err = match call(RoutingRef::Current(routing.clone())).await {
                Ok(v) => return Ok(v),
                Err(e) => e,
            };
            let stale = err.not_applied() || matches!(err, Error::Component { .. });
            if !stale {
                return Err(err);
            }
            // Whatever happens to this call, the next ones should not meet the same node.
            follower.refresh(current, routing.version).await;
            let again = err.not_applied() || resend == Resend::Freely;
            if !again || tokio::time::Instant::now() >= deadline {
                return Err(err);
            }
            metrics::counter!("cairn_router_resends_total").increment(1);
            tracing::debug!(error = %err, attempt, "sending a call again on a refreshed map");
            tokio::time::sleep(follower.backoff(attempt)).await;
            attempt += 1;
        }
    }

    pub async fn get(&self, key: &[u8]) -> Result<Option<Bytes>> {
        self.routed(Resend::Freely, |r| async move {
            r.shards[r.shard_of(key)].get(key).await
        })
        .await
    }

    pub async fn put(&self, key: impl Into<Bytes>, value: impl Into<Bytes>) -> Result<()> {
        let mut b = WriteBatch::new();
        b.put(key, value);
        self.write(b).await
    }

    /// A merge operand for `key`, folded by its shard's merge operator (every shard's
    /// database names the same one in its configuration).
    pub async fn merge(&self, key: impl Into<Bytes>, operand: impl Into<Bytes>) -> Result<()> {
        let mut b = WriteBatch::new();
        b.merge(key, operand);
        self.write(b).await
    }

    pub async fn delete(&self, key: impl Into<Bytes>) -> Result<()> {
        let mut b = WriteBatch::new();
        b.delete(key);
        self.write(b).await
    }

    /// Deletes every key in `[start, end)`. Keys are spread over the shards by hash, so the
    /// tombstone goes to every shard, each applying it atomically (see `write`).
    pub async fn delete_range(&self, start: impl Into<Bytes>, end: impl Into<Bytes>) -> Result<()> {
        let mut b = WriteBatch::new();
        b.delete_range(start, end);
        self.write(b).await
    }

    /// Applies `batch`: atomically when its keys are on one shard. A batch that spans shards
    /// is split, and each shard applies its part atomically, all at once; if one shard fails,
    /// the parts of the others may be applied (the error names the shard that failed). A
    /// range delete spans every shard.
    pub async fn write(&self, batch: WriteBatch) -> Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        let r = self.routing_ref();
        let first = r.shard_of(&batch.ops()[0].key);
        let on_one = r.shards.len() == 1
            || batch
                .ops()
                .iter()
                .all(|op| op.kind != EntryKind::RangeDelete && r.shard_of(&op.key) == first);
        if on_one && let RoutingRef::Fixed(fixed) = &r {
            return fixed.shards[first].write(batch).await.map(|_| ());
        }
        if on_one {
            // Each send needs a batch of its own; a clone shares the keys and values.
            return self
                .routed(Resend::IfNotApplied, |r| {
                    let batch = batch.clone();
                    async move {
                        r.shards[r.shard_of(&batch.ops()[0].key)]
                            .write(batch)
                            .await
                            .map(|_| ())
                    }
                })
                .await;
        }
        // A batch across shards is sent once, split by the routing of the moment: resending
        // only the parts that moved would need each part's own retry.
        let n = r.shards.len();
        let mut parts: Vec<WriteBatch> = (0..n).map(|_| WriteBatch::new()).collect();
        for op in batch.into_ops() {
            if op.kind == EntryKind::RangeDelete {
                for part in &mut parts {
                    part.delete_range(op.key.clone(), op.value.clone());
                }
                continue;
            }
            parts[r.shard_of(&op.key)].push(op);
        }
        let writes = parts
            .into_iter()
            .enumerate()
            .filter(|(_, b)| !b.is_empty())
            .map(|(i, b)| r.shards[i].write(b));
        // Every part runs to its end even when another fails: a write abandoned midway would
        // leave its outcome unknown.
        let done = futures::future::join_all(writes).await;
        let result = done.into_iter().try_for_each(|r| r.map(|_| ()));
        if let (Err(_), Routes::Following { current, follower }) = (&result, &self.routes) {
            follower.refresh(current, r.version).await;
        }
        result
    }

    /// The values of `keys`, in their order: one batched call per shard, all shards at once.
    /// Each shard reads its keys at one snapshot of its own.
    pub async fn multi_get(&self, keys: &[Bytes]) -> Result<Vec<Option<Bytes>>> {
        self.routed(Resend::Freely, |r| multi_get_on(r, keys)).await
    }

    /// Live pairs of `range` in key order, up to `limit`: every shard streams its part at
    /// once, and the streams are merged as they are read, so memory stays bounded by each
    /// stream's buffer whatever the range holds. Each shard reads at a snapshot of its own.
    pub async fn scan(&self, range: KeyRange, limit: Option<usize>) -> Result<PairStream> {
        let streams = self.open_scans(range, limit).await?;
        if streams.len() == 1 {
            return Ok(streams.into_iter().next().unwrap_or_else(empty));
        }
        // Shards hold disjoint keys, so the merge by key never meets a tie.
        let as_entries = streams
            .into_iter()
            .map(|s| {
                Box::pin(s.map_ok(|(key, value)| Entry {
                    key,
                    seq: 0,
                    kind: EntryKind::Put,
                    value,
                })) as cairn_common::BoxStream<Result<Entry>>
            })
            .collect();
        let merged = merge_sorted(as_entries).map_ok(|e| (e.key, e.value));
        Ok(match limit {
            Some(l) => Box::pin(merged.take(l)),
            None => Box::pin(merged),
        })
    }

    /// Every live pair of `range`, from all shards at once, in no particular order: a full
    /// scan's scatter-gather, as fast as the shards deliver.
    pub async fn scan_unordered(&self, range: KeyRange) -> Result<PairStream> {
        let streams = self.open_scans(range, None).await?;
        Ok(Box::pin(futures::stream::select_all(streams)))
    }

    /// Opens the scans of the shards `range` may reach. A stream that breaks later ends
    /// with its error: a scan is not resumed on another owner.
    async fn open_scans(&self, range: KeyRange, limit: Option<usize>) -> Result<Vec<PairStream>> {
        self.routed(Resend::Freely, |r| {
            let range = range.clone();
            async move {
                let opens = r
                    .overlapping(&range)
                    .map(|i| r.shards[i].scan(range.clone(), limit));
                futures::future::try_join_all(opens).await
            }
        })
        .await
    }

    /// count, sum, min, max and avg of `range`, pushed down: each shard folds its own part
    /// (inside its tables, see `Db::aggregate`) and only one partial result per shard comes
    /// back to be combined.
    pub async fn aggregate(
        &self,
        range: KeyRange,
        value_type: ValueType,
    ) -> Result<AggregateState> {
        self.routed(Resend::Freely, |r| {
            let range = range.clone();
            async move {
                let parts = r
                    .overlapping(&range)
                    .map(|i| r.shards[i].aggregate(range.clone(), value_type));
                let mut total = AggregateState::new(value_type);
                for part in futures::future::try_join_all(parts).await? {
                    total.merge(&part);
                }
                Ok(total)
            }
        })
        .await
    }

    /// Runs SQL statement `sql` over the table `kv` (`key`, `value` and the `columns` its
    /// values declare) of every shard `sql`'s key conditions may reach, and collects the
    /// result. Each shard computes its part of the plan (its rows, filtered and projected, up
    /// to the first partial aggregate: see `cairn_sql::fragment`) and the router the rest.
    /// Each shard reads at a snapshot of its own.
    pub async fn sql(&self, sql: &str, columns: &ValueColumns) -> Result<Vec<RecordBatch>> {
        self.routed(Resend::Freely, |_| async {
            let shards = Arc::new(RoutedShards(self.routing()));
            cairn_sql::distributed::query(shards, columns, sql)
                .await
                .map_err(cairn_sql::into_error)
        })
        .await
    }

    /// The same aggregate the slow way, every row pulled to the router and folded here; kept
    /// to check and measure the pushdown against.
    pub async fn aggregate_by_scan(
        &self,
        range: KeyRange,
        value_type: ValueType,
    ) -> Result<AggregateState> {
        let mut rows = self.scan_unordered(range).await?;
        let mut total = AggregateState::new(value_type);
        while let Some((_, v)) = rows.try_next().await? {
            total.add(&v);
        }
        Ok(total)
    }

    /// Bulk-loads `entries` (any order; of repeated keys the last wins): split by shard and
    /// loaded into every shard at once, each building tables past its journal and memtable
    /// (`Db::import`). The input waits when a shard falls behind. Returns the entries loaded.
    /// Each shard loads all of its part or none of it; across shards the import is not
    /// atomic, and an import that fails may leave the parts of the shards that completed.
    /// Through a router that follows a cluster map, an import starts on the shards' current
    /// owners; a shard that moves, splits or merges while the import runs fails its part
    /// (loading all of it or none), and the import returns that error.
    pub async fn import<S>(&self, entries: S) -> Result<u64>
    where
        S: Stream<Item = Result<(Bytes, Bytes)>> + Send,
    {
        // One routing for the whole import: a shard that moves meanwhile fails its part.
        // A router that follows a map first has every shard's owner confirm it (a stale
        // map is refreshed and confirmed again), so an import starts on current owners.
        let r = match &self.routes {
            Routes::Fixed(_) => self.routing_ref(),
            Routes::Following { .. } => {
                self.routed(Resend::Freely, |r| async move {
                    let owners = futures::future::join_all(r.shards.iter().map(|s| s.stats()));
                    owners.await.into_iter().collect::<Result<Vec<_>>>()?;
                    Ok(r)
                })
                .await?
            }
        };
        let n = r.shards.len();
        let mut senders = Vec::with_capacity(n);
        let mut loads = Vec::with_capacity(n);
        for shard in &r.shards {
            let (tx, rx) = tokio::sync::mpsc::channel::<Result<Vec<(Bytes, Bytes)>>>(IMPORT_QUEUE);
            senders.push(tx);
            let batches: ImportStream = Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx));
            let shard = shard.clone();
            // Each shard loads on a task of its own, so local shards build tables in parallel.
            loads.push(tokio::spawn(async move { shard.import(batches).await }));
        }
        let split = async {
            let mut buffers: Vec<Vec<(Bytes, Bytes)>> = vec![Vec::new(); n];
            let mut entries = std::pin::pin!(entries);
            while let Some(e) = entries.next().await {
                let (k, v) = match e {
                    Ok(kv) => kv,
                    Err(e) => {
                        // Ends every shard's stream with the error, so none loads the rest.
                        for tx in &senders {
                            let _ = tx.send(Err(Error::component("import input", &e))).await;
                        }
                        return Err(e);
                    }
                };
                let s = r.shard_of(&k);
                buffers[s].push((k, v));
                if buffers[s].len() >= IMPORT_BATCH {
                    let batch = std::mem::take(&mut buffers[s]);
                    if senders[s].send(Ok(batch)).await.is_err() {
                        // The shard's load ended early; its error is reported below.
                        return Ok(());
                    }
                }
            }
            for (s, batch) in buffers.into_iter().enumerate() {
                if !batch.is_empty() && senders[s].send(Ok(batch)).await.is_err() {
                    return Ok(());
                }
            }
            Ok(())
        };
        let split: Result<()> = split.await;
        drop(senders);
        let mut loaded = 0;
        let mut first_error = split.err();
        for (shard, load) in r.shards.iter().zip(loads) {
            match load.await {
                Ok(Ok(n)) => loaded += n,
                Ok(Err(e)) => {
                    first_error.get_or_insert(e);
                }
                Err(join) => {
                    first_error.get_or_insert(Error::component(shard.name(), join));
                }
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(loaded),
        }
    }

    /// Flushes every shard's memtable, all at once; each runs to its end, and the first
    /// failure is returned.
    pub async fn flush(&self) -> Result<()> {
        let r = self.routing_ref();
        first_error(futures::future::join_all(r.shards.iter().map(|s| s.flush())).await)
    }

    /// Compacts every shard, all at once, like `flush`.
    pub async fn compact(&self) -> Result<()> {
        let r = self.routing_ref();
        first_error(futures::future::join_all(r.shards.iter().map(|s| s.compact())).await)
    }

    /// Runs `op` on every shard, all at once: each shard's checkpoint is its own point in
    /// time (a checkpoint across shards is not atomic). Answers each shard's checkpoints, in
    /// shard order; the first error if any shard failed.
    /// A clone's `into` names one store per shard: with several shards it must hold
    /// `{shard}`, which becomes each shard's index.
    pub async fn checkpoint(&self, op: CheckpointOp) -> Result<Vec<Vec<CheckpointInfo>>> {
        let r = self.routing_ref();
        if let CheckpointOp::Clone { into, .. } = &op
            && r.shards.len() > 1
            && !into.contains("{shard}")
        {
            return Err(Error::InvalidArgument(format!(
                "{} shards need a store each for their clones: put {{shard}} in {into:?}",
                r.shards.len()
            )));
        }
        let calls = r.shards.iter().enumerate().map(|(i, s)| {
            let op = match &op {
                CheckpointOp::Clone { name, into } => CheckpointOp::Clone {
                    name: name.clone(),
                    into: into.replace("{shard}", &i.to_string()),
                },
                op => op.clone(),
            };
            s.checkpoint(op)
        });
        futures::future::join_all(calls).await.into_iter().collect()
    }

    /// Every shard's stats, in shard order; a shard that cannot answer has its error.
    pub async fn stats(&self) -> Vec<ShardStats> {
        let r = self.routing_ref();
        let all = futures::future::join_all(r.shards.iter().map(|s| s.stats())).await;
        r.shards
            .iter()
            .zip(all)
            .map(|(s, stats)| ShardStats {
                shard: s.name().to_string(),
                stats,
            })
            .collect()
    }

    /// Closes the local shards (flushing them); remote shards stay up.
    pub async fn close(&self) -> Result<()> {
        let r = self.routing_ref();
        first_error(futures::future::join_all(r.shards.iter().map(|s| s.close())).await)
    }
}

/// `Router::multi_get` on one routing: one batched call per shard, all shards at once.
async fn multi_get_on(r: RoutingRef<'_>, keys: &[Bytes]) -> Result<Vec<Option<Bytes>>> {
    let n = r.shards.len();
    if n == 1 {
        return r.shards[0].multi_get(keys.to_vec()).await;
    }
    let mut groups: Vec<(Vec<usize>, Vec<Bytes>)> = vec![(Vec::new(), Vec::new()); n];
    for (i, k) in keys.iter().enumerate() {
        let g = &mut groups[r.shard_of(k)];
        g.0.push(i);
        g.1.push(k.clone());
    }
    let calls = groups
        .into_iter()
        .enumerate()
        .filter(|(_, g)| !g.0.is_empty())
        .map(|(s, (at, ks))| {
            let shard = &r.shards[s];
            async move { Ok::<_, Error>((at, shard.multi_get(ks).await?)) }
        });
    let mut out = vec![None; keys.len()];
    for (at, values) in futures::future::try_join_all(calls).await? {
        for (i, v) in at.into_iter().zip(values) {
            out[i] = v;
        }
    }
    Ok(out)
}

fn first_error(all: Vec<Result<()>>) -> Result<()> {
    all.into_iter().collect()
}

fn empty() -> PairStream {
    Box::pin(futures::stream::empty())
}
