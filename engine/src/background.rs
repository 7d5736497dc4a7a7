//! Background work on the engine's own runtime, away from the callers' request path: the
//! flush loop (frozen memtable -> L0 table), the compaction loop (asks the picker, runs the
//! compactor, installs the result) and the deletion of obsolete tables. A failed job is
//! logged, recorded for `stats` and retried with backoff; nothing is dropped.

use crate::db::Inner;
use crate::manifest::VersionEdit;
use crate::version::{Deletion, TableHandle};
use crate::write_path::MemSlot;
use cairn_common::backoff::Backoff;
use cairn_common::{Error, KeyRange, RangeDeletes, Result, TableId, TableMeta, interleave};
use cairn_compaction::{CompactionJob, Pick, Survivors, VersionFilter};
use cairn_filestore::write_table_from;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tracing::Instrument;

#[derive(Default)]
pub struct Counters {
    pub flushes: AtomicU64,
    pub compactions: AtomicU64,
    /// Compactions cut into subcompactions, and the parts they ran as.
    pub split_compactions: AtomicU64,
    pub subcompactions: AtomicU64,
    pub journal_bytes: AtomicU64,
    pub bytes_flushed: AtomicU64,
    pub bytes_compacted: AtomicU64,
    pub stalls: AtomicU64,
    pub imports: AtomicU64,
    pub bytes_imported: AtomicU64,
}

pub struct Background {
    /// The runtimes it made (none when it runs on its caller's, `background_threads = 0`):
    /// the background one, and the lease's own, since a renewal must not wait behind a
    /// flush or compaction that holds a worker (CPU-bound merging, a blocking fsync) for
    /// longer than the lease, or the writer refuses writes exactly when it is busiest.
    runtimes: Vec<tokio::runtime::Runtime>,
    handle: tokio::runtime::Handle,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Background {
    pub fn start(inner: Arc<Inner>, deletions: mpsc::UnboundedReceiver<Deletion>) -> Result<Self> {
        let mut bg = Background::on(inner.opts.background_threads, "cairn-bg")?;
        // Subscribed here, not in the tasks: a shutdown sent before a task first runs must
        // still reach it.
        bg.spawn(flush_loop(inner.clone(), inner.jobs.stopping()));
        bg.spawn(compaction_loop(inner.clone(), inner.jobs.stopping()));
        bg.spawn(deletion_loop(
            inner.clone(),
            deletions,
            inner.jobs.stopping(),
        ));
        if inner.lease.is_some() {
            let renewals = lease_loop(inner.clone(), inner.jobs.stopping());
            if bg.runtimes.is_empty() {
                bg.spawn(renewals);
            } else {
                let lease = new_runtime("cairn-lease", 1)?;
                bg.tasks.push(lease.spawn(renewals));
                bg.runtimes.push(lease);
            }
        }
        Ok(bg)
    }

    /// A reader's background work: only following its writer.
    pub fn start_reader(inner: Arc<Inner>) -> Result<Self> {
        let threads = inner.opts.background_threads.min(1);
        let mut bg = Background::on(threads, "cairn-follow")?;
        bg.spawn(crate::follow::follow_loop(
            inner.clone(),
            inner.jobs.stopping(),
        ));
        Ok(bg)
    }

    /// A runtime of `threads` workers, or the caller's for 0 (the embedder's runtime, or a
    /// simulation's, where one seed must decide every interleaving).
    fn on(threads: usize, name: &str) -> Result<Self> {
        if threads == 0 {
            let handle = tokio::runtime::Handle::try_current()
                .map_err(|e| Error::component("background work on the caller's runtime", e))?;
            return Ok(Background {
                runtimes: Vec::new(),
                handle,
                tasks: Vec::new(),
            });
        }
        let runtime = new_runtime(name, threads)?;
        Ok(Background {
            handle: runtime.handle().clone(),
            runtimes: vec![runtime],
            tasks: Vec::new(),
        })
    }

    fn spawn(&mut self, task: impl std::future::Future<Output = ()> + Send + 'static) {
        self.tasks.push(self.handle.spawn(task));
    }

    /// Where other heavy work (bulk imports) runs, off the caller's runtime (unless the
    /// background runs on it).
    pub fn handle(&self) -> tokio::runtime::Handle {
        self.handle.clone()
    }

    /// Stops the loops after the job each is running, and deletes what is pending deletion.
    pub async fn stop(mut self, inner: &Inner) {
        inner.jobs.stop();
        for t in std::mem::take(&mut self.tasks) {
            let _ = t.await;
        }
        self.shut_down();
    }

    /// Stops at once, without waiting (the `Db` was dropped without `close`).
    pub fn abort(self, inner: &Inner) {
        inner.jobs.stop();
        self.shut_down();
    }

    fn shut_down(self) {
        for t in &self.tasks {
            t.abort();
        }
        for rt in self.runtimes {
            rt.shutdown_background();
        }
    }
}

fn new_runtime(name: &str, threads: usize) -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads.max(1))
        .thread_name(name)
        .enable_all()
        .build()
        .map_err(|e| Error::component(format!("{name} runtime"), e))
}

