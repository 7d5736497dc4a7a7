//! Writes one Parquet table: entries become record batches, row groups stream out through an
//! object-store `BufWriter`, which turns into a multipart upload once a part's worth is
//! buffered. The object appears only when the upload completes, so a failed or abandoned
//! table leaves nothing visible under its name.

use super::location::Location;
use super::schema::{self, TABLE_META_KEY};
use super::{ParquetOptions, store_error};
use crate::TableBuilder;
use crate::tracker::MetaTracker;
use arrow_array::builder::{BinaryBuilder, UInt8Builder, UInt64Builder};
use arrow_array::{ArrayRef, RecordBatch};
use async_trait::async_trait;
use cairn_common::{Entry, Error, IoContext, Result, TableId, TableMeta};
use object_store::buffered::BufWriter;
use object_store::path::Path;
use parquet::arrow::AsyncArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::metadata::{KeyValue, SortingColumn};
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;
use std::sync::Arc;

pub(crate) struct ParquetBuilder {
    id: TableId,
    path: Path,
    loc: Arc<Location>,
    url: String,
    tracker: MetaTracker,
    writer: Option<AsyncArrowWriter<BufWriter>>,
}

fn properties(opts: &ParquetOptions) -> Result<WriterProperties> {
    let level = ZstdLevel::try_new(opts.zstd_level).map_err(|e| {
        Error::InvalidArgument(format!("parquet: zstd_level {}: {e}", opts.zstd_level))
    })?;
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

impl ParquetBuilder {
    pub(crate) fn new(
        id: TableId,
        path: Path,
        loc: Arc<Location>,
        opts: &ParquetOptions,
    ) -> Result<Self> {
        let out = BufWriter::with_capacity(loc.store.clone(), path.clone(), opts.upload_part_bytes);
        let writer =
            AsyncArrowWriter::try_new(out, schema::table_schema(), Some(properties(opts)?))
                .map_err(|e| store_error(&opts.url, format_args!("table {id}"), e))?;
        Ok(ParquetBuilder {
            id,
            path,
            loc,
            url: opts.url.clone(),
            tracker: MetaTracker::new(id),
            writer: Some(writer),
        })
    }

    fn err(&self, e: impl std::fmt::Display) -> Error {
        store_error(
            &self.url,
            format_args!("write table {} ({})", self.id, self.path),
            e,
        )
    }

    fn writer(&mut self) -> Result<&mut AsyncArrowWriter<BufWriter>> {
        let id = self.id;
        self.writer
            .as_mut()
            .ok_or_else(|| Error::InvalidArgument(format!("table {id}: builder already failed")))
    }

    /// Aborts the upload so no parts linger; used when a write fails part-way.
    async fn abort(&mut self) -> Result<()> {
        if let Some(w) = self.writer.take() {
            w.into_inner().abort().await.map_err(|e| self.err(e))?;
        }
        Ok(())
    }
}

fn batch(entries: &[Entry]) -> std::result::Result<RecordBatch, arrow_schema::ArrowError> {
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
    RecordBatch::try_new(schema::table_schema(), columns)
}

#[async_trait]
impl TableBuilder for ParquetBuilder {
    async fn add(&mut self, entries: &[Entry]) -> Result<()> {
        for e in entries {
            self.tracker.observe(e)?;
        }
        let b = batch(entries).map_err(|e| self.err(e))?;
        let res = self.writer()?.write(&b).await;
        if let Err(e) = res {
            let err = self.err(e);
            let _ = self.abort().await;
            return Err(err);
        }
        Ok(())
    }

    fn estimated_size(&self) -> u64 {
        self.writer
            .as_ref()
            .map_or(0, |w| (w.bytes_written() + w.in_progress_size()) as u64)
    }

    async fn finish(mut self: Box<Self>) -> Result<TableMeta> {
        let mut meta = self.tracker.seal()?;
        let json = serde_json::to_string(&meta).map_err(|e| self.err(e))?;
        let w = self.writer()?;
        w.append_key_value_metadata(KeyValue::new(TABLE_META_KEY.to_string(), json));
        if let Err(e) = w.finish().await {
            // The upload may be shut down already, which `abort` refuses; dropping it leaves at
            // most unfinished parts, which S3 never shows as an object.
            self.writer = None;
            return Err(self.err(e));
        }
        meta.size = self.writer()?.bytes_written() as u64;
        if let Some(dir) = &self.loc.local_dir {
            // object_store's local backend renames into place without syncing.
            let file = dir.join(self.path.as_ref());
            std::fs::File::open(&file)
                .and_then(|f| f.sync_all())
                .at(&file)?;
            std::fs::File::open(dir)
                .and_then(|d| d.sync_all())
                .at(dir)?;
        }
        self.writer = None;
        Ok(meta)
    }

    async fn abandon(mut self: Box<Self>) -> Result<()> {
        self.abort().await
    }
}
