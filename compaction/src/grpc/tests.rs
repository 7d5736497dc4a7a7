use super::*;
use crate::{CompactionJob, Compactor, LocalCompactor, conformance};
use async_trait::async_trait;
use cairn_common::{Entry, KeyRange, Result, TableMeta};
use cairn_filestore::{
    GrpcStorage, SstOptions, SstStorage, Storage, read_range, storage_service_for, write_table,
};
use cairn_rpc::{ClientOptions, ServerHandle, ServerOptions, builder, serve};
use std::sync::Arc;
use std::time::Duration;

async fn listener() -> tokio::net::TcpListener {
    tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap()
}

async fn start_compaction(compactor: Arc<dyn Compactor>) -> ServerHandle {
    let dbs = Arc::new(cairn_rpc::Databases::single(compactor));
    start_pool_member(dbs, ServerOptions::default(), super::DEFAULT_SLOTS).await
}

/// A server of `slots` slots for the compactors of `dbs`.
async fn start_pool_member(
    dbs: Arc<cairn_rpc::Databases<dyn Compactor>>,
    opts: ServerOptions,
    slots: usize,
) -> ServerHandle {
    let (drain, _) = tokio::sync::watch::channel(false);
    let router = builder(&opts)
        .unwrap()
        .add_service(super::compaction_service_for(dbs, &opts, slots));
    serve(
        router,
        &[],
        listener().await,
        false,
        drain,
        std::future::pending(),
    )
    .unwrap()
}

fn opts(url: String) -> ClientOptions {
    let mut o = ClientOptions::new(url);
    o.timeout = Duration::from_secs(10);
    o.connect_timeout = Duration::from_millis(300);
    o.retries = 2;
    o.retry_initial = Duration::from_millis(10);
    o
}

