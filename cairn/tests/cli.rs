//! The `cairn` binary across separate processes on the shipped default profile: each command
//! opens the database, acts, and closes it; the next process sees the result.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn repo_config() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../cairn.toml")
}

fn cairn(data: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cairn"))
        .arg("--config")
        .arg(repo_config())
        .args(args)
        .env("CAIRN_DATA_DIR", data)
        .env_remove("CAIRN_PROFILE")
        .output()
        .expect("run cairn")
}

/// Starts `cairn serve journal --listen LISTEN` in `data` with `env` set: the process, and
/// the first line it printed (`serving journal on URL`, once it serves).
fn serve_journal(data: &Path, listen: &str, env: &[(&str, &str)]) -> (std::process::Child, String) {
    let data = data.display().to_string();
    let mut env = env.to_vec();
    env.push(("CAIRN_DATA_DIR", &data));
    serve_with(
        &repo_config(),
        &["serve", "journal", "--listen", listen],
        &env,
    )
}

/// Starts `cairn --config CONFIG ARGS` (a `serve` command): the process, and the first line
/// it printed, once it serves.
fn serve_with(config: &Path, args: &[&str], env: &[(&str, &str)]) -> (std::process::Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_cairn"))
        .arg("--config")
        .arg(config)
        .args(args)
        .envs(env.iter().copied())
        .env_remove("CAIRN_PROFILE")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    (child, line)
}

fn ok(data: &Path, args: &[&str]) -> String {
    let out = cairn(data, args);
    assert!(
        out.status.success(),
        "cairn {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf8 output")
}

#[test]
fn put_get_scan_delete_across_processes() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    ok(data, &["put", "apple", "red"]);
    ok(data, &["put", "banana", "yellow"]);
    ok(data, &["put", "cherry", "dark red"]);
    ok(data, &["put", "apple", "green"]);
    assert_eq!(ok(data, &["get", "apple"]), "green\n");

    let missing = cairn(data, &["get", "durian"]);
    assert_eq!(missing.status.code(), Some(1));
    assert_eq!(String::from_utf8_lossy(&missing.stderr).trim(), "not found");
    assert!(missing.stdout.is_empty());

    assert_eq!(
        ok(data, &["scan"]),
        "apple\tgreen\nbanana\tyellow\ncherry\tdark red\n"
    );
    assert_eq!(
        ok(data, &["scan", "--from", "b", "--to", "c"]),
        "banana\tyellow\n"
    );
    assert_eq!(ok(data, &["scan", "--limit", "1"]), "apple\tgreen\n");

    ok(data, &["delete", "banana"]);
    assert_eq!(cairn(data, &["get", "banana"]).status.code(), Some(1));
    assert_eq!(ok(data, &["scan"]), "apple\tgreen\ncherry\tdark red\n");

    ok(data, &["flush"]);
    ok(data, &["compact"]);
    assert_eq!(ok(data, &["scan"]), "apple\tgreen\ncherry\tdark red\n");

    let stats: serde_json::Value =
        serde_json::from_str(&ok(data, &["stats", "--json"])).expect("stats json");
    let entries: u64 = stats["levels"]
        .as_array()
        .expect("levels")
        .iter()
        .map(|l| l["entries"].as_u64().expect("entries"))
        .sum();
    assert_eq!(
        entries, 2,
        "compaction left only the live versions: {stats}"
    );
    assert!(stats["last_seq"].as_u64().expect("last_seq") >= 5);
    let text = ok(data, &["stats"]);
    assert!(text.contains("last sequence number"), "{text}");
    // Each write command opens the database as its writer: the epoch counts those opens, the
    // id stays. Read commands open as readers, and change nothing: not the epoch, not the
    // manifest, not the reserved ids.
    let id = stats["database"].as_str().expect("database id").to_string();
    assert_eq!(id.len(), 32, "{stats}");
    assert!(text.contains(&format!("database {id}, epoch")), "{text}");
    assert!(stats["epoch"].as_u64().unwrap() > 1, "{stats}");
    assert!(text.contains("manifest version"), "{text}");
    ok(data, &["get", "apple"]);
    ok(data, &["scan"]);
    let again: serde_json::Value =
        serde_json::from_str(&ok(data, &["stats", "--json"])).expect("stats json");
    for field in ["epoch", "manifest_version", "next_table_id"] {
        assert_eq!(again[field], stats[field], "{field}: {again}");
    }
}

