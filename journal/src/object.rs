//! The journal as objects in an object store (`s3://`, `file://`, `memory://`, any
//! `ObjectStore`), so the node that writes a database keeps nothing durable of it.
//!
//! Each group commit is one object, `wal/<number>` under the journal's prefix, numbered one
//! after another and created only if absent; an append is acknowledged once its object is.
//! A claim writes a record-less object at the next number carrying the new epoch, so the
//! writer it replaces, whose next object has that number, is refused by the store itself and
//! learns from the object that a newer epoch holds the journal. Replay reads the objects in
//! number order; truncation deletes objects whose records are all flushed.
//!
//! What keeps a replaced writer from ever acknowledging a write the new one did not replay:
//! - Claim objects are never deleted, and neither is the highest object: a replaced writer's
//!   next number is at most the claim's, so its create always meets an object that names the
//!   newer epoch, however long it was paused.
//! - After a create whose earlier attempt failed with an unknown outcome, the next number is
//!   looked at: if the earlier attempt had landed, been replayed by a new writer and deleted
//!   by its truncation, the new writer's claim object sits right after it, and the records
//!   are refused rather than acknowledged.

use self::format::{CLAIM, FILL, FIXED, Header, MAGIC, Meta, RECORDS, decode, encode, object_name};
use self::replay::{Gaps, listed, probed};
use crate::{Claimed, Journal, JournalClaim, JournalRecord, check_claim, fenced_error};
use async_trait::async_trait;
use bytes::Bytes;
use cairn_common::backoff::Backoff;
use cairn_common::{BoxStream, Error, Lsn, Result};
use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, mpsc, oneshot};

#[derive(Debug, Clone, PartialEq)]
pub struct ObjectJournalOptions {
    /// A commit's object is cut once its records reach this many bytes.
    pub max_object_bytes: usize,
    /// The longest a commit waits for more records once its first has arrived. It waits
    /// only while fewer are queued than the last commit held, so a lone writer never does
    /// (0: never; records still group behind the put in flight).
    pub commit_delay: Duration,
    /// How long a failing or unreachable store is retried before the writers waiting on a
    /// commit get an error (the store's client retries each request too).
    pub retry_for: Duration,
    /// How many commits may be in flight at once (1 to `MAX_COMMITS_IN_FLIGHT`). They are
    /// acknowledged in number order, so a commit is acknowledged only once every earlier one
    /// has landed.
    pub commits_in_flight: usize,
    /// How often a read replica waiting for new records (`wait_past`) asks for the next
    /// object: each ask is one GET, so this trades a replica's staleness against requests.
    pub probe: Duration,
}

/// The most commits a writer may have in flight, as the format knows it.
pub const MAX_COMMITS_IN_FLIGHT: usize = 8;

/// How far below the highest object a commit may still be in flight: a writer's own window
/// below its highest object, and above it the fills and claim of a writer replacing it.
/// A replay takes a gap among these numbers for a commit in flight (and stops there), and
/// one further down for a truncation, which never deletes among them.
const NEWEST: u64 = 2 * MAX_COMMITS_IN_FLIGHT as u64;

impl Default for ObjectJournalOptions {
    fn default() -> Self {
        ObjectJournalOptions {
            max_object_bytes: 4 << 20,
            commit_delay: Duration::from_millis(2),
            retry_for: Duration::from_secs(30),
            commits_in_flight: 4,
            probe: Duration::from_millis(5),
        }
    }
}

