//! Crash safety: a child process writes with `sync = true` and reports each acknowledged
//! write; the parent kills it with SIGKILL mid-run (while flushes and compactions are in
//! flight, thanks to tiny memtables), reopens the database, and checks that every
//! acknowledged write is there and that nothing the child never wrote appears. Several rounds
//! run on the same directory, so recovery after recovery is covered too.
//!
//! The child is this test binary itself, re-executed with `CRASH_TEST_CHILD_DIR` set.

use bytes::Bytes;
use cairn::{Config, KeyRange};
use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

const WRITERS: u32 = 64;

fn config(dir: &Path) -> Config {
    let text = format!(
        r#"
[default]
data_dir = "{}"
[default.journal]
kind = "file"
sync = true
segment_bytes = 65536
[default.engine]
memtable_bytes = 32768
l0_stop_writes = 40
[default.compaction]
l0_trigger = 2
base_level_bytes = 131072
target_table_bytes = 32768
levels = 4
"#,
        dir.display()
    );
    Config::from_toml_str(&text, None).expect("crash test config")
}

/// The value a writer puts under a key: derived from the key, so any other value is garbage.
fn value_for(key: &str) -> String {
    format!("value-of-{key}-{}", "p".repeat(key.len() * 3))
}

/// Child mode: write forever from many tasks, printing each key once `put` has returned.
/// Not a test of its own: `acknowledged_writes_survive_sigkill` runs it in a child process.
#[test]
#[ignore = "the child process of acknowledged_writes_survive_sigkill"]
fn crash_child() {
    let dir =
        std::env::var("CRASH_TEST_CHILD_DIR").expect("run by acknowledged_writes_survive_sigkill");
    let round: u32 = std::env::var("CRASH_TEST_ROUND").unwrap().parse().unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let db = std::sync::Arc::new(cairn::open(&config(Path::new(&dir))).await.unwrap());
        println!("ready");
        let mut tasks = Vec::new();
        for w in 0..WRITERS {
            let db = db.clone();
            tasks.push(tokio::spawn(async move {
                for i in 0u64.. {
                    let key = format!("r{round}-w{w:02}-{i:08}");
                    if i % 7 == 3 {
                        // Deletes of keys that were never written must stay absent.
                        db.delete(format!("ghost-{key}")).await.unwrap();
                    } else {
                        db.put(key.clone(), value_for(&key)).await.unwrap();
                        println!("ack {key}");
                    }
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let mut acked: HashMap<String, String> = HashMap::new();
    // The child's name as the test binary knows it: its path below the crate.
    let child_test = format!(
        "{}::crash_child",
        module_path!().split_once("::").map_or("", |(_, m)| m)
    );
    for (round, kill_after) in [(0u32, 3000usize), (1, 500), (2, 6000)] {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                &child_test,
                "--ignored",
                "--nocapture",
                "--test-threads",
                "1",
            ])
            .env("CRASH_TEST_CHILD_DIR", dir.path())
            .env("CRASH_TEST_ROUND", round.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let mut seen = 0;
        for line in lines.by_ref() {
            let line = line.unwrap();
            if let Some(key) = line.strip_prefix("ack ") {
                acked.insert(key.to_string(), value_for(key));
                seen += 1;
                if seen == kill_after {
                    break;
                }
            }
        }
        assert_eq!(seen, kill_after, "round {round}: the child stopped early");
        // SIGKILL: no destructor, no flush, no close.
        child.kill().unwrap();
        child.wait().unwrap();
        // Acks printed before the kill but not yet read are acknowledged writes too.
        for line in lines {
            let Ok(line) = line else { break };
            if let Some(key) = line.strip_prefix("ack ") {
                acked.insert(key.to_string(), value_for(key));
            }
        }

        let db = cairn::open(&config(dir.path()))
            .await
            .expect("reopen after SIGKILL");
        for (key, value) in &acked {
            let got = db.get(key.as_bytes()).await.unwrap();
            assert_eq!(
                got,
                Some(Bytes::from(value.clone())),
                "round {round}: acknowledged {key} lost"
            );
        }
        let mut it = db.scan(KeyRange::all()).await.unwrap();
        let mut present = 0usize;
        while let Some((k, v)) = it.next().await.unwrap() {
            let key = std::str::from_utf8(&k).expect("utf8 key");
            assert!(
                !key.starts_with("ghost-"),
                "round {round}: a deleted, never-written key appeared: {key}"
            );
            assert_eq!(
                v,
                Bytes::from(value_for(key)),
                "round {round}: {key} has a value nobody wrote"
            );
            present += 1;
        }
        assert!(present >= acked.len());
        let stats = db.stats();
        assert!(
            stats.table_count() > 0,
            "round {round}: the run flushed tables before the kill"
        );
        db.close().await.unwrap();
    }
}
