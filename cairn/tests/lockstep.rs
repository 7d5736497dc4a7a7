//! Local against remote, step by step: one seeded workload runs on an engine whose every
//! component is in-process (file journal, SSTables, local compaction) and on one whose every
//! component is a server (journal, storage and compaction servers on 127.0.0.1), and each
//! answer is compared as it comes: the sequence number a write returns, gets, multi-gets,
//! scans, aggregates, reads at a snapshot taken earlier, and refusals (by kind). Flushes and
//! compactions run on their own time in each, so table layouts differ; answers must not.
//! `LOCKSTEP_SEEDS=N` runs seeds 1..=N (2 by default); a divergence names its seed and
//! step, and the same seed replays the same workload.

use crate::support;

use bytes::Bytes;
use cairn::{AggregateOp, Config, Db, KeyRange, Snapshot, ValueType, WriteBatch};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::fmt::Debug;
use support::layout::{C, J, S, cluster};

/// Both answers alike: equal values, or refusals of the same kind.
fn same<T: PartialEq + Debug>(what: &str, local: cairn::Result<T>, remote: cairn::Result<T>) {
    match (local, remote) {
        (Ok(l), Ok(r)) => assert_eq!(l, r, "{what}: local and remote answered differently"),
        (Err(l), Err(r)) => assert_eq!(
            std::mem::discriminant(&l),
            std::mem::discriminant(&r),
            "{what}: refused differently: local {l}, remote {r}"
        ),
        (l, r) => panic!("{what}: local {l:?}, remote {r:?}"),
    }
}

fn key(rng: &mut StdRng) -> Bytes {
    Bytes::from(format!("k{:04}", rng.random_range(0..200u32)))
}

fn value(rng: &mut StdRng, step: usize) -> Bytes {
    if rng.random_bool(0.3) {
        Bytes::copy_from_slice(&rng.random_range(-1000i64..1000).to_le_bytes())
    } else {
        Bytes::from(format!("v{step}-{}", "x".repeat(step % 40)))
    }
}

fn range(rng: &mut StdRng) -> KeyRange {
    let (a, b) = (key(rng), key(rng));
    KeyRange::new(Some(a.clone().min(b.clone())), Some(a.max(b)))
}

async fn scan(db: &Db, r: &KeyRange, at: Option<&Snapshot>) -> cairn::Result<Vec<(Bytes, Bytes)>> {
    let it = match at {
        Some(s) => db.scan_at(r.clone(), s).await?,
        None => db.scan(r.clone()).await?,
    };
    it.collect(None).await
}

async fn aggregate(db: &Db, r: &KeyRange) -> cairn::Result<Vec<cairn::AggregateValue>> {
    let s = db.aggregate(r.clone(), ValueType::I64).await?;
    Ok([
        AggregateOp::Count,
        AggregateOp::Sum,
        AggregateOp::Min,
        AggregateOp::Max,
    ]
    .map(|op| s.result(op))
    .to_vec())
}

