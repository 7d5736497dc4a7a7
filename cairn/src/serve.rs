//! `cairn serve`: one component of a profile (its journal, its storage, a compactor over its
//! storage, or a whole engine as a shard) served over gRPC, for engines whose profile names
//! it `kind = "grpc"` and for routers whose `[router]` lists it as a grpc shard; or a node of
//! the profile's `[cluster]`, serving the shards its map gives the node.

use crate::config::{Config, JournalKind, ShardKind, StorageKind, shard_dir_name};
use crate::wiring;
use cairn_common::{Error, Result};
use cairn_compaction::{Compactor, DEFAULT_SLOTS, LocalCompactor, compaction_service_for};
use cairn_engine::Db;
use cairn_filestore::storage_service_for;
use cairn_journal::{Journal, journal_service_for};
use cairn_router::map::ShardEntry;
use cairn_router::{
    LocalShard, Node, NodeOptions, Shard, ShardDatabases, host_service, shard_service,
};
use cairn_rpc::{
    DEFAULT_DATABASE, Databases, MAX_DATABASES, ServerHandle, builder, check_exposure, serve,
};
use futures::future::BoxFuture;
use std::future::Future;
use std::sync::Arc;
use tokio::net::TcpListener;

/// What `cairn serve` can serve.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Component {
    Journal,
    Storage,
    Compaction,
    /// A whole engine, as a router's shard: shard `i` of the profile's `[router]`, or the
    /// profile's one database when it has no router.
    Shard(Option<u32>),
    /// A node of the profile's `[cluster]` (`cluster.node` names it).
    Node,
}

/// Where `cairn serve shard` listens unless told otherwise: the `cluster` profile's first
/// remote shard.
const SHARD_LISTEN: &str = "127.0.0.1:10011";
/// Where `cairn serve node` listens unless told otherwise.
const NODE_LISTEN: &str = "127.0.0.1:10021";

impl Component {
    pub fn name(self) -> &'static str {
        match self {
            Component::Journal => "journal",
            Component::Storage => "storage",
            Component::Compaction => "compaction",
            Component::Shard(_) => "shard",
            Component::Node => "node",
        }
    }

    /// Where it listens unless told otherwise: loopback, on the port the `remote` profile uses.
    pub fn default_listen(self) -> &'static str {
        match self {
            Component::Journal => "127.0.0.1:10001",
            Component::Storage => "127.0.0.1:10002",
            Component::Compaction => "127.0.0.1:10003",
            Component::Shard(_) => SHARD_LISTEN,
            Component::Node => NODE_LISTEN,
        }
    }

    /// Where it listens in `config` unless told otherwise: for shard `i` of a router, the
    /// host and port of its URL; else [`Component::default_listen`].
    pub fn listen_in(self, config: &Config) -> String {
        if let (Component::Shard(Some(i)), Some(r)) = (self, &config.router)
            && let Some(url) = r.shards.get(i as usize).and_then(|s| s.url.as_deref())
            && let Some(hostport) = url.split("://").nth(1)
        {
            return hostport.trim_end_matches('/').to_string();
        }
        self.default_listen().to_string()
    }
}

impl std::str::FromStr for Component {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "journal" => Ok(Component::Journal),
            "storage" => Ok(Component::Storage),
            "compaction" => Ok(Component::Compaction),
            "shard" => Ok(Component::Shard(None)),
            "node" => Ok(Component::Node),
            other => Err(format!(
                "cannot serve `{other}` (journal, storage, compaction, shard, node)"
            )),
        }
    }
}

/// A component being served.
pub struct ComponentServer {
    handle: ServerHandle,
    journals: Option<Arc<Databases<dyn Journal>>>,
    shard: Option<Arc<LocalShard>>,
    node: Option<Arc<Node>>,
    pub component: Component,
}

impl ComponentServer {
    pub fn url(&self) -> String {
        self.handle.url()
    }

    /// Waits for the shutdown signal and for the calls in flight, then closes the journal,
    /// so every append the server acknowledged is durable and no new one was taken.
    pub async fn wait(self) -> Result<()> {
        let served = self.handle.wait().await;
        served.and(close(self.journals, self.shard, self.node).await)
    }

    /// Stops now, as the signal would.
    pub async fn stop(self) -> Result<()> {
        let served = self.handle.stop().await;
        served.and(close(self.journals, self.shard, self.node).await)
    }

    /// The node it runs, for `serve node`.
    pub fn node(&self) -> Option<&Arc<Node>> {
        self.node.as_ref()
    }
}

