//! Table storage: `trait Storage` (create, open, delete and list immutable tables) and
//! `trait Table` (point lookups, ordered scans and aggregates over one table), with the SSTable
//! store on a local disk and the Parquet store on any object store. Tables hold every version
//! of their keys in internal order (key ascending, seq descending); what a snapshot sees is the
//! engine's business.

mod blocks;
mod bloom;
mod cache;
mod clipped;
pub mod column_condition;
mod digest;
mod faulty;
mod fold;
mod format;
pub mod grpc;
pub mod manifest_store;
mod object_location;
mod parquet_store;
mod prefix_index;
mod shared;
mod sstable;
mod table_file;
mod tracker;
pub mod value_columns;

#[cfg(any(test, feature = "conformance"))]
pub mod conformance;

/// The batches `Table::columns` returns, and the fields it takes.
pub use arrow_array::RecordBatch;
pub use arrow_schema;
pub use blocks::{BlockLayout, find_in_block};
pub use cache::{Block, BlockCache};
pub use column_condition::ColumnCondition;
pub use digest::ContentDigest;
pub use faulty::FaultyStorage;
pub use fold::VisibleFold;
pub use grpc::{GrpcManifestStore, GrpcStorage, storage_service, storage_service_for};
pub use manifest_store::{DirManifestStore, ManifestStore, ManifestVersion, ObjectManifestStore};
pub use object_location::{
    ObjectLocation, ObjectStoreOptions, check_object_url, open_object_store,
};
pub use parquet_store::{
    ParquetOptions, ParquetStorage, TABLE_META_KEY, VALUE_COLUMNS_KEY, table_schema,
};
pub use shared::{SharedTables, TablesAt, Within};
pub use sstable::{Compression, FilterKind, SstOptions, SstStorage};
pub use table_file::{TableFile, read_table_file};
pub use value_columns::ValueColumns;

use async_trait::async_trait;
use bytes::Bytes;
use cairn_common::{
    AggregateState, BoxStream, Entry, EntryIter, KeyRange, RangeTombstone, Result, SeqNo, TableId,
    TableMeta, ValueType,
};
use std::sync::Arc;

#[async_trait]
pub trait Storage: Send + Sync + 'static {
    /// Starts writing table `id` for `level` of the tree (0 for a flush, the output level
    /// for a compaction): a store may encode levels differently, as with a heavier codec
    /// for the bottom ones. Nothing is visible under `id` until `finish` succeeds.
    async fn create_table(&self, id: TableId, level: u32) -> Result<Box<dyn TableBuilder>>;

    async fn open_table(&self, meta: &TableMeta) -> Result<Arc<dyn Table>>;

    /// Removes a table; removing one that does not exist is not an error.
    async fn delete_table(&self, id: TableId) -> Result<()>;

    /// Ids of every finished table, in no particular order.
    async fn list_tables(&self) -> Result<Vec<TableId>>;

    /// Where this store keeps the manifest of the database its tables belong to: beside the
    /// tables, so whoever reaches the tables finds the database.
    fn manifests(&self) -> Arc<dyn ManifestStore>;

    /// How a store of the same kind elsewhere names this one (a directory, a URL, a database
    /// on a server), for a database that shares its tables by reference (a clone); `None`
    /// when this store cannot be reached from another (the default).
    fn reference(&self) -> Option<String> {
        None
    }

    /// The store another one's `reference` named, reached the way this store is reached (the
    /// same server, endpoint and credentials): where a clone reads the tables it shares with
    /// its parent. Only reads go through it.
    fn open_reference(&self, reference: &str) -> Result<Arc<dyn Storage>> {
        Err(cairn_common::Error::InvalidArgument(format!(
            "this storage cannot read another database's tables (asked for {reference})"
        )))
    }
}

/// Receives a table's entries in internal order, then seals it.
#[async_trait]
pub trait TableBuilder: Send {
    /// Appends entries, which must continue the internal order; anything else is refused.
    async fn add(&mut self, entries: &[Entry]) -> Result<()>;