pub struct ObjectJournal {
    shared: Arc<Shared>,
    committer: parking_lot::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

struct Shared {
    store: Arc<dyn ObjectStore>,
    /// `<prefix>/wal`: the objects, `wal/<number:020>`.
    dir: Path,
    /// Names the journal in errors: its URL.
    url: String,
    /// For `file://`: the directory, synced after each create (object_store does not).
    local_dir: Option<PathBuf>,
    opts: ObjectJournalOptions,
    queue: parking_lot::Mutex<Queue>,
    wake: Notify,
    /// Told each time a commit is settled.
    settled: Notify,
    writer: tokio::sync::Mutex<Writer>,
    /// Objects read or written, so replay and truncation need not read them again.
    known: parking_lot::Mutex<BTreeMap<u64, Known>>,
    /// The object `wait_past` last found, kept for the replay that follows it.
    peeked: parking_lot::Mutex<Option<replay::Object>>,
    /// How many objects past the first the last replay of the tail found.
    ahead: AtomicU64,
    /// The claimed epoch (0: none yet), for refusing a stale append before it queues.
    epoch: AtomicU64,
    appends: metrics::Counter,
    bytes: metrics::Counter,
    group_records: metrics::Histogram,
    put_seconds: metrics::Histogram,
}

/// What replay, truncation and claims need of an object: its kind and its header's LSNs.
#[derive(Debug, Clone, Copy)]
struct Known {
    kind: u8,
    last: Lsn,
    next: Lsn,
}

impl Known {
    fn of(h: &Header) -> Known {
        Known {
            kind: h.kind,
            last: h.last_lsn,
            next: h.next_lsn,
        }
    }
}

#[derive(Default)]
struct Queue {
    pending: Vec<Pending>,
    bytes: usize,
    closed: bool,
}

struct Pending {
    epoch: u64,
    payload: Bytes,
    done: oneshot::Sender<Result<Lsn>>,
}

/// A commit whose object is being written.
struct InFlight {
    number: u64,
    first: Lsn,
    /// The claim it was issued under.
    nonce: String,
    records: Vec<Bytes>,
    waiters: Vec<oneshot::Sender<Result<Lsn>>>,
    put: tokio::task::JoinHandle<Result<Put>>,
    _slot: OwnedSemaphorePermit,
}

/// What the committer knows; claims take it too.
#[derive(Default)]
struct Writer {
    claim: Option<JournalClaim>,
    journal: String,
    /// Tells this writer's objects from any other's: a create refused because the object
    /// exists is this writer's own earlier attempt exactly when the object carries it.
    nonce: String,
    next_number: u64,
    next_lsn: Lsn,
    last_lsn: Lsn,
    /// Set once a newer epoch is found holding the journal, or once a commit's outcome is
    /// unknown while later ones were in flight: every append is refused after.
    stopped: Option<Error>,
    /// An attempt at `next_number` failed without saying whether the object was created.
    uncertain: bool,
}

impl ObjectJournal {
    /// The journal under `prefix` of `store`; `url` names it in errors, `local_dir` is the
    /// directory behind a `file://` store (synced after each create).
    pub fn new(
        store: Arc<dyn ObjectStore>,
        prefix: Path,
        url: impl Into<String>,
        local_dir: Option<PathBuf>,
        opts: ObjectJournalOptions,
    ) -> Result<ObjectJournal> {
        if opts.max_object_bytes == 0 {
            return Err(Error::InvalidArgument(
                "object journal: max_object_bytes must be positive".into(),
            ));
        }
        if !(1..=MAX_COMMITS_IN_FLIGHT).contains(&opts.commits_in_flight) {
            return Err(Error::InvalidArgument(format!(
                "object journal: commits_in_flight must be from 1 to {MAX_COMMITS_IN_FLIGHT}"
            )));
        }
        Ok(ObjectJournal {
            shared: Arc::new(Shared {
                store,
                dir: prefix.clone().join("wal"),
                url: url.into(),
                local_dir,
                opts,
                queue: parking_lot::Mutex::default(),
                wake: Notify::new(),
                settled: Notify::new(),
                writer: tokio::sync::Mutex::default(),
                known: parking_lot::Mutex::default(),
                peeked: parking_lot::Mutex::default(),
                ahead: AtomicU64::new(0),
                epoch: AtomicU64::new(0),
                appends: metrics::counter!("cairn_journal_appends_total"),
                bytes: metrics::counter!("cairn_journal_bytes_total"),
                group_records: metrics::histogram!("cairn_journal_group_commit_records"),
                put_seconds: metrics::histogram!("cairn_journal_object_put_seconds"),
            }),
            committer: parking_lot::Mutex::new(None),
        })
    }
}

enum Put {
    Created,
    Exists,
}

impl Shared {
    fn err(&self, what: impl std::fmt::Display, e: impl std::fmt::Display) -> Error {
        Error::component(format!("journal at {}", self.url), format!("{what}: {e}"))
    }

    fn path(&self, number: u64) -> Path {
        self.dir.clone().join(object_name(number))
    }

    /// The numbers of the objects present, in order.
    async fn list(&self) -> Result<Vec<u64>> {
        // One level: the objects sit directly under `wal/`.
        let listed = self
            .retrying("list", || self.store.list_with_delimiter(Some(&self.dir)))
            .await?;
        let mut out: Vec<u64> = listed
            .objects
            .iter()
            .filter_map(|o| o.location.filename()?.parse().ok())
            .collect();
        out.sort_unstable();
        Ok(out)
    }

    /// The numbers of the objects after `number`, in order.
    async fn list_after(&self, number: u64) -> Result<Vec<u64>> {
        let offset = self.path(number);
        let objects = self
            .retrying("list", || {
                self.store
                    .list_with_offset(Some(&self.dir), &offset)
                    .try_collect::<Vec<_>>()
            })
            .await?;
        let mut out: Vec<u64> = objects
            .iter()
            .filter_map(|o| o.location.filename()?.parse().ok())
            .filter(|&n| n > number)
            .collect();
        out.sort_unstable();
        Ok(out)
    }

    /// Object `number`, checked; `None` if absent.
    async fn read(&self, number: u64) -> Result<Option<(Header, Vec<Bytes>)>> {
        let path = self.path(number);
        let got = self
            .retrying(&format!("read object {number}"), || async {
                match self.store.get(&path).await {
                    Ok(r) => r.bytes().await.map(Some),
                    Err(object_store::Error::NotFound { .. }) => Ok(None),
                    Err(e) => Err(e),
                }
            })
            .await?;
        let Some(data) = got else {
            return Ok(None);
        };
        let (h, records) = decode(&format!("journal object {} at {}", path, self.url), &data)?;
        self.known.lock().insert(number, Known::of(&h));
        Ok(Some((h, records)))
    }

