//! Subcompactions: a large compaction cut by key range into parts that run at once. The
//! database reads the same after them, through reopens; a part that fails fails the
//! compaction, and the other parts' tables, which nothing installs, are deleted at once.

mod support;

use async_trait::async_trait;
use bytes::Bytes;
use cairn_common::{Error, Result, TableMeta};
use cairn_compaction::{CompactionJob, Compactor, LocalCompactor};
use cairn_engine::Db;
use cairn_memtable::MemtableOptions;
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use support::{Harness, JournalKind, all};

async fn fill(db: &Db, model: &mut BTreeMap<Bytes, Bytes>, round: u32) {
    for i in 0..3000u32 {
        let k = Bytes::from(format!("k{:05}", (i * 7919) % 3000));
        let v = Bytes::from(format!("{round}-{i}-{}", "v".repeat(40)));
        db.put(k.clone(), v.clone()).await.unwrap();
        model.insert(k, v);
    }
    db.delete_range("k01000", "k01100").await.unwrap();
    model.retain(|k, _| !(&b"k01000"[..]..&b"k01100"[..]).contains(&&k[..]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_compaction_runs_as_subcompactions_and_reads_the_same() {
    let h = Harness::new(JournalKind::Memory, MemtableOptions::default());
    assert_eq!(h.opts.compaction.subcompactions, 3);
    let db = h.open().await;
    let mut model = BTreeMap::new();
    fill(&db, &mut model, 1).await;
    fill(&db, &mut model, 2).await;
    db.compact().await.unwrap();
    let s = db.stats();
    assert!(
        s.split_compactions > 0 && s.subcompactions >= 2 * s.split_compactions,
        "{} compactions, {} split into {} parts",
        s.compactions,
        s.split_compactions,
        s.subcompactions
    );
    let want: Vec<(Bytes, Bytes)> = model.clone().into_iter().collect();
    assert_eq!(all(&db).await, want);
    for (k, v) in model.iter().step_by(97) {
        assert_eq!(db.get(k).await.unwrap().as_ref(), Some(v), "{k:?}");
    }
    db.close().await.unwrap();
    let db = h.open().await;
    assert_eq!(all(&db).await, want);
    db.close().await.unwrap();
}

/// Fails every part of a job but its first while `failing` is set.
struct FailingParts {
    inner: LocalCompactor,
    failing: AtomicUsize,
}

#[async_trait]
impl Compactor for FailingParts {
    async fn compact(&self, job: CompactionJob) -> Result<Vec<TableMeta>> {
        if job.lower.is_some() && self.failing.load(Ordering::Relaxed) > 0 {
            return Err(Error::component("test compactor", "this part fails"));
        }
        self.inner.compact(job).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_part_fails_the_compaction_and_leaves_no_tables_behind() {
    let mut h = Harness::new(JournalKind::Memory, MemtableOptions::default());
    // Only the compactions this test asks for.
    h.opts.compaction.l0_trigger = 1_000;
    h.opts.l0_stop_writes = 2_000;
    let storage = h.storage();
    let compactor = Arc::new(FailingParts {
        inner: LocalCompactor::new(storage.clone()),
        failing: AtomicUsize::new(1),
    });
    let mut comps = h.components(storage.clone());
    comps.compactor = compactor.clone();
    let db = Db::open(h.path(), h.opts.clone(), comps).await.unwrap();
    let mut model = BTreeMap::new();
    fill(&db, &mut model, 1).await;
    db.flush().await.unwrap();
    let before: HashSet<u64> = storage.list_tables().await.unwrap().into_iter().collect();

    let e = db.compact().await.unwrap_err();
    assert!(e.to_string().contains("this part fails"), "{e}");
    let after: HashSet<u64> = storage.list_tables().await.unwrap().into_iter().collect();
    assert_eq!(after, before, "the parts that ran left nothing behind");
    let want: Vec<(Bytes, Bytes)> = model.into_iter().collect();
    assert_eq!(all(&db).await, want);

    compactor.failing.store(0, Ordering::Relaxed);
    db.compact().await.unwrap();
    assert!(db.stats().split_compactions > 0);
    assert_eq!(all(&db).await, want);
    db.close().await.unwrap();
}

/// Holds every part until the test lets them go.
struct Gate {
    inner: LocalCompactor,
    open: tokio::sync::Semaphore,
}

#[async_trait]
impl Compactor for Gate {
    async fn compact(&self, job: CompactionJob) -> Result<Vec<TableMeta>> {
        drop(self.open.acquire().await);
        self.inner.compact(job).await
    }
}

/// While a compaction runs, `stats` shows it: its levels, its input, and its parts (here,
/// run in this process).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_show_a_running_compaction_and_its_parts() {
    let mut h = Harness::new(JournalKind::Memory, MemtableOptions::default());
    h.opts.compaction.l0_trigger = 1_000;
    h.opts.l0_stop_writes = 2_000;
    let storage = h.storage();
    let gate = Arc::new(Gate {
        inner: LocalCompactor::new(storage.clone()),
        open: tokio::sync::Semaphore::new(0),
    });
    let mut comps = h.components(storage);
    comps.compactor = gate.clone();
    let db = Arc::new(Db::open(h.path(), h.opts.clone(), comps).await.unwrap());
    let mut model = BTreeMap::new();
    fill(&db, &mut model, 1).await;
    db.flush().await.unwrap();
    assert_eq!(db.stats().compacting, None);
    let compacting = tokio::spawn({
        let db = db.clone();
        async move { db.compact().await }
    });
    let seen = loop {
        if let Some(c) = db.stats().compacting {
            break c;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    };
    assert_eq!((seen.level, seen.output_level), (0, 1));
    assert!(seen.input_bytes > 0);
    assert_eq!(seen.parts, vec![None; 3], "three parts, in this process");
    gate.open.add_permits(1_000);
    compacting.await.unwrap().unwrap();
    assert_eq!(db.stats().compacting, None);
    let want: Vec<(Bytes, Bytes)> = model.into_iter().collect();
    assert_eq!(all(&db).await, want);
}
