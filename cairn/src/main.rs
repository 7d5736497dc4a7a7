//! The `cairn` command: open the database a config profile describes and run one command
//! against it. `cairn --help` lists the commands.

use anyhow::{Context, Result};
use bytes::Bytes;
use cairn::{AggregateOp, CheckpointOp, Config, KeyRange, ValueType};
use clap::{Parser, Subcommand};
use futures::TryStreamExt;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

mod cluster_cmd;

#[derive(Parser)]
#[command(
    name = "cairn",
    version,
    about = "Cairn: an unbundled LSM-tree key-value engine"
)]
struct Cli {
    /// Config file.
    #[arg(
        long,
        global = true,
        env = "CAIRN_CONFIG",
        default_value = "cairn.toml"
    )]
    config: PathBuf,
    /// Profile of the config file to use (default: `default`, or CAIRN_PROFILE).
    #[arg(long, global = true)]
    profile: Option<String>,
    /// Open the database as a read replica that follows its writer: reads only, no epoch
    /// taken, nothing written (`serve shard`; `get`, `scan`, `aggregate` and `stats` always
    /// open so).
    #[arg(long, global = true)]
    read_only: bool,
    /// Send the command to the shard server at URL (`cairn serve shard`) instead of opening
    /// the database here: a served database is read and written as its clients do, with no
    /// take-over. The profile gives the client's rpc settings (token, TLS).
    #[arg(long, global = true, value_name = "URL")]
    connect: Option<String>,
    /// Read checkpoint NAME instead of the database as it is now (`get`, `scan`,
    /// `aggregate`, `stats`).
    #[arg(long, global = true, value_name = "NAME")]
    checkpoint: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Write KEY = VALUE.
    Put {
        key: String,
        #[arg(allow_hyphen_values = true)]
        value: String,
        /// Store VALUE as an 8-byte little-endian integer (or float), for `aggregate`.
        #[arg(long, value_name = "TYPE")]
        number: Option<ValueType>,
        /// The put expires after this long (`500ms`, `30s`, `10m`, `2h`, `7d`), and reads
        /// as deleted from then on.
        #[arg(long, value_parser = parse_duration)]
        ttl: Option<std::time::Duration>,
    },
    /// Add OPERAND to KEY with the merge operator OP (`add` and `max` take an i64, `append`
    /// bytes); OP must be the database's `engine.merge_operator`, or becomes it for this
    /// command when none is configured.
    Merge {
        #[arg(long)]
        op: String,
        key: String,
        #[arg(allow_hyphen_values = true)]
        operand: String,
    },
    /// Print the value of KEY; exit code 1 and `not found` on stderr when absent.
    Get {
        key: String,
        /// Print an 8-byte value as an integer (or float).
        #[arg(long, value_name = "TYPE")]
        number: Option<ValueType>,
    },
    /// Delete KEY, or every key from --from (inclusive) to --to (exclusive) at once.
    Delete {
        #[arg(required_unless_present = "from", conflicts_with_all = ["from", "to"])]
        key: Option<String>,
        /// First key deleted (inclusive).
        #[arg(long, requires = "to")]
        from: Option<String>,
        /// End of the range (exclusive).
        #[arg(long, requires = "from")]
        to: Option<String>,
    },
    /// Print `KEY<TAB>VALUE` lines in key order.
    Scan {
        /// First key (inclusive).
        #[arg(long)]
        from: Option<String>,
        /// End key (exclusive).
        #[arg(long)]
        to: Option<String>,
        /// At most this many entries.
        #[arg(long)]
        limit: Option<usize>,
    },
    /// Count, sum, min, max or average of the values in a key range, at one snapshot.
    Aggregate {
        /// count, sum, min, max or avg.
        #[arg(long)]
        op: AggregateOp,
        /// How 8-byte values are read: i64 or f64. Other values are skipped.
        #[arg(long = "type", default_value = "i64")]
        value_type: ValueType,
        #[arg(long)]
        from: Option<String>,
        #[arg(long)]
        to: Option<String>,
    },
    /// Run one SQL statement over table `kv` (columns `key`, `value` and those `[values]`
    /// declares) at one snapshot. On a sharded profile (or with --connect) each shard runs
    /// its part, up to partial aggregates, at a snapshot of its own.
    Sql {
        /// The statement, such as `SELECT count(*) FROM kv`.
        query: String,
        /// table, csv or json (one object per line).
        #[arg(long, default_value = "table")]
        format: cairn_sql::Format,
        /// Read as of this sequence number (default: now); `cairn stats` shows the oldest
        /// one allowed, `history_floor`. One database only: shards number their writes
        /// each on their own.
        #[arg(long)]
        at: Option<u64>,
    },
    /// Write the database as of one sequence number into DIR: `data.parquet` (`key`,
    /// `value` and the declared columns, one row per live key, in key order) and
    /// `cairn-export.json` (the number, the row count and a SHA-256 of the rows). One
    /// database, not a sharded profile.
    Export {
        /// A new or empty directory.
        dir: PathBuf,
        /// The sequence number (default: now); `cairn stats` shows the oldest one allowed,
        /// `history_floor`.
        #[arg(long)]
        at: Option<u64>,
    },
    /// Write the memtable to a table.
    Flush,
    /// Flush, then compact everything into the deepest level, dropping dead versions.
    Compact,
    /// Levels, tables, bytes and sequence numbers.
    Stats {
        /// As JSON.
        #[arg(long)]
        json: bool,
    },
    /// Bulk-load `KEY<TAB>VALUE` lines (the format `scan` prints) from a file or stdin, past
    /// the journal and memtable, into every shard at once. Of repeated keys the last wins.
    Import {
        /// Read from this file instead of stdin.
        #[arg(long)]
        file: Option<PathBuf>,
    },
    /// Load table files built elsewhere (Cairn SSTables, or Parquet files with Cairn's
    /// columns) in one import: each file's newest version of each key, a later file newer,
    /// each table at the deepest level it does not overlap. One database, not a sharded
    /// profile (use `import` there).
    Ingest {
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Serve this profile's journal, storage, a compactor over its storage, or a shard (a
    /// whole engine, for routers), over gRPC, until SIGTERM or Ctrl-C. Prints `serving
    /// COMPONENT on URL` once listening.
    Serve {
        /// journal, storage, compaction or shard.
        component: cairn::serve::Component,
        /// Address to listen on (default 127.0.0.1 and the component's port in the `remote`
        /// profile: 10001 journal, 10002 storage, 10003 compaction; a shard: its URL in the
        /// profile's [router], else 10011). Port 0 picks a free one.
        #[arg(long)]
        listen: Option<String>,
        /// shard: which of the profile's router shards this server is (its data goes under
        /// `<data_dir>/shard-<INDEX>`).
        #[arg(long, value_name = "INDEX")]
        shard: Option<u32>,
        /// node: this node's id in the profile's [cluster] (or `cluster.node`).
        #[arg(long, value_name = "ID")]
        node: Option<String>,
    },
    /// A cluster placed by a map ([cluster]): status, drain.
    Cluster {
        #[command(subcommand)]
        command: cluster_cmd::ClusterCommand,
    },
    /// Named checkpoints: durable, read-only views of the database that share its tables
    /// (read one with `--checkpoint NAME`).
    Checkpoint {
        #[command(subcommand)]
        command: CheckpointCommand,
    },
    /// Configuration commands.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
}

