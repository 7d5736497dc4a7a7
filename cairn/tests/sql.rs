//! SQL over a live database (`cairn-sql`), checked against a model of the writes with
//! unflushed writes, deletes, overwrites, flushes, compactions and a reopen in the mix, on the
//! SSTable store (a merged scan) and the hybrid store (the split read, from Parquet columns);
//! against DuckDB on the same Parquet files once everything is flushed; and for counts
//! answered from table metadata only where that is exact.

use bytes::Bytes;
use cairn::{Config, Db, KeyRange};
use datafusion::arrow::array::RecordBatch;
use rand::{Rng, SeedableRng, rngs::StdRng};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

const VALUES: &str = r#"
[default.values]
key = "utf8"
encoding = "json"

[default.values.fields]
user = "utf8"
amount = "f64"
n = "i64"
"#;

fn config(dir: &Path, storage: &str) -> Config {
    let storage = match storage {
        "sstable" => "[default.storage]\nkind = \"sstable\"\n",
        _ => {
            "[default.storage]\nkind = \"hybrid\"\n[default.storage.primary]\nkind = \"sstable\"\n[default.storage.secondary]\nkind = \"parquet\"\nrow_group_rows = 256\n"
        }
    };
    let text = format!(
        "[default]\ndata_dir = \"{}\"\n[default.journal]\nsync = false\n[default.engine]\nlease_ms = 0\n{storage}{VALUES}",
        dir.display()
    );
    Config::from_toml_str(&text, None).unwrap()
}

async fn open(config: &Config) -> Arc<Db> {
    Arc::new(cairn::open(config).await.unwrap())
}

