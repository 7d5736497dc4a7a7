//! `cairn-bench --suite transactions`: read-modify-write of two keys, as optimistic
//! transactions and as plain batches, side by side. `--concurrency` workers run for
//! `--duration` seconds each mode over `--keys` counters (uniform keys; fewer keys, more
//! conflicts): each reads two counters and writes both back incremented. A transaction that
//! conflicts is run again and counted. At the end the counters are summed: with
//! transactions every committed increment is there; with plain batches, concurrent
//! read-modify-writes overwrite each other, and the report shows how many increments were
//! lost.

use anyhow::{Result, ensure};
use bytes::Bytes;
use cairn::{Config, Db, Error, Isolation};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Debug, Serialize)]
pub struct TransactionResult {
    pub profile: String,
    pub mode: &'static str,
    pub keys: u64,
    pub workers: usize,
    pub seconds: f64,
    /// Read-modify-writes that committed.
    pub committed: u64,
    pub per_second: f64,
    /// Commits refused for a conflict (transactions only), each then run again.
    pub conflicts: u64,
    /// Increments missing from the counters' sum at the end.
    pub lost_increments: i64,
}

/// Counter `i`'s key (the merge suite's counters too).
pub(crate) fn key(i: u64) -> Bytes {
    Bytes::from(format!("counter{i:08}"))
}

/// A counter's value: an 8-byte little-endian i64, 0 when absent.
pub(crate) fn number(v: Option<Bytes>) -> i64 {
    v.and_then(|v| <[u8; 8]>::try_from(&v[..]).ok())
        .map_or(0, i64::from_le_bytes)
}

pub async fn run(
    config: &Config,
    profile: &str,
    base: &Path,
    keys: u64,
    workers: usize,
    duration: Duration,
) -> Result<Vec<TransactionResult>> {
    ensure!(
        config.router.is_none(),
        "transactions run on one database: profile {profile} is sharded"
    );
    ensure!(keys >= 2, "the transactions suite needs at least 2 keys");
    let mut out = Vec::new();
    for mode in ["transactions", "plain batches"] {
        let mut c = config.clone();
        c.data_dir = base.join(mode.replace(' ', "-"));
        c.journal.dir = None;
        c.storage.dir = None;
        let db = Arc::new(cairn::open(&c).await?);
        let started = Instant::now();
        let tasks: Vec<_> = (0..workers.max(1))
            .map(|w| {
                let db = db.clone();
                tokio::spawn(
                    async move { worker(&db, mode, keys, w as u64, started + duration).await },
                )
            })
            .collect();
        let (mut committed, mut conflicts) = (0, 0);
        for t in tasks {
            let (c, k) = t.await??;
            committed += c;
            conflicts += k;
        }
        let seconds = started.elapsed().as_secs_f64();
        let mut sum = 0;
        let all: Vec<Bytes> = (0..keys).map(key).collect();
        for chunk in all.chunks(1000) {
            sum += db
                .multi_get(chunk)
                .await?
                .into_iter()
                .map(number)
                .sum::<i64>();
        }
        Arc::into_inner(db)
            .ok_or_else(|| anyhow::anyhow!("a worker still holds the database"))?
            .close()
            .await?;
        out.push(TransactionResult {
            profile: profile.to_string(),
            mode,
            keys,
            workers,
            seconds,
            committed,
            per_second: committed as f64 / seconds,
            conflicts,
            lost_increments: 2 * committed as i64 - sum,
        });
    }
    Ok(out)
}

/// Read-modify-writes until `until`: (committed, conflicts).
async fn worker(db: &Db, mode: &str, keys: u64, seed: u64, until: Instant) -> Result<(u64, u64)> {
    let mut rng = StdRng::seed_from_u64(seed);
    let (mut committed, mut conflicts) = (0, 0);
    while Instant::now() < until {
        let a = rng.random_range(0..keys);
        let mut b = rng.random_range(0..keys - 1);
        if b >= a {
            b += 1;
        }
        let (ka, kb) = (key(a), key(b));
        if mode == "transactions" {
            loop {
                let mut t = db.begin(Isolation::Snapshot)?;
                let x = number(t.get(&ka).await?);
                let y = number(t.get(&kb).await?);
                t.put(ka.clone(), (x + 1).to_le_bytes().to_vec());
                t.put(kb.clone(), (y + 1).to_le_bytes().to_vec());
                match t.commit().await {
                    Ok(_) => break,
                    Err(Error::Conflict(_)) => conflicts += 1,
                    Err(e) => return Err(e.into()),
                }
            }
        } else {
            let x = number(db.get(&ka).await?);
            let y = number(db.get(&kb).await?);
            let mut batch = cairn::WriteBatch::new();
            batch.put(ka, (x + 1).to_le_bytes().to_vec());
            batch.put(kb, (y + 1).to_le_bytes().to_vec());
            db.write(batch).await?;
        }
        committed += 1;
    }
    Ok((committed, conflicts))
}

pub fn report(results: &[TransactionResult]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<12} {:<14} {:>8} {:>7} {:>10} {:>10} {:>10} {:>9} {:>8}",
        "profile",
        "mode",
        "keys",
        "workers",
        "committed",
        "per s",
        "conflicts",
        "conflict%",
        "lost"
    );
    for r in results {
        let rate = 100.0 * r.conflicts as f64 / (r.committed + r.conflicts).max(1) as f64;
        let _ = writeln!(
            out,
            "{:<12} {:<14} {:>8} {:>7} {:>10} {:>10.0} {:>10} {:>9.2} {:>8}",
            r.profile,
            r.mode,
            r.keys,
            r.workers,
            r.committed,
            r.per_second,
            r.conflicts,
            rate,
            r.lost_increments
        );
    }
    out
}
