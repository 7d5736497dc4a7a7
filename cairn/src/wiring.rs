//! The one place where configuration becomes trait objects: each section's `kind` picks an
//! implementation, local or gRPC-remote, and the engine receives only `Arc<dyn Trait>`s.

use crate::config::{
    CompactionFallback, CompactionKind, Config, GRPC_CACHE_BYTES, JournalKind, MapKind,
    MemtableKind, RpcSection, ShardKind, StorageKind, StorageSection,
};
use cairn_common::{Error, Result};
use cairn_compaction::{Compactor, GrpcCompactor, LocalCompactor};
use cairn_engine::{Components, Db};
use cairn_filestore::{
    GrpcStorage, ManifestStore, ParquetOptions, ParquetStorage, SstStorage, Storage, ValueColumns,
};
use cairn_hybrid_store::HybridStore;
use cairn_journal::{
    FileJournal, FileJournalOptions, GrpcJournal, Journal, MemoryJournal, ObjectJournal,
};
use cairn_memtable::MemtableOptions;
use cairn_router::map::{EtcdMapStore, HeartbeatStores, MapStore, StorageMapStore};
use cairn_router::{
    Cluster, Connect, GrpcShard, LocalShard, MapFollower, MeteredShard, ReplicatedShard, Router,
    Shard,
};
use std::path::Path;
use std::sync::Arc;

/// The table storage a section of `config` describes, and the view its compactor reads
/// through (the same storage, except a hybrid store's compaction view, which reads the
/// secondary). A Parquet store writes the config's declared value columns.
pub async fn storage(
    config: &Config,
    section: &StorageSection,
) -> Result<(Arc<dyn Storage>, Arc<dyn Storage>)> {
    let leaf = |s: &StorageSection, sub: &str| {
        leaf_storage(s, &config.data_dir, &config.rpc, sub, &config.values)
    };
    match section.kind {
        StorageKind::Hybrid => {
            fn half<'a>(
                h: &'a Option<Box<StorageSection>>,
                name: &str,
            ) -> Result<&'a StorageSection> {
                h.as_deref().ok_or_else(|| {
                    Error::InvalidArgument(format!(
                        "a hybrid storage needs a [storage.{name}] section"
                    ))
                })
            }
            let primary = leaf(half(&section.primary, "primary")?, "tables")?;
            let secondary = leaf(half(&section.secondary, "secondary")?, "secondary")?;
            let store = HybridStore::open(primary, secondary, section.hybrid_options()).await?;
            Ok((Arc::new(store.clone()), Arc::new(store.compaction_view())))
        }
        _ => {
            let s = leaf(section, "tables")?;
            Ok((s.clone(), s))
        }
    }
}

/// One storage that is not hybrid; `sub` names its folder under `data_dir` when its section
/// names none.
fn leaf_storage(
    s: &StorageSection,
    data_dir: &Path,
    rpc: &RpcSection,
    sub: &str,
    values: &ValueColumns,
) -> Result<Arc<dyn Storage>> {
    Ok(match s.kind {
        StorageKind::Sstable => Arc::new(SstStorage::open(s.sst_options_in(data_dir, sub))?),
        StorageKind::Parquet => Arc::new(ParquetStorage::open(ParquetOptions {
            values: values.clone(),
            ..s.parquet_options(data_dir)
        })?),
        StorageKind::Grpc => Arc::new(GrpcStorage::new(
            rpc.client_of(
                s.url.as_deref().unwrap_or_default(),
                s.timeout_ms,
                &s.database,
            ),
            s.block_cache_bytes.unwrap_or(GRPC_CACHE_BYTES),
        )?),
        StorageKind::Hybrid => {
            return Err(Error::InvalidArgument(
                "a hybrid storage cannot nest another hybrid storage".into(),
            ));
        }
    })
}

/// The part of a cluster's storage (and journal) that holds `name`: a folder, URL suffix or
/// storage-server database of its own.
pub fn cluster_part(name: &str) -> String {
    format!("cluster-{name}")
}