/// The result as CSV rows, the header left out.
async fn rows(db: &Arc<Db>, config: &Config, sql: &str) -> Vec<String> {
    let batches: Vec<RecordBatch> = cairn_sql::query(db.clone(), &config.values, sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    let csv = cairn_sql::output::render(&batches, cairn_sql::Format::Csv).unwrap();
    csv.lines().skip(1).map(str::to_string).collect()
}

/// A value as the model keeps it: JSON with a user, an amount in halves (so sums are exact)
/// and a number; now and then not JSON at all, whose columns are null.
fn value(rng: &mut StdRng) -> Bytes {
    if rng.random_ratio(1, 20) {
        return Bytes::from_static(b"not json");
    }
    let user = ["ann", "bob", "cy", "dee"][rng.random_range(0..4)];
    let amount = f64::from(rng.random_range(0..200)) / 2.0;
    let n: i64 = rng.random_range(-50..1000);
    Bytes::from(format!(r#"{{"user":"{user}","amount":{amount},"n":{n}}}"#))
}

struct Row {
    user: String,
    amount: f64,
    n: i64,
}

fn parse(v: &Bytes) -> Option<Row> {
    let j: serde_json::Value = serde_json::from_slice(v).ok()?;
    Some(Row {
        user: j["user"].as_str()?.to_string(),
        amount: j["amount"].as_f64()?,
        n: j["n"].as_i64()?,
    })
}

/// The queries, each with what the model says it returns.
fn expected(model: &BTreeMap<String, Bytes>) -> Vec<(String, Vec<String>)> {
    let parsed: Vec<(&String, Option<Row>)> = model.iter().map(|(k, v)| (k, parse(v))).collect();
    let typed = || {
        parsed
            .iter()
            .filter_map(|(k, r)| r.as_ref().map(|r| (*k, r)))
    };
    let mut out = Vec::new();
    let count = typed().count();
    let opt = |x: Option<i64>| x.map_or(String::new(), |x| x.to_string());
    out.push((
        "SELECT count(*), count(user), CAST(sum(amount) * 2 AS BIGINT), min(n), max(n) FROM kv"
            .to_string(),
        vec![format!(
            "{},{count},{},{},{}",
            model.len(),
            opt((count > 0).then(|| typed().map(|(_, r)| (r.amount * 2.0) as i64).sum())),
            opt(typed().map(|(_, r)| r.n).min()),
            opt(typed().map(|(_, r)| r.n).max()),
        )],
    ));
    let mut groups: BTreeMap<&str, (usize, i64)> = BTreeMap::new();
    for (_, r) in typed() {
        let g = groups.entry(r.user.as_str()).or_default();
        g.0 += 1;
        g.1 += r.n;
    }
    out.push((
        "SELECT user, count(*), sum(n) FROM kv WHERE user IS NOT NULL GROUP BY user ORDER BY user"
            .to_string(),
        groups
            .iter()
            .map(|(u, (c, s))| format!("{u},{c},{s}"))
            .collect(),
    ));
    out.push((
        "SELECT key, n FROM kv WHERE key >= 'k0100' AND key < 'k0130' ORDER BY key".to_string(),
        parsed
            .iter()
            .filter(|(k, _)| k.as_str() >= "k0100" && k.as_str() < "k0130")
            .map(|(k, r)| format!("{k},{}", opt(r.as_ref().map(|r| r.n))))
            .collect(),
    ));
    out.push((
        "SELECT count(*) FROM kv WHERE key > 'k0250'".to_string(),
        vec![
            model
                .keys()
                .filter(|k| k.as_str() > "k0250")
                .count()
                .to_string(),
        ],
    ));
    out
}

async fn check(db: &Arc<Db>, config: &Config, model: &BTreeMap<String, Bytes>, when: &str) {
    for (sql, want) in expected(model) {
        assert_eq!(rows(db, config, &sql).await, want, "{when}: {sql}");
    }
}

async fn model_run(storage: &str, seed: u64) {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), storage);
    let mut db = open(&config).await;
    let mut rng = StdRng::seed_from_u64(seed);
    let mut model = BTreeMap::new();
    for step in 1..=2400 {
        let key = format!("k{:04}", rng.random_range(0..300));
        if rng.random_ratio(1, 6) {
            db.delete(key.clone()).await.unwrap();
            model.remove(&key);
        } else {
            let v = value(&mut rng);
            db.put(key.clone(), v.clone()).await.unwrap();
            model.insert(key, v);
        }
        match step {
            400 | 1000 | 1900 => db.flush().await.unwrap(),
            1400 | 2200 => db.compact().await.unwrap(),
            1600 => {
                db.close().await.unwrap();
                db = open(&config).await;
            }
            _ => {}
        }
        if step % 200 == 0 {
            check(&db, &config, &model, &format!("{storage}, step {step}")).await;
        }
        if step == 2200 {
            // Compacted: the hybrid store's tables are read from their columns.
            let p = plan(&db, &config, "SELECT sum(n) FROM kv").await;
            let how = if storage == "hybrid" {
                "split"
            } else {
                "merged scan"
            };
            assert!(p.contains(how), "{p}");
        }
    }
    db.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_over_sstables_equals_the_model() {
    model_run("sstable", 7).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_over_the_hybrid_store_equals_the_model() {
    model_run("hybrid", 11).await;
}

/// The physical plan's text.
async fn plan(db: &Arc<Db>, config: &Config, sql: &str) -> String {
    rows(db, config, &format!("EXPLAIN {sql}")).await.join("\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counts_come_from_table_metadata_only_when_that_is_exact() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), "hybrid");
    let db = open(&config).await;
    for i in 0..1000 {
        let v = format!(r#"{{"user":"u{}","amount":1,"n":{i}}}"#, i % 7);
        db.put(format!("k{i:04}"), v).await.unwrap();
    }
    db.compact().await.unwrap();
    let count = "SELECT count(*) FROM kv";
    let p = plan(&db, &config, count).await;
    assert!(!p.contains("KvScan"), "answered from metadata:\n{p}");
    assert_eq!(rows(&db, &config, count).await, ["1000"]);
    let bounds = "SELECT min(key), max(key) FROM kv";
    assert!(!plan(&db, &config, bounds).await.contains("KvScan"));
    assert_eq!(rows(&db, &config, bounds).await, ["k0000,k0999"]);
    // Part of a table is not answered from its metadata.
    let part = "SELECT count(*) FROM kv WHERE key < 'k0500'";
    assert!(plan(&db, &config, part).await.contains("KvScan"));
    assert_eq!(rows(&db, &config, part).await, ["500"]);

    // A write in the memtable: counted, not read from metadata.
    db.put("k1000", "{}").await.unwrap();
    assert!(plan(&db, &config, count).await.contains("KvScan"));
    assert_eq!(rows(&db, &config, count).await, ["1001"]);
    db.delete("k0000").await.unwrap();
    db.delete("k0001").await.unwrap();
    assert_eq!(rows(&db, &config, count).await, ["999"]);
    assert_eq!(rows(&db, &config, bounds).await, ["k0002,k1000"]);
    // Flushed, the tombstones are in a table above the base: still counted.
    db.flush().await.unwrap();
    assert!(plan(&db, &config, count).await.contains("KvScan"));
    assert_eq!(rows(&db, &config, count).await, ["999"]);
    db.compact().await.unwrap();
    assert!(!plan(&db, &config, count).await.contains("KvScan"));
    assert_eq!(rows(&db, &config, count).await, ["999"]);
    db.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_name_the_column_or_function() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), "sstable");
    let db = open(&config).await;
    let err = |sql: &'static str| {
        let (db, values) = (db.clone(), config.values.clone());
        async move {
            cairn_sql::query(db, &values, sql)
                .await
                .unwrap_err()
                .to_string()
        }
    };
    let e = err("SELECT amout FROM kv").await;
    assert!(e.contains("amout"), "{e}");
    let e = err("SELECT frobnicate(key) FROM kv").await;
    assert!(e.contains("frobnicate"), "{e}");
    db.close().await.unwrap();
}

/// The lines a Python `script` prints given `args`, or `None` where `module` is missing
/// outside CI (CI installs pyarrow and duckdb, `.ci/run`).
fn python(script: &str, args: &[PathBuf], module: &str) -> Option<Vec<String>> {
    let out = Command::new("python3")
        .args(["-c", script])
        .args(args)
        .output();
    match out {
        Ok(o) if o.status.success() => Some(
            String::from_utf8(o.stdout)
                .unwrap()
                .lines()
                .map(str::to_string)
                .collect(),
        ),
        other => {
            assert!(
                std::env::var_os("CI").is_none(),
                "the {module} check failed in CI: {other:?}"
            );
            eprintln!("skipping the {module} check (pip install {module}): {other:?}");
            None
        }
    }
}

/// DuckDB's answer over the Parquet files, one CSV-like line per row.
fn duckdb(sql: &str, files: &[PathBuf]) -> Option<Vec<String>> {
    let script = format!(
        "import sys, duckdb\nkv = duckdb.read_parquet(sys.argv[1:])\nfor r in duckdb.sql(\"\"\"{sql}\"\"\").fetchall():\n    print(','.join('' if x is None else str(x) for x in r))\n"
    );
    python(&script, files, "duckdb")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_flushed_data_results_equal_duckdbs_on_the_same_files() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), "hybrid");
    let db = open(&config).await;
    let mut rng = StdRng::seed_from_u64(3);
    let mut model = BTreeMap::new();
    for i in 0..5000 {
        let key = format!("k{i:05}");
        let v = value(&mut rng);
        db.put(key.clone(), v.clone()).await.unwrap();
        model.insert(key, v);
    }
    db.compact().await.unwrap();
    // The live tables: a compaction's inputs stay a while after it (readers may still use
    // them), and DuckDB over the whole folder would count their rows too.
    let live = db
        .split_read(&KeyRange::all(), &db.snapshot())
        .await
        .unwrap()
        .expect("compacted puts split");
    let files: Vec<PathBuf> = live
        .base
        .iter()
        .map(|t| {
            dir.path()
                .join(format!("parquet/{:020}.parquet", t.meta().id))
        })
        .collect();
    assert!(
        !files.is_empty() && files.iter().all(|f| f.exists()),
        "{files:?}"
    );
    let queries = [
        "SELECT count(*), count(user), CAST(sum(amount) * 2 AS BIGINT), min(n), max(n), sum(n) FROM kv",
        "SELECT user, count(*), sum(n), min(amount), max(amount) FROM kv WHERE user IS NOT NULL GROUP BY user ORDER BY user",
        "SELECT user, count(*) FROM kv WHERE n > 500 AND amount < 50 GROUP BY user ORDER BY user",
    ];
    for sql in queries {
        let ours = rows(&db, &config, sql).await;
        if let Some(theirs) = duckdb(sql, &files) {
            // DuckDB prints floats its own way: compare as numbers.
            let norm = |rows: Vec<String>| -> Vec<Vec<String>> {
                rows.iter()
                    .map(|r| {
                        r.split(',')
                            .map(|x| x.parse::<f64>().map_or(x.to_string(), |f| f.to_string()))
                            .collect()
                    })
                    .collect()
            };
            assert_eq!(norm(ours), norm(theirs), "{sql}");
        }
    }
    // With overwrites and deletes unflushed, the files alone no longer give the answer;
    // the database still equals the model.
    for i in (0..5000).step_by(7) {
        let key = format!("k{i:05}");
        db.delete(key.clone()).await.unwrap();
        model.remove(&key);
    }
    check(&db, &config, &model, "after deletes").await;
    db.close().await.unwrap();
}

