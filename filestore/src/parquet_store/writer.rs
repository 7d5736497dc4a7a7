//! Writes one Parquet table. Entries gather into row groups; each full row group is encoded
//! (columns built, compressed, paged) on a blocking thread while the next one fills, up to
//! two at a time, so a flush uses more than one core. Encoded row groups are appended in
//! order and stream out through an object-store `BufWriter`, which turns into a multipart
//! upload once a part's worth is buffered. The object appears only when the upload completes,
//! so a failed or abandoned table leaves nothing visible under its name.

use super::schema::{self, RANGE_DELETES_KEY, TABLE_META_KEY, UNIQUE_KEYS_KEY, VALUE_COLUMNS_KEY};
use super::{ParquetOptions, store_error};
use super::{checksum, page_sums};
use crate::object_location::ObjectLocation as Location;
use crate::tracker::MetaTracker;
use crate::value_columns::{self, ValueColumns};
use crate::{ContentDigest, TableBuilder};
use arrow_array::builder::{BinaryBuilder, UInt8Builder, UInt64Builder};
use arrow_array::cast::AsArray;
use arrow_array::types::UInt8Type;
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::SchemaRef;
use async_trait::async_trait;
use bytes::Bytes;
use cairn_common::{Entry, EntryKind, Error, Result, TableId, TableMeta};
use object_store::buffered::BufWriter;
use object_store::path::Path;
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_writer::{
    ArrowColumnChunk, ArrowRowGroupWriterFactory, ArrowWriterOptions, compute_leaves,
};
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::metadata::{KeyValue, SortingColumn};
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::file::writer::SerializedFileWriter;
use parquet::schema::types::ColumnPath;
use std::collections::VecDeque;
use std::sync::Arc;
use tokio::io::AsyncWriteExt;
use tokio::task::JoinHandle;

/// Row groups being encoded at once: the cores of a small machine.
const IN_FLIGHT: usize = 2;

/// A row group's column chunks, the checksum of its rows, and their digest if kept.
type Encoded = std::result::Result<(Vec<ArrowColumnChunk>, u32, Option<ContentDigest>), String>;

pub(crate) struct ParquetBuilder {
    id: TableId,
    path: Path,
    loc: Arc<Location>,
    url: String,
    tracker: MetaTracker,
    /// No key seen twice so far.
    unique_keys: bool,
    rows_per_group: usize,
    group_bytes: usize,
    pending: Group,
    factory: Arc<ArrowRowGroupWriterFactory>,
    /// The file's columns: the table's own, then the declared value columns.
    schema: SchemaRef,
    values: Arc<ValueColumns>,
    groups: usize,
    in_flight: VecDeque<JoinHandle<Encoded>>,
    /// The checksums of the row groups appended so far.
    sums: Vec<u32>,
    /// The page checksums of each column chunk appended so far.
    page_sums: Vec<Vec<u32>>,
    /// Of the rows appended so far, from their Arrow columns, once asked for.
    digest: Option<ContentDigest>,
    /// The file's bytes, drained into `out` after every row group.
    file: Option<SerializedFileWriter<Vec<u8>>>,
    out: Option<BufWriter>,
    /// Set once `out` was shut down (completed or failed): it can no longer be aborted.
    shut: bool,
}

fn properties(opts: &ParquetOptions, level: u32) -> Result<WriterProperties> {
    let zstd = opts.zstd_level_at(level);
    let level = ZstdLevel::try_new(zstd)
        .map_err(|e| Error::InvalidArgument(format!("parquet: zstd level {zstd}: {e}")))?;
    let unique = |name: &str| ColumnPath::from(name);
    Ok(WriterProperties::builder()
        .set_compression(Compression::ZSTD(level))
        .set_max_row_group_row_count(Some(opts.row_group_rows))
        .set_data_page_size_limit(opts.page_bytes)
        .set_statistics_enabled(EnabledStatistics::Page)
        // Exact bounds: pruning by a truncated key would still be correct, but coarser.
        .set_statistics_truncate_length(None)
        .set_column_index_truncate_length(None)
        // Byte-wise bounds of values say nothing useful (numbers are little-endian), and
        // computing them per page costs a comparison per value.
        .set_column_statistics_enabled(unique("value"), EnabledStatistics::None)
        // Keys and values are mostly distinct; a dictionary only costs.
        .set_column_dictionary_enabled(unique("key"), false)
        .set_column_dictionary_enabled(unique("value"), false)
        .set_column_dictionary_enabled(unique("seq"), false)
        .set_sorting_columns(Some(vec![
            SortingColumn {
                column_idx: schema::KEY as i32,
                descending: false,
                nulls_first: false,
            },
            SortingColumn {
                column_idx: schema::SEQ as i32,
                descending: true,
                nulls_first: false,
            },
        ]))
        .set_created_by(format!("cairn {}", env!("CARGO_PKG_VERSION")))
        .build())
}

