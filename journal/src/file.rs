//! The file journal: numbered segment files on a local disk, rolled over at a configured size
//! and cut at a torn tail on open. With `sync`, one thread group-commits concurrent appends
//! (one write and one fsync for everything queued while the previous sync ran). Without it an
//! append is one short `write` into the page cache, made by the caller itself under the
//! writer's lock: handing it to a thread and back would cost more than the write.

use crate::segment::{self, Decoded, SegmentInfo};
use crate::{
    Claimed, InlineAppend, Journal, JournalClaim, JournalRecord, check_claim, fenced_error,
};
use async_trait::async_trait;
use bytes::Bytes;
use cairn_common::{BoxStream, Error, IoContext, Lsn, Result};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, mpsc};
use tokio::sync::oneshot;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FileJournalOptions {
    pub dir: PathBuf,
    /// fsync every group before acknowledging it. Without it, acknowledged writes survive a
    /// process crash (they are in the OS page cache) but not a power loss.
    pub sync: bool,
    /// A new segment is started once the current one is at least this large.
    pub segment_bytes: u64,
}

impl FileJournalOptions {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        FileJournalOptions {
            dir: dir.into(),
            sync: true,
            segment_bytes: 64 << 20,
        }
    }
}

/// Counters, for tests and the benchmark's write-amplification figures.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct JournalStats {
    pub appends: u64,
    pub writes: u64,
    pub syncs: u64,
    pub bytes: u64,
}

#[derive(Default)]
struct Counters {
    appends: AtomicU64,
    writes: AtomicU64,
    syncs: AtomicU64,
    bytes: AtomicU64,
}

struct Append {
    epoch: u64,
    payload: Bytes,
    done: oneshot::Sender<Result<Lsn>>,
}

enum Msg {
    Append(Append),
    Close(oneshot::Sender<()>),
}

/// The file recording which journal this is and who writes it (JSON `Held`).
const CLAIM_FILE: &str = "CLAIM";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Held {
    journal: String,
    claim: Option<JournalClaim>,
}

pub struct FileJournal {
    dir: PathBuf,
    state: Arc<Mutex<Writer>>,
    /// The group-commit thread's queue, with `sync` only.
    tx: Mutex<Option<mpsc::Sender<Msg>>>,
    syncer: Mutex<Option<std::thread::JoinHandle<()>>>,
    sync: bool,
    closed: AtomicBool,
    segments: Arc<Mutex<Vec<SegmentInfo>>>,
    counters: Arc<Counters>,
    /// The newest LSN written (and synced, with `sync`), for `wait_past`: a replay reads no
    /// further, so it never meets a write still under way.
    last: Arc<tokio::sync::watch::Sender<Lsn>>,
    starts: Arc<Mutex<Starts>>,
}

/// Where writes start in the segments, one every `INDEX_EVERY` bytes or so: the first LSN of
/// a write and its offset in its segment. A replay of the tail starts reading there instead
/// of at the segment's start. Segments from before the journal opened have none.
type Starts = BTreeMap<Lsn, u64>;

/// The most a replay reads of a segment before the record it starts from.
const INDEX_EVERY: u64 = 64 << 10;

