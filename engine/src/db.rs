//! `Db`: opening (its recovery is in `recovery.rs`), point reads, snapshots, flush and close;
//! the write path is in `write_path.rs`.

use crate::background::{self, Background};
use crate::follow::CatchUp;
use crate::import::Import;
use crate::jobs::Jobs;
use crate::lease::LeaseClock;
use crate::lookup::{Answer, in_memtables, in_tables};
use crate::manifest::{Manifest, ManifestLog, VersionEdit};
use crate::operators::DbOperators;
use crate::options::EngineOptions;
use crate::recovery::{adopt_journal, leftovers, open_manifest, replay_journal};
use crate::scan::DbIter;
use crate::snapshot::{Snapshot, SnapshotList};
use crate::version::{Deletion, TableHandle, Version};
use crate::version_set::VersionSet;
use crate::write_path::WritePath;
use bytes::Bytes;
use cairn_common::{
    AggregateState, Error, IoContext, KeyRange, Result, SeqNo, ValueType, WriteBatch,
};
use cairn_compaction::{Compactor, LeveledPicker};
use cairn_filestore::{Storage, TablesAt};
use cairn_journal::{Journal, JournalClaim};
use cairn_memtable::MemtableFactory;
use parking_lot::Mutex;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio::sync::mpsc;

/// The components a `Db` is built from. Any implementation of each trait will do.
#[derive(Clone)]
pub struct Components {
    pub journal: Arc<dyn Journal>,
    pub memtables: MemtableFactory,
    pub storage: Arc<dyn Storage>,
    pub compactor: Arc<dyn Compactor>,
}

pub(crate) use crate::write_path::{MemSlot, MemState};

/// The memtables and tables a read goes through, loaded together.
#[derive(Clone)]
pub(crate) struct ReadView {
    pub mem: Arc<MemState>,
    pub version: Arc<Version>,
}

/// One database's state, in named parts that each own their fields and state their
/// invariants where they are defined: the write path (`write_path.rs`: sequence numbers,
/// the gate, memtables, visibility), the version set (`version_set.rs`: the manifest log
/// and the tables readers see), the follower of a reader (`follow.rs`), and what background
/// jobs share with the foreground (`jobs.rs`). The rest is configuration and identity.
pub(crate) struct Inner {
    pub dir: PathBuf,
    pub opts: EngineOptions,
    /// The merge operator, compaction filter, TTL and clock (`operators.rs`).
    pub ops: DbOperators,
    pub comps: Components,
    pub picker: LeveledPicker,
    /// How a write becomes visible: numbers, the journal, memtables (`write_path.rs`).
    pub writes: WritePath,
    /// The manifest log and the tables readers see (`version_set.rs`).
    pub versions: VersionSet,
    pub snapshots: Arc<SnapshotList>,
    /// A reader's view of its writer, which it follows.
    pub follower: Option<crate::follow::Follower>,
    pub database: String,
    /// This writer's epoch, on every journal append.
    pub epoch: u64,
    /// A writer whose journal only its node reaches holds a lease (`crate::lease`) and
    /// acknowledges a write only while the lease is provably its own.
    pub lease: Option<Arc<LeaseClock>>,
    /// What background work shares with the foreground (`jobs.rs`).
    pub jobs: Jobs,
    /// Transactions check their commits one at a time (`transaction.rs`).
    pub commits: crate::transaction::Commits,
    /// For a clone, the tables it shares with the databases it came from, where they are
    /// (a compaction job that reads them says so: `clone.rs`).
    pub shared: Vec<TablesAt>,
    /// Checkpoints are created, cloned and deleted one at a time: a deletion's check that
    /// no clone holds a checkpoint must not interleave with a clone taking a hold.
    pub checkpoint_ops: tokio::sync::Mutex<()>,
    pub closed: AtomicBool,
    pub deleter: mpsc::UnboundedSender<Deletion>,
    pub metrics: crate::metrics::EngineMetrics,
    /// The directory lock. Released by `close` once background work has stopped; a `Db`
    /// dropped without `close` aborts its background work, which may still be finishing a
    /// step on another thread, so the lock goes only with the last reference to this state:
    /// until then, another open of the directory is refused rather than raced.
    pub lock_file: Mutex<Option<File>>,
}

