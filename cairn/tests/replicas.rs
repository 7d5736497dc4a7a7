//! Read replicas against a model: a writer and two readers on one database, wired from
//! config as users wire them (the remote layout's journal and storage servers; the
//! serverless layout's bucket). Every check reads a reader at a snapshot of its own and
//! compares it with the model at that snapshot's sequence number: a reader may be behind,
//! but never shows part of a batch, a lost write or a write that never happened. The run
//! goes through the writer's flushes and compactions, a take-over by a new writer node,
//! and reader restarts. Then real processes: `cairn serve shard --read-only` beside its
//! writer, behind a router that spreads reads over both.

use crate::support;

use bytes::Bytes;
use cairn::serve::Component;
use cairn::{Config, Db, KeyRange, WriteBatch};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;
use support::layout::start;

/// Every acknowledged batch by its sequence numbers: (first, last) -> the keys it set
/// (`None`: deleted).
type History = BTreeMap<(u64, u64), Vec<(Bytes, Option<Bytes>)>>;

/// The database as of sequence number `seq`; panics if `seq` falls inside a batch.
fn model_at(history: &History, seq: u64) -> BTreeMap<Bytes, Bytes> {
    let mut m = BTreeMap::new();
    for (&(first, last), ops) in history {
        if last <= seq {
            for (k, v) in ops {
                match v {
                    Some(v) => m.insert(k.clone(), v.clone()),
                    None => m.remove(k),
                };
            }
        } else {
            assert!(
                first > seq,
                "a snapshot at {seq} splits the batch {first}..={last}"
            );
        }
    }
    m
}

const ENGINE: &str = "[default.engine]\nmemtable_bytes = 8192\nmax_immutable_memtables = 2\n\
    l0_stop_writes = 12\nbackground_threads = 1\nreader_poll_ms = 10\n\
    [default.compaction]\nl0_trigger = 2\nlevels = 3\nbase_level_bytes = 32768\n\
    level_size_ratio = 4\ntarget_table_bytes = 8192\n";

/// A node's profile: `layout` (journal and storage sections) with its own data directory.
fn node(dir: &Path, name: &str, layout: &str, read_only: bool) -> Config {
    let text = format!(
        "[default]\ndata_dir = \"{}\"\nread_only = {read_only}\n{ENGINE}{layout}",
        dir.join(name).display()
    );
    Config::from_toml_str(&text, None).unwrap_or_else(|e| panic!("{e}\n{text}"))
}

/// Reads `reader` at a snapshot and checks it against the model; returns the snapshot's
/// sequence number.
async fn check(reader: &Db, history: &History, what: &str) -> u64 {
    let snap = reader.snapshot();
    let got: BTreeMap<Bytes, Bytes> = reader
        .scan_at(KeyRange::all(), &snap)
        .await
        .unwrap()
        .collect(None)
        .await
        .unwrap()
        .into_iter()
        .collect();
    let want = model_at(history, snap.seq());
    assert_eq!(got, want, "{what} at snapshot {}", snap.seq());
    let keys: Vec<Bytes> = want.keys().take(20).cloned().collect();
    for (k, v) in keys.iter().zip(reader.multi_get(&keys).await.unwrap()) {
        // multi_get reads at a snapshot of its own, at least as new as `snap`.
        assert!(
            v.is_some()
                || history
                    .values()
                    .flatten()
                    .any(|(hk, hv)| hk == k && hv.is_none()),
            "{what}: {k:?} vanished"
        );
    }
    snap.seq()
}

