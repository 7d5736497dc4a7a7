//! The deterministic simulation: one seed decides every interleaving and fault. Everything
//! runs on one current-thread runtime with tokio's paused clock (background work included,
//! `background_threads = 0`), over components that spawn no threads of their own: memory
//! journals and Parquet tables in an in-memory object store. Each storage call is one step
//! (a seeded delay, then the call run to its end), each journal append lands after a seeded
//! delay, so appends begun in one order land in another; the manifest store goes dark for
//! seeded spells. Every answer is kept with its virtual time and checked at the end against
//! what the clients were acknowledged.
//!
//! Two scenarios, each over `SIM_SEEDS` seeds (default 12; `SIM_SEED=N` replays one):
//! - `replica`: four clients write to a writer whose journal a replica follows, with flushes
//!   and compactions beside them; every snapshot either database hands out must show exactly
//!   the writes numbered at or below it (a prefix the writer made visible, fixed once taken).
//! - `takeover`: clients write to node A, whose journal only A reaches; A is cut off from the
//!   manifest and node B takes over: A must acknowledge nothing once B is open.
//!
//! A failing seed panics naming itself and the command that replays it; a replay prints
//! the same trace (the test runs its first seed twice and compares).

use bytes::Bytes;
use cairn_common::{Entry, KeyRange, Result, TableId, TableMeta};
use cairn_compaction::LocalCompactor;
use cairn_engine::{Components, Db, EngineOptions};
use cairn_filestore::{
    FaultyStorage, ManifestStore, ParquetOptions, ParquetStorage, Storage, Table, TableBuilder,
};
use cairn_journal::{FaultyJournal, Journal, MemoryJournal};
use cairn_memtable::MemtableOptions;
use parking_lot::Mutex;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

mod support;

/// The seed's random source, shared by every actor and fault. The runtime has one thread
/// and runs tasks in a fixed order, so draws happen in the same order on every replay.
#[derive(Clone)]
struct Dice(Arc<Mutex<StdRng>>);

impl Dice {
    fn new(seed: u64) -> Dice {
        Dice(Arc::new(Mutex::new(StdRng::seed_from_u64(seed))))
    }

    fn millis(&self, range: std::ops::Range<u64>) -> Duration {
        Duration::from_micros(
            self.0
                .lock()
                .random_range(range.start * 1000..range.end * 1000),
        )
    }

    fn below(&self, n: u32) -> u32 {
        self.0.lock().random_range(0..n)
    }
}

/// What happened, in order, with virtual times: a replay must print the same. The store's
/// name, new for every run (in-memory stores live as long as the process), reads `<store>`.
#[derive(Clone)]
struct Trace {
    lines: Arc<Mutex<Vec<String>>>,
    store: Arc<String>,
}

impl Trace {
    fn new() -> Trace {
        static RUNS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let run = RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Trace {
            lines: Arc::default(),
            store: Arc::new(format!("memory://sim-{}-{run}", std::process::id())),
        }
    }

    fn log(&self, start: Instant, what: impl std::fmt::Display) {
        let what = what.to_string().replace(self.store.as_str(), "<store>");
        // Database ids are random; everything else in a line is the seed's.
        let what: Vec<String> = what
            .split(' ')
            .map(|w| {
                let id = w.trim_end_matches([':', ',', ')']);
                match id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()) {
                    true => w.replace(id, "<id>"),
                    false => w.to_string(),
                }
            })
            .collect();
        let what = what.join(" ");
        self.lines
            .lock()
            .push(format!("{:>9}us {what}", start.elapsed().as_micros()));
    }

    fn lines(&self) -> Vec<String> {
        self.lines.lock().clone()
    }
}

/// Storage whose every table write is one step of the simulation: a seeded delay, then the
/// inner call run to its end before anything else runs. The Parquet writer encodes on the
/// blocking pool, whose timing no seed decides; run to its end, that cannot reorder anything.
/// (Tables here stay below one upload part, so the writer spawns no upload tasks.)
struct Stepped {
    inner: Arc<dyn Storage>,
    dice: Dice,
}

#[async_trait::async_trait]
impl Storage for Stepped {
    async fn create_table(&self, id: TableId, level: u32) -> Result<Box<dyn TableBuilder>> {
        tokio::time::sleep(self.dice.millis(0..3)).await;
        let inner = self.inner.create_table(id, level).await?;
        Ok(Box::new(SteppedBuilder {
            inner,
            dice: self.dice.clone(),
        }))
    }

