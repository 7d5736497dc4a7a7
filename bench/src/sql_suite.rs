//! `cairn-bench --suite sql`: aggregate queries over `--keys` rows of JSON orders, with
//! `cairn sql`'s engine (`cairn_sql::query`) against DuckDB on the same Parquet files. The
//! rows are imported and compacted on a hybrid store that declares the value columns, so the
//! files are the database's own live tables; DuckDB reads them with `read_parquet`, through
//! Python, timed inside Python. Each query runs 5 times; the median counts. Then 1% of the
//! keys are overwritten or deleted and left unflushed: Cairn's answers include them (checked
//! against the expected count) and its times are measured again; DuckDB's files no longer
//! give the answer. Last, the same rows go through a router to two shard servers (in this
//! process, over gRPC on loopback), where each query's partial aggregates are computed on the
//! shards.

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use cairn::{Config, KeyRange};
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

const QUERIES: &[(&str, &str)] = &[
    ("count(*), from metadata", "SELECT count(*) FROM kv"),
    (
        "count(*) where items >= 0, computed",
        "SELECT count(*) FROM kv WHERE items >= 0",
    ),
    (
        "sum, avg group by customer",
        "SELECT customer, count(*), sum(amount), avg(items) FROM kv GROUP BY customer",
    ),
    (
        "filtered sum",
        "SELECT sum(amount) FROM kv WHERE items > 5 AND amount < 50",
    ),
];

const RUNS: usize = 5;

/// The suite's database in `dir`, with `extra` appended to its profile.
fn config(dir: &Path, extra: &str) -> Result<Config> {
    let text = format!(
        r#"
[default]
data_dir = "{}"
[default.journal]
sync = false
[default.engine]
lease_ms = 0
[default.storage]
kind = "hybrid"
[default.storage.primary]
kind = "sstable"
[default.storage.secondary]
kind = "parquet"
[default.values]
key = "utf8"
encoding = "json"
[default.values.fields]
customer = "utf8"
amount = "f64"
items = "i64"
{extra}"#,
        dir.display()
    );
    Ok(Config::from_toml_str(&text, None)?)
}

