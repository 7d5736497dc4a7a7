//! Types every Cairn crate speaks: entries and their ordering, write batches, table metadata,
//! the shared error type and the boxed stream alias the async traits return.

mod aggregate;
pub mod backoff;
mod batch;
pub mod clock;
pub mod durable;
mod entry;
mod error;
pub mod limits;
mod merge;
mod meta;
mod operators;
mod range_delete;

pub use aggregate::{AggregateOp, AggregateState, AggregateValue, ValueType};
pub use batch::{BatchOp, WriteBatch};
pub use clock::{Clock, ManualClock, SharedClock, SystemClock};
pub use entry::{
    Entry, EntryKind, InternalKey, KeyRange, Read, SeqNo, compare_internal, expiring_value,
    key_prefix_after, shared_prefix_len, split_expiring,
};
pub use error::{Error, IoContext, Result};
pub use merge::{Merge, MergeHead, MergeSource, merge_sorted};
pub use meta::TableMeta;
pub use operators::{CompactionFilter, FilterDecision, MergeOperator, Operators};
pub use range_delete::{Interleave, RangeDeletes, RangeTombstone, check_bounds, interleave};

/// A boxed, sendable stream: what the object-safe async traits return for scans and replays.
pub type BoxStream<T> = futures::stream::BoxStream<'static, T>;

/// Entries from a source that never waits (a memtable, a table on local disk).
pub type EntryIter = Box<dyn Iterator<Item = Result<Entry>> + Send>;

/// Journal position. Assigned by the journal, strictly increasing in write order.
pub type Lsn = u64;

/// Identifier of a table; allocated by the engine, unique for the life of a database.
pub type TableId = u64;
