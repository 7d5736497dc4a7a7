//! A node carrying out a split or merge planned in the map (`map::Plan`). It seals the
//! shard (`LocalShard::seal`: running writes finish, later ones are refused as not
//! applied), checkpoints it, makes each new shard's database a clone of the checkpoint
//! within the new shard's bounds (a merge copies the smaller side's entries into a clone of
//! the larger), and installs the new shards in the map. Every step first looks for what an
//! earlier attempt made, so the owner that takes the shard over after a failover carries
//! the plan on.

use super::Node;
use crate::local::LocalShard;
use crate::map::{
    ClusterMap, Plan, ShardEntry, database_name, finish_merge, finish_split, key_text,
};
use bytes::Bytes;
use cairn_common::{KeyRange, Result, WriteBatch};
use cairn_engine::Db;
use cairn_filestore::Within;
use std::sync::Arc;

/// Bytes of entries a merge copies in one write.
const MERGE_BATCH_BYTES: usize = 1 << 20;

impl Node {
    /// Carries out the plan of shard `id` as `map` has it, if this node holds every shard
    /// it needs; logs a failure, and the next round tries again.
    pub(super) async fn reshard(self: Arc<Self>, map: ClusterMap, id: u64) {
        let started = std::time::Instant::now();
        let result = match map.shard(id) {
            Some(s) => match &s.plan {
                Some(Plan::Split { .. }) => self.split(s).await,
                Some(Plan::Merge { right, .. }) => match map.shard(*right) {
                    Some(r) => self.merge(s, r).await,
                    None => Ok(false),
                },
                None => Ok(false),
            },
            None => Ok(false),
        };
        self.resharding.lock().remove(&id);
        match result {
            Ok(true) => {
                let what = match map.shard(id).and_then(|s| s.plan.clone()) {
                    Some(Plan::Split { .. }) => "split",
                    _ => "merge",
                };
                metrics::counter!("cairn_cluster_reshards_total", "kind" => what).increment(1);
                metrics::histogram!("cairn_cluster_reshard_seconds", "kind" => what)
                    .record(started.elapsed().as_secs_f64());
                tracing::info!(node = %self.opts.id, shard = id, ms = started.elapsed().as_millis() as u64, "{what} done");
            }
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(node = %self.opts.id, shard = id, error = %e, "a split or merge failed; the next round tries again")
            }
        }
    }

    /// The shard this node holds as `s`, sealed; `None` if it holds no such shard.
    async fn sealed(&self, s: &ShardEntry, why: String) -> Option<Arc<LocalShard>> {
        let shard = self
            .held
            .read()
            .get(&s.id)
            .filter(|h| h.generation == s.generation)
            .map(|h| h.shard.clone())?;
        shard.seal(why).await;
        Some(shard)
    }

    /// Splits `s`: a checkpoint of its database, two clones of it, each seeing its side,
    /// and the map edit that puts them in its place. Answers whether it did.
    async fn split(&self, s: &ShardEntry) -> Result<bool> {
        let Some(Plan::Split { at, left, right }) = &s.plan else {
            return Ok(false);
        };
        let why = format!("shard {} is splitting at {}", s.id, key_text(at));
        let Some(shard) = self.sealed(s, why).await else {
            return Ok(false);
        };
        let db = shard.db();
        let checkpoint = format!("split-{left}-{right}");
        let sides = [
            (*left, bounds(&s.start, Some(at))),
            (*right, bounds(at, s.end.as_ref())),
        ];
        checkpoint_once(db, &checkpoint).await?;
        for (id, within) in &sides {
            let target = self.databases.reference(&database_name(*id)).await?;
            clone_once(db, &checkpoint, &target, within).await?;
        }
        fail::fail_point!(
            &format!("node-{}-split-before-finish", self.opts.id),
            |_| {
                Err(cairn_common::Error::component(
                    "failpoint",
                    "the split stopped before its map edit",
                ))
            }
        );
        finish_split(self.store.as_ref(), s, &self.opts.id).await
    }

    /// Merges `l` and `r`, its right neighbour: a clone of the larger one's checkpoint as
    /// the merged shard's database, and the smaller one's entries copied into it. Answers
    /// whether it did (`false` while this node does not hold both).
    async fn merge(&self, l: &ShardEntry, r: &ShardEntry) -> Result<bool> {
        let Some(Plan::Merge { into, .. }) = l.plan else {
            return Ok(false);
        };
        if r.owner != l.owner || r.moving_to.is_some() {
            return Ok(false);
        }
        let why = format!("shards {} and {} are merging", l.id, r.id);
        let (Some(ls), Some(rs)) = (self.sealed(l, why.clone()).await, self.sealed(r, why).await)
        else {
            return Ok(false);
        };
        let checkpoint = format!("merge-{into}");
        let target = self.databases.reference(&database_name(into)).await?;
        let within = |e: &ShardEntry| bounds(&e.start, e.end.as_ref());
        // The larger one is shared, unless an earlier attempt already cloned one: sizes
        // change, and the merged database can be a clone of one side only.
        let bytes = |s: &LocalShard| s.db().stats().levels.iter().map(|l| l.bytes).sum::<u64>();
        let left_cloned = ls.db().find_clone(&checkpoint, &target, &within(l)).await?;
        let right_cloned = rs.db().find_clone(&checkpoint, &target, &within(r)).await?;
        let left_big = match (left_cloned, right_cloned) {
            (Some(_), _) => true,
            (None, Some(_)) => false,
            (None, None) => bytes(&ls) >= bytes(&rs),
        };
        let ((big, big_entry), (small, small_entry)) = if left_big {
            ((&ls, l), (&rs, r))
        } else {
            ((&rs, r), (&ls, l))
        };
        checkpoint_once(big.db(), &checkpoint).await?;
        clone_once(big.db(), &checkpoint, &target, &within(big_entry)).await?;

        // The smaller side's entries, copied: writes of the same values, so a retry that
        // copies them again changes nothing.
        let merged = ShardEntry::fresh(
            into,
            l.start.clone(),
            r.end.clone(),
            Some(self.opts.id.clone()),
        );
        let db = self.databases.open(&merged).await?;
        let copied = copy_all(small.db(), &db).await;
        let closed = db.close().await;
        let copied = copied?;
        closed?;
        tracing::info!(node = %self.opts.id, from = small_entry.id, into, entries = copied, "copied the smaller shard's entries into the merged one");
        fail::fail_point!(
            &format!("node-{}-merge-before-finish", self.opts.id),
            |_| {
                Err(cairn_common::Error::component(
                    "failpoint",
                    "the merge stopped before its map edit",
                ))
            }
        );
        finish_merge(self.store.as_ref(), l, r, &self.opts.id).await
    }
}

