//! Merge operators, expiring puts and compaction filters through the whole engine: reads
//! (get, multi-get, scan, aggregate, snapshots) agree before and after flushes, compactions
//! and reopens, on SSTables, Parquet and the hybrid store; names are checked at open; expiry
//! follows a clock the test moves.

mod support;

use bytes::Bytes;
use cairn_common::{KeyRange, ManualClock, SharedClock, ValueType};
use cairn_engine::Db;
use cairn_memtable::MemtableOptions;
use std::time::Duration;
use support::{Harness, JournalKind, StorageKind, all};

fn n(v: i64) -> Bytes {
    Bytes::copy_from_slice(&v.to_le_bytes())
}

fn harness(kind: StorageKind) -> Harness {
    let mut h = Harness::new(
        JournalKind::File { sync: false },
        MemtableOptions::default(),
    )
    .with_storage(kind);
    h.opts.merge_operator = Some("add".into());
    h
}

/// Counters: key c{i} starts at 1000·i (some without a base), then gains i in each of five
/// rounds of merges, with flushes between; the sum agrees everywhere at every stage.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counters_read_the_same_through_flushes_compactions_and_reopens_on_every_store() {
    for kind in [StorageKind::Sst, StorageKind::Parquet, StorageKind::Hybrid] {
        let h = harness(kind);
        let db = h.open().await;
        let keys: Vec<Bytes> = (0..40).map(|i| Bytes::from(format!("c{i:03}"))).collect();
        for (i, k) in keys.iter().enumerate() {
            if i % 3 != 0 {
                db.put(k.clone(), n(1000 * i as i64)).await.unwrap();
            }
        }
        let expected = |rounds: i64| -> Vec<(Bytes, Bytes)> {
            keys.iter()
                .enumerate()
                .map(|(i, k)| {
                    let base = if i % 3 != 0 { 1000 * i as i64 } else { 0 };
                    (k.clone(), n(base + rounds * i as i64))
                })
                .filter(|(_, v)| *v != n(0) || rounds > 0)
                .filter(|(k, _)| rounds > 0 || k != &keys[0])
                .collect()
        };
        let mut snapshot = None;
        for round in 1..=5i64 {
            for (i, k) in keys.iter().enumerate() {
                db.merge(k.clone(), n(i as i64)).await.unwrap();
            }
            if round == 2 {
                snapshot = Some(db.snapshot());
            }
            if round % 2 == 1 {
                db.flush().await.unwrap();
            }
            check(&db, &expected(round), &keys).await;
        }
        let snap = snapshot.unwrap();
        db.compact().await.unwrap();
        check(&db, &expected(5), &keys).await;
        let at_two = db.get_at(&keys[5], &snap).await.unwrap();
        assert_eq!(
            at_two,
            Some(n(5000 + 2 * 5)),
            "{kind:?}: a snapshot keeps its operands"
        );
        drop(snap);
        db.compact().await.unwrap();
        let stats = db.stats();
        assert_eq!(
            stats.levels.iter().map(|l| l.entries).sum::<u64>(),
            40,
            "{kind:?}: folded"
        );
        db.close().await.unwrap();
        let db = h.open().await;
        check(&db, &expected(5), &keys).await;
        db.merge(keys[1].clone(), n(7)).await.unwrap();
        assert_eq!(db.get(&keys[1]).await.unwrap(), Some(n(1000 + 5 + 7)));
        db.close().await.unwrap();
    }
}

async fn check(db: &Db, expected: &[(Bytes, Bytes)], keys: &[Bytes]) {
    assert_eq!(all(db).await, expected);
    for (k, v) in expected {
        assert_eq!(db.get(k).await.unwrap().as_ref(), Some(v), "get {k:?}");
    }
    let got = db.multi_get(keys).await.unwrap();
    let want: Vec<Option<Bytes>> = keys
        .iter()
        .map(|k| {
            expected
                .iter()
                .find(|(e, _)| e == k)
                .map(|(_, v)| v.clone())
        })
        .collect();
    assert_eq!(got, want);
    let sum: i64 = expected
        .iter()
        .map(|(_, v)| i64::from_le_bytes(v[..].try_into().unwrap()))
        .sum();
    let agg = db.aggregate(KeyRange::all(), ValueType::I64).await.unwrap();
    assert_eq!(
        (agg.sum_i, agg.rows),
        (i128::from(sum), expected.len() as u64)
    );
}