fn order(i: u64) -> Bytes {
    // Deterministic, spread: 1000 customers, amounts in cents, 1 to 10 items.
    let h = i.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    Bytes::from(format!(
        r#"{{"customer":"c{:04}","amount":{}.{:02},"items":{}}}"#,
        h % 1000,
        (h >> 20) % 100,
        (h >> 30) % 100,
        1 + (h >> 40) % 10
    ))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

async fn cairn_ms(db: &Arc<cairn::Db>, config: &Config, sql: &str) -> Result<(f64, usize)> {
    let mut times = Vec::new();
    let mut rows = 0;
    for _ in 0..RUNS {
        let t = Instant::now();
        let batches = cairn_sql::query(db.clone(), &config.values, sql)
            .await
            .map_err(|e| anyhow::anyhow!("{sql}: {e}"))?;
        times.push(t.elapsed().as_secs_f64() * 1e3);
        rows = batches.iter().map(|b| b.num_rows()).sum();
    }
    Ok((median(times), rows))
}

/// DuckDB's median time of each query over `files`, in ms, or `None` without the module.
fn duckdb_ms(files: &[String]) -> Result<Option<Vec<f64>>> {
    let queries: Vec<&str> = QUERIES.iter().map(|(_, q)| *q).collect();
    let script = format!(
        r#"
import sys, time, json, duckdb
con = duckdb.connect()
con.execute("CREATE VIEW kv AS SELECT * FROM read_parquet(" + json.dumps(sys.argv[1:]) + ")")
out = []
for q in {queries:?}:
    times = []
    for _ in range({RUNS}):
        t = time.perf_counter()
        con.execute(q).fetchall()
        times.append((time.perf_counter() - t) * 1e3)
    out.append(sorted(times)[len(times) // 2])
print(json.dumps(out))
"#
    );
    let out = std::process::Command::new("python3")
        .args(["-c", &script])
        .args(files)
        .output()
        .context("running python3")?;
    if !out.status.success() {
        eprintln!(
            "DuckDB not measured (pip install duckdb): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        return Ok(None);
    }
    Ok(Some(serde_json::from_slice(&out.stdout)?))
}

/// Each query's median time through a router to two shard servers holding the same rows.
async fn routed_ms(base: &Path, keys: u64) -> Result<Vec<f64>> {
    let listeners = [
        tokio::net::TcpListener::bind("127.0.0.1:0").await?,
        tokio::net::TcpListener::bind("127.0.0.1:0").await?,
    ];
    let urls: Vec<String> = listeners
        .iter()
        .map(|l| Ok(format!("http://{}", l.local_addr()?)))
        .collect::<Result<_>>()?;
    let config = config(
        &base.join("routed"),
        &format!(
            "[default.router]\nshards = [{{ kind = \"grpc\", url = \"{}\" }}, {{ kind = \"grpc\", url = \"{}\" }}]\n",
            urls[0], urls[1]
        ),
    )?;
    let mut servers = Vec::new();
    for (i, l) in listeners.into_iter().enumerate() {
        let component = cairn::serve::Component::Shard(Some(i as u32));
        servers.push(cairn::serve::start(&config, component, l, std::future::pending()).await?);
    }
    let router = cairn::open_router(&config).await?;
    let rows = futures::stream::iter(
        (0..keys).map(|i| Ok((Bytes::from(format!("order{i:010}")), order(i)))),
    );
    router.import(rows).await?;
    router.compact().await?;
    let mut medians = Vec::new();
    for (_, q) in QUERIES {
        let mut times = Vec::new();
        for _ in 0..RUNS {
            let t = Instant::now();
            router.sql(q, &config.values).await?;
            times.push(t.elapsed().as_secs_f64() * 1e3);
        }
        medians.push(median(times));
    }
    router.close().await?;
    for s in servers {
        s.stop().await?;
    }
    Ok(medians)
}

pub async fn run(base: &Path, keys: u64) -> Result<String> {
    let config = config(&base.join("db"), "")?;
    let db = Arc::new(cairn::open(&config).await?);
    let loading = Instant::now();
    let mut import = db.begin_import().await?;
    let chunk = 1_000_000u64;
    for start in (0..keys).step_by(chunk as usize) {
        let rows = (start..(start + chunk).min(keys))
            .map(|i| (Bytes::from(format!("order{i:010}")), order(i)))
            .collect();
        import.add(rows).await?;
    }
    import.finish().await?;
    db.compact().await?;
    let load_s = loading.elapsed().as_secs_f64();
    let split = db
        .split_read(&KeyRange::all(), &db.snapshot())
        .await?
        .context("a compacted database splits")?;
    let files: Vec<String> = split
        .base
        .iter()
        .map(|t| {
            base.join(format!("db/parquet/{:020}.parquet", t.meta().id))
                .display()
                .to_string()
        })
        .collect();
    let bytes: u64 = split.base.iter().map(|t| t.meta().size).sum();
    drop(split);
    let mut cairn = Vec::new();
    for (_, q) in QUERIES {
        cairn.push(cairn_ms(&db, &config, q).await?.0);
    }
    let duck = duckdb_ms(&files)?;

    // 1% changed and not flushed: half overwritten, half deleted.
    let changed = (keys / 100).max(2);
    for j in 0..changed {
        let i = j * (keys / changed);
        let key = format!("order{i:010}");
        if j % 2 == 0 {
            db.put(key, order(i + 1)).await?;
        } else {
            db.delete(key).await?;
        }
    }
    let (_, _) = cairn_ms(&db, &config, QUERIES[0].1).await?;
    let counted = cairn_sql::query(db.clone(), &config.values, "SELECT count(*) FROM kv")
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let csv = cairn_sql::output::render(&counted, cairn_sql::Format::Csv)?;
    let want = keys - changed / 2;
    if csv.lines().nth(1) != Some(want.to_string().as_str()) {
        bail!("after the changes count(*) gave {csv:?}, not {want}");
    }
    let mut live = Vec::new();
    for (_, q) in QUERIES {
        live.push(cairn_ms(&db, &config, q).await?.0);
    }
    db.close().await?;
    let routed = routed_ms(base, keys).await?;

    let mut out = format!(
        "{keys} rows of JSON orders, {} tables, {:.0} MB of Parquet; imported and compacted in {load_s:.1} s; median of {RUNS} runs\n\n",
        files.len(),
        bytes as f64 / 1e6
    );
    out += "| query | cairn sql (ms) | DuckDB, same files (ms) | ratio | cairn sql with 1% unflushed changes (ms) | through a router, 2 shard servers (ms) |\n|---|---|---|---|---|---|\n";
    for (i, (name, _)) in QUERIES.iter().enumerate() {
        let (d, ratio) = match &duck {
            Some(d) => (format!("{:.1}", d[i]), format!("{:.2}x", cairn[i] / d[i])),
            None => ("-".into(), "-".into()),
        };
        out += &format!(
            "| {name} | {:.1} | {d} | {ratio} | {:.1} | {:.1} |\n",
            cairn[i], live[i], routed[i]
        );
    }
    out += &format!(
        "\nWith the changes, count(*) is {want}: checked. The ratio is Cairn's time over DuckDB's (above 1: slower).\n"
    );
    Ok(out)
}
