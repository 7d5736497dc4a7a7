//! `cairn-bench --suite checkpoint`: how long a checkpoint takes to make, against the size of
//! the database. `--keys` entries of `--value-size` bytes are imported and compacted, one put
//! leaves something to flush, and 20 checkpoints are made one after another (each flushes,
//! then writes one manifest version) and deleted; the first and the median are reported with
//! the database's size. On a one-shard profile whose tables sit at a path or URL, 5 clones
//! of the last checkpoint are made beside them and timed too. Nothing is copied, so neither
//! time should grow with the size.

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
    /// `None` where the profile's stores cannot be named for a clone (several shards, or a
    /// storage server).
    pub clone_median_ms: Option<f64>,
}

pub async fn run(
    config: &Config,
    profile: &str,
    base: &Path,
    keys: u64,
    value_size: usize,
) -> Result<CheckpointResult> {
    let router = loaded(config, base, keys, value_size).await?;
    let bytes = crate::loaded::table_bytes(&router).await;
    let (mut made, mut deleted) = (Vec::new(), Vec::new());
    for i in 0..20 {
        router.put(format!("put{i}"), "v").await?;
        let t = Instant::now();
        router
            .checkpoint(CheckpointOp::Create(format!("c{i}")))
            .await?;
        made.push(t.elapsed().as_secs_f64() * 1e3);
    }
    // Clones go beside the tables: `<tables>-clone<i>`, from where the manifest lives.
    let stats = router.stats().await;
    let beside = match stats.as_slice() {
        [one] => one.stats.as_ref().ok().and_then(|s| {
            let at = s.manifest_location.strip_suffix("/manifest")?;
            (at.starts_with('/') || at.contains("://")).then(|| at.to_string())
        }),
        _ => None,
    };
    let mut cloned = Vec::new();
    if let Some(tables) = beside {
        for i in 0..5 {
            let t = Instant::now();
            router
                .checkpoint(CheckpointOp::Clone {
                    name: "c19".into(),
                    into: format!("{tables}-clone{i}"),
                })
                .await?;
            cloned.push(t.elapsed().as_secs_f64() * 1e3);
        }
    }
    // The clones hold the last one.
    let last = if cloned.is_empty() { 20 } else { 19 };
    for i in 0..last {
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
        clone_median_ms: (!cloned.is_empty()).then(|| median(cloned)),
    })
}

pub fn report(results: &[CheckpointResult]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<16} {:>10} {:>10} {:>10} {:>10} {:>12} {:>10}",
        "profile", "keys", "MB", "first ms", "median ms", "delete ms", "clone ms"
    );
    for r in results {
        let _ = writeln!(
            out,
            "{:<16} {:>10} {:>10.1} {:>10.2} {:>10.2} {:>12.2} {:>10}",
            r.profile,
            r.keys,
            r.bytes as f64 / 1e6,
            r.first_ms,
            r.median_ms,
            r.delete_median_ms,
            r.clone_median_ms
                .map_or_else(|| "-".to_string(), |ms| format!("{ms:.2}"))
        );
    }
    out
}