    async fn open_table(&self, meta: &TableMeta) -> Result<Arc<dyn Table>> {
        self.inner.open_table(meta).await
    }

    async fn delete_table(&self, id: TableId) -> Result<()> {
        self.inner.delete_table(id).await
    }

    async fn list_tables(&self) -> Result<Vec<TableId>> {
        self.inner.list_tables().await
    }

    fn manifests(&self) -> Arc<dyn ManifestStore> {
        self.inner.manifests()
    }
}

struct SteppedBuilder {
    inner: Box<dyn TableBuilder>,
    dice: Dice,
}

#[async_trait::async_trait]
impl TableBuilder for SteppedBuilder {
    async fn add(&mut self, entries: &[Entry]) -> Result<()> {
        futures::executor::block_on(self.inner.add(entries))
    }

    fn estimated_size(&self) -> u64 {
        self.inner.estimated_size()
    }

    async fn finish(self: Box<Self>) -> Result<TableMeta> {
        tokio::time::sleep(self.dice.millis(0..5)).await;
        futures::executor::block_on(self.inner.finish())
    }

    async fn abandon(self: Box<Self>) -> Result<()> {
        futures::executor::block_on(self.inner.abandon())
    }
}

fn options(lease_ms: u64) -> EngineOptions {
    EngineOptions {
        background_threads: 0,
        reader_poll_ms: 3,
        // A replica may still read a table the writer compacted away this long after.
        table_grace_ms: 1_000,
        lease_ms,
        ..support::tiny_options()
    }
}

/// The tables and manifest every node of one seed shares.
fn shared_tables(trace: &Trace, dice: &Dice) -> Arc<dyn Storage> {
    let parquet = ParquetStorage::open(ParquetOptions {
        url: trace.store.to_string(),
        row_group_rows: 64,
        ..ParquetOptions::default()
    })
    .expect("an in-memory store opens");
    Arc::new(Stepped {
        inner: Arc::new(parquet),
        dice: dice.clone(),
    })
}

/// A memory journal whose appends and replays are delayed by drawn amounts (so appends land
/// out of order), and, with `lost_answers`, one append in 40 lands with its answer lost.
fn journal(dice: &Dice, lost_answers: bool) -> Arc<FaultyJournal> {
    let journal = FaultyJournal::new(Arc::new(MemoryJournal::new()));
    journal.set_jitter({
        let dice = dice.clone();
        move || dice.millis(0..4)
    });
    if lost_answers {
        journal.set_lost_answers({
            let dice = dice.clone();
            move || dice.below(40) == 0
        });
    }
    journal
}

/// One node's view of the shared tables: its own outages of the manifest store.
fn node(journal: Arc<dyn Journal>, tables: &Arc<dyn Storage>) -> (Arc<FaultyStorage>, Components) {
    let storage = FaultyStorage::new(tables.clone());
    let comps = Components {
        journal,
        memtables: MemtableOptions::default().factory(),
        compactor: Arc::new(LocalCompactor::new(storage.clone())),
        storage: storage.clone(),
    };
    (storage, comps)
}