#[test]
fn aggregate_over_numbers_written_from_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    for (k, v) in [("n1", "10"), ("n2", "-4"), ("n3", "30")] {
        ok(data, &["put", "--number", "i64", k, v]);
    }
    ok(data, &["put", "label", "not a number"]);
    assert_eq!(ok(data, &["get", "--number", "i64", "n2"]), "-4\n");
    assert_eq!(
        ok(
            data,
            &["aggregate", "--op", "sum", "--from", "n", "--to", "o"]
        ),
        "36\n"
    );
    assert_eq!(ok(data, &["aggregate", "--op", "count"]), "4\n");
    assert_eq!(ok(data, &["aggregate", "--op", "min"]), "-4\n");
    assert_eq!(
        ok(data, &["aggregate", "--op", "avg", "--from", "n"]),
        "12\n"
    );
    ok(data, &["put", "--number", "f64", "f", "2.5"]);
    assert_eq!(
        ok(
            data,
            &[
                "aggregate",
                "--op",
                "max",
                "--type",
                "f64",
                "--from",
                "f",
                "--to",
                "g"
            ]
        ),
        "2.5\n"
    );
    let bad = cairn(data, &["aggregate", "--op", "median"]);
    assert_eq!(bad.status.code(), Some(2), "clap rejects an unknown op");
}

#[test]
fn config_show_prints_the_resolved_profile() {
    let dir = tempfile::tempdir().unwrap();
    let shown = ok(dir.path(), &["config", "show"]);
    let parsed: toml::Value = toml::from_str(&shown).expect("config show prints TOML");
    assert_eq!(parsed["journal"]["sync"].as_bool(), Some(true));
    assert_eq!(
        parsed["data_dir"].as_str(),
        dir.path().to_str(),
        "the environment override is applied"
    );
    let nosync = ok(dir.path(), &["--profile", "nosync", "config", "show"]);
    assert!(nosync.contains("sync = false"), "{nosync}");
    let eph = ok(dir.path(), &["--profile", "ephemeral", "config", "show"]);
    assert!(eph.contains("kind = \"memory\""), "{eph}");
}

#[test]
fn bad_config_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        "[default]\ndata_dir = \"d\"\n[default.journal]\nfsync = true\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_cairn"))
        .arg("--config")
        .arg(&path)
        .args(["get", "x"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("journal.fsync") && err.contains("bad.toml"),
        "{err}"
    );

    let out = cairn(dir.path(), &["--profile", "nope", "get", "x"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("profile `nope`"));
}

fn cairn_profile(data: &Path, profile: &str, env: &[(&str, &str)], args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_cairn"))
        .arg("--config")
        .arg(repo_config())
        .args(["--profile", profile])
        .args(args)
        .env("CAIRN_DATA_DIR", data)
        .envs(env.iter().copied())
        .output()
        .expect("run cairn");
    assert!(
        out.status.success(),
        "cairn --profile {profile} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf8 output")
}

/// Puts `n{i}` = 10 * i as an 8-byte number for each `i` in `keys`.
fn put_tens(run: &impl Fn(&[&str]) -> String, keys: std::ops::RangeInclusive<u32>) {
    for i in keys {
        run(&[
            "put",
            &format!("n{i}"),
            &format!("{}", i * 10),
            "--number",
            "i64",
        ]);
    }
}

/// Writes numbers, flushes, overwrites one after the flush, and checks the aggregate includes
/// the fresh write (memtable merged with the Parquet table at one snapshot).
fn numbers_flush_and_aggregate(data: &Path, profile: &str, env: &[(&str, &str)]) {
    let run = |args: &[&str]| cairn_profile(data, profile, env, args);
    put_tens(&run, 1..=5);
    run(&["flush"]);
    assert_eq!(run(&["aggregate", "--op", "sum"]), "150\n");
    run(&["put", "n5", "0", "--number", "i64"]);
    run(&["delete", "n1"]);
    assert_eq!(run(&["aggregate", "--op", "sum"]), "90\n");
    assert_eq!(
        run(&["aggregate", "--op", "count", "--from", "n2", "--to", "n4"]),
        "2\n"
    );
    assert_eq!(run(&["get", "n3"]).len(), 9, "8 bytes and a newline");
}

fn parquet_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| d.map(|e| e.unwrap().path()).collect())
        .unwrap_or_default();
    files.retain(|p| p.extension().is_some_and(|e| e == "parquet"));
    files.sort();
    files
}

/// Runs a Python `script` over `files`; its output, or `None` where the module it needs is
/// missing outside CI (CI installs pyarrow and duckdb, `.ci/run`).
fn python_over(script: &str, files: &[PathBuf], module: &str) -> Option<String> {
    let out = Command::new("python3")
        .args(["-c", script])
        .args(files)
        .output();
    match out {
        Ok(o) if o.status.success() => Some(String::from_utf8(o.stdout).unwrap()),
        other => {
            let why = format!("{other:?}");
            assert!(
                std::env::var_os("CI").is_none(),
                "{module} check failed in CI: {why}"
            );
            eprintln!("skipping the {module} check (pip install {module} to run it): {why}");
            None
        }
    }
}

