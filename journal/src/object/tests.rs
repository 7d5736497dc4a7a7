use super::faulty_store::FaultyStore;
use super::*;
use crate::conformance;
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;

fn journal_on(store: Arc<dyn ObjectStore>, url: &str) -> ObjectJournal {
    ObjectJournal::new(
        store,
        Path::from("db"),
        url,
        None,
        ObjectJournalOptions::default(),
    )
    .unwrap()
}

fn claim(epoch: u64, flushed_lsn: Lsn) -> JournalClaim {
    JournalClaim {
        database: "db1".into(),
        epoch,
        flushed_lsn,
    }
}

async fn records(j: &ObjectJournal, from: Lsn) -> Vec<(Lsn, Bytes)> {
    j.replay(from)
        .await
        .unwrap()
        .map_ok(|r| (r.lsn, r.payload))
        .try_collect()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_in_memory() {
    let j = journal_on(Arc::new(InMemory::new()), "memory://conformance");
    conformance::run(Arc::new(j)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_on_local_files() {
    let dir = tempfile::tempdir().unwrap();
    let store = LocalFileSystem::new_with_prefix(dir.path()).unwrap();
    let j = ObjectJournal::new(
        Arc::new(store),
        Path::from("db"),
        format!("file://{}", dir.path().display()),
        Some(dir.path().to_path_buf()),
        ObjectJournalOptions::default(),
    )
    .unwrap();
    conformance::run(Arc::new(j)).await;
}

fn s3_store(s3: &cairn_testkit::S3Endpoint) -> Arc<dyn ObjectStore> {
    Arc::new(
        object_store::aws::AmazonS3Builder::new()
            .with_endpoint(&s3.endpoint)
            .with_bucket_name(&s3.bucket)
            .with_access_key_id(&s3.access_key_id)
            .with_secret_access_key(&s3.secret_access_key)
            .with_region(&s3.region)
            .with_allow_http(true)
            .with_retry(object_store::RetryConfig {
                max_retries: 0,
                ..Default::default()
            })
            .build()
            .unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_on_s3() {
    let s3 = cairn_testkit::S3Endpoint::start();
    let j = ObjectJournal::new(
        s3_store(&s3),
        Path::from(format!("{}/journal", s3.prefix)),
        s3.url("journal"),
        None,
        ObjectJournalOptions::default(),
    )
    .unwrap();
    conformance::run(Arc::new(j)).await;
}

/// Two writers on one store, as two nodes would be: the newer claim fences the older one at
/// its next commit, and the newer one replays everything the older one acknowledged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newer_writer_fences_an_older_one_through_the_store() {
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let a = journal_on(store.clone(), "memory://shared");
    a.claim(&claim(1, 0)).await.unwrap();
    let mut acked = Vec::new();
    for i in 0..10 {
        acked.push(a.append(1, Bytes::from(format!("a{i}"))).await.unwrap());
    }

    let b = journal_on(store.clone(), "memory://shared");
    let claimed = b.claim(&claim(2, 0)).await.unwrap();
    assert_eq!(claimed.last_lsn, *acked.last().unwrap());
    let replayed: Vec<Lsn> = records(&b, 0).await.iter().map(|r| r.0).collect();
    assert_eq!(replayed, acked, "every acknowledged record replays");

    let e = a.append(1, Bytes::from_static(b"late")).await.unwrap_err();
    assert!(e.is_fenced() && e.to_string().contains("epoch 2"), "{e}");
    let e = a.append(1, Bytes::from_static(b"later")).await.unwrap_err();
    assert!(e.is_fenced(), "stays fenced: {e}");
    let lsn = b.append(2, Bytes::from_static(b"b")).await.unwrap();
    assert!(lsn > *acked.last().unwrap());
    assert!(
        !records(&b, 0)
            .await
            .iter()
            .any(|r| r.1.starts_with(b"late")),
        "nothing of the fenced writer after the claim"
    );
    // The claim is refused to an older epoch and to another database.
    let c = journal_on(store.clone(), "memory://shared");
    assert!(c.claim(&claim(1, 0)).await.unwrap_err().is_fenced());
    let other = JournalClaim {
        database: "db2".into(),
        epoch: 5,
        flushed_lsn: 0,
    };
    let e = c.claim(&other).await.unwrap_err().to_string();
    assert!(e.contains("db1") && e.contains("db2"), "{e}");
}

/// A writer paused while a newer one claims, writes, flushes and truncates is still refused
/// when it wakes: the claim object is kept however much is truncated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_writer_paused_across_truncation_is_still_fenced() {
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let a = journal_on(store.clone(), "memory://paused");
    a.claim(&claim(1, 0)).await.unwrap();
    a.append(1, Bytes::from_static(b"a")).await.unwrap();

    let b = journal_on(store.clone(), "memory://paused");
    b.claim(&claim(2, 0)).await.unwrap();
    let mut last = 0;
    for i in 0..40 {
        last = b.append(2, Bytes::from(format!("b{i}"))).await.unwrap();
    }
    b.truncate(last).await.unwrap();
    // Left: the two claims, B's fills of A's window, and the newest objects.
    let left: Vec<_> = store.list(None).try_collect().await.unwrap();
    let fills = ObjectJournalOptions::default().commits_in_flight - 1;
    assert!(
        left.len() <= 2 + fills + NEWEST as usize,
        "flushed records are deleted: {left:?}"
    );

    let e = a.append(1, Bytes::from_static(b"woke")).await.unwrap_err();
    assert!(e.is_fenced(), "{e}");
    assert!(
        records(&b, last + 1).await.is_empty(),
        "nothing past the flush"
    );
    assert!(
        !records(&b, 0)
            .await
            .iter()
            .any(|r| r.1 == Bytes::from_static(b"woke")),
        "nothing of the paused writer"
    );
    let next = b.append(2, Bytes::from_static(b"next")).await.unwrap();
    assert_eq!(next, last + 1);
}

/// Truncation deletes whole objects at or below the flushed LSN (but the newest 16), never
/// later records, and a reopened journal numbers on from where it ended.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncation_and_reopen_keep_the_numbering() {
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let j = journal_on(store.clone(), "memory://reopen");
    j.claim(&claim(1, 0)).await.unwrap();
    let mut lsns = Vec::new();
    for i in 0..40 {
        lsns.push(j.append(1, Bytes::from(format!("r{i}"))).await.unwrap());
    }
    j.truncate(lsns[9]).await.unwrap();
    let kept: Vec<Lsn> = records(&j, 0).await.iter().map(|r| r.0).collect();
    assert_eq!(kept, lsns[10..].to_vec());
    j.close().await.unwrap();
    assert!(matches!(
        j.append(1, Bytes::from_static(b"x")).await,
        Err(Error::Closed)
    ));

    let reopened = journal_on(store, "memory://reopen");
    let c = reopened.claim(&claim(2, lsns[9])).await.unwrap();
    assert_eq!(c.last_lsn, lsns[39]);
    let replayed: Vec<Lsn> = records(&reopened, lsns[10])
        .await
        .iter()
        .map(|r| r.0)
        .collect();
    assert_eq!(replayed, lsns[10..].to_vec());
    assert_eq!(
        reopened.append(2, Bytes::new()).await.unwrap(),
        lsns[39] + 1
    );
}

/// A corrupt object is an error on replay, naming it, never skipped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_object_is_detected() {
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let j = journal_on(store.clone(), "memory://corrupt");
    j.claim(&claim(1, 0)).await.unwrap();
    j.append(1, Bytes::from_static(b"payload")).await.unwrap();
    let path = Path::from("db/wal").join(object_name(1));
    let mut data = store
        .get(&path)
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap()
        .to_vec();
    let at = data.len() - 6;
    data[at] ^= 0xff;
    store.put(&path, PutPayload::from(data)).await.unwrap();
    let e = j
        .replay(0)
        .await
        .unwrap()
        .try_collect::<Vec<_>>()
        .await
        .unwrap_err();
    assert!(
        e.is_corruption() && e.to_string().contains("00000000000000000001"),
        "{e}"
    );
}

/// A commit whose object landed though the store said it failed is retried into the same
/// object: found to be this writer's own, its records are kept (once) and the next commit
/// goes on after them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_whose_answer_was_lost_is_found_and_kept_once() {
    let store = Arc::new(FaultyStore::default());
    let j = journal_on(store.clone(), "memory://lost");
    j.claim(&claim(1, 0)).await.unwrap();
    let first = j.append(1, Bytes::from_static(b"one")).await.unwrap();
    store.fail.store(1, Ordering::SeqCst);
    let second = j.append(1, Bytes::from_static(b"two")).await.unwrap();
    assert_eq!(
        second,
        first + 1,
        "'two' is where its landed attempt put it"
    );
    let third = j.append(1, Bytes::from_static(b"three")).await.unwrap();
    assert_eq!(third, first + 2);
    let got = records(&j, 0).await;
    assert_eq!(
        got,
        vec![
            (first, Bytes::from_static(b"one")),
            (first + 1, Bytes::from_static(b"two")),
            (first + 2, Bytes::from_static(b"three")),
        ],
        "the retried commit found its first attempt and kept it, once"
    );
}

