use super::*;
use cairn_common::{Entry, KeyRange, ValueType};
use cairn_filestore::{
    ParquetOptions, ParquetStorage, SstOptions, SstStorage, conformance, read_range, write_table,
};
use cairn_testkit::S3Endpoint;
use std::time::Duration;

fn sst(dir: &std::path::Path) -> Arc<dyn Storage> {
    Arc::new(SstStorage::open(SstOptions::new(dir)).unwrap())
}

fn parquet_on(s3: &S3Endpoint, sub: &str) -> Arc<dyn Storage> {
    Arc::new(
        ParquetStorage::open(ParquetOptions {
            url: s3.url(sub),
            endpoint: Some(s3.endpoint.clone()),
            region: Some(s3.region.clone()),
            access_key_id: Some(s3.access_key_id.clone()),
            secret_access_key: Some(s3.secret_access_key.clone()),
            allow_http: true,
            timeout_ms: 5_000,
            max_retries: 0,
            row_group_rows: 1000,
            ..ParquetOptions::default()
        })
        .unwrap(),
    )
}

fn memory_parquet(name: &str) -> Arc<dyn Storage> {
    Arc::new(
        ParquetStorage::open(ParquetOptions {
            url: format!("memory://{name}"),
            ..ParquetOptions::default()
        })
        .unwrap(),
    )
}

fn fast_retry(on_secondary_failure: OnSecondaryFailure) -> HybridOptions {
    HybridOptions {
        on_secondary_failure,
        retry_initial_ms: 20,
        retry_max_ms: 200,
    }
}

fn entries(n: u32) -> Vec<Entry> {
    (0..n)
        .map(|i| Entry::put(format!("k{i:06}"), 1, (i64::from(i)).to_le_bytes().to_vec()))
        .collect()
}

