//! Disposable compute nodes: the database lives where its tables are, so a node with an
//! empty data directory and the same profile finds it, a second writer fences the first,
//! and servers hold many databases apart. The manifest-store conformance suite runs here on
//! the stores that need a server: the tests' S3 endpoint and a storage server over gRPC.

use crate::support;

use bytes::Bytes;
use cairn::{Config, GrpcShard, KeyRange, Shard, ShardIdentity};
use cairn_filestore::{
    GrpcStorage, ParquetOptions, ParquetStorage, SstOptions, SstStorage, Storage,
    storage_service_for,
};
use cairn_journal::{FileJournal, FileJournalOptions, Journal, journal_service_for};
use cairn_rpc::{ClientOptions, Databases, ServerOptions, builder, serve};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

fn config(toml: &str) -> Config {
    Config::from_toml_str(toml, None).unwrap()
}

async fn scan_all(db: &cairn::Db) -> BTreeMap<Bytes, Bytes> {
    let mut it = db.scan(KeyRange::all()).await.unwrap();
    let mut out = BTreeMap::new();
    while let Some((k, v)) = it.next().await.unwrap() {
        out.insert(k, v);
    }
    out
}

/// The first report: two compute nodes, one bucket. The second finds the first's
/// database instead of deleting it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_node_on_a_bucket_finds_the_database_and_deletes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let node = |name: &str| {
        config(&format!(
            "[default]\ndata_dir = \"{}\"\n[default.storage]\nkind = \"parquet\"\nurl = \"file://{}\"\n",
            dir.path().join(name).display(),
            dir.path().join("bucket").display()
        ))
    };
    let a = cairn::open(&node("a")).await.unwrap();
    a.put("k1", "v1").await.unwrap();
    a.flush().await.unwrap();
    let id = a.stats().database;
    a.close().await.unwrap();

    let b = cairn::open(&node("b")).await.unwrap();
    assert_eq!(b.get(b"k1").await.unwrap().as_deref(), Some(&b"v1"[..]));
    assert_eq!(b.stats().database, id, "the same database");
    assert_eq!(b.stats().epoch, 2, "the second writer's epoch");
    b.put("k2", "v2").await.unwrap();
    b.close().await.unwrap();

    // The first node, back with its old data directory, is just the next writer.
    let a = cairn::open(&node("a")).await.unwrap();
    assert_eq!(a.get(b"k1").await.unwrap().as_deref(), Some(&b"v1"[..]));
    assert_eq!(a.get(b"k2").await.unwrap().as_deref(), Some(&b"v2"[..]));
    a.close().await.unwrap();
}

/// Tables with no manifest are somebody else's: refused, and left where they are.
#[tokio::test]
async fn tables_without_a_manifest_are_refused_and_kept() {
    let dir = tempfile::tempdir().unwrap();
    let tables = dir.path().join("foreign");
    let storage = SstStorage::open(SstOptions::new(&tables)).unwrap();
    let entry = cairn::Entry {
        key: "x".into(),
        seq: 1,
        kind: cairn::EntryKind::Put,
        value: "y".into(),
    };
    cairn_filestore::write_table(&storage, 5, &[entry])
        .await
        .unwrap();
    let c = config(&format!(
        "[default]\ndata_dir = \"{}\"\n[default.storage]\ndir = \"{}\"\n",
        dir.path().join("node").display(),
        tables.display()
    ));
    let e = cairn::open(&c).await.err().expect("refused").to_string();
    assert!(e.contains("no manifest") && e.contains("1 tables"), "{e}");
    assert_eq!(
        storage.list_tables().await.unwrap(),
        vec![5],
        "nothing deleted"
    );
}