pub struct Db {
    pub(crate) inner: Arc<Inner>,
    pub(crate) bg: Mutex<Option<Background>>,
}

const LOCK_FILE: &str = "LOCK";

/// Attempts of a reader's open to catch up with a writer that flushes meanwhile, and the
/// pause between them.
const OPEN_READER_ATTEMPTS: u32 = 20;
const READER_RETRY: cairn_common::backoff::Backoff = cairn_common::backoff::Backoff::new(
    std::time::Duration::from_millis(5),
    std::time::Duration::from_millis(500),
);

impl Db {
    /// Opens the database whose manifest lives in `dir`, recovering from the manifest and
    /// the journal. Must be called within a Tokio runtime.
    pub async fn open(
        dir: impl AsRef<Path>,
        opts: EngineOptions,
        mut comps: Components,
    ) -> Result<Db> {
        let dir = dir.as_ref().to_path_buf();
        // Before anything is claimed: an unknown operator name fails the open.
        let ops = DbOperators::new(&opts)?;
        let lock_file = lock_dir(&dir)?;

        let levels = opts.compaction.levels.max(2);
        let holder = crate::lease::holder(comps.journal.as_ref(), opts.lease_ms);
        let lease = holder.as_ref().map(|h| h.clock.clone());
        let mut log = open_manifest(&dir, levels, comps.storage.as_ref(), holder).await?;
        comps.storage = crate::clone::shared_storage(comps.storage, log.state())?;
        let claimed = comps
            .journal
            .claim(&JournalClaim {
                database: log.state().database.clone(),
                epoch: log.state().epoch,
                flushed_lsn: log.state().flushed_lsn,
            })
            .await?;
        adopt_journal(&mut log, &claimed).await?;
        let mut manifest = log.state().clone();
        if manifest.levels.len() < levels {
            manifest.levels.resize(levels, Vec::new());
        }

        let (deleter, deletions) = mpsc::unbounded_channel();
        let version =
            crate::follow::open_version(&manifest, None, comps.storage.as_ref(), &deleter).await?;

        // Replay what the journal holds beyond the last flush into a fresh memtable.
        let active = MemSlot::new((comps.memtables)(), manifest.flushed_lsn);
        let newest = manifest.newest_seq();
        let replayed = replay_journal(
            comps.journal.as_ref(),
            manifest.flushed_lsn + 1,
            newest,
            newest,
            &active,
            None,
        )
        .await?;
        if replayed.replayed > 0 || replayed.stale > 0 {
            tracing::info!(
                records = replayed.replayed,
                stale = replayed.stale,
                "replayed journal"
            );
        }

        // Queued, not deleted here: they go after the grace period, as a compaction's do,
        // since a read replica may still read one (an older writer compacted it away).
        for id in leftovers(&manifest, comps.storage.as_ref()).await? {
            let _ = deleter.send(Deletion { id, was_live: true });
        }

        let inner = assemble(Parts {
            dir,
            opts,
            ops,
            comps,
            active,
            version,
            last_seq: replayed.last_seq,
            manifest_version: log.version(),
            manifest_location: log.location(),
            state: manifest,
            log: Some(log),
            follower: None,
            lease,
            deleter,
            lock_file,
        });
        let bg = Background::start(inner.clone(), deletions)?;
        inner.jobs.want_compaction();
        Ok(Db {
            inner,
            bg: Mutex::new(Some(bg)),
        })
    }

