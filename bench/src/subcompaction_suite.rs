//! `cairn-bench --suite subcompaction`: how much faster one large compaction runs cut into
//! parts on several workers (issue 24; SlateDB's RFC-0028 measured it on 12). `--keys`
//! entries of `--value-size` bytes are imported and compacted into the deepest level. Then,
//! for 1, 2 and 3 workers: that many compaction servers start in this process, on loopback,
//! one job slot each, over the same tables; the database reopens with them as its pool and
//! `compaction.subcompactions` set to their number, and one full compaction, which rewrites
//! the whole deepest level, is timed. The servers and the engine share this machine's cores,
//! so the speed-up is bounded by them.

use crate::loaded::loaded;
use anyhow::{Context, Result};
use cairn::Config;
use serde::Serialize;
use std::fmt::Write as _;
use std::path::Path;

#[derive(Debug, Serialize)]
pub struct SubcompactionResult {
    pub profile: String,
    pub keys: u64,
    /// The bytes the compaction rewrote.
    pub bytes: u64,
    pub workers: usize,
    /// Compactions cut into parts, and the parts, as the database counted them.
    pub split: u64,
    pub parts: u64,
    pub seconds: f64,
    /// CPU this process (engine and servers) spent in it.
    pub cpu_seconds: f64,
    /// One worker's time over this one's.
    pub speedup: f64,
}

pub async fn run(
    config: &Config,
    profile: &str,
    base: &Path,
    keys: u64,
    value_size: usize,
) -> Result<Vec<SubcompactionResult>> {
    let router = loaded(config, base, keys, value_size).await?;
    router.close().await?;
    let mut results: Vec<SubcompactionResult> = Vec::new();
    for workers in 1..=3usize {
        let c = crate::loaded::in_base(config, base);
        let servers = crate::workers::start(&c, workers).await?;
        let mut c = crate::workers::pooled(&c, &servers);
        c.compaction.subcompactions = workers;
        let router = cairn::open_router(&c).await.context("reopening")?;
        let bytes = crate::loaded::table_bytes(&router).await;
        let (seconds, cpu_seconds) = crate::workers::timed_compaction(&router).await?;
        let (split, parts) = router
            .stats()
            .await
            .iter()
            .filter_map(|s| s.stats.as_ref().ok())
            .fold((0, 0), |(a, b), s| {
                (a + s.split_compactions, b + s.subcompactions)
            });
        router.close().await?;
        crate::workers::stop(servers).await?;
        let one = results.first().map_or(seconds, |r| r.seconds);
        results.push(SubcompactionResult {
            profile: profile.to_string(),
            keys,
            bytes,
            workers,
            split,
            parts,
            seconds,
            cpu_seconds,
            speedup: one / seconds,
        });
    }
    Ok(results)
}

pub fn report(results: &[SubcompactionResult]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<12} {:>10} {:>8} {:>8} {:>6} {:>6} {:>10} {:>8} {:>8}",
        "profile", "keys", "MB", "workers", "split", "parts", "seconds", "cpu s", "speedup"
    );
    for r in results {
        let _ = writeln!(
            out,
            "{:<12} {:>10} {:>8.1} {:>8} {:>6} {:>6} {:>10.2} {:>8.2} {:>7.2}x",
            r.profile,
            r.keys,
            r.bytes as f64 / 1e6,
            r.workers,
            r.split,
            r.parts,
            r.seconds,
            r.cpu_seconds,
            r.speedup
        );
    }
    out
}