/// Two nodes, each with a journal of its own, on one bucket: only the writer's lease keeps
/// them apart. A second writer is refused while the first is alive (it renews its lease
/// while the second waits), and every write the first acknowledges survives; once the first
/// closes (letting go of its lease), the second takes over at once with all of it. Before
/// leases the second took over at once and the first went on acknowledging writes into its
/// own journal, which were lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_writer_is_refused_while_the_first_holds_its_lease() {
    let dir = tempfile::tempdir().unwrap();
    let s3 = cairn_testkit::S3Endpoint::start();
    let node = |name: &str| {
        config(&format!(
            "[default]\ndata_dir = \"{}\"\n[default.engine]\nlease_ms = 800\n\
             [default.storage]\nkind = \"parquet\"\nurl = \"{}\"\n\
             endpoint = \"{}\"\nregion = \"{}\"\naccess_key_id = \"{}\"\nsecret_access_key = \"{}\"\nallow_http = true\n",
            dir.path().join(name).display(),
            s3.url("db"),
            s3.endpoint,
            s3.region,
            s3.access_key_id,
            s3.secret_access_key
        ))
    };
    let old = cairn::open(&node("old")).await.unwrap();
    old.put("a", "1").await.unwrap();
    old.flush().await.unwrap();
    let e = match cairn::open(&node("new")).await {
        Ok(_) => panic!("a live writer was taken over"),
        Err(e) => e,
    };
    assert!(
        matches!(e, cairn::Error::Held(_)) && e.to_string().contains("epoch 1"),
        "{e}"
    );
    old.put("c", "3").await.unwrap(); // acknowledged, and kept
    old.close().await.unwrap();
    drop(old);

    let new = cairn::open(&node("new")).await.unwrap();
    new.put("e", "5").await.unwrap();
    new.compact().await.unwrap();
    let got = scan_all(&new).await;
    let want: BTreeMap<Bytes, Bytes> = [("a", "1"), ("c", "3"), ("e", "5")]
        .into_iter()
        .map(|(k, v)| (Bytes::from(k), Bytes::from(v)))
        .collect();
    assert_eq!(got, want, "every acknowledged write of both writers");
    new.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manifest_conformance_on_s3() {
    let s3 = cairn_testkit::S3Endpoint::start();
    let storage = ParquetStorage::open(ParquetOptions {
        url: s3.url("manifests"),
        endpoint: Some(s3.endpoint.clone()),
        region: Some(s3.region.clone()),
        access_key_id: Some(s3.access_key_id.clone()),
        secret_access_key: Some(s3.secret_access_key.clone()),
        allow_http: true,
        ..ParquetOptions::default()
    })
    .unwrap();
    // The in-process S3 server (s3s-fs) honours If-None-Match one writer after another but
    // checks and writes without a lock, so racing creates can both succeed there; an
    // external endpoint (CAIRN_TEST_S3_ENDPOINT, e.g. MinIO) runs the whole suite.
    if std::env::var("CAIRN_TEST_S3_ENDPOINT").is_ok() {
        cairn_engine::manifest::conformance::run(storage.manifests()).await;
    } else {
        cairn_engine::manifest::conformance::run_sequential(storage.manifests()).await;
    }
}

/// A journal server and a storage server holding databases, on 127.0.0.1.
struct Servers {
    journal: String,
    storage: String,
    _handles: Vec<cairn_rpc::ServerHandle>,
}

