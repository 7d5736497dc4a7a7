use super::pb::storage_client::StorageClient;
use super::pb::{ScanRequest, WriteRequest};
use super::*;
use crate::{ParquetOptions, ParquetStorage, SstOptions, SstStorage, Storage, conformance};
use bytes::Bytes;
use cairn_common::{Entry, KeyRange};
use cairn_rpc::pb::{self as common_pb};
use cairn_rpc::{ClientOptions, ServerHandle, ServerOptions, builder, serve};
use std::sync::Arc;
use std::time::Duration;

async fn start(storage: Arc<dyn Storage>, opts: ServerOptions) -> ServerHandle {
    start_for(Arc::new(cairn_rpc::Databases::single(storage)), opts).await
}

/// A server of many databases, each opened by `open(name)` on its first call.
async fn start_many(
    open: impl Fn(String) -> Arc<dyn Storage> + Send + Sync + 'static,
) -> ServerHandle {
    let open = Arc::new(open);
    let dbs = cairn_rpc::Databases::new(8, move |name| {
        let open = open.clone();
        async move { Ok(open(name)) }
    });
    start_for(Arc::new(dbs), ServerOptions::default()).await
}

async fn start_for(
    dbs: Arc<cairn_rpc::Databases<dyn Storage>>,
    opts: ServerOptions,
) -> ServerHandle {
    let (drain, _) = tokio::sync::watch::channel(false);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let router = builder(&opts)
        .unwrap()
        .add_service(storage_service_for(dbs, &opts));
    serve(router, &[], listener, false, drain, std::future::pending()).unwrap()
}

fn client_opts(url: String) -> ClientOptions {
    let mut o = ClientOptions::new(url);
    o.timeout = Duration::from_secs(5);
    o.connect_timeout = Duration::from_millis(500);
    o.retries = 1;
    o
}

