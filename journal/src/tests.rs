//! The conformance suite on both journals, and the file journal's durability behaviour:
//! reopen, rollover, group commit, torn and corrupted tails.

use crate::*;
use bytes::Bytes;
use cairn_common::Lsn;
use futures::TryStreamExt;
use std::sync::Arc;

fn opts(dir: &std::path::Path) -> FileJournalOptions {
    FileJournalOptions {
        dir: dir.to_path_buf(),
        sync: true,
        segment_bytes: 4096,
    }
}

async fn replay_all(j: &dyn Journal) -> Vec<JournalRecord> {
    j.replay(0).await.unwrap().try_collect().await.unwrap()
}

#[tokio::test]
async fn conformance_memory() {
    conformance::run(Arc::new(MemoryJournal::new())).await;
}

#[tokio::test]
async fn conformance_file() {
    let dir = tempfile::tempdir().unwrap();
    conformance::run(Arc::new(FileJournal::open(opts(dir.path())).unwrap())).await;
}

#[tokio::test]
async fn conformance_file_without_sync() {
    let dir = tempfile::tempdir().unwrap();
    let mut o = opts(dir.path());
    o.sync = false;
    let j = FileJournal::open(o).unwrap();
    assert!(
        !j.appends_wait(),
        "an unsynced append is its caller's own write"
    );
    conformance::run(Arc::new(j)).await;
}

/// The engine groups writers only behind appends that wait.
#[test]
fn appends_wait_where_they_sync_or_cross_the_wire() {
    let dir = tempfile::tempdir().unwrap();
    assert!(FileJournal::open(opts(dir.path())).unwrap().appends_wait());
    assert!(!MemoryJournal::new().appends_wait());
    assert!(FaultyJournal::new(Arc::new(MemoryJournal::new())).appends_wait());
    let object = crate::ObjectJournal::new(
        Arc::new(object_store::memory::InMemory::new()),
        object_store::path::Path::from("db"),
        "memory://wait",
        None,
        crate::ObjectJournalOptions::default(),
    )
    .unwrap();
    assert!(
        !object.appends_wait(),
        "it groups and overlaps commits itself"
    );
    assert!(object.inline().is_none(), "its commits are round trips");
}

/// Appends are inline where they are a quick write by their caller, never where they sync.
#[test]
fn appends_are_inline_where_nothing_is_synced() {
    let dir = tempfile::tempdir().unwrap();
    let synced = FileJournal::open(opts(dir.path().join("synced").as_path())).unwrap();
    assert!(synced.inline().is_none());
    let refused = synced
        .append_now(1, &Bytes::from_static(b"r"))
        .expect_err("a synced file never appends without its fsync");
    assert!(refused.to_string().contains("synced"), "{refused}");
    let mut o = opts(dir.path().join("unsynced").as_path());
    o.sync = false;
    assert!(FileJournal::open(o).unwrap().inline().is_some());
    assert!(MemoryJournal::new().inline().is_some());
    assert!(
        FaultyJournal::new(Arc::new(MemoryJournal::new()))
            .inline()
            .is_none(),
        "its faults and delays are on append"
    );
}

/// Without sync each caller writes its own record under the journal's lock: once acknowledged
/// it is in the file (as a crash finds it), whatever the other writers and the rollovers do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsynced_appends_are_in_the_file_when_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let mut o = opts(dir.path());
    o.sync = false;
    let j = Arc::new(FileJournal::open(o.clone()).unwrap());
    let writers: Vec<_> = (0..8u32)
        .map(|w| {
            let j = j.clone();
            tokio::spawn(async move {
                let mut acked = Vec::new();
                for i in 0..200u32 {
                    let payload = Bytes::from(format!("w{w}-{i}"));
                    acked.push((j.append(0, payload.clone()).await.unwrap(), payload));
                }
                acked
            })
        })
        .collect();
    let mut acked = Vec::new();
    for w in writers {
        acked.extend(w.await.unwrap());
    }
    // No close: a copy of the directory is what a crashed process leaves behind.
    let copy = tempfile::tempdir().unwrap();
    for ent in std::fs::read_dir(dir.path()).unwrap() {
        let ent = ent.unwrap();
        std::fs::copy(ent.path(), copy.path().join(ent.file_name())).unwrap();
    }
    let segs = std::fs::read_dir(copy.path()).unwrap().count();
    assert!(segs > 2, "4 KiB segments roll over, found {segs}");
    o.dir = copy.path().to_path_buf();
    let reopened = FileJournal::open(o).unwrap();
    let recs = replay_all(&reopened).await;
    acked.sort();
    let got: Vec<(Lsn, Bytes)> = recs.into_iter().map(|r| (r.lsn, r.payload)).collect();
    assert_eq!(got, acked);
    assert_eq!(j.stats().syncs, 0);
}

