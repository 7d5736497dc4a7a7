//! `cairn-bench --suite takeover`: how long a new compute node takes to become a database's
//! writer. `--keys` entries of `--value-size` bytes are written by `--concurrency` writers and
//! left unflushed (so the journal holds them all), the node stops as a crash would (nothing
//! flushed or closed), and a new node opens the database on an empty data directory: the open
//! (manifest read and epoch bump, journal claim and replay) and its first acknowledged write
//! are timed, and every key written is checked on the new node.
//!
//! A profile whose journal or tables live in the node's data directory cannot be taken over
//! from elsewhere; for it the new node reopens the same directory (a restart), and the report
//! says so.

use anyhow::{Context, Result, ensure};
use bytes::Bytes;
use cairn::{Config, JournalKind, Router, StorageKind};
use serde::Serialize;
use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

#[derive(Debug, Serialize)]
pub struct TakeoverResult {
    pub profile: String,
    /// `new node` (an empty data directory) or `restart` (the same one).
    pub mode: &'static str,
    pub keys: u64,
    pub write_seconds: f64,
    /// Opening the database on the new node, replay included.
    pub open_seconds: f64,
    /// The first write the new node acknowledged.
    pub first_write_ms: f64,
    /// Open to first acknowledged write.
    pub takeover_seconds: f64,
    pub epoch_before: u64,
    pub epoch_after: u64,
}

/// Whether a node with this profile can be replaced by one elsewhere: its journal and its
/// tables' durable copy are not in its data directory.
pub fn disposable(c: &Config) -> bool {
    let remote_journal = matches!(c.journal.kind, JournalKind::Grpc | JournalKind::Object);
    let remote_tables = match c.storage.kind {
        StorageKind::Grpc => true,
        StorageKind::Parquet => c.storage.url.is_some(),
        StorageKind::Hybrid => c.storage.secondary.as_ref().is_some_and(|s| {
            s.kind == StorageKind::Grpc || (s.kind == StorageKind::Parquet && s.url.is_some())
        }),
        StorageKind::Sstable => false,
    };
    remote_journal && remote_tables
}

pub async fn run(
    config: &Config,
    profile: &str,
    base: &Path,
    keys: u64,
    value_size: usize,
    concurrency: usize,
) -> Result<TakeoverResult> {
    let mode = if disposable(config) {
        "new node"
    } else {
        "restart"
    };
    let node = |name: &str| {
        let mut c = config.clone();
        c.data_dir = base.join(name);
        c.journal.dir = None;
        c.storage.dir = None;
        c
    };
    let first = node("node-1");
    let router = Arc::new(
        cairn::open_router(&first)
            .await
            .context("opening the first node")?,
    );
    let epoch_before = epoch(&router).await;
    let value = Bytes::from(vec![b'v'; value_size]);
    let t = Instant::now();
    let workers: Vec<_> = (0..concurrency.max(1) as u64)
        .map(|w| {
            let (router, value) = (router.clone(), value.clone());
            tokio::spawn(async move {
                let mut i = w;
                while i < keys {
                    router.put(key(i), value.clone()).await?;
                    i += concurrency as u64;
                }
                anyhow::Ok(())
            })
        })
        .collect();
    for w in workers {
        w.await??;
    }
    let write_seconds = t.elapsed().as_secs_f64();
    // A crash: nothing flushed, nothing closed; the old node's engine lets go as it dies.
    drop(router);

    let second = if mode == "new node" {
        node("node-2")
    } else {
        first
    };
    let t = Instant::now();
    let router = loop {
        match cairn::open_router(&second).await {
            // The same directory, still held by the engine dropped a moment ago.
            Err(cairn::Error::Locked(_)) => {
                tokio::time::sleep(std::time::Duration::from_millis(5)).await
            }
            other => break other.context("opening the new node")?,
        }
    };
    let open_seconds = t.elapsed().as_secs_f64();
    let w = Instant::now();
    router
        .put(Bytes::from_static(b"takeover-first-write"), value.clone())
        .await?;
    let first_write_ms = w.elapsed().as_secs_f64() * 1e3;
    let takeover_seconds = t.elapsed().as_secs_f64();
    let epoch_after = epoch(&router).await;
    let all: Vec<Bytes> = (0..keys).map(key).collect();
    for chunk in all.chunks(1000) {
        let got = router.multi_get(chunk).await?;
        ensure!(
            got.iter().all(|v| v.as_ref() == Some(&value)),
            "the new node lacks acknowledged writes"
        );
    }
    router.close().await?;
    Ok(TakeoverResult {
        profile: profile.to_string(),
        mode,
        keys,
        write_seconds,
        open_seconds,
        first_write_ms,
        takeover_seconds,
        epoch_before,
        epoch_after,
    })
}

fn key(i: u64) -> Bytes {
    Bytes::from(format!("key{i:012}"))
}

/// The highest epoch over the shards (one shard when not sharded).
async fn epoch(router: &Router) -> u64 {
    router
        .stats()
        .await
        .iter()
        .filter_map(|s| s.stats.as_ref().ok().map(|s| s.epoch))
        .max()
        .unwrap_or_default()
}

pub fn report(results: &[TakeoverResult]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<16} {:<9} {:>9} {:>10} {:>10} {:>14} {:>13} {:>7}",
        "profile", "mode", "keys", "written s", "open s", "first write ms", "take-over s", "epoch"
    );
    for r in results {
        let _ = writeln!(
            out,
            "{:<16} {:<9} {:>9} {:>10.2} {:>10.3} {:>14.2} {:>13.3} {:>3} -> {}",
            r.profile,
            r.mode,
            r.keys,
            r.write_seconds,
            r.open_seconds,
            r.first_write_ms,
            r.takeover_seconds,
            r.epoch_before,
            r.epoch_after
        );
    }
    out
}