    /// The index in `numbers` of the first object holding an LSN at or past `from`: a
    /// binary search over the objects' last LSNs (which never decrease with the number),
    /// from what is known or from each object's fixed header alone, so a replay of the tail
    /// reads no older object whole. The object before the answer is then read whole and
    /// checked, so a damaged header can make the search read more, never skip a record.
    async fn first_reaching(&self, numbers: &[u64], from: Lsn) -> Result<usize> {
        let (mut lo, mut hi) = (0, numbers.len());
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if self.ends_at(numbers, mid).await?.map_or(0, |(_, k)| k.last) < from {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        if lo == 0 {
            return Ok(0);
        }
        let Some((i, _)) = self.ends_at(numbers, lo - 1).await? else {
            return Ok(lo);
        };
        match self.read(numbers[i]).await? {
            Some((h, _)) if h.last_lsn >= from => Ok(0),
            _ => Ok(lo),
        }
    }

    /// The nearest object at or below `numbers[i]` that is not a fill (fills carry no LSNs),
    /// as its index and what is known of it; `None` if there is none.
    async fn ends_at(&self, numbers: &[u64], i: usize) -> Result<Option<(usize, Known)>> {
        for j in (0..=i).rev() {
            if let Some(k) = self.peek(numbers[j]).await?
                && k.kind != FILL
            {
                return Ok(Some((j, k)));
            }
        }
        Ok(None)
    }

    /// An object's LSNs, from what is known or its fixed header (`None` if it is gone: a
    /// truncation took it, so its records are flushed).
    async fn peek(&self, number: u64) -> Result<Option<Known>> {
        if let Some(k) = self.known.lock().get(&number) {
            return Ok(Some(*k));
        }
        let path = self.path(number);
        let head = self
            .retrying(&format!("read object {number}'s header"), || async {
                match self.store.get_range(&path, 0..FIXED as u64).await {
                    Ok(b) => Ok(Some(b)),
                    Err(object_store::Error::NotFound { .. }) => Ok(None),
                    Err(e) => Err(e),
                }
            })
            .await?;
        // Not remembered: only a whole read, checked, is.
        Ok(match head {
            Some(b) if b.len() == FIXED && &b[..8] == MAGIC => {
                let u64_at =
                    |at: usize| u64::from_le_bytes(b[at..at + 8].try_into().unwrap_or([0; 8]));
                Some(Known {
                    kind: b[8],
                    last: u64_at(25),
                    next: u64_at(33),
                })
            }
            Some(_) => {
                return Err(Error::corruption(
                    format!("journal object {} at {}", path, self.url),
                    "not a journal object (magic or length)",
                ));
            }
            None => None,
        })
    }

    /// Creates object `number` if absent, retrying a failing store for `retry_for`.
    async fn create(&self, number: u64, data: Bytes) -> Result<Put> {
        let path = self.path(number);
        let started = Instant::now();
        let put = self
            .retrying(&format!("write object {number}"), || async {
                let opts = PutOptions {
                    mode: PutMode::Create,
                    ..PutOptions::default()
                };
                match self
                    .store
                    .put_opts(&path, PutPayload::from(data.clone()), opts)
                    .await
                {
                    Ok(_) => Ok(Put::Created),
                    Err(object_store::Error::AlreadyExists { .. }) => Ok(Put::Exists),
                    Err(e) => Err(e),
                }
            })
            .await?;
        self.put_seconds.record(started.elapsed().as_secs_f64());
        if let (Put::Created, Some(dir)) = (&put, &self.local_dir) {
            let file = dir.join(path.as_ref());
            cairn_common::durable::sync_file(&file)?;
            if let Some(parent) = file.parent() {
                cairn_common::durable::sync_dir(parent)?;
            }
        }
        Ok(put)
    }

    /// Runs `call` until it succeeds or `retry_for` has passed, backing off between tries.
    async fn retrying<T, F, Fut>(&self, what: &str, call: F) -> Result<T>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = object_store::Result<T>>,
    {
        let backoff = Backoff::new(Duration::from_millis(20), Duration::from_secs(2));
        let deadline = Instant::now() + self.opts.retry_for;
        let mut attempt = 0;
        loop {
            match call().await {
                Ok(v) => return Ok(v),
                Err(e) => {
                    attempt += 1;
                    if Instant::now() + backoff.delay(attempt) >= deadline {
                        return Err(
                            self.err(format_args!("{what} (gave up after {attempt} attempts)"), e)
                        );
                    }
                    tracing::warn!(journal = %self.url, attempt, error = %e, "{what} failed; retrying");
                    backoff.wait(attempt).await;
                }
            }
        }
    }

    /// The committer: each commit holds every record queued when it starts (up to
    /// `max_object_bytes`), and up to `commits_in_flight` of them are written at once, each
    /// at the next number with the next LSNs. `settle_in_order` answers them in number order.
    async fn run(self: Arc<Self>) {
        let slots = Arc::new(Semaphore::new(self.opts.commits_in_flight));
        let (issued, in_flight) = mpsc::unbounded_channel();
        let settler = tokio::spawn(self.clone().settle_in_order(in_flight));
        let mut last_group = 1;
        while self.records_queued().await {
            let Ok(slot) = slots.clone().acquire_owned().await else {
                break;
            };
            if slots.available_permits() + 1 < self.opts.commits_in_flight {
                self.overlap().await;
            }
            self.gather(last_group).await;
            let batch = {
                let mut q = self.queue.lock();
                let mut bytes = 0;
                let mut n = 0;
                while n < q.pending.len() && (n == 0 || bytes < self.opts.max_object_bytes) {
                    bytes += q.pending[n].payload.len();
                    n += 1;
                }
                q.bytes -= bytes;
                q.pending.drain(..n).collect::<Vec<_>>()
            };
            last_group = batch.len().max(1);
            self.start(batch, slot, &slots, &issued).await;
        }
        drop(issued);
        let _ = settler.await;
    }

    /// Waits for a record; false once the journal is closed and nothing is queued.
    async fn records_queued(&self) -> bool {
        loop {
            let notified = self.wake.notified();
            {
                let q = self.queue.lock();
                if !q.pending.is_empty() {
                    return true;
                }
                if q.closed {
                    return false;
                }
            }
            notified.await;
        }
    }

    /// Before a commit starts beside others in flight: waits for one of them to settle, up
    /// to `commit_delay`. Where the store answers within that, commits do not overlap, and the
    /// writers of several small commits join into one (more objects would only cost more
    /// puts); where it is slower, the next commit starts without waiting for the one before.
    async fn overlap(&self) {
        if self.opts.commit_delay.is_zero() {
            return;
        }
        let _ = tokio::time::timeout(self.opts.commit_delay, self.settled.notified()).await;
    }

    /// Waits, up to `commit_delay`, until as many records are queued as the last commit
    /// held. Writers whose records shared a commit hear back together and send their next
    /// ones together; without the wait the first of them would go alone, the others would
    /// wait for it, and every write would pay two puts. A lone writer never waits.
    async fn gather(&self, last_group: usize) {
        if self.opts.commit_delay.is_zero() || last_group <= 1 {
            return;
        }
        let deadline = tokio::time::Instant::now() + self.opts.commit_delay;
        loop {
            let notified = self.wake.notified();
            {
                let q = self.queue.lock();
                if q.pending.len() >= last_group
                    || q.bytes >= self.opts.max_object_bytes
                    || q.closed
                {
                    return;
                }
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return;
            }
        }
    }

    /// Starts a commit of `batch` in `slot`: the next number and LSNs are its own from here,
    /// and its object is written by a task of its own while the next commit gathers.
    async fn start(
        self: &Arc<Self>,
        batch: Vec<Pending>,
        slot: OwnedSemaphorePermit,
        slots: &Arc<Semaphore>,
        issued: &mpsc::UnboundedSender<InFlight>,
    ) {
        let mut w = self.writer.lock().await;
        let mut records = Vec::with_capacity(batch.len());
        let mut waiters = Vec::with_capacity(batch.len());
        for p in batch {
            match self.refusal(&w, p.epoch) {
                Some(e) => {
                    let _ = p.done.send(Err(e));
                }
                None => {
                    records.push(p.payload);
                    waiters.push(p.done);
                }
            }
        }
        if records.is_empty() {
            return;
        }
        if w.uncertain {
            // The last commit's outcome is unknown, and nothing was in flight behind it:
            // its number is looked at before anything else is written, alone.
            drop(w);
            let others = self.opts.commits_in_flight as u32 - 1;
            let _all = slots.acquire_many(others).await;
            let mut w = self.writer.lock().await;
            let written = self.write_records(&mut w, &records).await;
            drop(w);
            self.answer(written, &records, waiters);
            drop(slot);
            return;
        }
        let Some(claim) = w.claim.clone() else {
            self.answer(
                Err(Error::InvalidArgument("append before any claim".into())),
                &records,
                waiters,
            );
            return;
        };
        let number = w.next_number;
        let first = w.next_lsn;
        let last = first + records.len() as u64 - 1;
        let header = self.header(&w, &claim, RECORDS, first, last, last + 1);
        let data = match encode(&header, &records) {
            Ok(data) => data,
            Err(e) => {
                self.answer(Err(e), &records, waiters);
                return;
            }
        };
        w.next_number = number + 1;
        w.next_lsn = last + 1;
        let nonce = w.nonce.clone();
        drop(w);
        let shared = self.clone();
        let put = tokio::spawn(async move { shared.create(number, data).await });
        let commit = InFlight {
            number,
            first,
            nonce,
            records,
            waiters,
            put,
            _slot: slot,
        };
        if let Err(mpsc::error::SendError(c)) = issued.send(commit) {
            self.answer(Err(Error::Closed), &c.records, c.waiters);
        }
    }

    /// Answers the commits in the order they were issued, each once its object's fate is
    /// known: a later one that landed first waits for the earlier ones.
    async fn settle_in_order(self: Arc<Self>, mut in_flight: mpsc::UnboundedReceiver<InFlight>) {
        while let Some(mut c) = in_flight.recv().await {
            let put = match (&mut c.put).await {
                Ok(put) => put,
                Err(e) => Err(self.err(format_args!("write object {}", c.number), e)),
            };
            let settled = {
                let mut w = self.writer.lock().await;
                self.settle(&mut w, &c, put).await
            };
            let InFlight {
                records, waiters, ..
            } = c;
            self.answer(settled, &records, waiters);
            self.settled.notify_waiters();
        }
    }

    /// What commit `c`'s put means for its writers, and for the writer's state.
    async fn settle(&self, w: &mut Writer, c: &InFlight, put: Result<Put>) -> Result<Lsn> {
        let last = c.first + c.records.len() as u64 - 1;
        if w.nonce != c.nonce {
            return Err(self.err(
                format_args!("write object {}", c.number),
                "the journal was claimed again while the commit was in flight; its outcome is unknown",
            ));
        }
        if let Some(e) = &w.stopped {
            // An earlier commit was refused or lost: whether this one landed is unknown to
            // its writers (a newer writer may have replayed it).
            return Err(self.err(
                format_args!("write object {}", c.number),
                format_args!("an earlier commit failed ({e}); whether this one landed is unknown"),
            ));
        }
        match put {
            Ok(Put::Created) => {}
            Ok(Put::Exists) => match self.read(c.number).await {
                Err(e) => return Err(self.unknown(w, c, e)),
                Ok(found) => match found {
                    // An attempt whose answer was lost landed: the records are there, once.
                    Some((h, found))
                        if h.meta.writer == w.nonce
                            && h.first_lsn == c.first
                            && found == c.records => {}
                    Some((h, _)) if h.meta.writer != w.nonce => {
                        let Some(claim) = w.claim.clone() else {
                            return Err(Error::InvalidArgument("append before any claim".into()));
                        };
                        return Err(stop(w, self.fenced_by(&claim, &h)));
                    }
                    Some(_) => {
                        return Err(stop(
                            w,
                            Error::corruption(
                                format!("journal object {} at {}", c.number, self.url),
                                "holds another commit of this writer",
                            ),
                        ));
                    }
                    // Deleted since the create was refused: only a truncation deletes, and only
                    // under a newer writer's claim.
                    None => return Err(self.fence_from(w, c.number).await),
                },
            },
            Err(e) => return Err(self.unknown(w, c, e)),
        }
        self.known.lock().insert(
            c.number,
            Known {
                kind: RECORDS,
                last,
                next: last + 1,
            },
        );
        w.last_lsn = w.last_lsn.max(last);
        Ok(c.first)
    }

    /// Commit `c` failed (`e`) without saying whether its object landed.
    fn unknown(&self, w: &mut Writer, c: &InFlight, e: Error) -> Error {
        if w.next_number == c.number + 1 {
            // Nothing after it: the next commit looks at its number first.
            w.uncertain = true;
            w.next_number = c.number;
            w.next_lsn = c.first;
        } else {
            // Later commits were issued and may have landed past a gap that this one may or
            // may not fill: only a claim, which fills the gaps, can go on.
            w.stopped = Some(self.err(
                format_args!("write object {}", c.number),
                "its outcome is unknown and later commits were in flight behind it; \
                 this writer stops (reopen the database to go on)",
            ));
        }
        e
    }

    /// Tells a commit's writers how it went: the first record's LSN, or why not.
    fn answer(
        &self,
        written: Result<Lsn>,
        records: &[Bytes],
        waiters: Vec<oneshot::Sender<Result<Lsn>>>,
    ) {
        match written {
            Ok(first) => {
                self.appends.increment(records.len() as u64);
                self.bytes
                    .increment(records.iter().map(|r| r.len() as u64).sum());
                self.group_records.record(records.len() as f64);
                for (i, done) in waiters.into_iter().enumerate() {
                    let _ = done.send(Ok(first + i as u64));
                }
            }
            Err(e) => {
                for done in waiters {
                    let _ = done.send(Err(e.duplicate()));
                }
            }
        }
    }

    /// An object's header as this writer writes it.
    fn header(
        &self,
        w: &Writer,
        claim: &JournalClaim,
        kind: u8,
        first_lsn: Lsn,
        last_lsn: Lsn,
        next_lsn: Lsn,
    ) -> Header {
        Header {
            kind,
            epoch: claim.epoch,
            first_lsn,
            last_lsn,
            next_lsn,
            meta: Meta {
                database: claim.database.clone(),
                journal: w.journal.clone(),
                writer: w.nonce.clone(),
                window: self.opts.commits_in_flight as u64,
            },
        }
    }

    /// Why an append of `epoch` is refused, if it is.
    fn refusal(&self, w: &Writer, epoch: u64) -> Option<Error> {
        if let Some(e) = &w.stopped {
            return Some(e.duplicate());
        }
        let Some(c) = &w.claim else {
            return Some(Error::InvalidArgument(format!(
                "journal at {}: append before any claim",
                self.url
            )));
        };
        if epoch < c.epoch {
            return Some(fenced_error(&self.url, &c.database, epoch, c.epoch));
        }
        if epoch > c.epoch {
            return Some(Error::InvalidArgument(format!(
                "journal at {}: append at epoch {epoch}, which never claimed it (epoch {} did)",
                self.url, c.epoch
            )));
        }
        None
    }

    /// Writes `records` as the next object; returns the first one's LSN.
    async fn write_records(&self, w: &mut Writer, records: &[Bytes]) -> Result<Lsn> {
        let Some(claim) = w.claim.clone() else {
            return Err(Error::InvalidArgument("append before any claim".into()));
        };
        loop {
            let number = w.next_number;
            let first = w.next_lsn;
            let last = first + records.len() as u64 - 1;
            if w.uncertain {
                // An earlier commit's object may have landed here, and a newer writer may
                // have claimed after it and truncated it since: created again, it would
                // hold this writer's records below that claim, with LSNs overlapping the
                // newer writer's. Truncation never deletes the newest object, so a gap here
                // with objects after it means exactly that.
                match self.read(number).await? {
                    Some((h, found)) => {
                        match self.found_at(w, &claim, (number, first), h, &found, records) {
                            Found::ThisCommit => return Ok(first),
                            Found::Earlier => continue,
                            Found::Fenced(e) => return Err(e),
                        }
                    }
                    None if !self.list_after(number).await?.is_empty() => {
                        return Err(self.fence_from(w, number).await);
                    }
                    None => {}
                }
            }
            let header = self.header(w, &claim, RECORDS, first, last, last + 1);
            let put = match self.create(number, encode(&header, records)?).await {
                Ok(put) => put,
                Err(e) => {
                    w.uncertain = true;
                    return Err(e);
                }
            };
            match put {
                Put::Created => {
                    w.uncertain = false;
                    self.adopt(w, number, last + 1, last);
                    return Ok(first);
                }
                Put::Exists => {
                    let Some((h, found)) = self.read(number).await? else {
                        // Deleted since the create was refused: only a truncation deletes,
                        // and only under a newer writer's claim. Look again at the top.
                        return Err(self.fence_from(w, number).await);
                    };
                    match self.found_at(w, &claim, (number, first), h, &found, records) {
                        Found::ThisCommit => return Ok(first),
                        Found::Earlier => continue,
                        Found::Fenced(e) => return Err(e),
                    }
                }
            }
        }
    }

    /// What the object found at `number`, where this writer meant to write `records`, is.
    fn found_at(
        &self,
        w: &mut Writer,
        claim: &JournalClaim,
        (number, first): (u64, Lsn),
        h: Header,
        found: &[Bytes],
        records: &[Bytes],
    ) -> Found {
        if h.meta.writer != w.nonce {
            return Found::Fenced(stop(w, self.fenced_by(claim, &h)));
        }
        // Ours: an attempt whose answer was lost landed. Its records are durable (the
        // writers of an earlier commit heard an error: the outcome was unknown to them).
        w.uncertain = false;
        self.adopt(w, number, h.next_lsn, h.last_lsn);
        if h.first_lsn == first && found == records {
            Found::ThisCommit
        } else {
            Found::Earlier
        }
    }

    /// Object `number`, ending at `last`, is this writer's newest.
    fn adopt(&self, w: &mut Writer, number: u64, next_lsn: Lsn, last: Lsn) {
        self.known.lock().insert(
            number,
            Known {
                kind: RECORDS,
                last,
                next: next_lsn,
            },
        );
        w.next_number = number + 1;
        w.next_lsn = next_lsn;
        w.last_lsn = last;
    }

    /// The highest object that is not a fill (`t`, read as `tail`, is the highest of all),
    /// read whole: where the journal ends, and whose writer a claim must fence.
    async fn newest_not_fill(
        &self,
        numbers: &[u64],
        t: u64,
        tail: &Header,
    ) -> Result<Option<(u64, Header)>> {
        if tail.kind != FILL {
            return Ok(Some((t, tail.clone())));
        }
        let Some((i, _)) = self
            .ends_at(numbers, numbers.len().saturating_sub(1))
            .await?
        else {
            return Ok(None);
        };
        Ok(self.read(numbers[i]).await?.map(|(h, _)| (numbers[i], h)))
    }

    /// The fill objects a claim writes before its own, as (number, object): the numbers
    /// where the writer of object `r` (whose window is `window`) may still land a commit.
    /// That is the gaps among the `window - 1` numbers below `r`, which may be its commits
    /// still in flight or lost, and those among the `window - 1` above it.
    fn fills(
        &self,
        numbers: &[u64],
        r: u64,
        window: u64,
        epoch: u64,
        meta: &Meta,
    ) -> Result<Vec<(u64, Bytes)>> {
        // No LSNs: a commit of the fenced writer may land beside a fill after it is written.
        let fill = Header {
            kind: FILL,
            epoch,
            first_lsn: 0,
            last_lsn: 0,
            next_lsn: 0,
            meta: meta.clone(),
        };
        (r.saturating_sub(window - 1)..r + window)
            .filter(|n| *n != r && numbers.binary_search(n).is_err())
            .map(|n| Ok((n, encode(&fill, &[])?)))
            .collect()
    }

    fn fenced_by(&self, ours: &JournalClaim, theirs: &Header) -> Error {
        if theirs.epoch > ours.epoch {
            fenced_error(&self.url, &ours.database, ours.epoch, theirs.epoch)
        } else {
            Error::Fenced(format!(
                "journal at {}: another writer of database {} claimed it at epoch {} (this one holds epoch {})",
                self.url, theirs.meta.database, theirs.epoch, ours.epoch
            ))
        }
    }

    /// The error for a writer whose object vanished: the newest object names who holds it.
    async fn fence_from(&self, w: &mut Writer, number: u64) -> Error {
        let Some(claim) = w.claim.clone() else {
            return Error::InvalidArgument("append before any claim".into());
        };
        let newest = match self.list().await {
            Ok(numbers) => numbers.last().copied(),
            Err(e) => return e,
        };
        let e = match newest {
            Some(n) => match self.read(n).await {
                Ok(Some((h, _))) => self.fenced_by(&claim, &h),
                Ok(None) | Err(_) => Error::Fenced(format!(
                    "journal at {}: object {number} was taken and removed by another writer",
                    self.url
                )),
            },
            None => Error::Fenced(format!(
                "journal at {}: emptied by another writer",
                self.url
            )),
        };
        stop(w, e)
    }
}

/// Stops writer `w` with `e`: every later append hears it too.
fn stop(w: &mut Writer, e: Error) -> Error {
    w.stopped = Some(e.duplicate());
    e
}

/// What a writer found at the number it meant to write.
enum Found {
    /// Its own current commit, landed by an attempt whose answer was lost.
    ThisCommit,
    /// Its own earlier commit, landed after it was reported failed: write after it.
    Earlier,
    /// Another writer's.
    Fenced(Error),
}

#[async_trait]
impl Journal for ObjectJournal {
    fn reach(&self) -> crate::Reach {
        crate::Reach::Shared
    }