#[test]
fn hybrid_profile_writes_parquet_that_pyarrow_and_duckdb_read_back() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    // Every command names the merge operator, as a profile would with engine.merge_operator.
    let env = [("CAIRN_ENGINE__MERGE_OPERATOR", "add")];
    numbers_flush_and_aggregate(data, "hybrid", &env);
    let run = |args: &[&str]| cairn_profile(data, "hybrid", &env, args);
    put_tens(&run, 6..=8);
    run(&["flush"]);
    run(&["delete", "--from", "n6", "--to", "n8"]);
    run(&["put", "n7", "77", "--number", "i64"]);
    assert_eq!(run(&["aggregate", "--op", "sum"]), "247\n");
    run(&["merge", "--op", "add", "n2", "5"]);
    run(&["merge", "--op", "add", "n9", "3"]);
    assert_eq!(run(&["get", "n2", "--number", "i64"]), "25\n");
    assert_eq!(run(&["aggregate", "--op", "sum"]), "255\n");
    let files = parquet_files(&data.join("parquet"));
    // Each process flushes at close, so there are several tables.
    assert!(files.len() >= 2, "a table per flush: {files:?}");
    assert_eq!(
        parquet_files(&data.join("tables")).len(),
        0,
        "the primary holds SSTables"
    );

    // The same data through readers with no Cairn code in them, as the engine reads it
    // (FORMAT.md): per key, versions newest first (a version appears in more than one file
    // while a compacted table waits out its grace period); merge operands (kind 3) add up until a
    // put (kind 0) or a tombstone (kind 1), or a newer range tombstone (kind 2, the key its
    // start, the value its end) that covers the key, ends them.
    let pyarrow = r#"
import sys, pyarrow.parquet as pq
versions, ranges = {}, []
for path in sys.argv[1:]:
    t = pq.read_table(path)
    assert t.schema.names == ["key", "seq", "kind", "value"], t.schema.names
    for k, s, kind, v in zip(*(t.column(c).to_pylist() for c in t.schema.names)):
        if kind == 2:
            ranges.append((k, v, s))
        else:
            versions.setdefault(k, set()).add((s, kind, v))
for k in sorted(versions):
    total, live = 0, False
    for s, kind, v in sorted(versions[k], reverse=True):
        if any(a <= k < b and s < rs for a, b, rs in ranges) or kind == 1:
            break
        total += int.from_bytes(v, "little", signed=True)
        live = True
        if kind == 0:
            break
    if live:
        print(k.decode(), total)
"#;
    let want = "n2 25\nn3 30\nn4 40\nn5 0\nn7 77\nn8 80\nn9 3\n";
    if let Some(out) = python_over(pyarrow, &files, "pyarrow") {
        assert_eq!(out, want);
    }
    let duckdb = r#"
import sys, duckdb
rows = duckdb.read_parquet(sys.argv[1:])
live = duckdb.sql("""
    WITH v AS (SELECT DISTINCT key, seq, kind, value FROM rows WHERE kind <> 2),
    floor AS (
        SELECT k.key,
            (SELECT max(seq) FROM v WHERE v.key = k.key AND v.kind IN (0, 1)) AS bs,
            (SELECT max(r.seq) FROM rows r
             WHERE r.kind = 2 AND r.key <= k.key AND k.key < r.value) AS rs
        FROM (SELECT DISTINCT key FROM v) k)
    SELECT decode(f.key),
        (SELECT v.value FROM v WHERE v.key = f.key AND v.seq = f.bs AND v.kind = 0
            AND f.bs > coalesce(f.rs, 0)) AS base,
        (SELECT list(v.value) FROM v WHERE v.key = f.key AND v.kind = 3
            AND v.seq > greatest(coalesce(f.bs, 0), coalesce(f.rs, 0))) AS operands
    FROM floor f ORDER BY f.key""").fetchall()
n = lambda b: int.from_bytes(b, "little", signed=True)
for k, base, operands in live:
    if base is not None or operands:
        print(k, (n(base) if base is not None else 0) + sum(n(o) for o in operands or []))
"#;
    if let Some(out) = python_over(duckdb, &files, "duckdb") {
        assert_eq!(out, want);
    }
}

#[test]
fn cloud_profile_against_an_s3_endpoint_on_loopback() {
    let s3 = cairn_testkit::S3Endpoint::start();
    let dir = tempfile::tempdir().unwrap();
    let url = s3.url("tables");
    let env = [
        ("CAIRN_STORAGE__SECONDARY__ENDPOINT", s3.endpoint.as_str()),
        ("CAIRN_STORAGE__SECONDARY__URL", url.as_str()),
        ("AWS_ACCESS_KEY_ID", s3.access_key_id.as_str()),
        ("AWS_SECRET_ACCESS_KEY", s3.secret_access_key.as_str()),
    ];
    numbers_flush_and_aggregate(dir.path(), "cloud", &env);
    if let Some(root) = s3.root() {
        let objects = parquet_files(&root.join(&s3.bucket).join(&s3.prefix).join("tables"));
        assert!(
            !objects.is_empty(),
            "the flushed tables are objects in the bucket"
        );
    }
}

