//! The cluster map: the keyspace cut into shards (contiguous key ranges), the database each
//! shard's data lives in, and the node that serves it now. A map is versioned; an edit installs
//! version n + 1 only if the newest is n, so of racing edits exactly one wins and the others
//! read the new map and try again (`edit`). Nodes prove they are alive with leases.
//!
//! Where the map and the leases are kept is a `MapStore`: numbered objects on the storage
//! tier, created only if absent like manifest versions (`StorageMapStore`, nothing to run), or
//! etcd (`EtcdMapStore`, the coordination service operators already run). Neither is a
//! consensus protocol of ours: both lean on one the store already has.

mod etcd;
pub mod placement;
mod resharding;
mod storage;

#[cfg(any(test, feature = "conformance"))]
pub mod conformance;
#[cfg(test)]
mod tests;

pub use etcd::EtcdMapStore;
pub use resharding::{
    finish_merge, finish_split, merging_with, parse_key, request_merge, request_split,
};
pub use storage::{HeartbeatStores, StorageMapStore, WAIT};

use async_trait::async_trait;
use bytes::Bytes;
use cairn_common::{Error, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;

/// A node's name in the map: chosen by its operator, stable across restarts.
pub type NodeId = String;

/// One version of the map.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterMap {
    /// 1 for the first map; each installed edit adds one.
    pub version: u64,
    /// The cluster's random id, fixed at creation: a node or router of another cluster
    /// that reaches this one is told so.
    pub cluster: u64,
    /// In key order; the first starts at the empty key, each ends where the next starts, and
    /// the last has no end.
    pub shards: Vec<ShardEntry>,
    /// Nodes that joined, by id.
    pub nodes: BTreeMap<NodeId, NodeEntry>,
    /// The id the next new shard gets; ids are never reused, so a database name is never
    /// handed to a second shard.
    pub next_shard: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardEntry {
    pub id: u64,
    /// The first key it holds.
    pub start: Bytes,
    /// The first key past it; `None`: the keyspace's end.
    pub end: Option<Bytes>,
    /// The database that holds its data, a name under the cluster's storage (and journal).
    pub database: String,
    /// The node that serves it; `None` while it waits for one.
    pub owner: Option<NodeId>,
    /// Counts changes of owner, so a call routed by an old map is refused by a node that
    /// has since given the shard up or taken it anew.
    pub generation: u64,
    /// Where the owner is asked to hand it: the owner closes it, then installs the new owner
    /// (so the two never serve it at once).
    #[serde(default)]
    pub moving_to: Option<NodeId>,
    /// A split or merge asked for and not yet done: its owner seals the shard (refusing
    /// writes, which routers send again) and carries it out (`resharding.rs`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan: Option<Plan>,
    /// Its size and load as its owner last reported them (when either changed by half or
    /// double): what placement evens out once counts are even.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load: Option<ShardLoad>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ShardLoad {
    /// Bytes of its tables.
    pub bytes: u64,
    /// Calls its owner answered a second, over the last few seconds.
    pub calls_per_sec: u64,
}

impl ShardLoad {
    /// Whether `self` is news after `before`: a factor of two from it, beyond noise (16 MB,
    /// 50 calls a second), so the map is edited only when placement could care.
    pub fn differs_from(&self, before: Option<ShardLoad>) -> bool {
        let Some(b) = before else {
            return self.bytes > 0 || self.calls_per_sec > 0;
        };
        let far = |a: u64, b: u64, floor: u64| a.max(b) > floor && a.max(b) > 2 * a.min(b);
        far(self.bytes, b.bytes, 16 << 20) || far(self.calls_per_sec, b.calls_per_sec, 50)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Plan {
    /// Into shard `left`, `[start, at)`, and shard `right`, `[at, end)`: two clones of
    /// the shard's database that share its tables, each seeing its own side. The ids are
    /// reserved when the split is asked for, so a retry after a failover makes the same.
    Split { at: Bytes, left: u64, right: u64 },
    /// With shard `right`, the next one, into shard `into`. Set on the left one; both must
    /// be on one node, so the right one is moved to the left one's owner first.
    Merge { right: u64, into: u64 },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeEntry {
    /// Where its shard service listens.
    pub url: String,
    /// Being drained: it is given no shards, and the ones it has are moved off.
    pub draining: bool,
}

impl ShardEntry {
    /// A new shard `[start, end)` with its own database, at generation 0 under `owner`.
    pub fn fresh(id: u64, start: Bytes, end: Option<Bytes>, owner: Option<NodeId>) -> ShardEntry {
        ShardEntry {
            id,
            start,
            end,
            database: database_name(id),
            owner,
            generation: 0,
            moving_to: None,
            plan: None,
            load: None,
        }
    }

    pub fn contains(&self, key: &[u8]) -> bool {
        key >= self.start.as_ref() && self.end.as_ref().is_none_or(|e| key < e.as_ref())
    }

    /// `[start, end)` as a person reads it.
    pub fn range_text(&self) -> String {
        let end = self
            .end
            .as_ref()
            .map_or_else(|| "∞".to_string(), |e| key_text(e));
        format!("[{}, {end})", key_text(&self.start))
    }
}

/// A key as text: printable ASCII as is, any other byte as `\xNN`.
pub fn key_text(key: &[u8]) -> String {
    key.iter()
        .flat_map(|b| std::ascii::escape_default(*b))
        .map(char::from)
        .collect()
}

/// The database name of shard `id`.
pub fn database_name(id: u64) -> String {
    format!("shard-{id}")
}

impl ClusterMap {
    /// Version 1 of a new cluster: `shards` shards (at least one) cutting the keyspace
    /// evenly by the first two bytes of a key, each waiting for an owner.
    pub fn initial(shards: u16) -> ClusterMap {
        let n = u32::from(shards.max(1));
        let cut = |i: u32| -> Bytes {
            let at = ((i * 0x1_0000) / n) as u16;
            Bytes::copy_from_slice(&at.to_be_bytes())
        };
        let shards = (0..n)
            .map(|i| {
                let start = if i == 0 { Bytes::new() } else { cut(i) };
                ShardEntry::fresh(u64::from(i), start, (i + 1 < n).then(|| cut(i + 1)), None)
            })
            .collect();
        ClusterMap {
            version: 1,
            cluster: rand::random(),
            shards,
            nodes: BTreeMap::new(),
            next_shard: u64::from(n),
        }
    }

    /// The position of the shard holding `key`.
    pub fn position_of(&self, key: &[u8]) -> usize {
        // The first shard starts at the empty key, so one always starts at or before `key`.
        self.shards
            .partition_point(|s| s.start.as_ref() <= key)
            .saturating_sub(1)
    }

    pub fn shard_of(&self, key: &[u8]) -> &ShardEntry {
        &self.shards[self.position_of(key)]
    }

    pub fn shard(&self, id: u64) -> Option<&ShardEntry> {
        self.shards.iter().find(|s| s.id == id)
    }

    /// The shards `node` serves.
    pub fn owned_by<'a>(&'a self, node: &'a str) -> impl Iterator<Item = &'a ShardEntry> + 'a {
        self.shards
            .iter()
            .filter(move |s| s.owner.as_deref() == Some(node))
    }

    /// Checks what every edit must keep: shards contiguous from the empty key to the end,
    /// distinct ids below `next_shard`, owners that are nodes of the map.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::InvalidArgument(format!("cluster map: {m}")));
        let Some(first) = self.shards.first() else {
            return bad("no shards".into());
        };
        if !first.start.is_empty() {
            return bad(format!(
                "the first shard starts at {}",
                key_text(&first.start)
            ));
        }
        for pair in self.shards.windows(2) {
            match &pair[0].end {
                Some(end) if *end == pair[1].start && pair[1].start > pair[0].start => {}
                _ => {
                    return bad(format!(
                        "shard {} {} is not followed by its neighbour (shard {} {})",
                        pair[0].id,
                        pair[0].range_text(),
                        pair[1].id,
                        pair[1].range_text()
                    ));
                }
            }
        }
        if let Some(last) = self.shards.last()
            && last.end.is_some()
        {
            return bad(format!("the last shard ends at {}", last.range_text()));
        }
        let mut ids: Vec<u64> = self.shards.iter().map(|s| s.id).collect();
        ids.sort_unstable();
        if ids.windows(2).any(|w| w[0] == w[1]) || ids.last() >= Some(&self.next_shard) {
            return bad(format!(
                "shard ids {ids:?} repeat or reach next_shard {}",
                self.next_shard
            ));
        }
        let mut reserved: Vec<u64> = Vec::new();
        for (i, s) in self.shards.iter().enumerate() {
            if let Some(o) = &s.owner
                && !self.nodes.contains_key(o)
            {
                return bad(format!(
                    "shard {} is owned by `{o}`, no node of the map",
                    s.id
                ));
            }
            match &s.plan {
                None => {}
                Some(Plan::Split { at, left, right }) => {
                    if !s.contains(at) || *at == s.start {
                        return bad(format!(
                            "shard {} {} cannot split at {}",
                            s.id,
                            s.range_text(),
                            key_text(at)
                        ));
                    }
                    reserved.extend([*left, *right]);
                }
                Some(Plan::Merge { right, into }) => {
                    if self.shards.get(i + 1).map(|n| n.id) != Some(*right) {
                        return bad(format!(
                            "shard {} merges with shard {right}, which does not follow it",
                            s.id
                        ));
                    }
                    if self.shards[i + 1].plan.is_some() {
                        return bad(format!("shard {right} has a plan of its own"));
                    }
                    reserved.push(*into);
                }
            }
        }
        reserved.sort_unstable();
        let clash = reserved.windows(2).any(|w| w[0] == w[1])
            || reserved
                .iter()
                .any(|r| *r >= self.next_shard || ids.binary_search(r).is_ok());
        if clash {
            return bad(format!(
                "the ids plans reserve ({reserved:?}) repeat, are in use, or reach next_shard {}",
                self.next_shard
            ));
        }
        Ok(())
    }
}

/// Encodes a map as stored: a crc32c of the JSON, then the JSON, so a damaged copy is refused
/// rather than routed by.
pub fn encode(map: &ClusterMap) -> Result<Bytes> {
    let json =
        serde_json::to_vec(map).map_err(|e| Error::InvalidArgument(format!("cluster map: {e}")))?;
    let mut out = Vec::with_capacity(json.len() + 4);
    out.extend_from_slice(&crc32c::crc32c(&json).to_le_bytes());
    out.extend_from_slice(&json);
    Ok(out.into())
}

pub fn decode(bytes: &[u8], what: &str) -> Result<ClusterMap> {
    let corrupt = |d: String| Error::corruption(what, d);
    let (crc, json) = bytes
        .split_first_chunk::<4>()
        .ok_or_else(|| corrupt(format!("{} bytes is too short", bytes.len())))?;
    if u32::from_le_bytes(*crc) != crc32c::crc32c(json) {
        return Err(corrupt("checksum mismatch".into()));
    }
    serde_json::from_slice(json).map_err(|e| corrupt(e.to_string()))
}

/// Where a cluster's map and its nodes' leases are kept.
#[async_trait]
pub trait MapStore: Send + Sync {
    /// The newest map, or `None` before the cluster is created.
    async fn current(&self) -> Result<Option<ClusterMap>>;

    /// Version `v`, or `None` if it was never installed or is no longer kept (a store keeps
    /// at least the newest [`KEPT_VERSIONS`]).
    async fn version(&self, v: u64) -> Result<Option<ClusterMap>>;

    /// Installs `next` as version `next.version` if the newest is `next.version - 1` (or,
    /// for version 1, if there is none): `true` if this call installed it, `false` if
    /// another edit got there first. Durable when it returns.
    async fn install(&self, next: &ClusterMap) -> Result<bool>;

    /// The version after `seen` once it is installed, waiting up to `wait` for it: a watch
    /// where the store has them, a poll where not. When that version is no longer kept,
    /// the newest instead. `None` if none came in time.
    async fn next(&self, seen: u64, wait: Duration) -> Result<Option<ClusterMap>>;

    /// Starts `node`'s lease of `ttl`, or renews it.
    async fn renew(&self, node: &str, ttl: Duration) -> Result<()>;

    /// Ends `node`'s lease now: a node that stops cleanly need not wait for it to run out.
    async fn release(&self, node: &str) -> Result<()>;

    /// Whether `node` holds a lease, as far as this store can tell: `false` once its lease
    /// ran out or was released, or if it never had one.
    async fn alive(&self, node: &str) -> Result<bool>;

    /// Where the map is kept, for messages.
    fn location(&self) -> String;
}

/// How many of the newest versions a store keeps for `next`; older ones are deleted.
pub const KEPT_VERSIONS: u64 = 64;

/// Applies `change` to the newest map and installs the result, reading the map again and
/// running `change` again whenever another edit wins the race. `change` answers `None` when
/// there is nothing to do (the map is then returned as it is). The map must exist.
pub async fn edit<F>(store: &dyn MapStore, mut change: F) -> Result<ClusterMap>
where
    F: FnMut(&ClusterMap) -> Result<Option<ClusterMap>> + Send,
{
    loop {
        let current = store.current().await?.ok_or_else(|| {
            Error::InvalidArgument(format!("no cluster map at {} yet", store.location()))
        })?;
        let Some(mut next) = change(&current)? else {
            return Ok(current);
        };
        next.version = current.version + 1;
        next.validate()?;
        if store.install(&next).await? {
            metrics::counter!("cairn_cluster_map_edits_total").increment(1);
            return Ok(next);
        }
        metrics::counter!("cairn_cluster_map_edit_conflicts_total").increment(1);
    }
}

/// Marks `node` draining (its shards are moved off and it gets no new ones) or not.
pub async fn set_draining(store: &dyn MapStore, node: &str, draining: bool) -> Result<ClusterMap> {
    edit(store, |m| {
        let Some(n) = m.nodes.get(node) else {
            return Err(Error::InvalidArgument(format!(
                "no node `{node}` in the cluster map (nodes: {})",
                m.nodes.keys().cloned().collect::<Vec<_>>().join(", ")
            )));
        };
        if n.draining == draining {
            return Ok(None);
        }
        let mut next = m.clone();
        if let Some(n) = next.nodes.get_mut(node) {
            n.draining = draining;
        }
        Ok(Some(next))
    })
    .await
}

/// The cluster's map, created as `initial` if there is none yet (of racing creators one
/// wins, and every one answers the winner's map).
pub async fn open_or_create(store: &dyn MapStore, initial: ClusterMap) -> Result<ClusterMap> {
    if let Some(m) = store.current().await? {
        return Ok(m);
    }
    initial.validate()?;
    if store.install(&initial).await? {
        tracing::info!(
            cluster = %format!("{:016x}", initial.cluster),
            shards = initial.shards.len(),
            at = %store.location(),
            "created a cluster map"
        );
        return Ok(initial);
    }
    store.current().await?.ok_or_else(|| {
        Error::component(
            store.location(),
            "the cluster map was created by another and is gone again",
        )
    })
}
