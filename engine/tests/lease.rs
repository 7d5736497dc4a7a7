//! Leases: two nodes, each with a file journal of its own, share one table store and
//! manifest (Parquet in a directory both reach). Only the lease keeps them apart: a node
//! taking over never sees the other's journal, so the old writer must stop acknowledging by
//! itself, and a live one must not be taken over.

mod support;

use bytes::Bytes;
use cairn_common::Error;
use cairn_compaction::LocalCompactor;
use cairn_engine::{Components, Db, EngineOptions};
use cairn_filestore::{FaultyStorage, ParquetOptions, ParquetStorage, Storage};
use cairn_journal::{FileJournal, FileJournalOptions};
use cairn_memtable::MemtableOptions;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Long enough that a reopen that does not wait is far below it on a loaded machine.
const LEASE: Duration = Duration::from_millis(2_000);

fn options() -> EngineOptions {
    EngineOptions {
        lease_ms: LEASE.as_millis() as u64,
        ..support::tiny_options()
    }
}

/// One node: its own data directory and file journal, the shared store.
fn node(root: &Path, name: &str, storage: Arc<dyn Storage>) -> (std::path::PathBuf, Components) {
    let dir = root.join(name);
    let journal = FileJournal::open(FileJournalOptions::new(dir.join("journal"))).unwrap();
    let comps = Components {
        journal: Arc::new(journal),
        memtables: MemtableOptions::default().factory(),
        compactor: Arc::new(LocalCompactor::new(storage.clone())),
        storage,
    };
    (dir.join("data"), comps)
}

fn shared(root: &Path) -> Arc<FaultyStorage> {
    let parquet = ParquetStorage::open(ParquetOptions {
        url: format!("file://{}/bucket", root.display()),
        ..ParquetOptions::default()
    })
    .unwrap();
    FaultyStorage::new(Arc::new(parquet))
}

/// The scenario of a replaced writer that went on acknowledging: node B opening while A
/// serves. B waits, sees A renew, and refuses, naming A; A keeps the database and every
/// write it acknowledges. Once A closes (letting go), B takes over at once with all of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_writer_is_not_taken_over_and_a_closed_one_lets_go() {
    let root = tempfile::tempdir().unwrap();
    let store = shared(root.path());
    let (a_dir, a_comps) = node(root.path(), "a", store.clone());
    let a = Db::open(&a_dir, options(), a_comps).await.unwrap();
    a.put("k1", "v1").await.unwrap();

    let (b_dir, b_comps) = node(root.path(), "b", store.clone());
    let e = match Db::open(&b_dir, options(), b_comps).await {
        Ok(_) => panic!("B took over a live writer"),
        Err(e) => e,
    };
    assert!(matches!(e, Error::Held(_)), "{e}");
    assert!(e.to_string().contains("alive"), "{e}");

    a.put("k2", "v2").await.unwrap();
    a.close().await.unwrap();
    drop(a);
    let newest = cairn_engine::manifest::load(store.manifests().as_ref())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(newest.lease, None, "a closed writer let go of its lease");

    let (b_dir, b_comps) = node(root.path(), "b", store.clone());
    let b = Db::open(&b_dir, options(), b_comps).await.unwrap();
    assert_eq!(b.get(b"k1").await.unwrap(), Some(Bytes::from("v1")));
    assert_eq!(b.get(b"k2").await.unwrap(), Some(Bytes::from("v2")));
    b.close().await.unwrap();
}

/// A writer that stopped without letting go (killed) is waited out: the next writer on
/// another node opens only after the lease and its margin, and finds what was flushed.
/// The same node reopening its own journal need not wait.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_writer_is_waited_out_and_its_own_node_reopens_at_once() {
    let root = tempfile::tempdir().unwrap();
    let store = shared(root.path());
    let (a_dir, a_comps) = node(root.path(), "a", store.clone());
    let a = Db::open(&a_dir, options(), a_comps).await.unwrap();
    a.put("flushed", "1").await.unwrap();
    a.flush().await.unwrap();
    a.put("journal only", "2").await.unwrap();
    a.close_without_flush().await.unwrap();
    drop(a);

    // Its own node, restarting: the journal's claim fences the old process.
    let (a_dir, a_comps) = node(root.path(), "a", store.clone());
    let started = Instant::now();
    let a = Db::open(&a_dir, options(), a_comps).await.unwrap();
    assert!(started.elapsed() < LEASE, "{:?}", started.elapsed());
    assert_eq!(
        a.get(b"journal only").await.unwrap(),
        Some(Bytes::from("2"))
    );
    a.close_without_flush().await.unwrap();
    drop(a);

    let (b_dir, b_comps) = node(root.path(), "b", store.clone());
    let started = Instant::now();
    let b = Db::open(&b_dir, options(), b_comps).await.unwrap();
    assert!(
        started.elapsed() >= LEASE.mul_f64(1.1),
        "waited out the lease: {:?}",
        started.elapsed()
    );
    assert_eq!(b.get(b"flushed").await.unwrap(), Some(Bytes::from("1")));
    b.close().await.unwrap();
}

