//! The manifest as a log of numbered versions in a [`ManifestStore`], RocksDB's MANIFEST and
//! SlateDB's numbered manifests in one: version 1 and every multiple of [`CHECKPOINT_EVERY`]
//! are checkpoints (the whole state), the versions between them edits. Once a checkpoint is
//! written the versions before it are deleted. A reader knows from the newest version's number
//! where the newest checkpoint is, and reads it and the edits after it all at once (one
//! round trip's latency on an object store, not one per version).
//!
//! Every version is created only if absent, so of two writers only one installs version n.
//! Opening as the writer appends an epoch bump; a writer that finds its next version taken
//! has been replaced by a newer epoch and is fenced: it writes nothing more.

use super::record::{Body, Lease, Record};
use super::{Manifest, VersionEdit};
use crate::lease::{LeaseClock, WAIT};
use bytes::Bytes;
use cairn_common::backoff::Backoff;
use cairn_common::{Error, Result, TableId};
use cairn_filestore::{ManifestStore, ManifestVersion};
use futures::StreamExt;
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// Every version whose number is a multiple of this is a checkpoint.
pub const CHECKPOINT_EVERY: u64 = 64;

/// Versions a reader fetches at once.
const READ_AHEAD: usize = 16;

/// Retries of a manifest read or write that the store failed to answer: 40 ms doubling.
const STORE_RETRY: Backoff = Backoff::new(Duration::from_millis(40), Duration::from_secs(2));

fn is_checkpoint(n: ManifestVersion) -> bool {
    n == 1 || n.is_multiple_of(CHECKPOINT_EVERY)
}

/// The oldest checkpoint at or above version `n`: the version whose writing lets the
/// versions below it be collected.
pub fn checkpoint_at_or_above(n: ManifestVersion) -> ManifestVersion {
    if n <= 1 {
        1
    } else {
        n.div_ceil(CHECKPOINT_EVERY) * CHECKPOINT_EVERY
    }
}

/// The newest checkpoint at or below version `n`.
fn checkpoint_at_or_below(n: ManifestVersion) -> ManifestVersion {
    (n - n % CHECKPOINT_EVERY).max(1)
}

/// Table ids are reserved this many beyond what a job asks for, so most jobs find theirs
/// reserved already and reserving costs one manifest write per many tables.
const RESERVE_AHEAD: u64 = 64;

/// Attempts at one version before its outcome counts as unknown.
const WRITE_ATTEMPTS: u32 = 5;

/// The newest state in a store, and where it stands in the log.
pub struct Loaded {
    pub state: Manifest,
    pub version: ManifestVersion,
    pub checkpoint: ManifestVersion,
    /// The lease the newest version's writer held.
    pub lease: Option<Lease>,
}

/// Reads the newest state: the newest checkpoint and the edits after it; `None` if the store
/// holds no version. A version deleted while this read (a writer's checkpoint made it garbage)
/// starts the read again.
pub async fn load(store: &dyn ManifestStore) -> Result<Option<Loaded>> {
    let mut vanished = None;
    for attempt in 1..=WRITE_ATTEMPTS {
        match load_once(store).await {
            Ok(Ok(loaded)) => return Ok(loaded),
            Ok(Err(missing)) => vanished = Some(missing),
            // A store that failed to answer may answer the next time; a corrupt version
            // stays corrupt.
            Err(e) if e.is_corruption() || attempt == WRITE_ATTEMPTS => return Err(e),
            Err(e) => {
                tracing::warn!(attempt, error = %e, "reading the manifest failed; retrying");
                STORE_RETRY.wait(attempt).await;
            }
        }
    }
    let n = vanished.unwrap_or_default();
    Err(Error::corruption(
        format!("manifest at {}", store.location()),
        format!("version {n} is missing between the newest checkpoint and the newest version"),
    ))
}