async fn servers(root: &Path) -> Servers {
    let opts = ServerOptions::default();
    let (_, draining) = tokio::sync::watch::channel(false);
    let jroot = root.join("journals");
    let journals = Arc::new(Databases::new(16, move |name: String| {
        let dir = jroot.join(name);
        async move { Ok(Arc::new(FileJournal::open(FileJournalOptions::new(dir))?) as Arc<dyn Journal>) }
    }));
    let sroot = root.join("tables");
    let storages = Arc::new(Databases::new(16, move |name: String| {
        let dir = sroot.join(name);
        async move { Ok(Arc::new(SstStorage::open(SstOptions::new(dir))?) as Arc<dyn Storage>) }
    }));
    let mut handles = Vec::new();
    let mut urls = Vec::new();
    for router in [
        builder(&opts)
            .unwrap()
            .add_service(journal_service_for(journals, &opts, draining)),
        builder(&opts)
            .unwrap()
            .add_service(storage_service_for(storages, &opts)),
    ] {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (_stop, _) = tokio::sync::watch::channel(false);
        let h = serve(router, &[], listener, false, _stop, std::future::pending()).unwrap();
        urls.push(h.url());
        handles.push(h);
    }
    Servers {
        journal: urls[0].clone(),
        storage: urls[1].clone(),
        _handles: handles,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manifest_conformance_on_a_storage_server() {
    let dir = tempfile::tempdir().unwrap();
    let s = servers(dir.path()).await;
    let mut opts = ClientOptions::new(s.storage.clone());
    opts.database = Some("conformance".into());
    let storage = GrpcStorage::new(opts, 0).unwrap();
    cairn_engine::manifest::conformance::run(storage.manifests()).await;
}

/// Two databases on one journal server and one storage server: interleaved writes,
/// flushes, compactions and reopens (on new data directories), each against its own model.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_databases_share_a_journal_server_and_a_storage_server() {
    let dir = tempfile::tempdir().unwrap();
    let s = servers(dir.path()).await;
    let node = |db: &str, round: u32| {
        config(&format!(
            "[default]\ndata_dir = \"{}\"\n\
             [default.journal]\nkind = \"grpc\"\nurl = \"{}\"\ndatabase = \"{db}\"\n\
             [default.storage]\nkind = \"grpc\"\nurl = \"{}\"\ndatabase = \"{db}\"\n\
             [default.engine]\nmemtable_bytes = 4096\n",
            dir.path().join(format!("{db}-{round}")).display(),
            s.journal,
            s.storage
        ))
    };
    let mut models = [BTreeMap::new(), BTreeMap::new()];
    let names = ["alpha", "beta"];
    for round in 0..4u32 {
        let dbs = [
            cairn::open(&node(names[0], round)).await.unwrap(),
            cairn::open(&node(names[1], round)).await.unwrap(),
        ];
        for i in 0..300u32 {
            let which = (i % 2) as usize;
            let key = Bytes::from(format!("k{:03}", (i * 7 + round) % 97));
            let value = Bytes::from(format!("{}-{round}-{i}", names[which]));
            if i % 11 == 0 {
                dbs[which].delete(key.clone()).await.unwrap();
                models[which].remove(&key);
            } else {
                dbs[which].put(key.clone(), value.clone()).await.unwrap();
                models[which].insert(key, value);
            }
            if i % 97 == 0 {
                dbs[which].flush().await.unwrap();
            }
        }
        if round % 2 == 1 {
            dbs[0].compact().await.unwrap();
        }
        for (db, model) in dbs.iter().zip(&models) {
            assert_eq!(&scan_all(db).await, model, "round {round}");
            assert_eq!(db.stats().epoch, round as u64 + 1);
        }
        // Half the rounds end in a crash-like stop: the next node replays the journal.
        for db in dbs {
            if round % 2 == 0 {
                db.close_without_flush().await.unwrap();
            } else {
                db.close().await.unwrap();
            }
        }
    }
    let ids: Vec<String> = {
        let mut v = Vec::new();
        for n in names {
            let db = cairn::open(&node(n, 99)).await.unwrap();
            v.push(db.stats().database);
            db.close().await.unwrap();
        }
        v
    };
    assert_ne!(ids[0], ids[1], "two databases, two ids");
}

/// A compute node on the `remote` layout, as real processes: a journal server, a storage
/// server, and the node itself (`cairn serve shard`, the engine serving its database).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_compute_node_is_replaced_by_one_with_an_empty_data_dir() {
    let dir = tempfile::tempdir().unwrap();
    let node_config = support::node_config(dir.path(), "servers");
    let journal = support::serve(&node_config, "journal", "127.0.0.1:0", &[]);
    let storage = support::serve(&node_config, "storage", "127.0.0.1:0", &[]);
    let layout = format!(
        "[default.journal]\nkind = \"grpc\"\nurl = \"{}\"\n\
         [default.storage]\nkind = \"grpc\"\nurl = \"{}\"\n",
        journal.url, storage.url
    );
    kill_and_replace(dir.path(), &layout).await;
    drop((journal, storage));
}

