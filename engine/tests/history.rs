//! Reads as of an earlier sequence number (`Db::snapshot_at`): exact wherever they are
//! allowed, and refused below the history floor, which flushes and compactions raise as
//! they drop versions, a held snapshot holds down, and the manifest keeps across a reopen.

mod support;

use bytes::Bytes;
use cairn_common::{KeyRange, SeqNo};
use cairn_engine::Db;
use cairn_memtable::MemtableOptions;
use std::collections::BTreeMap;
use support::{Harness, JournalKind};

/// Writes every key with `tag`; the sequence number of the last write.
async fn round(db: &Db, tag: u32) -> SeqNo {
    let mut seq = 0;
    for i in 0..300 {
        seq = db
            .put(format!("k{i:04}"), format!("{tag}-{i}-{}", "x".repeat(40)))
            .await
            .unwrap();
    }
    seq
}

fn model(tag: u32) -> Vec<(Bytes, Bytes)> {
    (0..300)
        .map(|i| {
            (
                Bytes::from(format!("k{i:04}")),
                Bytes::from(format!("{tag}-{i}-{}", "x".repeat(40))),
            )
        })
        .collect::<BTreeMap<_, _>>()
        .into_iter()
        .collect()
}

/// What a read at `seq` sees, or the refusal.
async fn as_of(db: &Db, seq: SeqNo) -> Result<Vec<(Bytes, Bytes)>, String> {
    let snapshot = db.snapshot_at(seq).map_err(|e| e.to_string())?;
    let it = db.scan_at(KeyRange::all(), &snapshot).await.unwrap();
    Ok(it.collect(None).await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_as_of_an_earlier_number_are_exact_or_refused_below_the_floor() {
    let h = Harness::new(
        JournalKind::File { sync: false },
        MemtableOptions::default(),
    );
    let db = h.open().await;
    let mut seqs = Vec::new();
    for tag in 0..3 {
        seqs.push(round(&db, tag).await);
    }
    let e = db.snapshot_at(seqs[2] + 1).unwrap_err().to_string();
    assert!(e.contains("not written yet"), "{e}");
    // The tiny memtable flushed along the way: each number is read exactly or refused.
    let floor = db.stats().history_floor;
    assert!(floor <= seqs[2]);
    for (tag, &seq) in seqs.iter().enumerate() {
        match as_of(&db, seq).await {
            Ok(rows) => assert_eq!(rows, model(tag as u32), "as of {seq}"),
            Err(e) => assert!(seq < floor && e.contains("history"), "{seq}: {e}"),
        }
    }
    assert_eq!(as_of(&db, seqs[2]).await.unwrap(), model(2));

    // A snapshot held at round 2 keeps it readable through more rounds and compactions.
    let held = db.snapshot_at(seqs[2]).unwrap();
    for tag in 3..5 {
        seqs.push(round(&db, tag).await);
    }
    db.compact().await.unwrap();
    assert_eq!(as_of(&db, seqs[2]).await.unwrap(), model(2));
    assert_eq!(as_of(&db, seqs[3]).await.unwrap(), model(3));
    drop(held);
    // Let go, the next compaction drops what only it needed.
    seqs.push(round(&db, 5).await);
    db.compact().await.unwrap();
    let floor = db.stats().history_floor;
    assert!(floor > seqs[2], "floor {floor}");
    let e = as_of(&db, seqs[2]).await.unwrap_err();
    assert!(
        e.contains(&format!("history from sequence number {floor}")),
        "{e}"
    );
    assert_eq!(as_of(&db, seqs[5]).await.unwrap(), model(5));

    // The floor is in the manifest.
    db.close().await.unwrap();
    let db = h.open().await;
    assert!(db.stats().history_floor >= floor);
    assert!(as_of(&db, seqs[2]).await.is_err());
    assert_eq!(as_of(&db, seqs[5]).await.unwrap(), model(5));
    db.close().await.unwrap();
}
