//! Clones: a writable database made from a checkpoint of another, sharing its tables. It
//! reads the checkpoint, goes its own way through writes, reopens, replicas and
//! compactions, and holds the checkpoint (which then cannot be deleted or replaced) until
//! its compactions have rewritten every table it shares; then the parent's tables go, and
//! the clone reads the same. On every store: SSTables, Parquet, and the hybrid of both.

mod support;

use bytes::Bytes;
use cairn_compaction::LocalCompactor;
use cairn_engine::{Components, Db};
use cairn_filestore::Within;
use cairn_journal::MemoryJournal;
use cairn_memtable::MemtableOptions;
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;
use support::{Harness, JournalKind, StorageKind, all};

type Model = BTreeMap<Bytes, Bytes>;

fn rows(m: &Model) -> Vec<(Bytes, Bytes)> {
    m.clone().into_iter().collect()
}

fn key(i: u32) -> Bytes {
    Bytes::from(format!("k{i:04}"))
}

async fn put_all(db: &Db, model: &mut Model, keys: impl Iterator<Item = u32>, tag: &str) {
    for i in keys {
        let v = Bytes::from(format!("{tag}-{i}-{}", "x".repeat(40)));
        db.put(key(i), v.clone()).await.unwrap();
        model.insert(key(i), v);
    }
}

async fn delete_range(db: &Db, model: &mut Model, from: u32, to: u32) {
    db.delete_range(key(from), key(to)).await.unwrap();
    model.retain(|k, _| !(key(from)..key(to)).contains(k));
}

/// The database `name` beside the harness's own: its store, its own journal.
fn components(
    h: &Harness,
    stores: (
        Arc<dyn cairn_filestore::Storage>,
        Arc<dyn cairn_filestore::Storage>,
    ),
    journal: &Arc<MemoryJournal>,
) -> Components {
    Components {
        journal: journal.clone(),
        memtables: h.memtable.factory(),
        compactor: Arc::new(LocalCompactor::new(stores.1)),
        storage: stores.0,
    }
}

async fn open_named(h: &Harness, name: &str, journal: &Arc<MemoryJournal>) -> Db {
    let comps = components(h, h.storages_of(name).await, journal);
    Db::open(h.path().join(format!("{name}-node")), h.opts.clone(), comps)
        .await
        .expect("open the clone")
}

/// Flushes and compactions only when a test asks: what a clone shares stays shared until then.
fn quiet(mut h: Harness) -> Harness {
    h.opts.memtable_bytes = 8 << 20;
    h.opts.compaction.l0_trigger = 1_000;
    h.opts.l0_stop_writes = 2_000;
    h
}

async fn reference_of(h: &Harness, name: &str) -> String {
    h.storages_of(name)
        .await
        .0
        .reference()
        .expect("a reference")
}

