//! A node of a cluster placed by a map (`cairn serve node`). It joins the map, holds a lease,
//! opens as their writer the shards the map gives it (a take-over with epochs, so a previous
//! owner is fenced), serves them through the shard service (`ShardHost`), closes the ones the
//! map takes away, hands over the ones it is asked to move, and proposes placement edits
//! (`placement.rs`) like every other live node; the map's compare-and-swap lets one through.
//!
//! A node answers for its shards only while its lease is trusted: a renewal that began less
//! than `TRUST` of the lease ago succeeded. Others take its shards only once they see the
//! lease run out (etcd's expiry, or `WAIT` of the lease on their own clock), which is later,
//! so a node that lost its lease has stopped answering before anyone else starts; a node that
//! lost it closes every shard before it answers again. Writes are fenced by the journal's
//! epochs besides.
//!
//! A shard with a split or merge planned (`map::Plan`) is sealed by its owner: its running
//! writes finish, later ones are refused as not applied, and routers send them again once
//! the map has the new shards. The owner then makes the new shards' databases as clones of
//! a checkpoint (tables shared, nothing copied; a merge copies the smaller side's entries),
//! and installs them in the map. Every step finds what an earlier attempt made, so the owner
//! that takes the shard after a failover carries the plan on.

use crate::cluster::ShardIdentity;
use crate::grpc::ShardHost;
use crate::local::LocalShard;
use crate::map::{
    ClusterMap, MapStore, NodeEntry, NodeId, ShardEntry, ShardLoad, edit, open_or_create, placement,
};
use crate::shard::Shard;
use cairn_common::{Error, Result};
use cairn_engine::Db;
use futures::future::BoxFuture;
use parking_lot::{Mutex, RwLock};
use resharding::sealed_for;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;
use tokio::time::Instant;

mod resharding;

/// The share of its lease a node trusts a renewal for, from when the renewal began.
pub const TRUST: f64 = 0.9;

/// The databases of a cluster's shards, as a node reaches them.
pub trait ShardDatabases: Send + Sync {
    /// Opens, as its writer, the database of a shard the map gave this node.
    fn open(&self, shard: &ShardEntry) -> BoxFuture<'static, Result<Db>>;

    /// How a shard's store names the store of database `name` (`Storage::reference`):
    /// where a split or merge makes a new shard's database.
    fn reference(&self, name: &str) -> BoxFuture<'static, Result<String>>;
}

#[derive(Debug, Clone)]
pub struct NodeOptions {
    pub id: NodeId,
    /// Where routers reach its shard service.
    pub url: String,
    pub lease: Duration,
    /// How many shards the map starts with if this node creates it.
    pub initial_shards: u16,
}

struct Held {
    generation: u64,
    shard: Arc<LocalShard>,
    /// Calls it was asked to answer: its load, for placement.
    calls: AtomicU64,
}

/// How many leases a node counts a shard's calls for before it reports a rate.
const LOAD_WINDOW: u32 = 5;

pub struct Node {
    opts: NodeOptions,
    store: Arc<dyn MapStore>,
    databases: Arc<dyn ShardDatabases>,
    cluster: u64,
    held: RwLock<HashMap<u64, Held>>,
    opening: Mutex<HashSet<u64>>,
    /// Shards whose split or merge a task of this node is carrying out.
    resharding: Mutex<HashSet<u64>>,
    /// Per shard held, when its calls were last counted and how many there were.
    counted: Mutex<HashMap<u64, (Instant, u64)>>,
    base: Instant,
    /// Until when its lease is trusted, in nanoseconds after `base`.
    trusted_until: AtomicU64,
    stopping: AtomicBool,
    stop: tokio::sync::watch::Sender<bool>,
}

