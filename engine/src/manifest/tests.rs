//! The manifest conformance suite on the stores this crate's tests can make alone (the S3 and
//! gRPC ones run in `cairn/tests/manifest.rs`), and the edit rules.

use super::*;
use cairn_common::TableMeta;
use cairn_filestore::{DirManifestStore, ManifestStore, ParquetOptions, ParquetStorage, Storage};
use std::sync::Arc;

#[tokio::test]
async fn conformance_on_a_local_directory() {
    let dir = tempfile::tempdir().unwrap();
    conformance::run(Arc::new(
        DirManifestStore::open(dir.path().join("m")).unwrap(),
    ))
    .await;
}

fn parquet_manifests(url: &str) -> Arc<dyn ManifestStore> {
    let s = ParquetStorage::open(ParquetOptions {
        url: url.into(),
        ..ParquetOptions::default()
    })
    .unwrap();
    s.manifests()
}

#[tokio::test]
async fn conformance_in_memory_object_store() {
    conformance::run(parquet_manifests("memory://manifest-conformance/db")).await;
}

#[tokio::test]
async fn conformance_on_a_file_url() {
    let dir = tempfile::tempdir().unwrap();
    conformance::run(parquet_manifests(&format!(
        "file://{}/bucket",
        dir.path().display()
    )))
    .await;
}

#[test]
fn a_move_reuses_the_item_and_level_zero_stays_newest_first() {
    let t = |id: u64, key: &str, seq: u64| TableMeta {
        id,
        smallest: key.into(),
        largest: key.into(),
        min_seq: seq,
        max_seq: seq,
        entries: 1,
        size: 1,
    };
    let mut m = Manifest::new("db".into(), 3);
    m = m.apply(&VersionEdit {
        added: vec![(0, t(1, "a", 5)), (0, t(2, "b", 9)), (0, t(3, "c", 7))],
        ..Default::default()
    });
    assert_eq!(
        m.levels[0].iter().map(|t| t.id).collect::<Vec<_>>(),
        vec![2, 3, 1]
    );
    m = m.apply(&VersionEdit {
        removed: vec![1, 3],
        added: vec![(1, t(1, "a", 5)), (1, t(4, "0", 6))],
        ..Default::default()
    });
    assert_eq!(
        m.levels[0].iter().map(|t| t.id).collect::<Vec<_>>(),
        vec![2]
    );
    assert_eq!(
        m.levels[1].iter().map(|t| t.id).collect::<Vec<_>>(),
        vec![4, 1]
    );
    // Handles: a moved one is kept (not retired), a new one is made.
    let mut handles: Vec<Vec<(TableMeta, &str)>> = vec![vec![(t(1, "a", 5), "old")], vec![]];
    let edit = VersionEdit {
        removed: vec![1],
        added: vec![(1, t(1, "a", 5)), (1, t(7, "z", 8))],
        ..Default::default()
    };
    let removed = edit.apply_to(&mut handles, |h| &h.0, |m| Some((m.clone(), "new")));
    assert!(removed.is_empty(), "a moved item is reused, not retired");
    assert_eq!(
        handles[1].iter().map(|h| h.1).collect::<Vec<_>>(),
        vec!["old", "new"]
    );
}

/// A store that fails chosen creates without writing them, keeping the bytes to land later
/// (a write whose answer was lost and that the store applies after the writer gave up).
struct LateLanding {
    inner: Arc<dyn ManifestStore>,
    /// Creates of this version fail, their bytes held back.
    fail_version: parking_lot::Mutex<Option<u64>>,
    held: parking_lot::Mutex<Option<(u64, bytes::Bytes)>>,
    /// Lands the held bytes just before the next create of their version.
    land_before_next_create: std::sync::atomic::AtomicBool,
}

#[async_trait::async_trait]
impl ManifestStore for LateLanding {
    async fn list(&self) -> cairn_common::Result<Vec<u64>> {
        self.inner.list().await
    }
    async fn read(&self, n: u64) -> cairn_common::Result<Option<bytes::Bytes>> {
        self.inner.read(n).await
    }
    async fn create(&self, n: u64, data: bytes::Bytes) -> cairn_common::Result<bool> {
        if *self.fail_version.lock() == Some(n) {
            self.held.lock().get_or_insert((n, data));
            return Err(cairn_common::Error::component("test store", "answer lost"));
        }
        let land = self
            .land_before_next_create
            .swap(false, std::sync::atomic::Ordering::AcqRel);
        let held = if land { self.held.lock().take() } else { None };
        if let Some((held_n, held)) = held {
            assert!(self.inner.create(held_n, held).await.unwrap());
        }
        self.inner.create(n, data).await
    }
    async fn delete(&self, n: u64) -> cairn_common::Result<()> {
        self.inner.delete(n).await
    }
    fn location(&self) -> String {
        self.inner.location()
    }
}

