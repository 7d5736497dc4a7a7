//! Runs one workload against one target: `concurrency` workers issue operations until the
//! fill is done or the duration is over, each recording its latencies in its own histogram.
//! The histograms are merged at the end; nothing is shared per operation but two counters.

use crate::measure;
use crate::target::Target;
use crate::workload::{Op, Shared, key_bytes};
use bytes::Bytes;
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

pub struct RunSpec {
    pub concurrency: usize,
    pub duration: Duration,
    pub value_size: usize,
    /// Show a progress bar (on a terminal).
    pub progress: bool,
    pub label: String,
    /// Server processes whose CPU is reported beside the bench's own (`--server-pid`).
    pub server_pids: Vec<u32>,
}

/// One row of the results: what the README, the table and `--json` show.
#[derive(Debug, Clone, Serialize)]
pub struct RunResult {
    pub profile: String,
    pub workload: String,
    pub distribution: String,
    pub concurrency: usize,
    pub value_size: usize,
    pub keys: u64,
    pub ops: u64,
    pub errors: u64,
    pub seconds: f64,
    pub ops_per_sec: f64,
    pub p50_us: f64,
    pub p95_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub max_us: f64,
    /// User + system CPU of the bench process (engine background threads included).
    pub cpu_seconds: f64,
    /// User + system CPU of the `--server-pid` processes over the same window.
    pub server_cpu_seconds: Option<f64>,
    /// Bytes passed to write(2) by the process during the run.
    pub bytes_written: Option<u64>,
    pub journal_bytes: Option<u64>,
    pub table_bytes: Option<u64>,
    /// `bytes_written` over the key and value bytes the workload wrote.
    pub write_amplification: Option<f64>,
    pub peak_rss_bytes: Option<u64>,
    /// `--role reader`: from the writer's acknowledgement to this reader's sight of a write.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub staleness: Option<crate::replica::Staleness>,
}

struct Outcome {
    /// The writer of `readwhilewriting`, reported on a row of its own.
    writer: bool,
    hist: Histogram<u64>,
    errors: u64,
    written_payload: u64,
    first_error: Option<String>,
}

/// A pool of random bytes that values are sliced from, so making a value allocates nothing.
#[derive(Clone)]
pub struct Values {
    pool: Bytes,
    size: usize,
}

impl Values {
    pub fn new(size: usize) -> Self {
        let mut rng = SmallRng::seed_from_u64(0xCA1F);
        let pool: Vec<u8> = (0..size + 4096).map(|_| rng.random()).collect();
        Values {
            pool: Bytes::from(pool),
            size,
        }
    }

    fn pick(&self, rng: &mut SmallRng) -> Bytes {
        let off = rng.random_range(0..4096);
        self.pool.slice(off..off + self.size)
    }
}

async fn execute(
    target: &dyn Target,
    op: Op,
    values: &Values,
    rng: &mut SmallRng,
) -> anyhow::Result<u64> {
    match op {
        Op::Put(k) => {
            let key = key_bytes(k);
            let v = values.pick(rng);
            let n = (key.len() + v.len()) as u64;
            target.put(key, v).await?;
            Ok(n)
        }
        Op::Get(k) => {
            target.get(key_bytes(k)).await?;
            Ok(0)
        }
        Op::Scan(k, n) => {
            target.scan(key_bytes(k), n).await?;
            Ok(0)
        }
        Op::Aggregate(start, len) => {
            target
                .aggregate(key_bytes(start), key_bytes(start + len))
                .await?;
            Ok(0)
        }
        Op::MultiGet(ks) => {
            target
                .multi_get(ks.into_iter().map(key_bytes).collect())
                .await?;
            Ok(0)
        }
        Op::ReadModifyWrite(k) => {
            let key = key_bytes(k);
            target.get(key.clone()).await?;
            let v = values.pick(rng);
            let n = (key.len() + v.len()) as u64;
            target.put(key, v).await?;
            Ok(n)
        }
    }
}

async fn worker(
    target: Arc<dyn Target>,
    shared: Arc<Shared>,
    values: Values,
    stop: Arc<AtomicBool>,
    done: Arc<AtomicU64>,
    index: usize,
    deadline: Instant,
) -> Outcome {
    let mut rng = SmallRng::seed_from_u64(index as u64 + 1);
    let mut out = Outcome {
        writer: shared.is_writer(index),
        hist: Histogram::new_with_bounds(1, 3_600_000_000_000, 3).expect("valid histogram bounds"),
        errors: 0,
        written_payload: 0,
        first_error: None,
    };
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        // Cache hits complete without awaiting anything, so a worker must both watch the
        // clock itself and yield now and then, or it starves every other task on its thread.
        n += 1;
        if n.is_multiple_of(64) {
            if Instant::now() >= deadline {
                stop.store(true, Ordering::Relaxed);
                break;
            }
            tokio::task::yield_now().await;
        }
        let Some(op) = shared.next(&mut rng, index) else {
            break;
        };
        let start = Instant::now();
        match execute(target.as_ref(), op, &values, &mut rng).await {
            Ok(n) => out.written_payload += n,
            Err(e) => {
                out.errors += 1;
                out.first_error.get_or_insert_with(|| format!("{e:#}"));
            }
        }
        let _ = out.hist.record(start.elapsed().as_nanos().max(1) as u64);
        done.fetch_add(1, Ordering::Relaxed);
    }
    out
}

