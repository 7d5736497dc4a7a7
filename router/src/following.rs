//! A router's side of a cluster map: reads the map, turns a version of it into a `Routing`
//! (each shard a client of its owner's shard service, tagged with the shard's id and
//! generation), refreshes it when a call finds it stale, and watches for new versions in the
//! background while the router lives.

use crate::cluster::ShardIdentity;
use crate::grpc::GrpcShard;
use crate::map::{ClusterMap, MapStore, ShardEntry};
use crate::metered::MeteredShard;
use crate::routing::Routing;
use crate::shard::{CheckpointOp, ImportStream, PairStream, Shard};
use arc_swap::ArcSwap;
use async_trait::async_trait;
use bytes::Bytes;
use cairn_common::{AggregateState, Error, KeyRange, Result, SeqNo, ValueType, WriteBatch};
use cairn_engine::{CheckpointInfo, DbStats};
use cairn_rpc::ClientOptions;
use cairn_sql::{BatchStream, Fragment};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::Duration;

/// The client options for a node's shard service at a URL.
pub type Connect = Box<dyn Fn(&str) -> ClientOptions + Send + Sync>;

/// A shard's id, generation and owner's URL: a client for one stays good while all three do.
type Placed = (u64, u64, String);

pub struct MapFollower {
    store: Arc<dyn MapStore>,
    connect: Connect,
    /// Clients by shard id, generation and URL, kept across versions that did not move them.
    clients: Mutex<HashMap<Placed, Arc<dyn Shard>>>,
    /// Held while the map is read for a refresh, with when the last such read began: calls
    /// that all find the same node gone read the map once between them, not once each.
    refreshing: tokio::sync::Mutex<Option<tokio::time::Instant>>,
    retry_for: Duration,
}

/// The least time between two reads of the map for refreshes.
const REFRESH_EVERY: Duration = Duration::from_millis(25);

impl MapFollower {
    /// Follows the map in `store`; a call that finds its shard moved is sent again for up to
    /// `retry_for`.
    pub fn new(store: Arc<dyn MapStore>, connect: Connect, retry_for: Duration) -> MapFollower {
        MapFollower {
            store,
            connect,
            clients: Mutex::new(HashMap::new()),
            refreshing: tokio::sync::Mutex::new(None),
            retry_for,
        }
    }

    pub fn retry_for(&self) -> Duration {
        self.retry_for
    }

    /// How long to wait before sending a call again the `attempt`-th time: short, since a
    /// shard is unavailable for a lease or a take-over and the call should go as soon as
    /// the map places it (the map read it needs is shared by every waiting call).
    pub fn backoff(&self, attempt: u32) -> Duration {
        Duration::from_millis(10u64 << attempt.min(4)).min(Duration::from_millis(100))
    }

    /// The routing of the newest map.
    pub async fn first(&self) -> Result<Routing> {
        let map = self.store.current().await?.ok_or_else(|| {
            Error::InvalidArgument(format!(
                "no cluster map at {}: start a node (`cairn serve node`) first; it creates the map",
                self.store.location()
            ))
        })?;
        self.routing_of(&map)
    }

    fn routing_of(&self, map: &ClusterMap) -> Result<Routing> {
        let mut clients = self.clients.lock();
        let mut shards = Vec::with_capacity(map.shards.len());
        let mut kept = HashMap::new();
        for s in &map.shards {
            let index = u32::try_from(s.id).map_err(|_| {
                Error::InvalidArgument(format!("shard id {} does not fit a shard tag", s.id))
            })?;
            let url = s
                .owner
                .as_ref()
                .and_then(|o| map.nodes.get(o))
                .map(|n| n.url.clone());
            let Some(url) = url else {
                shards.push(Arc::new(Unplaced::new(s)) as Arc<dyn Shard>);
                continue;
            };
            let key = (s.id, s.generation, url.clone());
            let shard = match clients.get(&key) {
                Some(c) => c.clone(),
                None => {
                    let id = ShardIdentity {
                        cluster: map.cluster,
                        index,
                        count: 0,
                        generation: s.generation,
                    };
                    let grpc = Arc::new(GrpcShard::new((self.connect)(&url), id)?);
                    Arc::new(MeteredShard::new(index, grpc)) as Arc<dyn Shard>
                }
            };
            kept.insert(key, shard.clone());
            shards.push(shard);
        }
        *clients = kept;
        Ok(Routing::ranged(map, shards))
    }