/// Seqs of acknowledged writes by key, and what each handed-out snapshot showed.
#[derive(Default)]
struct Seen {
    acked: BTreeMap<Bytes, u64>,
    /// (who, snapshot seq, keys it showed)
    views: Vec<(&'static str, u64, Vec<Bytes>)>,
}

async fn look(db: &Db, who: &'static str, seen: &Mutex<Seen>, trace: &Trace, start: Instant) {
    let snap = db.snapshot();
    let keys = match db.scan_at(KeyRange::all(), &snap).await {
        Ok(it) => it.collect(None).await,
        Err(e) => Err(e),
    };
    match keys {
        Ok(kv) => {
            let keys: Vec<Bytes> = kv.into_iter().map(|(k, _)| k).collect();
            trace.log(
                start,
                format!("{who} view at {}: {} keys", snap.seq(), keys.len()),
            );
            seen.lock().views.push((who, snap.seq(), keys));
        }
        Err(e) => trace.log(start, format!("{who} view failed: {e}")),
    }
}

/// Writers, a replica, flushes and compactions; every view must be the prefix its
/// snapshot names.
async fn replica(
    seed: u64,
    root: &Path,
    trace: Trace,
    lost_answers: bool,
) -> std::result::Result<(), String> {
    let dice = Dice::new(seed);
    let start = Instant::now();
    let tables = shared_tables(&trace, &dice);
    let journal = journal(&dice, lost_answers);
    let (_, comps) = node(journal.clone(), &tables);
    let writer = Arc::new(
        Db::open(root.join("w"), options(0), comps.clone())
            .await
            .map_err(|e| format!("writer open: {e}"))?,
    );
    let reader = Arc::new(
        Db::open_reader(root.join("r"), options(0), comps)
            .await
            .map_err(|e| format!("reader open: {e}"))?,
    );
    let seen = Arc::new(Mutex::new(Seen::default()));
    let mut actors = Vec::new();
    for c in 0..4 {
        let (w, dice, seen, trace) = (writer.clone(), dice.clone(), seen.clone(), trace.clone());
        actors.push(tokio::spawn(async move {
            for i in 0..30 {
                tokio::time::sleep(dice.millis(0..3)).await;
                let key = Bytes::from(format!("c{c}-{i:03}"));
                let value = Bytes::from(vec![b'v'; 40 + dice.below(200) as usize]);
                let seq = match w.put(key.clone(), value).await {
                    Ok(seq) => seq,
                    // In doubt: the view check finds it if anything shows it.
                    Err(e) if lost_answers => {
                        trace.log(start, format!("refused {key:?}: {e}"));
                        continue;
                    }
                    Err(e) => return Err(format!("put {key:?}: {e}")),
                };
                trace.log(start, format!("acked {key:?} at {seq}"));
                seen.lock().acked.insert(key, seq);
            }
            Ok::<_, String>(())
        }));
    }
    {
        let (w, dice, trace) = (writer.clone(), dice.clone(), trace.clone());
        actors.push(tokio::spawn(async move {
            for _ in 0..4 {
                tokio::time::sleep(dice.millis(5..40)).await;
                w.flush().await.map_err(|e| format!("flush: {e}"))?;
                trace.log(start, "flushed");
            }
            Ok(())
        }));
    }
    {
        let (w, dice, seen, trace) = (writer.clone(), dice.clone(), seen.clone(), trace.clone());
        actors.push(tokio::spawn(async move {
            for n in 0..3 {
                tokio::time::sleep(dice.millis(5..50)).await;
                let entries: Vec<(Bytes, Bytes)> = (0..1 + dice.below(40))
                    .map(|k| (Bytes::from(format!("i{n}-{k:03}")), Bytes::from("imported")))
                    .collect();
                let seq = w
                    .import(entries.clone())
                    .await
                    .map_err(|e| format!("import {n}: {e}"))?;
                trace.log(start, format!("imported {} keys at {seq}", entries.len()));
                let mut seen = seen.lock();
                for (k, _) in entries {
                    seen.acked.insert(k, seq);
                }
            }
            Ok(())
        }));
    }
    for (db, who) in [(reader.clone(), "replica"), (writer.clone(), "writer")] {
        let (dice, seen, trace) = (dice.clone(), seen.clone(), trace.clone());
        actors.push(tokio::spawn(async move {
            for _ in 0..25 {
                tokio::time::sleep(dice.millis(0..6)).await;
                look(&db, who, &seen, &trace, start).await;
            }
            Ok(())
        }));
    }
    for a in actors {
        a.await.map_err(|e| format!("actor: {e}"))??;
    }
    prefixes_only(&seen.lock())?;
    reader
        .close()
        .await
        .map_err(|e| format!("reader close: {e}"))?;
    writer
        .close()
        .await
        .map_err(|e| format!("writer close: {e}"))?;
    Ok(())
}

/// Every view is exactly the acknowledged writes numbered at or below its snapshot.
fn prefixes_only(seen: &Seen) -> std::result::Result<(), String> {
    for (who, at, keys) in &seen.views {
        let want: Vec<&Bytes> = seen
            .acked
            .iter()
            .filter(|(_, s)| **s <= *at)
            .map(|(k, _)| k)
            .collect();
        let got: Vec<&Bytes> = keys.iter().collect();
        if got != want {
            let missing: Vec<_> = want.iter().filter(|k| !got.contains(k)).collect();
            let extra: Vec<_> = got.iter().filter(|k| !want.contains(k)).collect();
            return Err(format!(
                "the {who}'s snapshot at {at} is not the prefix it names: missing {missing:?} (acknowledged at or below it), extra {extra:?}"
            ));
        }
    }
    Ok(())
}

/// Node A writes into a journal only it reaches; cut off from the manifest, it is replaced
/// by node B. No write may be acknowledged by A once B is open.
async fn takeover(
    seed: u64,
    root: &Path,
    trace: Trace,
    lease_ms: u64,
) -> std::result::Result<(), String> {
    let dice = Dice::new(seed);
    let start = Instant::now();
    let tables = shared_tables(&trace, &dice);
    let (a_store, a_comps) = node(Arc::new(MemoryJournal::new()), &tables);
    let a = Arc::new(
        Db::open(root.join("a"), options(lease_ms), a_comps)
            .await
            .map_err(|e| format!("A open: {e}"))?,
    );
    let acks: Arc<Mutex<Vec<(Duration, Bytes)>>> = Arc::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut clients = Vec::new();
    for c in 0..3 {
        let (a, dice, acks, stop, trace) = (
            a.clone(),
            dice.clone(),
            acks.clone(),
            stop.clone(),
            trace.clone(),
        );
        clients.push(tokio::spawn(async move {
            let mut i = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                tokio::time::sleep(dice.millis(1..8)).await;
                let key = Bytes::from(format!("a{c}-{i:04}"));
                i += 1;
                match a.put(key.clone(), "x").await {
                    Ok(seq) => {
                        trace.log(start, format!("A acked {key:?} at {seq}"));
                        acks.lock().push((start.elapsed(), key));
                    }
                    Err(e) => trace.log(start, format!("A refused {key:?}: {e}")),
                }
            }
        }));
    }
    tokio::time::sleep(dice.millis(10..100)).await;
    a_store.set_manifest_outage(true);
    trace.log(start, "A cut off from the manifest");
    tokio::time::sleep(dice.millis(0..lease_ms.max(50) * 2)).await;
    let (_, b_comps) = node(Arc::new(MemoryJournal::new()), &tables);
    let b = Db::open(root.join("b"), options(lease_ms), b_comps)
        .await
        .map_err(|e| format!("B open: {e}"))?;
    let b_open = start.elapsed();
    trace.log(start, "B took over");
    b.put("b", "1").await.map_err(|e| format!("B put: {e}"))?;
    tokio::time::sleep(dice.millis(0..200)).await;
    a_store.set_manifest_outage(false);
    trace.log(start, "A back in touch");
    tokio::time::sleep(dice.millis(20..200)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for c in clients {
        c.await.map_err(|e| format!("client: {e}"))?;
    }
    if let Some((at, key)) = acks.lock().iter().find(|(at, _)| *at >= b_open) {
        return Err(format!(
            "A acknowledged {key:?} at {at:?}, after B took over at {b_open:?}: that write is in A's journal only, and lost"
        ));
    }
    let _ = a.close().await;
    b.close().await.map_err(|e| format!("B close: {e}"))?;
    Ok(())
}

/// What the crash scenario's clients were told: acknowledged writes (each key is written
/// once), writes in flight when a process died (either outcome is right, but only one, for
/// good), and those a reopen found absent, which must never come back.
#[derive(Default)]
struct Outcomes {
    acked: BTreeMap<Bytes, Bytes>,
    doubt: BTreeMap<Bytes, Bytes>,
    gone: std::collections::BTreeSet<Bytes>,
}

/// Checks a reopened database against what its clients were told, and settles the writes
/// in doubt: found ones count as acknowledged from now on, missing ones as gone.
async fn settle(db: &Db, outcomes: &Mutex<Outcomes>) -> std::result::Result<usize, String> {
    let found = db
        .scan(KeyRange::all())
        .await
        .map_err(|e| format!("scan: {e}"))?
        .collect(None)
        .await
        .map_err(|e| format!("scan: {e}"))?;
    let found: BTreeMap<Bytes, Bytes> = found.into_iter().collect();
    let mut o = outcomes.lock();
    for (k, v) in &o.acked {
        if found.get(k) != Some(v) {
            return Err(format!(
                "acknowledged {k:?} is {:?} after the crash",
                found.get(k)
            ));
        }
    }
    for (k, v) in &found {
        if o.gone.contains(k) {
            return Err(format!("{k:?}, missing after an earlier crash, came back"));
        }
        if o.acked.get(k) != Some(v) && o.doubt.get(k) != Some(v) {
            return Err(format!("{k:?} = {v:?} was never written"));
        }
    }
    let doubt = std::mem::take(&mut o.doubt);
    for (k, v) in doubt {
        if found.contains_key(&k) {
            o.acked.insert(k, v);
        } else {
            o.gone.insert(k);
        }
    }
    Ok(found.len())
}

/// The writer's process dies at a seeded moment, again and again: its runtime is dropped
/// with every task wherever it was (in a flush, a compaction, an import, an append on its
/// way), and the next life opens the same journal and tables. Every acknowledged write must
/// be there, nothing never written, and a write in flight either there or not, for good.
fn crash(seed: u64, root: &Path, trace: &Trace) -> std::result::Result<(), String> {
    const LIVES: usize = 4;
    let dice = Dice::new(seed);
    let tables = shared_tables(trace, &dice);
    let journal = journal(&dice, true);
    let outcomes: Arc<Mutex<Outcomes>> = Arc::default();
    for life in 0..LIVES {
        let rt = paused_runtime();
        let lived = rt.block_on(async {
            let life_span = async {
                let start = Instant::now();
                let (_, comps) = node(journal.clone(), &tables);
                let db = Arc::new(
                    Db::open(root.join("db"), options(0), comps)
                        .await
                        .map_err(|e| format!("life {life}: open: {e}"))?,
                );
                let keys = settle(&db, &outcomes)
                    .await
                    .map_err(|e| format!("life {life}: {e}"))?;
                trace.log(start, format!("life {life}: opened with {keys} keys"));
                if life + 1 == LIVES {
                    return db.close().await.map_err(|e| format!("close: {e}"));
                }
                let mut actors = Vec::new();
                for c in 0..3 {
                    let (db, dice, outcomes, trace) =
                        (db.clone(), dice.clone(), outcomes.clone(), trace.clone());
                    actors.push(tokio::spawn(async move {
                        for i in 0.. {
                            tokio::time::sleep(dice.millis(0..3)).await;
                            let key = Bytes::from(format!("l{life}-c{c}-{i:04}"));
                            let value = Bytes::from(vec![b'v'; 40 + dice.below(200) as usize]);
                            outcomes.lock().doubt.insert(key.clone(), value.clone());
                            match db.put(key.clone(), value.clone()).await {
                                Ok(seq) => {
                                    trace.log(start, format!("acked {key:?} at {seq}"));
                                    let mut o = outcomes.lock();
                                    o.doubt.remove(&key);
                                    o.acked.insert(key, value);
                                }
                                Err(e) => trace.log(start, format!("refused {key:?}: {e}")),
                            }
                        }
                    }));
                }
                {
                    let (db, dice, outcomes, trace) =
                        (db.clone(), dice.clone(), outcomes.clone(), trace.clone());
                    actors.push(tokio::spawn(async move {
                        for n in 0.. {
                            tokio::time::sleep(dice.millis(3..30)).await;
                            if dice.below(3) == 0 {
                                let _ = db.flush().await;
                                trace.log(start, "flushed");
                                continue;
                            }
                            let entries: Vec<(Bytes, Bytes)> = (0..1 + dice.below(30))
                                .map(|k| {
                                    (
                                        Bytes::from(format!("l{life}-i{n}-{k:03}")),
                                        Bytes::from("imported"),
                                    )
                                })
                                .collect();
                            outcomes.lock().doubt.extend(entries.iter().cloned());
                            if let Ok(seq) = db.import(entries.clone()).await {
                                trace.log(
                                    start,
                                    format!("imported {} keys at {seq}", entries.len()),
                                );
                                let mut o = outcomes.lock();
                                for (k, v) in entries {
                                    o.doubt.remove(&k);
                                    o.acked.insert(k, v);
                                }
                            }
                        }
                    }));
                }
                tokio::time::sleep(dice.millis(5..150)).await;
                trace.log(start, format!("life {life}: the process dies"));
                Ok(())
            };
            tokio::time::timeout(Duration::from_secs(600), life_span)
                .await
                .unwrap_or_else(|_| Err(format!("life {life} did not end in 600 virtual seconds")))
        });
        // The crash: every task goes, wherever it was.
        drop(rt);
        lived?;
    }
    Ok(())
}

fn paused_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .expect("a runtime")
}