#[tokio::test]
async fn reopen_keeps_records_and_continues_lsns() {
    let dir = tempfile::tempdir().unwrap();
    let j = FileJournal::open(opts(dir.path())).unwrap();
    for i in 0..500u32 {
        j.append(0, Bytes::from(format!("r{i}"))).await.unwrap();
    }
    j.close().await.unwrap();
    let segs = std::fs::read_dir(dir.path()).unwrap().count();
    assert!(segs > 1, "4 KiB segments roll over, found {segs}");
    let j = FileJournal::open(opts(dir.path())).unwrap();
    let recs = replay_all(&j).await;
    assert_eq!(recs.len(), 500);
    assert_eq!(recs[499].payload, Bytes::from("r499"));
    assert_eq!(j.append(0, Bytes::from("next")).await.unwrap(), 501);
}

#[tokio::test]
async fn truncate_removes_whole_segments_only() {
    let dir = tempfile::tempdir().unwrap();
    let j = FileJournal::open(opts(dir.path())).unwrap();
    for i in 0..500u32 {
        j.append(0, Bytes::from(format!("r{i}"))).await.unwrap();
    }
    let before = std::fs::read_dir(dir.path()).unwrap().count();
    j.truncate(400).await.unwrap();
    let after = std::fs::read_dir(dir.path()).unwrap().count();
    assert!(
        after < before,
        "old segments are deleted ({before} -> {after})"
    );
    let recs = replay_all(&j).await;
    assert!(recs.iter().all(|r| r.lsn <= 500));
    assert_eq!(recs.iter().filter(|r| r.lsn > 400).count(), 100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appends_are_group_committed() {
    let dir = tempfile::tempdir().unwrap();
    let mut o = opts(dir.path());
    o.segment_bytes = 64 << 20;
    let j = Arc::new(FileJournal::open(o).unwrap());
    let barrier = Arc::new(tokio::sync::Barrier::new(256));
    let mut tasks = Vec::new();
    for t in 0..256u32 {
        let (j, b) = (j.clone(), barrier.clone());
        tasks.push(tokio::spawn(async move {
            b.wait().await;
            for i in 0..4u32 {
                j.append(0, Bytes::from(format!("{t}-{i}"))).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let s = j.stats();
    assert_eq!(s.appends, 1024);
    assert_eq!(s.syncs, s.writes, "sync = true syncs every write");
    assert!(
        s.syncs * 4 <= s.appends,
        "256 concurrent writers must share fsyncs: {} appends took {} fsyncs",
        s.appends,
        s.syncs
    );
}

/// Writes `n` records, closes, and returns the path of the single segment.
async fn one_segment(dir: &std::path::Path, n: u32) -> std::path::PathBuf {
    let mut o = opts(dir);
    o.segment_bytes = 1 << 20;
    let j = FileJournal::open(o).unwrap();
    for i in 0..n {
        j.append(0, Bytes::from(format!("record-{i:04}")))
            .await
            .unwrap();
    }
    j.close().await.unwrap();
    let mut segs: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "wal"))
        .collect();
    assert_eq!(segs.len(), 1);
    segs.pop().unwrap()
}

#[tokio::test]
async fn torn_tail_reopens_to_last_good_record() {
    let dir = tempfile::tempdir().unwrap();
    let seg = one_segment(dir.path(), 10).await;
    let len = std::fs::metadata(&seg).unwrap().len();
    // Every cut point inside the last record (27 bytes: 16 header + 11 payload) must recover
    // exactly the first nine records.
    for cut in (len - 26)..len {
        let copy = tempfile::tempdir().unwrap();
        let target = copy.path().join(seg.file_name().unwrap());
        std::fs::copy(&seg, &target).unwrap();
        std::fs::OpenOptions::new()
            .write(true)
            .open(&target)
            .unwrap()
            .set_len(cut)
            .unwrap();
        let j = FileJournal::open(opts(copy.path())).unwrap();
        let recs = replay_all(&j).await;
        assert_eq!(recs.len(), 9, "cut at {cut} of {len}");
        assert_eq!(recs[8].payload, Bytes::from("record-0008"));
        // Appends continue right after the last good record, and survive another reopen.
        assert_eq!(j.append(0, Bytes::from("again")).await.unwrap(), 10);
        j.close().await.unwrap();
        let j = FileJournal::open(opts(copy.path())).unwrap();
        assert_eq!(replay_all(&j).await.len(), 10);
    }
}

#[tokio::test]
async fn corrupted_tail_record_is_cut_not_replayed() {
    let dir = tempfile::tempdir().unwrap();
    let seg = one_segment(dir.path(), 10).await;
    let mut data = std::fs::read(&seg).unwrap();
    let n = data.len();
    data[n - 3] ^= 0x10; // a bit in the last record's payload
    std::fs::write(&seg, &data).unwrap();
    let j = FileJournal::open(opts(dir.path())).unwrap();
    let recs = replay_all(&j).await;
    assert_eq!(recs.len(), 9);
    assert!(recs.iter().all(|r| r.payload.starts_with(b"record-")));
}

/// A bad record with good ones after it is no torn tail: the records after it were written,
/// and may have been acknowledged. Open refuses, naming the segment, and cuts nothing.
#[tokio::test]
async fn corruption_in_the_middle_of_the_newest_segment_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let seg = one_segment(dir.path(), 10).await;
    let mut data = std::fs::read(&seg).unwrap();
    // The payload of the third record: 16 bytes of segment header, 27 per record.
    data[16 + 2 * 27 + 20] ^= 0x10;
    std::fs::write(&seg, &data).unwrap();
    let err = FileJournal::open(opts(dir.path())).err().expect("refused");
    assert!(err.is_corruption(), "{err}");
    assert!(err.to_string().contains(".wal"), "{err}");
    assert_eq!(std::fs::read(&seg).unwrap(), data, "nothing was cut");
    // A record out of sequence in the middle is the same.
    let dir = tempfile::tempdir().unwrap();
    let seg = one_segment(dir.path(), 10).await;
    let mut data = std::fs::read(&seg).unwrap();
    let rec = 16 + 3 * 27;
    let lsn = 99u64;
    data[rec + 8..rec + 16].copy_from_slice(&lsn.to_le_bytes());
    let crc = crate::segment::checksum(lsn, &data[rec + 16..rec + 27]);
    data[rec + 4..rec + 8].copy_from_slice(&crc.to_le_bytes());
    std::fs::write(&seg, &data).unwrap();
    let err = FileJournal::open(opts(dir.path())).err().expect("refused");
    assert!(err.is_corruption(), "{err}");
}

/// The last write, torn by a crash, may have reached the disk in any order: a bad record
/// followed by good ones of the same write is still a torn tail, and is cut.
#[tokio::test]
async fn a_torn_last_write_is_cut_whatever_part_of_it_landed() {
    use crate::segment::{encode_into, file_name, header};
    let dir = tempfile::tempdir().unwrap();
    let mut data = header().to_vec();
    encode_into(&mut data, 1, b"first write", true);
    let torn = data.len();
    encode_into(&mut data, 2, b"second write, record 1", true);
    encode_into(&mut data, 3, b"second write, record 2", false);
    encode_into(&mut data, 4, b"second write, record 3", false);
    data[torn + 20] ^= 0x01; // its first page never landed
    std::fs::write(dir.path().join(file_name(1)), &data).unwrap();
    let j = FileJournal::open(opts(dir.path())).unwrap();
    let recs = replay_all(&j).await;
    assert_eq!(recs.len(), 1);
    assert_eq!(j.append(0, Bytes::from("next")).await.unwrap(), 2);
    j.close().await.unwrap();
}

#[tokio::test]
async fn corruption_in_an_older_segment_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let j = FileJournal::open(opts(dir.path())).unwrap();
    for i in 0..500u32 {
        j.append(0, Bytes::from(format!("r{i}"))).await.unwrap();
    }
    j.close().await.unwrap();
    let mut segs: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    segs.sort();
    let mut data = std::fs::read(&segs[0]).unwrap();
    data[40] ^= 0x01;
    std::fs::write(&segs[0], &data).unwrap();
    let j = FileJournal::open(opts(dir.path())).unwrap();
    let err = j
        .replay(0)
        .await
        .unwrap()
        .try_collect::<Vec<_>>()
        .await
        .expect_err("a flipped bit in a sealed segment must not be skipped");
    assert!(err.is_corruption(), "{err}");
    assert!(
        err.to_string().contains(".wal"),
        "error names the segment: {err}"
    );
}

/// Upgrades: a journal directory as a Cairn before segment version 2 left it (a version 1
/// segment, whose records carry no write marks, and no claim) opens; its records replay,
/// and appends go on after them. The bytes are written here as that version wrote them.
#[tokio::test]
async fn a_version_1_segment_opens_and_replays() {
    let dir = tempfile::tempdir().unwrap();
    let mut bytes = Vec::new();
    bytes.extend_from_slice(b"CAIRNWAL");
    bytes.extend_from_slice(&1u32.to_le_bytes());
    bytes.extend_from_slice(&0u32.to_le_bytes());
    for lsn in 1..=3u64 {
        let payload = format!("old-{lsn}");
        bytes.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        let crc = crc32c::crc32c_append(crc32c::crc32c(&lsn.to_le_bytes()), payload.as_bytes());
        bytes.extend_from_slice(&crc.to_le_bytes());
        bytes.extend_from_slice(&lsn.to_le_bytes());
        bytes.extend_from_slice(payload.as_bytes());
    }
    std::fs::write(dir.path().join(format!("{:020}.wal", 1)), bytes).unwrap();

    let j = FileJournal::open(opts(dir.path())).unwrap();
    let recs = replay_all(&j).await;
    let payloads: Vec<_> = recs.iter().map(|r| r.payload.clone()).collect();
    assert_eq!(payloads, ["old-1", "old-2", "old-3"].map(Bytes::from));
    assert_eq!(j.append(0, Bytes::from("new")).await.unwrap(), 4);
    j.close().await.unwrap();
    let j = FileJournal::open(opts(dir.path())).unwrap();
    assert_eq!(replay_all(&j).await.len(), 4);
}

/// A replay of the tail starts at the nearest write start the journal indexed before its
/// first record, not at the segment's start: damage far before it goes unread (a replay from
/// the beginning still finds it), and every starting point returns exactly its records.
#[tokio::test]
async fn a_replay_of_the_tail_starts_near_its_first_record() {
    let dir = tempfile::tempdir().unwrap();
    let mut o = opts(dir.path());
    o.segment_bytes = 4 << 20;
    o.sync = false;
    let j = FileJournal::open(o).unwrap();
    let mut lsns = Vec::new();
    for i in 0..3000u32 {
        let payload = Bytes::from(format!("{i:06}{}", "v".repeat(200)));
        lsns.push((j.append(0, payload.clone()).await.unwrap(), payload));
    }
    for start in (0..lsns.len()).step_by(37).chain([lsns.len() - 1]) {
        let got: Vec<(Lsn, Bytes)> = j
            .replay(lsns[start].0)
            .await
            .unwrap()
            .map_ok(|r| (r.lsn, r.payload))
            .try_collect()
            .await
            .unwrap();
        assert_eq!(got, lsns[start..], "from record {start}");
    }
    // A flipped bit in the tenth record, about 2 KB into a 650 KB segment.
    let seg = j.dir().join(segment::file_name(1));
    let mut file = std::fs::OpenOptions::new().write(true).open(&seg).unwrap();
    use std::io::{Seek, Write};
    let at = 16 + 9 * (16 + 206) + 20;
    file.seek(std::io::SeekFrom::Start(at)).unwrap();
    file.write_all(b"X").unwrap();
    let from = lsns[2900].0;
    let tail: Vec<JournalRecord> = j.replay(from).await.unwrap().try_collect().await.unwrap();
    assert_eq!(tail.len(), 100, "the tail, read from near record 2900");
    let whole: Result<Vec<JournalRecord>> = j.replay(0).await.unwrap().try_collect().await;
    assert!(whole.unwrap_err().is_corruption(), "read from the start");
}

/// A replay reads no further than the last write that completed: bytes of a write still
/// under way at the segment's end (a replica reading a live journal meets them) are neither
/// returned nor reported as corruption.
#[tokio::test]
async fn a_replay_stops_before_a_write_under_way() {
    let dir = tempfile::tempdir().unwrap();
    let j = FileJournal::open(opts(dir.path())).unwrap();
    for i in 0..10u32 {
        j.append(0, Bytes::from(format!("record-{i:04}")))
            .await
            .unwrap();
    }
    // Half of a record: its header says 100 bytes, 20 are there so far.
    let seg = j.dir().join(segment::file_name(1));
    let mut partial = Vec::new();
    segment::encode_into(&mut partial, 11, &[7u8; 100], true);
    partial.truncate(16 + 20);
    use std::io::Write;
    std::fs::OpenOptions::new()
        .append(true)
        .open(&seg)
        .unwrap()
        .write_all(&partial)
        .unwrap();
    let got = replay_all(&j).await;
    assert_eq!(got.len(), 10);
    assert_eq!(got[9].payload, Bytes::from("record-0009"));
}
