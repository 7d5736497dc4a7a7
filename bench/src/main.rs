//! `cairn-bench`: runs the same workloads against one or more config profiles (and, built with
//! `--features rocksdb`, against RocksDB) and prints the results side by side.
//!
//! Without arguments: the default profile of `./cairn.toml`, `put` then `get`, in well under a
//! minute. Each profile runs in its own fresh data directory, so the bench never touches the
//! profile's real `data_dir`.

mod checkpoint_suite;
mod cluster_suite;
mod compression_suite;
mod loaded;
mod measure;
mod merge_suite;
mod range_delete_suite;
mod replica;
mod report;
#[cfg(feature = "rocksdb")]
mod rocks;
mod router_suite;
mod run;
mod sql_suite;
mod subcompaction_suite;
mod takeover_suite;
mod target;
mod transaction_suite;
mod workers;
mod workload;

use anyhow::{Context, Result, bail};
use clap::Parser;
use run::{RunResult, RunSpec};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use target::{CairnTarget, Target};
use tokio::sync::watch;
use workload::{KeyDistribution, Params, Shared, Workload};

#[derive(Parser, Debug)]
#[command(
    name = "cairn-bench",
    version,
    about = "Benchmark Cairn profiles side by side"
)]
struct Args {
    /// Config file whose profiles are benchmarked.
    #[arg(long, default_value = "cairn.toml")]
    config: PathBuf,
    /// Profile to run; repeat for a side-by-side comparison (ratios are against the first).
    /// `rocksdb` is the RocksDB peer (needs `--features rocksdb`).
    #[arg(long = "profile", default_value = "default")]
    profiles: Vec<String>,
    /// Workload to run, in order; repeat for several. Default: put, then get.
    #[arg(long = "workload", value_enum)]
    workloads: Vec<Workload>,
    /// Size of the key space; fills write each key once.
    #[arg(long, default_value_t = 100_000)]
    keys: u64,
    #[arg(long, default_value_t = 100)]
    value_size: usize,
    /// After the load (or a fill), flush and compact so reads come from tables, not memtables.
    #[arg(long)]
    compact_after_load: bool,
    /// Concurrent workers (async tasks; OS threads for a blocking peer such as RocksDB).
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// For `--suite cluster`: after the failover, import this many MB into one shard and
    /// split it under the load, once per size (`100,1000`), timing each split.
    #[arg(long, value_delimiter = ',', value_name = "MB")]
    split_mb: Vec<u64>,
    /// Workers of the untimed load that precedes a read workload when no fill ran before it
    /// (default: the larger of 64 and --concurrency).
    #[arg(long)]
    load_concurrency: Option<usize>,
    /// Seconds each non-fill workload runs; also the limit for a fill.
    #[arg(long, default_value_t = 5.0)]
    duration: f64,
    /// Key distribution; by default uniform, and zipfian for YCSB A, B, C, E and F.
    #[arg(long, value_enum)]
    distribution: Option<KeyDistribution>,
    /// Share of reads in the `mixed` workload.
    #[arg(long, default_value_t = 0.9)]
    read_ratio: f64,
    /// Entries per scan (the maximum for YCSB E).
    #[arg(long, default_value_t = 100)]
    scan_length: usize,
    /// Keys per multiget.
    #[arg(long, default_value_t = 100)]
    batch: usize,
    /// Write the results as a JSON array to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Where each profile's data directory is created (default: the system temp directory).
    /// The directories are removed afterwards.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// A server process (`cairn serve`) whose CPU time to report beside the bench's own;
    /// repeat for several. For remote profiles, so both sides' CPU is in one table.
    #[arg(long = "server-pid")]
    server_pids: Vec<u32>,
    /// No progress bars.
    #[arg(long)]
    quiet: bool,
    /// Instead of workloads, run a suite: `router` measures a (sharded) profile's bulk import,
    /// per-shard get latency, multi-get against single gets, and pushed-down aggregates
    /// against pulled rows, over --keys entries; `takeover` writes --keys entries, crashes
    /// the node and times a new node's open and first acknowledged write; `range-delete`
    /// times one range delete over half of --keys entries against a put, and reads before
    /// and after it; `checkpoint` times making and deleting checkpoints of --keys entries;
    /// `transactions` runs read-modify-writes of two of --keys counters as transactions and
    /// as plain batches; `merge` increments --keys counters with the `add` merge operator
    /// against a get and a put; `subcompaction` times a full compaction of --keys entries on
    /// 1, 2 and 3 compaction servers cut into as many parts; `compression` rewrites --keys
    /// text rows on a compaction server with each codec, for the bytes and the CPU;
    /// `cluster` runs `cairn serve node` processes of a [cluster] profile under
    /// --concurrency writers of --keys keys, for the throughput while a node joins and one
    /// fails over, and the failover time (--duration: each steady phase), and with
    /// --split-mb the time to split a shard of each size; `sql` runs aggregate queries over
    /// --keys rows with `cairn sql`'s engine and with DuckDB on the same Parquet files (see
    /// docs/benchmarks.md).
    #[arg(long, value_enum)]
    suite: Option<Suite>,
    /// Export the Cairn engines' metrics (engine, journal, caches, RPC clients, router shards)
    /// in Prometheus' text format on this address while the bench runs: `127.0.0.1:9464`,
    /// then `curl 127.0.0.1:9464/metrics`. The RocksDB peer records none.
    #[arg(long)]
    metrics_listen: Option<String>,
    /// Serve --metrics-listen beyond loopback (it has no token and no TLS, and names every
    /// database the bench opens); refused otherwise, as `metrics.allow_open` does for servers.
    #[arg(long)]
    metrics_allow_open: bool,
    /// Run as one side of a writer and a read replica in two processes on the same remote
    /// components or bucket: `writer` runs the workloads (default overwrite) and sets a
    /// marker every 10 ms; `reader` opens the database read-only, runs the workloads
    /// (default get) and reports its staleness from the writer's marker log.
    #[arg(long, value_enum)]
    role: Option<Role>,
    /// The writer's marker log, which the reader reads (default: cairn-bench-marks in the
    /// system temp directory).
    #[arg(long)]
    marks: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Role {
    Writer,
    Reader,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Suite {
    Router,
    Takeover,
    RangeDelete,
    Checkpoint,
    Transactions,
    Merge,
    Subcompaction,
    Compression,
    Cluster,
    Sql,
}

impl Args {
    fn params(&self) -> Params {
        Params {
            keys: self.keys.max(1),
            read_ratio: self.read_ratio,
            scan_length: self.scan_length.max(1),
            batch: self.batch.max(1),
        }
    }
}

/// Workers up to this many get a runtime thread each (see `main`).
const MAX_WORKER_THREADS: usize = 16;

fn main() -> Result<()> {
    let args = Args::parse();
    // Cairn's workers are tasks. With no more workers than this, each gets a runtime thread
    // of its own (and at least one per core), so a few workers are scheduled by the OS as
    // the RocksDB peer's threads are; on fewer threads a worker whose calls never wait (a
    // writer without sync, a cached read) takes turns with the others, and readwhilewriting's
    // writer would get a turn in four. Past that, the tasks share one thread per core.
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let threads = if args.concurrency <= MAX_WORKER_THREADS {
        args.concurrency.max(cores)
    } else {
        cores
    };
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()?
        .block_on(run_bench(args))
}

async fn run_bench(mut args: Args) -> Result<()> {
    if let Some(at) = &args.metrics_listen {
        cairn::check_metrics_exposure(at, args.metrics_allow_open).context("--metrics-listen")?;
        cairn::export_metrics(at).context("--metrics-listen")?;
    }
    if args.workloads.is_empty() {
        args.workloads = match args.role {
            None => vec![Workload::Put, Workload::Get],
            Some(Role::Writer) => vec![Workload::Overwrite],
            Some(Role::Reader) => vec![Workload::Get],
        };
    }
    if args.role.is_some() && (args.profiles.len() != 1 || args.profiles[0] == "rocksdb") {
        bail!("--role runs one Cairn profile: give one --profile");
    }
    if args.role == Some(Role::Reader) && args.workloads.iter().any(|w| w.writes()) {
        bail!("--role reader runs reads only: a replica refuses writes");
    }
    let marks = args
        .marks
        .clone()
        .unwrap_or_else(|| std::env::temp_dir().join("cairn-bench-marks"));
    if args.concurrency == 0 {
        bail!("--concurrency must be at least 1");
    }
    if args.workloads.contains(&Workload::Readwhilewriting) && args.concurrency < 2 {
        bail!("readwhilewriting needs --concurrency of at least 2: one writer and readers");
    }
    if args.suite == Some(Suite::Router) {
        return run_router_suite(&args);
    }
    if args.suite == Some(Suite::Takeover) {
        return run_takeover_suite(&args).await;
    }
    if args.suite == Some(Suite::RangeDelete) {
        return run_range_delete_suite(&args).await;
    }
    if args.suite == Some(Suite::Checkpoint) {
        return run_checkpoint_suite(&args).await;
    }
    if args.suite == Some(Suite::Transactions) {
        return run_transaction_suite(&args).await;
    }
    if args.suite == Some(Suite::Merge) {
        return run_merge_suite(&args).await;
    }
    if args.suite == Some(Suite::Subcompaction) {
        return run_subcompaction_suite(&args).await;
    }
    if args.suite == Some(Suite::Cluster) {
        return run_cluster_suite(&args).await;
    }
    if args.suite == Some(Suite::Compression) {
        return run_compression_suite(&args).await;
    }
    if args.suite == Some(Suite::Sql) {
        let mut builder = tempfile::Builder::new();
        let base = builder.prefix("cairn-bench-sql-");
        let base = match &args.data_dir {
            Some(d) => base.tempdir_in(d)?,
            None => base.tempdir()?,
        };
        print!("{}", sql_suite::run(base.path(), args.keys).await?);
        return Ok(());
    }
    let mut results: Vec<RunResult> = Vec::new();
    for profile in args.profiles.clone() {
        let base = match &args.data_dir {
            Some(d) => {
                std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
                tempfile::Builder::new()
                    .prefix("cairn-bench-")
                    .tempdir_in(d)?
            }
            None => tempfile::Builder::new().prefix("cairn-bench-").tempdir()?,
        };
        let (target, router) = open(&args, &profile, base.path()).await?;
        // A reader loads nothing: the writer in the other process does.
        let mut loaded = args.role == Some(Role::Reader);
        let (stop, stopped) = watch::channel(false);
        let writer_marks = match (args.role, &router) {
            (Some(Role::Writer), Some(db)) => Some(replica::spawn_writer(
                db.clone(),
                marks.clone(),
                stopped.clone(),
            )),
            _ => None,
        };
        let reader_marks = match (args.role, &router) {
            (Some(Role::Reader), Some(db)) => {
                Some(replica::spawn_reader(db.clone(), stopped.clone()))
            }
            _ => None,
        };
        for &w in &args.workloads {
            if !w.is_fill() && !loaded {
                let spec = spec(&args, format!("{profile}: load"));
                let shared = Arc::new(Shared::new(
                    Workload::Put,
                    args.params(),
                    KeyDistribution::Uniform,
                )?);
                let load = run::run(
                    target.clone(),
                    shared,
                    &RunSpec {
                        duration: Duration::from_secs(3600),
                        concurrency: args
                            .load_concurrency
                            .unwrap_or(args.concurrency.max(64))
                            .max(1),
                        ..spec
                    },
                )
                .await?;
                let (ops, secs) = load.first().map_or((0, 0.0), |l| (l.ops, l.seconds));
                eprintln!("{profile}: loaded {ops} keys in {secs:.1}s");
                loaded = true;
                if args.compact_after_load {
                    let t = std::time::Instant::now();
                    target.compact().await?;
                    eprintln!("{profile}: compacted in {:.1}s", t.elapsed().as_secs_f64());
                }
            }
            let distribution = args.distribution.unwrap_or(w.default_distribution());
            let shared = Arc::new(Shared::new(w, args.params(), distribution)?);
            let rows = run::run(
                target.clone(),
                shared,
                &spec(&args, format!("{profile}: {}", w.name())),
            )
            .await?;
            for mut r in rows {
                r.profile = profile.clone();
                loaded |= w.is_fill() && r.ops >= args.keys;
                if !args.quiet {
                    eprintln!(
                        "{profile}: {} {:.0} ops/s, p99 {:.1} us",
                        r.workload, r.ops_per_sec, r.p99_us
                    );
                }
                results.push(r);
            }
        }
        stop.send_replace(true);
        if let Some(w) = writer_marks {
            let n = w.await??;
            eprintln!(
                "{profile}: set the marker {n} times (log: {})",
                marks.display()
            );
        }
        if let Some(r) = reader_marks {
            let seen = r.await??;
            let s = replica::staleness(&seen, &marks)?;
            println!(
                "\nstaleness of {profile} (writer's acknowledgement to this reader's sight, {} markers): p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
                s.markers, s.p50_ms, s.p99_ms, s.max_ms
            );
            for r in results.iter_mut().filter(|r| r.profile == profile) {
                r.staleness = Some(s);
            }
        }
        target.close().await?;
    }
    print!("{}", report::table(&results));
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&results)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// The router suite measures one caller at a time, so it runs on a single-threaded runtime of
/// its own, as a latency-sensitive client would: on a multi-threaded one, every RPC also pays
/// for waking the runtime's other threads (on this project's 2-core machine, about half of a
/// remote get's time). The shards' background work has runtimes of its own either way.
fn run_router_suite(args: &Args) -> Result<()> {
    tokio::task::block_in_place(|| {
        std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()?
                        .block_on(router_suite_on_this_thread(args))
                })
                .join()
                .map_err(|_| anyhow::anyhow!("the router suite panicked"))?
        })
    })
}