/// Checks an export with no Cairn code: pyarrow reads the file, hashlib recomputes the
/// digest its manifest names; prints the rows as `key,n`. `None` outside CI without pyarrow.
fn verify_export(dir: &Path) -> Option<Vec<String>> {
    let script = r#"
import sys, json, hashlib, pyarrow.parquet as pq
d = sys.argv[1]
m = json.load(open(d + "/cairn-export.json"))
t = pq.read_table(d + "/" + m["file"])
h = hashlib.sha256()
for k, v in zip(t.column("key").to_pylist(), t.column("value").to_pylist()):
    k = k.encode() if isinstance(k, str) else k
    h.update(len(k).to_bytes(4, "little") + k + len(v).to_bytes(4, "little") + v)
assert h.hexdigest() == m["sha256"], "digest"
assert t.num_rows == m["rows"], "rows"
for k, n in zip(t.column("key").to_pylist(), t.column("n").to_pylist()):
    print(f"{k},{'' if n is None else n}")
"#;
    python(script, &[dir.to_path_buf()], "pyarrow")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_export_as_of_an_earlier_number_is_that_state_with_a_digest_anyone_can_check() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), "hybrid");
    let db = open(&config).await;
    let mut rng = StdRng::seed_from_u64(5);
    let mut model = BTreeMap::new();
    let mut seq = 0;
    for i in 0..2000 {
        let key = format!("k{:04}", i % 700);
        let v = value(&mut rng);
        seq = db.put(key.clone(), v.clone()).await.unwrap();
        model.insert(key, v);
    }
    let then = model.clone();
    // Held, the number stays readable through overwrites, deletes and a compaction.
    let held = db.snapshot_at(seq).unwrap();
    for i in (0..700).step_by(3) {
        db.delete(format!("k{i:04}")).await.unwrap();
        db.put(format!("k{:04}", i + 1), "{}").await.unwrap();
    }
    db.compact().await.unwrap();
    let out = dir.path().join("export");
    let e = cairn_sql::export(&db, &config.values, Some(seq), &out)
        .await
        .unwrap();
    assert_eq!((e.seq, e.rows), (seq, then.len() as u64));
    let want: Vec<String> = then
        .iter()
        .map(|(k, v)| {
            format!(
                "{k},{}",
                parse(v).map_or(String::new(), |r| r.n.to_string())
            )
        })
        .collect();
    if let Some(rows) = verify_export(&out) {
        assert_eq!(rows, want);
    }
    // Exported again, the same digest.
    let again = cairn_sql::export(&db, &config.values, Some(seq), &dir.path().join("again"))
        .await
        .unwrap();
    assert_eq!(again.sha256, e.sha256);

    drop(held);
    db.put("k9999", "{}").await.unwrap();
    db.compact().await.unwrap();
    let refused = dir.path().join("refused");
    let err = cairn_sql::export(&db, &config.values, Some(seq), &refused)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("history"), "{err}");
    assert!(!refused.exists(), "nothing is written for a refused export");
    db.close().await.unwrap();
}

