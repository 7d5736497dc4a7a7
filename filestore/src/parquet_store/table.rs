//! An open Parquet table. Its footer, statistics and page index are read once at open; every
//! read then plans which row groups and pages can hold the keys asked for, and fetches only
//! those byte ranges (ranged GETs), never the whole object.

use super::checksum;
use super::page_sums::PageSums;
use super::reader::ObjectReader;
use super::schema::{self, KEY, KIND, RANGE_DELETES_KEY, SEQ, UNIQUE_KEYS_KEY, VALUE};
use super::{PageCache, store_error};
use crate::Table;
use crate::column_condition::{ColumnCondition, Literal};
use crate::fold::VisibleFold;
use arrow_array::cast::AsArray;
use arrow_array::types::{UInt8Type, UInt64Type};
use arrow_array::{Array, BinaryArray, RecordBatch};
use async_trait::async_trait;
use bytes::Bytes;
use cairn_common::{
    AggregateState, BoxStream, Entry, EntryKind, Error, KeyRange, RangeTombstone, Result, SeqNo,
    TableMeta, ValueType,
};
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use parquet::arrow::arrow_reader::{
    ArrowReaderMetadata, ArrowReaderOptions, RowSelection, RowSelector,
};
use parquet::arrow::async_reader::ParquetRecordBatchStream;
use parquet::arrow::{ParquetRecordBatchStreamBuilder, ProjectionMask};
use parquet::file::metadata::PageIndexPolicy;
use parquet::file::page_index::column_index::ColumnIndexMetaData;
use parquet::file::statistics::Statistics;
use std::ops::Bound;
use std::sync::Arc;

const BATCH_ROWS: usize = 4096;
/// Rows per batch of `Table::columns`: a query engine's batch.
const COLUMN_BATCH_ROWS: usize = 8192;

/// The first row and row count of the one run of rows `selectors` selects, if there is one.
fn single_page(selectors: &[RowSelector]) -> Option<(usize, usize)> {
    let mut offset = 0;
    let mut found = None;
    for s in selectors {
        if !s.skip {
            if found.is_some() {
                return None;
            }
            found = Some((offset, s.row_count));
        }
        offset += s.row_count;
    }
    found
}

/// A row group a read must visit, with its key bounds and the pages to read.
pub(crate) struct Planned {
    pub group: usize,
    pub keys: Option<(Vec<u8>, Vec<u8>)>,
    pub selectors: Vec<RowSelector>,
}

pub(crate) struct ParquetTable {
    meta: TableMeta,
    store: Arc<dyn ObjectStore>,
    path: Path,
    url: String,
    /// The object's own size (a hybrid store's metadata carries its primary's).
    size: u64,
    /// The writer saw one version per key (`cairn.unique_keys`).
    unique_keys: bool,
    /// `cairn.range_deletes`; their rows are left out of reads.
    ranges: Vec<RangeTombstone>,
    pages: Option<PageCache>,
    reader_meta: ArrowReaderMetadata,
    /// Each row group's checksum (none in tables written before they were kept).
    sums: Option<Vec<u32>>,
    /// Each page's checksum, checked by every read (none in tables written before they were
    /// kept).
    page_sums: Option<Arc<PageSums>>,
    /// Only puts of distinct keys (`Table::puts_only`), read from the footer at open.
    puts_only: bool,
}

/// The rows of `batch` (sorted by its first column, the key) inside `range`.
fn within(batch: RecordBatch, range: &KeyRange) -> RecordBatch {
    let keys = batch.column(KEY).as_binary::<i32>();
    let n = keys.len();
    let first = partition(n, |i| range.is_before_start(keys.value(i)));
    let end = partition(n, |i| !range.is_past_end(keys.value(i)));
    batch.slice(first, end.saturating_sub(first))
}