async fn run(seed: u64) {
    let local_layout = cluster(J::File, S::Sstable, C::Local).await;
    let remote_layout = cluster(J::Grpc, S::Grpc, C::Grpc).await;
    let config = |toml: &str| Config::from_toml_str(toml, None).expect("config");
    let (local_config, remote_config) =
        (config(&local_layout.engine), config(&remote_layout.engine));
    let mut local = cairn::open(&local_config).await.expect("open local");
    let mut remote = cairn::open(&remote_config).await.expect("open remote");
    let mut rng = StdRng::seed_from_u64(seed);
    let mut snapshots: Vec<(Snapshot, Snapshot)> = Vec::new();
    for step in 0..500 {
        let what = format!("seed {seed} step {step}");
        match rng.random_range(0..100u32) {
            0..=29 => {
                let (k, v) = (key(&mut rng), value(&mut rng, step));
                let l = local.put(k.clone(), v.clone()).await;
                same(&format!("{what}: put"), l, remote.put(k, v).await);
            }
            30..=37 => {
                let k = key(&mut rng);
                let l = local.delete(k.clone()).await;
                same(&format!("{what}: delete"), l, remote.delete(k).await);
            }
            38..=44 => {
                let mut b = WriteBatch::new();
                for _ in 0..rng.random_range(0..8) {
                    if rng.random_bool(0.7) {
                        b.put(key(&mut rng), value(&mut rng, step));
                    } else {
                        b.delete(key(&mut rng));
                    }
                }
                let l = local.write(b.clone()).await;
                same(&format!("{what}: batch"), l, remote.write(b).await);
            }
            45..=56 => {
                let k = key(&mut rng);
                let l = local.get(&k).await;
                same(&format!("{what}: get"), l, remote.get(&k).await);
            }
            57..=61 => {
                let keys: Vec<Bytes> = (0..rng.random_range(1..10))
                    .map(|_| key(&mut rng))
                    .collect();
                let l = local.multi_get(&keys).await;
                same(
                    &format!("{what}: multi_get"),
                    l,
                    remote.multi_get(&keys).await,
                );
            }
            62..=67 => {
                let r = range(&mut rng);
                let l = scan(&local, &r, None).await;
                same(&format!("{what}: scan"), l, scan(&remote, &r, None).await);
            }
            68..=71 => {
                let r = range(&mut rng);
                let l = aggregate(&local, &r).await;
                same(
                    &format!("{what}: aggregate"),
                    l,
                    aggregate(&remote, &r).await,
                );
            }
            72..=75 => {
                if snapshots.len() < 4 {
                    snapshots.push((local.snapshot(), remote.snapshot()));
                }
                let i = rng.random_range(0..snapshots.len());
                let (ls, rs) = &snapshots[i];
                let k = key(&mut rng);
                let l = local.get_at(&k, ls).await;
                same(
                    &format!("{what}: get at a snapshot"),
                    l,
                    remote.get_at(&k, rs).await,
                );
                let r = range(&mut rng);
                let l = scan(&local, &r, Some(ls)).await;
                same(
                    &format!("{what}: scan at a snapshot"),
                    l,
                    scan(&remote, &r, Some(rs)).await,
                );
                if rng.random_bool(0.3) {
                    snapshots.swap_remove(i);
                }
            }
            76..=78 => {
                // Over a limit: refused alike, and nothing changes.
                let big = Bytes::from(vec![b'k'; cairn_common::limits::MAX_KEY_BYTES + 1]);
                let l = local.put(big.clone(), "v").await;
                same(
                    &format!("{what}: an oversized key"),
                    l,
                    remote.put(big, "v").await,
                );
            }
            79..=87 => {
                let l = local.flush().await;
                same(&format!("{what}: flush"), l, remote.flush().await);
            }
            88..=93 => {
                let l = local.compact().await;
                same(&format!("{what}: compact"), l, remote.compact().await);
            }
            _ => {
                snapshots.clear();
                let clean = rng.random_bool(0.5);
                for db in [&local, &remote] {
                    if clean {
                        db.close().await.unwrap();
                    } else {
                        db.close_without_flush().await.unwrap();
                    }
                }
                drop((local, remote));
                local = cairn::open(&local_config).await.expect("reopen local");
                remote = cairn::open(&remote_config).await.expect("reopen remote");
            }
        }
    }
    let all = KeyRange::all();
    let l = scan(&local, &all, None).await.unwrap();
    assert!(
        !l.is_empty(),
        "seed {seed}: the workload left data to compare"
    );
    same(
        &format!("seed {seed}: the final scan"),
        Ok(l),
        scan(&remote, &all, None).await,
    );
    snapshots.clear();
    local.close().await.unwrap();
    remote.close().await.unwrap();
    for server in remote_layout.servers {
        server.stop().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_and_remote_components_answer_alike_at_every_step() {
    let seeds: u64 = std::env::var("LOCKSTEP_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2);
    for seed in 1..=seeds {
        run(seed).await;
    }
}