impl FileJournal {
    /// Opens (or creates) the journal in `opts.dir`, cutting a torn or corrupt tail off the
    /// newest segment so appends continue after the last good record.
    pub fn open(opts: FileJournalOptions) -> Result<Self> {
        let dir = opts.dir.clone();
        cairn_common::durable::create_dir_durably(&dir)?;
        let mut segments = list_segments(&dir)?;
        let next_lsn = match segments.last() {
            Some(last) => repair_tail(last, opts.sync)?,
            None => 1,
        };
        let (file, size) = match segments.last() {
            Some(last) => {
                let file = OpenOptions::new()
                    .append(true)
                    .open(&last.path)
                    .at(&last.path)?;
                let size = file.metadata().at(&last.path)?.len();
                (file, size)
            }
            None => {
                let info = create_segment(&dir, next_lsn)?;
                let file = OpenOptions::new()
                    .append(true)
                    .open(&info.path)
                    .at(&info.path)?;
                segments.push(info);
                (file, segment::HEADER_LEN as u64)
            }
        };
        let claim_path = dir.join(CLAIM_FILE);
        let held: Held = match std::fs::read(&claim_path) {
            Ok(d) => serde_json::from_slice(&d).map_err(|e| {
                Error::corruption(
                    format!("journal claim {}", claim_path.display()),
                    e.to_string(),
                )
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                // Kept from the first open, not the first claim: a writer names this journal
                // in its lease before it claims it, and must find the same name on restart.
                let held = Held {
                    journal: crate::new_journal_id(),
                    claim: None,
                };
                let data = serde_json::to_vec(&held)
                    .map_err(|e| Error::component(format!("journal {}", dir.display()), e))?;
                cairn_common::durable::replace_file(&claim_path, &data)?;
                held
            }
            Err(e) => return Err(Error::io(claim_path, e)),
        };
        let segments = Arc::new(Mutex::new(segments));
        let counters = Arc::new(Counters::default());
        let sync = opts.sync;
        let last = Arc::new(tokio::sync::watch::Sender::new(next_lsn - 1));
        let starts = Arc::new(Mutex::new(Starts::new()));
        let state = Arc::new(Mutex::new(Writer {
            dir: dir.clone(),
            opts,
            file,
            size,
            next_lsn,
            segments: segments.clone(),
            counters: counters.clone(),
            failed: None,
            buf: Vec::with_capacity(1 << 20),
            held,
            metrics: JournalMetrics::new(),
            last: last.clone(),
            starts: starts.clone(),
            // The segment's writes so far are not indexed: the next write is, if far enough in.
            indexed: 0,
        }));
        let (tx, syncer) = if sync {
            let (tx, rx) = mpsc::channel();
            let state = state.clone();
            let handle = std::thread::Builder::new()
                .name("cairn-journal".into())
                .spawn(move || group_commit(&state, rx))
                .at(&dir)?;
            (Some(tx), Some(handle))
        } else {
            (None, None)
        };
        Ok(FileJournal {
            dir,
            state,
            tx: Mutex::new(tx),
            syncer: Mutex::new(syncer),
            sync,
            closed: AtomicBool::new(false),
            segments,
            counters,
            last,
            starts,
        })
    }

    pub fn stats(&self) -> JournalStats {
        JournalStats {
            appends: self.counters.appends.load(Ordering::Relaxed),
            writes: self.counters.writes.load(Ordering::Relaxed),
            syncs: self.counters.syncs.load(Ordering::Relaxed),
            bytes: self.counters.bytes.load(Ordering::Relaxed),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn closed_error(&self) -> Error {
        Error::component(format!("journal {}", self.dir.display()), "closed")
    }

    fn send(&self, m: Msg) -> Result<()> {
        let tx = self.tx.lock();
        let tx = tx.as_ref().ok_or_else(|| self.closed_error())?;
        tx.send(m).map_err(|_| self.closed_error())
    }

    fn check_open(&self) -> Result<()> {
        if self.closed.load(Ordering::Acquire) {
            return Err(self.closed_error());
        }
        Ok(())
    }
}

/// Unsynced appends: one `write` each, made by the caller under the writer's lock.
impl InlineAppend for FileJournal {
    fn append_now(&self, epoch: u64, record: &Bytes) -> Result<Lsn> {
        if self.sync {
            // A synced append waits for its group's fsync, on the journal's own thread.
            return Err(Error::InvalidArgument(
                "a synced file journal appends through Journal::append".into(),
            ));
        }
        check_size(record)?;
        self.check_open()?;
        self.state.lock().commit_one(epoch, record)
    }
}

fn check_size(record: &Bytes) -> Result<()> {
    if record.len() > segment::MAX_RECORD {
        return Err(Error::InvalidArgument(format!(
            "journal record of {} bytes exceeds the limit of {}",
            record.len(),
            segment::MAX_RECORD
        )));
    }
    Ok(())
}

#[async_trait]
impl Journal for FileJournal {
    fn reach(&self) -> crate::Reach {
        crate::Reach::Node {
            id: self.state.lock().held.journal.clone(),
        }
    }

    /// Unsynced, an append is one `write` made by its caller.
    fn appends_wait(&self) -> bool {
        self.sync
    }

    fn inline(&self) -> Option<&dyn InlineAppend> {
        (!self.sync).then_some(self as &dyn InlineAppend)
    }

    async fn claim(&self, claim: &JournalClaim) -> Result<Claimed> {
        self.check_open()?;
        // Under the writer's lock, so it falls between two groups: appends written before it
        // were written under the old claim, and every later one is checked against the new.
        let (state, claim) = (self.state.clone(), claim.clone());
        let span = tracing::Span::current();
        tokio::task::spawn_blocking(move || span.in_scope(|| state.lock().take_claim(claim)))
            .await
            .map_err(|e| Error::component("journal claim", e))?
    }

    async fn append(&self, epoch: u64, record: Bytes) -> Result<Lsn> {
        if !self.sync {
            return self.append_now(epoch, &record);
        }
        check_size(&record)?;
        self.check_open()?;
        let (done, wait) = oneshot::channel();
        self.send(Msg::Append(Append {
            epoch,
            payload: record,
            done,
        }))?;
        wait.await.map_err(|_| self.closed_error())?
    }

    async fn replay(&self, from: Lsn) -> Result<BoxStream<Result<JournalRecord>>> {
        // Read first: every record up to it is whole in the segments listed after.
        let upto = *self.last.borrow();
        if from > upto {
            return Ok(Box::pin(futures::stream::empty()));
        }
        let segments = self.segments.lock().clone();
        let starts = self.starts.clone();
        let (tx, rx) = tokio::sync::mpsc::channel(1024);
        tokio::task::spawn_blocking(move || replay_segments(segments, &starts, from, upto, tx));
        Ok(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx)))
    }

    async fn wait_past(&self, lsn: Lsn, limit: std::time::Duration) -> Result<()> {
        crate::watch_past(&self.last, lsn, limit).await;
        Ok(())
    }

    async fn truncate(&self, upto: Lsn) -> Result<()> {
        // A segment may go when the next one starts at or below upto + 1: all its records are
        // then <= upto. The newest segment always stays, it is being written.
        let doomed: Vec<SegmentInfo> = {
            let mut segs = self.segments.lock();
            let mut n = 0;
            while n + 1 < segs.len() && segs[n + 1].first_lsn <= upto.saturating_add(1) {
                n += 1;
            }
            let doomed = segs.drain(..n).collect();
            if let Some(first) = segs.first() {
                let mut starts = self.starts.lock();
                *starts = starts.split_off(&first.first_lsn);
            }
            doomed
        };
        if doomed.is_empty() {
            return Ok(());
        }
        tokio::task::spawn_blocking(move || -> Result<()> {
            for seg in &doomed {
                match std::fs::remove_file(&seg.path) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(Error::io(&seg.path, e)),
                }
            }
            Ok(())
        })
        .await
        .map_err(|e| Error::component("journal truncate", e))?
    }