async fn router_suite_on_this_thread(args: &Args) -> Result<()> {
    let mut results = Vec::new();
    for profile in &args.profiles {
        let base = tempfile::Builder::new().prefix("cairn-bench-").tempdir()?;
        let router = open_router(args, profile, base.path()).await?;
        let suite = router_suite::SuiteArgs {
            keys: args.keys.max(1),
            value_size: args.value_size,
            seconds: args.duration.max(0.1),
            batch: args.batch.max(1),
            server_pids: args.server_pids.clone(),
        };
        let r = router_suite::run(&router, profile, &suite).await;
        router.close().await?;
        let r = r?;
        print!("{}", router_suite::report(&r, args.value_size));
        results.push(r);
    }
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&results)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

async fn run_takeover_suite(args: &Args) -> Result<()> {
    let mut results = Vec::new();
    for profile in &args.profiles {
        let base = tempfile::Builder::new().prefix("cairn-bench-").tempdir()?;
        let config = cairn::Config::load(&args.config, Some(profile))?;
        let r = takeover_suite::run(
            &config,
            profile,
            base.path(),
            args.keys.max(1),
            args.value_size,
            args.concurrency,
        )
        .await?;
        if !args.quiet {
            eprintln!(
                "{profile}: {} keys written; a {} took over in {:.3}s",
                r.keys, r.mode, r.takeover_seconds
            );
        }
        results.push(r);
    }
    finish(args, &takeover_suite::report(&results), &results)
}

