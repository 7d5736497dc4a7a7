//! The Parquet store: tables as ordinary Parquet files on any object store (S3 and
//! S3-compatible endpoints, local files, memory), one row per entry. Lookups prune row groups
//! and pages by the key column's statistics and page index, scans stream record batches, and
//! aggregates fold the value column without building entries. The schema is in `FORMAT.md`.

mod checksum;
mod page_sums;
mod reader;
pub(crate) mod schema;
mod table;
mod writer;

pub use schema::{TABLE_META_KEY, VALUE_COLUMNS_KEY, table_schema};

use crate::manifest_store::{MANIFEST_DIR, ManifestStore, ObjectManifestStore};
use crate::object_location::{ObjectLocation as Location, ObjectStoreOptions, open_object_store};
use crate::value_columns::ValueColumns;
use crate::{Storage, Table, TableBuilder};
use arrow_array::RecordBatch;
use async_trait::async_trait;
use cairn_common::{Error, Result, TableId, TableMeta};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use quick_cache::{Weighter, sync::Cache};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ParquetOptions {
    /// `s3://bucket/prefix`, `file:///absolute/path` or `memory://name`.
    pub url: String,
    /// S3 endpoint (MinIO, a test server); AWS's own when absent. Falls back to `AWS_ENDPOINT`.
    pub endpoint: Option<String>,
    /// Falls back to `AWS_REGION` / `AWS_DEFAULT_REGION`, then `us-east-1`.
    pub region: Option<String>,
    /// Fall back to `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY`.
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
    /// Permit `http://` endpoints (local test servers, MinIO without TLS).
    pub allow_http: bool,
    /// Rows per row group: the unit `get` and `scan` prune by statistics.
    pub row_group_rows: usize,
    /// A row group is cut sooner once its keys and values reach this many bytes (Arrow's
    /// binary columns take 32-bit offsets, so a group must stay well under 2 GiB).
    pub row_group_bytes: usize,
    /// Target size of a data page, the unit the page index prunes within a row group.
    pub page_bytes: usize,
    pub zstd_level: i32,
    /// The zstd level of tables written for each level of the tree, from level 0; levels
    /// past the list take its last entry. Empty: every level takes `zstd_level`.
    pub zstd_level_per_level: Vec<i32>,
    /// Bytes buffered before an upload switches to a multipart upload, and the part size.
    pub upload_part_bytes: usize,
    /// Decoded pages kept in memory for point lookups; 0 disables the cache.
    pub page_cache_bytes: u64,
    /// Deadline of one object-store request, and the retries after a failed one.
    pub timeout_ms: u64,
    pub max_retries: usize,
    /// The declared value columns, written beside `value`.
    pub values: ValueColumns,
}

impl ParquetOptions {
    /// The zstd level of a table written for `level` of the tree.
    pub fn zstd_level_at(&self, level: u32) -> i32 {
        let last = self.zstd_level_per_level.len().saturating_sub(1);
        self.zstd_level_per_level
            .get((level as usize).min(last))
            .copied()
            .unwrap_or(self.zstd_level)
    }

    /// Where the tables are and how to reach them.
    pub fn store_options(&self) -> ObjectStoreOptions {
        ObjectStoreOptions {
            url: self.url.clone(),
            endpoint: self.endpoint.clone(),
            region: self.region.clone(),
            access_key_id: self.access_key_id.clone(),
            secret_access_key: self.secret_access_key.clone(),
            allow_http: self.allow_http,
            timeout_ms: self.timeout_ms,
            max_retries: self.max_retries,
        }
    }
}

impl Default for ParquetOptions {
    fn default() -> Self {
        ParquetOptions {
            url: "memory://default".into(),
            endpoint: None,
            region: None,
            access_key_id: None,
            secret_access_key: None,
            allow_http: false,
            row_group_rows: 64 * 1024,
            row_group_bytes: 128 << 20,
            page_bytes: 64 * 1024,
            zstd_level: 1,
            zstd_level_per_level: Vec::new(),
            upload_part_bytes: 8 << 20,
            page_cache_bytes: 64 << 20,
            timeout_ms: 30_000,
            max_retries: 3,
            values: ValueColumns::default(),
        }
    }
}