impl Node {
    /// Joins the cluster whose map `store` keeps (creating the map if there is none) and
    /// starts serving what the map gives this node; the work runs on tasks of its own until
    /// `stop`.
    pub async fn start(
        opts: NodeOptions,
        store: Arc<dyn MapStore>,
        databases: Arc<dyn ShardDatabases>,
    ) -> Result<Arc<Node>> {
        let map = open_or_create(store.as_ref(), ClusterMap::initial(opts.initial_shards)).await?;
        let (stop, _) = tokio::sync::watch::channel(false);
        let node = Arc::new(Node {
            cluster: map.cluster,
            opts,
            store,
            databases,
            held: RwLock::new(HashMap::new()),
            opening: Mutex::new(HashSet::new()),
            resharding: Mutex::new(HashSet::new()),
            counted: Mutex::new(HashMap::new()),
            base: Instant::now(),
            trusted_until: AtomicU64::new(0),
            stopping: AtomicBool::new(false),
            stop,
        });
        node.renew().await?;
        let (id, url) = (node.opts.id.clone(), node.opts.url.clone());
        edit(node.store.as_ref(), |m| {
            if m.nodes.get(&id).is_some_and(|n| n.url == url) {
                return Ok(None);
            }
            let mut next = m.clone();
            let draining = m.nodes.get(&id).is_some_and(|n| n.draining);
            next.nodes.insert(
                id.clone(),
                NodeEntry {
                    url: url.clone(),
                    draining,
                },
            );
            Ok(Some(next))
        })
        .await?;
        tracing::info!(node = %node.opts.id, url = %node.opts.url, at = %node.store.location(), "joined the cluster");
        tokio::spawn(node.clone().keep_lease());
        tokio::spawn(node.clone().follow());
        Ok(node)
    }

    /// The shards it serves now, by id.
    pub fn serving(&self) -> Vec<u64> {
        let mut ids: Vec<u64> = self.held.read().keys().copied().collect();
        ids.sort_unstable();
        ids
    }

    fn now(&self) -> u64 {
        self.base.elapsed().as_nanos() as u64
    }

    fn trusted(&self) -> bool {
        !self.stopping.load(Ordering::Acquire)
            && self.now() < self.trusted_until.load(Ordering::Acquire)
    }

    /// Renews the lease once; trusted for `TRUST` of it from when the renewal began.
    async fn renew(&self) -> Result<()> {
        let began = self.now();
        self.store.renew(&self.opts.id, self.opts.lease).await?;
        let until = began + self.opts.lease.mul_f64(TRUST).as_nanos() as u64;
        let before = self.trusted_until.load(Ordering::Acquire);
        if before != 0 && began >= before {
            // The lease may have run out since the last renewal, and others may have taken
            // the shards: close them all before answering again; the map gives back the
            // ones still ours.
            tracing::warn!(node = %self.opts.id, "the lease lapsed before this renewal; closing every shard");
            metrics::counter!("cairn_cluster_lease_lapses_total").increment(1);
            let all: Vec<u64> = self.serving();
            for id in all {
                self.let_go(id).await;
            }
        }
        self.trusted_until.fetch_max(until, Ordering::AcqRel);
        Ok(())
    }

    async fn keep_lease(self: Arc<Self>) {
        let mut stop = self.stop.subscribe();
        loop {
            if *stop.borrow() {
                return;
            }
            if let Err(e) = self.renew().await {
                tracing::warn!(node = %self.opts.id, error = %e, "renewing the lease failed; trying again");
            }
            tokio::select! {
                _ = stop.changed() => return,
                _ = tokio::time::sleep(self.opts.lease / 4) => {}
            }
        }
    }

    /// Follows the map: after every change, and at least every third of a lease.
    async fn follow(self: Arc<Self>) {
        let mut stop = self.stop.subscribe();
        loop {
            if *stop.borrow() {
                return;
            }
            let round = self.opts.lease / 3;
            match self.step().await {
                Ok(seen) => {
                    tokio::select! {
                        _ = stop.changed() => return,
                        _ = self.store.next(seen, round) => {}
                    }
                }
                Err(e) => {
                    tracing::warn!(node = %self.opts.id, error = %e, "following the cluster map failed; trying again");
                    tokio::select! {
                        _ = stop.changed() => return,
                        _ = tokio::time::sleep(round) => {}
                    }
                }
            }
        }
    }