    /// Opens the database whose manifest `comps.storage` holds as a **reader**, beside its
    /// writer and without disturbing it: no epoch is taken, no journal claimed, nothing is
    /// written, deleted or truncated, and writes, flushes, compactions and imports are
    /// refused. It serves gets, scans and aggregates at its own snapshots, and follows the
    /// writer every `opts.reader_poll` (new manifest versions, the journal's tail), so it
    /// is at most about a poll behind; `stats().reader` says how far. Its journal must be
    /// the writer's (a journal server or an object journal) to see writes not yet flushed;
    /// with an empty one it follows flushes only. `dir` holds only its lock and caches.
    pub async fn open_reader(
        dir: impl AsRef<Path>,
        opts: EngineOptions,
        mut comps: Components,
    ) -> Result<Db> {
        let dir = dir.as_ref().to_path_buf();
        let ops = DbOperators::new(&opts)?;
        let lock_file = lock_dir(&dir)?;
        let started = tokio::time::Instant::now();
        let location = comps.storage.manifests().location();
        // A clone's shared tables are where its first version says (they only go from there).
        if let Some(l) = crate::manifest::load(comps.storage.manifests().as_ref()).await? {
            comps.storage = crate::clone::shared_storage(comps.storage, &l.state)?;
        }
        let follower_deleter = mpsc::unbounded_channel().0;
        let mut opened = None;
        let mut attempt = 0;
        let view = loop {
            match crate::follow::catch_up(&comps, opened.as_ref(), &follower_deleter).await? {
                CatchUp::View(view) => break view,
                CatchUp::Raced(tables) => {
                    // Its writer flushed while this read the journal: again, on the tables
                    // already open, after a pause that grows, and not for ever.
                    attempt += 1;
                    if attempt >= OPEN_READER_ATTEMPTS {
                        return Err(Error::component(
                            format!("reader of {location}"),
                            format!(
                                "its writer flushed during each of {attempt} attempts to catch up; try again"
                            ),
                        ));
                    }
                    opened = Some(tables);
                    READER_RETRY.wait(attempt).await;
                }
                CatchUp::Empty => {
                    return Err(Error::InvalidArgument(format!(
                        "{location} holds no database: a reader follows an existing one (open its writer first)"
                    )));
                }
            }
        };
        let manifest_version = view.position.version;
        let flushes_only = crate::follow::flushes_only(comps.journal.as_ref(), &view.state);
        let follower = crate::follow::Follower::new(
            opts.reader_poll(),
            view.position,
            started,
            flushes_only,
            follower_deleter.clone(),
        );
        let inner = assemble(Parts {
            dir,
            opts,
            ops,
            comps,
            active: view.active,
            version: view.version,
            last_seq: view.last_seq,
            manifest_version,
            manifest_location: location,
            state: view.state,
            log: None,
            follower: Some(follower),
            lease: None,
            deleter: follower_deleter,
            lock_file,
        });
        let bg = Background::start_reader(inner.clone())?;
        Ok(Db {
            inner,
            bg: Mutex::new(Some(bg)),
        })
    }

    pub async fn put(&self, key: impl Into<Bytes>, value: impl Into<Bytes>) -> Result<SeqNo> {
        let mut b = WriteBatch::new();
        b.put(key, value);
        self.write(b).await
    }

    pub async fn delete(&self, key: impl Into<Bytes>) -> Result<SeqNo> {
        let mut b = WriteBatch::new();
        b.delete(key);
        self.write(b).await
    }

    /// Deletes every key in `[start, end)` at once: one journal record and one tombstone,
    /// whatever the number of keys. Reads skip what it covers; compaction drops it.
    pub async fn delete_range(
        &self,
        start: impl Into<Bytes>,
        end: impl Into<Bytes>,
    ) -> Result<SeqNo> {
        let mut b = WriteBatch::new();
        b.delete_range(start, end);
        self.write(b).await
    }

    /// Applies `batch` atomically: readers see all of it or none. Returns the sequence number
    /// of its last operation once it is durable in the journal. A batch over the limits of
    /// `cairn_common::limits` (keys 64 KiB, values 16 MiB, 32 MiB in all) is refused whole.
    pub async fn write(&self, batch: WriteBatch) -> Result<SeqNo> {
        let inner = &self.inner;
        inner.check_writable()?;
        if batch.is_empty() {
            return Ok(inner.writes.visible());
        }
        let batch = inner.ops.prepare(batch)?;
        cairn_common::limits::check_batch(&batch)?;
        let started = std::time::Instant::now();
        inner.wait_for_room().await?;
        // Once begun, a write runs to its end even if its caller goes away (a timeout, a
        // cancelled call): an append that lands is then always applied here too, so what
        // the journal holds, and a replica shows, is what this writer shows.
        let (last, over) =
            crate::completing::Completing::new(journal_and_apply(inner.clone(), batch)).await?;
        inner.writes.wait_visible(last).await;
        if let Some(lease) = &inner.lease {
            // Durable and visible here, but acknowledged only under a lease still provably
            // this writer's: past it, another node may have taken over without this journal.
            lease.check(&inner.database)?;
        }
        inner.metrics.writes.increment(1);
        inner
            .metrics
            .write_seconds
            .record(started.elapsed().as_secs_f64());
        if over {
            inner.freeze(false).await;
        }
        Ok(last)
    }