/// A compute node of the `serverless` layout: journal, manifest and tables in one bucket
/// (the tests' S3 server), only caches on the node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_serverless_node_is_replaced_by_one_with_an_empty_data_dir() {
    let dir = tempfile::tempdir().unwrap();
    let s3 = cairn_testkit::S3Endpoint::start();
    let layout = support::serverless_layout(&s3, "");
    kill_and_replace(dir.path(), &layout).await;
}

/// Runs `cairn serve shard` nodes of the profile `layout` describes (its journal and storage
/// sections). Killed with SIGKILL under 64 writers and its data directory deleted, a node is
/// replaced by one with an empty data directory that has every acknowledged write. A node
/// paused with SIGSTOP while another takes over fails its next write, flush and import naming
/// the fence when it resumes, and nothing of the new node's is lost.
async fn kill_and_replace(dir: &Path, layout: &str) {
    let compute_config = dir.join("compute.toml");
    std::fs::write(
        &compute_config,
        format!(
            "[default]\ndata_dir = \"unused\"\n\
             [default.rpc]\ntimeout_ms = 3000\nconnect_timeout_ms = 500\nretries = 2\nretry_initial_ms = 20\n\
             [default.engine]\nmemtable_bytes = 65536\n{layout}"
        ),
    )
    .unwrap();
    let node = |name: &str| {
        let data = dir.join(name);
        support::serve_args(
            &compute_config,
            &["serve", "shard", "--listen", "127.0.0.1:0"],
            &[("CAIRN_DATA_DIR", data.to_str().unwrap())],
        )
    };
    let client = |served: &support::Served| -> Arc<dyn Shard> {
        let mut o = ClientOptions::new(served.url.clone());
        o.timeout = std::time::Duration::from_secs(3);
        o.retries = 0;
        let id = ShardIdentity {
            cluster: 7,
            index: 0,
            count: 1,
            generation: 0,
        };
        Arc::new(GrpcShard::new(o, id).unwrap())
    };

    // 64 writers until the node dies under them; each keeps what was acknowledged.
    let mut first = node("node-1");
    let shard = client(&first);
    let writers: Vec<_> = (0..64u32)
        .map(|w| {
            let shard = shard.clone();
            tokio::spawn(async move {
                let mut acked = Vec::new();
                for i in 0u32.. {
                    let key = Bytes::from(format!("w{w:02}-{i:06}"));
                    let value = Bytes::from(format!("{w}:{i}:{}", "v".repeat(40)));
                    let mut batch = cairn::WriteBatch::new();
                    batch.put(key.clone(), value.clone());
                    match shard.write(batch).await {
                        Ok(_) => acked.push((key, value)),
                        Err(_) => break,
                    }
                }
                acked
            })
        })
        .collect();
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    first.kill();
    let mut acked = BTreeMap::new();
    for w in writers {
        acked.extend(w.await.unwrap());
    }
    assert!(
        acked.len() > 500,
        "the writers got going: {} acknowledged",
        acked.len()
    );
    std::fs::remove_dir_all(dir.join("node-1")).unwrap();

    let second = node("node-2");
    let shard = client(&second);
    let keys: Vec<Bytes> = acked.keys().cloned().collect();
    for chunk in keys.chunks(500) {
        let got = shard.multi_get(chunk.to_vec()).await.unwrap();
        for (k, v) in chunk.iter().zip(got) {
            assert_eq!(v.as_ref(), acked.get(k), "acknowledged write {k:?}");
        }
    }
    let stats = shard.stats().await.unwrap();
    assert_eq!(stats.epoch, 2, "the second node is the second writer");

    // Pause the second node; a third takes over; the second resumes fenced.
    second.pause();
    let third = node("node-3");
    let new = client(&third);
    new.write(batch_of("after", "third")).await.unwrap();
    second.resume();
    let e = shard
        .write(batch_of("stale", "second"))
        .await
        .expect_err("the paused node's write");
    assert!(e.to_string().contains("fenced"), "{e}");
    let e = shard.flush().await.expect_err("the paused node's flush");
    assert!(e.to_string().contains("fenced"), "{e}");
    let batches: cairn_router::ImportStream = Box::pin(futures::stream::iter(vec![Ok(vec![(
        Bytes::from("imp"),
        Bytes::from("x"),
    )])]));
    let e = shard
        .import(batches)
        .await
        .expect_err("the paused node's import");
    assert!(e.to_string().contains("fenced"), "{e}");

    new.flush().await.unwrap();
    assert_eq!(
        new.get(b"after").await.unwrap().as_deref(),
        Some(&b"third"[..])
    );
    assert_eq!(new.get(b"stale").await.unwrap(), None);
    assert_eq!(new.get(b"imp").await.unwrap(), None);
    let got = new.multi_get(keys[..200].to_vec()).await.unwrap();
    for (k, v) in keys[..200].iter().zip(got) {
        assert_eq!(
            v.as_ref(),
            acked.get(k),
            "still there after the take-over: {k:?}"
        );
    }
    drop((second, third));
}

