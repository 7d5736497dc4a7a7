//! `CAIRN_LOG_FORMAT=json`: a server's log is one JSON object per line, and what a call logs
//! carries the call's span, naming its method (so the component) and database; a background
//! job's failure carries the job's span and database.

use crate::support;

use cairn::TableMeta;
use cairn_filestore::{GrpcStorage, Storage};
use cairn_rpc::ClientOptions;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// `cairn serve COMPONENT` logging JSON at `warn` into `log`; returns it and its URL.
fn serve_logging_json(
    config: &Path,
    component: &str,
    env: &[(&str, &str)],
    log: &Path,
) -> (Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_cairn"))
        .arg("--config")
        .arg(config)
        .args(["serve", component, "--listen", "127.0.0.1:0"])
        .env("CAIRN_LOG", "warn")
        .env("CAIRN_LOG_FORMAT", "json")
        .envs(env.iter().copied())
        .env_remove("CAIRN_PROFILE")
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = line.trim().rsplit(' ').next().unwrap().to_string();
    (child, url)
}

/// The log's lines, each parsed as JSON.
fn json_lines(log: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(log)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_calls_log_lines_are_json_and_carry_its_method_and_database() {
    let dir = tempfile::tempdir().unwrap();
    let config = support::node_config(dir.path(), "node");
    let log = dir.path().join("server.log");
    let (mut child, url) = serve_logging_json(&config, "storage", &[], &log);

    // Opening a table the server does not have fails there, and the server logs why.
    let storage = GrpcStorage::new(ClientOptions::new(url), 0).unwrap();
    let missing = TableMeta {
        id: 424242,
        smallest: b"a".to_vec(),
        largest: b"b".to_vec(),
        min_seq: 1,
        max_seq: 1,
        entries: 1,
        size: 100,
    };
    assert!(storage.open_table(&missing).await.is_err());
    let _ = child.kill();
    let _ = child.wait();

    let lines = json_lines(&log);
    let failed = lines
        .iter()
        .find(|l| l["fields"]["message"] == "call failed")
        .unwrap_or_else(|| panic!("no failed call logged: {lines:?}"));
    assert_eq!(failed["level"], "WARN");
    assert_eq!(failed["span"]["name"], "rpc", "{failed}");
    assert_eq!(
        failed["span"]["method"], "/cairn.storage.Storage/OpenTable",
        "{failed}"
    );
    assert_eq!(failed["span"]["database"], "default", "{failed}");
}

/// A shard server whose storage server dies logs its failing flushes in the flush's span,
/// naming the database.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_flush_logs_in_its_span_with_the_database() {
    let dir = tempfile::tempdir().unwrap();
    let mut storage = support::serve(
        &support::node_config(dir.path(), "storage"),
        "storage",
        "127.0.0.1:0",
        &[],
    );
    let log = dir.path().join("shard.log");
    let (mut shard, url) = serve_logging_json(
        &support::node_config(dir.path(), "shard"),
        "shard",
        &[
            ("CAIRN_STORAGE__KIND", "grpc"),
            ("CAIRN_STORAGE__URL", storage.url.as_str()),
        ],
        &log,
    );
    storage.kill();

    let router = cairn::Config::from_toml_str(
        &format!(
            "[default]\ndata_dir = \"{}\"\n[default.router]\nshards = [{{ kind = \"grpc\", url = \"{url}\" }}]\n",
            dir.path().join("router").display(),
        ),
        None,
    )
    .unwrap();
    let db = cairn::open_router(&router).await.unwrap();
    db.put("k", "v").await.unwrap();
    // The flush cannot succeed; it is asked for so the shard tries at once.
    let _ = tokio::time::timeout(Duration::from_secs(2), db.flush()).await;
    let failed = |lines: &[serde_json::Value]| {
        lines
            .iter()
            .find(|l| {
                l["fields"]["message"]
                    .as_str()
                    .is_some_and(|m| m.starts_with("flush failed"))
            })
            .cloned()
    };
    let mut found = None;
    for _ in 0..300 {
        found = failed(&json_lines(&log));
        if found.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = shard.kill();
    let _ = shard.wait();
    let failed = found.unwrap_or_else(|| panic!("no failed flush logged: {:?}", json_lines(&log)));
    assert_eq!(failed["span"]["name"], "flush", "{failed}");
    assert!(
        failed["span"]["database"]
            .as_str()
            .is_some_and(|d| !d.is_empty()),
        "{failed}"
    );
}
