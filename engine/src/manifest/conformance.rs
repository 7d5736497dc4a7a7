//! The conformance suite for wherever a manifest lives (every `ManifestStore`): the store's
//! create-if-absent under racing writers, and the manifest log on top of it (fencing, epochs,
//! checkpoints, corruption). Call [`run`] with a new, empty store; it panics on a violation.

use super::{CHECKPOINT_EVERY, Manifest, ManifestLog, VersionEdit, load};
use bytes::Bytes;
use cairn_common::TableMeta;
use cairn_filestore::ManifestStore;
use std::sync::Arc;

pub async fn run(store: Arc<dyn ManifestStore>) {
    create_is_if_absent(&store).await;
    racing_creates_have_one_winner(&store).await;
    log_roundtrips_through_checkpoints(&store).await;
    a_new_writer_fences_the_old_one(&store).await;
    racing_openers_get_distinct_epochs(&store).await;
    a_torn_or_corrupt_version_is_detected(&store).await;
}

/// Every check but the two with concurrent creates of one version, for a store whose
/// create-if-absent holds one writer after another but not between racing ones (the tests'
/// in-process S3 server, s3s-fs, checks and then writes; AWS S3 and MinIO do not race).
pub async fn run_sequential(store: Arc<dyn ManifestStore>) {
    create_is_if_absent(&store).await;
    log_roundtrips_through_checkpoints(&store).await;
    a_new_writer_fences_the_old_one(&store).await;
    a_torn_or_corrupt_version_is_detected(&store).await;
}

async fn create_is_if_absent(store: &Arc<dyn ManifestStore>) {
    assert_eq!(
        store.list().await.unwrap(),
        Vec::<u64>::new(),
        "a new store is empty"
    );
    assert!(store.create(7, Bytes::from_static(b"first")).await.unwrap());
    assert!(
        !store
            .create(7, Bytes::from_static(b"second"))
            .await
            .unwrap(),
        "create refuses an existing version"
    );
    assert_eq!(
        store.read(7).await.unwrap().unwrap(),
        Bytes::from_static(b"first"),
        "the first write stays"
    );
    assert_eq!(store.read(8).await.unwrap(), None);
    assert_eq!(store.list().await.unwrap(), vec![7]);
    store.delete(7).await.unwrap();
    store.delete(7).await.unwrap();
    assert_eq!(store.list().await.unwrap(), Vec::<u64>::new());
}

async fn racing_creates_have_one_winner(store: &Arc<dyn ManifestStore>) {
    for round in 0..5u64 {
        let n = 100 + round;
        let tasks: Vec<_> = (0..8u8)
            .map(|w| {
                let store = store.clone();
                tokio::spawn(async move {
                    let data = Bytes::from(vec![w; 1000 + w as usize]);
                    (w, store.create(n, data).await.unwrap())
                })
            })
            .collect();
        let mut winners = Vec::new();
        for t in tasks {
            let (w, created) = t.await.unwrap();
            if created {
                winners.push(w);
            }
        }
        assert_eq!(
            winners.len(),
            1,
            "exactly one racing writer installs version {n}: {winners:?}"
        );
        let got = store.read(n).await.unwrap().unwrap();
        assert_eq!(
            got,
            Bytes::from(vec![winners[0]; 1000 + winners[0] as usize]),
            "the winner's bytes, whole"
        );
        store.delete(n).await.unwrap();
    }
}

fn table(id: u64, key: &str, seq: u64) -> TableMeta {
    TableMeta {
        id,
        smallest: key.as_bytes().to_vec(),
        largest: key.as_bytes().to_vec(),
        min_seq: seq,
        max_seq: seq,
        entries: 1,
        size: 100,
    }
}

fn new_db(name: &str) -> impl Fn() -> cairn_common::Result<Manifest> + '_ {
    move || Ok(Manifest::new(name.to_string(), 3))
}