fn sst(dir: &std::path::Path) -> Arc<dyn Storage> {
    Arc::new(SstStorage::open(SstOptions::new(dir)).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_over_grpc_sharing_a_directory() {
    let dir = tempfile::tempdir().unwrap();
    let storage = sst(dir.path());
    // The server has its own storage object over the same tables, as a compaction node on
    // the same machine (or over the same bucket) would.
    let server = start_compaction(Arc::new(LocalCompactor::new(sst(dir.path())))).await;
    let remote = Arc::new(GrpcCompactor::new(opts(server.url()), None).unwrap());
    conformance::run(remote.clone(), storage).await;
    assert!(remote.stats().remote_jobs > 0);
    assert_eq!(remote.stats().fallbacks, 0);
    server.stop().await.unwrap();
}

/// A pool of three servers over the same tables passes the same suite: each job goes to one
/// of them, whichever is least busy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_over_a_pool_of_servers() {
    let dir = tempfile::tempdir().unwrap();
    let storage = sst(dir.path());
    let mut servers = Vec::new();
    for _ in 0..3 {
        servers.push(start_compaction(Arc::new(LocalCompactor::new(sst(dir.path())))).await);
    }
    let pool = Arc::new(
        GrpcCompactor::pool(servers.iter().map(|s| opts(s.url())).collect(), None).unwrap(),
    );
    conformance::run(pool.clone(), storage).await;
    assert!(pool.stats().remote_jobs > 0);
    assert_eq!(pool.stats().fallbacks, 0);
    for s in servers {
        s.stop().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_over_grpc_with_the_tables_on_a_storage_node() {
    let dir = tempfile::tempdir().unwrap();
    let sopts = ServerOptions::default();
    let (drain, _) = tokio::sync::watch::channel(false);
    // Many databases: a clone's job reads its parent's tables from another one.
    let root = dir.path().to_path_buf();
    let dbs = cairn_rpc::Databases::new(8, move |name| {
        let store = sst(&root.join(name));
        async move { Ok(store) }
    });
    let router = builder(&sopts)
        .unwrap()
        .add_service(storage_service_for(Arc::new(dbs), &sopts));
    let storage_node = serve(
        router,
        &[],
        listener().await,
        false,
        drain,
        std::future::pending(),
    )
    .unwrap();
    let tables = || -> Arc<dyn Storage> {
        Arc::new(GrpcStorage::new(ClientOptions::new(storage_node.url()), 1 << 20).unwrap())
    };
    let server = start_compaction(Arc::new(LocalCompactor::new(tables()))).await;
    let remote = Arc::new(GrpcCompactor::new(opts(server.url()), None).unwrap());
    conformance::run(remote, tables()).await;
    server.stop().await.unwrap();
    storage_node.stop().await.unwrap();
}

async fn inputs(storage: &dyn Storage) -> CompactionJob {
    let a = write_table(
        storage,
        1,
        &[Entry::put("a", 2, "new"), Entry::put("b", 1, "b")],
    )
    .await
    .unwrap();
    let b = write_table(
        storage,
        2,
        &[Entry::put("a", 1, "old"), Entry::put("c", 1, "c")],
    )
    .await
    .unwrap();
    CompactionJob {
        inputs: vec![a, b],
        output_level: 1,
        output_ids: (10..20).collect(),
        oldest_snapshot: 10,
        drop_tombstones: true,
        target_table_bytes: 1 << 20,
        ..CompactionJob::default()
    }
}

/// A worker writes its outputs with its own store's codec for the job's output level (zstd
/// where the compute node writes none): it spends the CPU, the compute node reads the
/// smaller tables as they are.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_writes_each_level_with_its_own_codec() {
    let dir = tempfile::tempdir().unwrap();
    let storage = sst(dir.path());
    let mut heavy = SstOptions::new(dir.path());
    heavy.compression_per_level = vec![
        cairn_filestore::Compression::None,
        cairn_filestore::Compression::Zstd(9),
    ];
    let worker: Arc<dyn Storage> = Arc::new(SstStorage::open(heavy).unwrap());
    let server = start_compaction(Arc::new(LocalCompactor::new(worker))).await;
    let remote = GrpcCompactor::new(opts(server.url()), None).unwrap();
    let rows: Vec<Entry> = (0..4000u32)
        .map(|i| {
            Entry::put(
                format!("row{i:06}"),
                1,
                format!("state={} ", i % 5).repeat(12),
            )
        })
        .collect();
    let input = write_table(storage.as_ref(), 1, &rows).await.unwrap();
    let job = |output_level, first| CompactionJob {
        inputs: vec![input.clone()],
        output_level,
        output_ids: (first..first + 4).collect(),
        oldest_snapshot: 10,
        target_table_bytes: 64 << 20,
        ..CompactionJob::default()
    };
    let same = remote.compact(job(0, 10)).await.unwrap();
    let lower = remote.compact(job(2, 20)).await.unwrap();
    assert_eq!(
        same[0].size, input.size,
        "level 0 takes none, as the input was written"
    );
    assert!(
        lower[0].size * 4 < input.size,
        "{} against {}",
        lower[0].size,
        input.size
    );
    let t = storage.open_table(&lower[0]).await.unwrap();
    assert_eq!(
        read_range(t.as_ref(), &KeyRange::all()).await.unwrap(),
        rows
    );
    server.stop().await.unwrap();
}

/// A URL where nothing listens.
async fn dead_url() -> String {
    let l = listener().await;
    let url = format!("http://{}", l.local_addr().unwrap());
    drop(l);
    url
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_node_is_retried_then_the_job_runs_locally() {
    let dir = tempfile::tempdir().unwrap();
    let storage = sst(dir.path());
    let job = inputs(&*storage).await;
    let local: Arc<dyn Compactor> = Arc::new(LocalCompactor::new(storage.clone()));
    let url = dead_url().await;
    let without = GrpcCompactor::new(opts(url.clone()), None).unwrap();
    let err = without.compact(job.clone()).await.unwrap_err().to_string();
    assert!(err.contains(&format!("compaction at {url}")), "{err}");
    assert_eq!(without.stats().retries, 2);
    assert!(
        storage.list_tables().await.unwrap().len() == 2,
        "nothing written"
    );

    let with = GrpcCompactor::new(opts(url), Some(local)).unwrap();
    let out = with.compact(job).await.unwrap();
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].entries, 3);
    assert_eq!(
        with.stats(),
        RemoteCompactionStats {
            remote_jobs: 0,
            retries: 2,
            fallbacks: 1
        }
    );
}

/// A node that stops answering (a stopped process, a partition) mid-job: its progress stops
/// reaching the caller, which gives up within its deadline and runs the job locally. A job
/// still working is never cut for its length: the deadline bounds each wait for progress.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_stops_answering_times_out_and_the_job_runs_locally() {
    let dir = tempfile::tempdir().unwrap();
    let storage = sst(dir.path());
    let job = inputs(&*storage).await;
    let server = start_compaction(Arc::new(Slow(Arc::new(LocalCompactor::new(sst(
        dir.path()
    ))))))
    .await;
    let proxy = cairn_testkit::FreezableProxy::start(server.addr).await;
    let mut o = opts(proxy.url());
    o.timeout = Duration::from_millis(200);
    o.retries = 1;
    // Working for 600 ms, three deadlines, and answering: the job completes remotely.
    let c = GrpcCompactor::new(o.clone(), None).unwrap();
    assert_eq!(c.compact(job.clone()).await.unwrap().len(), 1);
    assert_eq!(c.stats().remote_jobs, 1);

    let frozen = async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        proxy.freeze(true);
    };
    let (err, ()) = tokio::join!(c.compact(job.clone()), frozen);
    let err = err.unwrap_err().to_string();
    assert!(err.contains("timed out after 200 ms"), "{err}");
    let c = GrpcCompactor::new(o, Some(Arc::new(LocalCompactor::new(storage)))).unwrap();
    assert_eq!(c.compact(job).await.unwrap().len(), 1);
    assert_eq!(c.stats().fallbacks, 1);
    proxy.freeze(false);
    drop(proxy);
    server.stop().await.unwrap();
}

