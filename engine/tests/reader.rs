//! Read replicas (`Db::open_reader`): a reader follows its writer's manifest and journal,
//! serves reads at its own snapshots, and changes nothing.

mod support;

use bytes::Bytes;
use cairn_common::{KeyRange, ValueType};
use cairn_memtable::MemtableOptions;
use std::time::Duration;
use support::{Harness, JournalKind, StorageKind};

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

/// A range delete reaches a reader from the journal (its tombstone beside the reader's
/// memtable), then from the table the writer flushes, then through a compaction that drops
/// what it covers.
/// A reader follows its writer's journal as records land, not on its poll: with an hour
/// between manifest reads, it still sees each write, and through flushes (whose truncations
/// it notices from the journal, then reads the manifest) and a compaction.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_sees_writes_as_they_land_without_waiting_for_its_poll() {
    let mut h = Harness::new(JournalKind::Memory, MemtableOptions::default());
    h.opts.reader_poll_ms = 3_600_000;
    // Reads never find the view too old, so only the journal's wake-ups move it.
    h.opts.reader_max_staleness_ms = 7_200_000;
    let writer = h.open().await;
    writer.put("a", "1").await.unwrap();
    let reader = h.open_reader("reader").await;
    assert_eq!(reader.get(b"a").await.unwrap().as_deref(), Some(&b"1"[..]));
    writer.put("b", "2").await.unwrap();
    eventually(&reader, "b", Some("2")).await;
    for round in 0..3 {
        for i in 0..700 {
            writer
                .put(format!("k{i:04}"), format!("{round}{}", "x".repeat(40)))
                .await
                .unwrap();
        }
        writer.flush().await.unwrap();
        writer.put("c", round.to_string()).await.unwrap();
        eventually(&reader, "c", Some(&round.to_string())).await;
        eventually(
            &reader,
            "k0699",
            Some(&format!("{round}{}", "x".repeat(40))),
        )
        .await;
    }
    writer.compact().await.unwrap();
    writer.delete("a").await.unwrap();
    eventually(&reader, "a", None).await;
    assert_eq!(
        reader.get(b"k0000").await.unwrap().map(|v| v[0]),
        Some(b'2')
    );
    reader.close().await.unwrap();
    writer.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_sees_range_deletes_from_the_journal_the_tables_and_compactions() {
    let h = Harness::new(JournalKind::Memory, MemtableOptions::default());
    let writer = h.open().await;
    for i in 0..100 {
        writer.put(format!("k{i:03}"), "v").await.unwrap();
    }
    writer.flush().await.unwrap();
    let reader = h.open_reader("reader").await;
    eventually(&reader, "k050", Some("v")).await;
    writer.delete_range("k010", "k060").await.unwrap();
    writer.put("k020", "again").await.unwrap();
    eventually(&reader, "k050", None).await;
    assert_eq!(
        reader.get(b"k020").await.unwrap().as_deref(),
        Some(&b"again"[..])
    );
    assert_eq!(live(&reader).await, 51);
    writer.flush().await.unwrap();
    writer.delete_range("k000", "k005").await.unwrap();
    eventually(&reader, "k004", None).await;
    assert_eq!(live(&reader).await, 46);
    writer.compact().await.unwrap();
    writer.put("z", "after").await.unwrap();
    eventually(&reader, "z", Some("after")).await;
    assert_eq!(live(&reader).await, 47);
    assert_eq!(
        reader.get(b"k009").await.unwrap().as_deref(),
        Some(&b"v"[..])
    );
    assert_eq!(reader.get(b"k059").await.unwrap(), None);
    reader.close().await.unwrap();
    writer.close().await.unwrap();
}

