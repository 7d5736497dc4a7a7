//! The write-ahead journal: `trait Journal` and its implementations: a file, objects in an
//! object store, memory, and a journal server over gRPC.
//!
//! The engine writes every batch here before applying it to the memtable, replays what was
//! not yet flushed when it reopens, and truncates after each flush. Records are opaque bytes;
//! the journal assigns each one a log sequence number (LSN), strictly increasing in write order.

mod faulty;
mod file;
pub mod grpc;
mod memory;
mod object;
mod segment;

#[cfg(any(test, feature = "conformance"))]
pub mod conformance;

pub use faulty::FaultyJournal;
pub use file::{FileJournal, FileJournalOptions, JournalStats};
pub use grpc::{GrpcJournal, journal_service, journal_service_for};
pub use memory::MemoryJournal;
pub use object::{MAX_COMMITS_IN_FLIGHT, ObjectJournal, ObjectJournalOptions};

use async_trait::async_trait;
use bytes::Bytes;
use cairn_common::{BoxStream, Lsn, Result};
use std::time::Duration;

/// One replayed record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournalRecord {
    pub lsn: Lsn,
    pub payload: Bytes,
}

/// Who writes a journal: a database's writer at an epoch (see [`Journal::claim`]).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct JournalClaim {
    /// The database's id (from its manifest).
    pub database: String,
    /// The writer's epoch; a newer one fences the older.
    pub epoch: u64,
    /// Records up to here are in the database's tables: a journal new to the database
    /// numbers its records after it, so replay finds them.
    pub flushed_lsn: Lsn,
}

/// What a claim finds: which journal this is, and where it ended before the claim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claimed {
    /// Made when the journal was first claimed, kept for its life: a database records it
    /// to know whether a journal is the one its tables' LSNs refer to.
    pub journal: String,
    /// The last LSN it gave before this claim (0 for none).
    pub last_lsn: Lsn,
}

/// A new journal's id: unique enough across processes and machines (time, process, count).
pub fn new_journal_id() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNT: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!(
        "{nanos:x}-{:x}-{:x}",
        std::process::id(),
        COUNT.fetch_add(1, Ordering::Relaxed)
    )
}

/// Who can reach a journal, which decides how a replaced writer is stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reach {
    /// Every node reaches it (a journal server, an object journal): a claim fences every
    /// other writer of the database, so a take-over needs nothing more.
    Shared,
    /// Only its own node reaches it (a file, memory): a claim fences only writers that use
    /// this same journal, `id` (as `Claimed::journal` names it). A writer elsewhere is
    /// stopped by a lease on the storage tier instead (the engine's `lease_ms`).
    Node { id: String },
}

#[async_trait]
pub trait Journal: Send + Sync + 'static {
    /// Who can reach this journal (see [`Reach`]).
    fn reach(&self) -> Reach;

    /// Makes `claim.epoch` the journal's writer, durably and in order with appends: from
    /// then on an append of an older epoch is refused with `Error::Fenced`. Refused itself
    /// (`Fenced`) when a newer epoch holds the journal, and (`InvalidArgument`, naming both)
    /// when the journal holds another database's records. Claiming again at the same epoch
    /// is allowed, so a lost answer can be retried. A journal that ends before
    /// `claim.flushed_lsn` numbers its next records after it.
    async fn claim(&self, claim: &JournalClaim) -> Result<Claimed>;

    /// Appends one record for the writer at `epoch` and returns its LSN once it is durable
    /// under the journal's sync policy. Concurrent appends may share one write and one sync
    /// (group commit). Refused (`Fenced`) if a newer epoch has claimed the journal.
    async fn append(&self, epoch: u64, record: Bytes) -> Result<Lsn>;

    /// Whether an append waits on something slower than its caller's own work (an fsync, a
    /// round trip), so that writers gain by sharing one (the engine's write groups). False
    /// where an append completes in its caller (an unsynced file): there a queue of writers
    /// would add a wake-up to every write and save nothing. False too where the journal
    /// shares its slow work among concurrent appends itself, with no bound the engine's
    /// groups would keep (the object journal's commits in flight).
    fn appends_wait(&self) -> bool {
        true
    }

    /// This journal's appends as a call that is done when it returns, where it has one (an
    /// unsynced file, memory): the engine then numbers, journals and applies each write in
    /// one critical section, so a write is visible as it leaves it and no writer is
    /// acknowledged only once another writer's thread has run. `None` (the default) where an
    /// append waits. A decorator that forwards this must add its behaviour to it as well,
    /// since appends made through it do not pass through `append`.
    fn inline(&self) -> Option<&dyn InlineAppend> {
        None
    }

    /// Streams the records with `lsn >= from`, in LSN order. A record whose checksum fails
    /// anywhere but the torn tail is an error, never skipped.
    async fn replay(&self, from: Lsn) -> Result<BoxStream<Result<JournalRecord>>>;

    /// Returns once a record past `lsn` is there, or when `limit` has passed, whichever is
    /// first: a read replica calls it between reads of the tail, so it reads new records as
    /// they land instead of on a timer. A journal that cannot tell waits out `limit`, so its
    /// replicas poll.
    async fn wait_past(&self, lsn: Lsn, limit: Duration) -> Result<()> {
        let _ = lsn;
        tokio::time::sleep(limit).await;
        Ok(())
    }

    /// Discards records with `lsn <= upto`. An implementation may keep more than asked
    /// (whole segments go at once), never less.
    async fn truncate(&self, upto: Lsn) -> Result<()>;

    /// Waits for appends in flight, then refuses new ones.
    async fn close(&self) -> Result<()>;
}

/// Appends that are done when the call returns (see [`Journal::inline`]).
pub trait InlineAppend: Send + Sync {
    /// As [`Journal::append`], on the caller's thread.
    fn append_now(&self, epoch: u64, record: &Bytes) -> Result<Lsn>;
}

/// What a journal says when `claim` or an append comes from an epoch older than its writer's.
pub fn fenced_error(
    journal: &str,
    database: &str,
    epoch: u64,
    current: u64,
) -> cairn_common::Error {
    cairn_common::Error::Fenced(format!(
        "journal {journal}: database {database}'s writer at epoch {epoch} was replaced by epoch {current}"
    ))
}

/// What a journal says when a claim names another database than the one it holds.
pub fn foreign_error(journal: &str, holds: &str, claimed: &str) -> cairn_common::Error {
    cairn_common::Error::InvalidArgument(format!(
        "journal {journal} holds database {holds}, not database {claimed}: point each database at its own journal (or its own database name on a journal server)"
    ))
}

/// Checks a claim against the claim a journal holds.
pub fn check_claim(
    journal: &str,
    held: Option<&JournalClaim>,
    claim: &JournalClaim,
) -> cairn_common::Result<()> {
    match held {
        None => Ok(()),
        Some(h) if h.database != claim.database => {
            Err(foreign_error(journal, &h.database, &claim.database))
        }
        Some(h) if h.epoch > claim.epoch => {
            Err(fenced_error(journal, &claim.database, claim.epoch, h.epoch))
        }
        Some(_) => Ok(()),
    }
}

/// Waits until `last` (a journal's newest durable LSN) passes `lsn`, or `limit` passes.
pub(crate) async fn watch_past(last: &tokio::sync::watch::Sender<Lsn>, lsn: Lsn, limit: Duration) {
    let mut rx = last.subscribe();
    let _ = tokio::time::timeout(limit, rx.wait_for(|&l| l > lsn)).await;
}

#[cfg(test)]
mod tests;