#[derive(Subcommand)]
enum CheckpointCommand {
    /// Flush, then record checkpoint NAME of the database as it is now (one of that name is
    /// replaced). Nothing is copied: it takes the same time whatever the database's size.
    Create { name: String },
    /// List the checkpoints: name, newest sequence number, tables, bytes, creation time.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Delete checkpoint NAME; the tables only it referenced are deleted. Refused while a
    /// clone made from it still references its tables.
    Delete { name: String },
    /// Make a new writable database from checkpoint NAME that shares its tables (nothing is
    /// copied), in the store INTO names: a directory for SSTables, a URL for Parquet, a
    /// database name for a storage server. With several shards, `{shard}` in INTO becomes
    /// each shard's index. Open the clone with a profile whose storage is there.
    Clone {
        name: String,
        #[arg(long)]
        into: String,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Print the resolved config (profile merged over default, environment applied) as TOML.
    Show,
}

impl Command {
    /// The commands that only read: they open the database as a reader.
    fn reads_only(&self) -> bool {
        matches!(
            self,
            Command::Get { .. }
                | Command::Scan { .. }
                | Command::Aggregate { .. }
                | Command::Sql { .. }
                | Command::Export { .. }
                | Command::Stats { .. }
        )
    }
}

fn main() -> ExitCode {
    let logs = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("CAIRN_LOG")
                .unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr);
    // One JSON object per line, spans and their fields included, for log shippers.
    if std::env::var("CAIRN_LOG_FORMAT").is_ok_and(|f| f == "json") {
        logs.json().init();
    } else {
        logs.init();
    }
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

async fn run(cli: Cli) -> Result<ExitCode> {
    let mut config = Config::load(&cli.config, cli.profile.as_deref())?;
    config.read_only |= cli.read_only;
    if let Some(name) = &cli.checkpoint {
        anyhow::ensure!(
            cli.command.reads_only(),
            "--checkpoint applies to get, scan, aggregate, sql, export and stats"
        );
        config.checkpoint = Some(name.clone());
    }
    if let Command::Merge { op, .. } = &cli.command {
        match &config.engine.merge_operator {
            Some(configured) => anyhow::ensure!(
                configured == op,
                "--op {op}: the database's merge operator is `{configured}` (engine.merge_operator)"
            ),
            None => config.engine.merge_operator = Some(op.clone()),
        }
    }
    if let Command::Config {
        command: ConfigCommand::Show,
    } = &cli.command
    {
        print!("{}", config.resolved().to_toml()?);
        return Ok(ExitCode::SUCCESS);
    }
    if let Some(url) = &cli.connect {
        anyhow::ensure!(
            !matches!(
                cli.command,
                Command::Ingest { .. } | Command::Serve { .. } | Command::Export { .. }
            ) && cli.checkpoint.is_none(),
            "--connect sends commands to a shard server; serve, ingest, export and --checkpoint open the database here"
        );
        let shard = cairn::GrpcShard::identified(config.rpc.client(url, None))
            .await
            .with_context(|| format!("connecting to {url}"))?;
        let router = cairn::Router::single(std::sync::Arc::new(shard));
        return execute(&router, cli.command, &config.values).await;
    }
    if let Command::Cluster { command } = cli.command {
        return cluster_cmd::run(&config, command).await;
    }
    if let Command::Serve {
        component,
        listen,
        shard,
        node,
    } = &cli.command
    {
        if let Some(id) = node {
            anyhow::ensure!(
                *component == cairn::serve::Component::Node,
                "--node applies to `serve node` only"
            );
            cairn::check_node_id(id).map_err(|e| anyhow::anyhow!("--node {e}"))?;
            let Some(c) = config.cluster.as_mut() else {
                anyhow::bail!("serve node: this profile has no [cluster] section");
            };
            c.node = Some(id.clone());
        }
        let component = match (component, shard) {
            (cairn::serve::Component::Shard(_), i) => cairn::serve::Component::Shard(*i),
            (_, Some(_)) => anyhow::bail!("--shard applies to `serve shard` only"),
            (_, None) if config.read_only => {
                anyhow::bail!("--read-only applies to `serve shard` and to the other commands")
            }
            (c, None) => *c,
        };
        return serve(&config, component, listen.as_deref()).await;
    }
    if let Command::Ingest { files } = &cli.command {
        anyhow::ensure!(
            config.router.is_none(),
            "ingest loads files into one database; on a sharded profile, `import` spreads KEY<TAB>VALUE lines over the shards"
        );
        let db = cairn::open(&config)
            .await
            .with_context(|| format!("opening the database in {}", config.data_dir.display()))?;
        let loaded = db.ingest(files).await;
        let closed = db.close().await.context("closing the database");
        let seq = loaded?;
        closed?;
        println!("ingested {} files (sequence number {seq})", files.len());
        return Ok(ExitCode::SUCCESS);
    }
    // Read commands change nothing: they open as readers that follow the writer (no epoch
    // taken, nothing reserved or written), so they may run beside a live writer, locking a
    // directory of their own rather than the writer's.
    let reader_lock = if cli.command.reads_only() {
        config.read_only = true;
        let lock = tempfile::Builder::new()
            .prefix("cairn-reader-")
            .tempdir()
            .context("making the reader's lock directory")?;
        config.reader_dir = Some(lock.path().to_path_buf());
        Some(lock)
    } else {
        None
    };
    let sharded = config.router.is_some() || config.cluster.is_some();
    if let (Command::Sql { .. }, false) | (Command::Export { .. }, _) = (&cli.command, sharded) {
        let code = one_database(&config, &cli.command).await;
        drop(reader_lock);
        return code;
    }
    let db = cairn::open_router(&config)
        .await
        .with_context(|| format!("opening the database in {}", config.data_dir.display()))?;
    let result = execute(&db, cli.command, &config.values).await;
    let closed = db.close().await.context("closing the database");
    drop(reader_lock);
    let code = result?;
    closed?;
    Ok(code)
}

/// `cairn sql` and `cairn export`: over the profile's one database, opened as a reader.
async fn one_database(config: &Config, command: &Command) -> Result<ExitCode> {
    anyhow::ensure!(
        config.router.is_none() && config.cluster.is_none(),
        "export writes one database as of one sequence number; this profile spreads its keys over shards, each numbering its own writes"
    );
    let db = std::sync::Arc::new(
        cairn::open(config)
            .await
            .with_context(|| format!("opening the database in {}", config.data_dir.display()))?,
    );
    let text = match command {
        Command::Sql { query, format, at } => match at.map(|s| db.snapshot_at(s)) {
            Some(Err(e)) => Err(e.into()),
            snapshot => {
                let snapshot = snapshot
                    .and_then(Result::ok)
                    .unwrap_or_else(|| db.snapshot());
                // DataFusion's errors repeat their cause in their chain: shown once.
                cairn_sql::query_at(db.clone(), snapshot, &config.values, query)
                    .await
                    .map_err(|e| anyhow::anyhow!("{e}"))
                    .and_then(|batches| Ok(cairn_sql::output::render(&batches, *format)?))
            }
        },
        Command::Export { dir, at } => cairn_sql::export(&db, &config.values, *at, dir)
            .await
            .map(|e| {
                format!(
                    "exported {} rows as of sequence number {} to {} (sha256 {})\n",
                    e.rows,
                    e.seq,
                    dir.join(&e.file).display(),
                    e.sha256
                )
            })
            .map_err(anyhow::Error::from),
        _ => Err(anyhow::anyhow!("not a command over one database")),
    };
    let closed = db.close().await.context("closing the database");
    let text = text?;
    closed?;
    std::io::stdout().write_all(text.as_bytes())?;
    Ok(ExitCode::SUCCESS)
}

async fn serve(
    config: &Config,
    component: cairn::serve::Component,
    listen: Option<&str>,
) -> Result<ExitCode> {
    cairn::serve::check(config, component)?;
    if let Some(at) = &config.metrics.listen {
        cairn::check_metrics_exposure(at, config.metrics.allow_open).context("metrics.listen")?;
        cairn::export_metrics(at).context("metrics.listen")?;
    }
    let addr = listen.map_or_else(|| component.listen_in(config), str::to_string);
    let addr = addr.as_str();
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("listening on {addr}"))?;
    let server = cairn::serve::start(config, component, listener, shutdown_signal())
        .await
        .with_context(|| format!("serving {}", component.name()))?;
    println!("serving {} on {}", component.name(), server.url());
    std::io::stdout().flush()?;
    server.wait().await?;
    eprintln!("{} server stopped", component.name());
    Ok(ExitCode::SUCCESS)
}

