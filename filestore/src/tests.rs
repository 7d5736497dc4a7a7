//! The storage conformance suite on every SSTable configuration, and corruption detection.

use crate::*;
use bytes::Bytes;
use cairn_common::Entry;
use futures::TryStreamExt;

fn storage(dir: &std::path::Path, f: impl FnOnce(&mut SstOptions)) -> Arc<SstStorage> {
    let mut o = SstOptions::new(dir);
    f(&mut o);
    Arc::new(SstStorage::open(o).unwrap())
}

#[tokio::test]
async fn conformance_sstable_default() {
    let dir = tempfile::tempdir().unwrap();
    conformance::run(storage(dir.path(), |_| {}), 1).await;
    conformance::digests(
        &(storage(dir.path(), |_| {}) as Arc<dyn Storage>),
        500,
        true,
    )
    .await;
}

#[tokio::test]
async fn conformance_sstable_lz4_no_filter_no_cache_small_blocks() {
    let dir = tempfile::tempdir().unwrap();
    let s = storage(dir.path(), |o| {
        o.compression = Compression::Lz4;
        o.filter = FilterKind::None;
        o.block_cache_bytes = 0;
        o.block_bytes = 256;
    });
    conformance::run(s, 1).await;
}

#[tokio::test]
async fn conformance_sstable_zstd_and_a_codec_per_level() {
    let dir = tempfile::tempdir().unwrap();
    let s = storage(dir.path(), |o| {
        o.compression_per_level =
            vec![Compression::Zstd(1), Compression::Lz4, Compression::Zstd(9)];
        o.block_bytes = 1024;
    });
    conformance::run(s, 1).await;
}

/// Each level's tables take its codec, the levels past the list the last one's; the bytes
/// say so (compressible values: none > lz4 > zstd), and every table reads back the same.
#[tokio::test]
async fn each_level_takes_its_compression() {
    let dir = tempfile::tempdir().unwrap();
    let s = storage(dir.path(), |o| {
        o.compression = Compression::Zstd(1); // ruled out by the list
        o.compression_per_level = vec![Compression::None, Compression::Lz4, Compression::Zstd(9)];
    });
    let written: Vec<Entry> = (0..5000u32)
        .map(|i| {
            Entry::put(
                format!("k{i:06}"),
                1,
                format!("value {} of a row; ", i % 13).repeat(4),
            )
        })
        .collect();
    let mut sizes = Vec::new();
    for level in 0..5u32 {
        let id = u64::from(level) + 1;
        let meta = write_table_from(s.as_ref(), id, level, written.iter().cloned())
            .await
            .unwrap();
        let t = s.open_table(&meta).await.unwrap();
        assert_eq!(
            read_range(t.as_ref(), &KeyRange::all()).await.unwrap(),
            written
        );
        sizes.push(meta.size);
    }
    assert!(sizes[0] > sizes[1] && sizes[1] > sizes[2], "{sizes:?}");
    assert_eq!(
        sizes[2], sizes[3],
        "past the list, the last entry: {sizes:?}"
    );
    assert_eq!(sizes[2], sizes[4], "{sizes:?}");
    assert!(
        sizes[2] * 3 < sizes[0],
        "zstd shrinks repetitive values: {sizes:?}"
    );
}

/// A table written before range tombstones (format version 1: the same layout, with 0 where
/// version 2 counts them) still opens and reads.
#[tokio::test]
async fn a_version_1_table_still_opens() {
    use std::os::unix::fs::FileExt;
    let dir = tempfile::tempdir().unwrap();
    let s = storage(dir.path(), |_| {});
    let meta = write_table(s.as_ref(), 7, &entries(300)).await.unwrap();
    let path = dir.path().join(format!("{:020}.sst", 7));
    let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    file.write_all_at(&[1, 0, 0, 0, 0, 0, 0, 0], meta.size - 16)
        .unwrap();
    drop(file);
    let s = storage(dir.path(), |_| {});
    let t = s.open_table(&meta).await.unwrap();
    assert!(t.range_deletes().is_empty());
    assert_eq!(
        read_range(t.as_ref(), &KeyRange::all()).await.unwrap(),
        entries(300)
    );
}

fn entries(n: u32) -> Vec<Entry> {
    (0..n)
        .map(|i| Entry::put(format!("k{i:05}"), 1, format!("value-{i}")))
        .collect()
}

#[tokio::test]
async fn flipped_bit_in_a_block_is_an_error_naming_the_table() {
    let dir = tempfile::tempdir().unwrap();
    let s = storage(dir.path(), |o| o.block_cache_bytes = 0);
    let meta = write_table(s.as_ref(), 7, &entries(2000)).await.unwrap();
    let path = s.path_of(7);
    let mut data = std::fs::read(&path).unwrap();
    data[100] ^= 0x04; // inside the first data block
    std::fs::write(&path, &data).unwrap();
    let t = s.open_table(&meta).await.unwrap();
    let err = t
        .get(b"k00001", u64::MAX)
        .await
        .expect_err("a corrupt block is never a value");
    assert!(err.is_corruption(), "{err}");
    assert!(
        err.to_string().contains("table 7"),
        "error names the table: {err}"
    );
    let scanned: Result<Vec<Entry>> = t.scan(&KeyRange::all()).await.unwrap().try_collect().await;
    assert!(scanned.unwrap_err().is_corruption());
    // Blocks the flip did not touch still read.
    assert_eq!(
        t.get(b"k01999", u64::MAX).await.unwrap().unwrap().value,
        Bytes::from("value-1999")
    );
}