    /// The newest value of `key`, or `None` if absent or deleted.
    pub async fn get(&self, key: &[u8]) -> Result<Option<Bytes>> {
        self.inner.check_open()?;
        // No snapshot is registered, so a compaction may meanwhile drop versions older than
        // the newest: the tables are read at the newest version rather than at the number
        // visible when the get began. They only ever hold acknowledged writes, so the answer
        // is a value the key had at some moment during the call.
        let answer = self
            .retried(|| self.inner.get(key, self.inner.writes.visible(), SeqNo::MAX))
            .await?;
        match answer {
            Answer::Value(v) => Ok(v),
            Answer::Operands => {
                // Folding needs every operand down to a base, which compaction must not
                // fold meanwhile: read at a snapshot.
                let snap = self.snapshot();
                let view = self.inner.view_of(&snap);
                crate::lookup::merged(&view, key, snap.seq(), self.inner.ops.read_rules()).await
            }
        }
    }

    /// The value of `key` as of `snapshot`.
    pub async fn get_at(&self, key: &[u8], snapshot: &Snapshot) -> Result<Option<Bytes>> {
        self.inner.check_open()?;
        let view = self.inner.view_of(snapshot);
        let seq = snapshot.seq();
        self.inner.get_in(&view, key, seq, seq).await
    }

    /// The newest values of `keys`, in the same order, all read at one snapshot.
    pub async fn multi_get(&self, keys: &[Bytes]) -> Result<Vec<Option<Bytes>>> {
        self.inner.check_open()?;
        self.retried(|| async {
            let inner = &self.inner;
            let snap = self.snapshot();
            // One view for every key: a reader's follower may swap in compacted tables
            // meanwhile, which need not hold versions as old as this snapshot.
            let view = inner.view_of(&snap);
            let mut out = Vec::with_capacity(keys.len());
            for k in keys {
                out.push(inner.get_in(&view, k, snap.seq(), snap.seq()).await?);
            }
            Ok(out)
        })
        .await
    }

