use super::*;
use crate::shard::CheckpointOp;
use crate::{Cluster, LocalShard, Router, Shard, conformance};
use cairn_common::{Error, KeyRange, ValueType, WriteBatch};
use cairn_compaction::LocalCompactor;
use cairn_engine::{Components, Db, EngineOptions};
use cairn_filestore::{SstOptions, SstStorage, Storage};
use cairn_journal::{FileJournal, FileJournalOptions};
use cairn_memtable::MemtableOptions;
use cairn_rpc::{ClientOptions, ServerHandle, ServerOptions, builder, serve};
use futures::{StreamExt, TryStreamExt};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

async fn open_db(dir: &Path) -> Db {
    let storage: Arc<dyn Storage> =
        Arc::new(SstStorage::open(SstOptions::new(dir.join("tables"))).unwrap());
    open_db_on(dir, storage).await
}

async fn open_db_on(dir: &Path, storage: Arc<dyn Storage>) -> Db {
    let mut j = FileJournalOptions::new(dir.join("journal"));
    j.sync = false;
    let comps = Components {
        journal: Arc::new(FileJournal::open(j).unwrap()),
        memtables: MemtableOptions::default().factory(),
        compactor: Arc::new(LocalCompactor::new(storage.clone())),
        storage,
    };
    let opts = EngineOptions {
        memtable_bytes: 256 << 10,
        ..EngineOptions::default()
    };
    Db::open(dir, opts, comps).await.unwrap()
}

async fn start_on(
    dir: &Path,
    listener: tokio::net::TcpListener,
    opts: ServerOptions,
) -> (ServerHandle, Arc<LocalShard>) {
    serve_db(open_db(dir).await, listener, opts).await
}

async fn serve_db(
    db: Db,
    listener: tokio::net::TcpListener,
    opts: ServerOptions,
) -> (ServerHandle, Arc<LocalShard>) {
    // Small import tables, so imports build several.
    let shard = LocalShard::served(db).unwrap();
    let shard = Arc::new(shard.with_import_table_bytes(64 << 10));
    let (drain, _) = tokio::sync::watch::channel(false);
    let router = builder(&opts)
        .unwrap()
        .add_service(shard_service(shard.clone(), &opts));
    (
        serve(router, &[], listener, false, drain, std::future::pending()).unwrap(),
        shard,
    )
}

async fn start(dir: &Path) -> (ServerHandle, Arc<LocalShard>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    start_on(dir, listener, ServerOptions::default()).await
}

fn client_opts(url: String) -> ClientOptions {
    let mut o = ClientOptions::new(url);
    o.timeout = Duration::from_secs(5);
    o.connect_timeout = Duration::from_millis(500);
    o.retries = 1;
    o
}

