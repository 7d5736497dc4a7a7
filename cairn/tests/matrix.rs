//! The pairing matrix: every journal kind (memory, file, grpc, object) x storage kind (sstable,
//! parquet, hybrid, grpc) x compactor kind (local, grpc), wired from config exactly as a user's
//! profile would be, runs one engine scenario (writes, overwrites, deletes, range deletes, merges,
//! batches, transactions, gets, scans, flushes, compactions and subcompactions, reopens)
//! checked against a
//! `BTreeMap`. The grpc kinds talk to
//! real servers on 127.0.0.1 started with `cairn::serve`, as `cairn serve` starts them.

use crate::support;

use bytes::Bytes;
use cairn::{Config, KeyRange, WriteBatch};
use cairn_testkit::model::{model_range, remove_range};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::BTreeMap;
use support::layout::{C, J, S, cluster};

fn key(rng: &mut StdRng) -> Bytes {
    Bytes::from(format!("k{:04}", rng.random_range(0..300u32)))
}

async fn scenario(j: J, s: S, c: C) {
    let cl = cluster(j, s, c).await;
    let config =
        Config::from_toml_str(&cl.engine, None).unwrap_or_else(|e| panic!("{e}\n{}", cl.engine));
    let mut db = cairn::open(&config).await.expect("open");
    let mut rng = StdRng::seed_from_u64(7);
    let mut model: BTreeMap<Bytes, Bytes> = BTreeMap::new();
    let (mut flushes, mut compactions, mut reopens) = (0, 0, 0);
    // Compactions cut into subcompactions (`subcompactions = 2` in the layout).
    let mut split = 0;
    for step in 0..700 {
        match rng.random_range(0..100u32) {
            0..=34 => {
                let (k, v) = (
                    key(&mut rng),
                    Bytes::from(format!("v{step}-{}", "x".repeat(step % 50))),
                );
                db.put(k.clone(), v.clone()).await.unwrap();
                model.insert(k, v);
            }
            35..=39 => {
                // `append`, folded by the engine on read and flush, and by the compactor,
                // local or a server that looks the name up.
                let (k, v) = (key(&mut rng), Bytes::from(format!("+{step}")));
                db.merge(k.clone(), v.clone()).await.unwrap();
                let old = model.get(&k).cloned().unwrap_or_default();
                model.insert(k, Bytes::from([&old[..], &v[..]].concat()));
            }
            40..=51 => {
                let k = key(&mut rng);
                db.delete(k.clone()).await.unwrap();
                model.remove(&k);
            }
            52..=54 => {
                let a = rng.random_range(0..300u32);
                let (from, to) = (
                    Bytes::from(format!("k{a:04}")),
                    Bytes::from(format!("k{:04}", a + rng.random_range(1..40u32))),
                );
                db.delete_range(from.clone(), to.clone()).await.unwrap();
                remove_range(&mut model, &from, &to);
            }
            55..=56 => {
                let mut t = db.begin(cairn::Isolation::Snapshot).unwrap();
                let (a, b) = (key(&mut rng), key(&mut rng));
                assert_eq!(
                    t.get(&a).await.unwrap().as_ref(),
                    model.get(&a),
                    "step {step}: txn get"
                );
                let v = Bytes::from(format!("t{step}"));
                t.put(a.clone(), v.clone());
                t.delete(b.clone());
                t.commit().await.unwrap();
                // The delete comes after the put: when `b` is `a`, it wins.
                model.insert(a, v);
                model.remove(&b);
            }
            57..=62 => {
                let mut b = WriteBatch::new();
                for i in 0..rng.random_range(1..10) {
                    let k = key(&mut rng);
                    if rng.random_bool(0.7) {
                        let v = Bytes::from(format!("b{step}.{i}"));
                        b.put(k.clone(), v.clone());
                        model.insert(k, v);
                    } else {
                        b.delete(k.clone());
                        model.remove(&k);
                    }
                }
                db.write(b).await.unwrap();
            }
            63..=79 => {
                let k = key(&mut rng);
                assert_eq!(
                    db.get(&k).await.unwrap().as_ref(),
                    model.get(&k),
                    "step {step}: get {k:?}"
                );
            }
            80..=88 => {
                let (a, b) = (key(&mut rng), key(&mut rng));
                let r = KeyRange::new(Some(a.min(b.clone())), Some(b.max(key(&mut rng))));
                let got = db
                    .scan(r.clone())
                    .await
                    .unwrap()
                    .collect(None)
                    .await
                    .unwrap();
                assert_eq!(got, model_range(&model, &r), "step {step}: scan {r:?}");
            }
            89..=93 => {
                db.flush().await.unwrap();
            }
            94..=96 => {
                db.compact().await.unwrap();
            }
            _ => {
                let s = db.stats();
                flushes += s.flushes;
                compactions += s.compactions;
                split += s.split_compactions;
                reopens += 1;
                // A memory journal does not outlive its process: only a clean close keeps
                // its writes. The others also survive a close without the final flush.
                if j == J::Memory || rng.random_bool(0.5) {
                    db.close().await.unwrap();
                } else {
                    db.close_without_flush().await.unwrap();
                }
                drop(db);
                db = cairn::open(&config).await.expect("reopen");
            }
        }
    }
    let all = db
        .scan(KeyRange::all())
        .await
        .unwrap()
        .collect(None)
        .await
        .unwrap();
    assert_eq!(all, model_range(&model, &KeyRange::all()), "final scan");
    let s = db.stats();
    flushes += s.flushes;
    compactions += s.compactions;
    split += s.split_compactions;
    assert!(
        flushes > 0 && compactions > 0 && split > 0 && reopens > 0,
        "the run must flush ({flushes}), compact ({compactions}, {split} of them in parts) and reopen ({reopens})"
    );
    assert_eq!(s.background_error, None);
    if j == J::Memory {
        db.close().await.unwrap();
    } else {
        db.close_without_flush().await.unwrap();
    }
    drop(db);
    let db = cairn::open(&config).await.expect("last reopen");
    let all = db
        .scan(KeyRange::all())
        .await
        .unwrap()
        .collect(None)
        .await
        .unwrap();
    assert_eq!(
        all,
        model_range(&model, &KeyRange::all()),
        "after the last reopen"
    );
    db.close().await.unwrap();
    for server in cl.servers {
        server.stop().await.unwrap();
    }
}