/// SIGTERM or Ctrl-C.
async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
}

/// `command` through `db`: a router over shards, or over the one database. `values` are the
/// declared value columns SQL sees.
async fn execute(
    db: &cairn::Router,
    command: Command,
    values: &cairn_filestore::ValueColumns,
) -> Result<ExitCode> {
    let mut out = std::io::stdout().lock();
    match command {
        Command::Sql { query, format, at } => {
            anyhow::ensure!(
                at.is_none(),
                "--at reads one database as of one sequence number; through a router each shard numbers its own writes"
            );
            let batches = db.sql(&query, values).await?;
            out.write_all(cairn_sql::output::render(&batches, format)?.as_bytes())?;
        }
        Command::Merge { op, key, operand } => {
            let bytes = match op.as_str() {
                "add" | "max" => {
                    let n: i64 = operand
                        .parse()
                        .with_context(|| format!("`{operand}` is not an i64 (`{op}` adds i64s)"))?;
                    Bytes::copy_from_slice(&n.to_le_bytes())
                }
                _ => Bytes::from(operand),
            };
            db.merge(key, bytes).await?;
        }
        Command::Put {
            key,
            value,
            number,
            ttl,
        } => {
            let bytes = match number {
                None => Bytes::from(value),
                Some(ValueType::I64) => {
                    let n: i64 = value
                        .parse()
                        .with_context(|| format!("`{value}` is not an i64"))?;
                    Bytes::copy_from_slice(&n.to_le_bytes())
                }
                Some(ValueType::F64) => {
                    let n: f64 = value
                        .parse()
                        .with_context(|| format!("`{value}` is not an f64"))?;
                    Bytes::copy_from_slice(&n.to_le_bytes())
                }
            };
            match ttl {
                None => db.put(key, bytes).await?,
                Some(ttl) => {
                    let now = cairn::Clock::now_ms(&cairn::SystemClock);
                    let mut b = cairn::WriteBatch::new();
                    b.put_expiring(key, &bytes, now.saturating_add(ttl.as_millis() as u64));
                    db.write(b).await?;
                }
            }
        }
        Command::Get { key, number } => match db.get(key.as_bytes()).await? {
            Some(v) => match (number, <[u8; 8]>::try_from(&v[..])) {
                (None, _) => {
                    out.write_all(&v)?;
                    out.write_all(b"\n")?;
                }
                (Some(ValueType::I64), Ok(raw)) => writeln!(out, "{}", i64::from_le_bytes(raw))?,
                (Some(ValueType::F64), Ok(raw)) => writeln!(out, "{}", f64::from_le_bytes(raw))?,
                (Some(_), Err(_)) => anyhow::bail!(
                    "the value of `{key}` is {} bytes, not an 8-byte number",
                    v.len()
                ),
            },
            None => {
                eprintln!("not found");
                return Ok(ExitCode::from(1));
            }
        },
        Command::Delete { key, from, to } => match (key, from, to) {
            (Some(key), _, _) => db.delete(key).await?,
            (None, Some(from), Some(to)) => db.delete_range(from, to).await?,
            _ => anyhow::bail!("delete needs KEY, or --from and --to"),
        },
        Command::Scan { from, to, limit } => {
            let range = KeyRange::new(from.map(Bytes::from), to.map(Bytes::from));
            let mut it = db.scan(range, limit).await?;
            while let Some((k, v)) = it.try_next().await? {
                out.write_all(&k)?;
                out.write_all(b"\t")?;
                out.write_all(&v)?;
                out.write_all(b"\n")?;
            }
        }
        Command::Aggregate {
            op,
            value_type,
            from,
            to,
        } => {
            let range = KeyRange::new(from.map(Bytes::from), to.map(Bytes::from));
            let state = db.aggregate(range, value_type).await?;
            writeln!(out, "{}", state.result(op))?;
            if state.skipped > 0 && op != AggregateOp::Count {
                eprintln!(
                    "{} values were not 8-byte numbers and were skipped",
                    state.skipped
                );
            }
        }
        Command::Flush => db.flush().await?,
        Command::Compact => db.compact().await?,
        Command::Stats { json } => {
            let all = db.stats().await;
            if json {
                // One database: its stats as they are; shards: one entry each.
                let value = match (db.cluster(), all.as_slice()) {
                    (None, [one]) => serde_json::to_value(
                        one.stats.as_ref().map_err(|e| anyhow::anyhow!("{e}"))?,
                    )?,
                    _ => serde_json::Value::Array(
                        all.iter()
                            .map(|s| match &s.stats {
                                Ok(st) => serde_json::json!({"shard": s.shard, "stats": st}),
                                Err(e) => {
                                    serde_json::json!({"shard": s.shard, "error": e.to_string()})
                                }
                            })
                            .collect(),
                    ),
                };
                writeln!(out, "{}", serde_json::to_string_pretty(&value)?)?;
            } else {
                let sharded = db.cluster().is_some() || all.len() > 1;
                let map_version = db.routing().version;
                if let Some(c) = db.cluster() {
                    writeln!(
                        out,
                        "cluster {:016x}: {} shards, partitioning {}",
                        c.cluster, c.shards, c.partitioning
                    )?;
                } else if map_version > 0 {
                    writeln!(
                        out,
                        "{} shards placed by cluster map version {map_version}",
                        all.len()
                    )?;
                }
                for s in &all {
                    if sharded {
                        writeln!(out, "\n{}", s.shard)?;
                    }
                    match &s.stats {
                        Ok(st) => print_stats(&mut out, st)?,
                        Err(e) => writeln!(out, "unavailable: {e}")?,
                    }
                }
            }
        }
        Command::Import { file } => {
            let reader: Box<dyn std::io::BufRead + Send> = match &file {
                Some(f) => Box::new(std::io::BufReader::new(
                    std::fs::File::open(f).with_context(|| format!("opening {}", f.display()))?,
                )),
                None => Box::new(std::io::BufReader::new(std::io::stdin())),
            };
            let n = db.import(import_lines(reader)).await?;
            writeln!(out, "imported {n} entries")?;
        }
        Command::Checkpoint { command } => {
            let (op, json) = match command {
                CheckpointCommand::Create { name } => (CheckpointOp::Create(name), false),
                CheckpointCommand::Delete { name } => (CheckpointOp::Delete(name), false),
                CheckpointCommand::Clone { name, into } => {
                    (CheckpointOp::Clone { name, into }, false)
                }
                CheckpointCommand::List { json } => (CheckpointOp::List, json),
            };
            let listing = matches!(op, CheckpointOp::List);
            let cloned = match &op {
                CheckpointOp::Clone { name, into } => Some((name.clone(), into.clone())),
                _ => None,
            };
            let shards = db.checkpoint(op).await?;
            if let Some((name, into)) = cloned {
                for i in 0..shards.len() {
                    let into = into.replace("{shard}", &i.to_string());
                    writeln!(out, "cloned checkpoint {name} into {into}")?;
                }
            }
            if json {
                let value = match shards.as_slice() {
                    [one] if db.cluster().is_none() => serde_json::to_value(one)?,
                    _ => serde_json::to_value(&shards)?,
                };
                writeln!(out, "{}", serde_json::to_string_pretty(&value)?)?;
            } else if listing {
                let many = shards.len() > 1;
                for (i, list) in shards.iter().enumerate() {
                    for c in list {
                        if many {
                            write!(out, "shard {i}\t")?;
                        }
                        writeln!(
                            out,
                            "{}\tseq {}\t{} tables\t{} bytes\tcreated at {} ms",
                            c.name, c.seq, c.tables, c.bytes, c.created_ms
                        )?;
                    }
                }
            }
        }
        Command::Config { .. }
        | Command::Serve { .. }
        | Command::Ingest { .. }
        | Command::Export { .. }
        | Command::Cluster { .. } => {}
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

fn print_stats(out: &mut impl Write, s: &cairn::DbStats) -> Result<()> {
    writeln!(
        out,
        "database {}, epoch {}, manifest version {} at {}",
        s.database, s.epoch, s.manifest_version, s.manifest_location
    )?;
    if let Some(r) = &s.reader {
        let failed = r
            .last_error
            .as_deref()
            .map(|e| format!("; last poll failed: {e}"))
            .unwrap_or_default();
        if r.follows_flushes_only {
            writeln!(
                out,
                "read-only replica following flushes only (its writer's journal is out of its reach): unflushed writes are not visible; it last saw a new flush {} ms ago (polls every {} ms){failed}",
                r.staleness_ms, r.poll_ms,
            )?;
        } else {
            writeln!(
                out,
                "read-only replica: at most {} ms behind its writer (follows its journal's tail; reads the manifest every {} ms; journal applied to LSN {}){failed}",
                r.staleness_ms, r.poll_ms, r.applied_lsn,
            )?;
        }
    }
    writeln!(out, "level  tables        bytes      entries")?;
    for l in &s.levels {
        writeln!(
            out,
            "L{:<5} {:>6} {:>12} {:>12}",
            l.level, l.tables, l.bytes, l.entries
        )?;
    }
    writeln!(out, "total  {:>6} {:>12}", s.table_count(), s.table_bytes())?;
    writeln!(
        out,
        "memtable: {} entries, {} bytes; {} frozen",
        s.memtable_entries, s.memtable_bytes, s.immutable_memtables
    )?;
    writeln!(
        out,
        "since open: {} flushes, {} compactions ({} of them cut into {} subcompactions), {} bytes compacted",
        s.flushes, s.compactions, s.split_compactions, s.subcompactions, s.bytes_compacted
    )?;
    if let Some(c) = &s.compacting {
        let places: Vec<&str> = c
            .parts
            .iter()
            .map(|p| p.as_deref().unwrap_or("here"))
            .collect();
        writeln!(
            out,
            "compacting L{} into L{}: {} bytes in {} part(s), {} ms so far, on {}",
            c.level,
            c.output_level,
            c.input_bytes,
            c.parts.len(),
            c.running_ms,
            places.join(", ")
        )?;
    }
    writeln!(out, "last sequence number: {}", s.last_seq)?;
    writeln!(out, "table ids reserved below: {}", s.next_table_id)?;
    if let Some(e) = &s.background_error {
        writeln!(out, "background error: {e}")?;
    }
    Ok(())
}

/// `KEY<TAB>VALUE` lines as entries (blank lines skipped); a line without a tab is an error
/// naming its number.
fn import_lines(
    reader: Box<dyn std::io::BufRead + Send>,
) -> impl futures::Stream<Item = cairn::Result<(Bytes, Bytes)>> + Send {
    use std::io::BufRead;
    let mut lines = reader.split(b'\n').enumerate();
    futures::stream::iter(std::iter::from_fn(move || {
        let (i, line) = lines.find(|(_, l)| !matches!(l, Ok(l) if l.is_empty() || l == b"\r"))?;
        Some(match line {
            Err(e) => Err(cairn::Error::io("import input", e)),
            Ok(mut line) => {
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                match line.iter().position(|b| *b == b'\t') {
                    Some(tab) => {
                        let value = Bytes::copy_from_slice(&line[tab + 1..]);
                        line.truncate(tab);
                        Ok((Bytes::from(line), value))
                    }
                    None => Err(cairn::Error::InvalidArgument(format!(
                        "import line {}: no tab between key and value",
                        i + 1
                    ))),
                }
            }
        })
    }))
}

/// `500ms`, `30s`, `10m`, `2h`, `7d`, or a bare number of seconds.
fn parse_duration(s: &str) -> std::result::Result<std::time::Duration, String> {
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (n, unit) = s.split_at(split);
    let n: u64 = n
        .parse()
        .map_err(|_| format!("`{s}` is not a duration (500ms, 30s, 10m, 2h, 7d)"))?;
    let ms = match unit {
        "ms" => 1,
        "" | "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(format!("`{s}`: unknown unit `{unit}` (ms, s, m, h, d)")),
    };
    Ok(std::time::Duration::from_millis(n.saturating_mul(ms)))
}