fn write_err(url: &str, id: TableId, path: &Path, e: impl std::fmt::Display) -> Error {
    store_error(url, format_args!("write table {id} ({path})"), e)
}

fn encode(
    factory: &ArrowRowGroupWriterFactory,
    index: usize,
    own: RecordBatch,
    values: &ValueColumns,
    keep_digest: bool,
) -> Encoded {
    let (sum, digest) = checksum::sums(&own, keep_digest);
    let batch = with_value_columns(own, values).map_err(|e| e.to_string())?;
    let mut writers = factory
        .create_column_writers(index)
        .map_err(|e| e.to_string())?;
    let mut next = writers.iter_mut();
    for (field, column) in batch.schema().fields().iter().zip(batch.columns()) {
        for leaf in compute_leaves(field, column).map_err(|e| e.to_string())? {
            let w = next.next().ok_or("more leaves than column writers")?;
            w.write(&leaf).map_err(|e| e.to_string())?;
        }
    }
    let chunks = writers
        .into_iter()
        .map(|w| w.close().map_err(|e| e.to_string()))
        .collect::<std::result::Result<_, _>>()?;
    Ok((chunks, sum, digest))
}

/// The rows of the row group being filled, as the table's own columns: entries are copied in
/// as they are added rather than held (and their buffers' counts touched) until the group is
/// encoded.
#[derive(Default)]
struct Group {
    keys: BinaryBuilder,
    seqs: UInt64Builder,
    kinds: UInt8Builder,
    values: BinaryBuilder,
    rows: usize,
    /// The rows' bytes as the row-group bound counts them.
    bytes: usize,
}

impl Group {
    fn push(&mut self, e: &Entry) {
        self.keys.append_value(&e.key);
        self.seqs.append_value(e.seq);
        self.kinds.append_value(e.kind.as_u8());
        self.values.append_value(&e.value);
        self.rows += 1;
        self.bytes += e.key.len() + e.value.len() + 9;
    }

    fn take(&mut self) -> std::result::Result<RecordBatch, arrow_schema::ArrowError> {
        let columns: Vec<ArrayRef> = vec![
            Arc::new(self.keys.finish()),
            Arc::new(self.seqs.finish()),
            Arc::new(self.kinds.finish()),
            Arc::new(self.values.finish()),
        ];
        self.rows = 0;
        self.bytes = 0;
        RecordBatch::try_new(schema::table_schema(), columns)
    }
}

impl ParquetBuilder {
    pub(crate) fn new(
        id: TableId,
        path: Path,
        loc: Arc<Location>,
        opts: &ParquetOptions,
        level: u32,
    ) -> Result<Self> {
        let err = |e: parquet::errors::ParquetError| {
            store_error(&opts.url, format_args!("table {id}"), e)
        };
        let options = ArrowWriterOptions::new().with_properties(properties(opts, level)?);
        let schema = value_columns::extend_schema(&schema::table_schema(), &opts.values);
        let (file, factory) =
            ArrowWriter::try_new_with_options(Vec::new(), schema.clone(), options)
                .and_then(|w| w.into_serialized_writer())
                .map_err(err)?;
        let out = BufWriter::with_capacity(loc.store.clone(), path.clone(), opts.upload_part_bytes);
        Ok(ParquetBuilder {
            id,
            path,
            loc,
            url: opts.url.clone(),
            tracker: MetaTracker::new(id),
            unique_keys: true,
            rows_per_group: opts.row_group_rows,
            group_bytes: opts.row_group_bytes.max(1),
            pending: Group::default(),
            factory: Arc::new(factory),
            schema,
            values: Arc::new(opts.values.clone()),
            groups: 0,
            in_flight: VecDeque::new(),
            sums: Vec::new(),
            page_sums: Vec::new(),
            digest: None,
            file: Some(file),
            out: Some(out),
            shut: false,
        })
    }