/// `Err(n)` inside when version n was listed or needed but not found.
async fn load_once(
    store: &dyn ManifestStore,
) -> Result<std::result::Result<Option<Loaded>, ManifestVersion>> {
    let versions = store.list().await?;
    let Some(&newest) = versions.last() else {
        return Ok(Ok(None));
    };
    let what = |n| format!("manifest version {n} at {}", store.location());
    let checkpoint = checkpoint_at_or_below(newest);
    let mut reads = futures::stream::iter(checkpoint..=newest)
        .map(|n| async move { (n, store.read(n).await) })
        .buffered(READ_AHEAD);
    let mut state: Option<Manifest> = None;
    let mut lease = None;
    while let Some((n, data)) = reads.next().await {
        let Some(data) = data? else {
            return Ok(Err(n));
        };
        let rec = Record::decode(&data, &what(n))?;
        lease = rec.lease;
        let next = match (rec.body, state.take()) {
            (Body::Checkpoint(m), _) if n == checkpoint => {
                if m.database != rec.database {
                    return Err(Error::corruption(what(n), "checkpoint of another database"));
                }
                m
            }
            (Body::Edit(edit), Some(current)) if n != checkpoint => {
                if rec.database != current.database {
                    return Err(Error::corruption(
                        what(n),
                        format!(
                            "edit of database {} in the log of {}",
                            rec.database, current.database
                        ),
                    ));
                }
                if rec.epoch < current.epoch {
                    return Err(Error::corruption(
                        what(n),
                        format!("epoch {} after epoch {}", rec.epoch, current.epoch),
                    ));
                }
                let mut next = current.apply(&edit);
                next.epoch = rec.epoch;
                next
            }
            _ if n == checkpoint => {
                return Err(Error::corruption(
                    what(n),
                    "an edit where a checkpoint belongs",
                ));
            }
            _ => {
                return Err(Error::corruption(
                    what(n),
                    "a checkpoint where an edit belongs",
                ));
            }
        };
        state = Some(next);
    }
    let Some(state) = state else {
        return Ok(Err(checkpoint));
    };
    Ok(Ok(Some(Loaded {
        state,
        version: newest,
        checkpoint,
        lease,
    })))
}

enum Created {
    Ours,
    /// Another writer's version was there.
    Taken(Bytes),
    /// The log had moved past this version: a newer writer wrote a checkpoint beyond it and
    /// collected everything before, this slot included (and, if this create filled it
    /// again, the version before it, which is how that shows).
    Collected,
}

/// Creates version `n`, retrying failures; finding its own bytes there (an earlier attempt
/// whose answer was lost) counts as created.
async fn create_version(
    store: &dyn ManifestStore,
    n: ManifestVersion,
    data: &Bytes,
) -> Result<Created> {
    let mut attempt = 0;
    loop {
        let failed = match store.create(n, data.clone()).await {
            Ok(true) => match still_in_the_log(store, n).await {
                Ok(true) => return Ok(Created::Ours),
                Ok(false) => return Ok(Created::Collected),
                Err(e) => e,
            },
            Ok(false) => match store.read(n).await {
                Ok(Some(d)) if d == *data => return Ok(Created::Ours),
                Ok(Some(d)) => return Ok(Created::Taken(d)),
                // Gone again already: only garbage collection deletes, never the newest,
                // so a newer checkpoint stands past it.
                Ok(None) => return Ok(Created::Collected),
                Err(e) => e,
            },
            Err(e) => e,
        };
        attempt += 1;
        if attempt >= WRITE_ATTEMPTS {
            return Err(failed);
        }
        tracing::warn!(version = n, attempt, error = %failed, "manifest write failed; retrying");
        STORE_RETRY.wait(attempt).await;
    }
}

/// Whether version `n`, just created, extends the log rather than refilling a slot that a
/// newer writer's checkpoint had made garbage. Collection deletes in ascending order, so a
/// collected slot `n` means `n - 1` went before it; while `n - 1` stands, no version
/// between it and `n` was ever collected, and the create was contested fairly.
async fn still_in_the_log(store: &dyn ManifestStore, n: ManifestVersion) -> Result<bool> {
    if n <= 1 {
        return Ok(true);
    }
    Ok(store.read(n - 1).await?.is_some())
}

/// Deletes, in the background, every version before checkpoint `n`: none is read again. A
/// reader that listed one and finds it gone starts over from the newer checkpoint. Listing
/// (rather than deleting a known range) also clears what an interrupted earlier pass left.
fn collect_garbage(store: Arc<dyn ManifestStore>, n: ManifestVersion) {
    tokio::spawn(async move {
        let old = match store.list().await {
            Ok(v) => v.into_iter().take_while(|&v| v < n),
            Err(e) => {
                tracing::warn!(error = %e, "listing old manifest versions failed");
                return;
            }
        };
        for v in old {
            if let Err(e) = store.delete(v).await {
                tracing::warn!(version = v, error = %e, "deleting an old manifest version failed");
                return;
            }
        }
    });
}

/// What a writer whose journal only its own node reaches holds: the lease it writes into
/// every version, and the clock that each version written renews (see `crate::lease`).
pub struct Holder {
    pub lease: Lease,
    pub clock: Arc<LeaseClock>,
}

/// How waiting out another writer's lease ended.
enum WaitedOut {
    /// No version appeared for the lease and its margin: its holder has stopped.
    Quiet,
    /// A version appeared: read the log again.
    Moved,
}