/// Tables named `{id:020}.parquet` under the URL's prefix.
pub struct ParquetStorage {
    opts: ParquetOptions,
    loc: Arc<Location>,
    pages: Option<PageCache>,
}

/// Decoded pages by (table, row group, first row of the page), weighed by their memory.
/// Decoded pages by (table, row group, first row), shared by the store's tables.
#[derive(Clone)]
pub(crate) struct PageCache {
    pages: Arc<Cache<(TableId, usize, usize), RecordBatch, PageWeight>>,
    hits: metrics::Counter,
    misses: metrics::Counter,
}

impl PageCache {
    pub(crate) fn get(&self, id: &(TableId, usize, usize)) -> Option<RecordBatch> {
        let found = self.pages.get(id);
        match &found {
            Some(_) => self.hits.increment(1),
            None => self.misses.increment(1),
        }
        found
    }

    pub(crate) fn insert(&self, id: (TableId, usize, usize), batch: RecordBatch) {
        self.pages.insert(id, batch);
    }
}

#[derive(Clone)]
pub(crate) struct PageWeight;

impl Weighter<(TableId, usize, usize), RecordBatch> for PageWeight {
    fn weight(&self, _: &(TableId, usize, usize), batch: &RecordBatch) -> u64 {
        batch.get_array_memory_size() as u64 + 64
    }
}

fn page_cache(bytes: u64) -> Option<PageCache> {
    // The item estimate only sizes the hash table; pages are tens of KiB.
    (bytes > 0).then(|| PageCache {
        pages: Arc::new(Cache::with_weighter(
            (bytes / 32768).max(16) as usize,
            bytes,
            PageWeight,
        )),
        hits: metrics::counter!("cairn_page_cache_hits_total"),
        misses: metrics::counter!("cairn_page_cache_misses_total"),
    })
}

impl ParquetStorage {
    /// Opens the store the URL names (nothing is read yet; `file://` creates its directory).
    pub fn open(opts: ParquetOptions) -> Result<Self> {
        if opts.row_group_rows == 0 || opts.page_bytes == 0 {
            return Err(Error::InvalidArgument(
                "parquet: row_group_rows and page_bytes must be positive".into(),
            ));
        }
        if opts.upload_part_bytes < 5 << 20 {
            return Err(Error::InvalidArgument(format!(
                "parquet: upload_part_bytes {} is below S3's 5 MiB minimum part",
                opts.upload_part_bytes
            )));
        }
        let loc = open_object_store(&opts.store_options(), "storage")?;
        if let Some(dir) = &loc.local_dir {
            sweep_staging(dir, STAGING_AGE)?;
        }
        Ok(ParquetStorage {
            pages: page_cache(opts.page_cache_bytes),
            opts,
            loc: Arc::new(loc),
        })
    }

    /// Over an object store the caller built (any `ObjectStore`), tables under `prefix`.
    pub fn with_store(store: Arc<dyn ObjectStore>, prefix: &str, opts: ParquetOptions) -> Self {
        ParquetStorage {
            pages: page_cache(opts.page_cache_bytes),
            opts,
            loc: Arc::new(Location {
                store,
                prefix: Path::from(prefix),
                local_dir: None,
            }),
        }
    }

    pub fn url(&self) -> &str {
        &self.opts.url
    }

    /// The object path of table `id`.
    pub fn table_path(&self, id: TableId) -> Path {
        self.loc.prefix.clone().join(file_name(id))
    }

    fn err(&self, what: impl std::fmt::Display, e: impl std::fmt::Display) -> Error {
        store_error(&self.opts.url, what, e)
    }
}

fn file_name(id: TableId) -> String {
    format!("{id:020}.parquet")
}

pub(crate) fn store_error(
    url: &str,
    what: impl std::fmt::Display,
    e: impl std::fmt::Display,
) -> Error {
    Error::component(format!("parquet store {url}"), format!("{what}: {e}"))
}