/// Closes what the server owned: the journals it served, the shard's database (flushed), or
/// the node's shards (flushed, its lease released so others take them at once).
async fn close(
    journals: Option<Arc<Databases<dyn Journal>>>,
    shard: Option<Arc<LocalShard>>,
    node: Option<Arc<Node>>,
) -> Result<()> {
    let mut result = Ok(());
    if let Some(n) = node {
        result = result.and(n.stop().await);
    }
    for (_, j) in journals.map(|j| j.all()).unwrap_or_default() {
        result = result.and(j.close().await);
    }
    if let Some(s) = shard {
        result = result.and(s.close().await);
    }
    result
}

/// The part of a server's profile that holds database `name`: the profile itself for the
/// `default` database (where a single-database server always kept it); for `shard-<i>` of
/// a profile whose router lists shard `i`, that shard's part, where its engine keeps it (so
/// compaction workers started with the profile of a sharded layout on the same disk serve
/// its shards); else the same components under `<data_dir>/db/<name>`.
fn database_config(config: &Config, name: &str) -> Config {
    if name == DEFAULT_DATABASE {
        return config.clone();
    }
    let shard = name
        .strip_prefix("shard-")
        .and_then(|i| i.parse::<u32>().ok());
    if let (Some(r), Some(i)) = (&config.router, shard)
        && (i as usize) < r.shards.len()
        && shard_dir_name(i) == name
    {
        return config.shard_config(i);
    }
    let sub = format!("db/{name}");
    let mut c = config.shard_config_in(&sub);
    c.data_dir = config.data_dir.join(&sub);
    c
}

/// A server's databases, each opened by `open` from its part of the profile. The default
/// one opens now, so a bad profile fails at start rather than at the first call.
async fn databases<T, F, Fut>(config: &Config, open: F) -> Result<Arc<Databases<T>>>
where
    T: ?Sized + Send + Sync + 'static,
    F: Fn(String, Config) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Arc<T>>> + Send + 'static,
{
    let config = config.clone();
    let dbs = Arc::new(Databases::new(MAX_DATABASES, move |name: String| {
        let c = database_config(&config, &name);
        open(name, c)
    }));
    dbs.get(DEFAULT_DATABASE).await?;
    Ok(dbs)
}

/// Checks that `config` can serve `component`, before anything listens.
pub fn check(config: &Config, component: Component) -> Result<()> {
    match component {
        Component::Shard(index) => shard_engine_config(config, index).map(|_| ()),
        Component::Node => node_id(config).map(|_| ()),
        _ => Ok(()),
    }
}

/// Serves `component` of `config` on `listener` until `signal` fires.
pub async fn start(
    config: &Config,
    component: Component,
    listener: TcpListener,
    signal: impl Future<Output = ()> + Send + 'static,
) -> Result<ComponentServer> {
    let opts = config.rpc.server();
    let addr = listener
        .local_addr()
        .map_err(|e| Error::component("listener", e))?;
    check_exposure(addr, &opts)?;
    let refuse = |what: &str| {
        Err(Error::InvalidArgument(format!(
            "cannot serve {what} = \"grpc\": a server serves a local implementation; pick a profile whose {what} is local"
        )))
    };
    let (drain, draining) = tokio::sync::watch::channel(false);
    let mut journals = None;
    let mut shard = None;
    let mut node = None;
    let router = match component {
        Component::Journal => {
            if config.journal.kind == JournalKind::Grpc {
                return refuse("journal.kind");
            }
            let dbs = databases(config, |_, c| async move { wiring::journal(&c) }).await?;
            journals = Some(dbs.clone());
            builder(&opts)?.add_service(journal_service_for(dbs, &opts, draining))
        }
        Component::Storage => {
            if config.storage.kind == StorageKind::Grpc {
                return refuse("storage.kind");
            }
            let dbs = databases(config, |_, c| async move {
                Ok(wiring::storage(&c, &c.storage).await?.0)
            })
            .await?;
            builder(&opts)?.add_service(storage_service_for(dbs, &opts))
        }
        Component::Compaction => {
            // A job names its database as the storage server knows it: the tables are that
            // database's on the storage server, or where a storage server of this profile
            // keeps it (`database_config`).
            let dbs = databases(config, |name, mut c| async move {
                if name != DEFAULT_DATABASE {
                    let s = c.compaction.storage.as_mut().unwrap_or(&mut c.storage);
                    if s.kind == StorageKind::Grpc {
                        s.database = Some(name);
                    }
                }
                let storage = wiring::compaction_node_storage(&c).await?;
                Ok(Arc::new(LocalCompactor::new(storage)) as Arc<dyn Compactor>)
            })
            .await?;
            let slots = config.compaction.slots.unwrap_or_else(|| {
                std::thread::available_parallelism().map_or(DEFAULT_SLOTS, |n| n.get())
            });
            builder(&opts)?.add_service(compaction_service_for(dbs, &opts, slots))
        }
        Component::Shard(index) => {
            let engine = shard_engine_config(config, index)?;
            let db = wiring::open(&engine).await?;
            let served = Arc::new(LocalShard::served(db)?);
            shard = Some(served.clone());
            builder(&opts)?.add_service(shard_service(served, &opts))
        }
        Component::Node => {
            let n = start_node(config, addr, opts.tls_cert.is_some()).await?;
            node = Some(n.clone());
            builder(&opts)?.add_service(host_service(n, &opts))
        }
    };
    let descriptors = match component {
        Component::Journal => cairn_journal::grpc::pb::FILE_DESCRIPTOR_SET,
        Component::Storage => cairn_filestore::grpc::pb::FILE_DESCRIPTOR_SET,
        Component::Compaction => cairn_compaction::grpc::pb::FILE_DESCRIPTOR_SET,
        Component::Shard(_) | Component::Node => cairn_router::grpc::pb::FILE_DESCRIPTOR_SET,
    };
    let tls = opts.tls_cert.is_some();
    let handle = serve(router, &[descriptors], listener, tls, drain, signal)?;
    Ok(ComponentServer {
        handle,
        journals,
        shard,
        node,
        component,
    })
}