/// A writer cut off from the storage tier cannot renew: within the lease it stops
/// acknowledging (the write is refused, not lost silently), a node that takes over meanwhile
/// has every write that was acknowledged, and the old writer, back in touch, is fenced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_writer_that_cannot_renew_stops_acknowledging() {
    let root = tempfile::tempdir().unwrap();
    let store = shared(root.path());
    let (a_dir, a_comps) = node(root.path(), "a", store.clone());
    let a = Db::open(&a_dir, options(), a_comps).await.unwrap();
    a.put("before", "1").await.unwrap();
    a.flush().await.unwrap();

    store.set_manifest_outage(true);
    let cut = Instant::now();
    let mut refused = None;
    while cut.elapsed() < LEASE * 4 {
        match a.put("during", "x").await {
            Ok(_) => {}
            Err(e) => {
                refused = Some(e);
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let e = refused.expect("writes are refused once the lease lapses");
    assert!(!e.is_fenced() && e.to_string().contains("lease"), "{e}");

    // B reaches the store (A does not) and waits A out; A acknowledged nothing since its
    // lease lapsed, and acknowledges nothing now. (What it acknowledged before is in its own
    // journal only, as unflushed writes in a node's own journal are: docs/operations.md.)
    let b_store = shared(root.path());
    let (b_dir, b_comps) = node(root.path(), "b", b_store);
    let b = Db::open(&b_dir, options(), b_comps).await.unwrap();
    assert!(
        a.put("during", "y").await.is_err(),
        "nothing acknowledged after the take-over"
    );
    b.put("b", "1").await.unwrap();

    store.set_manifest_outage(false);
    let mut fenced = None;
    let back = Instant::now();
    while back.elapsed() < LEASE * 4 {
        if let Err(e) = a.put("after", "x").await
            && e.is_fenced()
        {
            fenced = Some(e);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let e = fenced.expect("the old writer learns of the fence");
    assert!(e.is_fenced(), "{e}");
    assert_eq!(b.get(b"before").await.unwrap(), Some(Bytes::from("1")));
    assert_eq!(b.get(b"after").await.unwrap(), None);
    b.close().await.unwrap();
}

/// Renewing the lease does not wait behind the writer's other background work. A flush
/// that holds its thread (CPU-bound work or a blocking fsync does) for longer than the lease
/// must not make the writer refuse writes meanwhile: a heartbeat that shares a worker with
/// the heavy work misses its beats exactly when the node is busiest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_writer_keeps_its_lease_while_its_background_work_holds_a_thread() {
    let root = tempfile::tempdir().unwrap();
    let store = shared(root.path());
    let (a_dir, a_comps) = node(root.path(), "a", store.clone());
    let a = Arc::new(Db::open(&a_dir, options(), a_comps).await.unwrap());
    a.put("before", "1").await.unwrap();

    store.set_stall(LEASE.mul_f64(1.5));
    let flushing = tokio::spawn({
        let a = a.clone();
        async move { a.flush().await }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = Instant::now();
    let mut n = 0;
    while started.elapsed() < LEASE.mul_f64(1.2) {
        a.put(format!("during{n}"), "x")
            .await
            .unwrap_or_else(|e| panic!("write {n}, {:?} into the stall: {e}", started.elapsed()));
        n += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    store.set_stall(Duration::ZERO);
    flushing.await.unwrap().unwrap();
    assert_eq!(a.get(b"during0").await.unwrap(), Some(Bytes::from("x")));
    Arc::into_inner(a).unwrap().close().await.unwrap();
}
