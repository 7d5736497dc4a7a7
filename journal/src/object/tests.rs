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
    for i in 0..5 {
        last = b.append(2, Bytes::from(format!("b{i}"))).await.unwrap();
    }
    b.truncate(last).await.unwrap();
    let left: Vec<_> = store.list(None).try_collect().await.unwrap();
    assert!(left.len() <= 3, "flushed records are deleted: {left:?}");

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

/// Truncation deletes whole objects at or below the flushed LSN, never later records, and a
/// reopened journal numbers on from where it ended.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncation_and_reopen_keep_the_numbering() {
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let j = journal_on(store.clone(), "memory://reopen");
    j.claim(&claim(1, 0)).await.unwrap();
    let mut lsns = Vec::new();
    for i in 0..20 {
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
    assert_eq!(c.last_lsn, lsns[19]);
    let replayed: Vec<Lsn> = records(&reopened, lsns[10])
        .await
        .iter()
        .map(|r| r.0)
        .collect();
    assert_eq!(replayed, lsns[10..].to_vec());
    assert_eq!(
        reopened.append(2, Bytes::new()).await.unwrap(),
        lsns[19] + 1
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

/// A store that stores a put and then loses its answer, as a timed-out request can: the
/// `fail_after` next puts land but report an error.
#[derive(Debug)]
struct LostAnswers {
    inner: InMemory,
    fail: AtomicU64,
    /// Every put lands (if it can) and then reports an error, an existing object too.
    failing: std::sync::atomic::AtomicBool,
    /// Reads asked of the store, whole or ranged.
    gets: AtomicU64,
}

impl std::fmt::Display for LostAnswers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "LostAnswers")
    }
}

#[async_trait]
impl ObjectStore for LostAnswers {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<object_store::PutResult> {
        if self.failing.load(Ordering::SeqCst) {
            let _ = self.inner.put_opts(location, payload, opts).await;
            return Err(object_store::Error::Generic {
                store: "LostAnswers",
                source: "every answer is lost".into(),
            });
        }
        let r = self.inner.put_opts(location, payload, opts).await?;
        if self
            .fail
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err(object_store::Error::Generic {
                store: "LostAnswers",
                source: "the answer was lost".into(),
            });
        }
        Ok(r)
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: object_store::PutMultipartOptions,
    ) -> object_store::Result<Box<dyn object_store::MultipartUpload>> {
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(
        &self,
        location: &Path,
        options: object_store::GetOptions,
    ) -> object_store::Result<object_store::GetResult> {
        self.gets.fetch_add(1, Ordering::SeqCst);
        self.inner.get_opts(location, options).await
    }

    fn delete_stream(
        &self,
        locations: futures::stream::BoxStream<'static, object_store::Result<Path>>,
    ) -> futures::stream::BoxStream<'static, object_store::Result<Path>> {
        self.inner.delete_stream(locations)
    }

    fn list(
        &self,
        prefix: Option<&Path>,
    ) -> futures::stream::BoxStream<'static, object_store::Result<object_store::ObjectMeta>> {
        self.inner.list(prefix)
    }

    async fn list_with_delimiter(
        &self,
        prefix: Option<&Path>,
    ) -> object_store::Result<object_store::ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(
        &self,
        from: &Path,
        to: &Path,
        options: object_store::CopyOptions,
    ) -> object_store::Result<()> {
        self.inner.copy_opts(from, to, options).await
    }
}

/// A commit whose object landed though the store said it failed is retried into the same
/// object: found to be this writer's own, its records are kept (once) and the next commit
/// goes on after them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_whose_answer_was_lost_is_found_and_kept_once() {
    let store = Arc::new(LostAnswers {
        inner: InMemory::new(),
        fail: AtomicU64::new(0),
        failing: false.into(),
        gets: AtomicU64::new(0),
    });
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
    let store = Arc::new(LostAnswers {
        inner: InMemory::new(),
        fail: AtomicU64::new(0),
        failing: false.into(),
        gets: AtomicU64::new(0),
    });
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
    let store = Arc::new(LostAnswers {
        inner: InMemory::new(),
        fail: AtomicU64::new(0),
        failing: false.into(),
        gets: AtomicU64::new(0),
    });
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