    /// One round: lets go, hands over and opens what the map says, then proposes placement.
    /// Answers the version it acted on.
    async fn step(self: &Arc<Self>) -> Result<u64> {
        let map = self.current().await?;
        let me = self.opts.id.as_str();
        let gone: Vec<u64> = self
            .held
            .read()
            .iter()
            .filter(|(id, h)| {
                map.shard(**id)
                    .is_none_or(|s| s.owner.as_deref() != Some(me) || s.generation != h.generation)
            })
            .map(|(id, _)| *id)
            .collect();
        for id in gone {
            self.let_go(id).await;
        }
        for s in map.owned_by(me) {
            let held = self.held.read().contains_key(&s.id);
            if let Some(to) = &s.moving_to {
                self.hand_over(s, to).await?;
            } else if !held {
                if self.opening.lock().insert(s.id) {
                    tokio::spawn(self.clone().take(s.clone()));
                }
            } else if s.plan.is_some() && self.resharding.lock().insert(s.id) {
                // The task seals the shards it needs (a long write, such as an import,
                // may hold the seal up; the map is followed meanwhile).
                tokio::spawn(self.clone().reshard(map.clone(), s.id));
            }
        }
        self.place(&map).await?;
        self.report_load(&map).await?;
        Ok(map.version)
    }

    /// Records in the map the size and call rate of the shards it holds, where they moved
    /// far from what the map has (`ShardLoad::differs_from`): what placement evens out.
    async fn report_load(&self, map: &ClusterMap) -> Result<()> {
        let now = Instant::now();
        let mut news = Vec::new();
        {
            let held = self.held.read();
            let mut counted = self.counted.lock();
            counted.retain(|id, _| held.contains_key(id));
            for (id, h) in held.iter() {
                let calls = h.calls.load(Ordering::Relaxed);
                let (since, before) = *counted.entry(*id).or_insert((now, calls));
                let secs = now.duration_since(since).as_secs_f64();
                if secs < (self.opts.lease * LOAD_WINDOW).as_secs_f64() {
                    continue;
                }
                counted.insert(*id, (now, calls));
                let load = ShardLoad {
                    bytes: h.shard.db().stats().levels.iter().map(|l| l.bytes).sum(),
                    calls_per_sec: (calls.saturating_sub(before) as f64 / secs) as u64,
                };
                if load.differs_from(map.shard(*id).and_then(|s| s.load)) {
                    news.push((*id, h.generation, load));
                }
            }
        }
        if news.is_empty() {
            return Ok(());
        }
        let me = self.opts.id.as_str();
        edit(self.store.as_ref(), |m| {
            let mut next = m.clone();
            let mut any = false;
            for (id, generation, load) in &news {
                if let Some(s) = next.shards.iter_mut().find(|s| {
                    s.id == *id && s.generation == *generation && s.owner.as_deref() == Some(me)
                }) && s.load != Some(*load)
                {
                    s.load = Some(*load);
                    any = true;
                }
            }
            Ok(any.then_some(next))
        })
        .await?;
        Ok(())
    }

    async fn current(&self) -> Result<ClusterMap> {
        self.store
            .current()
            .await?
            .ok_or_else(|| Error::component(self.store.location(), "the cluster map is gone"))
    }

    /// Whether the map still gives this node shard `s` as it was when the round began.
    async fn still_mine(&self, s: &ShardEntry) -> Result<bool> {
        Ok(self.is_mine(&self.current().await?, s))
    }

    /// Whether `map` gives this node shard `s` as it was when the round began.
    fn is_mine(&self, map: &ClusterMap, s: &ShardEntry) -> bool {
        map.shard(s.id).is_some_and(|now| {
            now.owner.as_deref() == Some(self.opts.id.as_str())
                && now.generation == s.generation
                && now.moving_to.is_none()
        })
    }