/// Waits until `version` has been the newest for `WAIT` of `theirs`, looking every quarter
/// lease.
async fn wait_out(
    store: &dyn ManifestStore,
    version: ManifestVersion,
    theirs: &Lease,
) -> Result<WaitedOut> {
    let lease = Duration::from_millis(theirs.ms);
    let until = Instant::now() + lease.mul_f64(WAIT);
    tracing::info!(
        location = %store.location(),
        journal = %theirs.journal,
        lease_ms = theirs.ms,
        "the last writer held a lease on a journal of its own node: waiting it out before taking over"
    );
    loop {
        let now = Instant::now();
        if now >= until {
            return Ok(WaitedOut::Quiet);
        }
        tokio::time::sleep((until - now).min(lease / 4)).await;
        if store.list().await?.last() != Some(&version) {
            return Ok(WaitedOut::Moved);
        }
    }
}

/// The writer's end of the log.
pub struct ManifestLog {
    store: Arc<dyn ManifestStore>,
    state: Manifest,
    version: ManifestVersion,
    /// Ids from here up to `state.next_table_id` are reserved and not yet handed out.
    next_free_id: TableId,
    /// A version whose write failed without a definite answer: it may still land, so it is
    /// looked at before the next one is written.
    pending: Option<(ManifestVersion, Bytes)>,
    /// Why nothing more may be written: fenced, or a pending version that landed after all.
    stopped: Option<Error>,
    writer: u64,
    /// The lease written into every version, and its clock; `None` for a writer whose
    /// journal fences by itself, or after `release`.
    lease: Option<Lease>,
    clock: Option<Arc<LeaseClock>>,
}

impl ManifestLog {
    /// Opens the log as the database's writer, bumping the epoch, which fences the previous
    /// writer. With no version in the store, `create` gives the new database's first state
    /// (or the reason not to make one). A `holder` writes its lease into every version.
    /// A previous writer that held a lease on another journal than the holder's is waited
    /// out first; if it renews meanwhile, it is alive, and the open is refused (`Held`).
    pub async fn open_writer(
        store: Arc<dyn ManifestStore>,
        create: impl Fn() -> Result<Manifest>,
        holder: Option<Holder>,
    ) -> Result<ManifestLog> {
        let mine = holder.as_ref().map(|h| h.lease.journal.as_str());
        let mut moved = false;
        for _ in 0..16 {
            let (state, version) = match load(store.as_ref()).await? {
                None => (create()?, 1),
                Some(l) => {
                    if let Some(theirs) = l
                        .lease
                        .as_ref()
                        .filter(|t| Some(t.journal.as_str()) != mine)
                    {
                        if moved {
                            return Err(Error::Held(format!(
                                "database {} in {}: its writer (epoch {}, on journal {}) renewed its lease of {} ms while this open waited, so it is alive; send commands to it (`cairn --connect URL` where it serves), or stop it (a closed writer lets go at once, a dead one once its lease runs out)",
                                l.state.database,
                                store.location(),
                                l.state.epoch,
                                theirs.journal,
                                theirs.ms
                            )));
                        }
                        if let WaitedOut::Moved =
                            wait_out(store.as_ref(), l.version, theirs).await?
                        {
                            moved = true;
                            continue;
                        }
                    }
                    let mut state = l.state;
                    state.epoch += 1;
                    (state, l.version + 1)
                }
            };
            let body = if is_checkpoint(version) {
                Body::Checkpoint(state.clone())
            } else {
                Body::Edit(VersionEdit::default())
            };
            let writer = rand::random();
            let data = Bytes::from(
                Record {
                    database: state.database.clone(),
                    epoch: state.epoch,
                    writer,
                    body,
                    lease: holder.as_ref().map(|h| h.lease.clone()),
                }
                .encode()?,
            );
            let started = Instant::now();
            match create_version(store.as_ref(), version, &data).await? {
                Created::Ours => {
                    if let Some(h) = &holder {
                        h.clock.renewed(started);
                    }
                    // The epoch bump is a manifest write too: a crash right after it (before
                    // the journal is claimed) is the first pass of this crash point.
                    fail::fail_point!("manifest-after-write");
                    if is_checkpoint(version) {
                        collect_garbage(store.clone(), version);
                    }
                    tracing::info!(
                        database = %state.database,
                        epoch = state.epoch,
                        version,
                        location = %store.location(),
                        "opened the manifest as writer"
                    );
                    let (lease, clock) = holder.map(|h| (h.lease, h.clock)).unzip();
                    return Ok(ManifestLog {
                        next_free_id: state.next_table_id,
                        store,
                        state,
                        version,
                        pending: None,
                        stopped: None,
                        writer,
                        lease,
                        clock,
                    });
                }
                // Another writer opened or wrote in between: read again and go after it.
                Created::Taken(_) | Created::Collected => {
                    moved = true;
                    continue;
                }
            }
        }
        Err(Error::component(
            format!("manifest at {}", store.location()),
            "other writers kept taking the next version while this one opened",
        ))
    }

    pub fn state(&self) -> &Manifest {
        &self.state
    }

    pub fn version(&self) -> ManifestVersion {
        self.version
    }