async fn log_roundtrips_through_checkpoints(store: &Arc<dyn ManifestStore>) {
    let mut log = ManifestLog::open_writer(store.clone(), new_db("conformance"), None)
        .await
        .unwrap();
    assert_eq!((log.version(), log.state().epoch), (1, 1));
    let ids = log.reserve_ids(3).await.unwrap();
    for (i, id) in ids.enumerate() {
        let seq = i as u64 + 1;
        log.commit(VersionEdit {
            added: vec![(0, table(id, "k", seq))],
            last_seq: Some(seq),
            flushed_lsn: Some(seq * 10),
            ..VersionEdit::default()
        })
        .await
        .unwrap();
    }
    assert_eq!(
        log.state().levels[0]
            .iter()
            .map(|t| t.max_seq)
            .collect::<Vec<_>>(),
        vec![3, 2, 1],
        "level 0 newest first"
    );
    // Past a checkpoint: moves, removals and reservations all survive the reload.
    for round in 0..CHECKPOINT_EVERY + 5 {
        let id = log.reserve_ids(1).await.unwrap().start;
        let old: Vec<u64> = log.state().levels[1].iter().map(|t| t.id).collect();
        log.commit(VersionEdit {
            added: vec![(1, table(id, &format!("k{round:04}"), 100 + round))],
            removed: old.into_iter().filter(|i| i % 3 == 0).collect(),
            ..VersionEdit::default()
        })
        .await
        .unwrap();
    }
    let loaded = load(store.as_ref()).await.unwrap().unwrap();
    assert_eq!(
        &loaded.state,
        log.state(),
        "the stored log gives the writer's state"
    );
    assert_eq!(loaded.version, log.version());
    assert!(loaded.checkpoint > 1, "a checkpoint was written");
    let keys: Vec<_> = loaded.state.levels[1]
        .iter()
        .map(|t| t.smallest.clone())
        .collect();
    assert!(
        keys.windows(2).all(|w| w[0] <= w[1]),
        "deeper levels sorted by key"
    );
    // Versions before the checkpoint are garbage and go (in the background).
    for _ in 0..200 {
        if store.list().await.unwrap().first() == Some(&loaded.checkpoint) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(
        store.list().await.unwrap().first(),
        Some(&loaded.checkpoint),
        "old versions deleted"
    );
}

async fn a_new_writer_fences_the_old_one(store: &Arc<dyn ManifestStore>) {
    let mut old = ManifestLog::open_writer(store.clone(), new_db("unused"), None)
        .await
        .unwrap();
    let mut new = ManifestLog::open_writer(store.clone(), new_db("unused"), None)
        .await
        .unwrap();
    assert_eq!(
        new.state().database,
        "conformance",
        "an existing database is opened, not made"
    );
    assert_eq!(new.state().epoch, old.state().epoch + 1);
    let id = new.reserve_ids(1).await.unwrap().start;
    let before = load(store.as_ref()).await.unwrap().unwrap().state;
    let e = old
        .commit(VersionEdit {
            removed: vec![id],
            ..VersionEdit::default()
        })
        .await
        .expect_err("the old writer's edit");
    assert!(e.is_fenced(), "fenced, not: {e}");
    assert!(
        e.to_string()
            .contains(&format!("epoch {}", new.state().epoch)),
        "names the new epoch: {e}"
    );
    let e = old.reserve_ids(10_000).await.expect_err("stays fenced");
    assert!(e.is_fenced(), "{e}");
    assert_eq!(
        load(store.as_ref()).await.unwrap().unwrap().state,
        before,
        "the fenced edit changed nothing"
    );
    new.commit(VersionEdit {
        last_seq: Some(999),
        ..VersionEdit::default()
    })
    .await
    .unwrap();
    assert_eq!(
        load(store.as_ref()).await.unwrap().unwrap().state.last_seq,
        999
    );
}

async fn racing_openers_get_distinct_epochs(store: &Arc<dyn ManifestStore>) {
    let tasks: Vec<_> = (0..4)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move {
                ManifestLog::open_writer(store, new_db("unused"), None)
                    .await
                    .unwrap()
                    .state()
                    .epoch
            })
        })
        .collect();
    let mut epochs = Vec::new();
    for t in tasks {
        epochs.push(t.await.unwrap());
    }
    epochs.sort_unstable();
    epochs.dedup();
    assert_eq!(
        epochs.len(),
        4,
        "every opener has its own epoch: {epochs:?}"
    );
}

async fn a_torn_or_corrupt_version_is_detected(store: &Arc<dyn ManifestStore>) {
    let log = ManifestLog::open_writer(store.clone(), new_db("unused"), None)
        .await
        .unwrap();
    let n = log.version();
    let good = store.read(n).await.unwrap().unwrap();
    // A torn copy of a real version, then one with a flipped bit.
    assert!(
        store
            .create(n + 1, good.slice(..good.len() - 3))
            .await
            .unwrap()
    );
    let e = load(store.as_ref()).await.err().expect("a torn version");
    assert!(
        e.is_corruption() && e.to_string().contains(&format!("version {}", n + 1)),
        "{e}"
    );
    store.delete(n + 1).await.unwrap();
    let mut flipped = good.to_vec();
    let last = flipped.len() - 1;
    flipped[last] ^= 0x40;
    assert!(store.create(n + 1, Bytes::from(flipped)).await.unwrap());
    let e = load(store.as_ref()).await.err().expect("a corrupt version");
    assert!(e.is_corruption(), "{e}");
    let e = ManifestLog::open_writer(store.clone(), new_db("unused"), None)
        .await
        .err()
        .expect("no writer opens over it");
    assert!(e.is_corruption(), "{e}");
}