fn sst(dir: &std::path::Path) -> Arc<dyn Storage> {
    let mut o = SstOptions::new(dir);
    o.block_bytes = 512;
    Arc::new(SstStorage::open(o).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_over_grpc_on_sstables() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    let server = start_many(move |name| sst(&root.join(name))).await;
    let remote = Arc::new(GrpcStorage::new(client_opts(server.url()), 1 << 20).unwrap());
    conformance::run(remote, 1).await;
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_over_grpc_on_parquet_without_blocks_and_without_a_cache() {
    let server = start_many(|name| {
        let o = ParquetOptions {
            url: format!("memory://grpc-conformance/{name}"),
            row_group_rows: 64,
            ..ParquetOptions::default()
        };
        Arc::new(ParquetStorage::open(o).unwrap())
    })
    .await;
    let remote = Arc::new(GrpcStorage::new(client_opts(server.url()), 0).unwrap());
    conformance::run(remote, 1).await;
    server.stop().await.unwrap();
}

/// The level a client writes a table for reaches the server's store, which encodes it with
/// that level's codec (here none at level 0, zstd below): the server is where CPU is spent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_encodes_each_level_with_its_codec() {
    let dir = tempfile::tempdir().unwrap();
    let mut o = SstOptions::new(dir.path());
    o.compression_per_level = vec![crate::Compression::None, crate::Compression::Zstd(6)];
    let server = start(
        Arc::new(SstStorage::open(o).unwrap()),
        ServerOptions::default(),
    )
    .await;
    let remote = GrpcStorage::new(client_opts(server.url()), 0).unwrap();
    let written = entries(3000);
    let top = crate::write_table_from(&remote, 1, 0, written.iter().cloned())
        .await
        .unwrap();
    let bottom = crate::write_table_from(&remote, 2, 4, written.iter().cloned())
        .await
        .unwrap();
    assert!(
        bottom.size * 4 < top.size,
        "{} against {}",
        bottom.size,
        top.size
    );
    let t = remote.open_table(&bottom).await.unwrap();
    assert_eq!(
        crate::read_range(t.as_ref(), &KeyRange::all())
            .await
            .unwrap(),
        written
    );
    server.stop().await.unwrap();
}

fn entries(n: usize) -> Vec<Entry> {
    (0..n)
        .map(|i| Entry::put(format!("key{i:06}"), 1, vec![b'v'; 100]))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hot_reads_come_from_the_client_cache_even_with_the_server_gone() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(sst(dir.path()), ServerOptions::default()).await;
    let remote = GrpcStorage::new(client_opts(server.url()), 8 << 20).unwrap();
    let meta = crate::write_table(&remote, 7, &entries(2000))
        .await
        .unwrap();
    let table = remote.open_table(&meta).await.unwrap();
    assert!(table.block_layout().is_some_and(|l| l.len() > 100));
    for i in (0..2000).step_by(50) {
        let k = format!("key{i:06}");
        assert!(table.get(k.as_bytes(), 5).await.unwrap().is_some(), "{k}");
    }
    server.stop().await.unwrap();
    for i in (0..2000).step_by(50) {
        let k = format!("key{i:06}");
        assert!(
            table.get(k.as_bytes(), 5).await.unwrap().is_some(),
            "cached {k}"
        );
    }
    // A key the filter and bounds rule out needs no server either.
    assert_eq!(table.get(b"zzz", 5).await.unwrap(), None);
    // A block never read does.
    let err = table.get(b"key000025", 5).await.unwrap_err().to_string();
    assert!(err.contains("storage at http://"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_stream_that_breaks_off_leaves_no_table() {
    let dir = tempfile::tempdir().unwrap();
    let local = sst(dir.path());
    let server = start(local.clone(), ServerOptions::default()).await;
    let remote = GrpcStorage::new(client_opts(server.url()), 0).unwrap();
    let mut b = remote.create_table(3, 0).await.unwrap();
    b.add(&entries(5000)).await.unwrap();
    drop(b); // neither finish nor abandon: a client that died mid-flush
    let mut b = remote.create_table(4, 0).await.unwrap();
    b.add(&entries(10)).await.unwrap();
    b.abandon().await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(local.list_tables().await.unwrap(), Vec::<u64>::new());
    // Out of order is refused at the add, before anything crosses the wire.
    let mut b = remote.create_table(5, 0).await.unwrap();
    let mut bad = entries(3);
    bad.reverse();
    assert!(b.add(&bad).await.is_err());
    // The stream of table 5 is still open: the server stops all the same, after its grace.
    let started = std::time::Instant::now();
    server.stop().await.unwrap();
    assert!(started.elapsed() < cairn_rpc::DRAIN_GRACE * 2);
    drop(b);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_and_oversized_requests_get_errors_and_the_server_lives_on() {
    let dir = tempfile::tempdir().unwrap();
    let local = sst(dir.path());
    let opts = ServerOptions {
        max_message_bytes: 64 << 10,
        ..Default::default()
    };
    let server = start(local.clone(), opts).await;
    let mut raw = StorageClient::connect(server.url()).await.unwrap();
    // A scan of a table that is not there, and an entry kind that does not exist.
    let missing = raw
        .scan(ScanRequest {
            meta: Some(common_pb::TableMeta {
                id: 99,
                ..Default::default()
            }),
            range: None,
            analytic: false,
        })
        .await;
    assert!(missing.is_err());
    let bad = vec![
        WriteRequest {
            id: 1,
            block: None,
            finish: false,
            level: 0,
        },
        WriteRequest {
            id: 0,
            block: Some(common_pb::Block {
                entries: vec![common_pb::Entry {
                    key: Bytes::from("k"),
                    seq: 1,
                    kind: 42,
                    value: Bytes::new(),
                }],
            }),
            finish: true,
            level: 0,
        },
    ];
    let err = raw
        .create_table(futures::stream::iter(bad))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err}");
    let huge = vec![WriteRequest {
        id: 2,
        block: Some(cairn_rpc::encode_entries(&entries(2000))),
        finish: true,
        level: 0,
    }];
    let err = raw
        .create_table(futures::stream::iter(huge))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err.code(),
            tonic::Code::OutOfRange | tonic::Code::ResourceExhausted | tonic::Code::Internal
        ),
        "{err}"
    );
    // Still serving.
    let remote = GrpcStorage::new(client_opts(server.url()), 0).unwrap();
    let meta = crate::write_table(&remote, 5, &entries(10)).await.unwrap();
    let t = remote.open_table(&meta).await.unwrap();
    assert_eq!(
        crate::read_range(&*t, &KeyRange::all())
            .await
            .unwrap()
            .len(),
        10
    );
    assert_eq!(local.list_tables().await.unwrap(), vec![5]);
    server.stop().await.unwrap();
}

/// A table written over many call deadlines (a long compaction feeding it slowly) is sealed:
/// each message has the deadline to get into the stream, not the stream to end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_stream_may_outlast_the_call_deadline() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(sst(dir.path()), ServerOptions::default()).await;
    // Each message, and the seal (an fsync, slow on a busy disk: 100 ms failed once under
    // a parallel build), has 400 ms; the stream takes about 800.
    let mut opts = client_opts(server.url());
    opts.timeout = Duration::from_millis(400);
    let remote = GrpcStorage::new(opts, 1 << 20).unwrap();
    let mut b = remote.create_table(7, 0).await.unwrap();
    for i in 0..8u32 {
        let e = Entry {
            key: Bytes::from(format!("k{i:03}")),
            seq: 1,
            kind: cairn_common::EntryKind::Put,
            value: Bytes::from(vec![1u8; 40_000]),
        };
        b.add(&[e]).await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let meta = b.finish().await.unwrap();
    assert_eq!(meta.entries, 8);
    let t = remote.open_table(&meta).await.unwrap();
    assert_eq!(
        crate::read_range(t.as_ref(), &KeyRange::all())
            .await
            .unwrap()
            .len(),
        8
    );
    server.stop().await.unwrap();
}

/// An aggregate whose shadowed keys (those the memtables and upper levels decide) would not
/// fit in one message is folded on this side instead of being refused: a large L0 or memtable
/// must not make `aggregate` fail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_aggregate_with_more_shadowed_keys_than_a_message_holds_still_answers() {
    let dir = tempfile::tempdir().unwrap();
    let opts = ServerOptions {
        max_message_bytes: 64 << 10,
        ..Default::default()
    };
    let server = start(sst(dir.path()), opts).await;
    let mut o = client_opts(server.url());
    o.max_message_bytes = 64 << 10;
    let remote = GrpcStorage::new(o, 0).unwrap();
    let entries: Vec<Entry> = (0..3000u32)
        .map(|i| Entry::put(format!("key{i:06}"), 1, "1"))
        .collect();
    let meta = crate::write_table(&remote, 11, &entries).await.unwrap();
    let t = remote.open_table(&meta).await.unwrap();
    // 2000 keys of 40 bytes: about 80 KiB of shadowed keys, over the 64 KiB bound.
    let shadowed: Vec<Bytes> = (0..2000u32)
        .map(|i| Bytes::from(format!("key{i:06}{}", "-".repeat(31))))
        .chain((0..1000u32).map(|i| Bytes::from(format!("key{i:06}"))))
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let state = t
        .aggregate(
            &KeyRange::all(),
            10,
            cairn_common::ValueType::I64,
            &shadowed,
        )
        .await
        .unwrap();
    assert_eq!(state.rows, 2000, "3000 keys, 1000 of them shadowed");
    server.stop().await.unwrap();
}