/// Writer A's object lands but every answer is lost, so A gives up with the object in
/// doubt. B claims after it, writes, and truncation deletes it. A's next commit must not
/// create that object again: its records would sit below B's claim with LSNs that overlap
/// B's, where a replay from the start or a replica would apply them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fenced_writer_does_not_recreate_a_truncated_object() {
    let store = Arc::new(FaultyStore::default());
    let opts = ObjectJournalOptions {
        retry_for: std::time::Duration::from_millis(200),
        ..ObjectJournalOptions::default()
    };
    let open = |store: Arc<dyn ObjectStore>| {
        ObjectJournal::new(
            store,
            Path::from("db"),
            "memory://doubt",
            None,
            opts.clone(),
        )
        .unwrap()
    };
    let a = open(store.clone());
    a.claim(&claim(1, 0)).await.unwrap();
    a.append(1, Bytes::from_static(b"a0")).await.unwrap();
    store.failing.store(true, Ordering::SeqCst);
    assert!(a.append(1, Bytes::from_static(b"a1")).await.is_err());
    store.failing.store(false, Ordering::SeqCst);

    let b = open(store.clone());
    b.claim(&claim(2, 0)).await.unwrap();
    let mut last = 0;
    for i in 0..3 {
        last = b.append(2, Bytes::from(format!("b{i}"))).await.unwrap();
    }
    b.truncate(last).await.unwrap();

    let e = a
        .append(1, Bytes::from_static(b"refused"))
        .await
        .unwrap_err();
    assert!(e.is_fenced(), "{e}");
    let left = records(&b, 0).await;
    assert!(
        !left.iter().any(|r| r.1 == Bytes::from_static(b"refused")),
        "the fenced writer's records are nowhere: {left:?}"
    );
    let next = b.append(2, Bytes::from_static(b"b3")).await.unwrap();
    assert_eq!(next, last + 1);
    assert_eq!(
        records(&b, 0).await.last(),
        Some(&(next, Bytes::from_static(b"b3")))
    );
}

