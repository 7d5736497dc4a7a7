//! Engine behaviour beyond the model test: write stalls, background failures and retries,
//! the directory lock, atomic batches under concurrent scans, snapshot isolation through
//! compaction, and cleanup of replaced tables and flushed journal segments.

mod support;

use bytes::Bytes;
use cairn_common::{Error, KeyRange, WriteBatch};
use cairn_engine::Db;
use cairn_filestore::FaultyStorage;
use cairn_memtable::MemtableOptions;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use support::{Harness, JournalKind};

fn file_harness() -> Harness {
    Harness::new(
        JournalKind::File { sync: false },
        MemtableOptions::default(),
    )
}

async fn scan_all(db: &Db) -> Vec<(Bytes, Bytes)> {
    db.scan(KeyRange::all())
        .await
        .unwrap()
        .collect(None)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_stall_while_flush_is_blocked_and_resume_after() {
    let mut h = file_harness();
    h.opts.max_immutable_memtables = 1;
    let faulty = FaultyStorage::new(h.storage());
    let permits = faulty.hold.available_permits();
    faulty.hold.forget_permits(permits); // every flush now waits
    let db = Arc::new(h.open_with(faulty.clone()).await);

    let writer = {
        let db = db.clone();
        tokio::spawn(async move {
            for i in 0..2000u32 {
                db.put(format!("k{i:05}"), vec![b'x'; 100]).await.unwrap();
            }
        })
    };
    // The writer fills the active memtable and the one-slot queue, then must stall.
    while db.stats().write_stalls == 0 {
        tokio::task::yield_now().await;
        assert!(
            !writer.is_finished(),
            "2000 writes cannot fit in two 16 KiB memtables"
        );
    }
    let s = db.stats();
    assert_eq!(s.immutable_memtables, 1);
    assert!(
        s.memtable_bytes < (h.opts.memtable_bytes + 1024) as u64,
        "memory stays bounded while stalled: {} bytes",
        s.memtable_bytes
    );
    faulty.hold.add_permits(permits);
    writer.await.unwrap();
    db.flush().await.unwrap();
    assert_eq!(scan_all(&db).await.len(), 2000);
    db.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_flushes_are_retried_and_lose_nothing() {
    let h = file_harness();
    let faulty = FaultyStorage::new(h.storage());
    faulty.fail_next(3);
    let db = h.open_with(faulty.clone()).await;
    for i in 0..100u32 {
        db.put(format!("k{i:03}"), format!("v{i}")).await.unwrap();
    }
    db.flush()
        .await
        .expect("flush succeeds once the storage recovers");
    assert_eq!(
        faulty.fail_next.load(Ordering::SeqCst),
        0,
        "the failures were hit"
    );
    let s = db.stats();
    assert_eq!(s.background_error, None, "cleared after success");
    assert_eq!(s.levels[0].tables, 1);
    db.close().await.unwrap();
    let db = h.open().await;
    assert_eq!(scan_all(&db).await.len(), 100);
    db.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_open_of_the_same_directory_is_refused() {
    let h = file_harness();
    let db = h.open().await;
    let err = Db::open(h.path(), h.opts.clone(), h.components(h.storage()))
        .await
        .err()
        .expect("second open must fail");
    assert!(matches!(err, Error::Locked(_)), "{err}");
    db.close().await.unwrap();
    let db = h.open().await;
    db.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_are_atomic_under_concurrent_scans_and_flushes() {
    let h = file_harness();
    let db = Arc::new(h.open().await);
    let writer = {
        let db = db.clone();
        tokio::spawn(async move {
            for round in 0..300u32 {
                let mut b = WriteBatch::new();
                for k in 0..10u32 {
                    b.put(format!("group{k}"), format!("round{round:04}"));
                }
                db.write(b).await.unwrap();
            }
        })
    };
    let mut checks = 0;
    while !writer.is_finished() || checks < 50 {
        let rows = scan_all(&db).await;
        if !rows.is_empty() {
            assert_eq!(rows.len(), 10);
            assert!(
                rows.iter().all(|(_, v)| v == &rows[0].1),
                "a scan saw half a batch: {rows:?}"
            );
        }
        checks += 1;
    }
    writer.await.unwrap();
    assert!(
        db.stats().flushes > 0,
        "the batches crossed memtable flushes"
    );
    db.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_survive_overwrites_deletes_flushes_and_compaction() {
    let h = file_harness();
    let db = h.open().await;
    for i in 0..500u32 {
        db.put(format!("k{i:03}"), "old").await.unwrap();
    }
    let snap = db.snapshot();
    for i in 0..500u32 {
        if i % 2 == 0 {
            db.delete(format!("k{i:03}")).await.unwrap();
        } else {
            db.put(format!("k{i:03}"), "new").await.unwrap();
        }
    }
    db.compact().await.unwrap();
    let old = db
        .scan_at(KeyRange::all(), &snap)
        .await
        .unwrap()
        .collect(None)
        .await
        .unwrap();
    assert_eq!(old.len(), 500);
    assert!(old.iter().all(|(_, v)| v == "old"));
    assert_eq!(
        db.get_at(b"k000", &snap).await.unwrap(),
        Some(Bytes::from("old"))
    );
    assert_eq!(db.get(b"k000").await.unwrap(), None);
    let now = scan_all(&db).await;
    assert_eq!(now.len(), 250);

    // Without the snapshot, a full compaction drops the old versions and the tombstones.
    drop(snap);
    db.compact().await.unwrap();
    let s = db.stats();
    let entries: u64 = s.levels.iter().map(|l| l.entries).sum();
    assert_eq!(entries, 250, "only the live versions remain: {s:?}");
    db.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replaced_tables_and_flushed_journal_segments_are_removed() {
    let h = file_harness();
    let db = h.open().await;
    for round in 0..5u32 {
        for i in 0..400u32 {
            db.put(format!("k{i:03}"), format!("r{round}-{}", "x".repeat(60)))
                .await
                .unwrap();
        }
    }
    db.compact().await.unwrap();
    let live = db.stats().table_count();
    db.close().await.unwrap();
    // Counted before any reopen: an open sweeps unreferenced tables itself, which would hide
    // a running database that never deleted the tables compaction replaced.
    let files = cairn_testkit::count_files(&h.path().join("tables"), "sst");
    assert_eq!(files, live, "only live tables remain on disk");
    let db = h.open().await;
    let journal_bytes: u64 = std::fs::read_dir(h.path().join("journal"))
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum();
    assert!(
        journal_bytes < 64 << 10,
        "flushed segments were truncated: {journal_bytes} bytes left"
    );
    assert_eq!(scan_all(&db).await.len(), 400);
    db.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_database_refuses_work() {
    let h = file_harness();
    let db = h.open().await;
    db.put("a", "1").await.unwrap();
    db.close().await.unwrap();
    assert!(matches!(db.put("b", "2").await, Err(Error::Closed)));
    assert!(matches!(db.get(b"a").await, Err(Error::Closed)));
    db.close().await.expect("closing twice is harmless");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flush_that_keeps_failing_is_reported_not_waited_on_forever() {
    let h = file_harness();
    let faulty = FaultyStorage::new(h.storage());
    faulty.fail_next(usize::MAX);
    let db = h.open_with(faulty.clone()).await;
    db.put("k", "v").await.unwrap();
    let err = db.flush().await.expect_err("the storage never recovers");
    assert!(err.to_string().contains("injected failure"), "{err}");
    assert!(db.stats().background_error.is_some());
    // The write is still readable, and still in the journal for the next open.
    assert_eq!(db.get(b"k").await.unwrap(), Some(Bytes::from("v")));
    db.close_without_flush().await.unwrap();
    drop(db);
    let db = h.open().await;
    assert_eq!(db.get(b"k").await.unwrap(), Some(Bytes::from("v")));
    db.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_get_reads_every_key_at_one_snapshot() {
    let h = file_harness();
    let db = h.open().await;
    for i in 0..300u32 {
        db.put(format!("k{i:03}"), format!("v{i}")).await.unwrap();
        if i == 150 {
            db.flush().await.unwrap();
        }
    }
    db.delete("k007").await.unwrap();
    let keys: Vec<Bytes> = ["k299", "k007", "nope", "k000", "k150"]
        .iter()
        .map(|k| Bytes::from(*k))
        .collect();
    let got = db.multi_get(&keys).await.unwrap();
    assert_eq!(
        got,
        vec![
            Some(Bytes::from("v299")),
            None,
            None,
            Some(Bytes::from("v0")),
            Some(Bytes::from("v150"))
        ]
    );
    assert!(db.stats().journal_bytes > 300 * 10);
    db.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aggregate_sees_memtables_and_tables_at_one_snapshot() {
    use cairn_common::{AggregateOp, AggregateValue, ValueType};
    let h = file_harness();
    let db = h.open().await;
    for i in 0..1000i64 {
        db.put(format!("n{i:04}"), i.to_le_bytes().to_vec())
            .await
            .unwrap();
    }
    db.flush().await.unwrap();
    // Overwrites and deletes in the memtable shadow what the table holds.
    db.put("n0000", 5000i64.to_le_bytes().to_vec())
        .await
        .unwrap();
    db.delete("n0999").await.unwrap();
    db.put("n5000", "text").await.unwrap();
    db.put("other", 1i64.to_le_bytes().to_vec()).await.unwrap();
    let all = KeyRange::new(Some(Bytes::from("n")), Some(Bytes::from("o")));
    let s = db.aggregate(all, ValueType::I64).await.unwrap();
    let expect_sum: i128 = (1..999).sum::<i128>() + 5000;
    assert_eq!(s.result(AggregateOp::Count), AggregateValue::Int(1000));
    assert_eq!(s.result(AggregateOp::Sum), AggregateValue::Int(expect_sum));
    assert_eq!(s.result(AggregateOp::Min), AggregateValue::Int(1));
    assert_eq!(s.result(AggregateOp::Max), AggregateValue::Int(5000));
    assert_eq!(
        s.result(AggregateOp::Avg),
        AggregateValue::Float(expect_sum as f64 / 999.0)
    );
    assert_eq!(s.skipped, 1, "the text value is not a number");
    db.close().await.unwrap();
}

/// An import takes its sequence number when it writes its table and lands when it is
/// installed. A write acknowledged in between must not be visible while the import is not:
/// a snapshot that showed that write without the import (whose number is below it) would
/// change when the import landed. Found by the simulation (tests/sim.rs, seed 0).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_taken_while_an_import_runs_reads_the_same_after_it_lands() {
    let h = file_harness();
    let db = Arc::new(h.open().await);
    db.put("before", "1").await.unwrap();
    let mut import = db.begin_import().await.unwrap();
    import
        .add(vec![(Bytes::from("k"), Bytes::from("imported"))])
        .await
        .unwrap();
    let during = tokio::spawn({
        let db = db.clone();
        async move { db.put("w", "during").await }
    });
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let snap = db.snapshot();
    let shown = |v: Option<Bytes>| v.is_some();
    let (k, w) = (
        shown(db.get_at(b"k", &snap).await.unwrap()),
        shown(db.get_at(b"w", &snap).await.unwrap()),
    );
    assert!(!k, "the import is not installed yet");
    import.finish().await.unwrap();
    during.await.unwrap().unwrap();
    assert_eq!(
        (
            shown(db.get_at(b"k", &snap).await.unwrap()),
            shown(db.get_at(b"w", &snap).await.unwrap())
        ),
        (k, w),
        "a snapshot reads the same after the import lands"
    );
    assert_eq!(db.get(b"k").await.unwrap().unwrap(), "imported");
    assert_eq!(db.get(b"w").await.unwrap().unwrap(), "during");
    drop(snap);
    Arc::into_inner(db).unwrap().close().await.unwrap();
}

/// A bulk import is newer than every write acknowledged before it and older than every write
/// after it, whether those writes sit in memtables, level 0 or deeper, and under writers
/// running through it; and it survives compaction and a crash-like reopen.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_orders_against_writes_before_during_and_after() {
    let h = file_harness();
    let db = Arc::new(h.open().await);
    let key = |i: u32| Bytes::from(format!("k{i:05}"));
    // Older versions everywhere: deep levels, level 0, and the memtable.
    for i in 0..3000 {
        db.put(key(i), "old").await.unwrap();
    }
    db.compact().await.unwrap();
    for i in 0..3000 {
        db.put(key(i), "newer").await.unwrap();
        if (i + 1).is_multiple_of(1000) {
            db.flush().await.unwrap();
        }
    }
    for i in (0..3000).step_by(7) {
        db.put(key(i), "in memtable").await.unwrap();
    }
    let before = db.snapshot();

    // Writers on keys of their own run through the import.
    let writer = {
        let db = db.clone();
        tokio::spawn(async move {
            for i in 0..2000u32 {
                db.put(format!("w{i:05}"), "w").await.unwrap();
            }
        })
    };
    let mut entries: Vec<(Bytes, Bytes)> = (0..3000)
        .rev()
        .map(|i| (key(i), Bytes::from("imported")))
        .collect();
    entries.push((key(5), Bytes::from("imported last")));
    db.import(entries).await.unwrap();
    writer.await.unwrap();
    for i in (0..3000).step_by(11) {
        db.put(key(i), "after").await.unwrap();
    }

    let expect = |i: u32| -> &'static str {
        if i.is_multiple_of(11) {
            "after"
        } else if i == 5 {
            "imported last"
        } else {
            "imported"
        }
    };
    let check = |all: Vec<(Bytes, Bytes)>| {
        let ks: Vec<_> = all.iter().filter(|(k, _)| k.starts_with(b"k")).collect();
        assert_eq!(ks.len(), 3000);
        for (i, (k, v)) in ks.into_iter().enumerate() {
            assert_eq!(k, &key(i as u32));
            assert_eq!(v, expect(i as u32), "key {k:?}");
        }
        assert_eq!(
            all.iter().filter(|(k, _)| k.starts_with(b"w")).count(),
            2000
        );
    };
    for i in [0u32, 5, 7, 11, 14, 2999] {
        assert_eq!(db.get(&key(i)).await.unwrap().unwrap(), expect(i));
    }
    check(scan_all(&db).await);
    assert_eq!(
        db.get_at(&key(7), &before).await.unwrap().unwrap(),
        "in memtable",
        "a snapshot taken before the import does not see it"
    );
    drop(before);
    assert_eq!(db.stats().imports, 1);

    db.compact().await.unwrap();
    check(scan_all(&db).await);
    db.close_without_flush().await.unwrap();
    drop(db);
    let db = h.open().await;
    check(scan_all(&db).await);
    db.put(key(1), "after reopen").await.unwrap();
    assert_eq!(db.get(&key(1)).await.unwrap().unwrap(), "after reopen");
    db.close().await.unwrap();
}

/// A write dropped while its append waits (a caller's timeout, a router cancelling) runs to
/// its end all the same: its append may land, and what the journal holds (and a replica
/// shows) must be what the writer shows. Later writes are seen once it is applied, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_abandoned_midway_still_completes_before_later_writes_are_seen() {
    let h = Harness::new(JournalKind::Memory, MemtableOptions::default());
    let journal = cairn_journal::FaultyJournal::new(h.memory_journal.clone());
    let mut comps = h.components(h.storage());
    comps.journal = journal.clone();
    let db = Arc::new(Db::open(h.path(), h.opts.clone(), comps).await.unwrap());
    db.put("before", "1").await.unwrap();
    journal.hold_next_append();
    let abandoned = tokio::time::timeout(
        std::time::Duration::from_millis(50),
        db.put("abandoned", "x"),
    )
    .await;
    assert!(
        abandoned.is_err(),
        "the append waits, so the caller gives up"
    );
    let after = tokio::spawn({
        let db = db.clone();
        async move { db.put("after", "2").await }
    });
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    assert!(
        !after.is_finished(),
        "a later write is shown only after the earlier one"
    );
    journal.release();
    after.await.unwrap().unwrap();
    assert_eq!(db.get(b"after").await.unwrap().unwrap(), "2");
    assert_eq!(db.get(b"abandoned").await.unwrap().unwrap(), "x");
    assert_eq!(db.get(b"before").await.unwrap().unwrap(), "1");
    db.close().await.unwrap();
}

/// Writers that arrive while an append is in the journal form the next write group: one
/// record for all of them. When a group's append fails, every writer in it is refused, none
/// of it is ever seen, and later writes carry on (their numbers are not held back).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writers_queued_behind_an_append_share_one_record_and_one_fate() {
    let mut h = file_harness();
    // One group at a time, so that holding one append holds every writer after it.
    h.opts.write_groups_in_flight = 1;
    let mut comps = h.components(h.storage());
    let journal = cairn_journal::FaultyJournal::new(comps.journal);
    comps.journal = journal.clone();
    let db = Arc::new(Db::open(h.path(), h.opts.clone(), comps).await.unwrap());
    let put_all = |prefix: &'static str, n: usize| {
        (0..n)
            .map(|i| {
                let db = db.clone();
                tokio::spawn(async move { db.put(format!("{prefix}{i:03}"), "v").await })
            })
            .collect::<Vec<_>>()
    };
    let wait_queued = || tokio::time::sleep(std::time::Duration::from_millis(100));

    let before = journal.appends();
    journal.hold_next_append();
    let leader = put_all("lead", 1);
    wait_queued().await;
    let group = put_all("group", 50);
    wait_queued().await;
    journal.release();
    for w in leader.into_iter().chain(group) {
        w.await.unwrap().unwrap();
    }
    assert_eq!(
        journal.appends() - before,
        2,
        "the leader's record, then one for the 50 writers queued behind it"
    );

    journal.hold_next_append();
    let leader = put_all("held", 1);
    wait_queued().await;
    let failing = put_all("failed", 20);
    wait_queued().await;
    journal.fail_next(1);
    journal.release();
    leader.into_iter().next().unwrap().await.unwrap().unwrap();
    for w in failing {
        let e = w.await.unwrap().unwrap_err();
        assert!(e.to_string().contains("injected failure"), "{e}");
    }
    db.put("after", "v").await.unwrap();
    let expect = |k: &str| !k.starts_with("failed");
    let keys: Vec<Bytes> = scan_all(&db).await.into_iter().map(|(k, _)| k).collect();
    assert_eq!(keys.len(), 53, "1 + 50 + 1 + the one after");
    assert!(keys.iter().all(|k| expect(std::str::from_utf8(k).unwrap())));
    Arc::into_inner(db)
        .unwrap()
        .close_without_flush()
        .await
        .unwrap();

    let db = h.open().await;
    let reopened: Vec<Bytes> = scan_all(&db).await.into_iter().map(|(k, _)| k).collect();
    assert_eq!(
        reopened, keys,
        "the journal holds exactly what was acknowledged"
    );
    db.close().await.unwrap();
}

/// A write whose caller gave up while its journal append was on the way (a timeout, a dropped
/// stream: a journal server finishes appends of clients that left) lands in the journal after
/// a newer write of the same key was flushed. Replay must not put the old value back in front
/// of the new one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_journal_append_does_not_shadow_a_newer_flushed_write() {
    let h = file_harness();
    let mut comps = h.components(h.storage());
    let journal = cairn_journal::FaultyJournal::new(comps.journal);
    comps.journal = journal.clone();
    let db = Db::open(h.path(), h.opts.clone(), comps).await.unwrap();
    journal.set_delay(std::time::Duration::from_millis(300));
    let gave_up =
        tokio::time::timeout(std::time::Duration::from_millis(50), db.put("k", "old")).await;
    assert!(gave_up.is_err(), "the caller gave up first");
    journal.set_delay(std::time::Duration::ZERO);
    db.put("k", "new").await.unwrap();
    db.flush().await.unwrap();
    // The old append lands now, after the flush, with the journal's newest LSN.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert_eq!(db.get(b"k").await.unwrap(), Some(Bytes::from("new")));
    db.close_without_flush().await.unwrap();
    drop(db);

    let db = h.open().await;
    assert_eq!(db.get(b"k").await.unwrap(), Some(Bytes::from("new")));
    assert_eq!(
        scan_all(&db).await,
        vec![(Bytes::from("k"), Bytes::from("new"))]
    );
    db.close().await.unwrap();
}

/// Keys and values at the edges, through the journal, a flush, a compaction and a reopen: the
/// empty key, bytes 0x00 and 0xFF, a key longer than a block, a value at the documented limit.
/// One byte over a limit is refused at the door, and the database carries on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_and_values_at_the_edges_and_over_the_limits() {
    use cairn_common::limits::{MAX_BATCH_BYTES, MAX_KEY_BYTES, MAX_VALUE_BYTES};
    let h = file_harness();
    let db = h.open().await;
    let long_key = vec![0xABu8; MAX_KEY_BYTES];
    let big = Bytes::from(vec![7u8; MAX_VALUE_BYTES]);
    let pairs: Vec<(Bytes, Bytes)> = vec![
        (Bytes::new(), Bytes::from("empty key")),
        (Bytes::from(vec![0u8]), Bytes::new()),
        (Bytes::from(vec![0xFFu8; 3]), Bytes::from(vec![0u8, 0xFF])),
        (Bytes::from(long_key.clone()), Bytes::from("long key")),
        (Bytes::from("big"), big.clone()),
    ];
    for (k, v) in &pairs {
        db.put(k.clone(), v.clone()).await.unwrap();
    }
    let over = [
        db.put(vec![1u8; MAX_KEY_BYTES + 1], "v").await.unwrap_err(),
        db.put("k", vec![1u8; MAX_VALUE_BYTES + 1])
            .await
            .unwrap_err(),
        db.write({
            let mut b = WriteBatch::new();
            for i in 0..=(MAX_BATCH_BYTES / MAX_VALUE_BYTES) {
                b.put(format!("b{i}"), big.clone());
            }
            b
        })
        .await
        .unwrap_err(),
        db.import(vec![(
            "i".into(),
            Bytes::from(vec![1u8; MAX_VALUE_BYTES + 1]),
        )])
        .await
        .unwrap_err(),
    ];
    for e in over {
        assert!(matches!(e, Error::InvalidArgument(_)), "{e}");
        assert!(e.to_string().contains("over the limit"), "{e}");
    }
    let db = check(db, &pairs).await;
    db.close_without_flush().await.unwrap();
    drop(db);
    let db = check(h.open().await, &pairs).await;
    db.flush().await.unwrap();
    db.compact().await.unwrap();
    let db = check(db, &pairs).await;
    db.close().await.unwrap();
    drop(db);
    check(h.open().await, &pairs).await.close().await.unwrap();
}

async fn check(db: Db, pairs: &[(Bytes, Bytes)]) -> Db {
    for (k, v) in pairs {
        let got = db.get(k).await.unwrap();
        assert_eq!(got.as_ref(), Some(v), "key {:?}", &k[..k.len().min(4)]);
    }
    assert_eq!(db.get(b"k").await.unwrap(), None);
    let all = scan_all(&db).await;
    assert_eq!(all.len(), pairs.len());
    assert_eq!(all[0].0, Bytes::new(), "the empty key sorts first");
    db
}

/// A full disk or a failing fsync, at the journal and at the table store (what ENOSPC does to
/// each, through the fault decorators): the writes whose append failed get the error; flushes
/// that fail are retried; after a crash-like reopen every acknowledged write is there and no
/// refused one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_appends_and_flushes_lose_no_acknowledged_write() {
    let h = file_harness();
    let storage = FaultyStorage::new(h.storage());
    let mut comps = h.components(storage.clone());
    let journal = cairn_journal::FaultyJournal::new(comps.journal);
    comps.journal = journal.clone();
    let db = Db::open(h.path(), h.opts.clone(), comps).await.unwrap();
    let mut acked = std::collections::BTreeMap::new();
    let mut refused = Vec::new();
    for i in 0..2000u32 {
        if i % 300 == 7 {
            journal.fail_next(3);
        }
        if i % 500 == 11 {
            storage.fail_next(2);
        }
        let key = format!("k{i:05}");
        match db.put(key.clone(), vec![b'v'; 64]).await {
            Ok(_) => {
                acked.insert(key, ());
            }
            Err(e) => {
                assert!(e.to_string().contains("injected failure"), "{e}");
                refused.push(key);
            }
        }
    }
    assert_eq!(
        refused.len(),
        7 * 3,
        "each injected append failure refused one write"
    );
    assert!(db.stats().flushes > 0);
    db.close_without_flush().await.unwrap();
    drop(db);
    let db = h.open().await;
    for k in acked.keys() {
        assert!(
            db.get(k.as_bytes()).await.unwrap().is_some(),
            "{k} was acknowledged"
        );
    }
    for k in &refused {
        assert_eq!(db.get(k.as_bytes()).await.unwrap(), None, "{k} was refused");
    }
    db.close().await.unwrap();
}

/// Writers, readers, flushes and compactions at once, on tiny memtables and levels. Each
/// writer owns its keys and keeps its own model; while they run, each reader checks that a
/// key never goes back to an older value than one it has seen, and every writer reads its own
/// writes. At the end, and after a crash-like reopen, the database equals the models' union.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_readers_writers_flushes_and_compactions_agree_with_the_model() {
    use std::collections::BTreeMap;
    let h = file_harness();
    let db = Arc::new(h.open().await);
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0..4u32 {
        let db = db.clone();
        writers.push(tokio::spawn(async move {
            let mut model: BTreeMap<String, Option<u32>> = BTreeMap::new();
            let mut rng = w as u64 * 7919 + 1;
            for v in 1..=500u32 {
                rng = rng
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let key = format!("w{w}-k{:03}", (rng >> 33) % 200);
                if v % 9 == 0 {
                    db.delete(key.clone()).await.unwrap();
                    model.insert(key.clone(), None);
                } else {
                    db.put(key.clone(), format!("{v:08}")).await.unwrap();
                    model.insert(key.clone(), Some(v));
                }
                let got = db.get(key.as_bytes()).await.unwrap();
                let want = model[&key].map(|v| Bytes::from(format!("{v:08}")));
                assert_eq!(got, want, "writer {w} reads its own write of {key}");
            }
            model
        }));
    }
    let mut readers = Vec::new();
    for r in 0..2u32 {
        let (db, stop) = (db.clone(), stop.clone());
        readers.push(tokio::spawn(async move {
            // The newest version seen of each key: values only grow per key (a delete is
            // followed by larger values), so a smaller one means an older version came back.
            let mut seen: BTreeMap<Bytes, Bytes> = BTreeMap::new();
            let mut scans = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                for (k, v) in scan_all(&db).await {
                    if let Some(old) = seen.get(&k) {
                        assert!(
                            v >= *old,
                            "reader {r}: {k:?} went back from {old:?} to {v:?}"
                        );
                    }
                    seen.insert(k, v);
                }
                scans += 1;
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
            scans
        }));
    }
    let background = {
        let (db, stop) = (db.clone(), stop.clone());
        tokio::spawn(async move {
            let mut rounds = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                db.flush().await.unwrap();
                db.compact().await.unwrap();
                rounds += 1;
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
            rounds
        })
    };
    let mut model = BTreeMap::new();
    for w in writers {
        model.extend(w.await.unwrap());
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for r in readers {
        assert!(r.await.unwrap() > 0);
    }
    assert!(background.await.unwrap() > 0);
    let want: Vec<(Bytes, Bytes)> = model
        .iter()
        .filter_map(|(k, v)| v.map(|v| (Bytes::from(k.clone()), Bytes::from(format!("{v:08}")))))
        .collect();
    assert_eq!(scan_all(&db).await, want);
    db.close_without_flush().await.unwrap();
    drop(db);
    let db = h.open().await;
    assert_eq!(scan_all(&db).await, want);
    db.close().await.unwrap();
}

/// An import holds the compaction lock while it is open. Closing meanwhile must not wait for
/// it: the compaction loop, parked on that lock with a job picked, still hears the shutdown.
/// The import then fails as closed, leaving nothing installed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_does_not_wait_for_an_open_import() {
    let h = file_harness();
    let db = h.open().await;
    let mut import = db.begin_import().await.unwrap();
    // Enough level-0 tables for the compaction loop to pick a job and wait for the lock.
    for round in 0..4 {
        for i in 0..50 {
            db.put(format!("k{round}-{i:03}"), "v").await.unwrap();
        }
        db.flush().await.unwrap();
    }
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    tokio::time::timeout(std::time::Duration::from_secs(20), db.close())
        .await
        .expect("close returned while an import was open")
        .unwrap();
    import
        .add(vec![(Bytes::from("i"), Bytes::from("v"))])
        .await
        .ok();
    assert!(import.finish().await.is_err(), "the database is closed");
}
