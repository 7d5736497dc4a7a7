//! Ingesting table files built elsewhere: SSTables and Parquet files are loaded as one
//! import, each file newer than the last, each table at the deepest level it does not
//! overlap; a file with range tombstones, or one that is no table, is refused and loads
//! nothing.

mod support;

use bytes::Bytes;
use cairn_common::{Entry, KeyRange, RangeTombstone};
use cairn_filestore::{ParquetOptions, ParquetStorage, SstOptions, SstStorage, write_table};
use cairn_memtable::MemtableOptions;
use std::path::PathBuf;
use support::{Harness, JournalKind};

fn b(s: &str) -> Bytes {
    Bytes::from(s.to_string())
}

/// Writes `entries` as an SSTable built by another store, in `dir`: its path.
async fn sstable(dir: &std::path::Path, entries: &[Entry]) -> PathBuf {
    let s = SstStorage::open(SstOptions::new(dir)).unwrap();
    let meta = write_table(&s, 1, entries).await.unwrap();
    dir.join(format!("{:020}.sst", meta.id))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_load_newest_last_and_land_as_deep_as_they_can() {
    let h = Harness::new(JournalKind::Memory, MemtableOptions::default());
    let db = h.open().await;
    for i in 0..200 {
        db.put(format!("m{i:03}"), "old").await.unwrap();
    }
    db.compact().await.unwrap();
    let levels = db.stats().levels;
    let deepest = levels.len() - 1;
    assert_eq!(
        levels[deepest].tables, 0,
        "tiny options leave the last level empty: {levels:?}"
    );

    let built = tempfile::tempdir().unwrap();
    // Overlaps the database's keys: newer than them, so it must stay above them.
    let over = sstable(
        &built.path().join("over"),
        &[
            Entry::put("m005", 9, "ingested"),
            Entry::put("m005", 3, "older in the file"),
            Entry::delete("m006", 4),
        ],
    )
    .await;
    // Overlaps nothing: it can go to the deepest level.
    std::fs::create_dir_all(built.path().join("apart")).unwrap();
    let apart = ParquetStorage::open(ParquetOptions {
        url: format!("file://{}", built.path().join("apart").display()),
        ..ParquetOptions::default()
    })
    .unwrap();
    let meta = write_table(
        &apart,
        2,
        &[Entry::put("z1", 1, "p1"), Entry::put("z2", 1, "p2")],
    )
    .await
    .unwrap();
    let apart = built
        .path()
        .join("apart")
        .join(format!("{:020}.parquet", meta.id));
    // A later file in the list is newer: its z1 wins.
    let later = sstable(&built.path().join("later"), &[Entry::put("z1", 1, "later")]).await;

    db.ingest(&[over, apart, later]).await.unwrap();
    assert_eq!(db.get(b"m005").await.unwrap(), Some(b("ingested")));
    assert_eq!(db.get(b"m006").await.unwrap(), None, "the file's delete");
    assert_eq!(db.get(b"m007").await.unwrap(), Some(b("old")));
    assert_eq!(db.get(b"z1").await.unwrap(), Some(b("later")));
    assert_eq!(db.get(b"z2").await.unwrap(), Some(b("p2")));
    let tables: Vec<usize> = db.stats().levels.iter().map(|l| l.tables).collect();
    // The first file overlaps the loaded keys and stays above them, in level 0; the Parquet
    // file overlaps nothing and goes to the last level; the last file overlaps only it and
    // lands just above it.
    assert_eq!(tables[0], 1, "{tables:?}");
    assert_eq!(tables[deepest], 1, "{tables:?}");
    assert_eq!(tables[deepest - 1], 1, "{tables:?}");

    // A write after the ingest is newer than it; a reopen keeps it all.
    db.put("m005", "after").await.unwrap();
    db.close().await.unwrap();
    drop(db);
    let db = h.open().await;
    assert_eq!(db.get(b"m005").await.unwrap(), Some(b("after")));
    let all = db
        .scan(KeyRange::all())
        .await
        .unwrap()
        .collect(None)
        .await
        .unwrap();
    assert_eq!(all.len(), 201, "199 of the 200, m005 again, z1 and z2");
    db.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_with_range_tombstones_or_no_table_is_refused_and_loads_nothing() {
    let h = Harness::new(JournalKind::Memory, MemtableOptions::default());
    let db = h.open().await;
    let built = tempfile::tempdir().unwrap();
    let good = sstable(&built.path().join("good"), &[Entry::put("k", 1, "v")]).await;
    let ranged = sstable(
        &built.path().join("ranged"),
        &[
            RangeTombstone::new("a", "b", 2).to_entry(),
            Entry::put("a", 1, "v"),
        ],
    )
    .await;
    let e = db
        .ingest(&[good.clone(), ranged])
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("range tombstones"), "{e}");
    let junk = built.path().join("junk");
    std::fs::write(&junk, b"nothing of the kind").unwrap();
    let e = db.ingest(&[good, junk]).await.unwrap_err().to_string();
    assert!(
        e.contains("neither a Cairn SSTable nor a Parquet file"),
        "{e}"
    );
    assert_eq!(
        db.get(b"k").await.unwrap(),
        None,
        "an import lands whole or not at all"
    );
    db.close().await.unwrap();
}
