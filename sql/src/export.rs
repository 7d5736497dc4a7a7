//! `export`: the database at one sequence number as a plain Parquet file (`key`, `value` and
//! the declared value columns, one row per live key, in key order) with a manifest that
//! names the number and a SHA-256 digest of the rows, which anyone can recompute from the
//! file with any Parquet reader: over the rows in key order, the key's length as a 4-byte
//! little-endian number, the key, the value's length the same way, then the value.

use crate::rows::{BATCH_ROWS, Shape};
use bytes::Bytes;
use cairn_common::{Error, KeyRange, Result, SeqNo};
use cairn_engine::Db;
use cairn_filestore::ValueColumns;
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_writer::ArrowWriterOptions;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::path::Path;

/// The data file's name in the export's directory.
pub const DATA_FILE: &str = "data.parquet";
/// The manifest's name, written last: an export without one is incomplete.
pub const MANIFEST_FILE: &str = "cairn-export.json";

/// What `cairn-export.json` holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Exported {
    /// The database's id.
    pub database: String,
    /// Every write numbered up to this one, and none after.
    pub seq: SeqNo,
    pub rows: u64,
    pub file: String,
    /// Hex SHA-256 over the rows, as the module's comment says.
    pub sha256: String,
}

fn io(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::component(format!("export to {}", path.display()), e)
}

/// Writes the database as of `at` (now, if `None`) into `dir`, which must be absent or
/// empty. A number below the history the database keeps is refused (`Db::snapshot_at`).
pub async fn export(
    db: &Db,
    columns: &ValueColumns,
    at: Option<SeqNo>,
    dir: &Path,
) -> Result<Exported> {
    if std::fs::read_dir(dir).is_ok_and(|mut d| d.next().is_some()) {
        return Err(Error::InvalidArgument(format!(
            "{} is not empty: an export goes into a new directory",
            dir.display()
        )));
    }
    let snapshot = match at {
        Some(seq) => db.snapshot_at(seq)?,
        None => db.snapshot(),
    };
    std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
    let shape = Shape::new(columns, None).map_err(|e| io(dir, e))?;
    let tmp = dir.join(format!("{DATA_FILE}.tmp"));
    let file = std::fs::File::create(&tmp).map_err(|e| io(&tmp, e))?;
    let props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::default()))
        .set_max_row_group_row_count(Some(128 * 1024))
        .set_created_by(format!("cairn {}", env!("CARGO_PKG_VERSION")))
        .build();
    // No Arrow schema in the file: text columns (views in `kv`) read as plain strings
    // everywhere.
    let options = ArrowWriterOptions::new()
        .with_properties(props)
        .with_skip_arrow_metadata(true);
    let mut writer = ArrowWriter::try_new_with_options(file, shape.projected.clone(), options)
        .map_err(|e| io(&tmp, e))?;
    let mut digest = Sha256::new();
    let mut it = db.scan_at(KeyRange::all(), &snapshot).await?;
    let mut rows: Vec<(Bytes, Bytes)> = Vec::with_capacity(BATCH_ROWS);
    let mut total = 0u64;
    loop {
        let next = it.next().await?;
        let done = next.is_none();
        if let Some((k, v)) = next {
            digest.update((k.len() as u32).to_le_bytes());
            digest.update(&k);
            digest.update((v.len() as u32).to_le_bytes());
            digest.update(&v);
            rows.push((k, v));
        }
        if rows.len() == BATCH_ROWS || (done && !rows.is_empty()) {
            let batch = shape.batch_of_entries(&rows).map_err(|e| io(&tmp, e))?;
            writer.write(&batch).map_err(|e| io(&tmp, e))?;
            total += rows.len() as u64;
            rows.clear();
        }
        if done {
            break;
        }
    }
    let file = writer.into_inner().map_err(|e| io(&tmp, e))?;
    file.sync_all().map_err(|e| io(&tmp, e))?;
    cairn_common::durable::rename_durably(&tmp, &dir.join(DATA_FILE))?;
    let exported = Exported {
        database: db.stats().database,
        seq: snapshot.seq(),
        rows: total,
        file: DATA_FILE.to_string(),
        sha256: digest
            .finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect(),
    };
    let json = serde_json::to_vec_pretty(&exported).map_err(|e| io(dir, e))?;
    let manifest = dir.join(MANIFEST_FILE);
    let tmp = dir.join(format!("{MANIFEST_FILE}.tmp"));
    std::fs::write(&tmp, json).map_err(|e| io(&tmp, e))?;
    std::fs::File::open(&tmp)
        .and_then(|f| f.sync_all())
        .map_err(|e| io(&tmp, e))?;
    cairn_common::durable::rename_durably(&tmp, &manifest)?;
    Ok(exported)
}