/// The shipped `serverless` profile on an S3 endpoint: a node writes and goes away; a node
/// on another, empty data directory reads everything back, and so does a read-only one,
/// which refuses writes and says how far behind it may be.
#[test]
fn serverless_profile_nodes_and_a_read_only_one_share_a_bucket() {
    let s3 = cairn_testkit::S3Endpoint::start();
    let dir = tempfile::tempdir().unwrap();
    let (journal, tables) = (s3.url("journal"), s3.url("tables"));
    let env = [
        ("CAIRN_JOURNAL__ENDPOINT", s3.endpoint.as_str()),
        ("CAIRN_JOURNAL__URL", journal.as_str()),
        ("CAIRN_STORAGE__SECONDARY__ENDPOINT", s3.endpoint.as_str()),
        ("CAIRN_STORAGE__SECONDARY__URL", tables.as_str()),
        ("AWS_ACCESS_KEY_ID", s3.access_key_id.as_str()),
        ("AWS_SECRET_ACCESS_KEY", s3.secret_access_key.as_str()),
    ];
    let node = |name: &str| dir.path().join(name);
    cairn_profile(&node("a"), "serverless", &env, &["put", "k1", "v1"]);
    cairn_profile(&node("a"), "serverless", &env, &["put", "k2", "v2"]);
    // Each process closes its node; a new node on an empty data directory finds both.
    let got = cairn_profile(&node("b"), "serverless", &env, &["get", "k2"]);
    assert_eq!(got.trim(), "v2");
    let scan = cairn_profile(&node("r"), "serverless", &env, &["--read-only", "scan"]);
    assert_eq!(scan, "k1\tv1\nk2\tv2\n");
    let stats = cairn_profile(&node("r"), "serverless", &env, &["--read-only", "stats"]);
    assert!(stats.contains("read-only replica"), "{stats}");
    let out = Command::new(env!("CARGO_BIN_EXE_cairn"))
        .arg("--config")
        .arg(repo_config())
        .args(["--profile", "serverless", "--read-only", "put", "k3", "v3"])
        .env("CAIRN_DATA_DIR", node("r"))
        .envs(env.iter().copied())
        .output()
        .expect("run cairn");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("read-only"), "{err}");
}

/// The same commands, unchanged, on the shipped `sharded` profile (three local shards), plus
/// `import` from stdin; every process reopens the cluster.
#[test]
fn the_commands_work_unchanged_on_the_sharded_profile() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    let sharded = |args: &[&str]| {
        let mut a = vec!["--profile", "sharded"];
        a.extend_from_slice(args);
        ok(data, &a)
    };
    for i in 0..30 {
        sharded(&["put", &format!("k{i:02}"), &format!("v{i}")]);
    }
    sharded(&["put", "--number", "i64", "n1", "10"]);
    sharded(&["put", "--number", "i64", "n2", "32"]);
    sharded(&["delete", "k05"]);
    assert_eq!(sharded(&["get", "k07"]), "v7\n");
    let mut child = Command::new(env!("CARGO_BIN_EXE_cairn"))
        .args(["--config"])
        .arg(repo_config())
        .args(["--profile", "sharded", "import"])
        .env("CAIRN_DATA_DIR", data)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"k07\timported\nz1\tlast\n\nk99\tnew\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout), "imported 3 entries\n");

    let scan = sharded(&["scan", "--from", "k", "--to", "l"]);
    let keys: Vec<&str> = scan
        .lines()
        .map(|l| l.split('\t').next().unwrap())
        .collect();
    let mut sorted = keys.clone();
    sorted.sort();
    assert_eq!(keys, sorted, "one ordered stream over the three shards");
    assert_eq!(keys.len(), 30, "29 left of k00-k29, and k99");
    assert!(
        scan.contains("k07\timported\n"),
        "the import is newer: {scan}"
    );
    assert_eq!(sharded(&["scan", "--limit", "2"]), "k00\tv0\nk01\tv1\n");
    assert_eq!(
        sharded(&["aggregate", "--op", "sum", "--from", "n", "--to", "o"]),
        "42\n"
    );
    assert_eq!(sharded(&["aggregate", "--op", "count"]), "33\n");
    // SQL runs on every shard, each computing its partial aggregates.
    assert_eq!(
        sharded(&[
            "sql",
            "--format",
            "csv",
            "SELECT substr(CAST(key AS VARCHAR), 1, 1) AS p, count(*) AS n FROM kv \
             GROUP BY p ORDER BY p"
        ]),
        "p,n\nk,30\nn,2\nz,1\n"
    );
    let refused = cairn(
        data,
        &["--profile", "sharded", "sql", "--at", "3", "SELECT 1"],
    );
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("each shard numbers its own writes"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    sharded(&["compact"]);
    let stats: serde_json::Value = serde_json::from_str(&sharded(&["stats", "--json"])).unwrap();
    let shards = stats.as_array().expect("one entry per shard");
    assert_eq!(shards.len(), 3);
    let entries: u64 = shards
        .iter()
        .flat_map(|s| s["stats"]["levels"].as_array().unwrap().iter())
        .map(|l| l["entries"].as_u64().unwrap())
        .sum();
    assert_eq!(entries, 33, "{stats}");
    // A range delete reaches every shard; the next compaction applies it and drops it.
    sharded(&["delete", "--from", "k1", "--to", "k2"]);
    assert_eq!(sharded(&["aggregate", "--op", "count"]), "23\n");
    assert_eq!(
        sharded(&["scan", "--from", "k09", "--to", "k21"]),
        "k09\tv9\nk20\tv20\n"
    );
    sharded(&["compact"]);
    let stats: serde_json::Value = serde_json::from_str(&sharded(&["stats", "--json"])).unwrap();
    let entries: u64 = stats
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|s| s["stats"]["levels"].as_array().unwrap().iter())
        .map(|l| l["entries"].as_u64().unwrap())
        .sum();
    assert_eq!(
        entries, 23,
        "the covered keys and the tombstones are gone: {stats}"
    );
    let backwards = cairn(
        data,
        &["--profile", "sharded", "delete", "--from", "b", "--to", "a"],
    );
    assert!(!backwards.status.success());
    assert!(
        String::from_utf8_lossy(&backwards.stderr).contains("start before its end"),
        "{}",
        String::from_utf8_lossy(&backwards.stderr)
    );
    for i in 0..3 {
        assert!(data.join(format!("shard-{i}/SHARD")).exists());
    }
    assert!(data.join("CLUSTER").exists());
    let bad = Command::new(env!("CARGO_BIN_EXE_cairn"))
        .arg("--config")
        .arg(repo_config())
        .args(["--profile", "sharded", "import"])
        .env("CAIRN_DATA_DIR", data)
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            c.stdin.take().unwrap().write_all(b"no tab here\n")?;
            c.wait_with_output()
        })
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(err.contains("import line 1: no tab"), "{err}");
}