/// Background retries: 50 ms doubling to 3.2 s.
fn backoff(attempt: u32) -> Duration {
    Backoff::new(Duration::from_millis(50), Duration::from_millis(3200)).delay(attempt + 1)
}

fn record_error(inner: &Inner, what: &str, e: &Error, attempt: u32) {
    tracing::error!(error = %e, attempt, "{what} failed; will retry");
    inner.metrics.background_errors.increment(1);
    inner.jobs.failed(what, e, attempt);
}

fn clear_error(inner: &Inner) {
    inner.jobs.succeeded();
}

async fn flush_loop(inner: Arc<Inner>, mut shutdown: watch::Receiver<bool>) {
    let mut attempt = 0u32;
    loop {
        let oldest = inner.writes.mem().immutables.last().cloned();
        // Error level, as the servers' call spans: present at any log level. The failure is
        // logged in it too, so it names the database.
        let span = tracing::error_span!("flush", database = %inner.database);
        match oldest {
            Some(slot) => match flush_one(&inner, &slot).instrument(span.clone()).await {
                Ok(()) => {
                    attempt = 0;
                    clear_error(&inner);
                    inner.jobs.changed();
                    inner.jobs.want_compaction();
                    // Writers may have filled the active memtable while the queue was full.
                    inner.freeze(false).await;
                    continue;
                }
                Err(e) => {
                    attempt += 1;
                    span.in_scope(|| record_error(&inner, "flush", &e, attempt));
                    // A caller waiting in `flush` cuts the wait short: a server that came
                    // back is tried at once, not after the backoff.
                    tokio::select! {
                        biased;
                        _ = tokio::time::sleep(backoff(attempt)) => continue,
                        _ = inner.jobs.flush_wanted() => continue,
                        _ = shutdown.changed() => return,
                    }
                }
            },
            None => {
                if *shutdown.borrow() {
                    return;
                }
                tokio::select! {
                    biased;
                    _ = inner.jobs.flush_wanted() => {}
                    _ = shutdown.changed() => {}
                }
            }
        }
    }
}

/// Writes one frozen memtable as an L0 table and installs it; then the journal up to the
/// memtable's last record is no longer needed.
async fn flush_one(inner: &Arc<Inner>, slot: &Arc<MemSlot>) -> Result<()> {
    let started = std::time::Instant::now();
    let flushed_lsn = slot.max_lsn.load(Ordering::Relaxed);
    let handle = if slot.is_empty() {
        None
    } else {
        let id = inner.versions.reserve_table_ids(1).await?.start;
        let ranges = slot.ranges.get().unwrap_or_default();
        // Versions no reader can tell apart go now, as compaction would drop them: merge
        // operands fold, shadowed versions and expired puts go. The range tombstones join
        // the survivors afterwards, in order.
        let oldest = inner.snapshots.oldest(|| inner.writes.visible());
        let seen_by_all = ranges
            .tombstones()
            .iter()
            .filter(|t| t.seq <= oldest)
            .cloned();
        let versions = VersionFilter::new(
            inner.ops.flush_rules(oldest),
            RangeDeletes::new(seen_by_all),
        );
        let mut survivors = Survivors::new(slot.table.scan(&KeyRange::all(), u64::MAX), versions);
        let entries = interleave(&mut survivors, ranges.tombstones());
        let meta = write_table_from(inner.comps.storage.as_ref(), id, 0, entries).await?;
        if let Some(e) = survivors.error {
            let _ = inner.comps.storage.delete_table(id).await;
            return Err(e);
        }
        let table = inner.comps.storage.open_table(&meta).await?;
        Some((TableHandle::new(table, inner.deleter.clone()), oldest))
    };
    let (handle, oldest_kept) = match handle {
        Some((h, oldest)) => (Some(h), oldest),
        None => (None, 0),
    };
    let mut edit = VersionEdit {
        flushed_lsn: Some(flushed_lsn),
        ..VersionEdit::default()
    };
    if let Some(h) = &handle {
        edit.added.push((0, h.meta.clone()));
        edit.history_floor = Some(oldest_kept);
        // Complete up to the table's newest write, unless visibility is behind it: an open
        // import holds a number below that, and a replica must not show past it yet.
        edit.last_seq = Some(h.meta.max_seq.min(inner.writes.visible()));
    }
    fail::fail_point!("flush-before-install");
    inner
        .install(edit, handle.iter().cloned().collect())
        .await?;
    fail::fail_point!("flush-after-install");
    if let Some(h) = &handle {
        inner
            .jobs
            .counters()
            .flushes
            .fetch_add(1, Ordering::Relaxed);
        inner
            .jobs
            .counters()
            .bytes_flushed
            .fetch_add(h.meta.size, Ordering::Relaxed);
        let m = &inner.metrics;
        m.flushes.increment(1);
        m.flushed_bytes.increment(h.meta.size);
        m.flush_seconds.record(started.elapsed().as_secs_f64());
    }
    // Only now, with the table visible, may readers stop finding the memtable.
    inner.writes.retire(slot);
    fail::fail_point!("flush-before-truncate");
    if let Err(e) = inner.comps.journal.truncate(flushed_lsn).await {
        // The records are in a table now; replaying them again would be harmless.
        tracing::warn!(error = %e, "journal truncation failed");
    }
    Ok(())
}

