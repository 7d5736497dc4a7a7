//! `cairn-bench --suite checkpoint`: how long a checkpoint takes to make, against the size of
//! the database. `--keys` entries of `--value-size` bytes are imported and compacted, one put
//! leaves something to flush, and 20 checkpoints are made one after another (each flushes,
//! then writes one manifest version) and deleted; the first and the median are reported with
//! the database's size. Nothing is copied, so the time should not grow with the size.

use crate::loaded::loaded;
use anyhow::Result;
use cairn::{CheckpointOp, Config};
use serde::Serialize;
use std::fmt::Write as _;
use std::path::Path;
use std::time::Instant;

#[derive(Debug, Serialize)]
pub struct CheckpointResult {
    pub profile: String,
    pub keys: u64,
    /// The bytes of the database's tables.
    pub bytes: u64,
    pub first_ms: f64,
    pub median_ms: f64,
    pub delete_median_ms: f64,
}

pub async fn run(
    config: &Config,
    profile: &str,
    base: &Path,
    keys: u64,
    value_size: usize,
) -> Result<CheckpointResult> {
    let router = loaded(config, base, keys, value_size).await?;
    let bytes = router
        .stats()
        .await
        .iter()
        .filter_map(|s| s.stats.as_ref().ok())
        .flat_map(|s| s.levels.iter().map(|l| l.bytes))
        .sum();
    let (mut made, mut deleted) = (Vec::new(), Vec::new());
    for i in 0..20 {
        router.put(format!("put{i}"), "v").await?;
        let t = Instant::now();
        router
            .checkpoint(CheckpointOp::Create(format!("c{i}")))
            .await?;
        made.push(t.elapsed().as_secs_f64() * 1e3);
    }
    for i in 0..20 {
        let t = Instant::now();
        router
            .checkpoint(CheckpointOp::Delete(format!("c{i}")))
            .await?;
        deleted.push(t.elapsed().as_secs_f64() * 1e3);
    }
    router.close().await?;
    let first_ms = made[0];
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    Ok(CheckpointResult {
        profile: profile.to_string(),
        keys,
        bytes,
        first_ms,
        median_ms: median(made),
        delete_median_ms: median(deleted),
    })
}

pub fn report(results: &[CheckpointResult]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<16} {:>10} {:>10} {:>10} {:>10} {:>12}",
        "profile", "keys", "MB", "first ms", "median ms", "delete ms"
    );
    for r in results {
        let _ = writeln!(
            out,
            "{:<16} {:>10} {:>10.1} {:>10.2} {:>10.2} {:>12.2}",
            r.profile,
            r.keys,
            r.bytes as f64 / 1e6,
            r.first_ms,
            r.median_ms,
            r.delete_median_ms
        );
    }
    out
}
