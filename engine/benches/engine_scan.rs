//! Short range scans (100 entries from a random key), the path of db_bench's seekrandom: a
//! database of 200,000 keys in tables with a quarter of them overwritten in the memtable, so
//! each scan merges the memtable with the tables. On each memtable kind.
//! `cargo bench -p cairn-engine --bench engine_scan`

use cairn_common::KeyRange;
use cairn_compaction::LocalCompactor;
use cairn_engine::{Components, Db, EngineOptions};
use cairn_filestore::{SstOptions, SstStorage, Storage};
use cairn_journal::{FileJournal, FileJournalOptions};
use cairn_memtable::MemtableOptions;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use std::ops::Bound;
use std::sync::Arc;
use std::time::{Duration, Instant};

const KEYS: u64 = 200_000;
const SCAN: usize = 100;

fn key(i: u64) -> String {
    format!("key{i:016}")
}

async fn open(dir: &std::path::Path, memtable: MemtableOptions) -> Db {
    let mut jo = FileJournalOptions::new(dir.join("journal"));
    jo.sync = false;
    let storage: Arc<dyn Storage> =
        Arc::new(SstStorage::open(SstOptions::new(dir.join("tables"))).unwrap());
    let comps = Components {
        journal: Arc::new(FileJournal::open(jo).unwrap()),
        memtables: memtable.factory(),
        compactor: Arc::new(LocalCompactor::new(storage.clone())),
        storage,
    };
    let db = Db::open(dir, EngineOptions::default(), comps)
        .await
        .unwrap();
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
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut g = c.benchmark_group("engine_scan_100");
    g.throughput(Throughput::Elements(1));
    let kinds = [
        ("single_lock", MemtableOptions::SingleLock),
        ("sharded32", MemtableOptions::Sharded { shards: 32 }),
        ("skiplist", MemtableOptions::SkipList),
    ];
    for (name, memtable) in kinds {
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
