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