/// A server that other machines could reach, with neither a token nor TLS, refuses to start
/// (naming the keys that would let it), and starts when told to serve open on purpose.
#[test]
fn a_server_beyond_loopback_needs_a_token_or_tls_or_an_explicit_yes() {
    let dir = tempfile::tempdir().unwrap();
    let out = cairn(dir.path(), &["serve", "journal", "--listen", "0.0.0.0:0"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("rpc.token") && err.contains("rpc.allow_open"),
        "{err}"
    );
    for env in [
        ("CAIRN_RPC__TOKEN", "s3cret"),
        ("CAIRN_RPC__ALLOW_OPEN", "true"),
    ] {
        let (mut child, line) = serve_journal(&dir.path().join(env.0), "0.0.0.0:0", &[env]);
        assert!(line.starts_with("serving journal on"), "{env:?}: {line}");
        child.kill().unwrap();
        child.wait().unwrap();
    }
}

/// Mutual TLS with real processes: a journal server with `rpc.tls_client_ca` serves a client
/// that presents a certificate its CA signed, and refuses one without, at the handshake.
#[test]
fn a_journal_server_with_a_client_ca_refuses_a_client_without_a_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca =
        rcgen::CertifiedIssuer::self_signed(params, rcgen::KeyPair::generate().unwrap()).unwrap();
    let pem = |name: &str, text: String| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p.to_str().unwrap().to_string()
    };
    let ca_pem = pem("ca.pem", ca.pem());
    let issue = |name: &str| {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec![name.to_string()])
            .unwrap()
            .signed_by(&key, &ca)
            .unwrap();
        (
            pem(&format!("{name}.pem"), cert.pem()),
            pem(&format!("{name}.key"), key.serialize_pem()),
        )
    };
    let (server_cert, server_key) = issue("localhost");
    let (client_cert, client_key) = issue("client");

    let (mut server, line) = serve_journal(
        &dir.path().join("server"),
        "127.0.0.1:0",
        &[
            ("CAIRN_RPC__TLS_CERT", server_cert.as_str()),
            ("CAIRN_RPC__TLS_KEY", server_key.as_str()),
            ("CAIRN_RPC__TLS_CLIENT_CA", ca_pem.as_str()),
        ],
    );
    let url = line
        .trim()
        .strip_prefix("serving journal on ")
        .unwrap_or_else(|| panic!("{line}"))
        .to_string();
    assert!(url.starts_with("https://"), "{url}");

    let put = |identity: Option<(&str, &str)>, key: &str| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_cairn"));
        c.arg("--config")
            .arg(repo_config())
            .args(["put", key, "v"])
            .env("CAIRN_DATA_DIR", dir.path().join(format!("client-{key}")))
            .env("CAIRN_JOURNAL__KIND", "grpc")
            .env("CAIRN_JOURNAL__URL", &url)
            .env("CAIRN_RPC__TLS_CA", &ca_pem)
            .env("CAIRN_RPC__TLS_DOMAIN", "localhost")
            .env("CAIRN_RPC__RETRIES", "0")
            .env_remove("CAIRN_PROFILE");
        if let Some((cert, key)) = identity {
            c.env("CAIRN_RPC__TLS_CERT", cert)
                .env("CAIRN_RPC__TLS_KEY", key);
        }
        c.output().unwrap()
    };
    let signed = put(Some((&client_cert, &client_key)), "a");
    assert!(
        signed.status.success(),
        "{}",
        String::from_utf8_lossy(&signed.stderr)
    );
    let without = put(None, "b");
    let said = String::from_utf8_lossy(&without.stderr);
    assert_eq!(
        without.status.code(),
        Some(2),
        "got in without a certificate"
    );
    assert!(
        said.contains(&url),
        "the error names the journal server: {said}"
    );
    server.kill().unwrap();
    server.wait().unwrap();
}