fn batch_of(k: &str, v: &str) -> cairn::WriteBatch {
    let mut b = cairn::WriteBatch::new();
    b.put(Bytes::from(k.to_string()), Bytes::from(v.to_string()));
    b
}

/// The `cloud` layout (SSTables on the node, Parquet on S3): a node with an empty data
/// directory rebuilds its SSTables from the bucket as it opens them, so the local disk is a
/// cache.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cloud_node_rebuilds_its_local_tables_from_the_bucket() {
    let dir = tempfile::tempdir().unwrap();
    let s3 = cairn_testkit::S3Endpoint::start();
    let node = |name: &str| {
        config(&format!(
            "[default]\ndata_dir = \"{}\"\n[default.storage]\nkind = \"hybrid\"\non_secondary_failure = \"fail\"\n\
             [default.storage.primary]\nkind = \"sstable\"\n\
             [default.storage.secondary]\nkind = \"parquet\"\nurl = \"{}\"\nendpoint = \"{}\"\nregion = \"{}\"\n\
             access_key_id = \"{}\"\nsecret_access_key = \"{}\"\nallow_http = true\n",
            dir.path().join(name).display(),
            s3.url("cloud"),
            s3.endpoint,
            s3.region,
            s3.access_key_id,
            s3.secret_access_key
        ))
    };
    let a = cairn::open(&node("a")).await.unwrap();
    let mut want = BTreeMap::new();
    for i in 0..2000u32 {
        let (k, v) = (format!("k{i:05}"), format!("v{i}"));
        a.put(k.clone(), v.clone()).await.unwrap();
        want.insert(Bytes::from(k), Bytes::from(v));
        if i % 700 == 0 {
            a.flush().await.unwrap();
        }
    }
    a.compact().await.unwrap();
    a.close().await.unwrap();
    std::fs::remove_dir_all(dir.path().join("a")).unwrap();

    let b = cairn::open(&node("b")).await.unwrap();
    assert_eq!(scan_all(&b).await, want);
    let sst = cairn_testkit::count_files(&dir.path().join("b/tables"), "sst");
    assert_eq!(
        sst,
        b.stats().table_count(),
        "every live table is local again"
    );
    b.put("k00000", "new").await.unwrap();
    b.compact().await.unwrap();
    assert_eq!(
        b.get(b"k00000").await.unwrap().as_deref(),
        Some(&b"new"[..])
    );
    b.close().await.unwrap();
}