#[async_trait]
impl Storage for ParquetStorage {
    async fn create_table(&self, id: TableId, level: u32) -> Result<Box<dyn TableBuilder>> {
        Ok(Box::new(writer::ParquetBuilder::new(
            id,
            self.table_path(id),
            self.loc.clone(),
            &self.opts,
            level,
        )?))
    }

    async fn open_table(&self, meta: &TableMeta) -> Result<Arc<dyn Table>> {
        let t = table::ParquetTable::open(
            meta.clone(),
            self.loc.store.clone(),
            self.table_path(meta.id),
            &self.opts.url,
            self.pages.clone(),
        )
        .await?;
        Ok(Arc::new(t))
    }

    async fn delete_table(&self, id: TableId) -> Result<()> {
        match self.loc.store.delete(&self.table_path(id)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.err(format_args!("delete table {id}"), e)),
        }
    }

    async fn list_tables(&self) -> Result<Vec<TableId>> {
        // One level: other databases may live under this prefix (a server keeps its named
        // ones at `<url>/db/<name>`), and their tables are not this database's.
        let prefix = (!self.loc.prefix.as_ref().is_empty()).then_some(&self.loc.prefix);
        let listed = self
            .loc
            .store
            .list_with_delimiter(prefix)
            .await
            .map_err(|e| self.err("list tables", e))?;
        Ok(listed
            .objects
            .iter()
            .filter_map(|o| {
                let name = o.location.filename()?;
                let digits = name.strip_suffix(".parquet")?;
                (digits.len() == 20).then(|| digits.parse().ok())?
            })
            .collect())
    }

    fn manifests(&self) -> Arc<dyn ManifestStore> {
        Arc::new(ObjectManifestStore::new(
            self.loc.store.clone(),
            self.loc.prefix.clone().join(MANIFEST_DIR),
            format!("{}/{MANIFEST_DIR}", self.opts.url.trim_end_matches('/')),
            self.loc.local_dir.clone(),
        ))
    }

    fn reference(&self) -> Option<String> {
        Some(self.opts.url.clone())
    }

    /// The store at URL `reference`, with this store's endpoint, credentials and options.
    fn open_reference(&self, reference: &str) -> Result<Arc<dyn Storage>> {
        Ok(Arc::new(ParquetStorage::open(ParquetOptions {
            url: reference.to_string(),
            ..self.opts.clone()
        })?))
    }
}

#[cfg(test)]
mod tests;

/// How old a staging file must be to be swept: object_store's local backend writes each
/// object as `<name>#<n>` and renames it into place, and a process that dies leaves the
/// staging file behind. Another process may be writing one right now (a second node on the
/// same directory), and the file is not ours to lock, so only one left alone this long is
/// taken for dead.
const STAGING_AGE: std::time::Duration = std::time::Duration::from_secs(3600);

/// Removes staging files older than `age` in `dir` and its subdirectories (the manifest's).
fn sweep_staging(dir: &std::path::Path, age: std::time::Duration) -> Result<()> {
    use cairn_common::IoContext;
    // Other processes share the directory (a bucket in local files): what vanishes while this
    // walks it was deleted by its owner, not an error.
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io(dir, e)),
    };
    for ent in entries {
        let ent = ent.at(dir)?;
        let path = ent.path();
        let meta = match ent.metadata() {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(Error::io(&path, e)),
        };
        if meta.is_dir() {
            sweep_staging(&path, age)?;
            continue;
        }
        let staging = ent
            .file_name()
            .to_str()
            .and_then(|n| n.rsplit_once('#'))
            .is_some_and(|(_, n)| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
        let old = meta
            .modified()
            .ok()
            .and_then(|m| m.elapsed().ok())
            .is_some_and(|e| e >= age);
        if staging && old {
            tracing::info!(path = %path.display(), "removing a staging file left by a write that died");
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io(&path, e)),
            }
        }
    }
    Ok(())
}
