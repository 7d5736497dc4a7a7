//! Sum over 1,000,000 entries (8-byte integer values, all in the deepest level after a full
//! compaction), three ways, in one run:
//! - `parquet_pushdown`: the hybrid store; each table folds its Parquet column data (here only
//!   the value column: after the compaction every key has one version and no tombstone);
//! - `sstable_pushdown`: SSTables alone; each table folds its own scan;
//! - `sstable_merged_scan`: the plain way, one merged scan over the SSTables folded in the
//!   engine (`Db::aggregate_by_scan`).
//!
//! `cargo bench -p cairn-engine --bench aggregate`

use bytes::Bytes;
use cairn_common::{KeyRange, ValueType, WriteBatch};
use cairn_compaction::{LocalCompactor, PickerOptions};
use cairn_engine::{Components, Db, EngineOptions};
use cairn_filestore::{ParquetOptions, ParquetStorage, SstOptions, SstStorage, Storage};
use cairn_hybrid_store::{HybridOptions, HybridStore};
use cairn_journal::MemoryJournal;
use cairn_memtable::MemtableOptions;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use std::sync::Arc;

const ENTRIES: u64 = 1_000_000;

async fn open(dir: &std::path::Path, hybrid: bool) -> Db {
    // A cache that holds every block, so the SSTable paths decode from memory: the fairest
    // case for them (with the default 64 MB, these 1M entries do not stay cached).
    let sst: Arc<dyn Storage> = Arc::new(
        SstStorage::open(SstOptions {
            block_cache_bytes: 512 << 20,
            ..SstOptions::new(dir.join("tables"))
        })
        .unwrap(),
    );
    let (storage, compaction): (Arc<dyn Storage>, Arc<dyn Storage>) = if hybrid {
        let parquet = Arc::new(
            ParquetStorage::open(ParquetOptions {
                url: format!("file://{}/parquet", dir.display()),
                ..ParquetOptions::default()
            })
            .unwrap(),
        );
        let h = HybridStore::open(sst, parquet, HybridOptions::default())
            .await
            .unwrap();
        (Arc::new(h.clone()), Arc::new(h.compaction_view()))
    } else {
        (sst.clone(), sst)
    };
    let opts = EngineOptions {
        memtable_bytes: 16 << 20,
        compaction: PickerOptions {
            target_table_bytes: 8 << 20,
            ..PickerOptions::default()
        },
        ..EngineOptions::default()
    };
    let comps = Components {
        journal: Arc::new(MemoryJournal::new()),
        memtables: MemtableOptions::default().factory(),
        compactor: Arc::new(LocalCompactor::new(compaction)),
        storage,
    };
    let db = Db::open(dir, opts, comps).await.unwrap();
    for chunk in 0..ENTRIES / 1000 {
        let mut b = WriteBatch::new();
        for i in chunk * 1000..(chunk + 1) * 1000 {
            b.put(
                Bytes::from(format!("key{i:010}")),
                Bytes::copy_from_slice(&(i as i64).to_le_bytes()),
            );
        }
        db.write(b).await.unwrap();
    }
    db.compact().await.unwrap();
    db
}

fn aggregate(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (hdir, sdir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let hybrid = rt.block_on(open(hdir.path(), true));
    let sst = rt.block_on(open(sdir.path(), false));
    let want = i128::from(ENTRIES as i64) * i128::from(ENTRIES as i64 - 1) / 2;
    let mut g = c.benchmark_group("sum_1m_entries");
    g.throughput(Throughput::Elements(ENTRIES));
    g.sample_size(10);
    g.bench_function("parquet_pushdown", |b| {
        b.to_async(&rt).iter(|| async {
            let s = hybrid
                .aggregate(KeyRange::all(), ValueType::I64)
                .await
                .unwrap();
            assert_eq!(s.sum_i, want);
        })
    });
    g.bench_function("sstable_pushdown", |b| {
        b.to_async(&rt).iter(|| async {
            let s = sst
                .aggregate(KeyRange::all(), ValueType::I64)
                .await
                .unwrap();
            assert_eq!(s.sum_i, want);
        })
    });
    g.bench_function("sstable_merged_scan", |b| {
        b.to_async(&rt).iter(|| async {
            let s = sst
                .aggregate_by_scan(KeyRange::all(), ValueType::I64)
                .await
                .unwrap();
            assert_eq!(s.sum_i, want);
        })
    });
    g.finish();
    let tables = |db: &Db| db.stats().levels.iter().map(|l| l.tables).sum::<usize>();
    eprintln!(
        "tables: hybrid {}, sstable {}",
        tables(&hybrid),
        tables(&sst)
    );
}

criterion_group!(benches, aggregate);
criterion_main!(benches);