    /// Runs `read`; on a reader, a read that failed while its writer moved on (a compaction
    /// deleted a table its view still used) runs again, once, on a view brought up to date.
    async fn retried<T, F, Fut>(&self, read: F) -> Result<T>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        if let Some(f) = &self.inner.follower {
            self.inner.check_fresh(f).await?;
        }
        let first = read().await;
        match (&first, &self.inner.follower) {
            (Err(e), Some(f)) => {
                let before = self.inner.versions.manifest_version();
                crate::follow::poll_now(&self.inner, f).await;
                if self.inner.versions.manifest_version() != before {
                    tracing::debug!(error = %e, "a reader's read failed on an older view; reading again");
                    return read().await;
                }
                first
            }
            _ => first,
        }
    }

    pub fn snapshot(&self) -> Snapshot {
        let inner = &self.inner;
        match &inner.follower {
            None => inner.snapshots.acquire(|| inner.writes.visible()),
            Some(f) => {
                // The view and the sequence number as one.
                f.unchanging(|| {
                    let view = inner.view();
                    inner
                        .snapshots
                        .acquire(|| inner.writes.visible())
                        .with_view(view)
                })
            }
        }
    }

    /// A snapshot at `seq`, a sequence number already visible, for reads as of then: they see
    /// exactly the writes numbered up to `seq`. Refused below the history the database keeps
    /// (`DbStats::history_floor`), where a flush or compaction may have dropped versions such
    /// a read needs; a held snapshot or a checkpoint keeps history from its number on. The
    /// snapshot keeps the view it was checked against.
    pub fn snapshot_at(&self, seq: SeqNo) -> Result<Snapshot> {
        let inner = &self.inner;
        let visible = inner.writes.visible();
        if seq > visible {
            return Err(Error::InvalidArgument(format!(
                "sequence number {seq} is not written yet (the newest is {visible})"
            )));
        }
        // Registered first, so compactions that start from now on keep its versions; the
        // view after, so the floor read next covers every flush and compaction it holds.
        let take = || inner.snapshots.acquire(|| seq).with_view(inner.view());
        let snapshot = match &inner.follower {
            None => take(),
            Some(f) => f.unchanging(take),
        };
        let floor = inner.versions.history_floor();
        if seq < floor {
            return Err(Error::InvalidArgument(format!(
                "the database keeps its history from sequence number {floor}: a flush or compaction may have dropped versions a read at {seq} needs (a held snapshot keeps history; a checkpoint keeps a state to read)"
            )));
        }
        Ok(snapshot)
    }

    /// Live keys in `range`, in key order, at a snapshot taken now.
    pub async fn scan(&self, range: KeyRange) -> Result<DbIter> {
        self.inner.check_open()?;
        self.retried(|| async {
            let snap = self.snapshot();
            let view = self.inner.view_of(&snap);
            DbIter::new(
                &self.inner,
                view,
                range.clone(),
                snap.seq(),
                Some(snap),
                false,
            )
            .await
        })
        .await
    }

    /// Live keys in `range` as of `snapshot`.
    pub async fn scan_at(&self, range: KeyRange, snapshot: &Snapshot) -> Result<DbIter> {
        self.inner.check_open()?;
        let view = self.inner.view_of(snapshot);
        DbIter::new(&self.inner, view, range, snapshot.seq(), None, false).await
    }

    /// `range` at `snapshot`, split for a columnar reader (see `SplitRead`): the deepest
    /// level's tables for the reader to read itself, and what is newer, merged. `None` where
    /// the split would not be exact; the reader then scans (`scan_at`).
    pub async fn split_read(
        &self,
        range: &KeyRange,
        snapshot: &Snapshot,
    ) -> Result<Option<crate::SplitRead>> {
        self.inner.check_open()?;
        let view = self.inner.view_of(snapshot);
        crate::split_read::plan(&view, range, snapshot.seq()).await
    }

    /// Like `scan`, but tables are read through `Table::analytic_scan`: from the secondary
    /// copy of a hybrid store (Parquet), merged with the memtables at one snapshot.
    pub async fn analytic_scan(&self, range: KeyRange) -> Result<DbIter> {
        self.inner.check_open()?;
        let snap = self.snapshot();
        let view = self.inner.view_of(&snap);
        DbIter::new(&self.inner, view, range, snap.seq(), Some(snap), true).await
    }

    /// Folds the live values of `range` at a snapshot taken now into a mergeable partial
    /// aggregate; `state.result(op)` gives count, sum, min, max or avg. Writes acknowledged
    /// before the call are included, wherever they live (memtables or tables); the bulk of
    /// the data is folded inside the tables (see `aggregate.rs`).
    pub async fn aggregate(
        &self,
        range: KeyRange,
        value_type: ValueType,
    ) -> Result<AggregateState> {
        self.inner.check_open()?;
        self.retried(|| async {
            let snap = self.snapshot();
            let view = self.inner.view_of(&snap);
            let rules = self.inner.ops.read_rules();
            crate::aggregate::run(&view, range.clone(), snap.seq(), value_type, rules).await
        })
        .await
    }

    /// The same aggregate computed the plain way, by folding a full merged scan; kept to
    /// check and measure the pushdown against.
    pub async fn aggregate_by_scan(
        &self,
        range: KeyRange,
        value_type: ValueType,
    ) -> Result<AggregateState> {
        let mut it = self.scan(range).await?;
        let mut state = AggregateState::new(value_type);
        while let Some((_, v)) = it.next().await? {
            state.add(&v);
        }
        Ok(state)
    }

    /// Freezes the active memtable and waits until every frozen memtable is in a table.
    pub async fn flush(&self) -> Result<()> {
        self.inner.check_writable()?;
        self.inner.flush_all().await
    }

    /// Flushes, then compacts every level into the next until all data sits in the deepest
    /// level that holds any, dropping every version no snapshot can see.
    pub async fn compact(&self) -> Result<()> {
        self.inner.check_writable()?;
        self.inner.flush_all().await?;
        background::compact_all(&self.inner).await
    }

    /// Bulk load: writes `entries` (puts, in any order; of repeated keys the last wins) as
    /// one table straight into level 0, past the journal and the memtable, the way RocksDB
    /// ingests external files. Far cheaper per entry than `write`, for loading data that is
    /// already durable elsewhere. The import is atomic and durable when this returns, and
    /// newer than every write acknowledged before the call. Readers see it all at once when it
    /// is installed; a snapshot taken while it runs does not include it, then or later.
    /// Writes made meanwhile are ordered after it and acknowledged only once it is installed
    /// (or dropped). Returns the import's sequence number. For more than fits in memory at
    /// once, `begin_import`.
    pub async fn import(&self, entries: Vec<(Bytes, Bytes)>) -> Result<SeqNo> {
        let mut import = self.begin_import().await?;
        import.add(entries).await?;
        import.finish().await
    }

    /// Starts an import of many tables that lands all at once (see `import`): each `add`
    /// writes a table, `finish` installs them together, and an import dropped unfinished
    /// leaves nothing behind. Compaction waits until it ends, and so do the acknowledgements
    /// of writes made after its first `add`.
    pub async fn begin_import(&self) -> Result<Import> {
        self.inner.check_writable()?;
        let handle = self.bg.lock().as_ref().map(Background::handle);
        let Some(handle) = handle else {
            return Err(Error::Closed);
        };
        Import::begin(self.inner.clone(), handle).await
    }

    /// Flushes everything, stops background work and closes the journal. After a clean
    /// close the journal holds nothing to replay.
    pub async fn close(&self) -> Result<()> {
        self.shutdown(true).await
    }

    /// Stops without flushing, as a crash would (minus losing the OS page cache): the next
    /// open replays the journal. For tests of recovery and for fast restarts.
    pub async fn close_without_flush(&self) -> Result<()> {
        self.shutdown(false).await
    }

    async fn shutdown(&self, flush: bool) -> Result<()> {
        let inner = &self.inner;
        if inner.closed.load(Ordering::Acquire) {
            return Ok(());
        }
        let flushed = if flush && inner.versions.is_writer() {
            inner.flush_all().await
        } else {
            Ok(())
        };
        inner.closed.store(true, Ordering::Release);
        // Writers in flight finish before the journal closes.
        inner.writes.drain().await;
        let bg = self.bg.lock().take();
        if let Some(bg) = bg {
            bg.stop(inner).await;
        }
        // A writer that stops cleanly lets go of its lease, so the next one need not wait
        // it out; one stopping as a crash would keeps it, as a crash does.
        if flush && let Err(e) = inner.versions.release().await {
            tracing::warn!(error = %e, "letting go of the lease failed; the next writer waits it out");
        }
        let journal = inner.comps.journal.close().await;
        inner.lock_file.lock().take();
        flushed.and(journal)
    }

    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }
}