/// Where the profile's cluster keeps its map and its nodes' leases: etcd, or numbered
/// objects beside the tables, in the manifest stores of the `cluster-map` and
/// `cluster-node-<id>` parts of the profile's storage (of a hybrid store's secondary).
pub async fn map_store(config: &Config) -> Result<Arc<dyn MapStore>> {
    let Some(cluster) = &config.cluster else {
        return Err(Error::InvalidArgument(
            "this profile has no [cluster] section".into(),
        ));
    };
    if cluster.map == MapKind::Etcd {
        return Ok(Arc::new(
            EtcdMapStore::connect(&cluster.etcd, cluster.prefix()).await?,
        ));
    }
    let manifests_at = {
        let config = config.clone();
        move |sub: &str| -> Result<Arc<dyn ManifestStore>> {
            let c = config.shard_config_in(sub);
            // A hybrid store keeps its manifest in its secondary: so does the cluster.
            let (section, folder) = match (c.storage.kind, c.storage.secondary.as_deref()) {
                (StorageKind::Hybrid, Some(secondary)) => (secondary, "secondary"),
                (StorageKind::Hybrid, None) => {
                    return Err(Error::InvalidArgument(
                        "a hybrid storage needs a [storage.secondary] section".into(),
                    ));
                }
                _ => (&c.storage, "tables"),
            };
            Ok(leaf_storage(section, &c.data_dir, &c.rpc, folder, &c.values)?.manifests())
        }
    };
    let maps = manifests_at(&cluster_part("map"))?;
    let beats: HeartbeatStores =
        Box::new(move |node: &str| manifests_at(&cluster_part(&format!("node-{node}"))));
    Ok(Arc::new(StorageMapStore::new(maps, beats)))
}

/// The journal the profile describes: a file, memory, a journal server or objects in a store.
pub fn journal(config: &Config) -> Result<Arc<dyn Journal>> {
    let j = &config.journal;
    Ok(match j.kind {
        JournalKind::File => {
            let mut o = FileJournalOptions::new(config.journal_dir());
            if let Some(sync) = j.sync {
                o.sync = sync;
            }
            if let Some(bytes) = j.segment_bytes {
                o.segment_bytes = bytes;
            }
            Arc::new(FileJournal::open(o)?)
        }
        JournalKind::Memory => Arc::new(MemoryJournal::new()),
        JournalKind::Object => {
            let opts = config.journal_store_options();
            let at = cairn_filestore::open_object_store(&opts, "journal")?;
            Arc::new(ObjectJournal::new(
                at.store,
                at.prefix,
                opts.url,
                at.local_dir,
                config.object_journal_options(),
            )?)
        }
        JournalKind::Grpc => Arc::new(GrpcJournal::new(config.rpc.client_of(
            j.url.as_deref().unwrap_or_default(),
            j.timeout_ms,
            &j.database,
        ))?),
    })
}

/// The storage `cairn serve compaction` runs jobs against: `[compaction.storage]` if the
/// profile has one, else its `[storage]`; through the compaction view of a hybrid store.
pub async fn compaction_node_storage(config: &Config) -> Result<Arc<dyn Storage>> {
    let section = config
        .compaction
        .storage
        .as_ref()
        .unwrap_or(&config.storage);
    Ok(storage(config, section).await?.1)
}

fn compactor(config: &Config, local_storage: Arc<dyn Storage>) -> Result<Arc<dyn Compactor>> {
    let c = &config.compaction;
    Ok(match c.kind {
        CompactionKind::Local => Arc::new(LocalCompactor::new(local_storage)),
        CompactionKind::Grpc => {
            let fallback: Option<Arc<dyn Compactor>> = match c.fallback.unwrap_or_default() {
                CompactionFallback::Local => Some(Arc::new(LocalCompactor::new(local_storage))),
                CompactionFallback::None => None,
            };
            let urls: Vec<&str> = match c.url.as_deref() {
                Some(u) => vec![u],
                None => c.urls.iter().map(String::as_str).collect(),
            };
            let workers = urls
                .into_iter()
                .map(|u| config.rpc.client_of(u, c.timeout_ms, &c.database))
                .collect();
            Arc::new(GrpcCompactor::pool(workers, fallback)?)
        }
    })
}

/// Builds the components `config` describes.
pub async fn components(config: &Config) -> Result<Components> {
    components_with(config, journal(config)?).await
}