    /// Bytes written so far, for cutting outputs at a target size.
    fn estimated_size(&self) -> u64;

    /// Makes the table durable and visible, and returns its metadata. An empty table is refused.
    async fn finish(self: Box<Self>) -> Result<TableMeta>;

    /// Asks for the digest `finish_with_digest` returns; called before the first `add` by a
    /// caller that compares copies. A builder not asked skips the work: a row's crc costs
    /// about a fifth of an SSTable flush. A decorator forwards it.
    fn keep_digest(&mut self) {}

    /// `finish`, also returning the digest of the rows as this store encoded them (see
    /// `ContentDigest`) if `keep_digest` was called; `None` (the default) from a store that
    /// keeps none.
    async fn finish_with_digest(self: Box<Self>) -> Result<(TableMeta, Option<ContentDigest>)> {
        Ok((self.finish().await?, None))
    }

    /// Drops the partial table.
    async fn abandon(self: Box<Self>) -> Result<()>;
}

#[async_trait]
pub trait Table: Send + Sync + 'static {
    fn meta(&self) -> &TableMeta;

    /// The range tombstones the table holds. They are not among the entries `get` and `scan`
    /// return: a reader checks keys against them (`RangeDeletes`), since a tombstone covers
    /// keys after its own. Every store keeps them; none may drop them.
    fn range_deletes(&self) -> &[RangeTombstone];

    /// The newest version of `key` with `seq <= snapshot`, tombstones included.
    async fn get(&self, key: &[u8], snapshot: SeqNo) -> Result<Option<Entry>>;

    /// Every version of the keys in `range`, in internal order.
    async fn scan(&self, range: &KeyRange) -> Result<BoxStream<Result<Entry>>>;

    /// The same entries as `scan`, from a table that reads without waiting (a file on local
    /// disk): an iterator that the engine merges with a plain call per entry, where a stream
    /// costs a poll through async machinery. `None` (the default) when reads may wait, as
    /// across a network.
    fn scan_ready(&self, range: &KeyRange) -> Option<Result<EntryIter>> {
        let _ = range;
        None
    }

    /// Folds the values of `range` visible at `snapshot` into a partial aggregate, leaving out
    /// the keys in `shadowed` (sorted, no duplicates): those a newer source decides. Range
    /// tombstones are the caller's to apply: the engine folds a merged scan instead wherever
    /// one is in view. The default
    /// folds `scan`; a columnar store answers from its column data.
    async fn aggregate(
        &self,
        range: &KeyRange,
        snapshot: SeqNo,
        value_type: ValueType,
        shadowed: &[Bytes],
    ) -> Result<AggregateState> {
        let entries = self.scan(range).await?;
        VisibleFold::new(snapshot, value_type, shadowed)
            .fold_stream(entries)
            .await
    }

    /// The same entries as `scan`, read from whichever copy suits bulk reads (the hybrid
    /// store's secondary); by default, `scan`.
    async fn analytic_scan(&self, range: &KeyRange) -> Result<BoxStream<Result<Entry>>> {
        self.scan(range).await
    }

    /// Whether the table holds only puts, each of a key of its own, and no range tombstones:
    /// then its rows are its live entries, unless something newer shadows them. `false` (the
    /// default) when the table cannot tell.
    async fn puts_only(&self) -> bool {
        false
    }

    /// The rows of `range` as Arrow record batches of the given columns (`key`, `value`,
    /// declared value columns) in the table's order, in key order, every row whatever its
    /// kind (so for tables that are `puts_only`). A column kept as `Utf8` or `Binary` may be
    /// asked for as `Utf8View` or `BinaryView`. The table may leave out rows that cannot
    /// meet all of `conditions` (whole row groups, by their statistics); it need not leave
    /// out all of them. `None` (the default) when the table does not keep all of those
    /// columns with those types, and the caller decodes entries instead.
    async fn columns(
        &self,
        range: &KeyRange,
        fields: &[arrow_schema::Field],
        conditions: &[ColumnCondition],
    ) -> Result<Option<BoxStream<Result<RecordBatch>>>> {
        let _ = (range, fields, conditions);
        Ok(None)
    }

    /// The table's blocks, for readers that fetch and cache blocks away from the table (the
    /// gRPC storage client); `None` when the table is not read by blocks.
    fn block_layout(&self) -> Option<Arc<BlockLayout>> {
        None
    }

    /// Every version in block `index` of `block_layout`.
    async fn read_block(&self, index: usize) -> Result<Block> {
        Err(cairn_common::Error::InvalidArgument(format!(
            "table {} is not read by blocks (asked for block {index})",
            self.meta().id
        )))
    }
}