    /// Opens shard `s` and serves it, unless the map took it away meanwhile.
    async fn take(self: Arc<Self>, s: ShardEntry) {
        // Opening takes the database over, fencing whoever has it: only while the map still
        // gives it to this node and its lease is trusted for long enough that no one else
        // can have been given it by the time the open has taken it.
        let margin = self.base.elapsed() + self.opts.lease / 2;
        let trusted_long = !self.stopping.load(Ordering::Acquire)
            && (margin.as_nanos() as u64) < self.trusted_until.load(Ordering::Acquire);
        if !trusted_long || !matches!(self.still_mine(&s).await, Ok(true)) {
            self.opening.lock().remove(&s.id);
            return;
        }
        let started = std::time::Instant::now();
        let opened = self.databases.open(&s).await;
        let result = async {
            let db = opened?;
            let shard = Arc::new(LocalShard::placed(db, s.id)?);
            // A shard with a plan is served sealed from the start: a write it took now
            // could miss a checkpoint an earlier owner made. (A plan made after this read
            // is sealed by the task that carries it out, before its checkpoint.)
            let map = self.current().await?;
            if let Some(why) = sealed_for(&map, s.id) {
                shard.seal(why).await;
            }
            if self.is_mine(&map, &s) && !self.stopping.load(Ordering::Acquire) {
                self.held.write().insert(
                    s.id,
                    Held {
                        generation: s.generation,
                        shard,
                        calls: AtomicU64::new(0),
                    },
                );
                Ok(true)
            } else {
                shard.close().await?;
                Ok::<_, Error>(false)
            }
        }
        .await;
        self.opening.lock().remove(&s.id);
        match result {
            Ok(true) => {
                metrics::counter!("cairn_cluster_shards_taken_total").increment(1);
                metrics::histogram!("cairn_cluster_shard_open_seconds")
                    .record(started.elapsed().as_secs_f64());
                tracing::info!(node = %self.opts.id, shard = s.id, generation = s.generation, ms = started.elapsed().as_millis() as u64, "serving a shard");
            }
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(node = %self.opts.id, shard = s.id, error = %e, "opening a shard failed; the next round tries again")
            }
        }
    }

    /// Stops serving shard `id` and closes it (its memtable flushed).
    async fn let_go(&self, id: u64) {
        let Some(h) = self.held.write().remove(&id) else {
            return;
        };
        metrics::counter!("cairn_cluster_shards_released_total").increment(1);
        if let Err(e) = h.shard.close().await {
            // A fenced close is the usual end of a shard another node took over.
            tracing::info!(node = %self.opts.id, shard = id, error = %e, "closing a shard given up");
        }
    }

    /// Closes shard `s` and installs `to` as its owner.
    async fn hand_over(&self, s: &ShardEntry, to: &str) -> Result<()> {
        self.let_go(s.id).await;
        let (me, id, generation) = (self.opts.id.clone(), s.id, s.generation);
        edit(self.store.as_ref(), |m| {
            let mut next = m.clone();
            match next.shards.iter_mut().find(|x| x.id == id) {
                Some(x)
                    if x.owner.as_deref() == Some(me.as_str())
                        && x.generation == generation
                        && x.moving_to.as_deref() == Some(to) =>
                {
                    x.owner = Some(to.to_string());
                    x.generation += 1;
                    x.moving_to = None;
                    Ok(Some(next))
                }
                _ => Ok(None),
            }
        })
        .await?;
        metrics::counter!("cairn_cluster_moves_total").increment(1);
        tracing::info!(node = %self.opts.id, shard = id, to, "handed a shard over");
        Ok(())
    }

    /// Proposes the placement edit the map and the leases call for, if any.
    async fn place(&self, map: &ClusterMap) -> Result<()> {
        let mut live = BTreeSet::new();
        for id in map.nodes.keys() {
            if *id == self.opts.id || self.store.alive(id).await? {
                live.insert(id.clone());
            }
        }
        if placement::plan(map, &live).is_none() {
            return Ok(());
        }
        let before = map.clone();
        let next = edit(self.store.as_ref(), |m| Ok(placement::plan(m, &live))).await?;
        let failed_over = next
            .shards
            .iter()
            .filter(|s| {
                before.shard(s.id).is_some_and(|b| {
                    b.owner.is_some() && b.owner != s.owner && b.moving_to.is_none()
                })
            })
            .count();
        if failed_over > 0 {
            metrics::counter!("cairn_cluster_failovers_total").increment(failed_over as u64);
            tracing::warn!(node = %self.opts.id, shards = failed_over, "took over the shards of nodes whose leases ran out");
        }
        Ok(())
    }

    /// Stops: answers nothing more, closes every shard (flushed) and releases the lease, so
    /// the others take the shards at once rather than after the lease.
    pub async fn stop(&self) -> Result<()> {
        self.stopping.store(true, Ordering::Release);
        let _ = self.stop.send(true);
        for id in self.serving() {
            self.let_go(id).await;
        }
        self.store.release(&self.opts.id).await
    }
}