async fn scenario(dir: &Path, layout: &str) {
    let mut rng = StdRng::seed_from_u64(11);
    let mut history = History::new();
    let mut writer = cairn::open(&node(dir, "writer-0", layout, false))
        .await
        .unwrap();
    writer.put("seed", "0").await.unwrap();
    history.insert((1, 1), vec![("seed".into(), Some("0".into()))]);
    let mut readers = vec![
        cairn::open(&node(dir, "reader-a", layout, true))
            .await
            .unwrap(),
        cairn::open(&node(dir, "reader-b", layout, true))
            .await
            .unwrap(),
    ];
    let mut writers = 0;
    let (mut flushes, mut restarts) = (0, 0);
    for step in 0..400u32 {
        match rng.random_range(0..100) {
            0..=69 => {
                let mut b = WriteBatch::new();
                let mut ops = Vec::new();
                for i in 0..rng.random_range(1..8) {
                    let k = Bytes::from(format!("k{:03}", rng.random_range(0..200)));
                    if rng.random_bool(0.85) {
                        let v = Bytes::from(format!("{step}.{i}.{}", "v".repeat(30)));
                        b.put(k.clone(), v.clone());
                        ops.push((k, Some(v)));
                    } else {
                        b.delete(k.clone());
                        ops.push((k, None));
                    }
                }
                let n = b.len() as u64;
                let last = writer.write(b).await.unwrap();
                history.insert((last + 1 - n, last), ops);
            }
            70..=84 => {
                let r = rng.random_range(0..readers.len());
                check(&readers[r], &history, &format!("step {step}: reader {r}")).await;
            }
            85..=89 => {
                writer.flush().await.unwrap();
                flushes += 1;
            }
            90..=92 => writer.compact().await.unwrap(),
            93..=96 => {
                let r = rng.random_range(0..readers.len());
                readers[r].close().await.unwrap();
                let name = ["reader-a", "reader-b"][r];
                readers[r] = cairn::open(&node(dir, name, layout, true)).await.unwrap();
                restarts += 1;
            }
            _ => {
                // The writer's node dies; a new node with an empty data directory takes over.
                writer.close_without_flush().await.unwrap();
                writers += 1;
                writer = cairn::open(&node(dir, &format!("writer-{writers}"), layout, false))
                    .await
                    .unwrap();
            }
        }
    }
    assert!(flushes > 0 && restarts > 0 && writers > 0);
    // Every reader catches up with everything acknowledged.
    let newest = history.keys().next_back().map_or(0, |k| k.1);
    for (r, reader) in readers.iter().enumerate() {
        let mut seen = 0;
        for _ in 0..500 {
            seen = check(reader, &history, &format!("reader {r} at the end")).await;
            if seen >= newest {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(seen >= newest, "reader {r} stuck at {seen} of {newest}");
        let stats = reader.stats();
        assert!(
            stats
                .reader
                .as_ref()
                .is_some_and(|r| r.last_error.is_none()),
            "{stats:?}"
        );
    }
    for reader in readers {
        reader.close().await.unwrap();
    }
    writer.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readers_follow_a_writer_on_the_remote_layout() {
    let dir = tempfile::tempdir().unwrap();
    let servers = format!(
        "[default]\ndata_dir = \"{}\"\n",
        dir.path().join("servers").display()
    );
    let journal = start(&servers, Component::Journal).await;
    let storage = start(&servers, Component::Storage).await;
    let layout = format!(
        "[default.journal]\nkind = \"grpc\"\nurl = \"{}\"\n[default.storage]\nkind = \"grpc\"\nurl = \"{}\"\n",
        journal.url(),
        storage.url()
    );
    scenario(dir.path(), &layout).await;
    journal.stop().await.unwrap();
    storage.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readers_follow_a_writer_on_the_serverless_layout() {
    let dir = tempfile::tempdir().unwrap();
    let s3 = cairn_testkit::S3Endpoint::start();
    let layout = support::serverless_layout(&s3, "row_group_rows = 64\n");
    scenario(dir.path(), &layout).await;
}

/// A writer and a read replica as `cairn serve shard` processes on one bucket (an object
/// journal and Parquet tables in local files), and a router that lists the replica: the
/// replica catches up with the writer's writes, refuses writes itself, reports its
/// staleness, and the router's reads go on when the replica dies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_router_spreads_reads_over_a_read_only_shard_server() {
    use cairn::{GrpcShard, Shard};
    let dir = tempfile::tempdir().unwrap();
    let bucket = dir.path().join("bucket");
    let profile = dir.path().join("node.toml");
    std::fs::write(
        &profile,
        format!(
            "[default]\ndata_dir = \"unused\"\n[default.engine]\nreader_poll_ms = 20\n\
             [default.journal]\nkind = \"object\"\nurl = \"file://{0}/journal\"\n\
             [default.storage]\nkind = \"parquet\"\nurl = \"file://{0}/tables\"\n",
            bucket.display()
        ),
    )
    .unwrap();
    let data = |name: &str| dir.path().join(name).display().to_string();
    let writer = support::serve_args(
        &profile,
        &["serve", "shard", "--listen", "127.0.0.1:0"],
        &[("CAIRN_DATA_DIR", &data("writer"))],
    );
    let mut replica = support::serve_args(
        &profile,
        &["serve", "shard", "--read-only", "--listen", "127.0.0.1:0"],
        &[("CAIRN_DATA_DIR", &data("replica"))],
    );
    let router = Config::from_toml_str(
        &format!(
            "[default]\ndata_dir = \"{}\"\n[default.router]\nshards = [{{ kind = \"grpc\", url = \"{}\", replicas = [\"{}\"] }}]\n",
            data("router"),
            writer.url,
            replica.url
        ),
        None,
    )
    .unwrap();
    let db = cairn::open_router(&router).await.unwrap();
    for i in 0..100 {
        db.put(format!("k{i:03}"), format!("v{i}")).await.unwrap();
    }

    let mut o = cairn_rpc::ClientOptions::new(replica.url.clone());
    o.timeout = Duration::from_secs(3);
    // The replica took the router's cluster identity on first contact, as its writer did.
    let cluster = cairn::Cluster::open_or_create(&router.data_dir, 1).unwrap();
    let direct = GrpcShard::new(o, cluster.identity(0)).unwrap();
    let mut seen = None;
    for _ in 0..500 {
        seen = direct.get(b"k099").await.unwrap();
        if seen.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(seen.as_deref(), Some(&b"v99"[..]), "the replica caught up");
    let stats = direct.stats().await.unwrap();
    let r = stats
        .reader
        .expect("the replica reports how far behind it is");
    assert_eq!(r.poll_ms, 20);
    let e = direct
        .write({
            let mut b = WriteBatch::new();
            b.put("x", "y");
            b
        })
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("read-only"), "{e}");

    // Reads through the router take turns; all of them see the writes now.
    for i in 0..100 {
        let got = db.get(format!("k{i:03}").as_bytes()).await.unwrap();
        assert_eq!(got, Some(Bytes::from(format!("v{i}"))));
    }
    // A dead replica costs its turns a fallback, not an error.
    replica.kill();
    for i in 0..10 {
        assert!(
            db.get(format!("k{i:03}").as_bytes())
                .await
                .unwrap()
                .is_some()
        );
    }
    db.close().await.unwrap();
    drop(writer);
}