    /// The journal groups concurrent appends itself, with `commits_in_flight` objects being
    /// written at once: the engine's write groups on top would only bound that to their own
    /// number in flight, and add a hand-over to every write.
    fn appends_wait(&self) -> bool {
        false
    }

    async fn claim(&self, claim: &JournalClaim) -> Result<Claimed> {
        let s = &self.shared;
        let mut w = s.writer.lock().await;
        if let Some(held) = &w.claim
            && held.database == claim.database
            && held.epoch == claim.epoch
            && w.stopped.is_none()
        {
            // A retried claim: this writer already holds the journal at this epoch.
            return Ok(Claimed {
                journal: w.journal.clone(),
                last_lsn: w.last_lsn,
            });
        }
        loop {
            let numbers = s.list().await?;
            let tail = match numbers.last() {
                Some(&n) => {
                    let (h, _) = s.read(n).await?.ok_or_else(|| {
                        s.err("claim", format_args!("object {n} vanished while claiming"))
                    })?;
                    Some((n, h))
                }
                None => None,
            };
            let held = tail.as_ref().map(|(_, h)| JournalClaim {
                database: h.meta.database.clone(),
                epoch: h.epoch,
                flushed_lsn: 0,
            });
            check_claim(&s.url, held.as_ref(), claim)?;
            let journal = tail
                .as_ref()
                .map_or_else(crate::new_journal_id, |(_, h)| h.meta.journal.clone());
            let nonce = crate::new_journal_id();
            // The claim's and its fills'.
            let meta = Meta {
                database: claim.database.clone(),
                journal: journal.clone(),
                writer: nonce.clone(),
                window: s.opts.commits_in_flight as u64,
            };
            let (number, last_lsn, next_lsn, fills) = match &tail {
                Some((t, h)) => {
                    let (r, end) = match s.newest_not_fill(&numbers, *t, h).await? {
                        Some((r, end)) => (r, end),
                        None => (*t, h.clone()),
                    };
                    let window = end.meta.window.clamp(1, MAX_COMMITS_IN_FLIGHT as u64);
                    let fills = s.fills(&numbers, r, window, claim.epoch, &meta)?;
                    let number = (t + 1).max(r + window);
                    (number, end.last_lsn, end.next_lsn, fills)
                }
                None => (0, 0, 1, Vec::new()),
            };
            // Every fill lands before the claim does: one refused means an object of the
            // writer being replaced landed there since the listing, so look again.
            let filled =
                futures::future::try_join_all(fills.into_iter().map(|(n, data)| s.create(n, data)))
                    .await?;
            if filled.iter().any(|p| matches!(p, Put::Exists)) {
                continue;
            }
            let next_lsn = next_lsn.max(claim.flushed_lsn + 1);
            let header = Header {
                kind: CLAIM,
                epoch: claim.epoch,
                first_lsn: next_lsn,
                last_lsn,
                next_lsn,
                meta,
            };
            match s.create(number, encode(&header, &[])?).await? {
                // Someone wrote there since the listing: look again.
                Put::Exists => continue,
                Put::Created => {
                    *w = Writer {
                        claim: Some(claim.clone()),
                        journal: journal.clone(),
                        nonce,
                        next_number: number + 1,
                        next_lsn,
                        last_lsn,
                        stopped: None,
                        uncertain: false,
                    };
                    s.known.lock().insert(
                        number,
                        Known {
                            kind: CLAIM,
                            last: last_lsn,
                            next: next_lsn,
                        },
                    );
                    s.epoch.store(claim.epoch, Ordering::Release);
                    let mut committer = self.committer.lock();
                    if committer.is_none() {
                        *committer = Some(tokio::spawn(s.clone().run()));
                    }
                    return Ok(Claimed { journal, last_lsn });
                }
            }
        }
    }