    fn err(&self, e: impl std::fmt::Display) -> Error {
        write_err(&self.url, self.id, &self.path, e)
    }

    /// Starts encoding the rows gathered so far as the next row group, first finishing the
    /// oldest one in flight if the limit is reached.
    async fn launch(&mut self) -> Result<()> {
        if self.in_flight.len() >= IN_FLIGHT {
            self.append_oldest().await?;
        }
        let own = self.pending.take().map_err(|e| self.err(e))?;
        let (factory, index, values) = (self.factory.clone(), self.groups, self.values.clone());
        let keep_digest = self.digest.is_some();
        self.groups += 1;
        self.in_flight
            .push_back(tokio::task::spawn_blocking(move || {
                encode(&factory, index, own, &values, keep_digest)
            }));
        Ok(())
    }

    /// Appends the oldest encoded row group to the file and uploads its bytes.
    async fn append_oldest(&mut self) -> Result<()> {
        let Some(handle) = self.in_flight.pop_front() else {
            return Ok(());
        };
        let (chunks, sum, digest) = handle
            .await
            .map_err(|e| write_err(&self.url, self.id, &self.path, e))?
            .map_err(|e| write_err(&self.url, self.id, &self.path, e))?;
        self.sums.push(sum);
        if let (Some(all), Some(d)) = (&mut self.digest, digest) {
            all.merge(&d);
        }
        let file = self
            .file
            .as_mut()
            .ok_or_else(|| write_err(&self.url, self.id, &self.path, "already finished"))?;
        let sizes: Vec<Vec<u64>> = chunks.iter().map(page_sums::data_page_sizes).collect();
        let mut group = file
            .next_row_group()
            .map_err(|e| write_err(&self.url, self.id, &self.path, e))?;
        for c in chunks {
            c.append_to_row_group(&mut group)
                .map_err(|e| write_err(&self.url, self.id, &self.path, e))?;
        }
        group
            .close()
            .map_err(|e| write_err(&self.url, self.id, &self.path, e))?;
        file.flush()
            .map_err(|e| write_err(&self.url, self.id, &self.path, e))?;
        // The bytes since the last upload are this row group's (and the file's magic before
        // the first).
        let held = file.inner();
        let base = (file.bytes_written() - held.len()) as u64;
        let group = file
            .flushed_row_groups()
            .last()
            .ok_or_else(|| write_err(&self.url, self.id, &self.path, "no row group written"))?;
        let sums = page_sums::of_row_group(group, &sizes, held, base)
            .map_err(|e| write_err(&self.url, self.id, &self.path, e))?;
        self.page_sums.extend(sums);
        self.upload().await
    }

    /// Moves the file bytes written so far into the upload.
    async fn upload(&mut self) -> Result<()> {
        let Some(file) = self.file.as_mut() else {
            return Ok(());
        };
        let bytes = std::mem::take(file.inner_mut());
        if bytes.is_empty() {
            return Ok(());
        }
        let out = self
            .out
            .as_mut()
            .ok_or_else(|| write_err(&self.url, self.id, &self.path, "upload closed"))?;
        out.put(Bytes::from(bytes))
            .await
            .map_err(|e| write_err(&self.url, self.id, &self.path, e))
    }

