//! `cairn-bench --suite router`: what a sharded profile costs, in one run against one open
//! router. A bulk import of `--keys` entries of `--value-size` bytes in shuffled order; point
//! gets on each shard, one caller at a time (latency, and the CPU each get took in this process
//! and in the `--server-pid` processes, local vs remote), beside a bare TCP round trip on
//! loopback, the floor under any remote call; a 100-key multi-get against 100 other keys read
//! one by one (after compacting every shard); count and sum over `--keys` numeric entries,
//! pushed down against pulling every row to the router, with the bytes that crossed the
//! loopback interface (`/proc/net/dev`), which is where remote shards send their answers.

use crate::measure;
use anyhow::{Context, Result, ensure};
use bytes::Bytes;
use cairn::{AggregateOp, AggregateValue, KeyRange, Router, ValueType};
use hdrhistogram::Histogram;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

pub struct SuiteArgs {
    pub keys: u64,
    pub value_size: usize,
    /// Seconds of gets per shard, and of multi-get rounds.
    pub seconds: f64,
    pub batch: usize,
    pub server_pids: Vec<u32>,
}

#[derive(Debug, Serialize)]
pub struct SuiteResult {
    pub profile: String,
    pub shards: Vec<String>,
    pub import: Phase,
    pub import_numbers: Phase,
    pub compact_seconds: f64,
    pub gets: Vec<GetResult>,
    pub tcp_ping: PingResult,
    pub multi_get: MultiGetResult,
    pub aggregate_pushdown: AggregateResult,
    pub aggregate_pulled: AggregateResult,
}

/// A timed step, with the CPU both sides spent on it.
#[derive(Debug, Serialize)]
pub struct Phase {
    pub entries: u64,
    pub seconds: f64,
    pub entries_per_sec: f64,
    pub cpu_seconds: f64,
    pub server_cpu_seconds: Option<f64>,
}

#[derive(Debug, Serialize)]
pub struct GetResult {
    pub shard: String,
    pub remote: bool,
    pub gets: u64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub mean_us: f64,
    /// CPU this process spent per get (router, client, and for a local shard the engine).
    pub cpu_us_per_get: f64,
    /// CPU the `--server-pid` processes spent per get, when given: a remote get's server side.
    pub server_cpu_us_per_get: Option<f64>,
}

/// The machine's floor for any remote call: a bare TCP round trip on loopback.
#[derive(Debug, Serialize)]
pub struct PingResult {
    pub round_trips: u64,
    pub p50_us: f64,
    pub p99_us: f64,
    /// CPU per round trip of the calling end and of the echoing end.
    pub cpu_us_per_round_trip: f64,
    pub echo_cpu_us_per_round_trip: f64,
}

/// 64 bytes to an echo thread and back over 127.0.0.1 with `TCP_NODELAY`, blocking sockets,
/// for `seconds`: what a remote get costs before any gRPC, HTTP/2 or engine work.
fn tcp_ping(seconds: f64) -> Result<PingResult> {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    // Returns the CPU seconds its echoing took.
    let echo = std::thread::spawn(move || -> std::io::Result<f64> {
        let (mut s, _) = listener.accept()?;
        s.set_nodelay(true)?;
        let before = measure::thread_cpu_seconds();
        let mut buf = [0u8; 64];
        loop {
            if s.read_exact(&mut buf).is_err() {
                return Ok(measure::thread_cpu_seconds() - before);
            }
            s.write_all(&buf)?;
        }
    });
    let mut s = std::net::TcpStream::connect(addr)?;
    s.set_nodelay(true)?;
    let mut hist = Histogram::<u64>::new(3)?;
    let mut buf = [7u8; 64];
    let cpu_before = measure::thread_cpu_seconds();
    let end = Instant::now() + Duration::from_secs_f64(seconds);
    while Instant::now() < end {
        let t = Instant::now();
        s.write_all(&buf)?;
        s.read_exact(&mut buf)?;
        hist.record(t.elapsed().as_nanos() as u64)?;
    }
    let cpu = measure::thread_cpu_seconds() - cpu_before;
    drop(s);
    let echo_cpu = echo
        .join()
        .map_err(|_| anyhow::anyhow!("the echo thread panicked"))??;
    let per_trip = |cpu: f64| cpu * 1e6 / hist.len().max(1) as f64;
    Ok(PingResult {
        cpu_us_per_round_trip: per_trip(cpu),
        echo_cpu_us_per_round_trip: per_trip(echo_cpu),
        round_trips: hist.len(),
        p50_us: hist.value_at_quantile(0.5) as f64 / 1000.0,
        p99_us: hist.value_at_quantile(0.99) as f64 / 1000.0,
    })
}