/// Metrics beyond loopback are refused unless asked for: the endpoint has no token or TLS
/// and names every database the process holds (issue 28: the exposure check servers have).
#[test]
fn metrics_beyond_loopback_need_an_explicit_yes() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_cairn"))
        .arg("--config")
        .arg(repo_config())
        .args(["serve", "journal", "--listen", "127.0.0.1:0"])
        .env("CAIRN_DATA_DIR", dir.path())
        .env("CAIRN_METRICS__LISTEN", "0.0.0.0:0")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("metrics.listen") && err.contains("metrics.allow_open"),
        "{err}"
    );
    let (mut child, line) = serve_journal(
        dir.path(),
        "127.0.0.1:0",
        &[
            ("CAIRN_METRICS__LISTEN", "0.0.0.0:0"),
            ("CAIRN_METRICS__ALLOW_OPEN", "true"),
        ],
    );
    assert!(line.starts_with("serving journal on"), "{line}");
    child.kill().unwrap();
    child.wait().unwrap();
}

/// A read-only process on the default profile cannot reach its writer's journal (a file on
/// the writer's node): it reads what was flushed, and its stats say it follows flushes only
/// rather than claiming to be a poll behind (issue 28, item 2).
#[test]
fn a_read_only_process_without_the_writers_journal_says_it_follows_flushes_only() {
    let dir = tempfile::tempdir().unwrap();
    ok(dir.path(), &["put", "k", "v"]);
    assert_eq!(ok(dir.path(), &["--read-only", "get", "k"]).trim(), "v");
    let stats = ok(dir.path(), &["--read-only", "stats"]);
    assert!(
        stats.contains("following flushes only")
            && stats.contains("unflushed writes are not visible"),
        "{stats}"
    );
    let json = ok(dir.path(), &["--read-only", "stats", "--json"]);
    assert!(json.contains("\"follows_flushes_only\": true"), "{json}");
}

/// Checkpoints across processes: made, listed, read while the database moves on (also on
/// the sharded profile, every shard at once), and deleted.
#[test]
fn checkpoints_are_made_read_and_deleted_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    ok(data, &["put", "a", "1"]);
    ok(data, &["put", "b", "1"]);
    ok(data, &["checkpoint", "create", "before"]);
    ok(data, &["put", "a", "2"]);
    ok(data, &["delete", "b"]);
    ok(data, &["compact"]);
    assert_eq!(ok(data, &["--checkpoint", "before", "get", "a"]), "1\n");
    assert_eq!(
        ok(data, &["--checkpoint", "before", "scan"]),
        "a\t1\nb\t1\n"
    );
    assert_eq!(ok(data, &["get", "a"]), "2\n");
    let list = ok(data, &["checkpoint", "list"]);
    assert!(list.starts_with("before\tseq 2\t"), "{list}");
    let json: serde_json::Value =
        serde_json::from_str(&ok(data, &["checkpoint", "list", "--json"])).unwrap();
    assert_eq!(json[0]["name"], "before", "{json}");

    let write = cairn(data, &["--checkpoint", "before", "put", "x", "y"]);
    assert_eq!(write.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&write.stderr).contains("--checkpoint applies to"));
    ok(data, &["checkpoint", "delete", "before"]);
    assert_eq!(ok(data, &["checkpoint", "list"]), "");
    let gone = cairn(data, &["--checkpoint", "before", "get", "a"]);
    assert_eq!(gone.status.code(), Some(2));
    let err = String::from_utf8_lossy(&gone.stderr);
    assert!(err.contains("no checkpoint named \"before\""), "{err}");
    assert_eq!(ok(data, &["scan"]), "a\t2\n");

    let sharded = |args: &[&str]| {
        let mut a = vec!["--profile", "sharded"];
        a.extend_from_slice(args);
        ok(data, &a)
    };
    for i in 0..20 {
        sharded(&["put", &format!("k{i:02}"), "old"]);
    }
    sharded(&["checkpoint", "create", "s"]);
    sharded(&["delete", "--from", "k", "--to", "l"]);
    assert_eq!(sharded(&["scan"]), "");
    assert_eq!(sharded(&["--checkpoint", "s", "scan"]).lines().count(), 20);
    assert_eq!(
        sharded(&["checkpoint", "list"]).lines().count(),
        3,
        "one per shard"
    );
}