    async fn close(&self) -> Result<()> {
        self.closed.store(true, Ordering::Release);
        let tx = self.tx.lock().take();
        if let Some(tx) = tx {
            let (done, wait) = oneshot::channel();
            if tx.send(Msg::Close(done)).is_ok() {
                let _ = wait.await;
            }
        }
        let handle = self.syncer.lock().take();
        if let Some(h) = handle {
            tokio::task::spawn_blocking(move || h.join())
                .await
                .map_err(|e| Error::component("journal close", e))?
                .map_err(|_| Error::component("journal close", "writer thread panicked"))?;
        }
        Ok(())
    }
}

impl Drop for FileJournal {
    fn drop(&mut self) {
        // Dropping the sender ends the group-commit thread after it has written what is queued.
        self.tx.lock().take();
    }
}

/// The group-commit thread: everything queued while the previous group was written and synced
/// becomes the next group, up to `MAX_GROUP_BYTES`.
fn group_commit(state: &Mutex<Writer>, rx: mpsc::Receiver<Msg>) {
    let mut group: Vec<Append> = Vec::new();
    while let Ok(first) = rx.recv() {
        let mut bytes = 0usize;
        let mut next = Some(first);
        let mut closing = None;
        while let Some(m) = next.take() {
            match m {
                Msg::Append(a) => {
                    bytes += a.payload.len() + segment::RECORD_HEADER_LEN;
                    group.push(a);
                }
                Msg::Close(c) => {
                    closing = Some(c);
                    break;
                }
            }
            if bytes < MAX_GROUP_BYTES {
                next = rx.try_recv().ok();
            }
        }
        state.lock().commit(&mut group);
        if let Some(c) = closing {
            let _ = c.send(());
            return;
        }
    }
}