/// The first index in `0..n` for which `before` is false (it must be true, then false).
fn partition(n: usize, before: impl Fn(usize) -> bool) -> usize {
    let (mut lo, mut hi) = (0, n);
    while lo < hi {
        let mid = (lo + hi) / 2;
        if before(mid) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    lo
}

/// Whether keys in `[min, max]` can fall inside the bounds.
fn overlaps(min: &[u8], max: &[u8], start: Bound<&[u8]>, end: Bound<&[u8]>) -> bool {
    let after_start = match start {
        Bound::Unbounded => true,
        Bound::Included(s) => max >= s,
        Bound::Excluded(s) => max > s,
    };
    let before_end = match end {
        Bound::Unbounded => true,
        Bound::Included(e) => min <= e,
        Bound::Excluded(e) => min < e,
    };
    after_start && before_end
}

fn bounds(range: &KeyRange) -> (Bound<&[u8]>, Bound<&[u8]>) {
    (
        range.start.as_ref().map(|b| b.as_ref()),
        range.end.as_ref().map(|b| b.as_ref()),
    )
}

struct Columns<'a> {
    keys: &'a BinaryArray,
    seqs: &'a [u64],
    kinds: &'a [u8],
    values: &'a BinaryArray,
}

impl<'a> Columns<'a> {
    fn of(batch: &'a RecordBatch) -> Self {
        Columns {
            keys: batch.column(KEY).as_binary::<i32>(),
            seqs: batch.column(SEQ).as_primitive::<UInt64Type>().values(),
            kinds: batch.column(KIND).as_primitive::<UInt8Type>().values(),
            values: batch.column(VALUE).as_binary::<i32>(),
        }
    }

    fn kind(&self, i: usize, what: &str) -> Result<EntryKind> {
        EntryKind::from_u8(self.kinds[i]).ok_or_else(|| Error::Corruption {
            what: what.to_string(),
            detail: format!("unknown entry kind {}", self.kinds[i]),
        })
    }

