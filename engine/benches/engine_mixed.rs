//! Contended updates: YCSB A's mix (half gets, half puts of 100-byte values, zipfian keys over
//! 100K keys loaded first) from four tasks on a runtime of four threads, as `cairn-bench` runs
//! it, without sync. Where one writer must wait for another's (visibility, the journal, the
//! memtable's lock), this is where the wait shows. Each memtable kind.
//! `cargo bench -p cairn-engine --bench engine_mixed`

mod shared;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Zipf};
use std::sync::Arc;
use std::time::{Duration, Instant};

const KEYS: u64 = 100_000;
const WORKERS: u64 = 4;
const OPS_PER_WORKER: u64 = 25_000;

fn key(n: u64) -> String {
    // Scattered, so the hot keys are not neighbours (YCSB's hashing of the zipfian rank).
    format!(
        "user{:016}",
        n.wrapping_mul(0x9E37_79B9_7F4A_7C15) % (KEYS * 1_000_003)
    )
}

fn ycsb_a(c: &mut Criterion) {
    let rt = shared::runtime(WORKERS as usize);
    let mut g = c.benchmark_group("engine_ycsb_a_4_workers_100b");
    g.throughput(Throughput::Elements(WORKERS * OPS_PER_WORKER));
    let zipf = Zipf::new(KEYS as f64, 0.99).unwrap();
    for (name, memtable) in shared::memtable_kinds() {
        let dir = tempfile::tempdir().unwrap();
        let db = Arc::new(rt.block_on(shared::open(dir.path(), false, memtable)));
        let value = bytes::Bytes::from(vec![b'v'; 100]);
        rt.block_on(async {
            for n in 0..KEYS {
                db.put(key(n), value.clone()).await.unwrap();
            }
        });
        let mut seed = 0u64;
        g.bench_function(name, |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let start = Instant::now();
                    for _ in 0..iters {
                        let tasks: Vec<_> = (0..WORKERS)
                            .map(|_| {
                                seed += 1;
                                let (db, value) = (db.clone(), value.clone());
                                tokio::spawn(async move {
                                    let mut rng = SmallRng::seed_from_u64(seed);
                                    for _ in 0..OPS_PER_WORKER {
                                        let k = key(zipf.sample(&mut rng) as u64 - 1);
                                        if rng.random_bool(0.5) {
                                            db.get(k.as_bytes()).await.unwrap();
                                        } else {
                                            db.put(k, value.clone()).await.unwrap();
                                        }
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

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(10).measurement_time(Duration::from_secs(10));
    targets = ycsb_a
}
criterion_main!(benches);
