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
