//! The `[cluster]` section: shards placed on nodes by a cluster map. Each node (`cairn serve
//! node`) runs this profile's components for the shards the map gives it, each shard's
//! database in the `cluster-shard-<id>` part of the profile's journal and storage; a router opened
//! with the profile follows the map. So that a shard can move to any node, its journal and
//! tables must be where every node reaches them.

use super::{Config, JournalKind, StorageKind, StorageSection};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum MapKind {
    /// Numbered objects beside the tables: nothing else to run.
    #[default]
    Storage,
    /// An etcd cluster.
    Etcd,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterSection {
    /// Where the map and the nodes' leases are kept.
    #[serde(default)]
    pub map: MapKind,
    /// etcd: its endpoints, `http://host:port`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub etcd: Vec<String>,
    /// etcd: the key prefix of this cluster's map and leases (default `/cairn`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// How long a node's lease lasts, in ms (default 3000): a node that stops renewing has
    /// its shards served by others within about this long and a half. etcd counts whole
    /// seconds, so it rounds up.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lease_ms: Option<u64>,
    /// How many shards the map starts with when the first node creates it (default 4).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shards: Option<u16>,
    /// serve node: this node's id (or `--node`); stable across its restarts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// serve node: where routers reach it (default `http://` and the address it listens on).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// How long a router keeps sending a read again while its shard moves, in ms (default
    /// 10000).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_ms: Option<u64>,
}

pub const LEASE_MS: u64 = 3000;
pub const SHARDS: u16 = 4;
pub const RETRY_MS: u64 = 10_000;
pub const PREFIX: &str = "/cairn";

/// Checks a node id: it names a folder and a key, so letters, digits, `-` and `_`.
pub fn check_node_id(id: &str) -> Result<(), String> {
    if id.is_empty()
        || id.len() > 64
        || !id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(format!(
            "`{id}`: a node id is 1 to 64 letters, digits, `-` or `_`"
        ));
    }
    Ok(())
}

impl ClusterSection {
    pub fn lease(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.lease_ms.unwrap_or(LEASE_MS))
    }

    pub fn retry(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.retry_ms.unwrap_or(RETRY_MS))
    }

    pub fn prefix(&self) -> &str {
        self.prefix.as_deref().unwrap_or(PREFIX)
    }

    pub(super) fn validate(&self, config: &Config) -> Result<(), (String, String)> {
        let bad = |key: &str, why: String| Err((key.to_string(), why));
        if config.router.is_some() {
            return bad(
                "cluster",
                "a profile places its shards by a [router] list or by a [cluster] map, not both"
                    .into(),
            );
        }
        match self.map {
            MapKind::Etcd if self.etcd.is_empty() => {
                return bad(
                    "cluster.etcd",
                    "map = \"etcd\" needs the endpoints, e.g. [\"http://127.0.0.1:2379\"]".into(),
                );
            }
            MapKind::Storage if !self.etcd.is_empty() => {
                return bad(
                    "cluster.etcd",
                    "applies to map = \"etcd\" only (the map is on the storage tier)".into(),
                );
            }
            _ => {}
        }
        for (i, e) in self.etcd.iter().enumerate() {
            if let Err(why) = super::check_server_url(Some(e)) {
                return bad(&format!("cluster.etcd[{i}]"), why);
            }
        }
        if self.lease_ms.is_some_and(|l| !(100..=600_000).contains(&l)) {
            return bad("cluster.lease_ms", "must be from 100 to 600000".into());
        }
        if self.shards.is_some_and(|n| n == 0) {
            return bad("cluster.shards", "must be at least 1".into());
        }
        if self.retry_ms == Some(0) {
            return bad("cluster.retry_ms", "must be greater than 0".into());
        }
        if let Some(n) = &self.node
            && let Err(why) = check_node_id(n)
        {
            return bad("cluster.node", why);
        }
        if let Some(u) = &self.url
            && let Err(why) = super::check_server_url(Some(u))
        {
            return bad("cluster.url", why);
        }
        // A shard moves to another node with its journal and tables: both must be shared.
        match config.journal.kind {
            JournalKind::File | JournalKind::Memory => {
                return bad(
                    "journal.kind",
                    "a cluster's shards move between nodes, so their journal must be shared: \
                     \"grpc\" (a journal server) or \"object\" (a bucket or shared directory)"
                        .into(),
                );
            }
            JournalKind::Object if config.journal.url.is_none() => {
                return bad(
                    "journal.url",
                    "a cluster's object journal must be where every node reaches it: set it".into(),
                );
            }
            _ => {}
        }
        shared_storage(&config.storage, "storage")
    }
}

/// Refuses tables only one node reaches: SSTables under a node's own `data_dir`.
fn shared_storage(s: &StorageSection, key: &str) -> Result<(), (String, String)> {
    match s.kind {
        StorageKind::Sstable if s.dir.is_none() => Err((
            format!("{key}.dir"),
            "a cluster's tables must be where every node reaches them: set a shared \
             directory, or use parquet or grpc storage"
                .into(),
        )),
        StorageKind::Parquet if s.url.is_none() => Err((
            format!("{key}.url"),
            "a cluster's tables must be where every node reaches them: set it".into(),
        )),
        // The primary is each node's cache, rebuilt from the secondary.
        StorageKind::Hybrid => match &s.secondary {
            Some(h) => shared_storage(h, &format!("{key}.secondary")),
            None => Ok(()),
        },
        _ => Ok(()),
    }
}