fn identity(index: u32) -> ShardIdentity {
    ShardIdentity {
        cluster: 0xc0ffee,
        index,
        count: 3,
        generation: 0,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_on_a_local_shard() {
    let dir = tempfile::tempdir().unwrap();
    let shard = LocalShard::new(open_db(dir.path()).await, identity(0)).unwrap();
    // Small tables, so the import above builds several.
    let shard = Arc::new(shard.with_import_table_bytes(64 << 10));
    conformance::run(shard.clone()).await;
    shard.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_over_grpc() {
    let dir = tempfile::tempdir().unwrap();
    let (server, served) = start(dir.path()).await;
    let remote = Arc::new(GrpcShard::new(client_opts(server.url()), identity(1)).unwrap());
    conformance::run(remote).await;
    assert_eq!(
        served.identity(),
        Some(identity(1)),
        "the first call claimed it"
    );
    server.stop().await.unwrap();
    served.close().await.unwrap();
}

/// A clone asked of a shard server is made where the server's storage reaches, and holds
/// the checkpoint it came from.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_served_shard_clones_a_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let (server, served) = start(&dir.path().join("served")).await;
    let remote = GrpcShard::new(client_opts(server.url()), identity(1)).unwrap();
    let mut batch = WriteBatch::new();
    batch.put("k", "at the checkpoint");
    remote.write(batch).await.unwrap();
    remote
        .checkpoint(CheckpointOp::Create("c".into()))
        .await
        .unwrap();
    let into = dir.path().join("clone").join("tables");
    let after = remote
        .checkpoint(CheckpointOp::Clone {
            name: "c".into(),
            into: into.display().to_string(),
        })
        .await
        .unwrap();
    assert_eq!(after.len(), 1, "{after:?}");
    let mut batch = WriteBatch::new();
    batch.put("k", "later");
    remote.write(batch).await.unwrap();

    let clone = open_db(&dir.path().join("clone")).await;
    assert_eq!(
        clone.get(b"k").await.unwrap().as_deref(),
        Some(&b"at the checkpoint"[..])
    );
    let e = remote
        .checkpoint(CheckpointOp::Delete("c".into()))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("is held"), "{e}");
    clone.close().await.unwrap();
    server.stop().await.unwrap();
    served.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_is_another_shard_refuses_every_call() {
    let dir = tempfile::tempdir().unwrap();
    let (server, served) = start(dir.path()).await;
    let right = GrpcShard::new(client_opts(server.url()), identity(1)).unwrap();
    right.check().await.unwrap();
    let wrong = GrpcShard::new(client_opts(server.url()), identity(2)).unwrap();
    let e = wrong.get(b"k").await.unwrap_err();
    assert!(matches!(e, Error::InvalidArgument(_)), "{e}");
    let e = e.to_string();
    assert!(
        e.contains("shard 2 at http://127.0.0.1") && e.contains("order changed"),
        "{e}"
    );
    let e = wrong.check().await.unwrap_err().to_string();
    assert!(e.contains("refused"), "{e}");
    // The identity survives a restart of the server.
    server.stop().await.unwrap();
    served.close().await.unwrap();
    drop(served);
    let (server, served) = start(dir.path()).await;
    let wrong = GrpcShard::new(client_opts(server.url()), identity(0)).unwrap();
    assert!(wrong.check().await.is_err());
    server.stop().await.unwrap();
    served.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_shard_is_an_error_naming_it_until_it_comes_back() {
    let dir = tempfile::tempdir().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (server, served) = start_on(dir.path(), listener, ServerOptions::default()).await;
    let remote = GrpcShard::new(client_opts(server.url()), identity(1)).unwrap();
    let mut b = cairn_common::WriteBatch::new();
    b.put("k", "v");
    remote.write(b).await.unwrap();
    server.stop().await.unwrap();
    served.close().await.unwrap();
    drop(served);

    let url = format!("http://{addr}");
    for e in [
        remote.get(b"k").await.unwrap_err(),
        remote
            .write(cairn_common::WriteBatch::new().put("k", "w").clone())
            .await
            .unwrap_err(),
        remote
            .aggregate(KeyRange::all(), ValueType::I64)
            .await
            .unwrap_err(),
    ] {
        let e = e.to_string();
        assert!(
            e.contains(&format!("shard 1 at {url}")) && e.contains("unavailable"),
            "{e}"
        );
    }
    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    let (server, served) = start_on(dir.path(), listener, ServerOptions::default()).await;
    assert_eq!(
        remote.get(b"k").await.unwrap(),
        Some(bytes::Bytes::from("v"))
    );
    server.stop().await.unwrap();
    served.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_without_the_token_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let opts = ServerOptions {
        token: Some("s3cret".into()),
        ..ServerOptions::default()
    };
    let (server, served) = start_on(dir.path(), listener, opts).await;
    let anon = GrpcShard::new(client_opts(server.url()), identity(1)).unwrap();
    let e = anon.get(b"k").await.unwrap_err().to_string();
    assert!(e.contains("refused"), "{e}");
    let mut o = client_opts(server.url());
    o.token = Some("s3cret".into());
    let ok = GrpcShard::new(o, identity(1)).unwrap();
    assert_eq!(ok.get(b"k").await.unwrap(), None);
    server.stop().await.unwrap();
    served.close().await.unwrap();
}

/// A router over one local and two remote shards: keys land where the partitioning says, and
/// a router whose shard list changed order is refused at open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_router_spreads_keys_and_refuses_a_reordered_shard_list() {
    let root = tempfile::tempdir().unwrap();
    let (s1, d1) = start(&root.path().join("s1")).await;
    let (s2, d2) = start(&root.path().join("s2")).await;
    let cluster = Cluster::open_or_create(root.path(), 3).unwrap();
    let local_dir = root.path().join("s0");
    let shards = |order: [u32; 2], db: Db| -> Vec<Arc<dyn Shard>> {
        let urls = [s1.url(), s2.url()];
        vec![
            Arc::new(LocalShard::new(db, cluster.identity(0)).unwrap()),
            Arc::new(
                GrpcShard::new(
                    client_opts(urls[order[0] as usize].clone()),
                    cluster.identity(1),
                )
                .unwrap(),
            ),
            Arc::new(
                GrpcShard::new(
                    client_opts(urls[order[1] as usize].clone()),
                    cluster.identity(2),
                )
                .unwrap(),
            ),
        ]
    };
    let router = Router::open(cluster.clone(), shards([0, 1], open_db(&local_dir).await))
        .await
        .unwrap();
    let entries = (0..3000).map(|i| {
        Ok((
            bytes::Bytes::from(format!("k{i:05}")),
            bytes::Bytes::from(vec![1u8; 8]),
        ))
    });
    assert_eq!(
        router.import(futures::stream::iter(entries)).await.unwrap(),
        3000
    );
    let counts: Vec<u64> = futures::future::join_all(router.shards().iter().map(|s| async {
        s.aggregate(KeyRange::all(), ValueType::I64)
            .await
            .unwrap()
            .rows
    }))
    .await;
    assert_eq!(counts.iter().sum::<u64>(), 3000);
    assert!(counts.iter().all(|c| (800..1200).contains(c)), "{counts:?}");
    let all: Vec<_> = router
        .scan(KeyRange::all(), None)
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(all.len(), 3000);
    assert!(all.windows(2).all(|w| w[0].0 < w[1].0));
    router.close().await.unwrap();
    drop(router);

    let e = Router::open(cluster.clone(), shards([1, 0], open_db(&local_dir).await))
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("order changed"), "{e}");
    for (s, d) in [(s1, d1), (s2, d2)] {
        s.stop().await.unwrap();
        d.close().await.unwrap();
    }
}

/// A shard server on storage that takes `delay` to create and to seal each table.
async fn start_slow(dir: &Path, delay: Duration) -> (ServerHandle, Arc<LocalShard>) {
    let sst: Arc<dyn Storage> =
        Arc::new(SstStorage::open(SstOptions::new(dir.join("tables"))).unwrap());
    let slow = cairn_filestore::FaultyStorage::new(sst);
    slow.set_delay(delay);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    serve_db(
        open_db_on(dir, slow).await,
        listener,
        ServerOptions::default(),
    )
    .await
}

fn pairs(prefix: &str, n: usize) -> Vec<(bytes::Bytes, bytes::Bytes)> {
    (0..n)
        .map(|i| {
            (
                bytes::Bytes::from(format!("{prefix}{i:05}")),
                bytes::Bytes::from(vec![b'v'; 100]),
            )
        })
        .collect()
}

/// The call deadline bounds each wait for progress, not a long call: an import, flush and
/// compaction of a shard whose storage takes 150 ms per table, under a 100 ms deadline, each
/// running for several deadlines, all complete.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_calls_outlive_the_call_deadline_while_they_make_progress() {
    let dir = tempfile::tempdir().unwrap();
    let (server, served) = start_slow(dir.path(), Duration::from_millis(75)).await;
    let mut opts = client_opts(server.url());
    opts.timeout = Duration::from_millis(100);
    let remote = GrpcShard::new(opts, identity(1)).unwrap();
    // Five batches of ~100 KiB, a table each, the input pausing 60 ms between them.
    let batches: crate::shard::ImportStream = Box::pin(
        futures::stream::iter((0..5).map(|b| Ok(pairs(&format!("i{b}:"), 1000)))).then(
            |b| async move {
                tokio::time::sleep(Duration::from_millis(60)).await;
                b
            },
        ),
    );
    let started = std::time::Instant::now();
    assert_eq!(remote.import(batches).await.unwrap(), 5000);
    assert!(started.elapsed() > Duration::from_millis(300));
    let mut b = cairn_common::WriteBatch::new();
    for (k, v) in pairs("w:", 2000) {
        b.put(k, v);
    }
    remote.write(b).await.unwrap();
    remote.flush().await.unwrap();
    remote.compact().await.unwrap();
    let count = remote
        .aggregate(KeyRange::all(), ValueType::I64)
        .await
        .unwrap()
        .rows;
    assert_eq!(count, 7000);
    server.stop().await.unwrap();
    served.close().await.unwrap();
}