#[derive(Debug, Serialize)]
pub struct MultiGetResult {
    pub keys_per_call: usize,
    /// Where the keys live: "remote shards" or "all shards".
    pub keys_from: String,
    pub rounds: u64,
    pub multi_get_p50_us: f64,
    pub single_gets_p50_us: f64,
    /// single_gets_p50_us / multi_get_p50_us.
    pub speedup: f64,
}

#[derive(Debug, Serialize)]
pub struct AggregateResult {
    pub rows: u64,
    pub sum: String,
    /// Median of the repeats.
    pub seconds: f64,
    pub repeats: usize,
    /// Bytes received on the loopback interface during one call.
    pub loopback_bytes: Option<u64>,
}

/// Bytes received on `lo` so far.
fn loopback_bytes() -> Option<u64> {
    let dev = std::fs::read_to_string("/proc/net/dev").ok()?;
    let line = dev.lines().find(|l| l.trim_start().starts_with("lo:"))?;
    line.split_once(':')?
        .1
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

fn cpu(pids: &[u32]) -> (f64, Option<f64>) {
    (measure::cpu_seconds(), measure::servers_cpu_seconds(pids))
}

fn phase(entries: u64, start: Instant, before: (f64, Option<f64>), pids: &[u32]) -> Phase {
    let seconds = start.elapsed().as_secs_f64();
    let after = cpu(pids);
    Phase {
        entries,
        seconds,
        entries_per_sec: entries as f64 / seconds.max(1e-9),
        cpu_seconds: after.0 - before.0,
        server_cpu_seconds: match (before.1, after.1) {
            (Some(a), Some(b)) => Some(b - a),
            _ => None,
        },
    }
}

fn key(i: u64) -> Bytes {
    Bytes::from(format!("key{i:012}"))
}

fn number_key(i: u64) -> Bytes {
    Bytes::from(format!("num{i:012}"))
}

/// Every index below `n` once, in a scrambled order: `i * STEP mod n`, a bijection when STEP
/// and `n` share no factor (else plain order).
fn shuffled(n: u64) -> impl Iterator<Item = u64> {
    const STEP: u64 = 2_654_435_761; // a prime
    let step = if n > 1 && gcd(STEP % n, n) == 1 {
        STEP % n
    } else {
        1
    };
    (0..n).map(move |i| (i * step) % n.max(1))
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 { a } else { gcd(b, a % b) }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

/// Imports `entries` (made before the clock starts) and times it, with both sides' CPU.
async fn timed_import(
    router: &Router,
    entries: Vec<(Bytes, Bytes)>,
    what: &'static str,
    pids: &[u32],
) -> Result<Phase> {
    let before = cpu(pids);
    let start = Instant::now();
    let n = router
        .import(futures::stream::iter(entries.into_iter().map(Ok)))
        .await
        .context(what)?;
    Ok(phase(n, start, before, pids))
}

pub async fn run(router: &Router, profile: &str, a: &SuiteArgs) -> Result<SuiteResult> {
    let shards: Vec<String> = router
        .shards()
        .iter()
        .map(|s| s.name().to_string())
        .collect();
    let value = Bytes::from(vec![b'v'; a.value_size]);

    // Keys are made before the clock starts: the import is what is measured.
    let entries: Vec<(Bytes, Bytes)> = shuffled(a.keys).map(|i| (key(i), value.clone())).collect();
    let import = timed_import(router, entries, "import", &a.server_pids).await?;
    eprintln!(
        "{profile}: imported {} entries in {:.2}s ({:.0}/s)",
        import.entries, import.seconds, import.entries_per_sec
    );

    let numbers: Vec<(Bytes, Bytes)> = shuffled(a.keys)
        .map(|i| {
            (
                number_key(i),
                Bytes::copy_from_slice(&(i as i64).to_le_bytes()),
            )
        })
        .collect();
    let import_numbers = timed_import(router, numbers, "import numbers", &a.server_pids).await?;

    // As after any bulk load: compacted, so reads and aggregates see settled tables (and the
    // aggregates fold inside the deepest level's tables).
    let start = Instant::now();
    router.compact().await.context("compact")?;
    let compact_seconds = start.elapsed().as_secs_f64();

    // Keys of each shard, for gets that land where they are meant to.
    const PER_SHARD: usize = 10_000;
    let mut per_shard: Vec<Vec<Bytes>> = vec![Vec::new(); shards.len()];
    for k in shuffled(a.keys).map(key) {
        let s = router.shard_of(&k);
        if per_shard[s].len() < PER_SHARD {
            per_shard[s].push(k);
        }
        if per_shard.iter().all(|k| k.len() == PER_SHARD) {
            break;
        }
    }
    let mut rng = SmallRng::seed_from_u64(7);

    let mut gets = Vec::new();
    for (s, keys) in per_shard.iter().enumerate() {
        ensure!(!keys.is_empty(), "no keys for {}", shards[s]);
        for k in keys.iter().take(2000) {
            router.get(k).await?;
        }
        let mut hist = Histogram::<u64>::new(3)?;
        let before = cpu(&a.server_pids);
        let start = Instant::now();
        let end = start + Duration::from_secs_f64(a.seconds);
        let mut i = 0;
        while Instant::now() < end {
            let k = &keys[i % keys.len()];
            let t = Instant::now();
            let v = router.get(k).await?;
            hist.record(t.elapsed().as_nanos() as u64)?;
            ensure!(v.is_some(), "{k:?} was imported but is not found");
            i += 1;
        }
        let spent = phase(hist.len(), start, before, &a.server_pids);
        let per_get = |cpu: f64| cpu * 1e6 / (hist.len().max(1) as f64);
        gets.push(GetResult {
            shard: shards[s].clone(),
            remote: router.shards()[s].is_remote(),
            gets: hist.len(),
            p50_us: hist.value_at_quantile(0.5) as f64 / 1000.0,
            p99_us: hist.value_at_quantile(0.99) as f64 / 1000.0,
            mean_us: hist.mean() / 1000.0,
            cpu_us_per_get: per_get(spent.cpu_seconds),
            server_cpu_us_per_get: spent.server_cpu_seconds.map(per_get),
        });
    }

    let tcp_ping = tcp_ping(a.seconds.min(2.0))?;

    // Multi-get against single gets, on keys of the remote shards when there are any.
    let remote: Vec<usize> = (0..shards.len())
        .filter(|s| router.shards()[*s].is_remote())
        .collect();
    let (pool, keys_from): (Vec<Bytes>, &str) = if remote.is_empty() {
        (per_shard.concat(), "all shards")
    } else {
        (
            remote.iter().flat_map(|s| per_shard[*s].clone()).collect(),
            "remote shards",
        )
    };
    let (mut batched, mut single) = (Vec::new(), Vec::new());
    let end = Instant::now() + Duration::from_secs_f64(a.seconds);
    while Instant::now() < end || batched.len() < 5 {
        // Each side reads keys of its own, so neither warms the caches for the other.
        let mut draw = || -> Vec<Bytes> {
            (0..a.batch)
                .map(|_| pool[rng.random_range(0..pool.len())].clone())
                .collect()
        };
        let (for_multi, for_single) = (draw(), draw());
        let t = Instant::now();
        let got = router.multi_get(&for_multi).await?;
        batched.push(t.elapsed().as_secs_f64() * 1e6);
        ensure!(got.iter().all(Option::is_some), "multi_get missed keys");
        let t = Instant::now();
        for k in &for_single {
            router.get(k).await?;
        }
        single.push(t.elapsed().as_secs_f64() * 1e6);
    }
    let rounds = batched.len() as u64;
    let (mb, sg) = (median(batched), median(single));
    let multi_get = MultiGetResult {
        keys_per_call: a.batch,
        keys_from: keys_from.to_string(),
        rounds,
        multi_get_p50_us: mb,
        single_gets_p50_us: sg,
        speedup: sg / mb.max(1e-9),
    };

    // count and sum over the numeric entries, pushed down and pulled.
    let range = KeyRange::new(Some(Bytes::from("num")), Some(Bytes::from("nun")));
    let want_sum = (a.keys as i128) * (a.keys as i128 - 1) / 2;
    let aggregate = |pushdown: bool, repeats: usize| {
        let range = range.clone();
        async move {
            let mut times = Vec::new();
            let mut bytes = None;
            let mut last = None;
            for _ in 0..repeats {
                let lo = loopback_bytes();
                let t = Instant::now();
                let s = if pushdown {
                    router.aggregate(range.clone(), ValueType::I64).await?
                } else {
                    router
                        .aggregate_by_scan(range.clone(), ValueType::I64)
                        .await?
                };
                times.push(t.elapsed().as_secs_f64());
                bytes = match (lo, loopback_bytes()) {
                    (Some(a), Some(b)) => Some(b - a),
                    _ => None,
                };
                last = Some(s);
            }
            let s = last.context("no repeats")?;
            ensure!(
                s.rows == a.keys && s.result(AggregateOp::Sum) == AggregateValue::Int(want_sum),
                "aggregate gave {} rows, sum {}; expected {} and {want_sum}",
                s.rows,
                s.result(AggregateOp::Sum),
                a.keys
            );
            Ok::<_, anyhow::Error>(AggregateResult {
                rows: s.rows,
                sum: s.result(AggregateOp::Sum).to_string(),
                seconds: median(times),
                repeats,
                loopback_bytes: bytes,
            })
        }
    };
    let aggregate_pushdown = aggregate(true, 5).await?;
    let aggregate_pulled = aggregate(false, 3).await?;

    Ok(SuiteResult {
        profile: profile.to_string(),
        shards,
        import,
        import_numbers,
        compact_seconds,
        gets,
        tcp_ping,
        multi_get,
        aggregate_pushdown,
        aggregate_pulled,
    })
}

fn bytes(b: Option<u64>) -> String {
    match b {
        None => "-".into(),
        Some(b) if b >= 10 << 20 => format!("{:.1} MB", b as f64 / 1_048_576.0),
        Some(b) if b >= 10 << 10 => format!("{:.1} KB", b as f64 / 1024.0),
        Some(b) => format!("{b} B"),
    }
}

pub fn report(r: &SuiteResult, value_size: usize) -> String {
    let mut out = String::new();
    let srv = |p: &Phase| {
        p.server_cpu_seconds
            .map_or(String::new(), |s| format!(", servers {s:.2} s"))
    };
    let _ = writeln!(
        out,
        "\nrouter suite: profile {} ({})",
        r.profile,
        r.shards.join(", ")
    );
    for (name, p, size) in [
        ("import", &r.import, value_size),
        ("import (8-byte numbers)", &r.import_numbers, 8),
    ] {
        let _ = writeln!(
            out,
            "  {name:<24} {} entries of {size} B in {:.2} s: {:.0} entries/s (cpu {:.2} s{})",
            p.entries,
            p.seconds,
            p.entries_per_sec,
            p.cpu_seconds,
            srv(p)
        );
    }
    let _ = writeln!(out, "  compacted every shard in {:.2} s", r.compact_seconds);
    let _ = writeln!(
        out,
        "  {:<36} {:>8} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "get, one caller", "gets", "p50 us", "p99 us", "mean us", "cpu/get", "srv/get"
    );
    for g in &r.gets {
        let server = match (g.remote, g.server_cpu_us_per_get) {
            (true, Some(c)) => format!("{c:.1}"),
            _ => "-".into(),
        };
        let _ = writeln!(
            out,
            "    {:<34} {:>8} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>9}",
            g.shard, g.gets, g.p50_us, g.p99_us, g.mean_us, g.cpu_us_per_get, server
        );
    }
    let p = &r.tcp_ping;
    let _ = writeln!(
        out,
        "    {:<34} {:>8} {:>9.1} {:>9.1} {:>9} {:>9.1} {:>9.1}",
        "(bare TCP round trip on loopback)",
        p.round_trips,
        p.p50_us,
        p.p99_us,
        "",
        p.cpu_us_per_round_trip,
        p.echo_cpu_us_per_round_trip
    );
    let m = &r.multi_get;
    let _ = writeln!(
        out,
        "  multi-get of {} keys ({}), median of {} rounds: one call {:.0} us, {} single gets {:.0} us: {:.1}x",
        m.keys_per_call,
        m.keys_from,
        m.rounds,
        m.multi_get_p50_us,
        m.keys_per_call,
        m.single_gets_p50_us,
        m.speedup
    );
    for (name, x) in [
        ("pushed down", &r.aggregate_pushdown),
        ("rows pulled", &r.aggregate_pulled),
    ] {
        let _ = writeln!(
            out,
            "  count+sum over {} entries, {name}: {:.1} ms (median of {}), {} over loopback; sum {}",
            x.rows,
            x.seconds * 1000.0,
            x.repeats,
            bytes(x.loopback_bytes),
            x.sum
        );
    }
    let _ = writeln!(
        out,
        "  pushdown vs pulled: {:.1}x faster",
        r.aggregate_pulled.seconds / r.aggregate_pushdown.seconds.max(1e-9)
    );
    out
}