/// How many live keys `db` holds, by a scan and by an aggregate, which must agree.
async fn live(db: &cairn_engine::Db) -> u64 {
    let n = db
        .aggregate(KeyRange::all(), ValueType::I64)
        .await
        .unwrap()
        .rows;
    let scanned = db
        .scan(KeyRange::all())
        .await
        .unwrap()
        .collect(None)
        .await
        .unwrap();
    assert_eq!(scanned.len() as u64, n, "scan and aggregate agree");
    n
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

/// A journal whose next replay, once armed, stops after its first record until resumed, and
/// then reads on from what the journal holds by then: as an object journal's replay does when
/// the writer truncates the objects it had still to read.
struct PausingReplay {
    inner: std::sync::Arc<dyn cairn_journal::Journal>,
    armed: std::sync::atomic::AtomicBool,
    paused: tokio::sync::Notify,
    resume: std::sync::Arc<tokio::sync::Notify>,
}

#[async_trait::async_trait]
impl cairn_journal::Journal for PausingReplay {
    fn reach(&self) -> cairn_journal::Reach {
        self.inner.reach()
    }
    async fn claim(
        &self,
        claim: &cairn_journal::JournalClaim,
    ) -> cairn_common::Result<cairn_journal::Claimed> {
        self.inner.claim(claim).await
    }

    async fn append(&self, epoch: u64, record: Bytes) -> cairn_common::Result<u64> {
        self.inner.append(epoch, record).await
    }

    async fn replay(
        &self,
        from: u64,
    ) -> cairn_common::Result<
        cairn_common::BoxStream<cairn_common::Result<cairn_journal::JournalRecord>>,
    > {
        use futures::StreamExt;
        let mut records = self.inner.replay(from).await?;
        if !self.armed.swap(false, std::sync::atomic::Ordering::SeqCst) {
            return Ok(records);
        }
        let Some(first) = records.next().await else {
            return Ok(records);
        };
        let first = first?;
        let (inner, resume) = (self.inner.clone(), self.resume.clone());
        let next = first.lsn + 1;
        self.paused.notify_one();
        let rest = futures::stream::once(async move {
            resume.notified().await;
            inner.replay(next).await
        })
        .filter_map(|r| async move { r.ok() })
        .flatten();
        Ok(Box::pin(futures::stream::iter([Ok(first)]).chain(rest)))
    }

    async fn truncate(&self, upto: u64) -> cairn_common::Result<()> {
        self.inner.truncate(upto).await
    }

    async fn close(&self) -> cairn_common::Result<()> {
        self.inner.close().await
    }
}

/// A reader catching up with a new manifest version whose replay of the journal loses its
/// tail to the writer's truncation (a flush installed meanwhile) must not publish that view:
/// it would lack writes acknowledged before the poll began, while claiming to be caught up
/// (seen in the serverless model test as a snapshot missing a batch it claimed to hold).
/// Here the replay stops after "d", the writer flushes "d" and "e" and truncates, and the
/// view would show "d" without "e".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_cut_short_by_a_truncation_is_not_published() {
    let mut h = Harness::new(JournalKind::Memory, MemtableOptions::default());
    // Slow polls, so the steps below fall between two of them even on a loaded machine (a
    // poll between "d" and "e" would rightly show "d" alone).
    h.opts.reader_poll_ms = 2_000;
    let writer = h.open().await;
    writer.put("a", "1").await.unwrap();
    writer.flush().await.unwrap();
    writer.put("b", "2").await.unwrap();

    let journal = std::sync::Arc::new(PausingReplay {
        inner: h.memory_journal.clone(),
        armed: Default::default(),
        paused: tokio::sync::Notify::new(),
        resume: Default::default(),
    });
    let mut comps = h.components(h.storage());
    comps.journal = journal.clone();
    let reader = cairn_engine::Db::open_reader(h.path().join("reader"), h.opts.clone(), comps)
        .await
        .unwrap();
    assert_eq!(reader.get(b"b").await.unwrap().as_deref(), Some(&b"2"[..]));

    // Right after a poll: a flush (new tables, so the next poll reads the manifest and
    // replays the journal past it), then two writes, both acknowledged before that poll.
    let polls = reader.stats().reader.unwrap().polls;
    while reader.stats().reader.unwrap().polls == polls {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    writer.flush().await.unwrap();
    writer.put("d", "4").await.unwrap();
    writer.put("e", "5").await.unwrap();
    journal
        .armed
        .store(true, std::sync::atomic::Ordering::SeqCst);
    journal.paused.notified().await;
    // Meanwhile the writer flushes "d" and "e" and truncates the journal under them.
    writer.flush().await.unwrap();
    journal.resume.notify_one();

    for _ in 0..400 {
        let snap = reader.snapshot();
        let d = reader.get_at(b"d", &snap).await.unwrap();
        let e = reader.get_at(b"e", &snap).await.unwrap();
        assert!(
            d.is_none() || e.is_some(),
            "a view that shows d lacks e, acknowledged before its poll began"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    eventually(&reader, "e", Some("5")).await;
    reader.close().await.unwrap();
    writer.close().await.unwrap();
}

/// A reader's snapshot keeps reading the tables it was taken over while its writer compacts
/// them away, stops, and a new writer takes over: tables leave storage only after the grace
/// period, whichever writer deletes them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshots_tables_outlive_a_compaction_and_a_take_over() {
    // Parquet: a table is read by its path each time (an open SSTable's file descriptor
    // would outlive its deletion).
    let mut h = Harness::new(JournalKind::Memory, MemtableOptions::default())
        .with_storage(StorageKind::Parquet);
    h.opts.table_grace_ms = 60_000;
    let writer = h.open().await;
    for round in 0..3 {
        for i in 0..300 {
            writer
                .put(format!("k{i:03}"), format!("{round}-{}", "x".repeat(50)))
                .await
                .unwrap();
        }
        writer.flush().await.unwrap();
    }
    let reader = h.open_reader("reader").await;
    let snapshot = reader.snapshot();

    writer.compact().await.unwrap();
    writer.close_without_flush().await.unwrap();
    let writer = h.take_over().await;
    writer.put("after", "x").await.unwrap();
    writer.compact().await.unwrap();

    let seen = reader
        .scan_at(KeyRange::all(), &snapshot)
        .await
        .unwrap()
        .collect(None)
        .await
        .expect("the snapshot's tables are still there");
    assert_eq!(seen.len(), 300);
    assert!(seen.iter().all(|(_, v)| v.starts_with(b"2-")));
    drop(snapshot);
    reader.close().await.unwrap();
    writer.close().await.unwrap();
}

/// The writer numbers batch A before batch B, but B reaches the journal first. The writer
/// shows neither until both are applied; a replica must not show B without A, and a
/// snapshot it gave out must read the same after A lands.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_shows_no_batch_before_an_earlier_one() {
    let h = Harness::new(JournalKind::Memory, MemtableOptions::default());
    let journal = cairn_journal::FaultyJournal::new(h.memory_journal.clone());
    let mut comps = h.components(h.storage());
    comps.journal = journal.clone();
    let writer = std::sync::Arc::new(
        cairn_engine::Db::open(h.path(), h.opts.clone(), comps)
            .await
            .unwrap(),
    );
    writer.put("before", "0").await.unwrap();
    let reader = h.open_reader("reader").await;
    eventually(&reader, "before", Some("0")).await;

    journal.hold_next_append();
    let a = tokio::spawn({
        let w = writer.clone();
        async move { w.put("hold", "a").await }
    });
    tokio::time::sleep(Duration::from_millis(20)).await;
    let b = tokio::spawn({
        let w = writer.clone();
        async move { w.put("b", "b").await }
    });
    // B is in the journal; the reader polls every few milliseconds.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!b.is_finished(), "the writer shows B only after A");
    assert_eq!(reader.get(b"b").await.unwrap(), None, "B without A");
    let snap = reader.snapshot();

    journal.release();
    a.await.unwrap().unwrap();
    b.await.unwrap().unwrap();
    eventually(&reader, "b", Some("b")).await;
    assert_eq!(
        reader.get(b"hold").await.unwrap().as_deref(),
        Some(&b"a"[..])
    );
    assert_eq!(
        reader.get_at(b"hold", &snap).await.unwrap(),
        None,
        "a snapshot reads the same after it was taken"
    );
    reader.close().await.unwrap();
    writer.close().await.unwrap();
}

/// A reader whose polls fail keeps its last view only up to `reader_max_staleness_ms`; then
/// its reads are refused, naming how far behind it is and why, and they are served again
/// once it catches up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_that_cannot_follow_refuses_reads_past_its_staleness_bound() {
    let mut h = Harness::new(JournalKind::Memory, MemtableOptions::default());
    h.opts.reader_max_staleness_ms = 200;
    let writer = h.open().await;
    writer.put("a", "1").await.unwrap();
    let storage = cairn_filestore::FaultyStorage::new(h.storage());
    let reader = cairn_engine::Db::open_reader(
        h.path().join("reader"),
        h.opts.clone(),
        h.components(storage.clone()),
    )
    .await
    .unwrap();
    assert_eq!(reader.get(b"a").await.unwrap().as_deref(), Some(&b"1"[..]));

    storage.set_manifest_outage(true);
    tokio::time::sleep(Duration::from_millis(400)).await;
    let e = reader.get(b"a").await.unwrap_err();
    let text = e.to_string();
    assert!(
        text.contains("behind") && text.contains("injected outage"),
        "{text}"
    );
    assert!(reader.scan(KeyRange::all()).await.is_err());

    storage.set_manifest_outage(false);
    writer.put("b", "2").await.unwrap();
    eventually(&reader, "b", Some("2")).await;
    reader.close().await.unwrap();
    writer.close().await.unwrap();
}