/// The `sharded` layout with its three local shards on one journal server and one storage
/// server (each shard its own database there), checked against a model, with the router
/// crashed and reopened now and then, half the time on a new, empty data directory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sharded_on_shared_servers_takes_over_on_new_nodes() {
    use futures::TryStreamExt;
    use rand::{Rng, SeedableRng};
    let dir = tempfile::tempdir().unwrap();
    let s = servers(dir.path()).await;
    let node = |n: u32| {
        config(&format!(
            "[default]\ndata_dir = \"{}\"\n\
             [default.journal]\nkind = \"grpc\"\nurl = \"{}\"\n\
             [default.storage]\nkind = \"grpc\"\nurl = \"{}\"\n\
             [default.engine]\nmemtable_bytes = 8192\n\
             [default.router]\nshards = [{{ kind = \"local\" }}, {{ kind = \"local\" }}, {{ kind = \"local\" }}]\n",
            dir.path().join(format!("node-{n}")).display(),
            s.journal,
            s.storage
        ))
    };
    let mut rng = rand::rngs::StdRng::seed_from_u64(12);
    let mut model: BTreeMap<Bytes, Bytes> = BTreeMap::new();
    let mut n = 0;
    let mut router = cairn::open_router(&node(n)).await.unwrap();
    let (mut takeovers, mut reopens) = (0, 0);
    for step in 0..1500u32 {
        match rng.random_range(0..100u32) {
            0..=59 => {
                let k = Bytes::from(format!("k{:04}", rng.random_range(0..400u32)));
                let v = Bytes::from(format!("v{step}"));
                router.put(k.clone(), v.clone()).await.unwrap();
                model.insert(k, v);
            }
            60..=69 => {
                let k = Bytes::from(format!("k{:04}", rng.random_range(0..400u32)));
                router.delete(k.clone()).await.unwrap();
                model.remove(&k);
            }
            70..=89 => {
                let k = Bytes::from(format!("k{:04}", rng.random_range(0..400u32)));
                assert_eq!(
                    router.get(&k).await.unwrap(),
                    model.get(&k).cloned(),
                    "step {step}"
                );
            }
            90..=94 => router.flush().await.unwrap(),
            95..=96 => router.compact().await.unwrap(),
            _ => {
                // A crash: nothing flushed, nothing closed. Then the same node or a new one.
                drop(router);
                if rng.random_bool(0.5) {
                    n += 1;
                    takeovers += 1;
                } else {
                    reopens += 1;
                }
                // A dropped engine lets go of its directory once its aborted background
                // work has: the same node waits for that, as a restarted process would not.
                router = loop {
                    match cairn::open_router(&node(n)).await {
                        Err(cairn::Error::Locked(_)) => {
                            tokio::time::sleep(std::time::Duration::from_millis(20)).await
                        }
                        other => break other.unwrap(),
                    }
                };
            }
        }
    }
    let all: Vec<(Bytes, Bytes)> = router
        .scan(KeyRange::all(), None)
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(all, model.into_iter().collect::<Vec<_>>(), "final scan");
    assert!(
        takeovers > 2 && reopens > 2,
        "{takeovers} take-overs, {reopens} reopens"
    );
    let stats = router.stats().await;
    let ids: std::collections::HashSet<String> = stats
        .iter()
        .map(|s| s.stats.as_ref().unwrap().database.clone())
        .collect();
    assert_eq!(ids.len(), 3, "three databases on the shared servers");
    router.close().await.unwrap();
}

/// Runs the `cairn` CLI with `config`, in data directory `data`.
fn cli(config: &Path, data: &Path, args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_cairn"))
        .arg("--config")
        .arg(config)
        .args(args)
        .env("CAIRN_DATA_DIR", data)
        .env_remove("CAIRN_PROFILE")
        .output()
        .expect("run cairn")
}