/// The node's id: `cluster.node` (or `--node`).
fn node_id(config: &Config) -> Result<String> {
    let Some(c) = &config.cluster else {
        return Err(Error::InvalidArgument(
            "serve node: this profile has no [cluster] section".into(),
        ));
    };
    c.node.clone().ok_or_else(|| {
        Error::InvalidArgument(
            "serve node: name the node with --node ID (or cluster.node); it must stay the same across restarts".into(),
        )
    })
}

/// Joins the profile's cluster as a node reached at `addr`, serving the shards the map gives
/// it, each opened from the profile's components in the shard's part of them.
async fn start_node(config: &Config, addr: std::net::SocketAddr, tls: bool) -> Result<Arc<Node>> {
    let id = node_id(config)?;
    let Some(c) = &config.cluster else {
        return Err(Error::InvalidArgument("no [cluster] section".into()));
    };
    let url = c.url.clone().unwrap_or_else(|| {
        let scheme = if tls { "https" } else { "http" };
        format!("{scheme}://{addr}")
    });
    let opts = NodeOptions {
        id,
        url,
        lease: c.lease(),
        initial_shards: c.shards.unwrap_or(crate::config::SHARDS),
    };
    let databases = Arc::new(ProfileDatabases(config.clone()));
    Node::start(opts, wiring::map_store(config).await?, databases).await
}

/// A cluster's shard databases: each opened from the profile's components, in the part of
/// them its name gives (`wiring::cluster_part`).
struct ProfileDatabases(Config);

impl ShardDatabases for ProfileDatabases {
    fn open(&self, s: &ShardEntry) -> BoxFuture<'static, Result<Db>> {
        let c = self.0.shard_config_in(&wiring::cluster_part(&s.database));
        Box::pin(async move { wiring::open(&c).await })
    }

    fn reference(&self, name: &str) -> BoxFuture<'static, Result<String>> {
        let c = self.0.shard_config_in(&wiring::cluster_part(name));
        let name = name.to_string();
        Box::pin(async move {
            let (storage, _) = wiring::storage(&c, &c.storage).await?;
            storage.reference().ok_or_else(|| {
                Error::InvalidArgument(format!(
                    "the profile's storage cannot name {name}'s store to another, so shards cannot split or merge"
                ))
            })
        })
    }
}

/// The engine a shard server runs: shard `index` of the profile's router, under
/// `<data_dir>/shard-<index>`, or the profile's one database when it has no router.
fn shard_engine_config(config: &Config, index: Option<u32>) -> Result<Config> {
    let bad = |m: String| Err(Error::InvalidArgument(m));
    match (&config.router, index) {
        (None, None) => Ok(config.clone()),
        (None, Some(i)) => bad(format!(
            "--shard {i}: this profile has no [router] section; without --shard the server serves the profile's database"
        )),
        (Some(r), None) => bad(format!(
            "this profile's router lists {} shards: say which one this server is with --shard INDEX",
            r.shards.len()
        )),
        (Some(r), Some(i)) => match r.shards.get(i as usize) {
            None => bad(format!(
                "--shard {i}: the profile's router lists {} shards (0 to {})",
                r.shards.len(),
                r.shards.len().saturating_sub(1)
            )),
            Some(s) if s.kind == ShardKind::Local => bad(format!(
                "shard {i} is a local shard in this profile (its router opens it in-process); a server serves a grpc shard"
            )),
            Some(_) => Ok(config.shard_config(i)),
        },
    }
}
