//! The `[storage]` section: `kind` picks the table storage, and the keys of every kind live
//! side by side as options, checked against the kind. A `hybrid` storage nests a `primary` and
//! a `secondary` section of the same shape (`[storage.primary]`, `[storage.secondary]`).

use cairn_filestore::{Compression, FilterKind, ParquetOptions, SstOptions};
use cairn_hybrid_store::{HybridOptions, OnSecondaryFailure};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum StorageKind {
    #[default]
    Sstable,
    Parquet,
    Hybrid,
    /// A storage server (`cairn serve storage`), over gRPC.
    Grpc,
}

impl StorageKind {
    fn name(self) -> &'static str {
        match self {
            StorageKind::Sstable => "sstable",
            StorageKind::Parquet => "parquet",
            StorageKind::Hybrid => "hybrid",
            StorageKind::Grpc => "grpc",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageSection {
    #[serde(default)]
    pub kind: StorageKind,
    /// sstable: directory of the table files (default `<data_dir>/tables`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dir: Option<PathBuf>,
    /// sstable: data block size before compression (default 4096).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub block_bytes: Option<usize>,
    /// sstable: "none", "lz4", "zstd" or "zstd:LEVEL" (default none).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub compression: Option<Compression>,
    /// sstable: the compression of each level's tables from level 0, the last entry for
    /// the levels past the list, e.g. ["lz4", "lz4", "zstd:9"] (default: `compression`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub compression_per_level: Option<Vec<Compression>>,
    /// sstable: "bloom" or "none" (default bloom).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub filter: Option<FilterKind>,
    /// sstable: bloom filter bits per key (default 10).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bloom_bits_per_key: Option<u32>,
    /// sstable, grpc: bytes of decoded blocks cached in memory, 0 for none (default 64 MiB).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub block_cache_bytes: Option<u64>,

    /// parquet: `s3://bucket/prefix`, `file:///abs/path` or `memory://name`
    /// (default `file://<data_dir>/parquet`). grpc: the storage server, `http://host:port`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// grpc: which of the storage server's databases is this one (default `default`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub database: Option<String>,
    /// parquet: S3 endpoint, e.g. `http://127.0.0.1:9000` (default: AWS, or `AWS_ENDPOINT`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// parquet: S3 region (default `AWS_REGION`, then us-east-1).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// parquet: S3 credentials (default `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub access_key_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret_access_key: Option<String>,
    /// parquet: allow a plain-HTTP endpoint (default false).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allow_http: Option<bool>,
    /// parquet: rows per row group (default 65536).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub row_group_rows: Option<usize>,
    /// parquet: target data page size (default 65536).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub page_bytes: Option<usize>,
    /// parquet: zstd level (default 1).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub zstd_level: Option<i32>,
    /// parquet: the zstd level of each level's tables from level 0, the last entry for the
    /// levels past the list (default: `zstd_level`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub zstd_level_per_level: Option<Vec<i32>>,
    /// parquet: multipart upload part size, at least 5 MiB (default 8 MiB).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upload_part_bytes: Option<usize>,
    /// parquet: decoded pages kept in memory for lookups, 0 for none (default 64 MiB).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub page_cache_bytes: Option<u64>,
    /// parquet: deadline of one object-store request in ms (default 30000).
    /// grpc: deadline of one call in ms (default `rpc.timeout_ms`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// parquet: retries of a failed request (default 3).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_retries: Option<usize>,

    /// hybrid: the storage lookups and scans read (any non-hybrid kind).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub primary: Option<Box<StorageSection>>,
    /// hybrid: the storage analytics and compaction read (any non-hybrid kind).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secondary: Option<Box<StorageSection>>,
    /// hybrid: "retry" (re-upload from the primary copy a few times before failing) or "fail".
    #[serde(skip_serializing_if = "Option::is_none")]
    pub on_secondary_failure: Option<OnSecondaryFailure>,
    /// hybrid: first and longest wait between re-upload attempts, in ms (100, 30000).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_initial_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_max_ms: Option<u64>,
}

/// Whether a kind-specific key applies to `kind`.
fn applies(key: &str, kind: StorageKind) -> bool {
    use StorageKind::*;
    let kinds: &[StorageKind] = match key {
        "block_cache_bytes" => &[Sstable, Grpc],
        "dir"
        | "block_bytes"
        | "compression"
        | "compression_per_level"
        | "filter"
        | "bloom_bits_per_key" => &[Sstable],
        "url" | "timeout_ms" => &[Parquet, Grpc],
        "database" => &[Grpc],
        "endpoint"
        | "region"
        | "access_key_id"
        | "secret_access_key"
        | "allow_http"
        | "row_group_rows"
        | "page_bytes"
        | "zstd_level"
        | "zstd_level_per_level"
        | "upload_part_bytes"
        | "page_cache_bytes"
        | "max_retries" => &[Parquet],
        _ => &[Hybrid],
    };
    kinds.contains(&kind)
}

/// The default client block cache of a grpc storage.
pub const GRPC_CACHE_BYTES: u64 = 64 << 20;

/// A kind-specific key: its name, whether it is set, and how to unset it.
type KeySlot = (&'static str, bool, Box<dyn FnOnce(&mut StorageSection)>);

impl StorageSection {
    /// Every kind-specific key.
    fn keys(&mut self) -> Vec<KeySlot> {
        macro_rules! k {
            ($($f:ident),*) => {
                vec![$((
                    stringify!($f),
                    self.$f.is_some(),
                    Box::new(|s: &mut Self| s.$f = None) as Box<dyn FnOnce(&mut Self)>,
                )),*]
            };
        }
        k!(
            dir,
            block_bytes,
            compression,
            compression_per_level,
            filter,
            bloom_bits_per_key,
            block_cache_bytes,
            url,
            endpoint,
            region,
            access_key_id,
            secret_access_key,
            allow_http,
            row_group_rows,
            page_bytes,
            zstd_level,
            zstd_level_per_level,
            upload_part_bytes,
            page_cache_bytes,
            timeout_ms,
            max_retries,
            database,
            primary,
            secondary,
            on_secondary_failure,
            retry_initial_ms,
            retry_max_ms
        )
    }

    /// Unsets keys of other kinds for which `inherited(key)` says they came from an earlier
    /// profile than the `kind` that now rules them out.
    pub(super) fn drop_foreign(&mut self, inherited: impl Fn(&str) -> bool) {
        let kind = self.kind;
        for (key, set, clear) in self.keys() {
            if set && !applies(key, kind) && inherited(key) {
                clear(self);
            }
        }
    }

    /// Checks this section (named `at`, e.g. `storage.primary`): keys match the kind, a
    /// hybrid has both halves and neither is itself hybrid, sizes are positive.
    pub(super) fn validate(&self, at: &str, nested: bool) -> Result<(), (String, String)> {
        let key = |k: &str| format!("{at}.{k}");
        let mut probe = self.clone();
        for (k, set, _) in probe.keys() {
            if set && !applies(k, self.kind) {
                return Err((
                    key(k),
                    format!(
                        "does not apply to {at}.kind = \"{}\"; remove it or change the kind",
                        self.kind.name()
                    ),
                ));
            }
        }
        let zero = |v: Option<usize>| v == Some(0);
        if zero(self.block_bytes) {
            return Err((key("block_bytes"), "must be greater than 0".into()));
        }
        if zero(self.row_group_rows) || zero(self.page_bytes) {
            return Err((key("row_group_rows"), "sizes must be greater than 0".into()));
        }
        let zstd = self.zstd_level.iter().map(|l| ("zstd_level", l));
        let per_level = self.zstd_level_per_level.iter().flatten();
        for (k, l) in zstd.chain(per_level.map(|l| ("zstd_level_per_level", l))) {
            if !(1..=22).contains(l) {
                return Err((key(k), format!("zstd level {l}: expected 1 to 22")));
            }
        }
        if self.upload_part_bytes.is_some_and(|b| b < 5 << 20) {
            return Err((
                key("upload_part_bytes"),
                "must be at least 5 MiB (5242880), S3's smallest part".into(),
            ));
        }
        if self.kind == StorageKind::Grpc {
            match &self.url {
                None => return Err((key("url"), "a grpc storage needs the server's url".into())),
                Some(url) if !(url.starts_with("http://") || url.starts_with("https://")) => {
                    return Err((
                        key("url"),
                        format!("`{url}` is not http://host:port or https://host:port"),
                    ));
                }
                Some(_) => {}
            }
            if let Some(d) = &self.database
                && let Err(e) = cairn_rpc::check_database_name(d)
            {
                return Err((key("database"), e.to_string()));
            }
        } else if let Some(url) = &self.url {
            let scheme = url.split("://").next().unwrap_or_default();
            if !url.contains("://") || !["s3", "file", "memory"].contains(&scheme) {
                return Err((
                    key("url"),
                    format!("`{url}` is not s3://bucket/prefix, file:///path or memory://name"),
                ));
            }
        }
        if self.kind == StorageKind::Hybrid {
            if nested {
                return Err((
                    format!("{at}.kind"),
                    "a hybrid storage cannot nest another hybrid storage".into(),
                ));
            }
            for (half, section) in [("primary", &self.primary), ("secondary", &self.secondary)] {
                match section {
                    None => {
                        return Err((
                            key(half),
                            format!("a hybrid storage needs a [{at}.{half}] section"),
                        ));
                    }
                    Some(s) => s.validate(&key(half), true)?,
                }
            }
        }
        Ok(())
    }

    /// SSTable options, the directory defaulting to `<data_dir>/<default_sub>`.
    pub fn sst_options_in(&self, data_dir: &Path, default_sub: &str) -> SstOptions {
        let mut o = SstOptions::new(
            self.dir
                .clone()
                .unwrap_or_else(|| data_dir.join(default_sub)),
        );
        if let Some(v) = self.block_bytes {
            o.block_bytes = v;
        }
        if let Some(v) = self.compression {
            o.compression = v;
        }
        if let Some(v) = &self.compression_per_level {
            o.compression_per_level = v.clone();
        }
        if let Some(v) = self.filter {
            o.filter = v;
        }
        if let Some(v) = self.bloom_bits_per_key {
            o.bloom_bits_per_key = v;
        }
        if let Some(v) = self.block_cache_bytes {
            o.block_cache_bytes = v;
        }
        o
    }

    pub fn sst_options(&self, data_dir: &Path) -> SstOptions {
        self.sst_options_in(data_dir, "tables")
    }

    /// Parquet options, the URL defaulting to `file://<data_dir>/parquet` (made absolute).
    pub fn parquet_options(&self, data_dir: &Path) -> ParquetOptions {
        let d = ParquetOptions::default();
        let url = self.url.clone().unwrap_or_else(|| {
            let dir = std::path::absolute(data_dir.join("parquet"))
                .unwrap_or_else(|_| data_dir.join("parquet"));
            format!("file://{}", dir.display())
        });
        ParquetOptions {
            url,
            endpoint: self.endpoint.clone(),
            region: self.region.clone(),
            access_key_id: self.access_key_id.clone(),
            secret_access_key: self.secret_access_key.clone(),
            allow_http: self.allow_http.unwrap_or(d.allow_http),
            row_group_rows: self.row_group_rows.unwrap_or(d.row_group_rows),
            row_group_bytes: d.row_group_bytes,
            page_bytes: self.page_bytes.unwrap_or(d.page_bytes),
            zstd_level: self.zstd_level.unwrap_or(d.zstd_level),
            zstd_level_per_level: self.zstd_level_per_level.clone().unwrap_or_default(),
            upload_part_bytes: self.upload_part_bytes.unwrap_or(d.upload_part_bytes),
            page_cache_bytes: self.page_cache_bytes.unwrap_or(d.page_cache_bytes),
            timeout_ms: self.timeout_ms.unwrap_or(d.timeout_ms),
            max_retries: self.max_retries.unwrap_or(d.max_retries),
            // The config's `[values]`, not a storage key: the wiring sets it.
            values: d.values,
        }
    }

    pub fn hybrid_options(&self) -> HybridOptions {
        let d = HybridOptions::default();
        HybridOptions {
            on_secondary_failure: self.on_secondary_failure.unwrap_or(d.on_secondary_failure),
            retry_initial_ms: self.retry_initial_ms.unwrap_or(d.retry_initial_ms),
            retry_max_ms: self.retry_max_ms.unwrap_or(d.retry_max_ms),
        }
    }

    /// The section with every default of its kind spelled out (credentials left as given).
    pub fn resolved(&self, data_dir: &Path) -> StorageSection {
        self.resolved_in(data_dir, "tables")
    }

    /// `resolved`, an SSTable store's directory defaulting to `<data_dir>/<default_sub>`
    /// (`secondary` for a hybrid store's secondary, as the wiring opens it).
    fn resolved_in(&self, data_dir: &Path, default_sub: &str) -> StorageSection {
        let mut s = StorageSection {
            kind: self.kind,
            ..StorageSection::default()
        };
        match self.kind {
            StorageKind::Sstable => {
                let o = self.sst_options_in(data_dir, default_sub);
                s.dir = Some(o.dir);
                s.block_bytes = Some(o.block_bytes);
                s.compression = Some(o.compression);
                s.compression_per_level = Some(o.compression_per_level);
                s.filter = Some(o.filter);
                s.bloom_bits_per_key = Some(o.bloom_bits_per_key);
                s.block_cache_bytes = Some(o.block_cache_bytes);
            }
            StorageKind::Parquet => {
                let o = self.parquet_options(data_dir);
                s.url = Some(o.url);
                s.endpoint = o.endpoint;
                s.region = o.region;
                s.access_key_id = o.access_key_id;
                s.secret_access_key = o.secret_access_key.map(|_| "(set)".into());
                s.allow_http = Some(o.allow_http);
                s.row_group_rows = Some(o.row_group_rows);
                s.page_bytes = Some(o.page_bytes);
                s.zstd_level = Some(o.zstd_level);
                s.zstd_level_per_level = Some(o.zstd_level_per_level);
                s.upload_part_bytes = Some(o.upload_part_bytes);
                s.page_cache_bytes = Some(o.page_cache_bytes);
                s.timeout_ms = Some(o.timeout_ms);
                s.max_retries = Some(o.max_retries);
            }
            StorageKind::Grpc => {
                s.url = self.url.clone();
                s.database = self.database.clone();
                s.timeout_ms = self.timeout_ms;
                s.block_cache_bytes = Some(self.block_cache_bytes.unwrap_or(GRPC_CACHE_BYTES));
            }
            StorageKind::Hybrid => {
                let o = self.hybrid_options();
                s.on_secondary_failure = Some(o.on_secondary_failure);
                s.retry_initial_ms = Some(o.retry_initial_ms);
                s.retry_max_ms = Some(o.retry_max_ms);
                s.primary = self
                    .primary
                    .as_ref()
                    .map(|p| Box::new(p.resolved(data_dir)));
                s.secondary = self
                    .secondary
                    .as_ref()
                    .map(|p| Box::new(p.resolved_in(data_dir, "secondary")));
            }
        }
        s
    }
}