/// An import whose caller goes away part-way leaves the shard with none of it, though the
/// server had built tables of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_import_cut_off_leaves_the_shard_with_none_of_it() {
    let dir = tempfile::tempdir().unwrap();
    let (server, served) = start(dir.path()).await;
    let remote = GrpcShard::new(client_opts(server.url()), identity(1)).unwrap();
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    let batches: crate::shard::ImportStream =
        Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx));
    let import = tokio::spawn(async move { remote.import(batches).await });
    for b in 0..4 {
        tx.send(Ok(pairs(&format!("i{b}:"), 1000))).await.unwrap();
    }
    // Until the server has built tables of it.
    let tables_before = served.db().stats().table_count();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while cairn_testkit::count_files(&dir.path().join("tables"), "sst") < 3 {
        assert!(std::time::Instant::now() < deadline, "no tables built");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    import.abort();
    let _ = import.await;
    drop(tx);
    // The server notices the call is gone, drops the import and deletes its tables.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while cairn_testkit::count_files(&dir.path().join("tables"), "sst") > tables_before {
        assert!(std::time::Instant::now() < deadline, "tables left behind");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let db = served.db();
    assert_eq!(db.stats().imports, 0);
    let left = db
        .aggregate(KeyRange::all(), ValueType::I64)
        .await
        .unwrap()
        .rows;
    assert_eq!(left, 0);
    server.stop().await.unwrap();
    served.close().await.unwrap();
}