/// A job the remote node cannot finish in time runs elsewhere under ids of its own: a stalled
/// node that carries on (its progress frozen, not its work) writes only ids no other attempt
/// was given, so nothing the fallback installs can be overwritten or deleted by it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_attempt_at_a_job_writes_ids_of_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let storage = sst(dir.path());
    let job = inputs(&*storage).await;
    let seen = Arc::new(parking_lot::Mutex::new(Vec::<u64>::new()));
    let server = start_compaction(Arc::new(Recording(
        Arc::new(Slow(Arc::new(LocalCompactor::new(sst(dir.path()))))),
        seen.clone(),
    )))
    .await;
    let proxy = cairn_testkit::FreezableProxy::start(server.addr).await;
    let mut o = opts(proxy.url());
    o.timeout = Duration::from_millis(200);
    o.retries = 1;
    proxy.freeze(true);
    let c = GrpcCompactor::new(o, Some(Arc::new(LocalCompactor::new(storage)))).unwrap();
    let local = c.compact(job.clone()).await.unwrap();
    proxy.freeze(false);
    // Let the remote attempts run to their end.
    tokio::time::sleep(Duration::from_millis(900)).await;
    let remote: Vec<u64> = seen.lock().clone();
    assert!(!remote.is_empty(), "the remote node was given the job");
    for t in &local {
        assert!(
            job.output_ids.contains(&t.id),
            "within the job's reserved ids"
        );
        assert!(
            !remote.contains(&t.id),
            "id {} was given to a remote attempt too",
            t.id
        );
    }
    drop(proxy);
    server.stop().await.unwrap();
}

/// Records the output ids of every job it is given.
struct Recording(Arc<dyn Compactor>, Arc<parking_lot::Mutex<Vec<u64>>>);

