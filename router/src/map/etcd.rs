//! The cluster map on etcd, for operators who run it for coordination already. The same
//! numbered versions as on the storage tier, each its own key under the cluster's prefix,
//! installed by a transaction that creates version n + 1 only if n exists and n + 1 does not;
//! `next` watches the key of the version it waits for. A node's lease is an etcd lease with
//! the node's key attached, so the key is gone once etcd lets the lease lapse (etcd counts
//! leases in whole seconds: a lease is rounded up to one).

use super::{ClusterMap, KEPT_VERSIONS, MapStore, decode, encode};
use async_trait::async_trait;
use cairn_common::{Error, Result};
use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, EventType, GetOptions, PutOptions, SortOrder,
    SortTarget, Txn, TxnOp, WatchOptions,
};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::time::Duration;

/// How long one call to etcd may take before it is an error.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);

pub struct EtcdMapStore {
    client: Client,
    prefix: String,
    endpoints: String,
    /// The etcd lease each node of this process holds.
    leases: Mutex<HashMap<String, i64>>,
}

impl EtcdMapStore {
    /// Connects to the etcd cluster at `endpoints` (`http://host:port`); the map and leases
    /// live under `prefix` (one prefix per Cairn cluster).
    pub async fn connect(endpoints: &[String], prefix: &str) -> Result<EtcdMapStore> {
        let named = endpoints.join(",");
        let opts = ConnectOptions::new()
            .with_connect_timeout(CALL_TIMEOUT)
            .with_timeout(CALL_TIMEOUT);
        let client = Client::connect(endpoints, Some(opts))
            .await
            .map_err(|e| Error::component(format!("etcd at {named}"), e))?;
        Ok(EtcdMapStore {
            client,
            prefix: prefix.trim_end_matches('/').to_string(),
            endpoints: named,
            leases: Mutex::new(HashMap::new()),
        })
    }

    fn err(&self, what: impl std::fmt::Display, e: impl std::fmt::Display) -> Error {
        Error::component(
            format!("etcd at {}", self.endpoints),
            format!("{what}: {e}"),
        )
    }

    fn map_key(&self, v: u64) -> String {
        format!("{}/map/{v:020}", self.prefix)
    }

    fn node_key(&self, node: &str) -> String {
        format!("{}/nodes/{node}", self.prefix)
    }

    fn decode(&self, v: u64, bytes: &[u8]) -> Result<ClusterMap> {
        let what = format!("cluster map version {v} in {}", self.location());
        let map = decode(bytes, &what)?;
        if map.version != v {
            return Err(Error::corruption(what, format!("it says {}", map.version)));
        }
        Ok(map)
    }

    /// Version `v` and the store's revision when it was read.
    async fn read(&self, v: u64) -> Result<(Option<ClusterMap>, i64)> {
        let got = self
            .client
            .clone()
            .get(self.map_key(v), None)
            .await
            .map_err(|e| self.err(format_args!("read map version {v}"), e))?;
        let revision = got.header().map_or(0, |h| h.revision());
        let map = match got.kvs().first() {
            Some(kv) => Some(self.decode(v, kv.value())?),
            None => None,
        };
        Ok((map, revision))
    }

    async fn grant(&self, node: &str, ttl: Duration) -> Result<i64> {
        let mut c = self.client.clone();
        let secs = ttl.as_millis().div_ceil(1000).max(1) as i64;
        let lease = c
            .lease_grant(secs, None)
            .await
            .map_err(|e| self.err(format_args!("grant node {node} a lease"), e))?
            .id();
        c.put(
            self.node_key(node),
            "alive",
            Some(PutOptions::new().with_lease(lease)),
        )
        .await
        .map_err(|e| self.err(format_args!("register node {node}"), e))?;
        Ok(lease)
    }

    /// Renews lease `id` once: `false` if etcd no longer has it.
    async fn keep_alive(&self, node: &str, id: i64) -> Result<bool> {
        let once = async {
            let (mut keeper, mut answers) = self.client.clone().lease_keep_alive(id).await?;
            keeper.keep_alive().await?;
            answers.message().await
        };
        match tokio::time::timeout(CALL_TIMEOUT, once).await {
            Ok(Ok(answer)) => Ok(answer.is_some_and(|a| a.ttl() > 0)),
            // etcd forgets a lease that ran out: "lease not found".
            Ok(Err(etcd_client::Error::LeaseKeepAliveError(m))) if m.contains("not found") => {
                Ok(false)
            }
            Ok(Err(e)) => Err(self.err(format_args!("renew the lease of node {node}"), e)),
            Err(_) => Err(self.err(format_args!("renew the lease of node {node}"), "timed out")),
        }
    }
}

