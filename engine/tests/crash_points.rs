//! Crash points: a child process runs writes, flushes, an import and compactions, and dies
//! (abort, no unwinding, nothing flushed) at one failpoint of flush, compaction install,
//! import, manifest write or journal truncation. The parent reopens the database and checks it
//! against what the child was told: every acknowledged write is there with its value, the
//! import is there whole if it was acknowledged and wholly or not at all otherwise, and
//! nothing else is.
//!
//! The child is this test binary, re-run with `CRASH_POINT` and `CRASH_DIR` set.

use bytes::Bytes;
use cairn_common::KeyRange;
use cairn_compaction::{LocalCompactor, PickerOptions};
use cairn_engine::{Components, Db, EngineOptions};
use cairn_filestore::{SstOptions, SstStorage, Storage};
use cairn_journal::{FileJournal, FileJournalOptions};
use cairn_memtable::MemtableOptions;
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;

/// Each failpoint, and the passes through it at which the child dies (the first pass of the
/// manifest write is the epoch bump at open).
const POINTS: &[(&str, &[u32])] = &[
    ("flush-before-install", &[1, 7]),
    ("flush-after-install", &[1, 7]),
    ("flush-before-truncate", &[1, 7]),
    ("manifest-after-write", &[1, 2, 9, 30]),
    ("compaction-before-install", &[1, 3]),
    ("compaction-after-install", &[1, 3]),
    ("import-before-install", &[1]),
    ("import-after-install", &[1]),
];

const IMPORTED: u32 = 500;

async fn open(dir: &Path) -> Db {
    let storage: Arc<dyn Storage> =
        Arc::new(SstStorage::open(SstOptions::new(dir.join("tables"))).expect("storage"));
    let journal = FileJournal::open(FileJournalOptions::new(dir.join("journal"))).expect("journal");
    let comps = Components {
        journal: Arc::new(journal),
        memtables: MemtableOptions::default().factory(),
        compactor: Arc::new(LocalCompactor::new(storage.clone())),
        storage,
    };
    let opts = EngineOptions {
        memtable_bytes: 8 << 10,
        background_threads: 1,
        compaction: PickerOptions {
            l0_trigger: 2,
            levels: 3,
            base_level_bytes: 32 << 10,
            level_size_ratio: 4,
            target_table_bytes: 8 << 10,
            subcompactions: 1,
        },
        ..EngineOptions::default()
    };
    Db::open(dir, opts, comps).await.expect("open")
}

fn value(key: &str) -> String {
    format!("v-{key}-{}", "x".repeat(40))
}

/// The child: writes (printing each acknowledged key), flushes, imports and compacts until the
/// failpoint kills it.
#[test]
#[ignore = "the child process of every_crash_point_loses_nothing_acknowledged"]
fn crash_point_child() {
    let point = std::env::var("CRASH_POINT").expect("run by the parent test");
    let dir = std::env::var("CRASH_DIR").expect("run by the parent test");
    let hit: u32 = std::env::var("CRASH_HIT")
        .expect("run by the parent test")
        .parse()
        .expect("a pass number");
    let passes = std::sync::atomic::AtomicU32::new(0);
    fail::cfg_callback(point, move || {
        if passes.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1 == hit {
            std::process::abort();
        }
    })
    .expect("failpoint");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let db = open(Path::new(&dir)).await;
        for round in 0..20u32 {
            for i in 0..100u32 {
                let key = format!("w{round:02}-{i:04}");
                db.put(key.clone(), value(&key)).await.expect("put");
                println!("ack {key}");
            }
            db.flush().await.expect("flush");
            if round == 5 {
                let entries = (0..IMPORTED)
                    .map(|i| {
                        let key = format!("imp-{i:04}");
                        (Bytes::from(key.clone()), Bytes::from(value(&key)))
                    })
                    .collect();
                db.import(entries).await.expect("import");
                println!("imported");
            }
            if round % 4 == 3 {
                db.compact().await.expect("compact");
            }
        }
        println!("done");
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_crash_point_loses_nothing_acknowledged() {
    for (point, hit) in POINTS
        .iter()
        .flat_map(|(p, hits)| hits.iter().map(move |h| (p, h)))
    {
        let point = format!("{point} (pass {hit})");
        let name = point.split(' ').next().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "crash_point_child", "--ignored", "--nocapture"])
            .args(["--test-threads", "1"])
            .env("CRASH_POINT", name)
            .env("CRASH_HIT", hit.to_string())
            .env("CRASH_DIR", dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut acked = BTreeMap::new();
        let mut imported = false;
        let mut done = false;
        for line in BufReader::new(child.stdout.take().unwrap()).lines() {
            let line = line.unwrap();
            if let Some(key) = line.strip_prefix("ack ") {
                acked.insert(key.to_string(), value(key));
            } else if line == "imported" {
                imported = true;
            } else if line == "done" {
                done = true;
            }
        }
        let status = child.wait().unwrap();
        assert!(
            !done && !status.success(),
            "{point}: the child must die at the failpoint ({status})"
        );

        let db = open(dir.path()).await;
        let all: BTreeMap<String, String> = db
            .scan(KeyRange::all())
            .await
            .unwrap()
            .collect(None)
            .await
            .unwrap()
            .into_iter()
            .map(|(k, v)| {
                (
                    String::from_utf8(k.to_vec()).unwrap(),
                    String::from_utf8(v.to_vec()).unwrap(),
                )
            })
            .collect();
        for (k, v) in &acked {
            assert_eq!(all.get(k), Some(v), "{point}: acknowledged {k}");
        }
        let imports = all.keys().filter(|k| k.starts_with("imp-")).count();
        if imported {
            assert_eq!(
                imports, IMPORTED as usize,
                "{point}: the acknowledged import"
            );
        } else {
            assert!(
                imports == 0 || imports == IMPORTED as usize,
                "{point}: {imports} of the import's {IMPORTED} entries"
            );
        }
        for (k, v) in &all {
            assert_eq!(v, &value(k), "{point}: {k} has a value never written");
            assert!(
                k.starts_with("imp-") || k.starts_with('w'),
                "{point}: {k} never written"
            );
        }
        // Written after the crash and read back after another reopen: the database works on.
        db.put("after", "crash").await.unwrap();
        db.close().await.unwrap();
        drop(db);
        let db = open(dir.path()).await;
        assert_eq!(db.get(b"after").await.unwrap(), Some(Bytes::from("crash")));
        db.close().await.unwrap();
        eprintln!(
            "{point}: {} acknowledged writes, import acknowledged: {imported}",
            acked.len()
        );
    }
}