#[async_trait]
impl Compactor for Recording {
    async fn compact(&self, job: CompactionJob) -> Result<Vec<TableMeta>> {
        self.1.lock().extend(&job.output_ids);
        self.0.compact(job).await
    }
}

/// A compactor that takes 600 ms before it starts.
struct Slow(Arc<dyn Compactor>);

#[async_trait]
impl Compactor for Slow {
    async fn compact(&self, job: CompactionJob) -> Result<Vec<TableMeta>> {
        tokio::time::sleep(Duration::from_millis(600)).await;
        self.0.compact(job).await
    }
}

/// One server runs the jobs of many databases: each job names its own (the client's
/// `database`), and its tables are read and written where that database's are; a token
/// scoped to one database runs its jobs and not another's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_server_runs_the_jobs_of_many_databases_each_in_its_own_tables() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    let dbs = Arc::new(cairn_rpc::Databases::new(8, move |name: String| {
        let tables = root.join(name);
        async move { Ok(Arc::new(LocalCompactor::new(sst(&tables))) as Arc<dyn Compactor>) }
    }));
    let sopts = ServerOptions {
        token: Some("admin".into()),
        scoped_tokens: vec![cairn_rpc::ScopedToken {
            token: "tenant-a".into(),
            databases: vec!["a".into()],
            read_only: false,
        }],
        ..ServerOptions::default()
    };
    let server = start_pool_member(dbs, sopts, 2).await;
    let client = |database: &str, token: &str| {
        let mut o = opts(server.url());
        o.database = Some(database.into());
        o.token = Some(token.into());
        o.retries = 0;
        GrpcCompactor::new(o, None).unwrap()
    };
    for db in ["a", "b"] {
        let storage = sst(&dir.path().join(db));
        let job = inputs(storage.as_ref()).await;
        let token = if db == "a" { "tenant-a" } else { "admin" };
        let out = client(db, token).compact(job).await.unwrap();
        assert_eq!(out.len(), 1);
        assert!(
            storage.list_tables().await.unwrap().contains(&out[0].id),
            "the output is among {db}'s tables"
        );
    }
    let job = inputs(sst(&dir.path().join("b")).as_ref()).await;
    let e = client("b", "tenant-a").compact(job).await.unwrap_err();
    assert!(e.to_string().contains("does not reach database `b`"), "{e}");
    server.stop().await.unwrap();
}

/// A pool sends a job to the least busy server (the idle one, not the one whose slot is
/// taken), and when that server stops answering mid-job, gives the job to the next, under
/// ids of its own: what the first may still write collides with nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_picks_the_least_busy_server_and_moves_a_job_off_one_that_stalls() {
    let dir = tempfile::tempdir().unwrap();
    let storage = sst(dir.path());
    let job = inputs(&*storage).await;
    let (seen_a, seen_b) = (Arc::default(), Arc::default());
    let worker = |seen: &Arc<parking_lot::Mutex<Vec<u64>>>| -> Arc<dyn Compactor> {
        Arc::new(Recording(
            Arc::new(Slow(Arc::new(LocalCompactor::new(sst(dir.path()))))),
            seen.clone(),
        ))
    };
    let one_slot = |c| {
        start_pool_member(
            Arc::new(cairn_rpc::Databases::single(c)),
            ServerOptions::default(),
            1,
        )
    };
    let a = one_slot(worker(&seen_a)).await;
    let b = one_slot(worker(&seen_b)).await;
    let (pa, pb) = (
        cairn_testkit::FreezableProxy::start(a.addr).await,
        cairn_testkit::FreezableProxy::start(b.addr).await,
    );
    let client = |url: String| {
        let mut o = opts(url);
        o.timeout = Duration::from_millis(300);
        o.retries = 0;
        o
    };
    // B's one slot is taken by a job of its own.
    let busy = GrpcCompactor::new(client(pb.url()), None).unwrap();
    let mut other = job.clone();
    other.output_ids = (1000..1010).collect();
    let running = tokio::spawn(async move { busy.compact(other).await });
    tokio::time::sleep(Duration::from_millis(150)).await;

    let pool = GrpcCompactor::pool(vec![client(pa.url()), client(pb.url())], None).unwrap();
    let stall_a = async {
        tokio::time::sleep(Duration::from_millis(150)).await;
        pa.freeze(true);
    };
    let (out, ()) = tokio::join!(pool.compact(job.clone()), stall_a);
    let out = out.unwrap();
    running.await.unwrap().unwrap();
    let (a_ids, b_ids) = (seen_a.lock().clone(), seen_b.lock().clone());
    assert!(!a_ids.is_empty(), "the idle server was picked first");
    assert!(
        out.iter()
            .all(|t| b_ids.contains(&t.id) && !a_ids.contains(&t.id)),
        "the job finished on the other server, under ids the stalled one was not given"
    );
    assert_eq!(pool.stats().remote_jobs, 1);
    pa.freeze(false);
    drop((pa, pb));
    a.stop().await.unwrap();
    b.stop().await.unwrap();
}

