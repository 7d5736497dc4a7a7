//! Appends through the journal's gRPC client to a server on loopback in the same process
//! (a memory journal behind it, so the disk is out of the picture): 256 appenders of
//! 100-byte records, as the engine's writers append under load. What it measures is the
//! remote path's cost per record, both ends of it, on this machine's cores.
//! `cargo bench -p cairn-journal --bench grpc_append`

use bytes::Bytes;
use cairn_journal::{GrpcJournal, Journal, MemoryJournal, journal_service};
use cairn_rpc::{ClientOptions, ServerOptions, builder, serve};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use std::sync::Arc;
use std::time::Instant;

const APPENDERS: u64 = 256;
const PER_APPENDER: u64 = 200;

fn appends(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (server, journal) = rt.block_on(async {
        let opts = ServerOptions::default();
        let (_drain, draining) = tokio::sync::watch::channel(false);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let router = builder(&opts).unwrap().add_service(journal_service(
            Arc::new(MemoryJournal::new()),
            &opts,
            draining,
        ));
        let server = serve(router, &[], listener, false, _drain, std::future::pending()).unwrap();
        let journal = Arc::new(GrpcJournal::new(ClientOptions::new(server.url())).unwrap());
        (server, journal)
    });
    let record = Bytes::from(vec![b'r'; 100]);
    let mut g = c.benchmark_group("grpc_journal_append_256_appenders_100b");
    g.throughput(Throughput::Elements(APPENDERS * PER_APPENDER));
    g.bench_function("append", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    let tasks: Vec<_> = (0..APPENDERS)
                        .map(|_| {
                            let (journal, record) = (journal.clone(), record.clone());
                            tokio::spawn(async move {
                                for _ in 0..PER_APPENDER {
                                    journal.append(0, record.clone()).await.unwrap();
                                }
                            })
                        })
                        .collect();
                    for t in tasks {
                        t.await.unwrap();
                    }
                }
                start.elapsed()
            })
        });
    });
    g.finish();
    rt.block_on(async {
        journal.close().await.unwrap();
        server.stop().await.unwrap();
    });
}

criterion_group!(benches, appends);
criterion_main!(benches);
