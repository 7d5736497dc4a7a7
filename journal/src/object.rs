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

use crate::{Claimed, Journal, JournalClaim, JournalRecord, check_claim, fenced_error};
use async_trait::async_trait;
use bytes::{BufMut, Bytes, BytesMut};
use cairn_common::backoff::Backoff;
use cairn_common::{BoxStream, Error, Lsn, Result};
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::{Notify, oneshot};

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
}

impl Default for ObjectJournalOptions {
    fn default() -> Self {
        ObjectJournalOptions {
            max_object_bytes: 4 << 20,
            commit_delay: Duration::from_millis(2),
            retry_for: Duration::from_secs(30),
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
    writer: tokio::sync::Mutex<Writer>,
    /// Objects read whole or written: number -> (a claim's?, last LSN), so replay and
    /// truncation need not read them again.
    known: parking_lot::Mutex<BTreeMap<u64, (bool, Lsn)>>,
    /// The claimed epoch (0: none yet), for refusing a stale append before it queues.
    epoch: AtomicU64,
    appends: metrics::Counter,
    bytes: metrics::Counter,
    group_records: metrics::Histogram,
    put_seconds: metrics::Histogram,
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
    /// Set once a newer epoch is found holding the journal: every append is refused after.
    fenced: Option<Error>,
    /// An attempt at `next_number` failed without saying whether the object was created.
    uncertain: bool,
}

// An object: MAGIC, kind (1 claim, 2 records), epoch, first, last and next LSN, record
// count, the meta's length, the meta (JSON), the records ([len u32][payload]), then a crc32c
// of all that comes before it.
const MAGIC: &[u8; 8] = b"CAIRNJO1";
const FIXED: usize = 8 + 1 + 8 * 4 + 4 + 4;
const CLAIM: u8 = 1;
/// Objects a replay reads ahead.
const REPLAY_AHEAD: usize = 16;
const RECORDS: u8 = 2;

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct Meta {
    database: String,
    journal: String,
    writer: String,
}

#[derive(Debug, Clone)]
struct Header {
    kind: u8,
    epoch: u64,
    first_lsn: Lsn,
    last_lsn: Lsn,
    next_lsn: Lsn,
    meta: Meta,
}

fn encode(h: &Header, records: &[Bytes]) -> Result<Bytes> {
    let meta = serde_json::to_vec(&h.meta)
        .map_err(|e| Error::InvalidArgument(format!("journal object meta: {e}")))?;
    let body: usize = records.iter().map(|r| 4 + r.len()).sum();
    let mut out = BytesMut::with_capacity(FIXED + meta.len() + body + 4);
    out.put_slice(MAGIC);
    out.put_u8(h.kind);
    for v in [h.epoch, h.first_lsn, h.last_lsn, h.next_lsn] {
        out.put_u64_le(v);
    }
    out.put_u32_le(records.len() as u32);
    out.put_u32_le(meta.len() as u32);
    out.put_slice(&meta);
    for r in records {
        out.put_u32_le(r.len() as u32);
        out.put_slice(r);
    }
    let crc = crc32c::crc32c(&out);
    out.put_u32_le(crc);
    Ok(out.freeze())
}

fn decode(what: &str, data: &Bytes) -> Result<(Header, Vec<Bytes>)> {
    let bad = |d: &str| Error::corruption(what, d);
    if data.len() < FIXED + 4 || &data[..8] != MAGIC {
        return Err(bad("not a journal object (magic or length)"));
    }
    let (body, crc) = data.split_at(data.len() - 4);
    let crc = u32::from_le_bytes([crc[0], crc[1], crc[2], crc[3]]);
    if crc32c::crc32c(body) != crc {
        return Err(bad("checksum mismatch"));
    }
    let u64_at = |at: usize| u64::from_le_bytes(body[at..at + 8].try_into().unwrap_or([0; 8]));
    let u32_at = |at: usize| u32::from_le_bytes(body[at..at + 4].try_into().unwrap_or([0; 4]));
    let kind = body[8];
    let count = u32_at(41) as usize;
    let meta_len = u32_at(45) as usize;
    let meta_end = FIXED
        .checked_add(meta_len)
        .filter(|&e| e <= body.len())
        .ok_or_else(|| bad("meta runs past the object"))?;
    let meta: Meta =
        serde_json::from_slice(&body[FIXED..meta_end]).map_err(|e| bad(&format!("meta: {e}")))?;
    let h = Header {
        kind,
        epoch: u64_at(9),
        first_lsn: u64_at(17),
        last_lsn: u64_at(25),
        next_lsn: u64_at(33),
        meta,
    };
    let mut records = Vec::with_capacity(count.min(1 << 16));
    let mut at = meta_end;
    for _ in 0..count {
        if at + 4 > body.len() {
            return Err(bad("a record runs past the object"));
        }
        let len = u32_at(at) as usize;
        at += 4;
        if at + len > body.len() {
            return Err(bad("a record runs past the object"));
        }
        records.push(data.slice(at..at + len));
        at += len;
    }
    let consistent = match kind {
        CLAIM => count == 0,
        RECORDS => {
            count > 0
                && h.last_lsn == h.first_lsn + count as u64 - 1
                && h.next_lsn == h.last_lsn + 1
        }
        _ => false,
    };
    if !consistent || at != body.len() {
        return Err(bad("header and records disagree"));
    }
    Ok((h, records))
}

fn object_name(number: u64) -> String {
    format!("{number:020}")
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
        Ok(ObjectJournal {
            shared: Arc::new(Shared {
                store,
                dir: prefix.clone().join("wal"),
                url: url.into(),
                local_dir,
                opts,
                queue: parking_lot::Mutex::default(),
                wake: Notify::new(),
                writer: tokio::sync::Mutex::default(),
                known: parking_lot::Mutex::default(),
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
        self.known
            .lock()
            .insert(number, (h.kind == CLAIM, h.last_lsn));
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
            if self.peek_last_lsn(numbers[mid]).await? < from {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        if lo == 0 {
            return Ok(0);
        }
        match self.read(numbers[lo - 1]).await? {
            Some((h, _)) if h.last_lsn >= from => Ok(0),
            _ => Ok(lo),
        }
    }

    /// An object's last LSN, from what is known or its fixed header (0 if it is gone: a
    /// truncation took it, so its records are flushed).
    async fn peek_last_lsn(&self, number: u64) -> Result<Lsn> {
        if let Some((_, last)) = self.known.lock().get(&number) {
            return Ok(*last);
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
        Ok(match head {
            Some(b) if b.len() == FIXED && &b[..8] == MAGIC => {
                u64::from_le_bytes(b[25..33].try_into().unwrap_or([0; 8]))
            }
            Some(_) => {
                return Err(Error::corruption(
                    format!("journal object {} at {}", path, self.url),
                    "not a journal object (magic or length)",
                ));
            }
            None => 0,
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

    /// The committer: one object at a time, each holding every record queued when it starts
    /// (up to `max_object_bytes`).
    async fn run(self: Arc<Self>) {
        let mut last_group = 1;
        loop {
            loop {
                {
                    let q = self.queue.lock();
                    if !q.pending.is_empty() {
                        break;
                    }
                    if q.closed {
                        return;
                    }
                }
                self.wake.notified().await;
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
            last_group = batch.len();
            self.commit(batch).await;
        }
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

    async fn commit(&self, batch: Vec<Pending>) {
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
        match self.write_records(&mut w, &records).await {
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

    /// Why an append of `epoch` is refused, if it is.
    fn refusal(&self, w: &Writer, epoch: u64) -> Option<Error> {
        if let Some(e) = &w.fenced {
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
            let header = Header {
                kind: RECORDS,
                epoch: claim.epoch,
                first_lsn: first,
                last_lsn: last,
                next_lsn: last + 1,
                meta: Meta {
                    database: claim.database.clone(),
                    journal: w.journal.clone(),
                    writer: w.nonce.clone(),
                },
            };
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
            let e = self.fenced_by(claim, &h);
            w.fenced = Some(e.duplicate());
            return Found::Fenced(e);
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
        self.known.lock().insert(number, (false, last));
        w.next_number = number + 1;
        w.next_lsn = next_lsn;
        w.last_lsn = last;
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
        w.fenced = Some(e.duplicate());
        e
    }
}

type Object = (Header, Vec<Bytes>);

/// What a writer found at the number it meant to write.
enum Found {
    /// Its own current commit, landed by an attempt whose answer was lost.
    ThisCommit,
    /// Its own earlier commit, landed after it was reported failed: write after it.
    Earlier,
    /// Another writer's.
    Fenced(Error),
}

/// The objects `numbers` names, read in order. Objects are fetched ahead, as many as a
/// journal of small group commits needs to replay at the store's throughput rather than its
/// latency; each is checked whole before its records go out.
fn listed(s: Arc<Shared>, numbers: Vec<u64>) -> BoxStream<Result<Object>> {
    Box::pin(
        futures::stream::iter(numbers)
            .map(move |n| {
                let s = s.clone();
                async move {
                    s.read(n).await?.ok_or_else(|| {
                        s.err(
                            "replay",
                            format_args!("object {n} vanished while replaying"),
                        )
                    })
                }
            })
            .buffered(REPLAY_AHEAD),
    )
}

/// `first`, then the objects numbered from `next` on, fetched ahead in batches, up to the
/// first one missing.
fn probed(s: Arc<Shared>, next: u64, first: Object) -> BoxStream<Result<Object>> {
    let ready = std::collections::VecDeque::from([Ok(first)]);
    Box::pin(futures::stream::unfold(
        (s, next, ready, false),
        |(s, next, mut ready, mut ended)| async move {
            if ready.is_empty() && !ended {
                let batch =
                    futures::future::join_all((next..next + REPLAY_AHEAD as u64).map(|n| {
                        let s = s.clone();
                        async move { s.read(n).await }
                    }))
                    .await;
                for got in batch {
                    match got {
                        Ok(Some(object)) => ready.push_back(Ok(object)),
                        Ok(None) => {
                            ended = true;
                            break;
                        }
                        Err(e) => {
                            ready.push_back(Err(e));
                            ended = true;
                            break;
                        }
                    }
                }
                let next = next + REPLAY_AHEAD as u64;
                return ready
                    .pop_front()
                    .map(|item| (item, (s, next, ready, ended)));
            }
            ready
                .pop_front()
                .map(|item| (item, (s, next, ready, ended)))
        },
    ))
}

#[async_trait]
impl Journal for ObjectJournal {
    fn reach(&self) -> crate::Reach {
        crate::Reach::Shared
    }

    async fn claim(&self, claim: &JournalClaim) -> Result<Claimed> {
        let s = &self.shared;
        let mut w = s.writer.lock().await;
        if let Some(held) = &w.claim
            && held.database == claim.database
            && held.epoch == claim.epoch
            && w.fenced.is_none()
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
            let (number, journal, last_lsn, next_lsn) = match &tail {
                Some((n, h)) => (n + 1, h.meta.journal.clone(), h.last_lsn, h.next_lsn),
                None => (0, crate::new_journal_id(), 0, 1),
            };
            let next_lsn = next_lsn.max(claim.flushed_lsn + 1);
            let nonce = crate::new_journal_id();
            let header = Header {
                kind: CLAIM,
                epoch: claim.epoch,
                first_lsn: next_lsn,
                last_lsn,
                next_lsn,
                meta: Meta {
                    database: claim.database.clone(),
                    journal: journal.clone(),
                    writer: nonce.clone(),
                },
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
                        fenced: None,
                        uncertain: false,
                    };
                    s.known.lock().insert(number, (true, last_lsn));
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
                .find(|(_, (_, last))| *last < from)
                .map(|(n, _)| *n);
            if let Some(k) = before {
                known.retain(|n, _| *n >= k);
            }
            before
        };
        let objects = match before {
            Some(k) => match s.read(k + 1).await? {
                Some(first) => probed(s, k + 2, first),
                None => {
                    let numbers = s.list_after(k).await?;
                    listed(s, numbers)
                }
            },
            None => {
                let numbers = s.list().await?;
                let start = s.first_reaching(&numbers, from).await?;
                listed(s, numbers[start..].to_vec())
            }
        };
        let mut previous = 0;
        let records = objects
            .map_ok(move |(h, records)| {
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

    async fn truncate(&self, upto: Lsn) -> Result<()> {
        let s = &self.shared;
        let numbers = s.list().await?;
        // The newest object stays, whatever it holds: it carries the numbering on.
        let older = numbers.split_last().map_or(&[][..], |(_, older)| older);
        for &n in older {
            let known = s.known.lock().get(&n).copied();
            let (is_claim, last) = match known {
                Some(k) => k,
                None => match s.read(n).await? {
                    Some((h, _)) => (h.kind == CLAIM, h.last_lsn),
                    None => continue,
                },
            };
            if last > upto {
                break;
            }
            if is_claim {
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
mod tests;
