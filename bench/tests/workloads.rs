//! Runs every workload briefly on the shipped default profile and checks the JSON report.

use std::path::Path;
use std::process::Command;

const WORKLOADS: &[&str] = &[
    "put",
    "put-seq",
    "get",
    "scan",
    "multiget",
    "aggregate",
    "mixed",
    "ycsb-a",
    "ycsb-b",
    "ycsb-c",
    "ycsb-d",
    "ycsb-e",
    "ycsb-f",
];

/// Runs `cairn-bench` on the shipped config with `args` and `--json`: the JSON report.
fn suite_report(args: &[&str]) -> serde_json::Value {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("out.json");
    let out = Command::new(env!("CARGO_BIN_EXE_cairn-bench"))
        .arg("--config")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("../cairn.toml"))
        .args(args)
        .arg("--quiet")
        .arg("--json")
        .arg(&json)
        .output()
        .expect("run cairn-bench");
    assert!(
        out.status.success(),
        "cairn-bench failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap()
}

#[test]
fn every_workload_runs_and_reports_its_fields() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("out.json");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_cairn-bench"));
    cmd.arg("--config")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("../cairn.toml"))
        .args([
            "--keys",
            "2000",
            "--duration",
            "0.2",
            "--concurrency",
            "4",
            "--quiet",
        ])
        .arg("--data-dir")
        .arg(dir.path())
        .arg("--json")
        .arg(&json);
    for w in WORKLOADS {
        cmd.args(["--workload", w]);
    }
    let out = cmd.output().expect("run cairn-bench");
    assert!(
        out.status.success(),
        "cairn-bench failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let table = String::from_utf8_lossy(&out.stdout);
    for w in WORKLOADS {
        assert!(
            table.contains(&format!("\n{w}  (")),
            "the table has a section for {w}:\n{table}"
        );
    }

    let rows: Vec<serde_json::Value> =
        serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert_eq!(
        rows.len(),
        WORKLOADS.len(),
        "one object per (profile, workload)"
    );
    for (row, w) in rows.iter().zip(WORKLOADS) {
        assert_eq!(row["profile"], "default");
        assert_eq!(row["workload"], *w);
        for field in [
            "ops",
            "seconds",
            "ops_per_sec",
            "p50_us",
            "p95_us",
            "p99_us",
            "p999_us",
            "cpu_seconds",
        ] {
            assert!(
                row[field].is_number(),
                "{w}: `{field}` is a number in {row}"
            );
        }
        assert!(row["ops"].as_u64().unwrap() > 0, "{w} did some work: {row}");
        assert_eq!(row["errors"].as_u64(), Some(0), "{w}: {row}");
        let (p50, p999) = (
            row["p50_us"].as_f64().unwrap(),
            row["p999_us"].as_f64().unwrap(),
        );
        assert!(
            p50 > 0.0 && p50 <= p999,
            "{w}: percentiles are ordered: {row}"
        );
    }
    // The duration also bounds a fill, so on a slow machine it may stop short of every key.
    assert!(
        rows[0]["ops"].as_u64().unwrap() <= 2000,
        "put writes each key at most once"
    );
    assert!(
        rows[0]["write_amplification"].as_f64().unwrap() >= 1.0,
        "a synced fill writes at least its payload: {}",
        rows[0]
    );
    let leftovers = std::fs::read_dir(dir.path())
        .unwrap()
        .filter(|e| e.as_ref().unwrap().path().is_dir())
        .count();
    assert_eq!(leftovers, 0, "the bench removes its data directories");
}

#[test]
fn unknown_profile_and_missing_rocksdb_feature_are_clear_errors() {
    let run = |profile: &str| {
        Command::new(env!("CARGO_BIN_EXE_cairn-bench"))
            .arg("--config")
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("../cairn.toml"))
            .args([
                "--profile",
                profile,
                "--keys",
                "10",
                "--duration",
                "0.05",
                "--quiet",
            ])
            .output()
            .unwrap()
    };
    let out = run("nope");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("profile `nope`"));
    if cfg!(not(feature = "rocksdb")) {
        let out = run("rocksdb");
        assert!(!out.status.success());
        assert!(String::from_utf8_lossy(&out.stderr).contains("--features rocksdb"));
    }
}