impl ShardHost for Node {
    fn shard_for(&self, tag: Option<ShardIdentity>) -> Result<Arc<LocalShard>> {
        let Some(tag) = tag else {
            return Err(Error::InvalidArgument(format!(
                "node {} serves many shards: a call must name one (tag)",
                self.opts.id
            )));
        };
        if tag.count != 0 || tag.cluster != self.cluster {
            return Err(Error::InvalidArgument(format!(
                "node {} serves the shards of cluster {:016x}, placed by its map; the call names {tag}",
                self.opts.id, self.cluster
            )));
        }
        if !self.trusted() {
            return Err(Error::Moved(format!(
                "node {} holds no current lease, so it answers for no shard",
                self.opts.id
            )));
        }
        let id = u64::from(tag.index);
        match self.held.read().get(&id) {
            Some(h) if h.generation == tag.generation => {
                h.calls.fetch_add(1, Ordering::Relaxed);
                Ok(h.shard.clone())
            }
            Some(h) => Err(Error::Moved(format!(
                "node {} serves generation {} of shard {id}, the call names {}",
                self.opts.id, h.generation, tag.generation
            ))),
            None => Err(Error::Moved(format!(
                "node {} does not serve shard {id}",
                self.opts.id
            ))),
        }
    }

    fn identity(&self) -> Option<ShardIdentity> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::map::{HeartbeatStores, StorageMapStore};
    use cairn_common::WriteBatch;
    use cairn_compaction::LocalCompactor;
    use cairn_engine::{Components, EngineOptions};
    use cairn_filestore::{DirManifestStore, ManifestStore, SstOptions, SstStorage, Storage};
    use cairn_journal::{ObjectJournal, ObjectJournalOptions};
    use cairn_memtable::MemtableOptions;
    use object_store::memory::InMemory;
    use std::path::PathBuf;

    /// Nodes in this process sharing a map in `root`, tables under `root/tables` and
    /// journals in one in-memory object store, as nodes on many machines share a bucket.
    struct Shared {
        root: PathBuf,
        journals: Arc<InMemory>,
        /// While set, leases cannot be renewed: the place they are kept is unreachable.
        leases_down: Arc<AtomicBool>,
    }

    /// A manifest store that fails every call while `down` is set.
    struct Unreachable {
        inner: DirManifestStore,
        down: Arc<AtomicBool>,
    }

    impl Unreachable {
        fn check(&self) -> Result<()> {
            if self.down.load(Ordering::SeqCst) {
                return Err(Error::component("heartbeats", "unreachable"));
            }
            Ok(())
        }
    }

    #[async_trait::async_trait]
    impl ManifestStore for Unreachable {
        async fn list(&self) -> Result<Vec<u64>> {
            self.check()?;
            self.inner.list().await
        }
        async fn read(&self, n: u64) -> Result<Option<bytes::Bytes>> {
            self.check()?;
            self.inner.read(n).await
        }
        async fn create(&self, n: u64, data: bytes::Bytes) -> Result<bool> {
            self.check()?;
            self.inner.create(n, data).await
        }
        async fn delete(&self, n: u64) -> Result<()> {
            self.check()?;
            self.inner.delete(n).await
        }
        fn location(&self) -> String {
            self.inner.location()
        }
    }

    impl Shared {
        fn new(root: &std::path::Path) -> Shared {
            Shared {
                root: root.into(),
                journals: Arc::new(InMemory::new()),
                leases_down: Arc::new(AtomicBool::new(false)),
            }
        }

        fn store(&self) -> Arc<dyn MapStore> {
            let (root, down) = (self.root.clone(), self.leases_down.clone());
            let beats: HeartbeatStores = Box::new(move |node: &str| {
                Ok(Arc::new(Unreachable {
                    inner: DirManifestStore::open(root.join("nodes").join(node))?,
                    down: down.clone(),
                }) as Arc<dyn ManifestStore>)
            });
            let maps = Arc::new(DirManifestStore::open(self.root.join("map")).unwrap());
            Arc::new(StorageMapStore::new(maps, beats))
        }