/// Why shard `id` must take no writes, if it must: a split or merge of it is planned.
pub(super) fn sealed_for(map: &ClusterMap, id: u64) -> Option<String> {
    let s = map.shard(id)?;
    match &s.plan {
        Some(Plan::Split { at, .. }) => {
            Some(format!("shard {id} is splitting at {}", key_text(at)))
        }
        Some(Plan::Merge { right, .. }) => Some(format!("shards {id} and {right} are merging")),
        None => crate::map::merging_with(map, id)
            .map(|l| format!("shards {} and {id} are merging", l.id)),
    }
}

/// Copies every entry `from` shows now into `to`; answers how many.
async fn copy_all(from: &Db, to: &Db) -> Result<u64> {
    let mut it = from.scan(KeyRange::all()).await?;
    let (mut batch, mut bytes, mut pending, mut copied) = (WriteBatch::new(), 0, 0, 0u64);
    while let Some((k, v)) = it.next().await? {
        bytes += k.len() + v.len();
        batch.put(k, v);
        (pending, copied) = (pending + 1, copied + 1);
        if bytes >= MERGE_BATCH_BYTES {
            to.write(std::mem::take(&mut batch)).await?;
            (bytes, pending) = (0, 0);
        }
    }
    if pending > 0 {
        to.write(batch).await?;
    }
    Ok(copied)
}

/// `[start, end)` as the keys a clone sees (the empty key starts the keyspace).
fn bounds(start: &Bytes, end: Option<&Bytes>) -> Within {
    Within {
        lower: (!start.is_empty()).then(|| start.to_vec()),
        upper: end.map(|e| e.to_vec()),
    }
}

/// Makes the database at `target` a clone of checkpoint `name` of `db`, within `within`,
/// unless an earlier attempt made it.
async fn clone_once(db: &Db, name: &str, target: &str, within: &Within) -> Result<()> {
    if db.find_clone(name, target, within).await?.is_none() {
        db.create_clone_within(name, target, within).await?;
    }
    Ok(())
}

/// Makes checkpoint `name` of `db` unless an earlier attempt made it (after the seal,
/// so it holds every write the shard acknowledged either way).
async fn checkpoint_once(db: &Db, name: &str) -> Result<()> {
    if !db.checkpoints().await?.iter().any(|c| c.name == name) {
        db.create_checkpoint(name).await?;
    }
    Ok(())
}
