//! `cairn-bench --suite compression`: what a heavier codec on a compaction worker buys in
//! bytes and costs in CPU (issue 24). `--keys` rows of `--value-size` bytes, text like a
//! service's records (a few fields from small vocabularies and a sentence of common words,
//! not random bytes, which no codec shrinks), are imported and compacted into the deepest
//! level. Then for each codec: one compaction server starts in this process on loopback,
//! its store writing every level with that codec; the database reopens with it as its
//! compactor, and one full compaction, which rewrites the whole deepest level on the server,
//! is timed with the CPU it took; a full scan then times what the reader pays to decode.

use crate::loaded::key;
use anyhow::{Context, Result};
use bytes::Bytes;
use cairn::{Compression, Config, KeyRange};
use futures::TryStreamExt;
use serde::Serialize;
use std::fmt::Write as _;
use std::path::Path;
use std::time::Instant;

#[derive(Debug, Serialize)]
pub struct CompressionResult {
    pub profile: String,
    pub keys: u64,
    pub codec: String,
    /// The deepest level's bytes after the worker rewrote it.
    pub bytes: u64,
    /// Those bytes against the uncompressed ones.
    pub ratio: f64,
    pub compaction_seconds: f64,
    /// CPU this process spent in the compaction: the worker's merge and encoding (the
    /// engine waits), and over `none`'s, what the codec cost.
    pub cpu_seconds: f64,
    pub codec_cpu_seconds: f64,
    /// A full scan after it: what readers pay to decode.
    pub scan_seconds: f64,
}

const CODECS: [Compression; 6] = [
    Compression::None,
    Compression::Lz4,
    Compression::Zstd(1),
    Compression::Zstd(3),
    Compression::Zstd(9),
    Compression::Zstd(19),
];

/// Row `i`: the same for a given `i`, so every codec sees the same bytes.
fn row(i: u64, size: usize) -> Bytes {
    const CITIES: [&str; 8] = [
        "Lisbon", "Osaka", "Denver", "Nairobi", "Tallinn", "Recife", "Perth", "Quebec",
    ];
    const WORDS: [&str; 16] = [
        "order",
        "shipped",
        "late",
        "customer",
        "asked",
        "refund",
        "the",
        "parcel",
        "was",
        "left",
        "at",
        "door",
        "and",
        "signed",
        "by",
        "neighbour",
    ];
    let mut x = i.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut s = format!(
        "{{\"id\":{i},\"user\":\"u{:05}\",\"city\":\"{}\",\"amount\":{}.{:02},\"note\":\"",
        next() % 20_000,
        CITIES[(next() % 8) as usize],
        next() % 500,
        next() % 100
    );
    while s.len() + 3 < size {
        s.push_str(WORDS[(next() % 16) as usize]);
        s.push(' ');
    }
    s.truncate(size.saturating_sub(2));
    s.push_str("\"}");
    Bytes::from(s)
}

pub async fn run(
    config: &Config,
    profile: &str,
    base: &Path,
    keys: u64,
    value_size: usize,
) -> Result<Vec<CompressionResult>> {
    let mut c = crate::loaded::in_base(config, base);
    c.storage.compression = Some(Compression::None);
    c.storage.compression_per_level = None;
    let router = cairn::open_router(&c)
        .await
        .context("opening the database")?;
    let rows = (0..keys).map(move |i| Ok((key(i), row(i, value_size))));
    router.import(futures::stream::iter(rows)).await?;
    router.compact().await?;
    router.close().await?;
    let mut results: Vec<CompressionResult> = Vec::new();
    for codec in CODECS {
        let mut worker = c.clone();
        worker.storage.compression_per_level = Some(vec![codec]);
        let servers = crate::workers::start(&worker, 1).await?;
        let db = crate::workers::pooled(&c, &servers);
        let router = cairn::open_router(&db).await.context("reopening")?;
        let (compaction_seconds, cpu_seconds) = crate::workers::timed_compaction(&router).await?;
        let bytes = crate::loaded::table_bytes(&router).await;
        let t = Instant::now();
        let scanned: u64 = router
            .scan(KeyRange::all(), None)
            .await?
            .try_fold(0u64, |n, _| async move { Ok(n + 1) })
            .await?;
        let scan_seconds = t.elapsed().as_secs_f64();
        anyhow::ensure!(scanned == keys, "scanned {scanned} rows of {keys}");
        router.close().await?;
        crate::workers::stop(servers).await?;
        let (raw, raw_cpu) = results
            .first()
            .map_or((bytes, cpu_seconds), |r| (r.bytes, r.cpu_seconds));
        results.push(CompressionResult {
            profile: profile.to_string(),
            keys,
            codec: codec.to_string(),
            bytes,
            ratio: bytes as f64 / raw as f64,
            compaction_seconds,
            cpu_seconds,
            codec_cpu_seconds: cpu_seconds - raw_cpu,
            scan_seconds,
        });
    }
    Ok(results)
}

pub fn report(results: &[CompressionResult]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<12} {:>10} {:>8} {:>9} {:>7} {:>10} {:>8} {:>11} {:>8}",
        "profile", "keys", "codec", "MB", "ratio", "compact s", "cpu s", "codec cpu s", "scan s"
    );
    for r in results {
        let _ = writeln!(
            out,
            "{:<12} {:>10} {:>8} {:>9.1} {:>7.3} {:>10.2} {:>8.2} {:>11.2} {:>8.2}",
            r.profile,
            r.keys,
            r.codec,
            r.bytes as f64 / 1e6,
            r.ratio,
            r.compaction_seconds,
            r.cpu_seconds,
            r.codec_cpu_seconds,
            r.scan_seconds
        );
    }
    out
}