/// The take-over suite on the default profile (whose journal and tables are the node's own,
/// so its "new node" is a restart): every key written before the crash is checked after it.
#[test]
fn the_takeover_suite_restarts_a_local_profile_and_reports_it() {
    let report = suite_report(&[
        "--suite",
        "takeover",
        "--keys",
        "3000",
        "--concurrency",
        "8",
    ]);
    let r = &report[0];
    assert_eq!(r["mode"], "restart", "{r}");
    assert_eq!(r["keys"], 3000, "{r}");
    assert_eq!(
        r["epoch_after"].as_u64(),
        r["epoch_before"].as_u64().map(|e| e + 1),
        "{r}"
    );
    assert!(r["takeover_seconds"].as_f64().unwrap() > 0.0, "{r}");
}

/// The range-delete suite on the default and sharded profiles: its reads check, in every
/// phase, that the deleted half is gone and the rest is there.
#[test]
fn the_range_delete_suite_reads_through_every_phase_of_a_tombstone() {
    let report = suite_report(&[
        "--suite",
        "range-delete",
        "--profile",
        "default",
        "--profile",
        "sharded",
        "--keys",
        "4000",
    ]);
    for r in report.as_array().unwrap() {
        let phases: Vec<&str> = r["phases"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["name"].as_str().unwrap())
            .collect();
        assert_eq!(
            phases,
            ["before", "in memtable", "in a table", "compacted"],
            "{r}"
        );
        assert!(r["delete_range_us"].as_f64().unwrap() > 0.0, "{r}");
    }
}

/// The checkpoint suite: twenty checkpoints made and deleted on a loaded database.
#[test]
fn the_checkpoint_suite_makes_and_deletes_checkpoints() {
    let report = suite_report(&["--suite", "checkpoint", "--keys", "3000"]);
    let r = &report[0];
    assert_eq!(r["keys"], 3000, "{r}");
    assert!(r["bytes"].as_u64().unwrap() > 300_000, "{r}");
    assert!(r["median_ms"].as_f64().unwrap() > 0.0, "{r}");
}

/// The transactions suite: transactions lose no increment; its report says how many the
/// plain read-modify-writes lost (any number, 0 included, on a quiet machine).
#[test]
fn the_transactions_suite_loses_no_increment_in_transactions() {
    let report = suite_report(&[
        "--suite",
        "transactions",
        "--profile",
        "nosync",
        "--keys",
        "20",
        "--concurrency",
        "8",
        "--duration",
        "0.5",
    ]);
    let txn = &report[0];
    assert_eq!(txn["mode"], "transactions", "{report}");
    assert!(txn["committed"].as_u64().unwrap() > 0, "{report}");
    assert_eq!(txn["lost_increments"], 0, "{report}");
    assert_eq!(report[1]["mode"], "plain batches", "{report}");
}

/// The merge suite: merges lose no increment, and both modes report a rate.
#[test]
fn the_merge_suite_loses_no_increment_with_merges() {
    let report = suite_report(&[
        "--suite",
        "merge",
        "--profile",
        "nosync",
        "--keys",
        "50",
        "--concurrency",
        "4",
        "--duration",
        "0.5",
    ]);
    let merge = &report[0];
    assert_eq!(merge["mode"], "merge", "{report}");
    assert!(merge["increments"].as_u64().unwrap() > 0, "{report}");
    assert_eq!(merge["lost_increments"], 0, "{report}");
    assert_eq!(report[1]["mode"], "get+put", "{report}");
    assert!(report[1]["per_second"].as_f64().unwrap() > 0.0, "{report}");
}

/// Metrics beyond loopback need an explicit yes, as servers' do.
#[test]
fn metrics_beyond_loopback_are_refused_without_an_explicit_yes() {
    let out = Command::new(env!("CARGO_BIN_EXE_cairn-bench"))
        .arg("--config")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("../cairn.toml"))
        .args(["--keys", "10", "--duration", "0.1", "--quiet"])
        .args(["--metrics-listen", "0.0.0.0:0"])
        .output()
        .expect("run cairn-bench");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("refusing to serve metrics on 0.0.0.0"),
        "{err}"
    );
}