/// An unreachable store is retried for `retry_for`, then the writers get an error naming
/// it; once it is back, appends go on and nothing acknowledged is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_outage_is_an_error_naming_it_then_appends_resume() {
    let s3 = cairn_testkit::S3Endpoint::start();
    let url = s3.url("outage");
    let j = ObjectJournal::new(
        s3_store(&s3),
        Path::from(format!("{}/outage", s3.prefix)),
        url.clone(),
        None,
        ObjectJournalOptions {
            retry_for: Duration::from_millis(500),
            ..ObjectJournalOptions::default()
        },
    )
    .unwrap();
    j.claim(&claim(1, 0)).await.unwrap();
    let before = j.append(1, Bytes::from_static(b"before")).await.unwrap();
    assert!(s3.set_down(true));
    let e = j
        .append(1, Bytes::from_static(b"during"))
        .await
        .unwrap_err();
    assert!(e.to_string().contains(&url), "names the store: {e}");
    s3.set_down(false);
    let after = j.append(1, Bytes::from_static(b"after")).await.unwrap();
    assert!(after > before);
    let got: Vec<Bytes> = records(&j, 0).await.into_iter().map(|r| r.1).collect();
    assert_eq!(got.first(), Some(&Bytes::from_static(b"before")));
    assert_eq!(got.last(), Some(&Bytes::from_static(b"after")));
}

