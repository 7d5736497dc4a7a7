//! Short range scans (100 entries from a random key), the path of db_bench's seekrandom: a
//! database of 200,000 keys in tables with a quarter of them overwritten in the memtable, so
//! each scan merges the memtable with the tables. On each memtable kind.
//! `cargo bench -p cairn-engine --bench engine_scan`

mod shared;

use cairn_common::KeyRange;
use cairn_engine::Db;
use cairn_memtable::MemtableOptions;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use std::ops::Bound;
use std::time::{Duration, Instant};

const KEYS: u64 = 200_000;
const SCAN: usize = 100;

fn key(i: u64) -> String {
    format!("key{i:016}")
}

/// The database the scans read: every key in tables, a quarter overwritten in the memtable.
async fn open(dir: &std::path::Path, memtable: MemtableOptions) -> Db {
    let db = shared::open(dir, false, memtable).await;
    let value = bytes::Bytes::from(vec![b'v'; 100]);
    for i in 0..KEYS {
        db.put(key(i), value.clone()).await.unwrap();
    }
    db.flush().await.unwrap();
    for i in (0..KEYS).step_by(4) {
        db.put(key(i), value.clone()).await.unwrap();
    }
    db
}

fn scans(c: &mut Criterion) {
    let rt = shared::runtime(2);
    let mut g = c.benchmark_group("engine_scan_100");
    g.throughput(Throughput::Elements(1));
    for (name, memtable) in shared::memtable_kinds() {
        let dir = tempfile::tempdir().unwrap();
        let db = rt.block_on(open(dir.path(), memtable));
        let mut n = 0u64;
        g.bench_function(name, |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let start = Instant::now();
                    for _ in 0..iters {
                        n += 1;
                        let from = n.wrapping_mul(0x9E37_79B9_7F4A_7C15) % KEYS;
                        let range = KeyRange {
                            start: Bound::Included(key(from).into()),
                            end: Bound::Unbounded,
                        };
                        let got = db.scan(range).await.unwrap().collect(Some(SCAN)).await;
                        std::hint::black_box(got.unwrap());
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
    config = Criterion::default().sample_size(20).measurement_time(Duration::from_secs(5));
    targets = scans
}
criterion_main!(benches);