    /// First row whose key is not below `key` (keys are sorted).
    fn lower_bound(&self, key: &[u8]) -> usize {
        let (mut lo, mut hi) = (0, self.keys.len());
        while lo < hi {
            let mid = (lo + hi) / 2;
            if self.keys.value(mid) < key {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        lo
    }
}

impl ParquetTable {
    pub(crate) async fn open(
        meta: TableMeta,
        store: Arc<dyn ObjectStore>,
        path: Path,
        url: &str,
        pages: Option<PageCache>,
    ) -> Result<Self> {
        let what = || format!("open table {} ({path})", meta.id);
        let size = store
            .head(&path)
            .await
            .map_err(|e| store_error(url, what(), e))?
            .size;
        let mut reader = ObjectReader {
            store: store.clone(),
            path: path.clone(),
            size,
            pages: None,
        };
        let options = ArrowReaderOptions::new().with_page_index_policy(PageIndexPolicy::Optional);
        let reader_meta = ArrowReaderMetadata::load_async(&mut reader, options)
            .await
            .map_err(|e| store_error(url, what(), e))?;
        schema::check(reader_meta.schema(), &format!("{url}/{path}"))?;
        let unique_keys = reader_meta
            .metadata()
            .file_metadata()
            .key_value_metadata()
            .is_some_and(|kv| {
                kv.iter()
                    .any(|e| e.key == UNIQUE_KEYS_KEY && e.value.as_deref() == Some("true"))
            });
        let ranges = match reader_meta
            .metadata()
            .file_metadata()
            .key_value_metadata()
            .and_then(|kv| kv.iter().find(|e| e.key == RANGE_DELETES_KEY))
        {
            None => Vec::new(),
            Some(e) => {
                let ranges: Vec<RangeTombstone> =
                    serde_json::from_str(e.value.as_deref().unwrap_or(""))
                        .map_err(|e| Error::corruption(format!("{url}/{path}"), e.to_string()))?;
                for t in &ranges {
                    cairn_common::check_bounds(&t.start, &t.end)
                        .map_err(|e| Error::corruption(format!("{url}/{path}"), e.to_string()))?;
                }
                ranges
            }
        };
        let md = reader_meta.metadata();
        let sums = md
            .file_metadata()
            .key_value_metadata()
            .and_then(|kv| kv.iter().find(|e| e.key == checksum::ROW_GROUP_CRC_KEY))
            .map(|e| checksum::decode(e.value.as_deref().unwrap_or(""), md.num_row_groups()))
            .transpose()
            .map_err(|d| Error::corruption(format!("{url}/{path}"), d))?;
        let page_sums = PageSums::of(md)
            .map_err(|d| Error::corruption(format!("{url}/{path}"), d))?
            .map(Arc::new);
        let puts_only = unique_keys
            && ranges.is_empty()
            && md.row_groups().iter().all(|rg| {
                matches!(rg.column(KIND).statistics(), Some(Statistics::Int32(s)) if s.max_opt() == Some(&0))
            });
        Ok(ParquetTable {
            meta,
            store,
            path,
            url: url.to_string(),
            size,
            unique_keys,
            ranges,
            pages,
            reader_meta,
            sums,
            page_sums,
            puts_only,
        })
    }

    /// A checker of row-group checksums, for a read that returns every row of every row
    /// group (a scan of all keys) of a table whose pages are not summed: where they are, the
    /// reader has checked every page already.
    fn verifier(&self, range: &KeyRange) -> Option<checksum::Verifier> {
        if self.page_sums.is_some() {
            return None;
        }
        let sums = self.sums.clone()?;
        if !matches!(bounds(range), (Bound::Unbounded, Bound::Unbounded)) {
            return None;
        }
        let rows = self
            .reader_meta
            .metadata()
            .row_groups()
            .iter()
            .map(|g| g.num_rows() as usize)
            .collect();
        Some(checksum::Verifier::new(sums, rows, self.what()))
    }

    fn what(&self) -> String {
        format!("table {} ({}/{})", self.meta.id, self.url, self.path)
    }

    fn err(&self, e: impl std::fmt::Display) -> Error {
        store_error(
            &self.url,
            format_args!("read table {} ({})", self.meta.id, self.path),
            e,
        )
    }

    /// The newest version of `key` at or below `snapshot` in one batch.
    fn find(&self, batch: &RecordBatch, key: &[u8], snapshot: SeqNo) -> Result<Option<Entry>> {
        let c = Columns::of(batch);
        for i in c.lower_bound(key)..c.keys.len() {
            if c.keys.value(i) != key {
                return Ok(None);
            }
            if c.seqs[i] <= snapshot && c.kinds[i] != EntryKind::RangeDelete.as_u8() {
                return Ok(Some(Entry {
                    key: Bytes::copy_from_slice(key),
                    seq: c.seqs[i],
                    kind: c.kind(i, &self.what())?,
                    value: Bytes::copy_from_slice(c.values.value(i)),
                }));
            }
        }
        Ok(None)
    }

    /// The row groups, and the pages within them, whose key statistics overlap the bounds.
    pub(crate) fn plan(&self, start: Bound<&[u8]>, end: Bound<&[u8]>) -> Vec<Planned> {
        let md = self.reader_meta.metadata();
        let mut planned = Vec::new();
        for (g, rg) in md.row_groups().iter().enumerate() {
            let keys = match rg.column(KEY).statistics() {
                Some(Statistics::ByteArray(s)) => s.min_bytes_opt().zip(s.max_bytes_opt()),
                _ => None,
            };
            if keys.is_some_and(|(min, max)| !overlaps(min, max, start, end)) {
                continue;
            }
            let rows = rg.num_rows() as usize;
            let column_index = md.column_index().and_then(|c| c.get(g)?.get(KEY));
            let offset_index = md.offset_index().and_then(|o| o.get(g)?.get(KEY));
            let mut selectors = Vec::new();
            match (column_index, offset_index) {
                (Some(ColumnIndexMetaData::BYTE_ARRAY(ci)), Some(oi)) => {
                    let locs = oi.page_locations();
                    for (p, loc) in locs.iter().enumerate() {
                        let first = loc.first_row_index as usize;
                        let next = locs.get(p + 1).map_or(rows, |l| l.first_row_index as usize);
                        let n = next.saturating_sub(first);
                        let keep = match (ci.min_value(p), ci.max_value(p)) {
                            (Some(min), Some(max)) => overlaps(min, max, start, end),
                            _ => true,
                        };
                        selectors.push(if keep {
                            RowSelector::select(n)
                        } else {
                            RowSelector::skip(n)
                        });
                    }
                }
                _ => selectors.push(RowSelector::select(rows)),
            }
            planned.push(Planned {
                group: g,
                keys: keys.map(|(a, b)| (a.to_vec(), b.to_vec())),
                selectors,
            });
        }
        planned
    }

    /// Whether every row of group `g` is the one live version of its key at `snapshot`, and
    /// no newer source shadows any of them: then its values alone answer an aggregate.
    pub(crate) fn values_suffice(
        &self,
        p: &Planned,
        range: &KeyRange,
        snapshot: SeqNo,
        shadowed: &[Bytes],
    ) -> bool {
        let Some((min, max)) = &p.keys else {
            return false;
        };
        if !self.unique_keys || !range.contains(min) || !range.contains(max) {
            return false;
        }
        let rg = self.reader_meta.metadata().row_group(p.group);
        let seq_ok = match rg.column(SEQ).statistics() {
            // Stored as INT64 holding the unsigned value's bits.
            Some(Statistics::Int64(s)) => s.max_opt().is_some_and(|&m| (m as u64) <= snapshot),
            _ => false,
        };
        let no_tombstones = match rg.column(KIND).statistics() {
            Some(Statistics::Int32(s)) => s.max_opt() == Some(&0),
            _ => false,
        };
        let i = shadowed.partition_point(|k| k.as_ref() < min.as_slice());
        let unshadowed = shadowed.get(i).is_none_or(|k| k.as_ref() > max.as_slice());
        seq_ok && no_tombstones && unshadowed
    }

    /// Streams the planned rows of `groups`: the table's own columns, or the projected ones.
    fn stream(
        &self,
        groups: &[&Planned],
        columns: Option<&[usize]>,
    ) -> Result<Option<ParquetRecordBatchStream<ObjectReader>>> {
        self.stream_in(groups, columns, BATCH_ROWS)
    }

    fn stream_in(
        &self,
        groups: &[&Planned],
        columns: Option<&[usize]>,
        batch_rows: usize,
    ) -> Result<Option<ParquetRecordBatchStream<ObjectReader>>> {
        self.stream_as(&self.reader_meta, groups, columns, batch_rows)
    }

    /// `stream_in`, decoding to the Arrow types `meta` gives the columns.
    fn stream_as(
        &self,
        meta: &ArrowReaderMetadata,
        groups: &[&Planned],
        columns: Option<&[usize]>,
        batch_rows: usize,
    ) -> Result<Option<ParquetRecordBatchStream<ObjectReader>>> {
        let selectors: Vec<RowSelector> = groups
            .iter()
            .flat_map(|p| p.selectors.iter().copied())
            .collect();
        let selection = RowSelection::from(selectors);
        if groups.is_empty() || !selection.selects_any() {
            return Ok(None);
        }
        let reader = ObjectReader {
            store: self.store.clone(),
            path: self.path.clone(),
            size: self.size,
            pages: self.page_sums.clone(),
        };
        let mut builder = ParquetRecordBatchStreamBuilder::new_with_metadata(reader, meta.clone())
            .with_row_groups(groups.iter().map(|p| p.group).collect())
            .with_row_selection(selection)
            .with_batch_size(batch_rows.max(1));
        // Declared value columns are read only when asked for by name.
        let cols = columns.unwrap_or(&schema::OWN);
        let descr = self.reader_meta.metadata().file_metadata().schema_descr();
        builder = builder.with_projection(ProjectionMask::roots(descr, cols.iter().copied()));
        Ok(Some(builder.build().map_err(|e| self.err(e))?))
    }

    /// Whether row group `group` may hold a row that meets every condition: false only where
    /// a column's statistics (exact: the writer does not truncate them) rule one out.
    fn may_meet(&self, group: usize, conditions: &[ColumnCondition]) -> bool {
        let schema = self.reader_meta.schema();
        let rg = self.reader_meta.metadata().row_group(group);
        conditions.iter().all(|c| {
            let Ok(i) = schema.index_of(&c.column) else {
                return true;
            };
            let op = c.op;
            match (rg.column(i).statistics(), &c.literal) {
                (Some(Statistics::Int64(s)), Literal::I64(v)) => s
                    .min_opt()
                    .zip(s.max_opt())
                    .is_none_or(|(a, b)| op.may_hold(a, b, v)),
                (Some(Statistics::Double(s)), Literal::F64(v)) => s
                    .min_opt()
                    .zip(s.max_opt())
                    .is_none_or(|(a, b)| op.may_hold(a, b, v)),
                (Some(Statistics::ByteArray(s)), Literal::Utf8(v)) => s
                    .min_bytes_opt()
                    .zip(s.max_bytes_opt())
                    .is_none_or(|(a, b)| op.may_hold(a, b, v.as_bytes())),
                _ => true,
            }
        })
    }

    async fn batches(
        &self,
        range: &KeyRange,
    ) -> Result<Option<ParquetRecordBatchStream<ObjectReader>>> {
        if range.is_empty() || !range.overlaps(&self.meta.smallest, &self.meta.largest) {
            return Ok(None);
        }
        let (start, end) = bounds(range);
        let planned = self.plan(start, end);
        self.stream(&planned.iter().collect::<Vec<_>>(), None)
    }
}

#[async_trait]
impl Table for ParquetTable {
    fn meta(&self) -> &TableMeta {
        &self.meta
    }

    fn range_deletes(&self) -> &[RangeTombstone] {
        &self.ranges
    }

    async fn get(&self, key: &[u8], snapshot: SeqNo) -> Result<Option<Entry>> {
        if key < self.meta.smallest.as_slice() || key > self.meta.largest.as_slice() {
            return Ok(None);
        }
        let planned = self.plan(Bound::Included(key), Bound::Included(key));
        // Usually one page of one row group can hold the key: that page is read once, decoded,
        // and kept in the page cache for the next lookups.
        if let ([p], Some(cache)) = (planned.as_slice(), &self.pages)
            && let Some((first, rows)) = single_page(&p.selectors)
        {
            let id = (self.meta.id, p.group, first);
            let batch = match cache.get(&id) {
                Some(b) => b,
                None => {
                    let Some(mut stream) = self.stream_in(&[p], None, rows)? else {
                        return Ok(None);
                    };
                    let Some(batch) = stream.next().await else {
                        return Ok(None);
                    };
                    let batch = batch.map_err(|e| self.err(e))?;
                    cache.insert(id, batch.clone());
                    batch
                }
            };
            return self.find(&batch, key, snapshot);
        }
        let Some(mut stream) = self.stream(&planned.iter().collect::<Vec<_>>(), None)? else {
            return Ok(None);
        };
        while let Some(batch) = stream.next().await {
            let batch = batch.map_err(|e| self.err(e))?;
            if let Some(e) = self.find(&batch, key, snapshot)? {
                return Ok(Some(e));
            }
            let c = Columns::of(&batch);
            if c.keys.len() > 0 && c.keys.value(c.keys.len() - 1) > key {
                return Ok(None);
            }
        }
        Ok(None)
    }

    async fn scan(&self, range: &KeyRange) -> Result<BoxStream<Result<Entry>>> {
        let Some(stream) = self.batches(range).await? else {
            return Ok(Box::pin(futures::stream::empty()));
        };
        let mut verifier = self.verifier(range);
        let range = range.clone();
        let url = self.url.clone();
        let what = self.what();
        let entries = stream
            .map_err(move |e| store_error(&url, &what, e))
            .and_then(move |batch| {
                let checked = match verifier.as_mut() {
                    Some(v) => v.check(&batch).map(|()| batch),
                    None => Ok(batch),
                };
                futures::future::ready(checked)
            })
            .map_ok(move |batch| {
                let c = Columns::of(&batch);
                let mut out = Vec::with_capacity(c.keys.len());
                for i in 0..c.keys.len() {
                    let k = c.keys.value(i);
                    if !range.contains(k) {
                        continue;
                    }
                    let kind = match EntryKind::from_u8(c.kinds[i]) {
                        Some(EntryKind::RangeDelete) => continue, // in `ranges`
                        Some(kind) => kind,
                        None => {
                            out.push(Err(Error::Corruption {
                                what: "parquet table".into(),
                                detail: format!("unknown entry kind {}", c.kinds[i]),
                            }));
                            break;
                        }
                    };
                    out.push(Ok(Entry {
                        key: Bytes::copy_from_slice(k),
                        seq: c.seqs[i],
                        kind,
                        value: Bytes::copy_from_slice(c.values.value(i)),
                    }));
                }
                futures::stream::iter(out)
            })
            .try_flatten();
        Ok(Box::pin(entries))
    }

    async fn puts_only(&self) -> bool {
        self.puts_only
    }

    /// Projects the named columns (in the file's order) over the pages the range's
    /// statistics select, and trims the rows outside it: by the key column, read for that
    /// when the range cuts the table and dropped after unless asked for.
    async fn columns(
        &self,
        range: &KeyRange,
        fields: &[arrow_schema::Field],
        conditions: &[ColumnCondition],
    ) -> Result<Option<BoxStream<Result<RecordBatch>>>> {
        let schema = self.reader_meta.schema();
        let mut cols = Vec::with_capacity(fields.len() + 1);
        let mut views = false;
        for f in fields {
            let Ok(i) = schema.index_of(f.name()) else {
                return Ok(None);
            };
            let stored = schema.field(i).data_type();
            if stored != f.data_type() {
                if view_of(stored).as_ref() != Some(f.data_type()) {
                    return Ok(None);
                }
                views = true;
            }
            cols.push(i);
        }
        // Text and bytes decoded straight into views where asked: no copy of short values.
        let viewing = if views {
            let fields: Vec<arrow_schema::Field> = schema
                .fields()
                .iter()
                .map(|s| match fields.iter().find(|f| f.name() == s.name()) {
                    Some(f) => s.as_ref().clone().with_data_type(f.data_type().clone()),
                    None => s.as_ref().clone(),
                })
                .collect();
            let options = ArrowReaderOptions::new().with_schema(Arc::new(
                arrow_schema::Schema::new_with_metadata(fields, schema.metadata().clone()),
            ));
            Some(
                ArrowReaderMetadata::try_new(self.reader_meta.metadata().clone(), options)
                    .map_err(|e| self.err(e))?,
            )
        } else {
            None
        };
        if range.is_empty() || !range.overlaps(&self.meta.smallest, &self.meta.largest) {
            return Ok(Some(Box::pin(futures::stream::empty())));
        }
        let whole = range.contains(&self.meta.smallest) && range.contains(&self.meta.largest);
        let key_asked = cols.contains(&KEY);
        if !whole && !key_asked {
            cols.push(KEY);
        }
        cols.sort_unstable();
        let (start, end) = bounds(range);
        let planned = self.plan(start, end);
        let groups: Vec<&Planned> = planned
            .iter()
            .filter(|p| self.may_meet(p.group, conditions))
            .collect();
        let meta = viewing.as_ref().unwrap_or(&self.reader_meta);
        let Some(stream) = self.stream_as(meta, &groups, Some(&cols), COLUMN_BATCH_ROWS)? else {
            return Ok(Some(Box::pin(futures::stream::empty())));
        };
        let (range, url, what) = (range.clone(), self.url.clone(), self.what());
        let batches = stream
            .map_err(move |e| store_error(&url, &what, e))
            .and_then(move |batch| {
                let trimmed = if whole {
                    Ok(batch)
                } else {
                    let batch = within(batch, &range);
                    if key_asked {
                        Ok(batch)
                    } else {
                        // The key was read for the trim alone: it is the first column.
                        let rest: Vec<usize> = (1..batch.num_columns()).collect();
                        batch
                            .project(&rest)
                            .map_err(|e| Error::component("parquet table", e))
                    }
                };
                futures::future::ready(trimmed)
            });
        Ok(Some(Box::pin(batches)))
    }

    /// Folds the column arrays of each batch directly: no entry is built, no key or value
    /// copied except the last key of a batch, carried to tell whether the next batch
    /// continues it.
    async fn aggregate(
        &self,
        range: &KeyRange,
        snapshot: SeqNo,
        value_type: ValueType,
        shadowed: &[Bytes],
    ) -> Result<AggregateState> {
        let mut fold = VisibleFold::new(snapshot, value_type, shadowed);
        if range.is_empty() || !range.overlaps(&self.meta.smallest, &self.meta.largest) {
            return Ok(fold.finish());
        }
        if !self.ranges.is_empty() {
            // Range rows sit among the versions; a rare table, folded through `scan`, which
            // leaves them out.
            return fold.fold_stream(self.scan(range).await?).await;
        }
        let (start, end) = bounds(range);
        let planned = self.plan(start, end);
        let (whole, partial): (Vec<&Planned>, Vec<&Planned>) = planned
            .iter()
            .partition(|p| self.values_suffice(p, range, snapshot, shadowed));
        // Row groups of one live version per key read the value column and nothing else.
        let mut values_only = AggregateState::new(value_type);
        if let Some(mut stream) = self.stream(&whole, Some(&[VALUE]))? {
            while let Some(batch) = stream.next().await {
                let batch = batch.map_err(|e| self.err(e))?;
                let values = batch.column(0).as_binary::<i32>();
                for v in values.iter().flatten() {
                    values_only.add(v);
                }
            }
        }
        let Some(mut stream) = self.stream(&partial, None)? else {
            let mut state = fold.finish();
            state.merge(&values_only);
            return Ok(state);
        };
        let what = self.what();
        let mut carried: Option<Vec<u8>> = None;
        while let Some(batch) = stream.next().await {
            let batch = batch.map_err(|e| self.err(e))?;
            let c = Columns::of(&batch);
            let n = c.keys.len();
            for i in 0..n {
                let k = c.keys.value(i);
                if range.is_before_start(k) {
                    continue;
                }
                if range.is_past_end(k) {
                    break;
                }
                let new_key = if i == 0 {
                    carried.as_deref() != Some(k)
                } else {
                    c.keys.value(i - 1) != k
                };
                fold.push(new_key, k, c.seqs[i], c.kind(i, &what)?, c.values.value(i));
            }
            if n > 0 {
                carried = Some(c.keys.value(n - 1).to_vec());
            }
        }
        let mut state = fold.finish();
        state.merge(&values_only);
        Ok(state)
    }
}

/// The view type that holds what `t` holds: `Utf8View` for `Utf8`, `BinaryView` for `Binary`.
fn view_of(t: &arrow_schema::DataType) -> Option<arrow_schema::DataType> {
    use arrow_schema::DataType;
    match t {
        DataType::Utf8 => Some(DataType::Utf8View),
        DataType::Binary => Some(DataType::BinaryView),
        _ => None,
    }
}