/// A clone made from the command line reads its checkpoint and takes writes of its own; the
/// checkpoint stays held until the clone has compacted; on the sharded profile each shard is
/// cloned into its own store.
#[test]
fn clones_are_made_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let (data, copy) = (dir.path().join("data"), dir.path().join("copy"));
    ok(&data, &["put", "a", "1"]);
    ok(&data, &["put", "b", "1"]);
    ok(&data, &["checkpoint", "create", "base"]);
    ok(&data, &["put", "a", "2"]);
    let into = copy.join("tables").display().to_string();
    let made = ok(&data, &["checkpoint", "clone", "base", "--into", &into]);
    assert_eq!(made, format!("cloned checkpoint base into {into}\n"));
    assert_eq!(ok(&copy, &["scan"]), "a\t1\nb\t1\n");
    ok(&copy, &["put", "c", "3"]);
    assert_eq!(ok(&copy, &["scan"]), "a\t1\nb\t1\nc\t3\n");
    assert_eq!(ok(&data, &["scan"]), "a\t2\nb\t1\n");

    let held = cairn(&data, &["checkpoint", "delete", "base"]);
    assert_eq!(held.status.code(), Some(2));
    let err = String::from_utf8_lossy(&held.stderr);
    assert!(err.contains("is held") && err.contains(&into), "{err}");
    ok(&copy, &["compact"]);
    ok(&data, &["checkpoint", "delete", "base"]);
    assert_eq!(ok(&copy, &["scan"]), "a\t1\nb\t1\nc\t3\n");

    let sharded = |data: &Path, args: &[&str]| {
        let mut a = vec!["--profile", "sharded"];
        a.extend_from_slice(args);
        ok(data, &a)
    };
    for i in 0..20 {
        sharded(&data, &["put", &format!("k{i:02}"), "old"]);
    }
    sharded(&data, &["checkpoint", "create", "s"]);
    let many = dir.path().join("many");
    let into = format!("{}/shard-{{shard}}/tables", many.display());
    let one = cairn(
        &data,
        &[
            "--profile",
            "sharded",
            "checkpoint",
            "clone",
            "s",
            "--into",
            "x",
        ],
    );
    assert!(String::from_utf8_lossy(&one.stderr).contains("{shard}"));
    sharded(&data, &["checkpoint", "clone", "s", "--into", &into]);
    sharded(&data, &["delete", "--from", "k", "--to", "l"]);
    assert_eq!(sharded(&many, &["scan"]).lines().count(), 20);
    assert_eq!(sharded(&data, &["scan"]), "");
}

/// `cairn ingest` loads a Parquet file pyarrow wrote, rows in no order, with a delete among
/// them; a sharded profile is sent to `import`.
#[test]
fn ingest_loads_a_file_pyarrow_wrote() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    ok(data, &["put", "a", "old"]);
    ok(data, &["put", "gone", "soon"]);
    let file = data.join("built.parquet");
    let script = r#"
import sys, pyarrow as pa, pyarrow.parquet as pq
rows = [(b"c", 1, 0, b"c1"), (b"a", 4, 0, b"a4"), (b"gone", 2, 1, b""), (b"a", 9, 0, b"a9")]
cols = list(zip(*rows))
t = pa.table({"key": pa.array(cols[0], pa.binary()), "seq": pa.array(cols[1], pa.uint64()),
              "kind": pa.array(cols[2], pa.uint8()), "value": pa.array(cols[3], pa.binary())})
pq.write_table(t, sys.argv[1])
"#;
    if python_over(script, std::slice::from_ref(&file), "pyarrow").is_none() {
        return;
    }
    let path = file.to_str().unwrap();
    assert_eq!(
        ok(data, &["ingest", path]),
        "ingested 1 files (sequence number 3)\n"
    );
    assert_eq!(ok(data, &["scan"]), "a\ta9\nc\tc1\n");
    let sharded = cairn(data, &["--profile", "sharded", "ingest", path]);
    assert_eq!(sharded.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&sharded.stderr).contains("`import` spreads"));
}

