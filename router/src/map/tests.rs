use super::conformance::{self, Pair};
use super::storage::HeartbeatStores;
use super::*;
use cairn_filestore::{DirManifestStore, ManifestStore, ObjectManifestStore, ObjectStoreOptions};
use cairn_testkit::{EtcdServer, S3Endpoint};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

fn dir_store(root: PathBuf) -> Arc<dyn MapStore> {
    let maps = Arc::new(DirManifestStore::at(root.join("map")));
    let beats: HeartbeatStores = Box::new(move |node: &str| {
        Ok(
            Arc::new(DirManifestStore::open(root.join("nodes").join(node))?)
                as Arc<dyn ManifestStore>,
        )
    });
    Arc::new(StorageMapStore::new(maps, beats))
}

#[tokio::test]
async fn conformance_on_a_directory() {
    let dirs = Arc::new(parking_lot::Mutex::new(Vec::new()));
    conformance::all(|| {
        let dirs = dirs.clone();
        async move {
            let d = tempfile::tempdir().unwrap();
            std::fs::create_dir_all(d.path().join("map")).unwrap();
            let pair: Pair = (dir_store(d.path().into()), dir_store(d.path().into()));
            dirs.lock().push(d);
            pair
        }
    })
    .await;
}

fn s3_store(s3: &S3Endpoint, sub: &str) -> Arc<dyn MapStore> {
    let opts = |at: String| ObjectStoreOptions {
        url: s3.url(&at),
        endpoint: Some(s3.endpoint.clone()),
        region: Some(s3.region.clone()),
        access_key_id: Some(s3.access_key_id.clone()),
        secret_access_key: Some(s3.secret_access_key.clone()),
        allow_http: true,
        timeout_ms: 5_000,
        max_retries: 2,
    };
    let open = move |o: ObjectStoreOptions| -> cairn_common::Result<Arc<dyn ManifestStore>> {
        let at = cairn_filestore::open_object_store(&o, "cluster map")?;
        Ok(Arc::new(ObjectManifestStore::new(
            at.store,
            at.prefix,
            o.url.clone(),
            at.local_dir,
        )))
    };
    let maps = open(opts(format!("{sub}/map"))).unwrap();
    let base = opts(format!("{sub}/nodes"));
    let beats: HeartbeatStores = Box::new(move |node: &str| {
        let mut o = base.clone();
        o.url = format!("{}/{node}", base.url);
        open(o)
    });
    Arc::new(StorageMapStore::new(maps, beats))
}

#[tokio::test]
async fn conformance_on_s3() {
    let s3 = Arc::new(S3Endpoint::start());
    let n = AtomicU64::new(0);
    conformance::all(|| {
        let sub = format!("c{}", n.fetch_add(1, Ordering::Relaxed));
        let pair: Pair = (s3_store(&s3, &sub), s3_store(&s3, &sub));
        async move { pair }
    })
    .await;
}

#[tokio::test]
async fn conformance_on_etcd() {
    let Some(etcd) = EtcdServer::start() else {
        return;
    };
    let n = AtomicU64::new(0);
    conformance::all(|| {
        let prefix = format!("/cairn-test/{}", n.fetch_add(1, Ordering::Relaxed));
        let endpoints = vec![etcd.endpoint()];
        async move {
            let a = EtcdMapStore::connect(&endpoints, &prefix).await.unwrap();
            let b = EtcdMapStore::connect(&endpoints, &prefix).await.unwrap();
            (
                Arc::new(a) as Arc<dyn MapStore>,
                Arc::new(b) as Arc<dyn MapStore>,
            )
        }
    })
    .await;
}

#[test]
fn initial_maps_cover_the_keyspace_and_route_every_key() {
    for n in [1u16, 2, 3, 7, 256, 1000] {
        let m = ClusterMap::initial(n);
        m.validate().unwrap();
        assert_eq!(m.shards.len(), n as usize);
        for key in [&b""[..], b"\x00", b"a", b"user:42", b"\xff\xff\xff"] {
            let s = m.shard_of(key);
            assert!(
                s.contains(key),
                "{n} shards: {} not in {}",
                key_text(key),
                s.range_text()
            );
        }
    }
    let m = ClusterMap::initial(4);
    assert_eq!(m.shard_of(b"\x40\x00").id, 1);
    assert_eq!(m.shard_of(b"\x3f\xff\xff").id, 0);
    assert_eq!(m.shard_of(b"\xff").id, 3);
}

#[test]
fn edits_that_break_the_map_are_refused() {
    let m = ClusterMap::initial(3);
    let mut gap = m.clone();
    gap.shards[1].start = Bytes::from_static(b"\x60");
    assert!(gap.validate().is_err());
    let mut stranger = m.clone();
    stranger.shards[0].owner = Some("nobody".into());
    assert!(stranger.validate().is_err());
    let mut reused = m.clone();
    reused.next_shard = 2;
    assert!(reused.validate().is_err());
}

#[test]
fn a_damaged_map_is_refused() {
    let m = ClusterMap::initial(2);
    let mut bytes = encode(&m).unwrap().to_vec();
    assert_eq!(decode(&bytes, "test").unwrap(), m);
    let last = bytes.len() - 2;
    bytes[last] ^= 1;
    assert!(decode(&bytes, "test").unwrap_err().is_corruption());
    assert!(decode(&bytes[..3], "test").unwrap_err().is_corruption());
}