#[tokio::test]
async fn names_are_checked_at_open_and_merges_need_an_operator() {
    let mut h = Harness::new(JournalKind::Memory, MemtableOptions::default());
    h.opts.merge_operator = Some("multiply".into());
    let e = Db::open(h.path(), h.opts.clone(), h.components(h.storage()))
        .await
        .err()
        .expect("an unknown operator fails the open");
    assert!(
        e.to_string().contains("engine.merge_operator") && e.to_string().contains("multiply"),
        "{e}"
    );
    h.opts.merge_operator = None;
    h.opts.compaction_filter = Some("nope".into());
    let e = Db::open(h.path(), h.opts.clone(), h.components(h.storage()))
        .await
        .err()
        .expect("an unknown filter fails the open");
    assert!(e.to_string().contains("engine.compaction_filter"), "{e}");

    h.opts.compaction_filter = None;
    let db = h.open().await;
    let e = db.merge("k", n(1)).await.unwrap_err();
    assert!(e.to_string().contains("merge operator"), "{e}");
    db.close().await.unwrap();

    h.opts.merge_operator = Some("add".into());
    let db = h.open().await;
    let e = db.merge("k", "not eight bytes").await.unwrap_err();
    assert!(e.to_string().contains("8-byte"), "{e}");
    db.merge("k", n(4)).await.unwrap();
    db.close().await.unwrap();

    // Operands written, then opened without the operator: reads say what is missing.
    h.opts.merge_operator = None;
    let db = h.open().await;
    let e = db.get(b"k").await.unwrap_err();
    assert!(e.to_string().contains("no merge operator"), "{e}");
    db.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expiring_puts_vanish_on_the_clock_and_compaction_drops_them() {
    let clock = ManualClock::new(1_000_000);
    let mut h = Harness::new(
        JournalKind::File { sync: false },
        MemtableOptions::default(),
    );
    h.opts.clock = SharedClock(clock.clone());
    let db = h.open().await;
    for i in 0..100 {
        let ttl = Duration::from_secs(if i % 2 == 0 { 10 } else { 60 });
        db.put_with_ttl(format!("t{i:03}"), n(i), ttl)
            .await
            .unwrap();
    }
    db.put("forever", n(1)).await.unwrap();
    db.flush().await.unwrap();
    assert_eq!(all(&db).await.len(), 101);
    assert_eq!(db.get(b"t000").await.unwrap(), Some(n(0)));

    clock.advance(10_000);
    assert_eq!(db.get(b"t000").await.unwrap(), None, "expired at 10 s");
    assert_eq!(db.get(b"t001").await.unwrap(), Some(n(1)));
    assert_eq!(all(&db).await.len(), 51);
    let agg = db.aggregate(KeyRange::all(), ValueType::I64).await.unwrap();
    assert_eq!(agg.rows, 51);
    assert_eq!(agg.sum_i, (0..100).filter(|i| i % 2 == 1).sum::<i128>() + 1);

    // An expired put hides what is older, as a tombstone does.
    db.put("t002", "older").await.unwrap();
    db.put_with_ttl("t002", n(2), Duration::from_secs(1))
        .await
        .unwrap();
    clock.advance(1_000);
    assert_eq!(db.get(b"t002").await.unwrap(), None);

    db.compact().await.unwrap();
    let entries: u64 = db.stats().levels.iter().map(|l| l.entries).sum();
    assert_eq!(entries, 51, "compaction at the bottom drops the expired");

    clock.advance(50_000);
    db.compact().await.unwrap();
    assert_eq!(all(&db).await, vec![(Bytes::from("forever"), n(1))]);
    db.close().await.unwrap();

    // A database TTL applies to every put; the journal keeps each expiry, so a reopen (a
    // replay) does not extend it.
    h.opts.ttl_ms = 5_000;
    let db = h.open().await;
    db.put("session", "s").await.unwrap();
    db.close_without_flush().await.unwrap();
    clock.advance(4_000);
    let db = h.open().await;
    assert_eq!(db.get(b"session").await.unwrap(), Some(Bytes::from("s")));
    clock.advance(1_000);
    assert_eq!(db.get(b"session").await.unwrap(), None);
    db.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compaction_filter_runs_by_name_in_compaction() {
    let mut h = Harness::new(JournalKind::Memory, MemtableOptions::default());
    h.opts.compaction_filter = Some("remove-empty-values".into());
    let db = h.open().await;
    db.put("old", "value").await.unwrap();
    db.flush().await.unwrap();
    db.put("old", "").await.unwrap();
    db.put("kept", "v").await.unwrap();
    db.flush().await.unwrap();
    // Until compaction runs the filter, the empty value reads as it was written.
    assert_eq!(db.get(b"old").await.unwrap(), Some(Bytes::new()));
    db.compact().await.unwrap();
    assert_eq!(
        db.get(b"old").await.unwrap(),
        None,
        "removed, not the older value"
    );
    assert_eq!(
        all(&db).await,
        vec![(Bytes::from("kept"), Bytes::from("v"))]
    );
    db.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn append_folds_bytes_and_transactions_read_merged_values() {
    let mut h = Harness::new(JournalKind::Memory, MemtableOptions::default());
    h.opts.merge_operator = Some("append".into());
    let db = h.open().await;
    db.put("log", "a").await.unwrap();
    db.merge("log", "b").await.unwrap();
    db.flush().await.unwrap();
    db.merge("log", "c").await.unwrap();
    assert_eq!(db.get(b"log").await.unwrap(), Some(Bytes::from("abc")));
    let mut tx = db.begin(cairn_engine::Isolation::Snapshot).unwrap();
    assert_eq!(tx.get(b"log").await.unwrap(), Some(Bytes::from("abc")));
    drop(tx);
    db.close().await.unwrap();
}

/// A flush holds a key's operands until it meets their base or the next key; a range
/// tombstone starting past that key must still follow them in the table (it once went out
/// first, and the table builder refused the disorder).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flush_keeps_order_around_operands_it_holds() {
    let mut h = Harness::new(JournalKind::Memory, MemtableOptions::default());
    h.opts.merge_operator = Some("append".into());
    let db = h.open().await;
    db.put("a", "base").await.unwrap();
    db.flush().await.unwrap();
    db.merge("a", "+1").await.unwrap();
    db.merge("a", "+2").await.unwrap();
    db.put("c", "c").await.unwrap();
    db.delete_range("b", "c").await.unwrap();
    db.delete_range("a", "b").await.unwrap();
    db.merge("a", "+3").await.unwrap();
    db.flush().await.unwrap();
    assert_eq!(
        all(&db).await,
        vec![
            (Bytes::from("a"), Bytes::from("+3")),
            (Bytes::from("c"), Bytes::from("c"))
        ]
    );
    db.compact().await.unwrap();
    assert_eq!(db.get(b"a").await.unwrap(), Some(Bytes::from("+3")));
    db.close().await.unwrap();
}

/// A read replica folds the operands it follows from the journal and from the tables with
/// its own operator, and reads expiring puts by its own clock.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_folds_what_it_follows() {
    let mut h = Harness::new(JournalKind::Memory, MemtableOptions::default());
    h.opts.merge_operator = Some("append".into());
    let clock = ManualClock::new(1_000);
    h.opts.clock = SharedClock(clock.clone());
    let writer = h.open().await;
    writer.put("log", "a").await.unwrap();
    writer.flush().await.unwrap();
    writer.merge("log", "b").await.unwrap();
    writer
        .put_with_ttl("lease", "held", Duration::from_millis(500))
        .await
        .unwrap();
    let reader = h.open_reader("reader").await;
    assert_eq!(reader.get(b"log").await.unwrap(), Some(Bytes::from("ab")));
    assert_eq!(
        reader.get(b"lease").await.unwrap(),
        Some(Bytes::from("held"))
    );
    writer.merge("log", "c").await.unwrap();
    let mut seen = None;
    for _ in 0..1000 {
        seen = reader.get(b"log").await.unwrap();
        if seen.as_deref() == Some(&b"abc"[..]) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        seen,
        Some(Bytes::from("abc")),
        "the journal's operand folded too"
    );
    clock.advance(500);
    assert_eq!(
        reader.get(b"lease").await.unwrap(),
        None,
        "expired by the replica's clock"
    );
    reader.close().await.unwrap();
    writer.close().await.unwrap();
}