    /// Installs the newest map's routing in `routing`, unless one newer than `seen` is there
    /// already (another call refreshed it meanwhile). Failures are logged: the caller goes on
    /// with the routing it has.
    pub async fn refresh(&self, routing: &ArcSwap<Routing>, seen: u64) {
        let mut last = self.refreshing.lock().await;
        if routing.load().version > seen || last.is_some_and(|at| at.elapsed() < REFRESH_EVERY) {
            return;
        }
        *last = Some(tokio::time::Instant::now());
        metrics::counter!("cairn_router_map_refreshes_total").increment(1);
        match self.store.current().await {
            Ok(Some(map)) => self.install(routing, &map),
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, "reading the cluster map failed"),
        }
    }

    fn install(&self, routing: &ArcSwap<Routing>, map: &ClusterMap) {
        if map.version <= routing.load().version {
            return;
        }
        match self.routing_of(map) {
            Ok(r) => {
                routing.store(Arc::new(r));
                metrics::gauge!("cairn_router_map_version").set(map.version as f64);
            }
            Err(e) => {
                tracing::warn!(error = %e, version = map.version, "cannot route by the cluster map")
            }
        }
    }

    /// Follows new versions on a task of its own until the router (`routing`) is dropped.
    pub fn watch(self: Arc<Self>, routing: Weak<ArcSwap<Routing>>) {
        tokio::spawn(async move {
            loop {
                let Some(seen) = routing.upgrade().map(|r| r.load().version) else {
                    return;
                };
                match self.store.next(seen, Duration::from_secs(5)).await {
                    Ok(Some(map)) => {
                        let Some(r) = routing.upgrade() else { return };
                        let _one = self.refreshing.lock().await;
                        self.install(&r, &map);
                    }
                    Ok(None) => {}
                    Err(e) => {
                        tracing::debug!(error = %e, "watching the cluster map failed; trying again");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            }
        });
    }
}

/// A shard the map gives no node yet: every call is refused as moved, so it is sent again
/// once the map places the shard.
struct Unplaced {
    name: String,
}

impl Unplaced {
    fn new(s: &ShardEntry) -> Unplaced {
        Unplaced {
            name: format!("shard {} {} (waiting for a node)", s.id, s.range_text()),
        }
    }

    fn moved<T>(&self) -> Result<T> {
        Err(Error::Moved(format!(
            "{}: no node serves it yet",
            self.name
        )))
    }
}

#[async_trait]
impl Shard for Unplaced {
    fn name(&self) -> &str {
        &self.name
    }
    fn is_remote(&self) -> bool {
        true
    }
    async fn check(&self) -> Result<()> {
        Ok(())
    }
    async fn get(&self, _: &[u8]) -> Result<Option<Bytes>> {
        self.moved()
    }
    async fn multi_get(&self, _: Vec<Bytes>) -> Result<Vec<Option<Bytes>>> {
        self.moved()
    }
    async fn write(&self, _: WriteBatch) -> Result<SeqNo> {
        self.moved()
    }
    async fn scan(&self, _: KeyRange, _: Option<usize>) -> Result<PairStream> {
        self.moved()
    }
    async fn aggregate(&self, _: KeyRange, _: ValueType) -> Result<AggregateState> {
        self.moved()
    }
    async fn query(&self, _: Fragment) -> Result<BatchStream> {
        self.moved()
    }
    async fn import(&self, _: ImportStream) -> Result<u64> {
        self.moved()
    }
    async fn flush(&self) -> Result<()> {
        self.moved()
    }
    async fn compact(&self) -> Result<()> {
        self.moved()
    }
    async fn stats(&self) -> Result<DbStats> {
        self.moved()
    }
    async fn checkpoint(&self, _: CheckpointOp) -> Result<Vec<CheckpointInfo>> {
        self.moved()
    }
    async fn close(&self) -> Result<()> {
        Ok(())
    }
}