/// A writer that writes a manifest version during every catch-up of a reader's (here a
/// lease renewed every few milliseconds, which changes no table) must not keep the reader
/// from opening: only a newer flush can have truncated what a replay had to read. Before,
/// every newer version counted as a race, retried at once and for ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_opens_beside_a_writer_that_renews_its_lease_constantly() {
    let mut h = Harness::new(JournalKind::Memory, MemtableOptions::default());
    h.opts.lease_ms = 8;
    let writer = h.open().await;
    writer.flush().await.unwrap();
    let mut comps = h.components(h.storage());
    let journal = cairn_journal::FaultyJournal::new(h.memory_journal.clone());
    journal.set_replay_delay(Duration::from_millis(30));
    comps.journal = journal;
    let reader = tokio::time::timeout(
        Duration::from_secs(20),
        cairn_engine::Db::open_reader(h.path().join("reader"), h.opts.clone(), comps),
    )
    .await
    .expect("the reader opened")
    .unwrap();
    let before = reader.stats().manifest_version;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        reader.stats().manifest_version > before,
        "it follows the renewals"
    );
    reader.close().await.unwrap();
    writer.close().await.unwrap();
}

/// A reader whose journal is not its writer's (the writer's file journal is on another node;
/// `cairn --read-only` then gives it an empty one) sees flushes only. Its polls all succeed,
/// but it must not claim to be a poll behind: it says it follows flushes only, and its age
/// runs from the last flush it saw (issue 28, item 2).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_without_its_writers_journal_says_it_follows_flushes_only() {
    let h = Harness::new(JournalKind::Memory, MemtableOptions::default());
    let writer = h.open().await;
    writer.put("flushed", "1").await.unwrap();
    writer.flush().await.unwrap();
    let mut comps = h.components(h.storage());
    comps.journal = std::sync::Arc::new(cairn_journal::MemoryJournal::new());
    let reader = cairn_engine::Db::open_reader(h.path().join("reader"), h.opts.clone(), comps)
        .await
        .unwrap();
    assert!(reader.stats().reader.unwrap().follows_flushes_only);
    writer.put("unflushed", "2").await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(reader.get(b"unflushed").await.unwrap(), None);
    let r = reader.stats().reader.unwrap();
    assert!(
        r.staleness_ms >= 300,
        "polls that cannot see the journal do not make it fresh: {r:?}"
    );
    writer.flush().await.unwrap();
    eventually(&reader, "unflushed", Some("2")).await;
    reader.close().await.unwrap();

    // Its writer's own journal: it follows that, and says so.
    let reader = h.open_reader("reader-2").await;
    assert!(!reader.stats().reader.unwrap().follows_flushes_only);
    reader.close().await.unwrap();
    writer.close().await.unwrap();
}
