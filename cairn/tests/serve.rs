//! Real `cairn serve` processes, killed and restarted under a running engine: a dead journal
//! is an error for the writer naming the journal and its URL, and nothing it acknowledged is
//! lost; a dead compaction node is retried and the job runs locally; a dead storage node fails
//! reads and flushes with an error naming it, and flushes resume once it is back; a dead shard
//! server fails the router's calls that need it, by name, and comes back with its data; a pool
//! of compaction servers loses nothing to a killed, stopped or terminated one.

use crate::support;

use bytes::Bytes;
use cairn::{Config, KeyRange};
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;
use support::{restart, serve, serve_args};

fn engine_config(data: &Path, journal: &str, storage: &str, compaction: &str) -> Config {
    Config::from_toml_str(
        &format!(
            "[default]\ndata_dir = \"{}\"\n\
             [default.rpc]\ntimeout_ms = 3000\nconnect_timeout_ms = 500\nretries = 2\nretry_initial_ms = 20\n\
             [default.engine]\nmemtable_bytes = 16384\nbackground_threads = 1\n\
             [default.journal]\nkind = \"grpc\"\nurl = \"{journal}\"\n\
             [default.storage]\nkind = \"grpc\"\nurl = \"{storage}\"\nblock_cache_bytes = 0\n\
             [default.compaction]\nkind = \"grpc\"\nurl = \"{compaction}\"\nfallback = \"local\"\nl0_trigger = 2\n",
            data.display()
        ),
        None,
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_servers_give_errors_retries_and_fallbacks_and_lose_no_acknowledged_write() {
    let dir = tempfile::tempdir().unwrap();
    let node_config = support::node_config(dir.path(), "node");
    let mut journal = serve(&node_config, "journal", "127.0.0.1:0", &[]);
    let mut storage = serve(&node_config, "storage", "127.0.0.1:0", &[]);
    let compaction_env = [
        ("CAIRN_COMPACTION__STORAGE__KIND", "grpc"),
        ("CAIRN_COMPACTION__STORAGE__URL", storage.url.as_str()),
    ];
    let compaction_env: Vec<(&str, String)> = compaction_env
        .iter()
        .map(|(k, v)| (*k, v.to_string()))
        .collect();
    let cenv: Vec<(&str, &str)> = compaction_env
        .iter()
        .map(|(k, v)| (*k, v.as_str()))
        .collect();
    let mut compaction = serve(&node_config, "compaction", "127.0.0.1:0", &cenv);

    let config = engine_config(
        &dir.path().join("engine"),
        &journal.url,
        &storage.url,
        &compaction.url,
    );
    let db = Arc::new(cairn::open(&config).await.unwrap());
    let mut model: BTreeMap<Bytes, Bytes> = BTreeMap::new();
    for i in 0..300 {
        let (k, v) = (format!("a{i:04}"), format!("{i}").repeat(20));
        db.put(k.clone(), v.clone()).await.unwrap();
        model.insert(k.into(), v.into());
    }
    db.flush().await.unwrap();
    db.compact().await.unwrap();

    // The compaction node dies: the job is retried, then runs here, against the storage node.
    compaction.kill();
    for i in 0..100 {
        let k = format!("a{i:04}");
        db.put(k.clone(), "second").await.unwrap();
        model.insert(k.into(), Bytes::from("second"));
    }
    db.compact().await.expect("compaction falls back to local");
    assert_eq!(db.stats().background_error, None);

    // The journal dies under 8 concurrent writers.
    let mut writers = Vec::new();
    for w in 0..8 {
        let db = db.clone();
        writers.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            let mut first_error = None;
            for i in 0..100_000 {
                let (k, v) = (format!("w{w}-{i:06}"), format!("value {w} {i}"));
                match db.put(k.clone(), v.clone()).await {
                    Ok(_) => acked.push((Bytes::from(k), Bytes::from(v))),
                    Err(e) => {
                        first_error = Some(e.to_string());
                        break;
                    }
                }
            }
            (acked, first_error)
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    journal.kill();
    let mut acked = 0;
    for w in writers {
        let (ok, err) = w.await.unwrap();
        let err = err.expect("a writer sees the dead journal");
        assert!(
            err.contains(&format!("journal at {}", journal.url)),
            "the error names the journal and its URL: {err}"
        );
        acked += ok.len();
        model.extend(ok);
    }
    assert!(acked > 0);
    let err = db.put("after", "x").await.unwrap_err().to_string();
    assert!(err.contains("journal at"), "{err}");
    // Back on the same address: the client reconnects by itself.
    let journal = restart(&node_config, "journal", &journal, &[]);
    db.put("after", "x").await.unwrap();
    model.insert(Bytes::from("after"), Bytes::from("x"));

    // The storage node dies: a read that needs a table and a flush fail, naming it.
    storage.kill();
    let err = db.get(b"a0150").await.unwrap_err().to_string();
    assert!(
        err.contains(&format!("storage at {}", storage.url)),
        "{err}"
    );
    let err = db.flush().await.unwrap_err().to_string();
    assert!(err.contains("storage at"), "{err}");
    let storage = restart(&node_config, "storage", &storage, &[]);
    // A manifest write the kill cut off may have landed all the same: the writer then stops
    // rather than guess, and a reopen continues from it, as its error says. Either way no
    // acknowledged write is lost (checked below).
    let db = match db.flush().await {
        Ok(()) => db,
        Err(e) if e.to_string().contains("landed after all") => {
            let _ = db.close_without_flush().await;
            drop(db);
            Arc::new(cairn::open(&config).await.unwrap())
        }
        Err(e) => panic!("flushes resume: {e}"),
    };
    db.flush().await.expect("flushes resume");

    let all = support::scan_all(&db).await;
    let want: Vec<(Bytes, Bytes)> = model.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    // Writes that failed may or may not have reached the journal; every acknowledged one did.
    let got: BTreeMap<Bytes, Bytes> = all.into_iter().collect();
    for (k, v) in &want {
        assert_eq!(got.get(k), Some(v), "acknowledged write of {k:?} lost");
    }
    // And after a crash-like reopen, from the journal server's replay.
    db.put("last", "y").await.unwrap();
    db.close_without_flush().await.unwrap();
    drop(db);
    let db = cairn::open(&config).await.unwrap();
    let got: BTreeMap<Bytes, Bytes> = db
        .scan(KeyRange::all())
        .await
        .unwrap()
        .collect(None)
        .await
        .unwrap()
        .into_iter()
        .collect();
    for (k, v) in want
        .iter()
        .chain([(Bytes::from("last"), Bytes::from("y"))].iter())
    {
        assert_eq!(got.get(k), Some(v), "after reopen: {k:?}");
    }
    db.close().await.unwrap();
    // SIGTERM: each server stops gracefully and exits 0.
    for mut server in [journal, storage] {
        let pid = server.child.id().to_string();
        let killed = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        assert!(killed.success());
        let status = server.child.wait().unwrap();
        assert!(status.success(), "{} exited with {status}", server.url);
    }
}

/// `cairn serve shard` as real processes under a router: a shard server killed with SIGKILL
/// fails the calls that need it, naming it, while the other shards answer; restarted on its
/// port, it has every acknowledged write (its journal syncs); SIGTERM stops it with exit 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_shard_servers_fail_their_calls_by_name_and_come_back_whole() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let profile = |urls: [&str; 2]| {
        format!(
            "[default]\ndata_dir = \"{}\"\n\
             [default.rpc]\ntimeout_ms = 3000\nconnect_timeout_ms = 500\nretries = 1\nretry_initial_ms = 20\n\
             [default.router]\nshards = [{{ kind = \"local\" }}, {{ kind = \"grpc\", url = \"{}\" }}, {{ kind = \"grpc\", url = \"{}\" }}]\n",
            data.display(),
            urls[0],
            urls[1]
        )
    };
    // The servers need only their shard index from the file; their URLs come from --listen.
    let server_toml = dir.path().join("servers.toml");
    std::fs::write(
        &server_toml,
        profile(["http://127.0.0.1:1", "http://127.0.0.1:2"]),
    )
    .unwrap();
    let shard_server = |i: &str, listen: &str| {
        serve_args(
            &server_toml,
            &["serve", "shard", "--shard", i, "--listen", listen],
            &[],
        )
    };
    let one = shard_server("1", "127.0.0.1:0");
    let mut two = shard_server("2", "127.0.0.1:0");
    let config = Config::from_toml_str(&profile([&one.url, &two.url]), None).unwrap();
    let router = cairn::open_router(&config).await.unwrap();
    let mut want = BTreeMap::new();
    for i in 0..300 {
        let (k, v) = (
            Bytes::from(format!("k{i:03}")),
            Bytes::from(format!("v{i}")),
        );
        router.put(k.clone(), v.clone()).await.unwrap();
        want.insert(k, v);
    }

    two.kill();
    let on = |s: usize| {
        want.keys()
            .find(|k| router.shard_of(k) == s)
            .unwrap()
            .clone()
    };
    let e = router.get(&on(2)).await.unwrap_err().to_string();
    assert!(e.contains(&format!("shard 2 at {}", two.url)), "{e}");
    let e = router.put(on(2), "x").await.unwrap_err().to_string();
    assert!(e.contains("shard 2 at"), "{e}");
    assert!(router.get(&on(0)).await.unwrap().is_some());
    assert!(router.get(&on(1)).await.unwrap().is_some());

    let two = shard_server("2", &format!("127.0.0.1:{}", two.port()));
    let got: BTreeMap<Bytes, Bytes> =
        futures::TryStreamExt::try_collect(router.scan(KeyRange::all(), None).await.unwrap())
            .await
            .unwrap();
    assert_eq!(
        got, want,
        "every acknowledged write, the refused one absent"
    );
    router.close().await.unwrap();

    for mut server in [one, two] {
        let pid = server.child.id().to_string();
        assert!(
            Command::new("kill")
                .args(["-TERM", &pid])
                .status()
                .unwrap()
                .success()
        );
        let status = server.child.wait().unwrap();
        assert!(status.success(), "{} exited with {status}", server.url);
    }
}

/// `cairn --connect URL` sends each command to a running shard server as a client: puts,
/// merges, gets, scans, range deletes, flushes, checkpoints and stats all reach the served
/// database, and the server stays its writer (its epoch does not move).
#[test]
fn the_cli_reaches_a_served_database_as_a_client_without_taking_it_over() {
    let dir = tempfile::tempdir().unwrap();
    let config = support::node_config(dir.path(), "node");
    let env = [("CAIRN_ENGINE__MERGE_OPERATOR", "add")];
    let server = serve_args(
        &config,
        &["serve", "shard", "--listen", "127.0.0.1:0"],
        &env,
    );
    let cli = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_cairn"))
            .arg("--config")
            .arg(&config)
            .args(["--connect", &server.url])
            .args(args)
            .env_remove("CAIRN_PROFILE")
            .output()
            .expect("run cairn");
        assert!(
            out.status.success(),
            "cairn --connect {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let epoch = |stats: &str| {
        let v: serde_json::Value = serde_json::from_str(stats).unwrap();
        v["epoch"].as_u64().unwrap()
    };
    let first = epoch(&cli(&["stats", "--json"]));
    cli(&["put", "apple", "red"]);
    cli(&["put", "banana", "yellow"]);
    cli(&["merge", "--op", "add", "hits", "4"]);
    cli(&["merge", "--op", "add", "hits", "3"]);
    assert_eq!(cli(&["get", "apple"]), "red\n");
    assert_eq!(cli(&["get", "hits", "--number", "i64"]), "7\n");
    cli(&["flush"]);
    cli(&["checkpoint", "create", "c1"]);
    cli(&["delete", "--from", "b", "--to", "c"]);
    assert_eq!(cli(&["scan"]), format!("apple\tred\nhits\t{}\n", raw(7)));
    assert!(cli(&["checkpoint", "list"]).contains("c1"));
    assert_eq!(
        epoch(&cli(&["stats", "--json"])),
        first,
        "the server is still the writer"
    );
    drop(server);
}

/// An 8-byte little-endian number as the scan prints its raw bytes.
fn raw(n: i64) -> String {
    String::from_utf8_lossy(&n.to_le_bytes()).into_owned()
}

/// One compaction server runs the jobs of two databases that share a journal server and a
/// storage server: each job names its database, and the server compacts that database's
/// tables on the storage server. With no local fallback, every compaction ran there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_compaction_server_serves_the_databases_of_a_shared_storage_server() {
    let dir = tempfile::tempdir().unwrap();
    let node = support::node_config(dir.path(), "node");
    let journal = serve(&node, "journal", "127.0.0.1:0", &[]);
    let storage = serve(&node, "storage", "127.0.0.1:0", &[]);
    let compaction = serve(
        &node,
        "compaction",
        "127.0.0.1:0",
        &[
            ("CAIRN_COMPACTION__STORAGE__KIND", "grpc"),
            ("CAIRN_COMPACTION__STORAGE__URL", &storage.url),
        ],
    );
    let engine = |db: &str| {
        Config::from_toml_str(
            &format!(
                "[default]\ndata_dir = \"{}\"\n\
                 [default.engine]\nmemtable_bytes = 8192\nbackground_threads = 1\n\
                 [default.journal]\nkind = \"grpc\"\nurl = \"{}\"\ndatabase = \"{db}\"\n\
                 [default.storage]\nkind = \"grpc\"\nurl = \"{}\"\ndatabase = \"{db}\"\n\
                 [default.compaction]\nkind = \"grpc\"\nurl = \"{}\"\ndatabase = \"{db}\"\n\
                 fallback = \"none\"\nl0_trigger = 2\ntarget_table_bytes = 8192\n",
                dir.path().join(format!("engine-{db}")).display(),
                journal.url,
                storage.url,
                compaction.url
            ),
            None,
        )
        .unwrap()
    };
    for db in ["a", "b"] {
        let config = engine(db);
        let d = cairn::open(&config).await.unwrap();
        for i in 0..400 {
            d.put(
                format!("{db}{i:04}"),
                format!("{db}-{i}-{}", "x".repeat(40)),
            )
            .await
            .unwrap();
        }
        d.compact().await.unwrap();
        assert!(d.stats().compactions > 0, "{db} compacted");
        d.close().await.unwrap();
        let d = cairn::open(&config).await.unwrap();
        let all = support::scan_all(&d).await;
        assert_eq!(all.len(), 400, "{db} reads its own keys only");
        assert!(all.iter().all(|(k, _)| k.starts_with(db.as_bytes())));
        d.close().await.unwrap();
    }
}