/// Every version in `range` of one table, collected (for tools, tests and small tables).
pub async fn read_range(table: &dyn Table, range: &KeyRange) -> Result<Vec<Entry>> {
    use futures::TryStreamExt;
    table.scan(range).await?.try_collect().await
}

/// Writes `entries` (in internal order) as table `id` of level 0 in one go.
pub async fn write_table(
    storage: &dyn Storage,
    id: TableId,
    entries: &[Entry],
) -> Result<TableMeta> {
    let mut b = storage.create_table(id, 0).await?;
    for chunk in entries.chunks(1024) {
        if let Err(e) = b.add(chunk).await {
            let _ = b.abandon().await;
            return Err(e);
        }
    }
    b.finish().await
}

/// Writes the entries an iterator yields (in internal order) as table `id` of `level`,
/// handing them to the builder 1024 at a time; a failure abandons the table, so none is left
/// half-written.
pub async fn write_table_from<I>(
    storage: &dyn Storage,
    id: TableId,
    level: u32,
    entries: I,
) -> Result<TableMeta>
where
    I: IntoIterator<Item = Entry>,
    I::IntoIter: Send,
{
    let mut b = storage.create_table(id, level).await?;
    let mut entries = entries.into_iter();
    let mut chunk = Vec::with_capacity(1024);
    loop {
        chunk.clear();
        chunk.extend(entries.by_ref().take(1024));
        if chunk.is_empty() {
            break;
        }
        if let Err(e) = b.add(&chunk).await {
            let _ = b.abandon().await;
            return Err(e);
        }
    }
    b.finish().await
}

/// Copies `source`, its range tombstones included, into `storage` as table `id`, 1024
/// entries at a time, encoded for `level`; a failure abandons the copy. For moving a table
/// between stores.
pub async fn copy_table(
    storage: &dyn Storage,
    id: TableId,
    level: u32,
    source: &dyn Table,
) -> Result<TableMeta> {
    use futures::StreamExt;
    let mut entries = source.scan(&KeyRange::all()).await?;
    let mut ranges: Vec<Entry> = source
        .range_deletes()
        .iter()
        .map(RangeTombstone::to_entry)
        .collect();
    ranges.sort_by(|a, b| b.cmp_internal(a)); // the first to go in last
    let mut b = storage.create_table(id, level).await?;
    let mut chunk = Vec::with_capacity(1024);
    loop {
        let next = match entries.next().await.transpose() {
            Ok(next) => next,
            Err(e) => {
                let _ = b.abandon().await;
                return Err(e);
            }
        };
        while let Some(r) =
            ranges.pop_if(|r| next.as_ref().is_none_or(|e| r.cmp_internal(e).is_lt()))
        {
            chunk.push(r);
        }
        let end = next.is_none();
        chunk.extend(next);
        if (end || chunk.len() >= 1024) && !chunk.is_empty() {
            if let Err(e) = b.add(&chunk).await {
                let _ = b.abandon().await;
                return Err(e);
            }
            chunk.clear();
        }
        if end {
            break;
        }
    }
    b.finish().await
}

#[cfg(test)]
mod tests;
