//! `cairn-bench --suite range-delete`: what a range delete costs, and what reads cost after
//! one. `--keys` entries of `--value-size` bytes are imported and compacted; then one caller
//! times single puts, one `delete_range` over the first half of the keys, and point reads and
//! scans of `--scan-length` (over the half still live) at four moments: before the delete,
//! with its tombstone in the memtable, once flushed into a table, and once a compaction has
//! applied it (after an unreported round that fills the caches, as before the first). Every read checks what it gets: a key of the deleted half is absent, one of
//! the other half is there. Last, 200 range deletes over slices of the deleted half are
//! timed for a median.

use crate::loaded::{key, loaded};
use anyhow::{Result, ensure};
use bytes::Bytes;
use cairn::{Config, KeyRange, Router};
use futures::TryStreamExt;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use std::fmt::Write as _;
use std::path::Path;
use std::time::Instant;

/// Reads per phase: enough for a stable mean on a noisy machine, few enough to stay short.
const GETS: u64 = 20_000;
const SCANS: u64 = 2_000;

#[derive(Debug, Serialize)]
pub struct RangeDeleteResult {
    pub profile: String,
    pub keys: u64,
    /// The median of 200 single puts.
    pub put_us: f64,
    /// One put just before the delete.
    pub put_before_delete_us: f64,
    /// One `delete_range` over `keys / 2` keys.
    pub delete_range_us: f64,
    /// The median of 200 more, each over `keys / 400` keys.
    pub delete_range_median_us: f64,
    pub phases: Vec<Phase>,
}

#[derive(Debug, Serialize)]
pub struct Phase {
    pub name: &'static str,
    pub get_us: f64,
    pub scan_us: f64,
}

pub async fn run(
    config: &Config,
    profile: &str,
    base: &Path,
    keys: u64,
    value_size: usize,
    scan_length: usize,
) -> Result<RangeDeleteResult> {
    ensure!(keys >= 2, "the range-delete suite needs at least 2 keys");
    let router = loaded(config, base, keys, value_size).await?;
    // Runs the range-delete path once before it is timed: a first call pays for page faults
    // of code and memory no write has touched yet. The compaction drops the tombstone, so
    // that the first phase reads with none in view.
    router.delete_range("warm-up", "warm-up~").await?;
    router.compact().await?;
    let value = Bytes::from(vec![b'v'; value_size]);

    let mut puts = Vec::with_capacity(200);
    for i in 0..200u64 {
        let t = Instant::now();
        router.put(format!("put{i:04}"), value.clone()).await?;
        puts.push(t.elapsed().as_secs_f64() * 1e6);
    }
    puts.sort_by(f64::total_cmp);
    let put_us = puts[puts.len() / 2];

    let half = keys / 2;
    // Once unreported, so that the first phase does not pay for filling the caches.
    read_phase(&router, "warm-up", keys, None, scan_length).await?;
    let mut phases = vec![read_phase(&router, "before", keys, None, scan_length).await?];
    // A put at the same moment, the fair yardstick for the one delete: the first write after
    // a long read phase pays for what the reads pushed out of the caches.
    let t = Instant::now();
    router.put("put-before-delete", value.clone()).await?;
    let put_before_delete_us = t.elapsed().as_secs_f64() * 1e6;
    let t = Instant::now();
    router.delete_range(key(0), key(half)).await?;
    let delete_range_us = t.elapsed().as_secs_f64() * 1e6;
    phases.push(read_phase(&router, "in memtable", keys, Some(half), scan_length).await?);
    router.flush().await?;
    phases.push(read_phase(&router, "in a table", keys, Some(half), scan_length).await?);
    router.compact().await?;
    // The compaction rewrote every table: warm the cache for them as for the first phase.
    read_phase(&router, "warm-up", keys, Some(half), scan_length).await?;
    phases.push(read_phase(&router, "compacted", keys, Some(half), scan_length).await?);
    // 200 more, each over a slice of the deleted half: the median, as for the puts.
    let mut deletes = Vec::with_capacity(200);
    for i in 0..200 {
        let (from, to) = (half * i / 200, half * (i + 1) / 200);
        let t = Instant::now();
        router.delete_range(key(from), key(to)).await?;
        deletes.push(t.elapsed().as_secs_f64() * 1e6);
    }
    deletes.sort_by(f64::total_cmp);
    let delete_range_median_us = deletes[deletes.len() / 2];
    router.close().await?;
    Ok(RangeDeleteResult {
        profile: profile.to_string(),
        keys,
        put_us,
        put_before_delete_us,
        delete_range_us,
        delete_range_median_us,
        phases,
    })
}

/// Mean microseconds of a point read of any key, and of a scan from a key of the live half;
/// keys below `deleted` must read as absent.
async fn read_phase(
    router: &Router,
    name: &'static str,
    keys: u64,
    deleted: Option<u64>,
    scan_length: usize,
) -> Result<Phase> {
    let mut rng = StdRng::seed_from_u64(7);
    let live_from = deleted.unwrap_or(0);
    let t = Instant::now();
    for _ in 0..GETS {
        let i = rng.random_range(0..keys);
        let got = router.get(&key(i)).await?;
        ensure!(
            got.is_some() == (i >= live_from),
            "{name}: key {i} read as {}",
            if got.is_some() { "present" } else { "absent" }
        );
    }
    let get_us = t.elapsed().as_secs_f64() * 1e6 / GETS as f64;
    let t = Instant::now();
    for _ in 0..SCANS {
        let from = rng.random_range(live_from..keys);
        let range = KeyRange::new(Some(key(from)), None);
        let got: Vec<_> = router
            .scan(range, Some(scan_length))
            .await?
            .try_collect()
            .await?;
        ensure!(
            !got.is_empty(),
            "{name}: a scan from key {from} found nothing"
        );
    }
    let scan_us = t.elapsed().as_secs_f64() * 1e6 / SCANS as f64;
    Ok(Phase {
        name,
        get_us,
        scan_us,
    })
}

pub fn report(results: &[RangeDeleteResult]) -> String {
    let mut out = String::new();
    for r in results {
        let _ = writeln!(
            out,
            "{}: {} keys; a put takes {:.1} us (median), {:.1} us just before the delete; \
             deleting {} keys by range {:.1} us, {} keys {:.1} us (median)",
            r.profile,
            r.keys,
            r.put_us,
            r.put_before_delete_us,
            r.keys / 2,
            r.delete_range_us,
            r.keys / 400,
            r.delete_range_median_us
        );
        let _ = writeln!(
            out,
            "  {:<12} {:>10} {:>12}",
            "tombstone", "get us", "scan us"
        );
        for p in &r.phases {
            let _ = writeln!(
                out,
                "  {:<12} {:>10.2} {:>12.2}",
                p.name, p.get_us, p.scan_us
            );
        }
    }
    out
}