    async fn append(&self, epoch: u64, record: Bytes) -> Result<Lsn> {
        let s = &self.shared;
        let claimed = s.epoch.load(Ordering::Acquire);
        if claimed == 0 {
            return Err(Error::InvalidArgument(format!(
                "journal at {}: append before any claim",
                s.url
            )));
        }
        let (tx, rx) = oneshot::channel();
        {
            let mut q = s.queue.lock();
            if q.closed {
                return Err(Error::Closed);
            }
            q.bytes += record.len();
            q.pending.push(Pending {
                epoch,
                payload: record,
                done: tx,
            });
        }
        s.wake.notify_one();
        rx.await.map_err(|_| Error::Closed)?
    }

    async fn replay(&self, from: Lsn) -> Result<BoxStream<Result<JournalRecord>>> {
        let s = self.shared.clone();
        // A replica polling the tail knows an object wholly before `from`: the objects after
        // it are read by number until one is missing (no listing while the journal grows),
        // or listed after it (S3's start-after) when the next is missing, which is either
        // nothing new or a truncation; nothing older is kept in mind.
        let before = {
            let mut known = s.known.lock();
            let before = known
                .iter()
                .rev()
                .find(|(_, k)| k.kind != FILL && k.last < from)
                .map(|(n, k)| (*n, *k));
            if let Some((n, _)) = before {
                known.retain(|m, _| *m >= n);
            }
            before
        };
        let peeked = s.peeked.lock().take();
        let next = match (before, peeked) {
            (None, _) => None,
            // What `wait_past` found, if it is the object wanted.
            (Some((k, _)), Some((n, h, records))) if n == k + 1 => Some((h, records)),
            (Some((k, _)), _) => s.read(k + 1).await?,
        };
        let (objects, gaps) = match before {
            Some((k, known)) => match next {
                Some((h, records)) => (probed(s, k + 2, (k + 1, h, records)), None),
                None => {
                    let numbers = s.list_after(k).await?;
                    let gaps = Gaps {
                        highest: numbers.last().copied().unwrap_or(k),
                        from,
                        before: Some((k, known.next)),
                    };
                    (listed(s, numbers), Some(gaps))
                }
            },
            None => {
                let numbers = s.list().await?;
                let start = s.first_reaching(&numbers, from).await?;
                let before = match start.checked_sub(1) {
                    Some(i) => s
                        .ends_at(&numbers, i)
                        .await?
                        .map(|(_, k)| (numbers[i], k.next)),
                    None => None,
                };
                let gaps = Gaps {
                    highest: numbers.last().copied().unwrap_or(0),
                    from,
                    before,
                };
                (listed(s, numbers[start..].to_vec()), Some(gaps))
            }
        };
        let mut gaps = gaps;
        let objects = objects.try_take_while(move |(n, h, _)| {
            futures::future::ready(Ok(gaps.as_mut().is_none_or(|g| g.passes(*n, h))))
        });
        let mut previous = 0;
        let records = objects
            .map_ok(move |(_, h, records)| {
                let out: Vec<Result<JournalRecord>> = records
                    .into_iter()
                    .enumerate()
                    .map(|(i, payload)| (h.first_lsn + i as u64, payload))
                    .filter(|(lsn, _)| *lsn >= from)
                    .map(|(lsn, payload)| {
                        if lsn <= previous {
                            return Err(Error::corruption(
                                "journal",
                                format!("LSN {lsn} follows {previous}: objects out of order"),
                            ));
                        }
                        previous = lsn;
                        Ok(JournalRecord { lsn, payload })
                    })
                    .collect();
                futures::stream::iter(out)
            })
            .try_flatten();
        Ok(Box::pin(records))
    }

