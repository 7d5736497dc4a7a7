//! Writes one Parquet table. Entries gather into row groups; each full row group is encoded
//! (columns built, compressed, paged) on a blocking thread while the next one fills, up to
//! two at a time, so a flush uses more than one core. Encoded row groups are appended in
//! order and stream out through an object-store `BufWriter`, which turns into a multipart
//! upload once a part's worth is buffered. The object appears only when the upload completes,
//! so a failed or abandoned table leaves nothing visible under its name.

use super::checksum::{self, RowCrc};
use super::schema::{self, RANGE_DELETES_KEY, TABLE_META_KEY, UNIQUE_KEYS_KEY, VALUE_COLUMNS_KEY};
use super::{ParquetOptions, store_error};
use crate::object_location::ObjectLocation as Location;
use crate::tracker::MetaTracker;
use crate::value_columns::{self, ValueColumns};
use crate::{ContentDigest, TableBuilder};
use arrow_array::builder::{BinaryBuilder, UInt8Builder, UInt64Builder};
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

/// A row group's column chunks, the checksum of its rows, and their digest.
type Encoded = std::result::Result<(Vec<ArrowColumnChunk>, u32, ContentDigest), String>;

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
    pending: Vec<Entry>,
    pending_bytes: usize,
    factory: Arc<ArrowRowGroupWriterFactory>,
    /// The file's columns: the table's own, then the declared value columns.
    schema: SchemaRef,
    values: Arc<ValueColumns>,
    groups: usize,
    in_flight: VecDeque<JoinHandle<Encoded>>,
    /// The checksums of the row groups appended so far.
    sums: Vec<u32>,
    /// Of the rows appended so far, from their Arrow columns.
    digest: ContentDigest,
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
    entries: &[Entry],
    values: &ValueColumns,
) -> Encoded {
    let batch = batch(entries, values).map_err(|e| e.to_string())?;
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
    Ok((chunks, RowCrc::of(entries), checksum::digest(&batch)))
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
            pending: Vec::new(),
            pending_bytes: 0,
            factory: Arc::new(factory),
            schema,
            values: Arc::new(opts.values.clone()),
            groups: 0,
            in_flight: VecDeque::new(),
            sums: Vec::new(),
            digest: ContentDigest::default(),
            file: Some(file),
            out: Some(out),
            shut: false,
        })
    }

    fn err(&self, e: impl std::fmt::Display) -> Error {
        write_err(&self.url, self.id, &self.path, e)
    }

    /// Starts encoding `entries` as the next row group, first finishing the oldest one in
    /// flight if the limit is reached.
    async fn launch(&mut self, entries: Vec<Entry>) -> Result<()> {
        if self.in_flight.len() >= IN_FLIGHT {
            self.append_oldest().await?;
        }
        let (factory, index, values) = (self.factory.clone(), self.groups, self.values.clone());
        self.groups += 1;
        self.in_flight
            .push_back(tokio::task::spawn_blocking(move || {
                encode(&factory, index, &entries, &values)
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
        self.digest.merge(&digest);
        let file = self
            .file
            .as_mut()
            .ok_or_else(|| write_err(&self.url, self.id, &self.path, "already finished"))?;
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
        if !self.pending.is_empty() {
            let rest = std::mem::take(&mut self.pending);
            self.launch(rest).await?;
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

/// The rows of `entries`, with the declared value columns of the puts among them.
fn batch(
    entries: &[Entry],
    declared: &ValueColumns,
) -> std::result::Result<RecordBatch, arrow_schema::ArrowError> {
    let key_bytes = entries.iter().map(|e| e.key.len()).sum();
    let value_bytes = entries.iter().map(|e| e.value.len()).sum();
    let mut keys = BinaryBuilder::with_capacity(entries.len(), key_bytes);
    let mut seqs = UInt64Builder::with_capacity(entries.len());
    let mut kinds = UInt8Builder::with_capacity(entries.len());
    let mut values = BinaryBuilder::with_capacity(entries.len(), value_bytes);
    for e in entries {
        keys.append_value(&e.key);
        seqs.append_value(e.seq);
        kinds.append_value(e.kind.as_u8());
        values.append_value(&e.value);
    }
    let columns: Vec<ArrayRef> = vec![
        Arc::new(keys.finish()),
        Arc::new(seqs.finish()),
        Arc::new(kinds.finish()),
        Arc::new(values.finish()),
    ];
    let own = RecordBatch::try_new(schema::table_schema(), columns)?;
    let live = entries
        .iter()
        .map(|e| (e.kind == EntryKind::Put).then_some(e.value.as_ref()));
    value_columns::with_columns(own, declared, live)
}

#[async_trait]
impl TableBuilder for ParquetBuilder {
    async fn add(&mut self, entries: &[Entry]) -> Result<()> {
        for e in entries {
            let new_key = self.tracker.observe(e)?;
            self.unique_keys &= new_key || e.is_range_delete();
            self.pending_bytes += e.key.len() + e.value.len() + 9;
        }
        self.pending.extend_from_slice(entries);
        while self.pending.len() >= self.rows_per_group || self.pending_bytes >= self.group_bytes {
            // The rows up to the row bound or the byte bound, whichever comes first.
            let mut bytes = 0;
            let rows = self
                .pending
                .iter()
                .take(self.rows_per_group)
                .position(|e| {
                    bytes += e.key.len() + e.value.len() + 9;
                    bytes >= self.group_bytes
                })
                .map_or(self.rows_per_group.min(self.pending.len()), |i| i + 1);
            let group: Vec<Entry> = self.pending.drain(..rows).collect();
            self.pending_bytes = self
                .pending
                .iter()
                .map(|e| e.key.len() + e.value.len() + 9)
                .sum();
            if let Err(e) = self.launch(group).await {
                let _ = self.abort().await;
                return Err(e);
            }
        }
        Ok(())
    }

    fn estimated_size(&self) -> u64 {
        // Encoded bytes so far plus the raw size of what is still to encode: an overestimate
        // by the compression ratio, which only makes outputs cut a little early.
        let written = self.file.as_ref().map_or(0, |f| f.bytes_written());
        let encoding: usize = self.in_flight.len() * self.rows_per_group * 16;
        (written + encoding + self.pending_bytes) as u64
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
        Ok((meta, Some(self.digest)))
    }

    async fn abandon(mut self: Box<Self>) -> Result<()> {
        self.abort().await
    }
}