impl Drop for Db {
    fn drop(&mut self) {
        self.inner.closed.store(true, Ordering::Release);
        if let Some(bg) = self.bg.lock().take() {
            bg.abort(&self.inner);
        }
    }
}

/// Journals and applies `batch` (`WritePath::journal_and_apply`), counting what it wrote:
/// its last sequence number, and whether the memtable is now full.
async fn journal_and_apply(inner: Arc<Inner>, batch: WriteBatch) -> Result<(SeqNo, bool)> {
    let applied = inner
        .writes
        .journal_and_apply(inner.comps.journal.as_ref(), inner.epoch, batch, || {
            inner.check_open()
        })
        .await?;
    inner
        .jobs
        .counters()
        .journal_bytes
        .fetch_add(applied.record_bytes, Ordering::Relaxed);
    inner.metrics.journal_bytes.increment(applied.record_bytes);
    inner
        .metrics
        .memtable_bytes
        .set(applied.memtable_bytes as f64);
    Ok((
        applied.last,
        applied.memtable_bytes >= inner.opts.memtable_bytes,
    ))
}

impl Inner {
    pub fn check_open(&self) -> Result<()> {
        if self.closed.load(Ordering::Acquire) {
            Err(Error::Closed)
        } else {
            Ok(())
        }
    }

    /// A reader answers only within `reader_max_staleness_ms` of its last caught-up poll;
    /// past it, one poll now, then a refusal that says how far behind it is and why.
    async fn check_fresh(&self, f: &crate::follow::Follower) -> Result<()> {
        let bound = std::time::Duration::from_millis(self.opts.reader_max_staleness_ms);
        if f.staleness() <= bound {
            return Ok(());
        }
        crate::follow::poll_now(self, f).await;
        let behind = f.staleness();
        if behind <= bound {
            return Ok(());
        }
        Err(Error::component(
            format!("reader of database {}", self.database),
            format!(
                "it is {} ms behind its writer, past engine.reader_max_staleness_ms ({} ms); last poll: {}",
                behind.as_millis(),
                bound.as_millis(),
                f.last_error().unwrap_or_else(|| "no error".into())
            ),
        ))
    }