/// A replay of the tail finds where to start from the objects' headers (a binary search),
/// so a reader polling a long journal does not read it all each time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_of_the_tail_reads_few_objects() {
    let store = Arc::new(FaultyStore::default());
    let j = journal_on(store.clone(), "memory://tail");
    j.claim(&claim(1, 0)).await.unwrap();
    let mut lsns = Vec::new();
    for i in 0..256 {
        lsns.push(j.append(1, Bytes::from(format!("r{i}"))).await.unwrap());
    }
    // A reader's journal: nothing known yet.
    let reader = journal_on(store.clone(), "memory://tail");
    store.gets.store(0, Ordering::SeqCst);
    let tail: Vec<Lsn> = records(&reader, lsns[250])
        .await
        .iter()
        .map(|r| r.0)
        .collect();
    assert_eq!(tail, lsns[250..].to_vec());
    let gets = store.gets.load(Ordering::SeqCst);
    assert!(gets < 30, "{gets} reads for 6 records of 257 objects");
    // The next poll reads on by number from the objects it has seen: no listing, and one
    // batch of read-ahead.
    for i in 0..10 {
        lsns.push(j.append(1, Bytes::from(format!("s{i}"))).await.unwrap());
    }
    store.gets.store(0, Ordering::SeqCst);
    let next: Vec<Lsn> = records(&reader, lsns[255] + 1)
        .await
        .iter()
        .map(|r| r.0)
        .collect();
    assert_eq!(next, lsns[256..].to_vec());
    let gets = store.gets.load(Ordering::SeqCst);
    assert!(gets <= 17, "{gets} reads for the 10 new objects");
    // Everything, from the start, still comes back.
    let all: Vec<Lsn> = records(&reader, 0).await.iter().map(|r| r.0).collect();
    assert_eq!(all, lsns);
}

/// A replica waiting for records past its last one asks for the next object by number and
/// wakes when the writer's commit lands there; the replay that follows does not read that
/// object again, and reads ahead of it only a little.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_waiting_for_records_finds_the_next_commit_and_reads_it_once() {
    let store = Arc::new(FaultyStore::default());
    let j = journal_on(store.clone(), "memory://waits");
    j.claim(&claim(1, 0)).await.unwrap();
    let mut lsns = Vec::new();
    for i in 0..5 {
        lsns.push(j.append(1, Bytes::from(format!("r{i}"))).await.unwrap());
    }
    let reader = Arc::new(journal_on(store.clone(), "memory://waits"));
    assert_eq!(records(&reader, 0).await.len(), 5);
    let last = *lsns.last().unwrap();
    let waiter = {
        let reader = reader.clone();
        tokio::spawn(async move { reader.wait_past(last, Duration::from_secs(600)).await })
    };
    tokio::time::sleep(Duration::from_millis(30)).await;
    assert!(!waiter.is_finished(), "nothing past {last} yet");
    let next = j.append(1, Bytes::from_static(b"next")).await.unwrap();
    tokio::time::timeout(Duration::from_secs(30), waiter)
        .await
        .expect("the commit wakes the replica")
        .unwrap()
        .unwrap();
    store.gets.store(0, Ordering::SeqCst);
    let tail = records(&reader, last + 1).await;
    assert_eq!(tail, vec![(next, Bytes::from_static(b"next"))]);
    let gets = store.gets.load(Ordering::SeqCst);
    assert!(
        gets <= 2,
        "{gets} reads: the object found is not read again, and two ahead of it are asked for"
    );
    // Nothing new: the wait ends at its limit.
    reader
        .wait_past(next, Duration::from_millis(20))
        .await
        .unwrap();
}

/// Appends `payload` in a task of its own and waits until its commit's put is held at the
/// store (`held` puts waiting in all), so that the next append goes in the next commit.
async fn append_held(
    j: &Arc<ObjectJournal>,
    store: &FaultyStore,
    epoch: u64,
    payload: &'static str,
    held: u64,
) -> tokio::task::JoinHandle<Result<Lsn>> {
    let task = {
        let j = j.clone();
        tokio::spawn(async move {
            j.append(epoch, Bytes::from_static(payload.as_bytes()))
                .await
        })
    };
    store.until_waiting(held).await;
    task
}

