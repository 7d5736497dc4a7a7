//! `CAIRN_LOG_FORMAT=json`: a server's log is one JSON object per line, and what a call logs
//! carries the call's span, naming its method (so the component) and database.

mod support;

use cairn::TableMeta;
use cairn_filestore::{GrpcStorage, Storage};
use cairn_rpc::ClientOptions;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_calls_log_lines_are_json_and_carry_its_method_and_database() {
    let dir = tempfile::tempdir().unwrap();
    let config = support::node_config(dir.path(), "node");
    let log = dir.path().join("server.log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_cairn"))
        .arg("--config")
        .arg(&config)
        .args(["serve", "storage", "--listen", "127.0.0.1:0"])
        .env("CAIRN_LOG", "warn")
        .env("CAIRN_LOG_FORMAT", "json")
        .env_remove("CAIRN_PROFILE")
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = line.trim().rsplit(' ').next().unwrap().to_string();

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

    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let failed = lines
        .iter()
        .find(|l| l["fields"]["message"] == "call failed")
        .unwrap_or_else(|| panic!("no failed call logged: {text}"));
    assert_eq!(failed["level"], "WARN");
    assert_eq!(failed["span"]["name"], "rpc", "{failed}");
    assert_eq!(
        failed["span"]["method"], "/cairn.storage.Storage/OpenTable",
        "{failed}"
    );
    assert_eq!(failed["span"]["database"], "default", "{failed}");
}