    async fn seal(&mut self) -> Result<u64> {
        if self.pending.rows > 0 {
            self.launch().await?;
        }
        while !self.in_flight.is_empty() {
            self.append_oldest().await?;
        }
        let meta = self.tracker.seal()?;
        let json = serde_json::to_string(&meta)
            .map_err(|e| write_err(&self.url, self.id, &self.path, e))?;
        let file = self
            .file
            .as_mut()
            .ok_or_else(|| write_err(&self.url, self.id, &self.path, "already finished"))?;
        file.append_key_value_metadata(KeyValue::new(TABLE_META_KEY.to_string(), json));
        if !self.tracker.ranges().is_empty() {
            let ranges = serde_json::to_string(self.tracker.ranges())
                .map_err(|e| write_err(&self.url, self.id, &self.path, e))?;
            file.append_key_value_metadata(KeyValue::new(RANGE_DELETES_KEY.to_string(), ranges));
        }
        if self.schema.fields().len() > schema::table_schema().fields().len() {
            let declared = serde_json::to_string(self.values.as_ref())
                .map_err(|e| write_err(&self.url, self.id, &self.path, e))?;
            file.append_key_value_metadata(KeyValue::new(VALUE_COLUMNS_KEY.to_string(), declared));
        }
        file.append_key_value_metadata(KeyValue::new(
            UNIQUE_KEYS_KEY.to_string(),
            self.unique_keys.to_string(),
        ));
        file.append_key_value_metadata(KeyValue::new(
            checksum::ROW_GROUP_CRC_KEY.to_string(),
            checksum::encode(&self.sums),
        ));
        file.append_key_value_metadata(KeyValue::new(
            page_sums::PAGE_CRC_KEY.to_string(),
            page_sums::encode(&self.page_sums),
        ));
        file.finish()
            .map_err(|e| write_err(&self.url, self.id, &self.path, e))?;
        let size = file.bytes_written() as u64;
        self.upload().await?;
        self.shut = true;
        let out = self
            .out
            .as_mut()
            .ok_or_else(|| write_err(&self.url, self.id, &self.path, "upload closed"))?;
        out.shutdown()
            .await
            .map_err(|e| write_err(&self.url, self.id, &self.path, e))?;
        Ok(size)
    }

    /// Aborts the upload so no parts linger. One already shut down cannot be aborted; at most
    /// unfinished parts remain, which S3 never shows as an object.
    async fn abort(&mut self) -> Result<()> {
        self.in_flight.clear();
        self.file = None;
        if let Some(mut out) = self.out.take()
            && !self.shut
        {
            out.abort().await.map_err(|e| self.err(e))?;
        }
        Ok(())
    }
}

/// The table's own columns with the declared value columns of the puts among them.
fn with_value_columns(
    own: RecordBatch,
    declared: &ValueColumns,
) -> std::result::Result<RecordBatch, arrow_schema::ArrowError> {
    let kinds = own.column(schema::KIND).as_primitive::<UInt8Type>().clone();
    let values = own.column(schema::VALUE).as_binary::<i32>().clone();
    let put = EntryKind::Put.as_u8();
    let live = (0..own.num_rows()).map(|i| (kinds.value(i) == put).then(|| values.value(i)));
    value_columns::with_columns(own, declared, live)
}

#[async_trait]
impl TableBuilder for ParquetBuilder {
    async fn add(&mut self, entries: &[Entry]) -> Result<()> {
        for e in entries {
            let new_key = self.tracker.observe(e)?;
            self.unique_keys &= new_key || e.is_range_delete();
            self.pending.push(e);
            // A group ends at the row bound or at the row that reaches the byte bound.
            if (self.pending.rows >= self.rows_per_group || self.pending.bytes >= self.group_bytes)
                && let Err(e) = self.launch().await
            {
                let _ = self.abort().await;
                return Err(e);
            }
        }
        Ok(())
    }

    fn keep_digest(&mut self) {
        self.digest.get_or_insert_default();
    }

    fn estimated_size(&self) -> u64 {
        // Encoded bytes so far plus the raw size of what is still to encode: an overestimate
        // by the compression ratio, which only makes outputs cut a little early.
        let written = self.file.as_ref().map_or(0, |f| f.bytes_written());
        let encoding: usize = self.in_flight.len() * self.rows_per_group * 16;
        (written + encoding + self.pending.bytes) as u64
    }

    async fn finish(self: Box<Self>) -> Result<TableMeta> {
        Ok(self.finish_with_digest().await?.0)
    }

    async fn finish_with_digest(mut self: Box<Self>) -> Result<(TableMeta, Option<ContentDigest>)> {
        let mut meta = self.tracker.seal()?;
        match self.seal().await {
            Ok(size) => meta.size = size,
            Err(e) => {
                let _ = self.abort().await;
                return Err(e);
            }
        }
        if let Some(dir) = &self.loc.local_dir {
            // object_store's local backend renames into place without syncing.
            let file = dir.join(self.path.as_ref());
            cairn_common::durable::sync_file(&file)?;
            cairn_common::durable::sync_dir(dir)?;
        }
        metrics::counter!("cairn_storage_written_bytes_total", "store" => "parquet")
            .increment(meta.size);
        Ok((meta, self.digest))
    }

    async fn abandon(mut self: Box<Self>) -> Result<()> {
        self.abort().await
    }
}