/// The parts of one job, sent at once to a pool of idle one-slot servers, go one to each
/// rather than all to the first that says it is idle (where they would wait in turn).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_parts_of_one_job_go_to_different_servers() {
    let dir = tempfile::tempdir().unwrap();
    let storage = sst(dir.path());
    let job = inputs(&*storage).await;
    let (mut first, mut second) = (job.clone(), job);
    first.upper = Some("b".into());
    first.output_ids = (10..15).collect();
    second.lower = Some("b".into());
    second.output_ids = (15..20).collect();
    let (seen_a, seen_b) = (Arc::default(), Arc::default());
    let worker = |seen: &Arc<parking_lot::Mutex<Vec<u64>>>| {
        let c: Arc<dyn Compactor> = Arc::new(Recording(
            Arc::new(Slow(Arc::new(LocalCompactor::new(sst(dir.path()))))),
            seen.clone(),
        ));
        start_pool_member(
            Arc::new(cairn_rpc::Databases::single(c)),
            ServerOptions::default(),
            1,
        )
    };
    let (a, b) = (worker(&seen_a).await, worker(&seen_b).await);
    let pool = GrpcCompactor::pool(vec![opts(a.url()), opts(b.url())], None).unwrap();
    let (x, y) = tokio::join!(pool.compact(first), pool.compact(second));
    x.unwrap();
    y.unwrap();
    assert!(
        !seen_a.lock().is_empty() && !seen_b.lock().is_empty(),
        "one part on each server: {:?} and {:?}",
        seen_a.lock(),
        seen_b.lock()
    );
    a.stop().await.unwrap();
    b.stop().await.unwrap();
}

/// While an attempt runs, the pool says where (`placements`, which `stats` shows); once it
/// is done, it says nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_says_where_each_running_job_is() {
    let dir = tempfile::tempdir().unwrap();
    let storage = sst(dir.path());
    let job = inputs(&*storage).await;
    let slow: Arc<dyn Compactor> = Arc::new(Slow(Arc::new(LocalCompactor::new(sst(dir.path())))));
    let server = start_compaction(slow).await;
    let pool = Arc::new(GrpcCompactor::pool(vec![opts(server.url())], None).unwrap());
    let running = tokio::spawn({
        let (pool, job) = (pool.clone(), job.clone());
        async move { pool.compact(job).await }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let placed = pool.placements();
    assert_eq!(placed.len(), 1, "{placed:?}");
    assert_eq!(placed[0].worker, server.url());
    assert!(job.output_ids.contains(&placed[0].first_id), "{placed:?}");
    running.await.unwrap().unwrap();
    assert_eq!(pool.placements(), vec![]);
    server.stop().await.unwrap();
}
