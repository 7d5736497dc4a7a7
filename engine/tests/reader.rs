//! Read replicas (`Db::open_reader`): a reader follows its writer's manifest and journal,
//! serves reads at its own snapshots, and changes nothing.

mod support;

use bytes::Bytes;
use cairn_common::{KeyRange, ValueType};
use cairn_memtable::MemtableOptions;
use std::time::Duration;
use support::{Harness, JournalKind};

/// Polls `db` until `key` reads as `want`, for up to ten seconds.
async fn eventually(db: &cairn_engine::Db, key: &str, want: Option<&str>) {
    let want = want.map(|v| Bytes::from(v.to_string()));
    for _ in 0..1000 {
        if db.get(key.as_bytes()).await.unwrap() == want {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{key} never read as {want:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_follows_its_writer_and_changes_nothing() {
    let h = Harness::new(JournalKind::Memory, MemtableOptions::default());
    let writer = h.open().await;
    writer.put("a", "1").await.unwrap();
    writer.flush().await.unwrap();
    writer.put("b", "2").await.unwrap();

    let reader = h.open_reader("reader").await;
    assert_eq!(reader.get(b"a").await.unwrap().as_deref(), Some(&b"1"[..]));
    assert_eq!(
        reader.get(b"b").await.unwrap().as_deref(),
        Some(&b"2"[..]),
        "unflushed writes come from the journal"
    );

    // New writes, a flush (the journal is truncated), a compaction (tables replaced).
    writer.put("c", "3").await.unwrap();
    eventually(&reader, "c", Some("3")).await;
    for i in 0..2000 {
        writer
            .put(format!("k{i:04}"), "x".repeat(40))
            .await
            .unwrap();
    }
    writer.delete("a").await.unwrap();
    writer.flush().await.unwrap();
    writer.compact().await.unwrap();
    writer.put("d", "4").await.unwrap();
    eventually(&reader, "d", Some("4")).await;
    eventually(&reader, "a", None).await;
    let scanned = reader
        .scan(KeyRange::new(Some("k".into()), Some("l".into())))
        .await
        .unwrap()
        .collect(None)
        .await
        .unwrap();
    assert_eq!(scanned.len(), 2000);
    let keys: Vec<Bytes> = ["b", "c", "d", "zz"].map(Bytes::from).to_vec();
    let got = reader.multi_get(&keys).await.unwrap();
    assert_eq!(
        got,
        vec![Some("2".into()), Some("3".into()), Some("4".into()), None]
    );
    let count = reader
        .aggregate(KeyRange::all(), ValueType::I64)
        .await
        .unwrap();
    assert_eq!(count.rows, 2003);

    // Every change is refused, naming what to do instead.
    let e = reader.put("x", "y").await.unwrap_err().to_string();
    assert!(e.contains("read-only") && e.contains("writer"), "{e}");
    assert!(reader.delete("b").await.is_err());
    assert!(reader.flush().await.is_err());
    assert!(reader.compact().await.is_err());
    assert!(reader.import(vec![("x".into(), "y".into())]).await.is_err());

    let stats = reader.stats();
    let r = stats.reader.expect("a reader reports how far behind it is");
    assert!(
        r.polls > 0 && r.applied_lsn > 0 && r.last_error.is_none(),
        "{r:?}"
    );
    assert_eq!(r.poll_ms, 5);
    assert!(writer.stats().reader.is_none());

    // The writer was never fenced, and the reader's restart finds the same state.
    assert_eq!(writer.stats().epoch, 1);
    writer.put("e", "5").await.unwrap();
    reader.close().await.unwrap();
    let reader = h.open_reader("reader").await;
    assert_eq!(reader.get(b"e").await.unwrap().as_deref(), Some(&b"5"[..]));
    reader.close().await.unwrap();
    writer.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_of_no_database_is_refused() {
    let h = Harness::new(JournalKind::Memory, MemtableOptions::default());
    let storage = h.storage();
    let e = cairn_engine::Db::open_reader(
        h.path().join("reader"),
        h.opts.clone(),
        h.components(storage),
    )
    .await
    .err()
    .expect("refused")
    .to_string();
    assert!(e.contains("holds no database"), "{e}");
}