/// Runs the workload; returns one row, or for `readwhilewriting` the readers' row and then
/// the writer's (CPU, bytes and memory are the whole run's on both).
pub async fn run(
    target: Arc<dyn Target>,
    shared: Arc<Shared>,
    spec: &RunSpec,
) -> anyhow::Result<Vec<RunResult>> {
    let values = Values::new(spec.value_size);
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let bar = progress_bar(spec, &shared);

    measure::reset_peak_rss();
    let written_before = target.written().await;
    let io_before = measure::bytes_written();
    let cpu_before = measure::cpu_seconds();
    let servers_before = measure::servers_cpu_seconds(&spec.server_pids);
    let start = Instant::now();

    let deadline = start + spec.duration;
    let mut handles = Vec::with_capacity(spec.concurrency);
    let blocking = target.blocking();
    for w in 0..spec.concurrency {
        let args = (
            target.clone(),
            shared.clone(),
            values.clone(),
            stop.clone(),
            done.clone(),
            w,
            deadline,
        );
        let (tx, rx) = tokio::sync::oneshot::channel();
        if blocking {
            std::thread::spawn(move || {
                let _ = tx.send(futures::executor::block_on(worker(
                    args.0, args.1, args.2, args.3, args.4, args.5, args.6,
                )));
            });
        } else {
            tokio::spawn(async move {
                let _ =
                    tx.send(worker(args.0, args.1, args.2, args.3, args.4, args.5, args.6).await);
            });
        }
        handles.push(rx);
    }
    let ticker = {
        let (stop, done, bar) = (stop.clone(), done.clone(), bar.clone());
        let duration = spec.duration;
        let fill = shared.workload.is_fill();
        tokio::spawn(async move {
            let start = Instant::now();
            while !stop.load(Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_millis(100)).await;
                let elapsed = start.elapsed();
                if fill {
                    bar.set_position(done.load(Ordering::Relaxed));
                } else {
                    bar.set_position(elapsed.as_millis().min(duration.as_millis()) as u64);
                }
                bar.set_message(format!("{} ops", done.load(Ordering::Relaxed)));
                if elapsed >= duration {
                    stop.store(true, Ordering::Relaxed);
                }
            }
        })
    };

    let mut outcomes = Vec::with_capacity(handles.len());
    for h in handles {
        outcomes.push(h.await?);
    }
    let seconds = start.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    let _ = ticker.await;
    bar.finish_and_clear();
    let cpu_seconds = measure::cpu_seconds() - cpu_before;
    let server_cpu_seconds = match (
        servers_before,
        measure::servers_cpu_seconds(&spec.server_pids),
    ) {
        (Some(a), Some(b)) => Some(b - a),
        _ => None,
    };
    let io = match (io_before, measure::bytes_written()) {
        (Some(a), Some(b)) => Some(b.saturating_sub(a)),
        _ => None,
    };
    let written = target.written().await;
    let delta = |a: Option<u64>, b: Option<u64>| Some(b?.saturating_sub(a?));
    let payload: u64 = outcomes.iter().map(|o| o.written_payload).sum();
    let peak_rss_bytes = measure::peak_rss();

    let mut rows = Vec::new();
    for writer in [false, true] {
        let group: Vec<&Outcome> = outcomes.iter().filter(|o| o.writer == writer).collect();
        if group.is_empty() {
            continue;
        }
        let mut hist = Histogram::<u64>::new_with_bounds(1, 3_600_000_000_000, 3)?;
        let mut errors = 0;
        for o in &group {
            hist.add(&o.hist)?;
            errors += o.errors;
        }
        if let Some(e) = group.iter().find_map(|o| o.first_error.as_ref()) {
            eprintln!("{}: {errors} operations failed; the first: {e}", spec.label);
        }
        let mut name = shared.workload.name().to_string();
        if writer {
            name.push_str("-writer");
        }
        let us = |q: f64| hist.value_at_quantile(q) as f64 / 1000.0;
        let ops = hist.len();
        rows.push(RunResult {
            profile: String::new(),
            workload: name,
            distribution: format!("{:?}", shared.distribution).to_lowercase(),
            concurrency: group.len(),
            value_size: spec.value_size,
            keys: shared.params.keys,
            ops,
            errors,
            seconds,
            ops_per_sec: ops as f64 / seconds.max(1e-9),
            p50_us: us(0.50),
            p95_us: us(0.95),
            p99_us: us(0.99),
            p999_us: us(0.999),
            max_us: hist.max() as f64 / 1000.0,
            cpu_seconds,
            server_cpu_seconds,
            bytes_written: io,
            journal_bytes: delta(written_before.journal, written.journal),
            table_bytes: delta(written_before.tables, written.tables),
            write_amplification: io
                .filter(|_| payload > 0)
                .map(|b| b as f64 / payload as f64),
            peak_rss_bytes,
            staleness: None,
        });
    }
    Ok(rows)
}

fn progress_bar(spec: &RunSpec, shared: &Shared) -> ProgressBar {
    if !spec.progress {
        return ProgressBar::hidden();
    }
    let (len, template) = if shared.workload.is_fill() {
        (
            shared.params.keys,
            "{prefix:>24} [{bar:30}] {pos}/{len} keys {msg}",
        )
    } else {
        (
            spec.duration.as_millis() as u64,
            "{prefix:>24} [{bar:30}] {elapsed} {msg}",
        )
    };
    let bar = ProgressBar::new(len);
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_prefix(spec.label.clone());
    bar
}