/// Keeps the writer's lease: an empty manifest version whenever a quarter lease has passed
/// since the last version this writer wrote. A failure is retried at the next look; once
/// the lease lapses writes are refused until a renewal succeeds, and a fence ends it.
async fn lease_loop(inner: Arc<Inner>, mut shutdown: watch::Receiver<bool>) {
    let Some(clock) = inner.lease.clone() else {
        return;
    };
    let every = (clock.lease() / 4).max(Duration::from_millis(1));
    loop {
        let due = clock
            .since_renewal()
            .map_or(Duration::ZERO, |since| every.saturating_sub(since));
        tokio::select! {
            biased;
            _ = tokio::time::sleep(due) => {}
            _ = shutdown.changed() => return,
        }
        if clock.since_renewal().is_some_and(|since| since < every) {
            continue;
        }
        let Some(renewed) = inner.versions.renew().await else {
            return;
        };
        match renewed {
            Ok(()) => {}
            Err(e) if e.is_fenced() => {
                tracing::error!(database = %inner.database, error = %e, "the writer's lease is lost: a newer writer took over");
                return;
            }
            Err(e) => {
                tracing::warn!(database = %inner.database, error = %e, "renewing the writer's lease failed; retrying");
                tokio::select! {
                    biased;
                    _ = tokio::time::sleep(every / 4) => {}
                    _ = shutdown.changed() => return,
                }
            }
        }
    }
}

async fn compaction_loop(inner: Arc<Inner>, mut shutdown: watch::Receiver<bool>) {
    let mut attempt = 0u32;
    loop {
        if *shutdown.borrow() {
            return;
        }
        let pick = inner.picker.pick(&inner.versions.current().metas());
        let Some(pick) = pick else {
            tokio::select! {
                biased;
                _ = inner.jobs.compaction_wanted() => continue,
                _ = shutdown.changed() => return,
            }
        };
        // Error level, as the servers' call spans: present at any log level. The failure is
        // logged in it too, so it names the database.
        let span = tracing::error_span!(
            "compaction",
            database = %inner.database,
            level = pick.level,
            inputs = pick.inputs.len(),
        );
        let result = {
            // An open import holds this lock for as long as its caller likes: the wait must
            // still hear a shutdown, or `close` waits on this task for ever.
            let _one = tokio::select! {
                biased;
                one = inner.jobs.compaction() => one,
                _ = shutdown.changed() => return,
            };
            // A manual compaction may have changed the levels while this waited.
            match inner.picker.pick(&inner.versions.current().metas()) {
                Some(p) if p == pick => run_pick(&inner, pick).instrument(span.clone()).await,
                _ => Ok(()),
            }
        };
        match result {
            Ok(()) => {
                attempt = 0;
                clear_error(&inner);
            }
            Err(e) => {
                attempt += 1;
                span.in_scope(|| record_error(&inner, "compaction", &e, attempt));
                tokio::select! {
                    biased;
                    _ = tokio::time::sleep(backoff(attempt)) => {}
                    _ = shutdown.changed() => return,
                }
            }
        }
    }
}