#[derive(Clone, Copy, Debug)]
enum Scenario {
    Replica { lost_answers: bool },
    Takeover { lease_ms: u64 },
    Crash,
}

/// Runs one seed of `scenario` to its end on a fresh paused runtime; its trace, and the
/// failure if any.
fn run(scenario: Scenario, seed: u64) -> (Vec<String>, std::result::Result<(), String>) {
    let root = tempfile::tempdir().expect("a temporary directory");
    let trace = Trace::new();
    cairn_common::backoff::seed_jitter_on_this_thread(seed);
    let out = match scenario {
        Scenario::Crash => crash(seed, root.path(), &trace),
        _ => paused_runtime().block_on(async {
            let run = async {
                match scenario {
                    Scenario::Replica { lost_answers } => {
                        replica(seed, root.path(), trace.clone(), lost_answers).await
                    }
                    Scenario::Takeover { lease_ms } => {
                        takeover(seed, root.path(), trace.clone(), lease_ms).await
                    }
                    Scenario::Crash => unreachable!("runs its own runtimes"),
                }
            };
            // Virtual time: a seed that hangs ends here, in no real time at all.
            tokio::time::timeout(Duration::from_secs(600), run)
                .await
                .unwrap_or_else(|_| Err("did not finish in 600 virtual seconds".into()))
        }),
    };
    let lines = trace.lines();
    if let Ok(dir) = std::env::var("SIM_DUMP") {
        static DUMPS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = DUMPS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let _ = std::fs::write(
            format!("{dir}/{scenario:?}-{seed}-{n}.txt"),
            lines.join("\n"),
        );
    }
    (lines, out)
}