struct Writer {
    dir: PathBuf,
    opts: FileJournalOptions,
    file: File,
    size: u64,
    next_lsn: Lsn,
    segments: Arc<Mutex<Vec<SegmentInfo>>>,
    counters: Arc<Counters>,
    /// After a failed write the file's end is unknown: every later append fails too.
    failed: Option<String>,
    buf: Vec<u8>,
    /// Which journal this is and whose; appends of older epochs are refused.
    held: Held,
    metrics: JournalMetrics,
    last: Arc<tokio::sync::watch::Sender<Lsn>>,
    starts: Arc<Mutex<Starts>>,
    /// The offset of the newest write start in `starts` (of this segment).
    indexed: u64,
}

/// What the file journal records through the `metrics` facade.
struct JournalMetrics {
    appends: metrics::Counter,
    bytes: metrics::Counter,
    group_records: metrics::Histogram,
    fsync_seconds: metrics::Histogram,
}

impl JournalMetrics {
    fn new() -> Self {
        JournalMetrics {
            appends: metrics::counter!("cairn_journal_appends_total"),
            bytes: metrics::counter!("cairn_journal_bytes_total"),
            group_records: metrics::histogram!("cairn_journal_group_commit_records"),
            fsync_seconds: metrics::histogram!("cairn_journal_fsync_seconds"),
        }
    }
}

/// A group stops growing at this size so one slow caller does not hold many megabytes hostage.
const MAX_GROUP_BYTES: usize = 8 << 20;

impl Writer {
    fn take_claim(&mut self, claim: JournalClaim) -> Result<Claimed> {
        let journal = self.dir.display().to_string();
        if let Some(why) = &self.failed {
            return Err(Error::component(format!("journal {journal}"), why));
        }
        check_claim(&journal, self.held.claim.as_ref(), &claim)?;
        let last_lsn = self.next_lsn - 1;
        if self.next_lsn <= claim.flushed_lsn {
            // New to the database: its records must come after the ones in tables, or replay
            // (which starts after them) would skip them.
            tracing::info!(
                journal,
                from = claim.flushed_lsn + 1,
                "journal new to the database; numbering continues after its tables"
            );
            self.next_lsn = claim.flushed_lsn + 1;
            self.roll()?;
        }
        if self.held.claim.as_ref() != Some(&claim) {
            let held = Held {
                journal: self.held.journal.clone(),
                claim: Some(claim),
            };
            let data = serde_json::to_vec(&held)
                .map_err(|e| Error::component(format!("journal {journal}"), e))?;
            cairn_common::durable::replace_file(&self.dir.join(CLAIM_FILE), &data)?;
            self.held = held;
        }
        Ok(Claimed {
            journal: self.held.journal.clone(),
            last_lsn,
        })
    }

    /// The error for an append of `epoch`, if the claim fences it.
    fn fence(&self, epoch: u64) -> Option<Error> {
        let c = self.held.claim.as_ref().filter(|c| epoch < c.epoch)?;
        let journal = self.dir.display().to_string();
        Some(fenced_error(&journal, &c.database, epoch, c.epoch))
    }

    fn failure(&self, why: &str) -> Error {
        Error::component(format!("journal {}", self.dir.display()), why)
    }

    /// Writes one record (no sync) and returns its LSN.
    fn commit_one(&mut self, epoch: u64, payload: &Bytes) -> Result<Lsn> {
        if let Some(e) = self.fence(epoch) {
            return Err(e);
        }
        if let Some(why) = &self.failed {
            return Err(self.failure(why));
        }
        self.write_group(std::slice::from_ref(payload))
            .map_err(|why| self.fail(why))
    }

    /// Writes and syncs a group, and answers each of its appends.
    fn commit(&mut self, group: &mut Vec<Append>) {
        group.retain_mut(|a| match self.fence(a.epoch) {
            None => true,
            Some(e) => {
                let (done, _) = oneshot::channel();
                let _ = std::mem::replace(&mut a.done, done).send(Err(e));
                false
            }
        });
        if group.is_empty() {
            return;
        }
        let payloads: Vec<&Bytes> = group.iter().map(|a| &a.payload).collect();
        let result = match &self.failed {
            Some(why) => Err(why.clone()),
            None => self.write_group(&payloads),
        };
        if let Err(why) = &result {
            self.failed = Some(why.clone());
        }
        for (i, a) in group.drain(..).enumerate() {
            let _ = a.done.send(match &result {
                Ok(first) => Ok(first + i as u64),
                Err(why) => Err(self.failure(why)),
            });
        }
    }