fn dir_store(dir: &tempfile::TempDir) -> Arc<dyn ManifestStore> {
    Arc::new(DirManifestStore::open(dir.path().join("m")).unwrap())
}

fn new_state() -> cairn_common::Result<Manifest> {
    Ok(Manifest::new("db".into(), 3))
}

/// A writer's own version that lands after its write was reported failed is the writer's,
/// not a newer writer's: it must not be told it was fenced (by its own epoch).
#[tokio::test]
async fn a_pending_version_that_lands_late_is_not_reported_as_a_fence() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(LateLanding {
        inner: dir_store(&dir),
        fail_version: parking_lot::Mutex::new(None),
        held: parking_lot::Mutex::new(None),
        land_before_next_create: false.into(),
    });
    let mut log = ManifestLog::open_writer(store.clone(), new_state, None)
        .await
        .unwrap();
    let n = log.version() + 1;
    *store.fail_version.lock() = Some(n);
    let edit = |id| VersionEdit {
        next_table_id: Some(id),
        ..VersionEdit::default()
    };
    assert!(log.commit(edit(10)).await.is_err(), "every attempt failed");
    // The held version lands between the next commit's look at it and its own create.
    *store.fail_version.lock() = None;
    store
        .land_before_next_create
        .store(true, std::sync::atomic::Ordering::Release);
    let e = log.commit(edit(20)).await.unwrap_err();
    assert!(!e.is_fenced(), "no other writer exists: {e}");
    assert!(e.to_string().contains("landed after all"), "{e}");
}

/// A writer paused while a newer one wrote past a checkpoint, which collected every version
/// before it, the contested one included: the old writer is fenced, and its write changes
/// nothing a reader sees.
#[tokio::test]
async fn a_writer_whose_contested_version_was_collected_is_still_fenced() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir_store(&dir);
    let mut old = ManifestLog::open_writer(store.clone(), new_state, None)
        .await
        .unwrap();
    let mut new = ManifestLog::open_writer(store.clone(), new_state, None)
        .await
        .unwrap();
    for i in 0..CHECKPOINT_EVERY + 2 {
        new.commit(VersionEdit {
            next_table_id: Some(100 + i),
            ..VersionEdit::default()
        })
        .await
        .unwrap();
    }
    // Collection runs in the background: wait until the contested version is gone.
    for _ in 0..200 {
        if store.read(old.version() + 1).await.unwrap().is_none() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert!(store.read(old.version() + 1).await.unwrap().is_none());
    let e = old
        .commit(VersionEdit {
            next_table_id: Some(7),
            ..VersionEdit::default()
        })
        .await
        .unwrap_err();
    assert!(e.is_fenced(), "{e}");
    let e = old.commit(VersionEdit::default()).await.unwrap_err();
    assert!(e.is_fenced(), "the fence sticks: {e}");
    let newest = load(store.as_ref()).await.unwrap().unwrap();
    assert_eq!(newest.state.epoch, new.state().epoch);
    assert_eq!(newest.state.next_table_id, 100 + CHECKPOINT_EVERY + 1);
}

/// The store refuses the contested version as existing, and it is collected before the
/// writer reads it: a fence, not corruption, and not retried for ever.
#[tokio::test]
async fn a_contested_version_collected_between_create_and_read_is_a_fence() {
    struct GoneOnRead(Arc<dyn ManifestStore>);
    #[async_trait::async_trait]
    impl ManifestStore for GoneOnRead {
        async fn list(&self) -> cairn_common::Result<Vec<u64>> {
            self.0.list().await
        }
        async fn read(&self, n: u64) -> cairn_common::Result<Option<bytes::Bytes>> {
            self.0.read(n).await
        }
        async fn create(&self, n: u64, data: bytes::Bytes) -> cairn_common::Result<bool> {
            let created = self.0.create(n, data).await?;
            if !created {
                // A newer writer's collection, right between the two calls.
                self.0.delete(n).await?;
            }
            Ok(created)
        }
        async fn delete(&self, n: u64) -> cairn_common::Result<()> {
            self.0.delete(n).await
        }
        fn location(&self) -> String {
            self.0.location()
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let store = dir_store(&dir);
    let mut old = ManifestLog::open_writer(Arc::new(GoneOnRead(store.clone())), new_state, None)
        .await
        .unwrap();
    let _new = ManifestLog::open_writer(store.clone(), new_state, None)
        .await
        .unwrap();
    let e = old.commit(VersionEdit::default()).await.unwrap_err();
    assert!(e.is_fenced(), "{e}");
}
