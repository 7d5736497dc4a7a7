//! Engine puts with the default components (file journal, SSTables, local compactor),
//! 100-byte values: 256 concurrent writers, synced and not (group commit is what lets the
//! synced run pass the disk's fsync rate); and one writer without sync, on each memtable kind,
//! where every cost of the write path is paid by one caller with nothing to share it.
//! `cargo bench -p cairn-engine --bench engine_put`

mod shared;

use cairn_memtable::MemtableOptions;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

const WRITERS: u64 = 256;
const PUTS_PER_WRITER: u64 = 200;

fn puts(c: &mut Criterion) {
    let rt = shared::runtime(2);
    let mut g = c.benchmark_group("engine_put_256_writers_100b");
    g.throughput(Throughput::Elements(WRITERS * PUTS_PER_WRITER));
    for sync in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        let db = Arc::new(rt.block_on(shared::open(dir.path(), sync, MemtableOptions::default())));
        let counter = Arc::new(AtomicU64::new(0));
        let value = bytes::Bytes::from(vec![b'v'; 100]);
        g.bench_function(if sync { "sync" } else { "nosync" }, |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let start = Instant::now();
                    for _ in 0..iters {
                        let tasks: Vec<_> = (0..WRITERS)
                            .map(|_| {
                                let (db, counter, value) =
                                    (db.clone(), counter.clone(), value.clone());
                                tokio::spawn(async move {
                                    for _ in 0..PUTS_PER_WRITER {
                                        let n = counter.fetch_add(1, Ordering::Relaxed);
                                        let key = format!(
                                            "key{:016}",
                                            n.wrapping_mul(0x9E37_79B9_7F4A_7C15)
                                        );
                                        db.put(key, value.clone()).await.unwrap();
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
        rt.block_on(db.close()).unwrap();
    }
    g.finish();
}

const SINGLE_WRITER_PUTS: u64 = 20_000;

fn single_writer(c: &mut Criterion) {
    let rt = shared::runtime(2);
    let mut g = c.benchmark_group("engine_put_1_writer_nosync_100b");
    g.throughput(Throughput::Elements(SINGLE_WRITER_PUTS));
    for (name, memtable) in shared::memtable_kinds() {
        let dir = tempfile::tempdir().unwrap();
        let db = rt.block_on(shared::open(dir.path(), false, memtable));
        let value = bytes::Bytes::from(vec![b'v'; 100]);
        let mut n = 0u64;
        g.bench_function(name, |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let start = Instant::now();
                    for _ in 0..iters * SINGLE_WRITER_PUTS {
                        n += 1;
                        let key = format!("key{:016}", n.wrapping_mul(0x9E37_79B9_7F4A_7C15));
                        db.put(key, value.clone()).await.unwrap();
                    }
                    start.elapsed()
                })
            });
        });
        rt.block_on(db.close()).unwrap();
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(10).measurement_time(Duration::from_secs(10));
    targets = puts, single_writer
}
criterion_main!(benches);