/// A pool of four real compaction servers (one slot each), every compaction cut in three: a
/// worker holding a part is SIGKILLed, then another SIGSTOPped, then another SIGTERMed. Each
/// time the compaction completes (the part moves to a live worker once the dead one's stream
/// breaks or its progress deadline passes, or the terminated one finishes it in its grace),
/// the database reads every key, and once the grace period has passed the storage holds only
/// the database's tables: what the given-up attempts wrote is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_loses_nothing_to_a_killed_a_stopped_or_a_terminated_worker() {
    let dir = tempfile::tempdir().unwrap();
    let node = support::node_config(dir.path(), "node");
    let storage = serve(&node, "storage", "127.0.0.1:0", &[]);
    let worker = || {
        serve(
            &node,
            "compaction",
            "127.0.0.1:0",
            &[
                ("CAIRN_COMPACTION__STORAGE__KIND", "grpc"),
                ("CAIRN_COMPACTION__STORAGE__URL", &storage.url),
                ("CAIRN_COMPACTION__SLOTS", "1"),
            ],
        )
    };
    let workers = [worker(), worker(), worker(), worker()];
    let urls: Vec<String> = workers.iter().map(|w| format!("\"{}\"", w.url)).collect();
    let config = Config::from_toml_str(
        &format!(
            "[default]\ndata_dir = \"{}\"\n\
             [default.engine]\ntable_grace_ms = 300\n\
             [default.storage]\nkind = \"grpc\"\nurl = \"{}\"\ndatabase = \"a\"\n\
             [default.compaction]\nkind = \"grpc\"\nurls = [{}]\ndatabase = \"a\"\n\
             fallback = \"none\"\ntimeout_ms = 1000\nsubcompactions = 3\n\
             target_table_bytes = 262144\n",
            dir.path().join("engine").display(),
            storage.url,
            urls.join(", ")
        ),
        None,
    )
    .unwrap();
    let db = Arc::new(cairn::open(&config).await.unwrap());
    let value = Bytes::from(vec![b'v'; 200]);
    let keys = 60_000u32;
    let entries = (0..keys).map(|i| (Bytes::from(format!("k{i:06}")), value.clone()));
    db.import(entries.collect()).await.unwrap();
    db.compact().await.unwrap();
    let tables = cairn_filestore::GrpcStorage::new(
        {
            let mut o = cairn_rpc::ClientOptions::new(storage.url.clone());
            o.database = Some("a".into());
            o
        },
        0,
    )
    .unwrap();
    use cairn_filestore::Storage as _;

    type Signal = fn(&mut support::Served);
    let signals: [(&str, Signal); 3] = [
        ("SIGKILL", |w| w.kill()),
        ("SIGSTOP", |w| w.pause()),
        ("SIGTERM", |w| w.terminate()),
    ];
    let mut workers = workers;
    let mut hit = Vec::new();
    for (name, send) in signals {
        let before = tables.list_tables().await.unwrap().len();
        let compacting = tokio::spawn({
            let db = db.clone();
            async move { db.compact().await }
        });
        // A worker that holds a part now, and that no earlier round signalled.
        let victim = loop {
            let placed = db.stats().compacting.map(|c| c.parts).unwrap_or_default();
            let on = placed.into_iter().flatten().find(|u| !hit.contains(u));
            if let Some(url) = on {
                break url;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        };
        // Once the parts have sealed a few outputs each, so that the victim leaves some.
        while tables.list_tables().await.unwrap().len() < before + 6 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let w = workers.iter_mut().find(|w| w.url == victim).unwrap();
        send(w);
        hit.push(victim.clone());
        compacting
            .await
            .unwrap()
            .unwrap_or_else(|e| panic!("the compaction after {name} to {victim}: {e}"));
        let all = support::scan_all(&db).await;
        assert_eq!(all.len(), keys as usize, "after {name}");
        tokio::time::sleep(Duration::from_millis(900)).await;
        let stored = tables.list_tables().await.unwrap().len();
        let live = db.stats().table_count();
        assert_eq!(
            stored, live,
            "after {name}: the storage holds the database's tables only"
        );
    }
    let db = Arc::try_unwrap(db).ok().unwrap();
    db.close().await.unwrap();
    // Dropping the workers kills them, the stopped one too: SIGKILL ends a stopped process.
}