async fn run_range_delete_suite(args: &Args) -> Result<()> {
    let mut results = Vec::new();
    for profile in &args.profiles {
        let base = tempfile::Builder::new().prefix("cairn-bench-").tempdir()?;
        let config = cairn::Config::load(&args.config, Some(profile))?;
        let r = range_delete_suite::run(
            &config,
            profile,
            base.path(),
            args.keys.max(1),
            args.value_size,
            args.scan_length.max(1),
        )
        .await?;
        results.push(r);
    }
    finish(args, &range_delete_suite::report(&results), &results)
}

async fn run_transaction_suite(args: &Args) -> Result<()> {
    let results = on_each_profile(args, |config, profile, base, duration| async move {
        transaction_suite::run(
            &config,
            &profile,
            base.path(),
            args.keys,
            args.concurrency,
            duration,
        )
        .await
    })
    .await?;
    finish(args, &transaction_suite::report(&results), &results)
}

async fn run_merge_suite(args: &Args) -> Result<()> {
    let results = on_each_profile(args, |config, profile, base, duration| async move {
        merge_suite::run(
            &config,
            &profile,
            base.path(),
            args.keys,
            args.concurrency,
            duration,
        )
        .await
    })
    .await?;
    finish(args, &merge_suite::report(&results), &results)
}