    /// Open, and its writer: a reader refuses every change.
    pub fn check_writable(&self) -> Result<()> {
        self.check_open()?;
        self.versions.check_writer()
    }

    /// `key` as of `snapshot` in the memtables and `tables_at` in the tables (the same, or
    /// newer for a get with no registered snapshot).
    pub async fn get(&self, key: &[u8], snapshot: SeqNo, tables_at: SeqNo) -> Result<Answer> {
        let started = std::time::Instant::now();
        // Memtables before tables: a flush installs its table before it drops the memtable,
        // so loading in this order never misses a write. Memtable lookups never await, so a
        // short-lived guard does; the version is held across table reads and is cloned.
        let found = {
            let mem = self.writes.mem();
            in_memtables(&mem, key, snapshot)
        };
        let found = match found {
            Some(found) => Ok(Some(found)),
            None => {
                fail::fail_point!("get-between-memtables-and-tables");
                in_tables(&self.versions.current(), key, tables_at).await
            }
        };
        self.record_get(started);
        let now = || self.ops.now_ms();
        Ok(found?.map_or(Answer::Value(None), |f| f.answer(now)))
    }

    /// The same read through memtables and tables the caller loaded together, for reads
    /// that must see one view throughout (`multi_get`, a reader's snapshot).
    pub async fn get_in(
        &self,
        view: &ReadView,
        key: &[u8],
        snapshot: SeqNo,
        tables_at: SeqNo,
    ) -> Result<Option<Bytes>> {
        let started = std::time::Instant::now();
        let found = match in_memtables(&view.mem, key, snapshot) {
            Some(found) => Ok(Some(found)),
            None => in_tables(&view.version, key, tables_at).await,
        };
        self.record_get(started);
        match found?.map_or(Answer::Value(None), |f| f.answer(|| self.ops.now_ms())) {
            Answer::Value(v) => Ok(v),
            Answer::Operands => {
                crate::lookup::merged(view, key, snapshot, self.ops.read_rules()).await
            }
        }
    }

    fn record_get(&self, started: std::time::Instant) {
        self.metrics.gets.increment(1);
        let took = started.elapsed().as_secs_f64();
        self.metrics.get_seconds.record(took);
    }

    /// The memtables and tables readers see now: memtables first, as a flush installs its
    /// table before it drops the memtable, so loading in this order never misses a write.
    pub fn view(&self) -> ReadView {
        let mem = self.writes.mem();
        let version = self.versions.current();
        ReadView { mem, version }
    }

    /// The view reads at `snapshot` go through: the one it keeps (a reader's), or now's.
    pub fn view_of(&self, snapshot: &Snapshot) -> ReadView {
        snapshot.view().cloned().unwrap_or_else(|| self.view())
    }

    /// Waits while the memtable queue or L0 is full (a write stall).
    /// Whether writes must wait: (memtable queue and active memtable full, L0 full).
    fn stall_reasons(&self) -> (bool, bool) {
        let l0_full = self.versions.l0_tables() >= self.opts.l0_stop_writes;
        (self.writes.is_full(), l0_full)
    }

    pub async fn wait_for_room(&self) -> Result<()> {
        if self.stall_reasons() == (false, false) {
            return Ok(());
        }
        let mut stalled = false;
        let started = std::time::Instant::now();
        loop {
            let changed = self.jobs.next_change();
            let (mem_full, l0_full) = self.stall_reasons();
            if !mem_full && !l0_full {
                if stalled {
                    let waited = started.elapsed().as_secs_f64();
                    self.metrics.stall_seconds.record(waited);
                }
                return Ok(());
            }
            if !stalled {
                stalled = true;
                self.jobs.counters().stalls.fetch_add(1, Ordering::Relaxed);
                self.metrics.stalls.increment(1);
                if l0_full {
                    self.jobs.want_compaction();
                }
            }
            if let Some(e) = self
                .jobs
                .persistent_failure("background work (writes are stalled)")
            {
                return Err(e);
            }
            self.check_open()?;
            changed.await;
        }
    }