/// Values that pyarrow writes as Arrow IPC streams of one row (`encoding = "arrow"`): their
/// declared fields are columns, decoded from the memtable and, once compacted, read from the
/// Parquet copy's own columns. `None` outside CI without pyarrow.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn arrow_values_written_by_pyarrow_are_columns() {
    let script = r#"
import pyarrow as pa
schema = pa.schema([("user", pa.string()), ("amount", pa.float64()), ("n", pa.int64())])
for i in range(300):
    b = pa.record_batch([pa.array(["u%d" % (i % 3)]), pa.array([i * 0.5]), pa.array([i])], schema=schema)
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, schema) as w:
        w.write_batch(b)
    print("k%04d %s" % (i, sink.getvalue().to_pybytes().hex()))
"#;
    let Some(lines) = python(script, &[], "pyarrow") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "[default]\ndata_dir = \"{}\"\n[default.journal]\nsync = false\n[default.engine]\nlease_ms = 0\n\
         [default.storage]\nkind = \"hybrid\"\n[default.storage.primary]\nkind = \"sstable\"\n\
         [default.storage.secondary]\nkind = \"parquet\"\n{}",
        dir.path().display(),
        VALUES.replace("encoding = \"json\"", "encoding = \"arrow\"")
    );
    let config = Config::from_toml_str(&text, None).unwrap();
    let db = open(&config).await;
    for line in &lines {
        let (key, hex) = line.split_once(' ').unwrap();
        let bytes: Vec<u8> = (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
            .collect();
        db.put(key.to_string(), bytes).await.unwrap();
    }
    db.put("k9999", "not arrow").await.unwrap();
    let sql = "SELECT user, count(*), sum(amount), sum(n) FROM kv GROUP BY user ORDER BY user";
    // u0: i = 0, 3, ..., 297 (100 rows, sum 14850); u1 and u2 likewise from 1 and 2.
    let want = vec![
        "u0,100,7425.0,14850".to_string(),
        "u1,100,7475.0,14950".to_string(),
        "u2,100,7525.0,15050".to_string(),
        ",1,,".to_string(),
    ];
    assert_eq!(rows(&db, &config, sql).await, want, "from the memtable");
    db.compact().await.unwrap();
    let plan = rows(&db, &config, &format!("EXPLAIN {sql}"))
        .await
        .join("\n");
    assert!(
        plan.contains("KvScan: split"),
        "the compacted tables are read by column: {plan}"
    );
    assert_eq!(
        rows(&db, &config, sql).await,
        want,
        "from the Parquet columns"
    );
    db.close().await.unwrap();
}