#[async_trait]
impl MapStore for EtcdMapStore {
    async fn current(&self) -> Result<Option<ClusterMap>> {
        let opts = GetOptions::new()
            .with_prefix()
            .with_sort(SortTarget::Key, SortOrder::Descend)
            .with_limit(1);
        let got = self
            .client
            .clone()
            .get(format!("{}/map/", self.prefix), Some(opts))
            .await
            .map_err(|e| self.err("read the newest map", e))?;
        let Some(kv) = got.kvs().first() else {
            return Ok(None);
        };
        let v = kv
            .key_str()
            .ok()
            .and_then(|k| k.rsplit('/').next())
            .and_then(|n| n.parse::<u64>().ok())
            .ok_or_else(|| Error::corruption(self.location(), "a map key without a version"))?;
        Ok(Some(self.decode(v, kv.value())?))
    }

    async fn version(&self, v: u64) -> Result<Option<ClusterMap>> {
        Ok(self.read(v).await?.0)
    }

    async fn install(&self, next: &ClusterMap) -> Result<bool> {
        let v = next.version;
        let mut when = vec![Compare::create_revision(
            self.map_key(v),
            CompareOp::Equal,
            0,
        )];
        if v > 1 {
            when.push(Compare::create_revision(
                self.map_key(v - 1),
                CompareOp::Greater,
                0,
            ));
        }
        let mut then = vec![TxnOp::put(self.map_key(v), encode(next)?.to_vec(), None)];
        if v > KEPT_VERSIONS {
            then.push(TxnOp::delete(self.map_key(v - KEPT_VERSIONS), None));
        }
        let done = self
            .client
            .clone()
            .txn(Txn::new().when(when).and_then(then))
            .await
            .map_err(|e| self.err(format_args!("install map version {v}"), e))?;
        Ok(done.succeeded())
    }

    async fn next(&self, seen: u64, wait: Duration) -> Result<Option<ClusterMap>> {
        let (found, revision) = self.read(seen + 1).await?;
        if found.is_some() {
            return Ok(found);
        }
        if let Some(m) = self.current().await?
            && m.version > seen
        {
            // seen + 1 is no longer kept, or came between the two reads.
            return Ok(Some(self.version(seen + 1).await?.unwrap_or(m)));
        }
        let key = self.map_key(seen + 1);
        let opts = WatchOptions::new().with_start_revision(revision + 1);
        let (_watcher, mut events) = self
            .client
            .clone()
            .watch(key.clone(), Some(opts))
            .await
            .map_err(|e| self.err(format_args!("watch {key}"), e))?;
        let wait_for_put = async {
            while let Some(answer) = events
                .message()
                .await
                .map_err(|e| self.err(format_args!("watch {key}"), e))?
            {
                for event in answer.events() {
                    if event.event_type() == EventType::Put
                        && let Some(kv) = event.kv()
                    {
                        return Ok(Some(self.decode(seen + 1, kv.value())?));
                    }
                }
                if answer.canceled() {
                    break;
                }
            }
            // The watch ended without the version (compacted away, or etcd went away):
            // whatever is newest now.
            self.current().await.map(|m| m.filter(|m| m.version > seen))
        };
        match tokio::time::timeout(wait, wait_for_put).await {
            Ok(got) => got,
            Err(_) => Ok(None),
        }
    }

    async fn renew(&self, node: &str, ttl: Duration) -> Result<()> {
        let held = self.leases.lock().get(node).copied();
        if let Some(id) = held
            && self.keep_alive(node, id).await?
        {
            return Ok(());
        }
        let id = self.grant(node, ttl).await?;
        self.leases.lock().insert(node.to_string(), id);
        Ok(())
    }

    async fn release(&self, node: &str) -> Result<()> {
        let held = self.leases.lock().remove(node);
        match held {
            Some(id) => self
                .client
                .clone()
                .lease_revoke(id)
                .await
                .map(|_| ())
                .map_err(|e| self.err(format_args!("revoke the lease of node {node}"), e)),
            // Not this process's lease (a node stopped by another): its key goes now.
            None => self
                .client
                .clone()
                .delete(self.node_key(node), None)
                .await
                .map(|_| ())
                .map_err(|e| self.err(format_args!("remove node {node}'s lease"), e)),
        }
    }

    async fn alive(&self, node: &str) -> Result<bool> {
        let got = self
            .client
            .clone()
            .get(
                self.node_key(node),
                Some(GetOptions::new().with_count_only()),
            )
            .await
            .map_err(|e| self.err(format_args!("read the lease of node {node}"), e))?;
        Ok(got.count() > 0)
    }

    fn location(&self) -> String {
        format!("etcd at {} under {}", self.endpoints, self.prefix)
    }
}