    pub fn location(&self) -> String {
        self.store.location()
    }

    /// Writes `edit` as the next version and applies it to the state. Fails, changing
    /// nothing, when the store fails; fails for good when a newer writer has taken over.
    pub async fn commit(&mut self, edit: VersionEdit) -> Result<()> {
        if let Some(e) = &self.stopped {
            return Err(same(e));
        }
        if let Some((n, data)) = self.pending.take() {
            match self.store.read(n).await {
                Err(e) => {
                    self.pending = Some((n, data));
                    return Err(e);
                }
                Ok(None) => {}
                Ok(Some(d)) if d == data => return Err(self.stop(self.landed_late(n))),
                Ok(Some(d)) => return Err(self.stop(self.fenced(n, &d))),
            }
        }
        let next = self.state.apply(&edit);
        let n = self.version + 1;
        let checkpoint = is_checkpoint(n);
        let body = if checkpoint {
            Body::Checkpoint(next.clone())
        } else {
            Body::Edit(edit)
        };
        let data = Bytes::from(
            Record {
                database: self.state.database.clone(),
                epoch: self.state.epoch,
                writer: self.writer,
                body,
                lease: self.lease.clone(),
            }
            .encode()?,
        );
        let started = Instant::now();
        match create_version(self.store.as_ref(), n, &data).await {
            Ok(Created::Ours) => {
                if let Some(c) = &self.clock {
                    c.renewed(started);
                }
                fail::fail_point!("manifest-after-write")
            }
            Ok(Created::Taken(d)) => {
                let e = if self.is_own(&d) {
                    self.landed_late(n)
                } else {
                    self.fenced(n, &d)
                };
                return Err(self.stop(e));
            }
            Ok(Created::Collected) => return Err(self.stop(self.collected(n))),
            Err(e) => {
                self.pending = Some((n, data));
                return Err(e);
            }
        }
        self.state = next;
        self.version = n;
        if checkpoint {
            collect_garbage(self.store.clone(), n);
        }
        Ok(())
    }

    /// Hands out `n` table ids no writer of this database ever had or will have, reserving
    /// more in the manifest first when the reserved ones run out.
    pub async fn reserve_ids(&mut self, n: u64) -> Result<Range<TableId>> {
        let end = self.next_free_id + n;
        if end > self.state.next_table_id {
            self.commit(VersionEdit {
                next_table_id: Some(end + RESERVE_AHEAD),
                ..VersionEdit::default()
            })
            .await?;
        }
        let ids = self.next_free_id..end;
        self.next_free_id = end;
        Ok(ids)
    }

    /// Whether `data` is a version this writer wrote (its pending one, landed late).
    fn is_own(&self, data: &[u8]) -> bool {
        Record::decode(data, "").is_ok_and(|r| r.writer == self.writer)
    }

    fn landed_late(&self, n: ManifestVersion) -> Error {
        Error::component(
            format!("manifest at {}", self.store.location()),
            format!(
                "version {n}, whose write had failed, landed after all; reopen the database to continue from it"
            ),
        )
    }

    fn collected(&self, n: ManifestVersion) -> Error {
        Error::Fenced(format!(
            "database {}: this writer (epoch {}) was replaced: a newer writer's checkpoint in {} is past version {n}, which it has collected; it accepts no more changes",
            self.state.database,
            self.state.epoch,
            self.store.location()
        ))
    }

    fn fenced(&self, n: ManifestVersion, theirs: &[u8]) -> Error {
        let by = match Record::decode(theirs, "") {
            Ok(r) if r.database != self.state.database => format!("database {}", r.database),
            Ok(r) => format!("epoch {}", r.epoch),
            Err(_) => "an unreadable version".to_string(),
        };
        Error::Fenced(format!(
            "database {}: this writer (epoch {}) was replaced by {by} at manifest version {n} in {}; it accepts no more changes",
            self.state.database,
            self.state.epoch,
            self.store.location()
        ))
    }

    /// Renews the lease with an empty version.
    pub async fn renew(&mut self) -> Result<()> {
        self.commit(VersionEdit::default()).await
    }

    /// Lets go of the lease, for a writer that stops: the next writer need not wait it out.
    /// Nothing may be acknowledged after this.
    pub async fn release(&mut self) -> Result<()> {
        if self.lease.take().is_some() {
            self.commit(VersionEdit::default()).await?;
        }
        Ok(())
    }

    fn stop(&mut self, e: Error) -> Error {
        if let (Some(c), true) = (&self.clock, e.is_fenced()) {
            c.lost(&e);
        }
        let out = same(&e);
        self.stopped = Some(e);
        out
    }
}

/// A copy of a sticky error, for each caller that meets it.
fn same(e: &Error) -> Error {
    match e {
        Error::Fenced(m) => Error::Fenced(m.clone()),
        other => Error::component("manifest", other),
    }
}