    /// Asks for the object after the newest one known, every `probe`, until it is there: a
    /// replica that has read the tail knows the newest object, and the next one is the
    /// writer's next commit. The object found is kept for the replay that follows, so
    /// finding it costs no second read.
    async fn wait_past(&self, lsn: Lsn, limit: Duration) -> Result<()> {
        let s = &self.shared;
        let newest = s.known.lock().last_key_value().map(|(n, k)| (*n, *k));
        let Some((n, k)) = newest else {
            // Nothing read yet: nothing to ask after.
            tokio::time::sleep(limit).await;
            return Ok(());
        };
        if k.kind == RECORDS && k.last > lsn {
            return Ok(());
        }
        let probing = async {
            loop {
                let asked = tokio::time::Instant::now();
                if let Some((h, records)) = s.read(n + 1).await? {
                    *s.peeked.lock() = Some((n + 1, h, records));
                    return Ok(());
                }
                tokio::time::sleep_until(asked + s.opts.probe).await;
            }
        };
        tokio::time::timeout(limit, probing).await.unwrap_or(Ok(()))
    }

    async fn truncate(&self, upto: Lsn) -> Result<()> {
        let s = &self.shared;
        let numbers = s.list().await?;
        // The newest objects stay, whatever they hold: the newest carries the numbering on,
        // and a gap among the `NEWEST` numbers tells a replay that a commit is still in
        // flight there, so none is made by deleting.
        let keep = numbers.last().map_or(0, |h| h.saturating_sub(NEWEST - 1));
        for &n in numbers.iter().take_while(|&&n| n < keep) {
            let known = s.known.lock().get(&n).copied();
            let k = match known {
                Some(k) => k,
                None => match s.read(n).await? {
                    Some((h, _)) => Known::of(&h),
                    None => continue,
                },
            };
            if k.last > upto {
                break;
            }
            // Claims and fills stay: a writer they fenced may still try to land there.
            if k.kind != RECORDS {
                continue;
            }
            let path = s.path(n);
            s.retrying(&format!("delete object {n}"), || async {
                match s.store.delete(&path).await {
                    Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
                    Err(e) => Err(e),
                }
            })
            .await?;
            s.known.lock().remove(&n);
        }
        Ok(())
    }

    async fn close(&self) -> Result<()> {
        self.shared.queue.lock().closed = true;
        self.shared.wake.notify_one();
        let committer = self.committer.lock().take();
        if let Some(c) = committer {
            c.await.map_err(|e| {
                self.shared
                    .err("close", format_args!("the committer failed: {e}"))
            })?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod faulty_store;
mod format;
mod replay;
#[cfg(test)]
mod tests;