/// Waits until the parent's store holds only the tables its levels reference: the ones only
/// the checkpoint kept have been deleted.
async fn wait_for_garbage_collection(h: &Harness, parent: &Db) {
    let storage = h.storages().await.0;
    for _ in 0..500 {
        let listed: HashSet<u64> = storage.list_tables().await.unwrap().into_iter().collect();
        let live: usize = parent.stats().levels.iter().map(|l| l.tables).sum();
        if listed.len() == live {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the tables only the released checkpoint referenced were never deleted");
}

async fn a_clone_shares_its_checkpoint_until_it_has_compacted(kind: StorageKind) {
    let h = quiet(Harness::new(JournalKind::Memory, MemtableOptions::default()).with_storage(kind));
    let parent = h.open().await;
    let mut at_checkpoint = Model::new();
    put_all(&parent, &mut at_checkpoint, 0..600, "first").await;
    parent.flush().await.unwrap();
    put_all(&parent, &mut at_checkpoint, 500..700, "second").await;
    let made = parent.create_checkpoint("base").await.unwrap();

    // The parent goes on; none of this is the clone's.
    let mut p = at_checkpoint.clone();
    put_all(&parent, &mut p, (0..700).step_by(2), "parent").await;
    delete_range(&parent, &mut p, 300, 400).await;

    let info = parent
        .create_clone("base", &reference_of(&h, "clone").await)
        .await
        .unwrap();
    assert_eq!(
        (info.tables, info.bytes),
        (made.tables, made.bytes),
        "{info:?}"
    );
    let journal = Arc::new(MemoryJournal::new());
    let clone = open_named(&h, "clone", &journal).await;
    assert_eq!(all(&clone).await, rows(&at_checkpoint));
    assert_ne!(clone.stats().database, parent.stats().database);

    // Its own way: writes over shared keys, a range delete, its own flushes.
    let mut c = at_checkpoint.clone();
    put_all(&clone, &mut c, (0..700).step_by(3), "clone").await;
    delete_range(&clone, &mut c, 100, 200).await;
    clone.flush().await.unwrap();
    assert_eq!(all(&clone).await, rows(&c));
    assert_eq!(all(&parent).await, rows(&p));
    // A checkpoint of the clone shares the parent's tables as well.
    clone.create_checkpoint("mine").await.unwrap();

    // Held: the checkpoint is neither deleted nor replaced, even once the parent's own
    // levels no longer reference its tables.
    for e in [
        parent.delete_checkpoint("base").await.unwrap_err(),
        parent.create_checkpoint("base").await.unwrap_err(),
    ] {
        let e = e.to_string();
        assert!(e.contains("held") && e.contains(&info.database), "{e}");
    }
    parent.compact().await.unwrap();
    assert_eq!(all(&parent).await, rows(&p));

    // Reopened, and followed by a replica, the clone reads the same.
    clone.close().await.unwrap();
    let clone = open_named(&h, "clone", &journal).await;
    assert_eq!(all(&clone).await, rows(&c));
    let replica = Db::open_reader(
        h.path().join("clone-replica"),
        h.opts.clone(),
        components(&h, h.storages_of("clone").await, &journal),
    )
    .await
    .unwrap();
    assert_eq!(all(&replica).await, rows(&c));
    replica.close().await.unwrap();

    // A full compaction rewrites every shared table into the clone's own; its checkpoint
    // still holds the parent's until it is deleted.
    clone.compact().await.unwrap();
    assert_eq!(all(&clone).await, rows(&c));
    let e = parent.delete_checkpoint("base").await.unwrap_err();
    assert!(e.to_string().contains("held"), "{e}");
    clone.delete_checkpoint("mine").await.unwrap();
    parent.delete_checkpoint("base").await.unwrap();
    wait_for_garbage_collection(&h, &parent).await;

    assert_eq!(all(&clone).await, rows(&c));
    clone.close().await.unwrap();
    let clone = open_named(&h, "clone", &journal).await;
    assert_eq!(all(&clone).await, rows(&c));
    assert_eq!(all(&parent).await, rows(&p));
    clone.close().await.unwrap();
    parent.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clone_on_sstables_shares_its_checkpoint_until_it_has_compacted() {
    a_clone_shares_its_checkpoint_until_it_has_compacted(StorageKind::Sst).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clone_on_parquet_shares_its_checkpoint_until_it_has_compacted() {
    a_clone_shares_its_checkpoint_until_it_has_compacted(StorageKind::Parquet).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clone_on_the_hybrid_store_shares_its_checkpoint_until_it_has_compacted() {
    a_clone_shares_its_checkpoint_until_it_has_compacted(StorageKind::Hybrid).await;
}

/// A clone of a clone reads its grandparent's tables where they are; the grandparent's
/// checkpoint stays held through the middle database's checkpoint until the youngest has
/// compacted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clone_of_a_clone_holds_its_grandparents_tables() {
    let h = quiet(Harness::new(
        JournalKind::Memory,
        MemtableOptions::default(),
    ));
    let root = h.open().await;
    let mut r = Model::new();
    put_all(&root, &mut r, 0..400, "root").await;
    root.create_checkpoint("r1").await.unwrap();

    let j1 = Arc::new(MemoryJournal::new());
    root.create_clone("r1", &reference_of(&h, "one").await)
        .await
        .unwrap();
    let one = open_named(&h, "one", &j1).await;
    let mut m1 = r.clone();
    put_all(&one, &mut m1, 200..500, "one").await;
    one.create_checkpoint("o1").await.unwrap();

    let j2 = Arc::new(MemoryJournal::new());
    one.create_clone("o1", &reference_of(&h, "two").await)
        .await
        .unwrap();
    let two = open_named(&h, "two", &j2).await;
    assert_eq!(all(&two).await, rows(&m1));
    let mut m2 = m1.clone();
    put_all(&two, &mut m2, 0..100, "two").await;

    // The middle one detaches itself; its checkpoint still holds the root's tables.
    one.compact().await.unwrap();
    assert!(root.delete_checkpoint("r1").await.is_err());
    assert!(one.delete_checkpoint("o1").await.is_err());

    two.compact().await.unwrap();
    one.delete_checkpoint("o1").await.unwrap();
    root.delete_checkpoint("r1").await.unwrap();
    wait_for_garbage_collection(&h, &root).await;
    assert_eq!(all(&two).await, rows(&m2));
    assert_eq!(all(&one).await, rows(&m1));
    assert_eq!(all(&root).await, rows(&r));
    for db in [two, one, root] {
        db.close().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clone_needs_a_checkpoint_and_an_empty_store_of_its_own() {
    let h = Harness::new(JournalKind::Memory, MemtableOptions::default());
    let db = h.open().await;
    db.put("k", "v").await.unwrap();
    db.create_checkpoint("c").await.unwrap();
    let target = reference_of(&h, "clone").await;

    let e = db.create_clone("nope", &target).await.unwrap_err();
    assert!(e.to_string().contains("no checkpoint named"), "{e}");
    let own = h.storage().reference().unwrap();
    let e = db.create_clone("c", &own).await.unwrap_err();
    assert!(e.to_string().contains("store of its own"), "{e}");
    db.create_clone("c", &target).await.unwrap();
    let e = db.create_clone("c", &target).await.unwrap_err();
    assert!(e.to_string().contains("not empty"), "{e}");

    // A reader makes no clones.
    let reader = h.open_reader("reader").await;
    assert!(reader.create_clone("c", &target).await.is_err());
    reader.close().await.unwrap();
    db.close().await.unwrap();
}

/// A shard split: two clones of one checkpoint, each within its side of a key. Each reads
/// only its side (a range tombstone across the cut included), writes and compacts on its
/// own, and the parent's checkpoint stays held until both have rewritten what they share.
/// Making the split takes two manifest versions whatever the size; a retry finds each
/// child made.
async fn a_split_gives_each_child_its_side(kind: StorageKind) {
    let h = quiet(Harness::new(JournalKind::Memory, MemtableOptions::default()).with_storage(kind));
    let parent = h.open().await;
    let mut m = Model::new();
    put_all(&parent, &mut m, 0..600, "first").await;
    parent.flush().await.unwrap();
    put_all(&parent, &mut m, 500..700, "second").await;
    delete_range(&parent, &mut m, 250, 350).await;
    parent.create_checkpoint("split").await.unwrap();

    let cut = key(300);
    let sides = [
        (
            "left",
            Within {
                lower: None,
                upper: Some(cut.to_vec()),
            },
        ),
        (
            "right",
            Within {
                lower: Some(cut.to_vec()),
                upper: None,
            },
        ),
    ];
    let mut children = Vec::new();
    for (name, within) in &sides {
        let target = reference_of(&h, name).await;
        assert_eq!(
            parent.find_clone("split", &target, within).await.unwrap(),
            None
        );
        let made = parent
            .create_clone_within("split", &target, within)
            .await
            .unwrap();
        let found = parent.find_clone("split", &target, within).await.unwrap();
        assert_eq!(found.as_ref(), Some(&made), "a retry finds the child made");
        let other = Within {
            lower: Some(b"x".to_vec()),
            upper: None,
        };
        assert_eq!(
            parent.find_clone("split", &target, &other).await.unwrap(),
            None
        );
        let journal = Arc::new(MemoryJournal::new());
        let db = open_named(&h, name, &journal).await;
        let mut side: Model = m.clone();
        side.retain(|k, _| within.contains(k));
        children.push((db, side, journal, *name));
    }
    for (db, side, _, name) in &children {
        assert_eq!(all(db).await, rows(side), "{name} reads its side only");
        let other_side = if *name == "left" { key(600) } else { key(10) };
        assert_eq!(db.get(&other_side).await.unwrap(), None, "{name}");
    }

    // Each goes its own way, and compacts what it shares into tables of its own.
    let (l, r) = children.split_at_mut(1);
    put_all(&l[0].0, &mut l[0].1, 0..300, "left").await;
    delete_range(&r[0].0, &mut r[0].1, 400, 450).await;
    put_all(&r[0].0, &mut r[0].1, 300..320, "right").await;
    for (db, side, _, name) in &children {
        db.compact().await.unwrap();
        assert_eq!(all(db).await, rows(side), "{name} after its compaction");
    }
    parent.delete_checkpoint("split").await.unwrap();
    wait_for_garbage_collection(&h, &parent).await;
    for (db, side, journal, name) in children {
        db.close().await.unwrap();
        let db = open_named(&h, name, &journal).await;
        // The parent's tables it shared are gone: it reads its own alone.
        assert_eq!(all(&db).await, rows(&side), "{name} reopened");
        db.close().await.unwrap();
    }
    parent.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_split_on_sstables_gives_each_child_its_side() {
    a_split_gives_each_child_its_side(StorageKind::Sst).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_split_on_parquet_gives_each_child_its_side() {
    a_split_gives_each_child_its_side(StorageKind::Parquet).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_split_on_the_hybrid_store_gives_each_child_its_side() {
    a_split_gives_each_child_its_side(StorageKind::Hybrid).await;
}