    /// After a failed write the file's end is unknown: every later append fails too.
    fn fail(&mut self, why: String) -> Error {
        let e = self.failure(&why);
        self.failed = Some(why);
        e
    }

    /// Writes the records as one `write` and at most one `fsync`; returns the first LSN.
    fn write_group(&mut self, payloads: &[impl AsRef<[u8]>]) -> Result<Lsn, String> {
        if self.size >= self.opts.segment_bytes {
            self.roll().map_err(|e| e.to_string())?;
        }
        let first = self.next_lsn;
        if self.size >= self.indexed + INDEX_EVERY {
            self.starts.lock().insert(first, self.size);
            self.indexed = self.size;
        }
        self.buf.clear();
        for (i, p) in payloads.iter().enumerate() {
            segment::encode_into(&mut self.buf, first + i as u64, p.as_ref(), i == 0);
        }
        self.file
            .write_all(&self.buf)
            .map_err(|e| format!("write failed: {e}"))?;
        if self.opts.sync {
            let started = std::time::Instant::now();
            self.file
                .sync_data()
                .map_err(|e| format!("fsync failed: {e}"))?;
            self.counters.syncs.fetch_add(1, Ordering::Relaxed);
            let synced = started.elapsed().as_secs_f64();
            self.metrics.fsync_seconds.record(synced);
        }
        let m = &self.metrics;
        m.appends.increment(payloads.len() as u64);
        m.bytes.increment(self.buf.len() as u64);
        m.group_records.record(payloads.len() as f64);
        self.size += self.buf.len() as u64;
        self.next_lsn += payloads.len() as u64;
        self.last.send_replace(self.next_lsn - 1);
        self.counters
            .appends
            .fetch_add(payloads.len() as u64, Ordering::Relaxed);
        self.counters.writes.fetch_add(1, Ordering::Relaxed);
        self.counters
            .bytes
            .fetch_add(self.buf.len() as u64, Ordering::Relaxed);
        Ok(first)
    }

    fn roll(&mut self) -> Result<()> {
        let info = create_segment(&self.dir, self.next_lsn)?;
        self.file = OpenOptions::new()
            .append(true)
            .open(&info.path)
            .at(&info.path)?;
        self.size = segment::HEADER_LEN as u64;
        self.indexed = self.size;
        self.segments.lock().push(info);
        Ok(())
    }
}

fn list_segments(dir: &Path) -> Result<Vec<SegmentInfo>> {
    let mut segs = Vec::new();
    for ent in std::fs::read_dir(dir).at(dir)? {
        let path = ent.at(dir)?.path();
        if let Some(first_lsn) = segment::parse_file_name(&path) {
            segs.push(SegmentInfo { first_lsn, path });
        }
    }
    segs.sort_by_key(|s| s.first_lsn);
    Ok(segs)
}

/// Creates a segment durably: header written and synced, directory entry synced.
fn create_segment(dir: &Path, first_lsn: Lsn) -> Result<SegmentInfo> {
    let path = dir.join(segment::file_name(first_lsn));
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)
        .at(&path)?;
    f.write_all(&segment::header()).at(&path)?;
    f.sync_all().at(&path)?;
    cairn_common::durable::sync_dir(dir)?;
    Ok(SegmentInfo { first_lsn, path })
}