/// A condition on a declared column skips the Parquet row groups whose statistics rule it
/// out: `EXPLAIN ANALYZE` shows fewer rows read, and the answer is the same as without.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conditions_on_columns_skip_row_groups_and_the_answer_stays_exact() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), "hybrid");
    let db = open(&config).await;
    for i in 0..2000 {
        db.put(
            format!("k{i:04}"),
            format!(r#"{{"user":"u","amount":1,"n":{i}}}"#),
        )
        .await
        .unwrap();
    }
    db.compact().await.unwrap();
    // Overwritten after the compaction: a newer n outside the skipped groups' bounds.
    db.put("k0005", r#"{"user":"u","amount":1,"n":5000}"#)
        .await
        .unwrap();
    let sql = "SELECT count(*), min(n), max(n) FROM kv WHERE n >= 1900";
    assert_eq!(rows(&db, &config, sql).await, ["101,1900,5000"]);
    let plan = rows(&db, &config, &format!("EXPLAIN ANALYZE {sql}"))
        .await
        .join("\n");
    let scan = plan
        .lines()
        .find(|l| l.contains("KvScan"))
        .unwrap_or_else(|| panic!("{plan}"));
    assert!(scan.contains("row groups by n >= 1900"), "{scan}");
    let read: f64 = scan
        .split("output_rows=")
        .nth(1)
        .and_then(|r| r.split([',', ']', ' ']).next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{scan}"));
    // Row groups of 256 rows: the last one or two hold n >= 1900, and the newer k0005.
    assert!(read <= 513.0, "{read} rows read: {scan}");
    db.close().await.unwrap();
}