#[test]
fn merges_and_expiring_puts_from_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    let env = [("CAIRN_ENGINE__MERGE_OPERATOR", "add")];
    let run = |args: &[&str]| cairn_profile(data, "default", &env, args);
    run(&["merge", "--op", "add", "hits", "5"]);
    run(&["merge", "--op", "add", "hits", "-2"]);
    assert_eq!(run(&["get", "hits", "--number", "i64"]), "3\n");
    // --op must be the database's operator.
    let out = Command::new(env!("CARGO_BIN_EXE_cairn"))
        .arg("--config")
        .arg(repo_config())
        .args(["merge", "--op", "max", "hits", "9"])
        .env("CAIRN_DATA_DIR", data)
        .envs(env)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("engine.merge_operator"), "{err}");

    run(&["put", "session", "s1", "--ttl", "1h"]);
    run(&["put", "flash", "f", "--ttl", "1ms"]);
    std::thread::sleep(std::time::Duration::from_millis(5));
    assert_eq!(run(&["get", "session"]), "s1\n");
    let gone = cairn(data, &["get", "flash"]);
    assert_eq!(gone.status.code(), Some(1), "expired: not found");
    let bad = cairn(data, &["put", "k", "v", "--ttl", "5 parsecs"]);
    assert_eq!(bad.status.code(), Some(2));
}

/// Scoped tokens on a journal server shared by databases `a` and `b`, and on a shard server,
/// with real processes: a tenant's token reaches its own database and not the other; a
/// read-only token reads and cannot write; the server's own token reaches every database.
#[test]
fn scoped_tokens_reach_only_their_databases_and_read_only_ones_only_read() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("shared.toml");
    std::fs::write(
        &config,
        format!(
            "[default]\ndata_dir = \"{}\"\n[default.rpc]\ntoken = \"admin\"\nretries = 0\n\
             scoped_tokens = [{{ token = \"tenant-a\", databases = [\"a\"] }}, \
             {{ token = \"reader-a\", databases = [\"a\"], read_only = true }}, \
             {{ token = \"reader\", databases = [\"default\"], read_only = true }}]\n",
            dir.path().join("server").display()
        ),
    )
    .unwrap();
    let start = |component: &str| {
        let (child, line) = serve_with(
            &config,
            &["serve", component, "--listen", "127.0.0.1:0"],
            &[],
        );
        let url = line.trim().rsplit(' ').next().unwrap().to_string();
        assert!(url.starts_with("http://"), "{line}");
        (child, url)
    };
    let (mut journal, url) = start("journal");
    let client = |token: &str, database: &str, data: &str, args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_cairn"))
            .arg("--config")
            .arg(&config)
            .args(args)
            .env("CAIRN_DATA_DIR", dir.path().join(data))
            .env("CAIRN_JOURNAL__KIND", "grpc")
            .env("CAIRN_JOURNAL__URL", &url)
            .env("CAIRN_JOURNAL__DATABASE", database)
            .env("CAIRN_RPC__TOKEN", token)
            .env_remove("CAIRN_PROFILE")
            .output()
            .unwrap()
    };
    let refused = |out: Output, why: &str| {
        assert!(!out.status.success(), "refused");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(why), "{err}");
    };
    let ok = |out: Output| {
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    ok(client("tenant-a", "a", "node-a", &["put", "k", "v"]));
    refused(
        client("tenant-a", "b", "node-b", &["put", "k", "v"]),
        "does not reach database `b`",
    );
    refused(
        client("reader-a", "a", "node-a", &["put", "k", "w"]),
        "only reads database `a`",
    );
    assert_eq!(ok(client("reader-a", "a", "node-a", &["get", "k"])), "v\n");
    ok(client("admin", "b", "node-b", &["put", "k", "v"]));
    let _ = journal.kill();
    let _ = journal.wait();

    let (mut shard, url) = start("shard");
    let connect = |token: &str, args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_cairn"))
            .arg("--config")
            .arg(&config)
            .args(["--connect", &url])
            .args(args)
            .env("CAIRN_RPC__TOKEN", token)
            .env_remove("CAIRN_PROFILE")
            .output()
            .unwrap()
    };
    ok(connect("admin", &["put", "k", "v"]));
    assert_eq!(ok(connect("reader", &["get", "k"])), "v\n");
    // SQL reads through the server: the shard runs the statement's part and sends Arrow.
    assert_eq!(
        ok(connect(
            "reader",
            &["sql", "--format", "csv", "SELECT count(*) AS n FROM kv"]
        )),
        "n\n1\n"
    );
    refused(
        connect("reader", &["put", "k", "w"]),
        "only reads database `default`",
    );
    refused(
        connect("tenant-a", &["get", "k"]),
        "does not reach database `default`",
    );
    refused(connect("nobody", &["get", "k"]), "wrong bearer token");
    let _ = shard.kill();
    let _ = shard.wait();
}
