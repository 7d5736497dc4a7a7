//! Flush cost of the hybrid store against the SSTable store alone: one 100,000-entry table
//! (100-byte values, about 12 MB) written and made durable, the hybrid writing Parquet to a
//! local directory at the same time. `cargo bench -p cairn-hybrid-store --bench flush`.

use cairn_common::Entry;
use cairn_filestore::{
    ParquetOptions, ParquetStorage, SstOptions, SstStorage, Storage, write_table,
};
use cairn_hybrid_store::{HybridOptions, HybridStore};
use criterion::{Criterion, criterion_group, criterion_main};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

fn entries() -> Vec<Entry> {
    let mut noise = cairn_testkit::Noise::new(0x2545_f491_4f6c_dd1d);
    (0..100_000u32)
        .map(|i| {
            Entry::put(
                format!("key{i:010}"),
                u64::from(i) + 1,
                noise.bytes(100, true),
            )
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let data = entries();
    let dir = tempfile::tempdir().unwrap();
    let sst: Arc<dyn Storage> =
        Arc::new(SstStorage::open(SstOptions::new(dir.path().join("sst"))).unwrap());
    let hybrid: Arc<dyn Storage> = rt.block_on(async {
        let primary =
            Arc::new(SstStorage::open(SstOptions::new(dir.path().join("h-sst"))).unwrap());
        let secondary = Arc::new(
            ParquetStorage::open(ParquetOptions {
                url: format!("file://{}/h-parquet", dir.path().display()),
                ..ParquetOptions::default()
            })
            .unwrap(),
        );
        Arc::new(
            HybridStore::open(primary, secondary, HybridOptions::default())
                .await
                .unwrap(),
        )
    });
    let parquet: Arc<dyn Storage> = Arc::new(
        ParquetStorage::open(ParquetOptions {
            url: format!("file://{}/parquet", dir.path().display()),
            ..ParquetOptions::default()
        })
        .unwrap(),
    );
    let id = AtomicU64::new(1);
    let mut g = c.benchmark_group("flush_100k_entries");
    g.sample_size(20);
    for (name, store) in [
        ("sstable", &sst),
        ("parquet", &parquet),
        ("hybrid_sstable_parquet", &hybrid),
    ] {
        g.bench_function(name, |b| {
            b.to_async(&rt).iter(|| async {
                let n = id.fetch_add(1, Ordering::Relaxed);
                write_table(store.as_ref(), n, &data).await.unwrap();
                store.delete_table(n).await.unwrap();
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