/// Pushes every level into the next until all data is in the deepest non-empty level.
pub async fn compact_all(inner: &Arc<Inner>) -> Result<()> {
    let _one = inner.jobs.compaction().await;
    let metas = inner.versions.current().metas();
    let Some(deepest) = metas.iter().rposition(|l| !l.is_empty()) else {
        return Ok(());
    };
    // Everything ends in one sorted level; never less than L1, so L0's overlap is resolved.
    let target = deepest.max(1);
    for level in 0..target {
        loop {
            let metas = inner.versions.current().metas();
            if metas[level].is_empty() {
                break;
            }
            run_pick(inner, inner.picker.pick_level(&metas, level)).await?;
        }
    }
    // The deepest level itself may hold shadowed versions from earlier compactions.
    let metas = inner.versions.current().metas();
    if !metas[target].is_empty() {
        let inputs = metas[target].clone();
        let pick = Pick {
            level: target,
            output_level: target,
            inputs,
            drop_tombstones: metas.iter().skip(target + 1).all(|l| l.is_empty()),
            trivial_move: false,
        };
        run_pick(inner, pick).await?;
    }
    Ok(())
}

/// Runs a job's parts (its subcompactions, or the job whole) at once, each a task of its
/// own, so a pool's workers or a local compactor's threads share them; returns their outputs
/// in key order. If one fails, the others' outputs, which nothing will install, go at once.
///
/// A part's attempts given up on (a worker killed, stopped or cut off) may have left tables,
/// or may still write them: each attempt writes ids of its own, cut in order from the part's,
/// and outputs take their attempt's ids from its first, so the part's ids below its first
/// output are those of abandoned attempts. They are deleted after `engine.table_grace_ms`
/// (a deletion of one never written costs nothing on a disk); one written later still, by
/// a worker that resumed, goes at the next open.
async fn run_parts(inner: &Arc<Inner>, parts: Vec<CompactionJob>) -> Result<Vec<TableMeta>> {
    // A JoinSet aborts the parts still running when this future is dropped (a database
    // dropped without close), as a single job's future would stop.
    let mut tasks = tokio::task::JoinSet::new();
    let n = parts.len();
    for (i, part) in parts.into_iter().enumerate() {
        let compactor = inner.comps.compactor.clone();
        let ids = part.output_ids.clone();
        tasks.spawn(async move { (i, ids, compactor.compact(part).await) });
    }
    let mut outputs: Vec<Vec<TableMeta>> = vec![Vec::new(); n];
    let mut failed = None;
    while let Some(done) = tasks.join_next().await {
        match done {
            Ok((i, ids, Ok(out))) => {
                // Ids below the part's first output are its abandoned attempts'.
                if let Some(first) = out.iter().map(|t| t.id).min() {
                    for id in ids.into_iter().filter(|id| *id < first) {
                        let _ = inner.deleter.send(Deletion { id, was_live: true });
                    }
                }
                outputs[i] = out;
            }
            Ok((_, _, Err(e))) => drop(failed.get_or_insert(e)),
            Err(e) => drop(failed.get_or_insert(Error::component("subcompaction", e))),
        }
    }
    let outputs: Vec<TableMeta> = outputs.into_iter().flatten().collect();
    if let Some(e) = failed {
        for t in &outputs {
            let _ = inner.comps.storage.delete_table(t.id).await;
        }
        return Err(e);
    }
    Ok(outputs)
}