#[tokio::test]
async fn every_single_bit_flip_is_detected_or_harmless() {
    // Flip each bit of a small table in turn: a read either fails with an error or returns
    // exactly the written data, never a wrong value.
    let dir = tempfile::tempdir().unwrap();
    let s = storage(dir.path(), |o| o.block_cache_bytes = 0);
    let written = entries(20);
    let meta = write_table(s.as_ref(), 1, &written).await.unwrap();
    let path = s.path_of(1);
    let clean = std::fs::read(&path).unwrap();
    for byte in 0..clean.len() {
        for bit in [0u8, 3, 7] {
            let mut data = clean.clone();
            data[byte] ^= 1 << bit;
            std::fs::write(&path, &data).unwrap();
            let Ok(t) = s.open_table(&meta).await else {
                continue;
            };
            if let Ok(got) = t
                .scan(&KeyRange::all())
                .await
                .unwrap()
                .try_collect::<Vec<_>>()
                .await
            {
                assert_eq!(
                    got, written,
                    "flip of bit {bit} in byte {byte} changed data silently"
                );
            }
        }
    }
}

#[tokio::test]
async fn truncated_file_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let s = storage(dir.path(), |_| {});
    let mut meta = write_table(s.as_ref(), 3, &entries(100)).await.unwrap();
    let path = s.path_of(3);
    let data = std::fs::read(&path).unwrap();
    std::fs::write(&path, &data[..data.len() - 10]).unwrap();
    assert!(s.open_table(&meta).await.err().unwrap().is_corruption());
    meta.size = 0; // even without the size check, the footer is gone
    assert!(s.open_table(&meta).await.err().unwrap().is_corruption());
}

#[tokio::test]
async fn unfinished_builds_leave_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = storage(dir.path(), |_| {});
        let mut b = s.create_table(9, 0).await.unwrap();
        b.add(&entries(10)).await.unwrap();
        drop(b);
        assert!(s.list_tables().await.unwrap().is_empty());
    }
    let leftovers = std::fs::read_dir(dir.path())
        .unwrap()
        .filter(|e| e.as_ref().unwrap().file_name() != "manifest")
        .count();
    assert_eq!(leftovers, 0, "a dropped builder removes its temporary file");
}

/// Opening a store sweeps the temporary files of builds that died, never one another process
/// (a compaction node on the same directory) is still writing: each build holds a lock on its
/// file for as long as it lives.
#[tokio::test]
async fn opening_a_store_sweeps_dead_builds_but_not_live_ones() {
    let dir = tempfile::tempdir().unwrap();
    let writer = storage(dir.path(), |_| {});
    let mut live = writer.create_table(21, 0).await.unwrap();
    live.add(&entries(10)).await.unwrap();
    // What a build killed mid-write leaves: a temporary file nobody holds.
    std::fs::write(dir.path().join(format!("{:020}.sst.tmp", 22)), b"half").unwrap();

    let _other = storage(dir.path(), |_| {});
    assert!(!dir.path().join(format!("{:020}.sst.tmp", 22)).exists());
    let meta = live.finish().await.expect("the live build was left alone");
    assert_eq!(meta.entries, 10);
    assert_eq!(writer.list_tables().await.unwrap(), vec![21]);
}

/// Builds that start while another store on the same directory opens and sweeps (a
/// compaction worker opening a database's tables for its first job, beside workers already
/// writing there) all finish: a build's file is swept only if it is not locked, and a build
/// whose file was swept in the instant between creating and locking it makes it again.
/// (Before, one build in a few hundred lost its file and failed at its rename.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn builds_survive_stores_opening_beside_them() {
    let dir = tempfile::tempdir().unwrap();
    let writer = storage(dir.path(), |_| {});
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sweeper = std::thread::spawn({
        let (dir, stop) = (dir.path().to_path_buf(), stop.clone());
        move || {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                drop(SstStorage::open(SstOptions::new(&dir)).unwrap());
            }
        }
    });
    let rows = entries(3);
    for id in 1..=3000u64 {
        let meta = write_table(writer.as_ref(), id, &rows)
            .await
            .unwrap_or_else(|e| panic!("build {id}: {e}"));
        assert_eq!(meta.entries, 3);
        writer.delete_table(id).await.unwrap();
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    sweeper.join().unwrap();
}

/// The fault decorator's throttle holds table writes to its rate: 200 KB at 1 MB/s takes a
/// fifth of a second at least (a lower bound, which a busy machine cannot make fail).
#[tokio::test]
async fn a_throttled_store_writes_no_faster_than_its_rate() {
    let dir = tempfile::tempdir().unwrap();
    let slow = crate::FaultyStorage::new(storage(dir.path(), |_| {}));
    slow.set_bytes_per_sec(1_000_000);
    let entries: Vec<Entry> = (0..200u32)
        .map(|i| Entry::put(format!("k{i:04}"), 1, vec![b'v'; 995]))
        .collect();
    let started = std::time::Instant::now();
    crate::write_table(slow.as_ref(), 1, &entries)
        .await
        .unwrap();
    assert!(started.elapsed() >= std::time::Duration::from_millis(200));
}