/// Node A serving a database whose tables and manifest are in a bucket (a directory) under
/// `root` and whose journal is a file on A (a 1 s lease), as `cairn serve shard`: the node
/// profile, the served process, and a client profile whose one shard is A.
fn served_node_on_a_bucket(
    root: &Path,
) -> (std::path::PathBuf, support::Served, std::path::PathBuf) {
    let profile = root.join("node.toml");
    std::fs::write(
        &profile,
        format!(
            "[default]\ndata_dir = \"unused\"\n[default.engine]\nlease_ms = 1000\n\
             [default.storage]\nkind = \"parquet\"\nurl = \"file://{}/bucket\"\n",
            root.display()
        ),
    )
    .unwrap();
    let a_dir = root.join("a");
    let a = support::serve_args(
        &profile,
        &["serve", "shard", "--listen", "127.0.0.1:0"],
        &[("CAIRN_DATA_DIR", a_dir.to_str().unwrap())],
    );
    let client = root.join("client.toml");
    std::fs::write(
        &client,
        format!(
            "[default]\ndata_dir = \"{}\"\n[default.router]\nshards = [{{ kind = \"grpc\", url = \"{}\" }}]\n",
            root.join("client").display(),
            a.url
        ),
    )
    .unwrap();
    (profile, a, client)
}

/// Issue 22's scenario with real processes. Node A serves a database whose tables and
/// manifest are in a shared bucket and whose journal is a file on A. A CLI command on node B
/// used to take the database over at once while A went on acknowledging writes into its own
/// journal, which were then lost. Now B sees A renew its lease and refuses, naming it; A's
/// write is acknowledged and survives A's shutdown, where node C finds it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_served_writer_on_a_journal_of_its_own_is_not_taken_over() {
    let dir = tempfile::tempdir().unwrap();
    let (profile, a, client) = served_node_on_a_bucket(dir.path());
    let put = |k: &str, v: &str| cli(&client, &dir.path().join("client"), &["put", k, v]);
    assert!(put("k1", "v1").status.success());

    let b = cli(&profile, &dir.path().join("b"), &["put", "kb", "vb"]);
    let said = String::from_utf8_lossy(&b.stderr);
    assert!(!b.status.success(), "B took over a live writer");
    assert!(
        said.contains("held by another writer") && said.contains("alive"),
        "{said}"
    );

    let out = put("k2", "v2");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    a.terminate();
    let mut a = a;
    let _ = a.child.wait();

    let c = cli(&profile, &dir.path().join("c"), &["get", "k2"]);
    assert_eq!(
        String::from_utf8_lossy(&c.stdout).trim(),
        "v2",
        "{}",
        String::from_utf8_lossy(&c.stderr)
    );
    let c = cli(&profile, &dir.path().join("c"), &["get", "kb"]);
    assert!(
        !c.status.success(),
        "B's write was refused, so it is nowhere"
    );
}

/// Read commands on another node (`stats`, `get`, `scan`, `aggregate`) open as readers
/// beside a served writer: they take no epoch, so they neither fence the writer nor wait out
/// its lease (they used to open as writers: on this profile, each waited the lease out and
/// was refused; on one whose journal fences by itself, each took the database over). The
/// writer's epoch stays, and it goes on acknowledging.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_commands_on_another_node_leave_a_served_writer_alone() {
    let dir = tempfile::tempdir().unwrap();
    let (profile, a, client) = served_node_on_a_bucket(dir.path());
    let on_a = |args: &[&str]| {
        let out = cli(&client, &dir.path().join("client"), args);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let epoch = || {
        let stats: serde_json::Value = serde_json::from_str(&on_a(&["stats", "--json"])).unwrap();
        stats[0]["stats"]["epoch"]
            .as_u64()
            .expect("the shard's epoch")
    };
    on_a(&["put", "k1", "v1"]);
    on_a(&["flush"]);
    let before = epoch();

    for (args, want) in [
        (&["get", "k1"][..], Some("v1\n")),
        (&["scan"][..], Some("k1\tv1\n")),
        (&["aggregate", "--op", "count"][..], Some("1\n")),
        (&["stats"][..], None),
    ] {
        let out = cli(&profile, &dir.path().join("b"), args);
        assert!(
            out.status.success(),
            "{args:?} on node B: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        if let Some(want) = want {
            assert_eq!(String::from_utf8_lossy(&out.stdout), want, "{args:?}");
        }
    }
    assert_eq!(epoch(), before, "nothing on node B took an epoch");
    on_a(&["put", "k2", "v2"]);
    assert_eq!(on_a(&["get", "k2"]), "v2\n");
    a.terminate();
}