/// The router's metering decorator passes the conformance suite, and records per shard and
/// operation: calls, time, and failures (a dead remote shard).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_through_the_metering_decorator_and_what_it_records() {
    use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
    static SNAPSHOTTER: std::sync::OnceLock<Snapshotter> = std::sync::OnceLock::new();
    let snapshotter = SNAPSHOTTER.get_or_init(|| {
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        metrics::set_global_recorder(recorder).unwrap();
        snapshotter
    });
    let dir = tempfile::tempdir().unwrap();
    // Indexes no other test uses: the recorder is the process's.
    let local = LocalShard::new(open_db(dir.path()).await, identity(0)).unwrap();
    let shard = Arc::new(crate::MeteredShard::new(70, Arc::new(local)));
    conformance::run(shard.clone()).await;
    shard.close().await.unwrap();
    let dead = crate::MeteredShard::new(
        71,
        Arc::new(GrpcShard::new(client_opts("http://127.0.0.1:1".into()), identity(1)).unwrap()),
    );
    assert!(dead.get(b"k").await.is_err());

    // One snapshot: taking one drains what it read.
    let snapshot = snapshotter.snapshot().into_vec();
    let counter = |shard: &str, op: &str, name: &str| -> u64 {
        snapshot
            .iter()
            .filter(|(k, ..)| {
                let k = k.key();
                k.name() == name
                    && k.labels().any(|l| l.key() == "shard" && l.value() == shard)
                    && k.labels().any(|l| l.key() == "op" && l.value() == op)
            })
            .map(|(.., v)| match v {
                DebugValue::Counter(n) => *n,
                other => panic!("{name}: {other:?}"),
            })
            .sum()
    };
    for op in [
        "get",
        "multi_get",
        "write",
        "scan",
        "aggregate",
        "import",
        "admin",
    ] {
        assert!(
            counter("70", op, "cairn_router_shard_calls_total") > 0,
            "{op} counted"
        );
    }
    assert_eq!(counter("70", "get", "cairn_router_shard_errors_total"), 0);
    assert_eq!(counter("71", "get", "cairn_router_shard_calls_total"), 1);
    assert_eq!(counter("71", "get", "cairn_router_shard_errors_total"), 1);
}

/// The read-spreading decorator keeps the `Shard` contract when its replicas answer as the
/// shard does (here the replica is the shard itself; a real one may be a poll behind).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_through_the_replicated_decorator() {
    let dir = tempfile::tempdir().unwrap();
    let local = LocalShard::new(open_db(dir.path()).await, identity(0)).unwrap();
    let local: Arc<dyn Shard> = Arc::new(local.with_import_table_bytes(64 << 10));
    let shard = Arc::new(crate::ReplicatedShard::new(
        local.clone(),
        vec![local.clone(), local.clone()],
    ));
    conformance::run(shard.clone()).await;
    shard.close().await.unwrap();
}

/// A client that knows only the URL: an unclaimed database takes its untagged calls; once a
/// router has claimed it, the server says which shard it is and untagged calls are refused,
/// so a client that identifies itself first reaches it as that shard.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_with_only_the_url_identifies_the_shard_first() {
    let dir = tempfile::tempdir().unwrap();
    let (server, served) = start(dir.path()).await;
    let plain = GrpcShard::identified(client_opts(server.url()))
        .await
        .unwrap();
    let mut b = cairn_common::WriteBatch::new();
    b.put("k", "v");
    plain.write(b).await.unwrap();
    assert_eq!(
        plain.get(b"k").await.unwrap(),
        Some(bytes::Bytes::from("v"))
    );
    assert!(
        served.identity().is_none(),
        "an untagged call claims nothing"
    );

    GrpcShard::new(client_opts(server.url()), identity(2))
        .unwrap()
        .check()
        .await
        .unwrap();
    let e = plain.get(b"k").await.unwrap_err().to_string();
    assert!(e.contains("shard 2 of 3"), "{e}");
    let again = GrpcShard::identified(client_opts(server.url()))
        .await
        .unwrap();
    assert_eq!(
        again.get(b"k").await.unwrap(),
        Some(bytes::Bytes::from("v"))
    );
    server.stop().await.unwrap();
    served.close().await.unwrap();
}
