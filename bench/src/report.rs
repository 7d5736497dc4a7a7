//! The side-by-side table: for each workload, one row per profile, with the throughput ratio
//! against the first profile.

use crate::run::RunResult;
use std::fmt::Write;

fn mb(b: Option<u64>) -> String {
    b.map_or("-".into(), |b| format!("{:.1}", b as f64 / 1_048_576.0))
}

fn lat(us: f64) -> String {
    if us >= 10_000.0 {
        format!("{:.1}ms", us / 1000.0)
    } else {
        format!("{us:.1}")
    }
}

pub fn table(results: &[RunResult]) -> String {
    let mut out = String::new();
    let mut workloads: Vec<&str> = Vec::new();
    for r in results {
        if !workloads.contains(&r.workload.as_str()) {
            workloads.push(&r.workload);
        }
    }
    for w in workloads {
        let rows: Vec<&RunResult> = results.iter().filter(|r| r.workload == w).collect();
        let first = rows[0];
        let _ = writeln!(
            out,
            "\n{w}  ({} keys, {}-byte values, concurrency {}, {} keys)",
            first.keys, first.value_size, first.concurrency, first.distribution
        );
        let _ = writeln!(
            out,
            "{:<12} {:>10} {:>7} {:>12} {:>7} {:>9} {:>9} {:>9} {:>9} {:>8} {:>9} {:>8} {:>9} {:>6} {:>8}",
            "profile",
            "ops",
            "secs",
            "ops/s",
            "ratio",
            "p50 us",
            "p95 us",
            "p99 us",
            "p999 us",
            "cpu s",
            "cpu us/op",
            "srv cpu",
            "MB wrote",
            "WA",
            "peak MB"
        );
        for r in rows {
            let _ = writeln!(
                out,
                "{:<12} {:>10} {:>7.2} {:>12.0} {:>6.2}x {:>9} {:>9} {:>9} {:>9} {:>8.2} {:>9.1} {:>8} {:>9} {:>6} {:>8}",
                r.profile,
                r.ops,
                r.seconds,
                r.ops_per_sec,
                r.ops_per_sec / first.ops_per_sec.max(1e-9),
                lat(r.p50_us),
                lat(r.p95_us),
                lat(r.p99_us),
                lat(r.p999_us),
                r.cpu_seconds,
                r.cpu_seconds * 1e6 / (r.ops.max(1) as f64),
                r.server_cpu_seconds
                    .map_or("-".into(), |s| format!("{s:.2}")),
                mb(r.bytes_written),
                r.write_amplification
                    .map_or("-".into(), |w| format!("{w:.2}")),
                mb(r.peak_rss_bytes),
            );
            if r.errors > 0 {
                let _ = writeln!(out, "{:<12} {} operations failed", "", r.errors);
            }
        }
    }
    out
}
