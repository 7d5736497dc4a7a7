//! `cairn-bench --suite merge`: counters incremented with the `add` merge operator against
//! the read-modify-write a user writes without one (a get, then a put of the sum).
//! `--concurrency` workers increment uniform random counters among `--keys` for `--duration`
//! seconds in each mode; then every counter is read back (merged reads fold operands) and
//! summed: a merge loses nothing, while concurrent read-modify-writes overwrite each other.

use crate::transaction_suite::{key, number};
use anyhow::{Result, ensure};
use bytes::Bytes;
use cairn::{Config, Db};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Debug, Serialize)]
pub struct MergeResult {
    pub profile: String,
    pub mode: &'static str,
    pub keys: u64,
    pub workers: usize,
    pub seconds: f64,
    pub increments: u64,
    pub per_second: f64,
    /// Reading every counter back, in microseconds per key.
    pub read_back_us: f64,
    /// Increments missing from the counters' sum.
    pub lost_increments: i64,
}

const MODES: [&str; 2] = ["merge", "get+put"];

pub async fn run(
    config: &Config,
    profile: &str,
    base: &Path,
    keys: u64,
    workers: usize,
    duration: Duration,
) -> Result<Vec<MergeResult>> {
    ensure!(
        config.router.is_none(),
        "the merge suite runs on one database: profile {profile} is sharded"
    );
    let mut out = Vec::new();
    for mode in MODES {
        let mut c = config.clone();
        c.data_dir = base.join(mode.replace('+', "-"));
        c.journal.dir = None;
        c.storage.dir = None;
        c.engine.merge_operator = Some("add".into());
        let db = Arc::new(cairn::open(&c).await?);
        let started = Instant::now();
        let tasks: Vec<_> = (0..workers.max(1))
            .map(|w| {
                let db = db.clone();
                let until = started + duration;
                tokio::spawn(async move { worker(&db, mode, keys.max(1), w as u64, until).await })
            })
            .collect();
        let mut increments = 0;
        for t in tasks {
            increments += t.await??;
        }
        let seconds = started.elapsed().as_secs_f64();
        let read = Instant::now();
        let mut sum = 0;
        for i in 0..keys.max(1) {
            sum += number(db.get(&key(i)).await?);
        }
        let read_back_us = read.elapsed().as_secs_f64() * 1e6 / keys.max(1) as f64;
        Arc::into_inner(db)
            .ok_or_else(|| anyhow::anyhow!("a worker still holds the database"))?
            .close()
            .await?;
        out.push(MergeResult {
            profile: profile.to_string(),
            mode,
            keys,
            workers,
            seconds,
            increments,
            per_second: increments as f64 / seconds,
            read_back_us,
            lost_increments: increments as i64 - sum,
        });
    }
    Ok(out)
}

/// Increments until `until`; how many.
async fn worker(db: &Db, mode: &str, keys: u64, seed: u64, until: Instant) -> Result<u64> {
    let mut rng = StdRng::seed_from_u64(seed);
    let one = Bytes::copy_from_slice(&1i64.to_le_bytes());
    let mut done = 0;
    while Instant::now() < until {
        let k = key(rng.random_range(0..keys));
        if mode == "merge" {
            db.merge(k, one.clone()).await?;
        } else {
            let v = number(db.get(&k).await?);
            db.put(k, (v + 1).to_le_bytes().to_vec()).await?;
        }
        done += 1;
    }
    Ok(done)
}

pub fn report(results: &[MergeResult]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<12} {:<8} {:>8} {:>7} {:>11} {:>10} {:>13} {:>8}",
        "profile", "mode", "keys", "workers", "increments", "per s", "read back us", "lost"
    );
    for r in results {
        let _ = writeln!(
            out,
            "{:<12} {:<8} {:>8} {:>7} {:>11} {:>10.0} {:>13.2} {:>8}",
            r.profile,
            r.mode,
            r.keys,
            r.workers,
            r.increments,
            r.per_second,
            r.read_back_us,
            r.lost_increments
        );
    }
    if let [m, rmw] = results {
        let _ = writeln!(
            out,
            "merge / get+put: {:.2}x increments per second",
            m.per_second / rmw.per_second.max(f64::MIN_POSITIVE)
        );
    }
    out
}