async fn components_with(config: &Config, journal: Arc<dyn Journal>) -> Result<Components> {
    let memtables = match config.memtable.kind {
        MemtableKind::Sharded => MemtableOptions::Sharded {
            shards: config.memtable.shards.unwrap_or(32),
        },
        MemtableKind::SingleLock => MemtableOptions::SingleLock,
        MemtableKind::SkipList => MemtableOptions::SkipList,
    }
    .factory();
    let (storage, compaction_storage) = storage(config, &config.storage).await?;
    let compactor = compactor(config, compaction_storage)?;
    Ok(Components {
        journal,
        memtables,
        storage,
        compactor,
    })
}

/// Builds the components and opens the database under `config.data_dir`: as its writer, as
/// a reader that follows the writer when `config.read_only` is set, or as one of its
/// checkpoints when `config.checkpoint` names one.
pub async fn open(config: &Config) -> Result<Db> {
    if let Some(name) = &config.checkpoint {
        // A checkpoint is tables alone: no journal is read.
        let comps = components_with(config, Arc::new(MemoryJournal::new())).await?;
        let lock = config.reader_dir.as_ref().unwrap_or(&config.data_dir);
        return Db::open_checkpoint(lock, config.engine_options(), comps, name).await;
    }
    if config.read_only {
        // A file or memory journal is its writer's own, unreachable from here: the reader
        // then follows the tables (flushes) only.
        let journal: Arc<dyn Journal> = match config.journal.kind {
            JournalKind::File | JournalKind::Memory => Arc::new(MemoryJournal::new()),
            JournalKind::Grpc | JournalKind::Object => journal(config)?,
        };
        let comps = components_with(config, journal).await?;
        let lock = config.reader_dir.as_ref().unwrap_or(&config.data_dir);
        return Db::open_reader(lock, config.engine_options(), comps).await;
    }
    let comps = components(config).await?;
    Db::open(&config.data_dir, config.engine_options(), comps).await
}

/// Opens what the profile describes as a [`Router`]: over its shards if it has a `[router]`
/// section (creating the cluster on first use), else over the one database it describes.
pub async fn open_router(config: &Config) -> Result<Router> {
    if let Some(cluster) = &config.cluster {
        if config.checkpoint.is_some() {
            return Err(Error::InvalidArgument(
                "the shards of a cluster are served by its nodes: reading their checkpoints through them is not supported yet".into(),
            ));
        }
        let rpc = config.rpc.clone();
        let connect: Connect = Box::new(move |url: &str| rpc.client(url, None));
        let follower = MapFollower::new(map_store(config).await?, connect, cluster.retry());
        return Router::following(follower).await;
    }
    let Some(section) = &config.router else {
        let db = open(config).await?;
        return Ok(Router::single(Arc::new(LocalShard::unsharded(db)?)));
    };
    let cluster = Cluster::open_or_create(&config.data_dir, section.shards.len() as u32)?;
    let mut shards: Vec<Arc<dyn Shard>> = Vec::with_capacity(section.shards.len());
    for (i, s) in section.shards.iter().enumerate() {
        let id = cluster.identity(i as u32);
        let shard: Arc<dyn Shard> = match s.kind {
            ShardKind::Local => {
                let db = open(&config.shard_config(i as u32)).await?;
                let mut shard = LocalShard::new(db, id)?;
                if let Some(b) = section.import_table_bytes {
                    shard = shard.with_import_table_bytes(b);
                }
                Arc::new(shard)
            }
            ShardKind::Grpc if config.checkpoint.is_some() => {
                return Err(Error::InvalidArgument(format!(
                    "shard {i} is served elsewhere ({}): reading its checkpoints through the shard service is not supported yet",
                    s.url.as_deref().unwrap_or_default()
                )));
            }
            ShardKind::Grpc => Arc::new(GrpcShard::new(
                config
                    .rpc
                    .client(s.url.as_deref().unwrap_or_default(), s.timeout_ms),
                id,
            )?),
        };
        let shard = if s.replicas.is_empty() {
            shard
        } else {
            let mut replicas: Vec<Arc<dyn Shard>> = Vec::with_capacity(s.replicas.len());
            for url in &s.replicas {
                replicas.push(Arc::new(GrpcShard::new(
                    config.rpc.client(url, s.timeout_ms),
                    cluster.identity(i as u32),
                )?));
            }
            Arc::new(ReplicatedShard::new(shard, replicas))
        };
        shards.push(Arc::new(MeteredShard::new(i as u32, shard)));
    }
    Router::open(cluster, shards).await
}