/// Commits overlap: a later one lands while an earlier one is still being written. It is
/// acknowledged only after the earlier one, and a replay (a replica's) stops at the gap
/// rather than replay a record before an earlier one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlapping_commits_are_acknowledged_and_replayed_in_order() {
    let store = Arc::new(FaultyStore::default());
    let j = Arc::new(journal_on(store.clone(), "memory://overlap"));
    j.claim(&claim(1, 0)).await.unwrap();
    let before = j.append(1, Bytes::from_static(b"before")).await.unwrap();

    store.hold(2);
    let a = append_held(&j, &store, 1, "a", 1).await;
    let b = {
        let j = j.clone();
        tokio::spawn(async move { j.append(1, Bytes::from_static(b"b")).await })
    };
    while !store.has(3).await {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(
        !b.is_finished(),
        "b's object landed, but a's, before it, has not: b waits"
    );

    // A replica sees the records before the gap, and nothing after it, by listing or by
    // reading on from an object it knows.
    let replica = journal_on(store.clone(), "memory://overlap");
    let seen: Vec<Lsn> = records(&replica, 0).await.iter().map(|r| r.0).collect();
    assert_eq!(seen, vec![before]);
    assert!(records(&replica, before + 1).await.is_empty());
    assert!(records(&replica, 0).await.len() == 1);

    store.release(2);
    let (a, b) = (a.await.unwrap().unwrap(), b.await.unwrap().unwrap());
    assert_eq!((a, b), (before + 1, before + 2));
    let all = records(&replica, before + 1).await;
    assert_eq!(
        all,
        vec![(a, Bytes::from_static(b"a")), (b, Bytes::from_static(b"b"))]
    );
}

/// Writer A has three commits in flight when B claims: the first and third still being
/// written, the second landed. B's claim fills the numbers A may still land in, so A's
/// late puts are refused and nothing A acknowledged is missing from B's replay; A learns
/// it was replaced. The second commit's writer is not told it failed for certain: B may
/// replay it (and does).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_fences_commits_still_in_flight() {
    let store = Arc::new(FaultyStore::default());
    let a = Arc::new(journal_on(store.clone(), "memory://inflight"));
    a.claim(&claim(1, 0)).await.unwrap();
    let acked = a.append(1, Bytes::from_static(b"acked")).await.unwrap();
    store.hold(2);
    store.hold(3);
    store.hold(4);
    let a1 = append_held(&a, &store, 1, "a1", 1).await;
    let a2 = append_held(&a, &store, 1, "a2", 2).await;
    let a3 = append_held(&a, &store, 1, "a3", 3).await;
    store.release(3);
    while !store.has(3).await {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }

    let b = journal_on(store.clone(), "memory://inflight");
    let claimed = b.claim(&claim(2, 0)).await.unwrap();
    assert!(claimed.last_lsn >= acked);
    store.release(2);
    store.release(4);
    let e1 = a1.await.unwrap().unwrap_err();
    assert!(e1.is_fenced() && e1.to_string().contains("epoch 2"), "{e1}");
    let e2 = a2.await.unwrap().unwrap_err();
    assert!(
        !e2.is_fenced() && e2.to_string().contains("unknown"),
        "{e2}"
    );
    assert!(a3.await.unwrap().is_err());
    assert!(
        a.append(1, Bytes::from_static(b"late"))
            .await
            .unwrap_err()
            .is_fenced()
    );

    let replayed = records(&b, 0).await;
    let payloads: Vec<&[u8]> = replayed.iter().map(|r| &r.1[..]).collect();
    assert_eq!(
        payloads,
        vec![&b"acked"[..], b"a2"],
        "a1 and a3 never landed"
    );
    let next = b.append(2, Bytes::from_static(b"b")).await.unwrap();
    assert!(next > replayed.last().unwrap().0);
    assert_eq!(
        records(&b, 0).await.last(),
        Some(&(next, Bytes::from_static(b"b")))
    );
}

/// A commit that fails for good while a later one lands leaves a gap only a claim can
/// settle: the writer stops, saying so, and the claim after it replays everything that was
/// acknowledged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_commit_with_later_ones_landed_stops_the_writer_until_a_claim() {
    let store = Arc::new(FaultyStore::default());
    let opts = ObjectJournalOptions {
        retry_for: Duration::from_millis(200),
        ..ObjectJournalOptions::default()
    };
    let open = |store: Arc<dyn ObjectStore>| {
        Arc::new(
            ObjectJournal::new(store, Path::from("db"), "memory://gap", None, opts.clone())
                .unwrap(),
        )
    };
    let a = open(store.clone());
    a.claim(&claim(1, 0)).await.unwrap();
    let acked = a.append(1, Bytes::from_static(b"acked")).await.unwrap();
    store.refused.lock().insert(2);
    store.hold(2);
    let lost = append_held(&a, &store, 1, "lost", 1).await;
    let landed = {
        let a = a.clone();
        tokio::spawn(async move { a.append(1, Bytes::from_static(b"landed")).await })
    };
    while !store.has(3).await {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    store.release(2);
    assert!(lost.await.unwrap().is_err());
    let e = landed.await.unwrap().unwrap_err();
    assert!(e.to_string().contains("unknown"), "{e}");
    let e = a.append(1, Bytes::from_static(b"after")).await.unwrap_err();
    assert!(e.to_string().contains("reopen"), "{e}");

    store.refused.lock().clear();
    let b = open(store.clone());
    b.claim(&claim(2, 0)).await.unwrap();
    let replayed = records(&b, 0).await;
    assert_eq!(
        replayed.first(),
        Some(&(acked, Bytes::from_static(b"acked")))
    );
    assert!(!replayed.iter().any(|r| r.1 == Bytes::from_static(b"lost")));
    let next = b.append(2, Bytes::from_static(b"b")).await.unwrap();
    assert!(next > replayed.last().unwrap().0);
}