async fn run_pick(inner: &Arc<Inner>, pick: Pick) -> Result<()> {
    let started = std::time::Instant::now();
    let input_ids: Vec<TableId> = pick.inputs.iter().map(|t| t.id).collect();
    // The oldest snapshot the job kept versions for; a move drops nothing.
    let mut kept_from = None;
    let outputs: Vec<TableMeta> = if pick.trivial_move {
        pick.inputs.clone()
    } else {
        let input_bytes: u64 = pick.inputs.iter().map(|t| t.size).sum();
        let target = inner.opts.compaction.target_table_bytes.max(1);
        let ids = inner
            .versions
            // Twice the outputs the job can need, for each of up to six attempts at it (a
            // remote compactor gives each its own ids); ids cost nothing.
            // Subcompactions cut them up among themselves.
            .reserve_table_ids(
                ((input_bytes / target + 2) * 12 + 8)
                    * inner.opts.compaction.subcompactions.max(1) as u64,
            )
            .await?;
        let mut job = CompactionJob {
            inputs: pick.inputs.clone(),
            output_level: pick.output_level as u32,
            output_ids: ids.collect(),
            oldest_snapshot: inner.snapshots.oldest(|| inner.writes.visible()),
            drop_tombstones: pick.drop_tombstones,
            target_table_bytes: target,
            shared: crate::clone::shared_inputs(&inner.shared, &pick.inputs),
            ..CompactionJob::default()
        };
        inner.ops.fill_job(&mut job);
        kept_from = Some(job.oldest_snapshot);
        let parts = if input_bytes > target {
            job.split(inner.opts.compaction.subcompactions)
        } else {
            vec![job]
        };
        let _shown = inner.jobs.show(crate::jobs::InProgress {
            level: pick.level,
            output_level: pick.output_level,
            input_bytes,
            parts: parts.iter().map(|p| p.output_ids.clone()).collect(),
            started,
        });
        if parts.len() > 1 {
            let c = inner.jobs.counters();
            c.split_compactions.fetch_add(1, Ordering::Relaxed);
            c.subcompactions
                .fetch_add(parts.len() as u64, Ordering::Relaxed);
            inner.metrics.subcompactions.increment(parts.len() as u64);
        }
        run_parts(inner, parts).await?
    };
    // A moved table keeps its open handle; only newly written outputs are opened.
    let mut opened = Vec::new();
    if !pick.trivial_move {
        for meta in &outputs {
            let table = inner.comps.storage.open_table(meta).await?;
            opened.push(TableHandle::new(table, inner.deleter.clone()));
        }
    }
    let edit = VersionEdit {
        added: outputs
            .iter()
            .map(|t| (pick.output_level as u32, t.clone()))
            .collect(),
        removed: input_ids,
        history_floor: kept_from,
        ..VersionEdit::default()
    };
    // Inputs leave storage only once the manifest no longer names them, and once their last
    // reader lets go; a refused install (a fenced writer) deletes nothing.
    fail::fail_point!("compaction-before-install");
    let removed = inner.install(edit, opened).await?;
    fail::fail_point!("compaction-after-install");
    for t in removed {
        t.mark_obsolete();
    }
    if !pick.trivial_move {
        let written: u64 = outputs.iter().map(|t| t.size).sum();
        inner
            .jobs
            .counters()
            .compactions
            .fetch_add(1, Ordering::Relaxed);
        inner
            .jobs
            .counters()
            .bytes_compacted
            .fetch_add(written, Ordering::Relaxed);
        let m = &inner.metrics;
        m.compactions.increment(1);
        m.compaction_bytes_in
            .increment(pick.inputs.iter().map(|t| t.size).sum());
        m.compaction_bytes_out.increment(written);
        m.compaction_seconds.record(started.elapsed().as_secs_f64());
    }
    inner.jobs.changed();
    Ok(())
}

async fn deletion_loop(
    inner: Arc<Inner>,
    mut deletions: mpsc::UnboundedReceiver<Deletion>,
    mut shutdown: watch::Receiver<bool>,
) {
    // Tables that were live wait out the grace period, oldest first: a replica may still be
    // reading the version it last saw.
    let grace = Duration::from_millis(inner.opts.table_grace_ms);
    let mut waiting: std::collections::VecDeque<(tokio::time::Instant, TableId)> =
        Default::default();
    loop {
        let next_due = waiting.front().map(|(due, _)| *due);
        tokio::select! {
            biased;
            d = deletions.recv() => match d {
                Some(d) if d.was_live && !grace.is_zero() => {
                    waiting.push_back((tokio::time::Instant::now() + grace, d.id));
                }
                Some(d) => delete_table(&inner, d.id).await,
                None => return,
            },
            _ = tokio::time::sleep_until(next_due.unwrap_or_else(tokio::time::Instant::now)),
                if next_due.is_some() => {
                if let Some((_, id)) = waiting.pop_front() {
                    delete_table(&inner, id).await;
                }
            }
            _ = shutdown.changed() => {
                // What nobody else can read goes now; tables in their grace period stay (the
                // next open queues them again), as replicas may be reading them.
                while let Ok(d) = deletions.try_recv() {
                    if !d.was_live || grace.is_zero() {
                        delete_table(&inner, d.id).await;
                    }
                }
                return;
            }
        }
    }
}

async fn delete_table(inner: &Inner, id: TableId) {
    if let Err(e) = inner.comps.storage.delete_table(id).await {
        tracing::warn!(table = id, error = %e, "deleting obsolete table failed; it goes at the next open");
    }
}