fn seeds() -> Vec<u64> {
    if let Some(one) = std::env::var("SIM_SEED").ok().and_then(|s| s.parse().ok()) {
        return vec![one];
    }
    let n = std::env::var("SIM_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(12);
    (0..n).collect()
}

fn check(scenario: Scenario, name: &str) {
    let seeds = seeds();
    for &seed in &seeds {
        let (lines, out) = run(scenario, seed);
        if let Err(e) = out {
            let keep = std::env::var("SIM_TRACE_LINES")
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(30);
            let tail: Vec<&String> = lines.iter().rev().take(keep).rev().collect();
            panic!(
                "{scenario:?} failed on seed {seed}: {e}\nthe trace's last lines:\n{}\nreplay: SIM_SEED={seed} cargo test -p cairn-engine --test sim {name}",
                tail.iter()
                    .map(|l| l.as_str())
                    .collect::<Vec<_>>()
                    .join("\n")
            );
        }
        if seed == seeds[0] {
            let (again, _) = run(scenario, seed);
            if let Some(i) =
                (0..lines.len().max(again.len())).find(|&i| lines.get(i) != again.get(i))
            {
                panic!(
                    "seed {seed} replayed differently (the simulation is not deterministic), from line {i}:\n{:?}\n{:?}",
                    lines.get(i),
                    again.get(i)
                );
            }
        }
    }
}

#[test]
fn replica_shows_only_prefixes_its_writer_made_visible() {
    check(
        Scenario::Replica {
            lost_answers: false,
        },
        "replica_shows",
    );
}

/// A known gap, kept runnable (`--ignored`): an append whose answer is lost lands in the
/// journal, the writer takes the write as failed and never shows it, and a replica reading
/// the journal shows it (24 of 30 seeds). Closing it needs the writer to learn the outcome
/// of an append in doubt, or to stop acknowledging until it reopens.
#[test]
#[ignore = "known gap: a replica shows a write whose append answer was lost"]
fn a_replica_shows_no_write_whose_append_answer_was_lost() {
    check(
        Scenario::Replica { lost_answers: true },
        "a_replica_shows_no_write",
    );
}

#[test]
fn a_replaced_writer_acknowledges_nothing_after_the_takeover() {
    // `SIM_LEASE_MS=0` turns leases off: the fix of the finding this scenario was made for.
    let lease_ms = std::env::var("SIM_LEASE_MS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(200);
    check(Scenario::Takeover { lease_ms }, "a_replaced_writer");
}

#[test]
fn every_acknowledged_write_survives_crashes_at_any_await_point() {
    check(Scenario::Crash, "every_acknowledged");
}