    /// Moves the active memtable to the flush queue (`WritePath::freeze`) and wakes the
    /// flush loop if it did.
    pub async fn freeze(&self, force: bool) {
        if self.writes.freeze(force).await {
            self.jobs.want_flush();
        }
    }

    pub async fn flush_all(&self) -> Result<()> {
        self.freeze(true).await;
        // An error recorded before this call may be cured by now (a server back up): cut the
        // flush loop's backoff short once, and report the error only if it is still there
        // after the loop has done something since.
        self.jobs.want_flush();
        let mut woken = false;
        loop {
            let changed = self.jobs.next_change();
            if self.writes.mem().immutables.is_empty() {
                return Ok(());
            }
            if woken && let Some(e) = self.jobs.persistent_failure("flush") {
                return Err(e);
            }
            changed.await;
            woken = true;
        }
    }

    /// Installs `edit` (`VersionSet::install`): the stored manifest first, then the version
    /// readers see. Returns the handles it removed, for the caller to retire.
    pub async fn install(
        &self,
        edit: VersionEdit,
        opened: Vec<Arc<TableHandle>>,
    ) -> Result<Vec<Arc<TableHandle>>> {
        let (removed, l0) = self.versions.install(edit, opened).await?;
        self.metrics.l0_tables.set(l0 as f64);
        Ok(removed)
    }
}

pub(crate) struct Parts {
    pub(crate) dir: PathBuf,
    pub(crate) opts: EngineOptions,
    pub(crate) ops: DbOperators,
    pub(crate) comps: Components,
    pub(crate) active: MemSlot,
    pub(crate) version: Version,
    pub(crate) last_seq: SeqNo,
    pub(crate) state: Manifest,
    pub(crate) manifest_version: u64,
    pub(crate) manifest_location: String,
    pub(crate) log: Option<ManifestLog>,
    pub(crate) follower: Option<crate::follow::Follower>,
    pub(crate) lease: Option<Arc<LeaseClock>>,
    pub(crate) deleter: mpsc::UnboundedSender<Deletion>,
    pub(crate) lock_file: File,
}

pub(crate) fn assemble(p: Parts) -> Arc<Inner> {
    let writes = WritePath::new(
        p.active,
        p.last_seq,
        p.comps.memtables.clone(),
        p.opts.memtable_bytes,
        p.opts.max_immutable_memtables,
        // Where an append is its caller's own quick write, every writer appends for itself.
        p.comps
            .journal
            .appends_wait()
            .then_some(p.opts.write_groups_in_flight),
    );
    Arc::new(Inner {
        dir: p.dir,
        picker: LeveledPicker::new(p.opts.compaction.clone()),
        opts: p.opts,
        ops: p.ops,
        comps: p.comps,
        writes,
        versions: VersionSet::new(
            p.log,
            p.version,
            p.manifest_version,
            p.state.next_table_id,
            p.state.history_floor,
            p.manifest_location,
            p.state.database.clone(),
        ),
        snapshots: Arc::default(),
        database: p.state.database.clone(),
        epoch: p.state.epoch,
        lease: p.lease,
        follower: p.follower,
        jobs: Jobs::default(),
        commits: Default::default(),
        shared: p.state.shared_tables(),
        checkpoint_ops: Default::default(),
        closed: AtomicBool::new(false),
        deleter: p.deleter,
        metrics: crate::metrics::EngineMetrics::new(&p.state.database),
        lock_file: Mutex::new(Some(p.lock_file)),
    })
}

/// Creates `dir` and takes its lock: one process at a time opens a data directory.
pub(crate) fn lock_dir(dir: &Path) -> Result<File> {
    cairn_common::durable::create_dir_durably(dir)?;
    let lock_path = dir.join(LOCK_FILE);
    let lock_file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .at(&lock_path)?;
    match lock_file.try_lock() {
        Ok(()) => Ok(lock_file),
        Err(std::fs::TryLockError::WouldBlock) => Err(Error::Locked(dir.to_path_buf())),
        Err(std::fs::TryLockError::Error(e)) => Err(Error::io(lock_path, e)),
    }
}
