//! `--role writer` and `--role reader`: a database's writer and a read replica in two bench
//! processes against the same remote components or bucket. Beside its workload the writer
//! sets a marker key every 10 ms and logs when each value was acknowledged (`--marks FILE`);
//! the reader (`Db::open_reader`) runs its reads and watches the marker, and at the end
//! reports its staleness: from the writer's acknowledgement of a value to the reader's
//! first sight of it (or of a newer one). Both read the wall clock, so the two processes
//! belong on one machine.

use anyhow::{Context, Result};
use bytes::Bytes;
use cairn::Router;
use hdrhistogram::Histogram;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::watch;

const MARKER: &[u8] = b"__cairn_bench_marker";

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// Staleness as the reader measured it, in milliseconds.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Staleness {
    pub markers: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

/// The writer's marker task: sets the marker to 1, 2, ... and appends `value ack_ns` to
/// `marks` after each acknowledgement, until `stop`.
pub fn spawn_writer(
    db: Arc<Router>,
    marks: PathBuf,
    mut stop: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<Result<u64>> {
    tokio::spawn(async move {
        let mut file = std::fs::File::create(&marks)
            .with_context(|| format!("creating {}", marks.display()))?;
        let mut n = 0u64;
        loop {
            n += 1;
            db.put(Bytes::from_static(MARKER), Bytes::from(n.to_string()))
                .await?;
            writeln!(file, "{n} {}", now_ns())?;
            file.flush()?;
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(10)) => {}
                _ = stop.changed() => return Ok(n),
            }
        }
    })
}

/// The reader's marker task: reads the marker every millisecond and notes when each value
/// (and every value below it not seen before) first became visible, until `stop`.
pub fn spawn_reader(
    db: Arc<Router>,
    mut stop: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<Result<BTreeMap<u64, u64>>> {
    tokio::spawn(async move {
        let mut seen = BTreeMap::new();
        let mut last = None::<u64>;
        loop {
            if let Some(v) = db.get(MARKER).await? {
                let n: u64 = std::str::from_utf8(&v)
                    .ok()
                    .and_then(|s| s.parse().ok())
                    .context("a marker that is not a number")?;
                let at = now_ns();
                // The first value seen may be old news: only what arrives after it counts.
                if let Some(l) = last {
                    for m in l + 1..=n {
                        seen.insert(m, at);
                    }
                }
                last = Some(last.map_or(n, |l| l.max(n)));
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(1)) => {}
                _ = stop.changed() => return Ok(seen),
            }
        }
    })
}

/// Matches what the reader saw with the writer's log.
pub fn staleness(seen: &BTreeMap<u64, u64>, marks: &Path) -> Result<Staleness> {
    let text = std::fs::read_to_string(marks)
        .with_context(|| format!("reading the writer's marks in {}", marks.display()))?;
    let acked: BTreeMap<u64, u64> = text
        .lines()
        .filter_map(|l| {
            let (n, t) = l.split_once(' ')?;
            Some((n.parse().ok()?, t.parse().ok()?))
        })
        .collect();
    let mut hist = Histogram::<u64>::new(3)?;
    for (n, visible) in seen {
        if let Some(ack) = acked.get(n) {
            // Logged just after the acknowledgement: a value may be seen first.
            hist.record(visible.saturating_sub(*ack).max(1) / 1000)?;
        }
    }
    anyhow::ensure!(
        !hist.is_empty(),
        "the reader saw no marker the writer logged in {}: was the writer running, on the same database?",
        marks.display()
    );
    let ms = |us: u64| us as f64 / 1000.0;
    Ok(Staleness {
        markers: hist.len(),
        p50_ms: ms(hist.value_at_quantile(0.5)),
        p99_ms: ms(hist.value_at_quantile(0.99)),
        max_ms: ms(hist.max()),
    })
}