/// Runs a suite on each profile in a fresh directory of its own (a timed one for `--duration`).
async fn on_each_profile<R, F, Fut>(args: &Args, run: F) -> Result<Vec<R>>
where
    F: Fn(cairn::Config, String, tempfile::TempDir, Duration) -> Fut,
    Fut: std::future::Future<Output = Result<Vec<R>>>,
{
    let mut results = Vec::new();
    for profile in &args.profiles {
        let base = tempfile::Builder::new().prefix("cairn-bench-").tempdir()?;
        let config = cairn::Config::load(&args.config, Some(profile))?;
        let duration = Duration::from_secs_f64(args.duration.max(0.01));
        results.extend(run(config, profile.clone(), base, duration).await?);
    }
    Ok(results)
}

/// Prints a suite's report, and writes its results as JSON where `--json` says.
fn finish<R: serde::Serialize>(args: &Args, report: &str, results: &[R]) -> Result<()> {
    print!("{report}");
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(results)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

async fn run_cluster_suite(args: &Args) -> Result<()> {
    let results = on_each_profile(args, |config, profile, base, steady| async move {
        let r = cluster_suite::run(
            &config,
            &profile,
            base.path(),
            cluster_suite::Options {
                keys: args.keys.max(1),
                value_size: args.value_size,
                concurrency: args.concurrency,
                steady,
                split_mb: &args.split_mb,
            },
        )
        .await?;
        Ok(vec![r])
    })
    .await?;
    finish(args, &cluster_suite::report(&results), &results)
}

async fn run_subcompaction_suite(args: &Args) -> Result<()> {
    let results = on_each_profile(args, |config, profile, base, _| async move {
        subcompaction_suite::run(
            &config,
            &profile,
            base.path(),
            args.keys.max(1),
            args.value_size,
        )
        .await
    })
    .await?;
    finish(args, &subcompaction_suite::report(&results), &results)
}

async fn run_compression_suite(args: &Args) -> Result<()> {
    let results = on_each_profile(args, |config, profile, base, _| async move {
        compression_suite::run(
            &config,
            &profile,
            base.path(),
            args.keys.max(1),
            args.value_size,
        )
        .await
    })
    .await?;
    finish(args, &compression_suite::report(&results), &results)
}

async fn run_checkpoint_suite(args: &Args) -> Result<()> {
    let results = on_each_profile(args, |config, profile, base, _| async move {
        let r = checkpoint_suite::run(
            &config,
            &profile,
            base.path(),
            args.keys.max(1),
            args.value_size,
        );
        Ok(vec![r.await?])
    })
    .await?;
    finish(args, &checkpoint_suite::report(&results), &results)
}

fn spec(args: &Args, label: String) -> RunSpec {
    RunSpec {
        concurrency: args.concurrency,
        duration: Duration::from_secs_f64(args.duration.max(0.01)),
        value_size: args.value_size,
        progress: !args.quiet,
        label,
        server_pids: args.server_pids.clone(),
    }
}

/// Opens a Cairn profile with its data moved under `dir` (and its router, for the marker
/// tasks), or the RocksDB peer.
async fn open(
    args: &Args,
    profile: &str,
    dir: &std::path::Path,
) -> Result<(Arc<dyn Target>, Option<Arc<cairn::Router>>)> {
    if profile == "rocksdb" {
        return Ok((open_rocksdb(args, dir)?, None));
    }
    let db = Arc::new(open_router(args, profile, dir).await?);
    Ok((Arc::new(CairnTarget { db: db.clone() }), Some(db)))
}

/// A Cairn profile, with its data (and its local shards') moved under `dir`. Remote shards
/// keep theirs on their servers.
async fn open_router(args: &Args, profile: &str, dir: &std::path::Path) -> Result<cairn::Router> {
    let mut config = cairn::Config::load(&args.config, Some(profile))?;
    config.read_only |= args.role == Some(Role::Reader);
    config.data_dir = dir.to_path_buf();
    config.journal.dir = None;
    config.storage.dir = None;
    cairn::open_router(&config)
        .await
        .with_context(|| format!("opening profile `{profile}` in {}", dir.display()))
}

#[cfg(feature = "rocksdb")]
fn open_rocksdb(args: &Args, dir: &std::path::Path) -> Result<Arc<dyn Target>> {
    // The peer syncs exactly when the first Cairn profile of the run does.
    let first = args
        .profiles
        .iter()
        .find(|p| *p != "rocksdb")
        .map_or("default", String::as_str);
    let config = cairn::Config::load(&args.config, Some(first))?;
    let sync =
        config.journal.kind == cairn::JournalKind::File && config.journal.sync.unwrap_or(true);
    Ok(Arc::new(rocks::RocksTarget::open(dir, sync, &config)?))
}

#[cfg(not(feature = "rocksdb"))]
fn open_rocksdb(_: &Args, _: &std::path::Path) -> Result<Arc<dyn Target>> {
    bail!(
        "the `rocksdb` profile needs a build with RocksDB: cargo run --release -p cairn-bench --features rocksdb"
    )
}