        async fn node(&self, id: &str) -> Arc<Node> {
            let databases = Arc::new(Databases {
                root: self.root.clone(),
                journals: self.journals.clone(),
                me: id.to_string(),
            });
            let opts = NodeOptions {
                id: id.into(),
                url: format!("http://{id}"),
                lease: Duration::from_millis(300),
                initial_shards: 2,
            };
            Node::start(opts, self.store(), databases).await.unwrap()
        }
    }

    /// Each shard's tables in `root/tables/<database>`, its journal in the shared object
    /// store, and the node's lock directory under `root/<node>`.
    struct Databases {
        root: PathBuf,
        journals: Arc<InMemory>,
        me: String,
    }

    impl ShardDatabases for Databases {
        fn open(&self, s: &ShardEntry) -> BoxFuture<'static, Result<Db>> {
            let (root, journals, me) = (self.root.clone(), self.journals.clone(), self.me.clone());
            let database = s.database.clone();
            Box::pin(async move {
                let storage: Arc<dyn Storage> = Arc::new(SstStorage::open(SstOptions::new(
                    root.join("tables").join(&database),
                ))?);
                let journal = ObjectJournal::new(
                    journals,
                    object_store::path::Path::from(database.clone()),
                    "memory://journals",
                    None,
                    ObjectJournalOptions::default(),
                )?;
                let comps = Components {
                    journal: Arc::new(journal),
                    memtables: MemtableOptions::default().factory(),
                    compactor: Arc::new(LocalCompactor::new(storage.clone())),
                    storage,
                };
                let dir = root.join(&me).join(&database);
                Db::open(&dir, EngineOptions::default(), comps).await
            })
        }

