//! Races forced with failpoints (the `fail` crate). A binary of its own: failpoints are
//! global to the process, and a paused one would hold up every other test's reads.

mod support;

use bytes::Bytes;
use cairn_memtable::MemtableOptions;
use support::{Harness, JournalKind};

/// A plain `get` registers no snapshot. Paused between the memtables and the tables, while a
/// newer write of its key is flushed and compacted (which drops the older version, since no
/// reader holds a snapshot of it), it must still find a value, not miss the key.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_get_racing_a_compaction_finds_its_key() {
    let scenario = fail::FailScenario::setup();
    let h = Harness::new(
        JournalKind::File { sync: false },
        MemtableOptions::default(),
    );
    let db = std::sync::Arc::new(h.open().await);
    db.put("k", "old").await.unwrap();
    db.flush().await.unwrap();

    fail::cfg("get-between-memtables-and-tables", "pause").unwrap();
    let reader = {
        let db = db.clone();
        tokio::spawn(async move { db.get(b"k").await })
    };
    // The reader is past the memtables (which do not hold "k") once it sits at the pause.
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert!(!reader.is_finished());
    db.put("k", "new").await.unwrap();
    db.flush().await.unwrap();
    db.compact().await.unwrap();
    fail::cfg("get-between-memtables-and-tables", "off").unwrap();

    let got = reader.await.unwrap().unwrap();
    assert!(
        got == Some(Bytes::from("new")) || got == Some(Bytes::from("old")),
        "the key was there all along: {got:?}"
    );
    scenario.teardown();
    db.close().await.unwrap();
}

/// A scan that sees a memtable and the table it was just flushed into (the flush installs the
/// table before it lets the memtable go) meets each version twice. Readers that keep one
/// version a key never noticed; folding merge operands must take each one once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_operand_seen_in_a_memtable_and_its_table_folds_once() {
    let scenario = fail::FailScenario::setup();
    let mut h = Harness::new(JournalKind::Memory, MemtableOptions::default());
    h.opts.merge_operator = Some("append".into());
    let db = std::sync::Arc::new(h.open().await);
    db.merge("k", "a").await.unwrap();
    db.merge("k", "b").await.unwrap();
    fail::cfg("flush-after-install", "pause").unwrap();
    let flush = {
        let db = db.clone();
        tokio::spawn(async move { db.flush().await })
    };
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(
        !flush.is_finished(),
        "the flush waits between install and retire"
    );
    let got = db
        .scan(cairn_common::KeyRange::all())
        .await
        .unwrap()
        .collect(None)
        .await
        .unwrap();
    let one = db.get(b"k").await.unwrap();
    fail::cfg("flush-after-install", "off").unwrap();
    flush.await.unwrap().unwrap();
    assert_eq!(got, vec![(Bytes::from("k"), Bytes::from("ab"))]);
    assert_eq!(one, Some(Bytes::from("ab")));
    scenario.teardown();
}