/// Three real compaction workers serve every shard of a sharded router at once (each shard
/// names its own database on them and cuts its jobs into three parts). One worker is killed
/// (SIGKILL) while it holds a part, then another is stopped (SIGSTOP): each time every
/// shard's compaction completes on the workers left, every key reads back, and once the
/// grace period has passed each shard's directory holds that shard's tables only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_workers_serve_every_shard_and_lose_nothing_to_a_kill_or_a_stop() {
    use futures::TryStreamExt;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // The sharded layout; its workers run with the same profile, on the same disk: a job
    // names its shard's database, which the profile places where the shard keeps it.
    let layout = format!(
        "[default]\ndata_dir = \"{}\"\n\
         [default.router]\nshards = [{{ kind = \"local\" }}, {{ kind = \"local\" }}, {{ kind = \"local\" }}]\n\
         [default.engine]\ntable_grace_ms = 300\n",
        data.display()
    );
    let node = dir.path().join("sharded.toml");
    std::fs::write(&node, &layout).unwrap();
    let worker = || {
        serve(
            &node,
            "compaction",
            "127.0.0.1:0",
            &[("CAIRN_COMPACTION__SLOTS", "1")],
        )
    };
    let mut workers = [worker(), worker(), worker()];
    let urls: Vec<String> = workers.iter().map(|w| format!("\"{}\"", w.url)).collect();
    let config = Config::from_toml_str(
        &format!(
            "{layout}[default.compaction]\nkind = \"grpc\"\nurls = [{}]\n\
             fallback = \"none\"\ntimeout_ms = 1000\nsubcompactions = 3\n\
             target_table_bytes = 131072\n",
            urls.join(", ")
        ),
        None,
    )
    .unwrap();
    let router = Arc::new(cairn::open_router(&config).await.unwrap());
    let value = Bytes::from(vec![b'v'; 200]);
    let keys = 90_000u32;
    let entries = (0..keys).map(|i| Ok((Bytes::from(format!("k{i:06}")), value.clone())));
    router.import(futures::stream::iter(entries)).await.unwrap();
    router.compact().await.unwrap();
    let shard_dirs: Vec<_> = (0..3)
        .map(|i| data.join(format!("shard-{i}/tables")))
        .collect();
    let files = |d: &Path| {
        std::fs::read_dir(d)
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .path()
                    .extension()
                    .is_some_and(|x| x == "sst")
            })
            .count()
    };
    let stored = || shard_dirs.iter().map(|d| files(d)).sum::<usize>();

    type Signal = fn(&mut support::Served);
    let signals: [(&str, Signal); 2] = [("SIGKILL", |w| w.kill()), ("SIGSTOP", |w| w.pause())];
    let mut hit = Vec::new();
    for (name, send) in signals {
        let before = stored();
        let compacting = tokio::spawn({
            let router = router.clone();
            async move { router.compact().await }
        });
        // A worker that holds a part of some shard's job now, and that no earlier round hit.
        let victim = loop {
            let placed: Vec<String> = router
                .stats()
                .await
                .into_iter()
                .filter_map(|s| s.stats.ok()?.compacting)
                .flat_map(|c| c.parts.into_iter().flatten())
                .collect();
            if let Some(url) = placed.into_iter().find(|u| !hit.contains(u)) {
                break url;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        };
        // Once some parts have sealed outputs, so that the victim leaves some behind.
        while stored() < before + 6 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let w = workers.iter_mut().find(|w| w.url == victim).unwrap();
        send(w);
        hit.push(victim.clone());
        compacting
            .await
            .unwrap()
            .unwrap_or_else(|e| panic!("the compactions after {name} to {victim}: {e}"));
        let read: Vec<(Bytes, Bytes)> = router
            .scan(KeyRange::all(), None)
            .await
            .unwrap()
            .try_collect()
            .await
            .unwrap();
        assert_eq!(read.len(), keys as usize, "after {name}");
        tokio::time::sleep(Duration::from_millis(900)).await;
        for (i, s) in router.stats().await.into_iter().enumerate() {
            let live = s.stats.unwrap().table_count();
            assert_eq!(
                files(&shard_dirs[i]),
                live,
                "after {name}: shard {i}'s directory holds its tables only"
            );
        }
    }
    let router = Arc::try_unwrap(router).ok().unwrap();
    router.close().await.unwrap();
    // Dropping the workers kills them, the stopped one too: SIGKILL ends a stopped process.
}
