//! Wall time and CPU time (getrusage) per flush of one 100,000-entry table to the SSTable
//! store, the Parquet store (local files) and the hybrid of both: shows whether the hybrid's
//! dual write is bound by waiting or by CPU. `RG=16384` sets the Parquet row group size.
//! `cargo run --release -p cairn-hybrid-store --example flush_cpu`
use cairn_common::Entry;
use cairn_filestore::{
    ParquetOptions, ParquetStorage, SstOptions, SstStorage, Storage, write_table,
};
use cairn_hybrid_store::{HybridOptions, HybridStore};
use std::sync::Arc;
use std::time::Instant;

fn cpu() -> f64 {
    let mut r: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut r) };
    let t = |v: libc::timeval| v.tv_sec as f64 + v.tv_usec as f64 / 1e6;
    t(r.ru_utime) + t(r.ru_stime)
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut noise = cairn_testkit::Noise::new(0x2545_f491_4f6c_dd1d);
    let data: Vec<Entry> = (0..100_000u32)
        .map(|i| {
            Entry::put(
                format!("key{i:010}"),
                u64::from(i) + 1,
                noise.bytes(100, true),
            )
        })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    rt.block_on(async {
        let sst: Arc<dyn Storage> =
            Arc::new(SstStorage::open(SstOptions::new(dir.path().join("sst"))).unwrap());
        let pq = || {
            Arc::new(
                ParquetStorage::open(ParquetOptions {
                    url: format!("file://{}/pq", dir.path().display()),
                    row_group_rows: std::env::var("RG").map_or(65536, |v| v.parse().unwrap()),
                    ..Default::default()
                })
                .unwrap(),
            )
        };
        let parquet: Arc<dyn Storage> = pq();
        let hybrid: Arc<dyn Storage> = Arc::new(
            HybridStore::open(
                Arc::new(SstStorage::open(SstOptions::new(dir.path().join("hsst"))).unwrap()),
                pq(),
                HybridOptions::default(),
            )
            .await
            .unwrap(),
        );
        let mut id = 1;
        for (name, s) in [
            ("sstable", &sst),
            ("parquet", &parquet),
            ("hybrid", &hybrid),
        ] {
            for _ in 0..5 {
                write_table(s.as_ref(), id, &data).await.unwrap();
                s.delete_table(id).await.unwrap();
                id += 1;
            }
            let (w, c) = (Instant::now(), cpu());
            for _ in 0..30 {
                write_table(s.as_ref(), id, &data).await.unwrap();
                s.delete_table(id).await.unwrap();
                id += 1;
            }
            println!(
                "{name}: wall {:.1} ms, cpu {:.1} ms per flush",
                w.elapsed().as_secs_f64() * 1000.0 / 30.0,
                (cpu() - c) * 1000.0 / 30.0
            );
        }
    });
}
