//! Upgrades: a database written by an earlier Cairn, kept as frozen bytes in
//! `tests/fixtures/`, opens with this one and reads as it was written: SSTables, the
//! manifest with a named checkpoint, range tombstones, merge operands, expiring puts, and
//! writes the earlier process acknowledged but never flushed (replayed from its journal
//! segments). A format change that stops reading them fails here; the fixture is then kept
//! and a new one added beside it (`write_fixture`, ignored, writes one).
//!
//! `v4-sst-file-journal`: written by the Cairn of manifest `CAIRNMV4`, SSTable format 2,
//! journal segment version 2 and batch format 2, with the `default` profile's layout.

use bytes::Bytes;
use cairn::{Config, Db, KeyRange};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

const FIXTURE: &str = "v4-sst-file-journal";

fn fixture_dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn config(data: &Path) -> Config {
    Config::from_toml_str(
        &format!(
            "[default]\ndata_dir = \"{}\"\n[default.engine]\nmerge_operator = \"add\"\n",
            data.display()
        ),
        None,
    )
    .unwrap()
}

fn n(v: i64) -> Bytes {
    Bytes::copy_from_slice(&v.to_le_bytes())
}

/// What the fixture holds, and what its checkpoint `before` holds.
fn expected() -> (BTreeMap<Bytes, Bytes>, BTreeMap<Bytes, Bytes>) {
    let mut now = BTreeMap::new();
    for i in 0..200 {
        now.insert(
            Bytes::from(format!("k{i:03}")),
            Bytes::from(format!("v{i}")),
        );
    }
    for i in (0..200).step_by(4) {
        now.insert(
            Bytes::from(format!("k{i:03}")),
            Bytes::from(format!("w{i}")),
        );
    }
    now.insert(Bytes::from("count"), n(10));
    let before = now.clone();
    for i in 50..60 {
        now.remove(&Bytes::from(format!("k{i:03}")));
    }
    now.retain(|k, _| !(k[..] >= b"k100"[..] && k[..] < b"k120"[..]));
    now.insert(Bytes::from("count"), n(10 + 5 + 7));
    now.insert(Bytes::from("lease"), Bytes::from("held"));
    for i in 0..5 {
        now.insert(
            Bytes::from(format!("tail{i}")),
            Bytes::from(format!("t{i}")),
        );
    }
    (now, before)
}

async fn all(db: &Db) -> BTreeMap<Bytes, Bytes> {
    let pairs = db
        .scan(KeyRange::all())
        .await
        .unwrap()
        .collect(None)
        .await
        .unwrap();
    pairs.into_iter().collect()
}

/// Writes the fixture with this Cairn (run once per format change, then commit it).
#[tokio::test]
#[ignore]
async fn write_fixture() {
    let dir = fixture_dir(FIXTURE);
    let _ = std::fs::remove_dir_all(&dir);
    let db = cairn::open(&config(&dir)).await.unwrap();
    for i in 0..200 {
        db.put(format!("k{i:03}"), format!("v{i}")).await.unwrap();
    }
    db.put("count", n(10).to_vec()).await.unwrap();
    db.flush().await.unwrap();
    for i in (0..200).step_by(4) {
        db.put(format!("k{i:03}"), format!("w{i}")).await.unwrap();
    }
    db.create_checkpoint("before").await.unwrap();
    for i in 50..60 {
        db.delete(format!("k{i:03}")).await.unwrap();
    }
    db.delete_range("k100", "k120").await.unwrap();
    db.merge("count", n(5).to_vec()).await.unwrap();
    db.flush().await.unwrap();
    db.merge("count", n(7).to_vec()).await.unwrap();
    db.put_with_ttl(
        "lease",
        "held",
        std::time::Duration::from_secs(100 * 365 * 86_400),
    )
    .await
    .unwrap();
    for i in 0..5 {
        db.put(format!("tail{i}"), format!("t{i}")).await.unwrap();
    }
    // These stay in the journal only.
    db.close_without_flush().await.unwrap();
    // The lock file is this process's, not the database's.
    let _ = std::fs::remove_file(dir.join("LOCK"));
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), target).unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_written_by_an_earlier_cairn_opens_and_reads_as_written() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("db");
    copy_dir(&fixture_dir(FIXTURE), &data);
    let (now, before) = expected();
    let mut cfg = config(&data);
    let db = cairn::open(&cfg).await.unwrap();
    assert_eq!(
        all(&db).await,
        now,
        "tables, tombstones, operands and the journal's tail"
    );
    assert_eq!(db.get(b"count").await.unwrap(), Some(n(22)));
    let names: Vec<String> = db
        .checkpoints()
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.name)
        .collect();
    assert_eq!(names, ["before"]);
    // The earlier formats take new writes, flushes and compactions.
    db.put("new", "write").await.unwrap();
    db.compact().await.unwrap();
    let mut after = now.clone();
    after.insert(Bytes::from("new"), Bytes::from("write"));
    assert_eq!(all(&db).await, after);
    db.close().await.unwrap();

    cfg.checkpoint = Some("before".into());
    cfg.read_only = true;
    let old = cairn::open(&cfg).await.unwrap();
    assert_eq!(all(&old).await, before, "the checkpoint as it was made");
    old.close().await.unwrap();
}