        fn reference(&self, name: &str) -> BoxFuture<'static, Result<String>> {
            let dir = self.root.join("tables").join(name);
            Box::pin(async move {
                let storage = SstStorage::open(SstOptions::new(dir))?;
                storage
                    .reference()
                    .ok_or_else(|| Error::InvalidArgument("no reference".into()))
            })
        }
    }

    /// A cluster in a temporary directory with node `a` serving both of its shards.
    async fn first_node() -> (
        tempfile::TempDir,
        Shared,
        Arc<dyn MapStore>,
        Arc<Node>,
        ClusterMap,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let shared = Shared::new(dir.path());
        let store = shared.store();
        let a = shared.node("a").await;
        until("a serves both shards", || a.serving() == [0, 1]).await;
        let map = store.current().await.unwrap().unwrap();
        (dir, shared, store, a, map)
    }

    fn moved(r: Result<Arc<LocalShard>>) -> bool {
        r.err().is_some_and(|e| e.is_moved())
    }

    async fn until(what: &str, ok: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !ok() {
            assert!(Instant::now() < deadline, "{what}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn tag(map: &ClusterMap, id: u64) -> ShardIdentity {
        ShardIdentity {
            cluster: map.cluster,
            index: id as u32,
            count: 0,
            generation: map.shard(id).unwrap().generation,
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_node_serves_only_the_generation_the_map_gives_it_and_hands_shards_over() {
        let (_dir, shared, store, a, map) = first_node().await;
        for id in [0, 1] {
            let mut b = WriteBatch::new();
            b.put(format!("k{id}"), format!("v{id}"));
            a.shard_for(Some(tag(&map, id)))
                .unwrap()
                .write(b)
                .await
                .unwrap();
        }
        let stale = ShardIdentity {
            generation: tag(&map, 0).generation - 1,
            ..tag(&map, 0)
        };
        assert!(moved(a.shard_for(Some(stale))));
        let stranger = ShardIdentity {
            cluster: map.cluster ^ 1,
            ..tag(&map, 0)
        };
        assert!(matches!(
            a.shard_for(Some(stranger)).err(),
            Some(Error::InvalidArgument(_))
        ));
        assert!(matches!(
            a.shard_for(None).err(),
            Some(Error::InvalidArgument(_))
        ));

        // A second node: one shard moves to it, handed over by its owner.
        let b = shared.node("b").await;
        until("one shard each", || {
            a.serving().len() == 1 && b.serving().len() == 1
        })
        .await;
        let gone = b.serving()[0];
        let map = store.current().await.unwrap().unwrap();
        assert!(moved(a.shard_for(Some(tag(&map, gone)))));
        let at_b = b.shard_for(Some(tag(&map, gone))).unwrap();
        let key = format!("k{gone}");
        assert_eq!(
            at_b.get(key.as_bytes()).await.unwrap().unwrap(),
            format!("v{gone}")
        );

        // A stopped node answers nothing and releases its lease: the other takes its shard
        // at once, with its data.
        a.stop().await.unwrap();
        let kept = 1 - gone;
        assert!(moved(a.shard_for(Some(tag(&map, kept)))));
        until("b serves both shards", || b.serving() == [0, 1]).await;
        let map = store.current().await.unwrap().unwrap();
        let got = b.shard_for(Some(tag(&map, kept))).unwrap();
        let key = format!("k{kept}");
        assert_eq!(
            got.get(key.as_bytes()).await.unwrap().unwrap(),
            format!("v{kept}")
        );
        b.stop().await.unwrap();
    }

    /// A node that cannot renew its lease stops answering before the lease could have run
    /// out, and once it renews again it closes every shard and opens them anew (another
    /// node may have written to them meanwhile) before it answers.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_node_that_cannot_renew_stops_answering_and_reopens_after_a_lapse() {
        let (_dir, shared, _store, a, map) = first_node().await;
        let mut b = WriteBatch::new();
        b.put("k", "v");
        let first = a.shard_for(Some(tag(&map, 0))).unwrap();
        first.write(b).await.unwrap();

        shared.leases_down.store(true, Ordering::SeqCst);
        until("a stops answering", || {
            moved(a.shard_for(Some(tag(&map, 0))))
        })
        .await;
        shared.leases_down.store(false, Ordering::SeqCst);
        until("a answers again", || {
            a.shard_for(Some(tag(&map, 0))).is_ok()
        })
        .await;
        let again = a.shard_for(Some(tag(&map, 0))).unwrap();
        assert!(
            !Arc::ptr_eq(&first, &again),
            "the shard was closed and opened anew after the lapse"
        );
        assert_eq!(again.get(b"k").await.unwrap().unwrap(), "v");
        a.stop().await.unwrap();
    }

    async fn put(node: &Node, map: &ClusterMap, key: &str, value: &str) -> Result<()> {
        let id = map.shard_of(key.as_bytes()).id;
        let mut b = WriteBatch::new();
        b.put(key.to_string(), value.to_string());
        node.shard_for(Some(tag(map, id)))?
            .write(b)
            .await
            .map(|_| ())
    }

    async fn get(node: &Node, map: &ClusterMap, key: &str) -> Option<bytes::Bytes> {
        let id = map.shard_of(key.as_bytes()).id;
        node.shard_for(Some(tag(map, id)))
            .unwrap()
            .get(key.as_bytes())
            .await
            .unwrap()
    }

    fn key(i: u32) -> String {
        format!("k{i:03}")
    }

    async fn settled(
        store: &Arc<dyn MapStore>,
        what: &str,
        ok: impl Fn(&ClusterMap) -> bool,
    ) -> ClusterMap {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let m = store.current().await.unwrap().unwrap();
            if ok(&m) {
                return m;
            }
            assert!(Instant::now() < deadline, "{what}: {m:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// A split seals its shard (reads go on, writes are refused as not applied), and when
    /// its owner stops half way (the clones made, the map not yet edited) the node that
    /// takes the shard over finds what was made and finishes. Each child holds its side;
    /// the two then merge back into one shard holding everything.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_split_carried_on_after_a_failover_and_a_merge_keep_every_write() {
        let (_dir, shared, store, a, map) = first_node().await;
        for i in 0..200 {
            put(&a, &map, &key(i), "first").await.unwrap();
        }
        // Some of it flushed, some only in the journal.
        a.shard_for(Some(tag(&map, 0)))
            .unwrap()
            .flush()
            .await
            .unwrap();
        for i in (0..200).step_by(3) {
            put(&a, &map, &key(i), "second").await.unwrap();
        }
        let want = |i: u32| {
            if i.is_multiple_of(3) {
                "second"
            } else {
                "first"
            }
        };

        fail::cfg("node-a-split-before-finish", "return").unwrap();
        crate::map::request_split(store.as_ref(), 0, key(100).into())
            .await
            .unwrap();
        let mut refused = false;
        for _ in 0..500 {
            match put(&a, &map, &key(7), "late").await {
                Err(e) if e.not_applied() => {
                    refused = true;
                    break;
                }
                Err(e) => panic!("{e}"),
                Ok(()) => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        }
        assert!(refused, "the splitting shard refuses writes");
        // What the last accepted write of key 7 wrote is what the children must show.
        let seven = get(&a, &map, &key(7)).await.unwrap();
        assert_eq!(
            get(&a, &map, &key(150)).await.unwrap(),
            want(150),
            "reads go on"
        );

        // The owner stops before its map edit; another node takes the shard and finishes.
        let b = shared.node("b").await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(
            store.current().await.unwrap().unwrap().shard(0).is_some(),
            "a never finishes"
        );
        a.stop().await.unwrap();
        let map = settled(&store, "the split is done", |m| m.shard(0).is_none()).await;
        fail::remove("node-a-split-before-finish");
        let ids: Vec<u64> = map.shards.iter().map(|s| s.id).collect();
        assert_eq!(ids, [2, 3, 1]);
        until("b serves the children", || b.serving() == [1, 2, 3]).await;
        for i in 0..200 {
            let got = get(&b, &map, &key(i)).await;
            let expect = if i == 7 {
                seven.clone()
            } else {
                want(i).into()
            };
            assert_eq!(got, Some(expect), "{}", key(i));
        }
        // Each child sees its side only.
        let left = b.shard_for(Some(tag(&map, 2))).unwrap();
        assert_eq!(left.get(key(150).as_bytes()).await.unwrap(), None);
        let right = b.shard_for(Some(tag(&map, 3))).unwrap();
        assert_eq!(right.get(key(50).as_bytes()).await.unwrap(), None);
        for i in 0..200 {
            put(&b, &map, &key(i), "third").await.unwrap();
        }

        // The merge stops after its copy, and is tried again: it finds its clone made and
        // copies the same entries again.
        fail::cfg("node-b-merge-before-finish", "return").unwrap();
        crate::map::request_merge(store.as_ref(), 3, 2)
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(store.current().await.unwrap().unwrap().shard(4).is_none());
        fail::remove("node-b-merge-before-finish");
        let map = settled(&store, "the merge is done", |m| m.shard(4).is_some()).await;
        assert_eq!(
            map.shard(4).unwrap().range_text(),
            map.shards[0].range_text()
        );
        until("b serves the merged shard", || b.serving() == [1, 4]).await;
        for i in 0..200 {
            assert_eq!(get(&b, &map, &key(i)).await.unwrap(), "third", "{}", key(i));
        }
        put(&b, &map, &key(5), "fourth").await.unwrap();
        assert_eq!(get(&b, &map, &key(5)).await.unwrap(), "fourth");
        b.stop().await.unwrap();
    }

    /// A node records in the map the size and call rate of the shards it serves.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_node_reports_its_shards_sizes_and_calls() {
        let (_dir, _shared, store, a, map) = first_node().await;
        for i in 0..100 {
            put(&a, &map, &key(i), &"v".repeat(1000)).await.unwrap();
        }
        a.shard_for(Some(tag(&map, 0)))
            .unwrap()
            .flush()
            .await
            .unwrap();
        let busy = Instant::now();
        while busy.elapsed() < Duration::from_millis(1800) {
            get(&a, &map, &key(1)).await;
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let map = settled(&store, "shard 0's load recorded", |m| {
            m.shard(0)
                .and_then(|s| s.load)
                .is_some_and(|l| l.bytes > 100_000 && l.calls_per_sec > 50)
        })
        .await;
        assert_eq!(
            map.shard(1).unwrap().load,
            None,
            "an idle, empty shard has nothing to report"
        );
        a.stop().await.unwrap();
    }
}