async fn wait_caught_up(store: &HybridStore) {
    for _ in 0..500 {
        if store.stats().pending_uploads == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("secondary never caught up: {:?}", store.stats());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_sstable_and_parquet_in_memory() {
    let dir = tempfile::tempdir().unwrap();
    let store = HybridStore::open(
        sst(dir.path()),
        memory_parquet("hybrid-conformance"),
        HybridOptions::default(),
    )
    .await
    .unwrap();
    conformance::run(Arc::new(store.clone()), 1).await;
    let dir = tempfile::tempdir().unwrap();
    let store = HybridStore::open(
        sst(dir.path()),
        memory_parquet("hybrid-conformance-compaction"),
        HybridOptions::default(),
    )
    .await
    .unwrap();
    conformance::run(Arc::new(store.compaction_view()), 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_sstable_and_parquet_on_s3() {
    let s3 = S3Endpoint::start();
    let dir = tempfile::tempdir().unwrap();
    let store = HybridStore::open(
        sst(dir.path()),
        parquet_on(&s3, "conformance"),
        HybridOptions::default(),
    )
    .await
    .unwrap();
    conformance::run(Arc::new(store), 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_copies_are_written_and_deleted_and_analytics_read_the_secondary() {
    let s3 = S3Endpoint::start();
    let dir = tempfile::tempdir().unwrap();
    let store = HybridStore::open(
        sst(dir.path()),
        parquet_on(&s3, "both"),
        HybridOptions::default(),
    )
    .await
    .unwrap();
    let meta = write_table(&store, 5, &entries(2000)).await.unwrap();
    assert_eq!(store.primary().list_tables().await.unwrap(), vec![5]);
    assert_eq!(store.secondary().list_tables().await.unwrap(), vec![5]);
    let secondary = store.secondary().open_table(&meta).await.unwrap();
    assert_eq!(
        read_range(secondary.as_ref(), &KeyRange::all())
            .await
            .unwrap(),
        entries(2000)
    );

    let t = store.open_table(&meta).await.unwrap();
    let before = s3.requests();
    assert!(t.get(b"k000100", 1).await.unwrap().is_some());
    assert_eq!(
        read_range(t.as_ref(), &KeyRange::all())
            .await
            .unwrap()
            .len(),
        2000
    );
    if s3.set_down(false) {
        assert_eq!(
            s3.requests(),
            before,
            "lookups and scans stay on the primary"
        );
    }
    let agg = t
        .aggregate(&KeyRange::all(), 1, ValueType::I64, &[])
        .await
        .unwrap();
    assert_eq!((agg.rows, agg.sum_i), (2000, (0..2000i128).sum()));
    if s3.set_down(false) {
        assert!(s3.requests() > before, "aggregates read the secondary");
    }

    store.delete_table(5).await.unwrap();
    assert!(store.primary().list_tables().await.unwrap().is_empty());
    assert!(store.secondary().list_tables().await.unwrap().is_empty());
}

/// A `retry` store finishes a table only once the secondary holds it: a short outage is waited
/// out by re-uploading from the primary copy; a long one fails the write and leaves neither
/// copy behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_secondary_is_retried_before_the_table_is_finished() {
    let s3 = S3Endpoint::start();
    if !s3.set_down(true) {
        return; // an external endpoint cannot be taken down from here
    }
    let dir = tempfile::tempdir().unwrap();
    let store = HybridStore::open(
        sst(dir.path()),
        parquet_on(&s3, "retry"),
        fast_retry(OnSecondaryFailure::Retry),
    )
    .await
    .expect("a secondary that is down does not stop the store from opening");
    s3.set_down(false);

    s3.go_down_for(Duration::from_millis(150));
    let meta = write_table(&store, 1, &entries(500)).await.unwrap();
    assert_eq!(store.stats().pending_uploads, 0);
    assert!(store.stats().secondary_failures >= 1, "the outage was met");
    assert!(store.stats().reuploads >= 1);
    let copy = store.secondary().open_table(&meta).await.unwrap();
    assert_eq!(
        read_range(copy.as_ref(), &KeyRange::all()).await.unwrap(),
        entries(500)
    );

    s3.set_down(true);
    let e = write_table(&store, 2, &entries(500))
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("re-uploads failed too"), "{e}");
    s3.set_down(false);
    assert_eq!(
        store.primary().list_tables().await.unwrap(),
        vec![1],
        "no primary copy left of table 2"
    );
    assert_eq!(store.secondary().list_tables().await.unwrap(), vec![1]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fail_mode_refuses_the_write_and_keeps_neither_copy() {
    let s3 = S3Endpoint::start();
    let dir = tempfile::tempdir().unwrap();
    let store = HybridStore::open(
        sst(dir.path()),
        parquet_on(&s3, "fail"),
        fast_retry(OnSecondaryFailure::Fail),
    )
    .await
    .unwrap();
    if !s3.set_down(true) {
        return;
    }
    let err = write_table(&store, 1, &entries(100)).await.unwrap_err();
    assert!(err.to_string().contains("hybrid store secondary"), "{err}");
    s3.set_down(false);
    assert!(store.list_tables().await.unwrap().is_empty());
    assert_eq!(store.stats().pending_uploads, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tables_the_secondary_lacks_at_open_are_uploaded_when_opened() {
    let dir = tempfile::tempdir().unwrap();
    let secondary = memory_parquet("reopen-missing");
    // A table that reached only the primary, as after a crash mid-upload.
    let meta = write_table(sst(dir.path()).as_ref(), 9, &entries(300))
        .await
        .unwrap();
    let store = HybridStore::open(
        sst(dir.path()),
        secondary.clone(),
        fast_retry(OnSecondaryFailure::Retry),
    )
    .await
    .unwrap();
    assert!(secondary.list_tables().await.unwrap().is_empty());
    let t = store.open_table(&meta).await.unwrap();
    wait_caught_up(&store).await;
    assert_eq!(secondary.list_tables().await.unwrap(), vec![9]);
    let agg = t
        .aggregate(&KeyRange::all(), 1, ValueType::I64, &[])
        .await
        .unwrap();
    assert_eq!(agg.rows, 300);
}

/// The primary is a cache: a table it lost (a new disk, a new node) or holds under the same id
/// for another database is copied back from the secondary when opened.
#[tokio::test]
async fn a_lost_or_foreign_primary_copy_is_rebuilt_from_the_secondary() {
    let dir = tempfile::tempdir().unwrap();
    let secondary = memory_parquet("rebuild-primary");
    let store = HybridStore::open(
        sst(&dir.path().join("old")),
        secondary.clone(),
        fast_retry(OnSecondaryFailure::Fail),
    )
    .await
    .unwrap();
    let meta = write_table(&store, 4, &entries(2500)).await.unwrap();
    let want = read_range(
        store.open_table(&meta).await.unwrap().as_ref(),
        &KeyRange::all(),
    )
    .await
    .unwrap();

    // A new primary with nothing in it, then one holding another table under the same id.
    let fresh = dir.path().join("new");
    let foreign = dir.path().join("foreign");
    write_table(sst(&foreign).as_ref(), 4, &entries(7))
        .await
        .unwrap();
    for primary_dir in [fresh, foreign] {
        let primary = sst(&primary_dir);
        let store = HybridStore::open(
            primary.clone(),
            secondary.clone(),
            fast_retry(OnSecondaryFailure::Fail),
        )
        .await
        .unwrap();
        let t = store.open_table(&meta).await.unwrap();
        assert_eq!(
            read_range(t.as_ref(), &KeyRange::all()).await.unwrap(),
            want
        );
        assert_eq!(
            t.get(b"k001234", u64::MAX).await.unwrap().unwrap().key,
            "k001234"
        );
        // The copy is local again: it opens without the secondary.
        let again = primary.open_table(t.meta()).await.unwrap();
        assert_eq!(again.meta().entries, 2500);
    }

    // A secondary that cannot provide it: the error says both what was wrong and why no copy.
    let empty = HybridStore::open(
        sst(&dir.path().join("empty")),
        memory_parquet("rebuild-none"),
        fast_retry(OnSecondaryFailure::Fail),
    )
    .await
    .unwrap();
    let e = empty
        .open_table(&meta)
        .await
        .err()
        .expect("nothing to rebuild from")
        .to_string();
    assert!(e.contains("rebuilding it from the secondary failed"), "{e}");
}

/// Table 1's entries with one value changed on its way to the secondary: a bug in a
/// conversion, which the certification at finish must catch.
struct Tampering(Arc<dyn Storage>);

struct TamperingBuilder(Box<dyn TableBuilder>);

#[async_trait::async_trait]
impl TableBuilder for TamperingBuilder {
    async fn add(&mut self, entries: &[Entry]) -> cairn_common::Result<()> {
        let mut changed = entries.to_vec();
        if let Some(e) = changed.iter_mut().find(|e| e.key.as_ref() == b"k000007") {
            let mut v = e.value.to_vec();
            v[0] ^= 1;
            e.value = v.into();
        }
        self.0.add(&changed).await
    }

    fn estimated_size(&self) -> u64 {
        self.0.estimated_size()
    }

    fn keep_digest(&mut self) {
        self.0.keep_digest();
    }

    async fn finish(self: Box<Self>) -> cairn_common::Result<cairn_common::TableMeta> {
        self.0.finish().await
    }

    async fn finish_with_digest(
        self: Box<Self>,
    ) -> cairn_common::Result<(
        cairn_common::TableMeta,
        Option<cairn_filestore::ContentDigest>,
    )> {
        self.0.finish_with_digest().await
    }

    async fn abandon(self: Box<Self>) -> cairn_common::Result<()> {
        self.0.abandon().await
    }
}

#[async_trait::async_trait]
impl Storage for Tampering {
    async fn create_table(
        &self,
        id: cairn_common::TableId,
        level: u32,
    ) -> cairn_common::Result<Box<dyn TableBuilder>> {
        Ok(Box::new(TamperingBuilder(
            self.0.create_table(id, level).await?,
        )))
    }

    async fn open_table(
        &self,
        meta: &cairn_common::TableMeta,
    ) -> cairn_common::Result<Arc<dyn cairn_filestore::Table>> {
        self.0.open_table(meta).await
    }

    async fn delete_table(&self, id: cairn_common::TableId) -> cairn_common::Result<()> {
        self.0.delete_table(id).await
    }

    async fn list_tables(&self) -> cairn_common::Result<Vec<cairn_common::TableId>> {
        self.0.list_tables().await
    }

    fn manifests(&self) -> Arc<dyn cairn_filestore::ManifestStore> {
        self.0.manifests()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copies_that_differ_fail_the_write_and_neither_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    let secondary: Arc<dyn Storage> = Arc::new(Tampering(memory_parquet("tampered")));
    let store = HybridStore::open(sst(dir.path()), secondary, HybridOptions::default())
        .await
        .unwrap();
    let e = write_table(&store, 1, &entries(100)).await.unwrap_err();
    assert!(matches!(e, cairn_common::Error::Corruption { .. }), "{e}");
    let e = e.to_string();
    assert!(
        e.contains("copies differ") && e.contains("content digest"),
        "{e}"
    );
    assert!(store.primary().list_tables().await.unwrap().is_empty());
    assert!(store.secondary().list_tables().await.unwrap().is_empty());
    // Entries the tampering leaves alone are certified.
    let fine: Vec<Entry> = entries(100)
        .into_iter()
        .filter(|e| e.key.as_ref() != b"k000007")
        .collect();
    write_table(&store, 2, &fine).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_re_upload_keeps_the_tables_range_tombstones() {
    let s3 = S3Endpoint::start();
    if !s3.set_down(true) {
        return; // an external endpoint cannot be taken down from here
    }
    s3.set_down(false);
    let dir = tempfile::tempdir().unwrap();
    let store = HybridStore::open(
        sst(dir.path()),
        parquet_on(&s3, "retry-ranges"),
        fast_retry(OnSecondaryFailure::Retry),
    )
    .await
    .unwrap();
    let tombstone = cairn_common::RangeTombstone::new(&b"k000010"[..], &b"k000020"[..], 2);
    let with_range: Vec<Entry> =
        cairn_common::interleave(entries(100), std::slice::from_ref(&tombstone)).collect();
    s3.go_down_for(Duration::from_millis(150));
    let meta = write_table(&store, 1, &with_range).await.unwrap();
    assert!(store.stats().reuploads >= 1, "the table was re-uploaded");
    let copy = store.secondary().open_table(&meta).await.unwrap();
    assert_eq!(copy.range_deletes(), std::slice::from_ref(&tombstone));
    assert_eq!(
        read_range(copy.as_ref(), &KeyRange::all()).await.unwrap(),
        entries(100)
    );
}