/// Scans the newest segment, cuts it after the last good record and returns the next LSN.
fn repair_tail(last: &SegmentInfo, sync: bool) -> Result<Lsn> {
    let data = match segment::read_segment(&last.path).at(&last.path)? {
        Ok(d) => d,
        Err(why) => {
            // A crash while creating the segment can leave its header incomplete; nothing was
            // ever acknowledged from it, so it is rewritten empty. A whole header that is
            // wrong is damage, not a torn creation.
            let len = std::fs::metadata(&last.path).at(&last.path)?.len();
            if len >= segment::HEADER_LEN as u64 {
                return Err(Error::corruption(
                    format!("journal segment {}", last.path.display()),
                    why,
                ));
            }
            tracing::warn!(path = %last.path.display(), why, "rewriting unreadable newest journal segment");
            let mut f = File::create(&last.path).at(&last.path)?;
            f.write_all(&segment::header()).at(&last.path)?;
            f.sync_all().at(&last.path)?;
            return Ok(last.first_lsn);
        }
    };
    let mut off = segment::HEADER_LEN;
    let mut next = last.first_lsn;
    loop {
        match segment::decode_at(&data, off) {
            Decoded::Record { lsn, next: n, .. } if lsn == next => {
                next += 1;
                off = n;
            }
            Decoded::End => break,
            Decoded::Record { lsn, .. } => {
                return Err(Error::corruption(
                    format!("journal segment {}", last.path.display()),
                    format!("record {lsn} at offset {off} where record {next} belongs"),
                ));
            }
            Decoded::Bad(why) => {
                // Only a torn tail may be cut: the last write, which no caller was told had
                // landed (its pages may have reached the disk in any order, so good records of
                // it can follow the bad one). A later write that starts after the bad bytes
                // means they were synced before it began: damage, not a torn tail. Without
                // fsync nothing was durable when acknowledged, and recovery keeps the longest
                // good prefix.
                if sync && let Some(at) = later_write_after(&data, off + 1, next) {
                    return Err(Error::corruption(
                        format!("journal segment {}", last.path.display()),
                        format!(
                            "{why} at offset {off}, with a later write after it at offset {at}: not a torn tail"
                        ),
                    ));
                }
                cut(last, off, data.len(), why)?;
                break;
            }
        }
    }
    Ok(next)
}

/// The offset of a good record at or after `from` that starts a write and is numbered `lsn`
/// or later, if any. Almost every offset fails on its length, so the scan is cheap.
fn later_write_after(data: &Bytes, from: usize, lsn: Lsn) -> Option<usize> {
    (from..data.len().saturating_sub(segment::RECORD_HEADER_LEN - 1)).find(|&at| {
        matches!(
            segment::decode_at(data, at),
            Decoded::Record { lsn: l, starts_write: true, .. } if l >= lsn
        )
    })
}

fn cut(seg: &SegmentInfo, at: usize, len: usize, why: &str) -> Result<()> {
    tracing::warn!(
        path = %seg.path.display(),
        offset = at,
        dropped_bytes = len - at,
        why,
        "cutting torn journal tail"
    );
    let f = OpenOptions::new()
        .write(true)
        .open(&seg.path)
        .at(&seg.path)?;
    f.set_len(at as u64).at(&seg.path)?;
    f.sync_all().at(&seg.path)
}

/// Sends the records from `from` to `upto` of `segments`: from the nearest write start at or
/// before `from` that `starts` knows in the segment holding it, else from its beginning.
fn replay_segments(
    segments: Vec<SegmentInfo>,
    starts: &Mutex<Starts>,
    from: Lsn,
    upto: Lsn,
    tx: tokio::sync::mpsc::Sender<Result<JournalRecord>>,
) {
    for (i, seg) in segments.iter().enumerate() {
        if let Some(next) = segments.get(i + 1)
            && next.first_lsn <= from
        {
            continue;
        }
        let corrupt = |detail: String| {
            Error::corruption(format!("journal segment {}", seg.path.display()), detail)
        };
        // Only the first segment read holds `from`; the later ones are read whole.
        let start = match from >= seg.first_lsn {
            true => starts
                .lock()
                .range(seg.first_lsn..=from)
                .next_back()
                .map_or(segment::HEADER_LEN as u64, |(_, &off)| off),
            false => segment::HEADER_LEN as u64,
        };
        let data = match segment::read_segment_from(&seg.path, start) {
            Ok(Ok(d)) => d,
            Ok(Err(why)) => {
                let _ = tx.blocking_send(Err(corrupt(why.to_string())));
                return;
            }
            Err(e) => {
                let _ = tx.blocking_send(Err(Error::io(&seg.path, e)));
                return;
            }
        };
        let mut off = 0;
        loop {
            match segment::decode_at(&data, off) {
                Decoded::Record {
                    lsn, payload, next, ..
                } => {
                    off = next;
                    if lsn >= from
                        && tx
                            .blocking_send(Ok(JournalRecord { lsn, payload }))
                            .is_err()
                    {
                        return;
                    }
                    if lsn >= upto {
                        return;
                    }
                }
                Decoded::End => break,
                Decoded::Bad(why) => {
                    // The tail of the newest segment was repaired at open, so bad bytes here
                    // are real corruption: report it rather than silently lose what follows.
                    let at = start + off as u64;
                    let _ = tx.blocking_send(Err(corrupt(format!("{why} at offset {at}"))));
                    return;
                }
            }
        }
    }
}