macro_rules! matrix {
    ($($name:ident: $j:ident $s:ident $c:ident;)*) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            scenario(J::$j, S::$s, C::$c).await;
        }
    )*};
}

matrix! {
    memory_sstable_local: Memory Sstable Local;
    memory_sstable_grpc: Memory Sstable Grpc;
    memory_parquet_local: Memory Parquet Local;
    memory_parquet_grpc: Memory Parquet Grpc;
    memory_hybrid_local: Memory Hybrid Local;
    memory_hybrid_grpc: Memory Hybrid Grpc;
    memory_grpc_local: Memory Grpc Local;
    memory_grpc_grpc: Memory Grpc Grpc;
    file_sstable_local: File Sstable Local;
    file_sstable_grpc: File Sstable Grpc;
    file_parquet_local: File Parquet Local;
    file_parquet_grpc: File Parquet Grpc;
    file_hybrid_local: File Hybrid Local;
    file_hybrid_grpc: File Hybrid Grpc;
    file_grpc_local: File Grpc Local;
    file_grpc_grpc: File Grpc Grpc;
    grpc_sstable_local: Grpc Sstable Local;
    grpc_sstable_grpc: Grpc Sstable Grpc;
    grpc_parquet_local: Grpc Parquet Local;
    grpc_parquet_grpc: Grpc Parquet Grpc;
    grpc_hybrid_local: Grpc Hybrid Local;
    grpc_hybrid_grpc: Grpc Hybrid Grpc;
    grpc_grpc_local: Grpc Grpc Local;
    grpc_grpc_grpc: Grpc Grpc Grpc;
    object_sstable_local: Object Sstable Local;
    object_sstable_grpc: Object Sstable Grpc;
    object_parquet_local: Object Parquet Local;
    object_parquet_grpc: Object Parquet Grpc;
    object_hybrid_local: Object Hybrid Local;
    object_hybrid_grpc: Object Hybrid Grpc;
    object_grpc_local: Object Grpc Local;
    object_grpc_grpc: Object Grpc Grpc;
}