/// With `--metrics-listen`, the engines' metrics are served while the bench runs: a scrape
/// during a get workload sees the gets counted.
#[test]
fn the_bench_exports_its_engines_metrics_on_request() {
    use std::io::{Read, Write};
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let at = format!("127.0.0.1:{port}");
    let mut bench = Command::new(env!("CARGO_BIN_EXE_cairn-bench"))
        .arg("--config")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("../cairn.toml"))
        .args(["--keys", "2000", "--duration", "20", "--concurrency", "2"])
        .args(["--workload", "get", "--quiet", "--metrics-listen", &at])
        .arg("--data-dir")
        .arg(dir.path())
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("run cairn-bench");
    let scrape = || -> Option<String> {
        let mut conn = std::net::TcpStream::connect(&at).ok()?;
        write!(
            conn,
            "GET /metrics HTTP/1.1\r\nHost: {at}\r\nConnection: close\r\n\r\n"
        )
        .ok()?;
        let mut text = String::new();
        conn.read_to_string(&mut text).ok()?;
        Some(text)
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let seen = loop {
        let gets = scrape().and_then(|text| {
            text.lines()
                .find(|l| l.starts_with("cairn_engine_gets_total"))
                .and_then(|l| l.rsplit_once(' '))
                .and_then(|(_, v)| v.parse::<f64>().ok())
        });
        if gets.is_some_and(|n| n > 0.0) {
            break true;
        }
        if bench.try_wait().unwrap().is_some() || std::time::Instant::now() > deadline {
            break false;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    let _ = bench.kill();
    let _ = bench.wait();
    assert!(seen, "a scrape during the get workload counted gets");
}

/// `--role writer` and `--role reader` in two processes on one bucket: the reader's report
/// carries its gets and its staleness, measured against the writer's marker log.
#[test]
fn a_writer_and_a_reader_process_report_the_readers_staleness() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("shared.toml");
    let bucket = dir.path().join("bucket");
    std::fs::write(
        &config,
        format!(
            "[default]\ndata_dir = \"unused\"\n[default.engine]\nreader_poll_ms = 20\n\
             [default.journal]\nkind = \"object\"\nurl = \"file://{0}/journal\"\n\
             [default.storage]\nkind = \"parquet\"\nurl = \"file://{0}/tables\"\n",
            bucket.display()
        ),
    )
    .unwrap();
    let marks = dir.path().join("marks");
    let bench = |role: &str, seconds: &str| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_cairn-bench"));
        c.arg("--config")
            .arg(&config)
            .args(["--role", role, "--keys", "2000", "--duration", seconds])
            .args(["--concurrency", "2", "--quiet", "--data-dir"])
            .arg(dir.path())
            .arg("--marks")
            .arg(&marks);
        c
    };
    let mut writer = bench("writer", "6")
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("run the writer");
    // The reader follows a database that exists: wait for the writer's first marker.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while std::fs::read_to_string(&marks).map_or(true, |m| m.is_empty()) {
        assert!(
            std::time::Instant::now() < deadline,
            "the writer never set a marker"
        );
        assert!(
            writer.try_wait().unwrap().is_none(),
            "the writer stopped early"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let json = dir.path().join("reader.json");
    let out = bench("reader", "2")
        .arg("--json")
        .arg(&json)
        .output()
        .expect("run the reader");
    let writer_ok = writer.wait().unwrap().success();
    assert!(
        out.status.success(),
        "reader failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(writer_ok, "the writer failed");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("staleness of default"), "{stdout}");
    let rows: Vec<serde_json::Value> =
        serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let get = &rows[0];
    assert_eq!(get["workload"], "get");
    assert!(get["ops"].as_u64().unwrap() > 0, "{get}");
    let staleness = &get["staleness"];
    assert!(staleness["markers"].as_u64().unwrap() > 0, "{get}");
    assert!(staleness["p99_ms"].as_f64().unwrap() >= staleness["p50_ms"].as_f64().unwrap());
}
