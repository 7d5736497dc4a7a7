//! Memtable insert and get, sharded vs single-lock vs skiplist, at 1 and 2 threads.
//! `cargo bench -p cairn-memtable`

use cairn_common::Entry;
use cairn_memtable::{Memtable, ShardedMemtable, SingleLockMemtable, SkipListMemtable};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

const OPS_PER_THREAD: u64 = 10_000;

type Make = fn() -> Arc<dyn Memtable>;

fn kinds() -> Vec<(&'static str, Make)> {
    vec![
        ("sharded32", || Arc::new(ShardedMemtable::new(32))),
        ("single_lock", || Arc::new(SingleLockMemtable::new())),
        ("skiplist", || Arc::new(SkipListMemtable::new())),
    ]
}

fn key(i: u64) -> Vec<u8> {
    format!(
        "key{:016}",
        i.wrapping_mul(0x9E37_79B9_7F4A_7C15) % 10_000_000
    )
    .into_bytes()
}

/// Runs `op` on `threads` threads, `OPS_PER_THREAD` each, and returns the wall time.
fn parallel(threads: u64, op: impl Fn(u64, u64) + Sync) -> Duration {
    let start = Instant::now();
    std::thread::scope(|s| {
        for t in 0..threads {
            let op = &op;
            s.spawn(move || {
                for i in 0..OPS_PER_THREAD {
                    op(t, i);
                }
            });
        }
    });
    start.elapsed()
}

fn insert(c: &mut Criterion) {
    let mut g = c.benchmark_group("memtable_insert");
    let value = bytes::Bytes::from(vec![b'v'; 100]);
    for threads in [1u64, 2] {
        g.throughput(Throughput::Elements(threads * OPS_PER_THREAD));
        for (name, make) in kinds() {
            g.bench_function(BenchmarkId::new(name, format!("{threads}t")), |b| {
                let seq = AtomicU64::new(1);
                b.iter_custom(|iters| {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        let m = make();
                        total += parallel(threads, |t, i| {
                            let s = seq.fetch_add(1, Ordering::Relaxed);
                            m.insert(Entry::put(key(t * OPS_PER_THREAD + i), s, value.clone()));
                        });
                    }
                    total
                });
            });
        }
    }
    g.finish();
}

fn get(c: &mut Criterion) {
    let mut g = c.benchmark_group("memtable_get");
    let n = 100_000u64;
    for threads in [1u64, 2] {
        g.throughput(Throughput::Elements(threads * OPS_PER_THREAD));
        for (name, make) in kinds() {
            let m = make();
            for i in 0..n {
                m.insert(Entry::put(key(i), i + 1, vec![b'v'; 100]));
            }
            g.bench_function(BenchmarkId::new(name, format!("{threads}t")), |b| {
                b.iter_custom(|iters| {
                    let mut total = Duration::ZERO;
                    for it in 0..iters {
                        total += parallel(threads, |t, i| {
                            let pick = (it ^ (t << 32) ^ i).wrapping_mul(0xD6E8_FEB8_6659_FD93) % n;
                            let hit = m.get(&key(pick), u64::MAX);
                            std::hint::black_box(hit);
                        });
                    }
                    total
                });
            });
        }
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(10).measurement_time(Duration::from_secs(3));
    targets = insert, get
}
criterion_main!(benches);