/// A journal truncated by an earlier Cairn, which kept only the newest object, has gaps
/// among its newest numbers: they are no commit in flight, since the object after each
/// starts at or before the position a replay asks for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_journal_truncated_near_its_tail_by_an_earlier_version_replays_whole() {
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let one = ObjectJournalOptions {
        commits_in_flight: 1,
        ..ObjectJournalOptions::default()
    };
    let open = |store: Arc<dyn ObjectStore>| {
        ObjectJournal::new(store, Path::from("db"), "memory://old", None, one.clone()).unwrap()
    };
    let a = open(store.clone());
    a.claim(&claim(1, 0)).await.unwrap();
    let mut lsns = Vec::new();
    for i in 0..10 {
        lsns.push(a.append(1, Bytes::from(format!("r{i}"))).await.unwrap());
    }
    // As the earlier truncation did, up to the eighth record: objects 1 to 8.
    for n in 1..=8 {
        store
            .delete(&Path::from("db/wal").join(object_name(n)))
            .await
            .unwrap();
    }
    let b = open(store.clone());
    b.claim(&claim(2, lsns[7])).await.unwrap();
    let replayed: Vec<Lsn> = records(&b, lsns[7] + 1).await.iter().map(|r| r.0).collect();
    assert_eq!(replayed, lsns[8..].to_vec());
}

/// An appender's task: the records it had acknowledged when it stopped.
type Appender = tokio::task::JoinHandle<Vec<(Lsn, Bytes)>>;

