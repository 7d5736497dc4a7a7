//! The write-ahead journal: `trait Journal` and its local implementations.
//!
//! The engine writes every batch here before applying it to the memtable, replays what was
//! not yet flushed when it reopens, and truncates after each flush. Records are opaque bytes;
//! the journal assigns each one a log sequence number (LSN), strictly increasing in write order.

mod file;
pub mod grpc;
mod memory;
mod segment;

#[cfg(any(test, feature = "conformance"))]
pub mod conformance;

pub use file::{FileJournal, FileJournalOptions, JournalStats};
pub use grpc::{GrpcJournal, journal_service};
pub use memory::MemoryJournal;

use async_trait::async_trait;
use bytes::Bytes;
use cairn_common::{BoxStream, Lsn, Result};

/// One replayed record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournalRecord {
    pub lsn: Lsn,
    pub payload: Bytes,
}

#[async_trait]
pub trait Journal: Send + Sync + 'static {
    /// Appends one record and returns its LSN once it is durable under the journal's sync
    /// policy. Concurrent appends may share one write and one sync (group commit).
    async fn append(&self, record: Bytes) -> Result<Lsn>;

    /// Streams the records with `lsn >= from`, in LSN order. A record whose checksum fails
    /// anywhere but the torn tail is an error, never skipped.
    async fn replay(&self, from: Lsn) -> Result<BoxStream<Result<JournalRecord>>>;

    /// Discards records with `lsn <= upto`. An implementation may keep more than asked
    /// (whole segments go at once), never less.
    async fn truncate(&self, upto: Lsn) -> Result<()>;

    /// Waits for appends in flight, then refuses new ones.
    async fn close(&self) -> Result<()>;
}

#[cfg(test)]
mod tests;
