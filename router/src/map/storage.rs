//! The cluster map on the storage tier, the embedded default: map versions are numbered
//! objects created only if absent, in a `ManifestStore` as a database's manifest versions are,
//! so of two edits to the same version one is refused. Nothing runs beside the nodes.
//!
//! A lease is a node's own run of numbered heartbeats, one per renewal. Whether it ran out is
//! judged on the observer's clock, as a writer's lease is (`cairn_engine` `lease.rs`): the
//! observer notes when it first saw the newest heartbeat, and the lease has run out once no
//! newer one has appeared for `WAIT` of the lease since. No two clocks are compared, so the
//! assumption is the lease's: each node's monotonic clock runs within 5% of real time. An
//! observer that has watched for less than that answers that the node is alive.

use super::{ClusterMap, KEPT_VERSIONS, MapStore, decode, encode};
use async_trait::async_trait;
use bytes::Bytes;
use cairn_common::{Error, Result};
use cairn_filestore::ManifestStore;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// The share of the lease an observer waits without seeing a heartbeat before it calls the
/// lease run out (the same margin a writer's lease takes).
pub const WAIT: f64 = 1.1;

/// Opens the heartbeat store of one node.
pub type HeartbeatStores = Box<dyn Fn(&str) -> Result<Arc<dyn ManifestStore>> + Send + Sync>;

pub struct StorageMapStore {
    maps: Arc<dyn ManifestStore>,
    heartbeats: HeartbeatStores,
    opened: Mutex<HashMap<String, Arc<dyn ManifestStore>>>,
    /// This process's own heartbeat counters, by node.
    sent: Mutex<HashMap<String, u64>>,
    /// What this observer saw of each node: its newest heartbeat, and since when.
    seen: Mutex<HashMap<String, (u64, Instant)>>,
    /// How often `next` looks for a new version.
    poll: Duration,
}

#[derive(Serialize, Deserialize)]
struct Heartbeat {
    ttl_ms: u64,
    released: bool,
}

impl StorageMapStore {
    /// Map versions in `maps`; node `n`'s heartbeats in `heartbeats(n)`.
    pub fn new(maps: Arc<dyn ManifestStore>, heartbeats: HeartbeatStores) -> StorageMapStore {
        StorageMapStore {
            maps,
            heartbeats,
            opened: Mutex::new(HashMap::new()),
            sent: Mutex::new(HashMap::new()),
            seen: Mutex::new(HashMap::new()),
            poll: Duration::from_millis(50),
        }
    }

    fn heartbeats_of(&self, node: &str) -> Result<Arc<dyn ManifestStore>> {
        if let Some(s) = self.opened.lock().get(node) {
            return Ok(s.clone());
        }
        let s = (self.heartbeats)(node)?;
        self.opened.lock().insert(node.to_string(), s.clone());
        Ok(s)
    }

    async fn read_map(&self, v: u64) -> Result<Option<ClusterMap>> {
        match self.maps.read(v).await? {
            None => Ok(None),
            Some(b) => {
                let what = format!("cluster map version {v} at {}", self.maps.location());
                let map = decode(&b, &what)?;
                if map.version != v {
                    return Err(Error::corruption(what, format!("it says {}", map.version)));
                }
                Ok(Some(map))
            }
        }
    }

    async fn beat(&self, node: &str, beat: Heartbeat) -> Result<()> {
        let store = self.heartbeats_of(node)?;
        let known = self.sent.lock().get(node).copied();
        let mut n = match known {
            Some(n) => n + 1,
            None => store.list().await?.last().map_or(1, |n| n + 1),
        };
        let data =
            Bytes::from(serde_json::to_vec(&beat).map_err(|e| Error::component("heartbeat", e))?);
        // Another incarnation of the node may have written the same number: take the next.
        while !store.create(n, data.clone()).await? {
            n += 1;
        }
        self.sent.lock().insert(node.to_string(), n);
        if n > 2 {
            store.delete(n - 2).await?;
        }
        Ok(())
    }
}

#[async_trait]
impl MapStore for StorageMapStore {
    async fn current(&self) -> Result<Option<ClusterMap>> {
        // A version may be deleted between the listing and the read; list again then.
        loop {
            let Some(&newest) = self.maps.list().await?.last() else {
                return Ok(None);
            };
            if let Some(m) = self.read_map(newest).await? {
                return Ok(Some(m));
            }
        }
    }

    async fn version(&self, v: u64) -> Result<Option<ClusterMap>> {
        self.read_map(v).await
    }

    async fn install(&self, next: &ClusterMap) -> Result<bool> {
        let v = next.version;
        // Creating v + 1 over a version that never existed would leave a gap: refuse it.
        if v > 1 && self.maps.read(v - 1).await?.is_none() {
            return Ok(false);
        }
        if !self.maps.create(v, encode(next)?).await? {
            return Ok(false);
        }
        if v > KEPT_VERSIONS {
            // Best effort: a version left behind is deleted by a later install.
            for old in self.maps.list().await? {
                if old + KEPT_VERSIONS > v {
                    break;
                }
                self.maps.delete(old).await?;
            }
        }
        Ok(true)
    }

    async fn next(&self, seen: u64, wait: Duration) -> Result<Option<ClusterMap>> {
        let deadline = Instant::now() + wait;
        loop {
            if let Some(m) = self.read_map(seen + 1).await? {
                return Ok(Some(m));
            }
            if let Some(m) = self.current().await?
                && m.version > seen
            {
                // seen + 1 is no longer kept, or was deleted between the two reads.
                return Ok(Some(self.read_map(seen + 1).await?.unwrap_or(m)));
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            tokio::time::sleep(self.poll.min(deadline - Instant::now())).await;
        }
    }

    async fn renew(&self, node: &str, ttl: Duration) -> Result<()> {
        let beat = Heartbeat {
            ttl_ms: ttl.as_millis() as u64,
            released: false,
        };
        self.beat(node, beat).await
    }

    async fn release(&self, node: &str) -> Result<()> {
        let beat = Heartbeat {
            ttl_ms: 0,
            released: true,
        };
        self.beat(node, beat).await
    }

    async fn alive(&self, node: &str) -> Result<bool> {
        let store = self.heartbeats_of(node)?;
        let Some(&newest) = store.list().await?.last() else {
            return Ok(false);
        };
        let Some(data) = store.read(newest).await? else {
            // Deleted by the node's own renewal since the listing: it is renewing.
            return Ok(true);
        };
        let beat: Heartbeat = serde_json::from_slice(&data).map_err(|e| {
            Error::corruption(format!("heartbeat {newest} of node {node}"), e.to_string())
        })?;
        if beat.released {
            return Ok(false);
        }
        let now = Instant::now();
        let mut seen = self.seen.lock();
        let since = match seen.get(node) {
            Some(&(n, at)) if n == newest => at,
            _ => {
                seen.insert(node.to_string(), (newest, now));
                now
            }
        };
        let lease = Duration::from_millis(beat.ttl_ms).mul_f64(WAIT);
        Ok(now.duration_since(since) < lease)
    }

    fn location(&self) -> String {
        self.maps.location()
    }
}