/// Seeded interleavings of overlapping commits, claims and a replica. Writers of three
/// epochs in turn, each with 16 appenders and commits in flight on a store whose puts finish
/// in a drawn order; each newer writer claims while the older one's commits are in flight.
/// Each new writer truncates what the replica has read. Every record a writer acknowledged
/// and no truncation took is in the next writer's replay at its LSN, and a replica polling
/// all along never sees a record out of order nor skips one: what it saw, from where the
/// journal now starts, is a prefix of the final replay. `CAIRN_MODEL_SEEDS=N` runs more seeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlapping_commits_claims_and_a_replica_under_drawn_interleavings() {
    use rand::{Rng, SeedableRng};
    let seeds: u64 = std::env::var("CAIRN_MODEL_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(12);
    for seed in 0..seeds {
        let mut dice = rand::rngs::StdRng::seed_from_u64(seed);
        let store = Arc::new(FaultyStore::default());
        store.jitter_us.store(3000, Ordering::SeqCst);
        *store.dice.lock() = Some(rand::rngs::StdRng::seed_from_u64(seed ^ 0x5eed));
        let open = |in_flight: usize| {
            Arc::new(
                ObjectJournal::new(
                    store.clone(),
                    Path::from("db"),
                    "memory://drawn",
                    None,
                    ObjectJournalOptions {
                        commits_in_flight: in_flight,
                        commit_delay: Duration::ZERO,
                        ..ObjectJournalOptions::default()
                    },
                )
                .unwrap(),
            )
        };
        // The replica polls until told to stop, keeping every record it saw.
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let read_to = Arc::new(AtomicU64::new(0));
        let replica = {
            let (stop, read_to, j) = (stop.clone(), read_to.clone(), open(1));
            tokio::spawn(async move {
                let mut seen: Vec<(Lsn, Bytes)> = Vec::new();
                while !stop.load(Ordering::SeqCst) {
                    let from = seen.last().map_or(0, |r| r.0 + 1);
                    seen.extend(records(&j, from).await);
                    read_to.store(seen.last().map_or(0, |r| r.0), Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_micros(500)).await;
                }
                seen
            })
        };
        let mut acked: Vec<(Lsn, Bytes)> = Vec::new();
        let mut truncated = 0;
        let mut older: Option<(Arc<ObjectJournal>, Vec<Appender>)> = None;
        for epoch in 1..=3u64 {
            let j = open(dice.random_range(1..=MAX_COMMITS_IN_FLIGHT));
            tokio::time::sleep(Duration::from_micros(dice.random_range(0..4000))).await;
            j.claim(&claim(epoch, 0)).await.unwrap();
            if let Some((old, appenders)) = older.take() {
                for a in appenders {
                    acked.extend(a.await.unwrap());
                }
                assert!(
                    old.append(epoch - 1, Bytes::from_static(b"late"))
                        .await
                        .unwrap_err()
                        .is_fenced(),
                    "seed {seed}: the older writer is fenced"
                );
            }
            let replayed = records(&j, 0).await;
            let at: BTreeMap<Lsn, Bytes> = replayed.iter().cloned().collect();
            assert_eq!(at.len(), replayed.len(), "seed {seed}: one record per LSN");
            assert!(
                replayed.windows(2).all(|w| w[0].0 < w[1].0),
                "seed {seed}: LSNs increase"
            );
            for (lsn, payload) in acked.iter().filter(|r| r.0 > truncated) {
                assert_eq!(
                    at.get(lsn),
                    Some(payload),
                    "seed {seed}, epoch {epoch}: acknowledged record at LSN {lsn}"
                );
            }
            // As a flush would: only what is acknowledged, and what the replica has read.
            let upto = read_to
                .load(Ordering::SeqCst)
                .min(acked.iter().map(|r| r.0).max().unwrap_or(0));
            j.truncate(upto).await.unwrap();
            truncated = truncated.max(upto);
            let appenders = (0..16)
                .map(|t| {
                    let j = j.clone();
                    tokio::spawn(async move {
                        let mut mine = Vec::new();
                        for i in 0..40 {
                            let payload = Bytes::from(format!("e{epoch}-t{t}-{i}"));
                            match j.append(epoch, payload.clone()).await {
                                Ok(lsn) => mine.push((lsn, payload)),
                                Err(_) => break,
                            }
                        }
                        mine
                    })
                })
                .collect();
            older = Some((j, appenders));
        }
        if let Some((last, appenders)) = older.take() {
            for a in appenders {
                acked.extend(a.await.unwrap());
            }
            let at: BTreeMap<Lsn, Bytes> = records(&last, 0).await.into_iter().collect();
            for (lsn, payload) in acked.iter().filter(|r| r.0 > truncated) {
                assert_eq!(
                    at.get(lsn),
                    Some(payload),
                    "seed {seed}: record at LSN {lsn}"
                );
            }
        }
        stop.store(true, Ordering::SeqCst);
        let seen = replica.await.unwrap();
        let reader = open(1);
        let all = records(&reader, 0).await;
        let start = all.first().map_or(Lsn::MAX, |r| r.0);
        let seen: Vec<_> = seen.into_iter().filter(|r| r.0 >= start).collect();
        if let Some(i) = (0..seen.len()).find(|&i| all.get(i) != seen.get(i)) {
            let lo = i.saturating_sub(3);
            eprintln!(
                "seen {:?}\nall  {:?}",
                &seen[lo..(i + 3).min(seen.len())],
                &all[lo..(i + 3).min(all.len())]
            );
            let listed: Vec<_> = store.list(None).try_collect().await.unwrap();
            for o in listed {
                let data = store.get(&o.location).await.unwrap().bytes().await.unwrap();
                let (h, r) = decode("x", &data).unwrap();
                eprintln!(
                    "{} kind {} epoch {} {}..{} next {} n={} w={}",
                    o.location,
                    h.kind,
                    h.epoch,
                    h.first_lsn,
                    h.last_lsn,
                    h.next_lsn,
                    r.len(),
                    h.meta.window
                );
            }
        }
        assert!(
            seen.len() <= all.len() && seen[..] == all[..seen.len()],
            "seed {seed}: the replica saw {} records, not a prefix of the {} replayed",
            seen.len(),
            all.len()
        );
    }
}
