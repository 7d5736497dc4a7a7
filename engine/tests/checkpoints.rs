//! Named checkpoints: a durable view that shares the database's tables. It reads the same
//! through overwrites, deletes, range deletes, compactions, reopens and the manifest's own
//! full-state rewrites; its tables outlive compaction and are deleted with the checkpoint,
//! and only those no one else references.

mod support;

use bytes::Bytes;
use cairn_engine::Db;
use cairn_memtable::MemtableOptions;
use std::collections::BTreeMap;
use support::{Harness, JournalKind, all};

async fn open_checkpoint(h: &Harness, node: &str, name: &str) -> cairn_common::Result<Db> {
    Db::open_checkpoint(
        h.path().join(node),
        h.opts.clone(),
        h.components(h.storage()),
        name,
    )
    .await
}

fn model(n: u32, tag: &str) -> BTreeMap<Bytes, Bytes> {
    (0..n)
        .map(|i| {
            (
                Bytes::from(format!("k{i:04}")),
                Bytes::from(format!("{tag}-{i}-{}", "x".repeat(60))),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkpoint_reads_as_it_was_made_through_compactions_and_reopens() {
    let h = Harness::new(JournalKind::Memory, MemtableOptions::default());
    let db = h.open().await;
    let before = model(800, "old");
    for (k, v) in &before {
        db.put(k.clone(), v.clone()).await.unwrap();
    }
    // The newest writes are in the memtable: the checkpoint flushes them into it.
    let info = db.create_checkpoint("first").await.unwrap();
    assert_eq!(info.name, "first");
    assert!(info.tables > 0 && info.bytes > 0, "{info:?}");

    for (k, v) in model(800, "new") {
        db.put(k, v).await.unwrap();
    }
    db.delete_range("k0100", "k0300").await.unwrap();
    db.delete("k0700").await.unwrap();
    // Past the manifest's full-state rewrite (every 64 versions): the checkpoint is carried.
    for i in 0..70 {
        db.put(format!("z{i}"), "v").await.unwrap();
        db.flush().await.unwrap();
    }
    db.compact().await.unwrap();

    let cp = open_checkpoint(&h, "cp", "first").await.unwrap();
    let want: Vec<(Bytes, Bytes)> = before.clone().into_iter().collect();
    assert_eq!(all(&cp).await, want);
    assert_eq!(
        cp.get(b"k0150").await.unwrap(),
        before.get(&b"k0150"[..]).cloned()
    );
    let e = cp.put("a", "b").await.unwrap_err().to_string();
    assert!(e.contains("read-only"), "{e}");
    assert_eq!(
        db.get(b"k0150").await.unwrap(),
        None,
        "the database moved on"
    );
    cp.close().await.unwrap();

    // A reopened writer (which deletes tables its manifest does not name) keeps them too.
    db.close().await.unwrap();
    drop(db);
    let db = h.open().await;
    db.compact().await.unwrap();
    let cp = open_checkpoint(&h, "cp", "first").await.unwrap();
    assert_eq!(all(&cp).await, want);
    cp.close().await.unwrap();
    let listed = db.checkpoints().await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(
        (listed[0].name.as_str(), listed[0].seq),
        ("first", info.seq)
    );
    db.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_checkpoint_deletes_only_the_tables_no_one_else_references() {
    let h = Harness::new(JournalKind::Memory, MemtableOptions::default());
    let db = h.open().await;
    for (k, v) in model(600, "a") {
        db.put(k, v).await.unwrap();
    }
    db.create_checkpoint("one").await.unwrap();
    for (k, v) in model(600, "b") {
        db.put(k, v).await.unwrap();
    }
    db.create_checkpoint("two").await.unwrap();
    db.compact().await.unwrap();
    let storage = h.storage();
    let tables = |s: std::sync::Arc<dyn cairn_filestore::Storage>| async move {
        let mut t = s.list_tables().await.unwrap();
        t.sort_unstable();
        t
    };
    let with_both = tables(storage.clone()).await;

    db.delete_checkpoint("one").await.unwrap();
    let cp = open_checkpoint(&h, "cp", "two").await.unwrap();
    let want: Vec<(Bytes, Bytes)> = model(600, "b").into_iter().collect();
    assert_eq!(all(&cp).await, want, "the other checkpoint is whole");
    cp.close().await.unwrap();
    let e = open_checkpoint(&h, "cp", "one")
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("no checkpoint named \"one\""), "{e}");
    assert!(db.delete_checkpoint("one").await.is_err());

    // Deletions run in the background (after the grace period, 0 here).
    let mut left = with_both.clone();
    for _ in 0..200 {
        left = tables(storage.clone()).await;
        if left.len() < with_both.len() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert!(
        left.len() < with_both.len(),
        "the first checkpoint's own tables go"
    );
    db.delete_checkpoint("two").await.unwrap();
    db.close().await.unwrap();
    drop(db);
    // What is left is what the database itself references, and it reads whole.
    let db = h.open().await;
    let mut live = Vec::new();
    for _ in 0..200 {
        live = tables(storage.clone()).await;
        let referenced = db.stats().levels.iter().map(|l| l.tables).sum::<usize>();
        if live.len() == referenced {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let referenced = db.stats().levels.iter().map(|l| l.tables).sum::<usize>();
    assert_eq!(live.len(), referenced, "tables {live:?}");
    assert_eq!(all(&db).await, want);
    db.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkpoint_names_are_checked_and_a_name_made_again_is_replaced() {
    let h = Harness::new(JournalKind::Memory, MemtableOptions::default());
    let db = h.open().await;
    for bad in ["", "a b", "../x", &"n".repeat(201)] {
        let e = db.create_checkpoint(bad).await.unwrap_err().to_string();
        assert!(e.contains("not a checkpoint name"), "{e}");
    }
    db.put("k", "1").await.unwrap();
    db.create_checkpoint("daily").await.unwrap();
    db.put("k", "2").await.unwrap();
    db.create_checkpoint("daily").await.unwrap();
    assert_eq!(db.checkpoints().await.unwrap().len(), 1);
    let cp = open_checkpoint(&h, "cp", "daily").await.unwrap();
    assert_eq!(cp.get(b"k").await.unwrap().as_deref(), Some(&b"2"[..]));
    cp.close().await.unwrap();
    db.close().await.unwrap();
}
