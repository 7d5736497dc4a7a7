//! The configuration: one TOML file of named profiles (`[default]`, `[nosync]`, ...), read
//! with figment. The selected profile is merged over `[default]`, and every key can be
//! overridden from the environment: `CAIRN_DATA_DIR`, `CAIRN_JOURNAL__SYNC=false` (`__`
//! separates nesting levels). Unknown keys, bad values and keys that do not apply to the
//! chosen `kind` are errors that name the key and where it came from.

use cairn_compaction::PickerOptions;
use cairn_engine::EngineOptions;
use cairn_filestore::ValueColumns;
use figment::Figment;
use figment::providers::{Env, Format, Toml};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

mod cluster;
mod router;
mod rpc;
mod storage;

pub use cluster::{ClusterSection, MapKind, SHARDS, check_node_id};
pub use router::{RouterSection, ShardKind, ShardSection, shard_dir_name};
pub use rpc::RpcSection;
pub use storage::{GRPC_CACHE_BYTES, StorageKind, StorageSection};

/// Environment variables with the `CAIRN_` prefix that are not config keys.
const NOT_KEYS: &[&str] = &[
    "profile",
    "config",
    "test_s3_endpoint",
    "test_s3_bucket",
    "model_seeds",
    "log",
    "log_format",
];

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where the manifest lives, and the journal and tables unless their sections say otherwise.
    pub data_dir: PathBuf,
    #[serde(default)]
    pub journal: JournalSection,
    #[serde(default)]
    pub memtable: MemtableSection,
    #[serde(default)]
    pub storage: StorageSection,
    #[serde(default)]
    pub compaction: CompactionSection,
    #[serde(default)]
    pub engine: EngineOptions,
    #[serde(default)]
    pub rpc: RpcSection,
    #[serde(default)]
    pub metrics: MetricsSection,
    /// How keys and values are encoded, and which parts of a value are columns: in the
    /// Parquet store's files and in `cairn sql`'s `kv` table.
    #[serde(default, skip_serializing_if = "is_default")]
    pub values: ValueColumns,
    /// Present in a sharded profile: the shards its keys are spread over.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub router: Option<RouterSection>,
    /// Present in a profile whose shards a cluster map places on nodes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<ClusterSection>,
    /// Open the database as a read replica that follows its writer (`Db::open_reader`):
    /// `cairn --read-only ...`, `cairn serve shard --read-only`, or `CAIRN_READ_ONLY=true`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub read_only: bool,
    /// Where a reader takes its directory lock, if not `data_dir`: the CLI's read commands
    /// lock a directory of their own, so they can read beside a writer that holds
    /// `data_dir`. Not a config key.
    #[serde(skip)]
    pub reader_dir: Option<PathBuf>,
    /// Open this named checkpoint, read-only, instead of the database (`Db::open_checkpoint`;
    /// `cairn --checkpoint NAME` on a read command). Not a config key.
    #[serde(skip)]
    pub checkpoint: Option<String>,
}

/// Where `cairn serve` exports its metrics in Prometheus' text format (`GET /metrics`). Off
/// unless set; the library records through the `metrics` facade either way.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsSection {
    /// `host:port`, such as `127.0.0.1:9464`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<String>,
    /// Serve metrics beyond loopback (default false: refused), where anyone who reaches the
    /// address reads every database's name, size and traffic.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_open: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum JournalKind {
    #[default]
    File,
    Memory,
    /// A journal server (`cairn serve journal`), over gRPC.
    Grpc,
    /// Objects in an object store (`s3://`, `file://`, `memory://`): nothing on the node.
    Object,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JournalSection {
    #[serde(default)]
    pub kind: JournalKind,
    /// file: directory of the segments (default `<data_dir>/journal`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dir: Option<PathBuf>,
    /// file: fsync each group commit before acknowledging it (default true).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sync: Option<bool>,
    /// file: segment size that triggers rollover (default 64 MiB).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub segment_bytes: Option<u64>,
    /// grpc: the journal server, `http://host:port`. object: `s3://bucket/prefix`,
    /// `file:///abs/path` or `memory://name` (default `file://<data_dir>/journal-objects`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// grpc: deadline of one append in ms (default `rpc.timeout_ms`). object: deadline of
    /// one request to the store (default 30000).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// object: S3 endpoint, e.g. `http://127.0.0.1:9000` (default: AWS, or `AWS_ENDPOINT`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// object: S3 region (default `AWS_REGION`, then us-east-1).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// object: S3 credentials (default `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub access_key_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret_access_key: Option<String>,
    /// object: allow a plain-HTTP endpoint (default false).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allow_http: Option<bool>,
    /// object: a commit's object is cut at this many bytes of records (default 4 MiB).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_object_bytes: Option<usize>,
    /// object: how long a commit waits for more records after its first (default 0: only
    /// for the put in flight, which groups records under load).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub commit_delay_ms: Option<u64>,
    /// object: how long a failing store is retried before writers get an error (default
    /// 30000).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_for_ms: Option<u64>,
    /// object: how many commits may be written at once, acknowledged in order (default 4,
    /// at most 8).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub commits_in_flight: Option<usize>,
    /// object: how often a read replica asks for the journal's next object while it waits
    /// for new records, one GET each (default 5).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub probe_ms: Option<u64>,
    /// grpc: which of the server's journals is this database's (default `default`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub database: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum MemtableKind {
    Sharded,
    #[default]
    SingleLock,
    #[serde(rename = "skiplist")]
    SkipList,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemtableSection {
    #[serde(default)]
    pub kind: MemtableKind,
    /// sharded: number of shards (default 32).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shards: Option<usize>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum CompactionKind {
    #[default]
    Local,
    /// A compaction server (`cairn serve compaction`), over gRPC.
    Grpc,
}

/// What a grpc compactor does with a job its server cannot take after the retries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum CompactionFallback {
    /// Run it in this process, against this profile's storage.
    #[default]
    Local,
    /// Fail it; the engine retries it later with backoff.
    None,
}

/// Where compaction runs (`kind`) and the leveled policy the engine follows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CompactionSection {
    pub kind: CompactionKind,
    pub l0_trigger: usize,
    pub levels: usize,
    pub base_level_bytes: u64,
    pub level_size_ratio: u64,
    pub target_table_bytes: u64,
    /// A compaction of more than `target_table_bytes` is cut by key range into up to
    /// this many subcompactions run at once (on a pool's servers, or the background
    /// threads); 1, the default, runs each whole.
    pub subcompactions: usize,
    /// grpc: the compaction server, `http://host:port`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// grpc: several compaction servers instead of `url`: each job goes to the least busy,
    /// and to the next when one is down or stops answering.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub urls: Vec<String>,
    /// `cairn serve compaction`: jobs run at once (default: the machine's cores); more wait.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub slots: Option<usize>,
    /// grpc: the longest wait for a job's progress in ms (default `rpc.timeout_ms`); the
    /// server reports progress while the job runs, so a job may take longer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// grpc: "local" (default) or "none".
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fallback: Option<CompactionFallback>,
    /// grpc: the database whose tables the server's jobs read and write, as the server
    /// knows it (a server runs jobs for many; default: `default`). A router's shards each
    /// name their own, so they share one compaction server.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub database: Option<String>,
    /// `cairn serve compaction`: the storage jobs read and write, when not the profile's
    /// `[storage]` (for example the storage node: `kind = "grpc"`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub storage: Option<StorageSection>,
}

impl Default for CompactionSection {
    fn default() -> Self {
        let p = PickerOptions::default();
        CompactionSection {
            kind: CompactionKind::Local,
            l0_trigger: p.l0_trigger,
            levels: p.levels,
            base_level_bytes: p.base_level_bytes,
            level_size_ratio: p.level_size_ratio,
            target_table_bytes: p.target_table_bytes,
            subcompactions: p.subcompactions,
            url: None,
            urls: Vec::new(),
            slots: None,
            timeout_ms: None,
            fallback: None,
            database: None,
            storage: None,
        }
    }
}

impl CompactionSection {
    pub fn picker(&self) -> PickerOptions {
        PickerOptions {
            l0_trigger: self.l0_trigger,
            levels: self.levels,
            base_level_bytes: self.base_level_bytes,
            level_size_ratio: self.level_size_ratio,
            target_table_bytes: self.target_table_bytes,
            subcompactions: self.subcompactions,
        }
    }
}

/// A config that could not be read, with the key and the source it came from.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct ConfigError {
    pub message: String,
    /// The offending key, dotted (`journal.sync`), when one is to blame.
    pub key: Option<String>,
}

impl ConfigError {
    fn new(message: String, key: Option<String>) -> Self {
        ConfigError { message, key }
    }
}

impl Config {
    /// The profile named by `profile`, else `CAIRN_PROFILE`, else `default`.
    pub fn selected_profile(profile: Option<&str>) -> String {
        profile
            .map(str::to_string)
            .or_else(|| {
                std::env::var("CAIRN_PROFILE")
                    .ok()
                    .filter(|p| !p.is_empty())
            })
            .unwrap_or_else(|| "default".to_string())
    }

    /// Reads `path`, selects `profile` (see [`Config::selected_profile`]) and applies
    /// `CAIRN_*` environment overrides.
    pub fn load(path: &Path, profile: Option<&str>) -> Result<Config, ConfigError> {
        if !path.exists() {
            return Err(ConfigError::new(
                format!("config file {} does not exist", path.display()),
                None,
            ));
        }
        Self::from_figment(
            Figment::new().merge(Toml::file_exact(path).nested()),
            &path.display().to_string(),
            profile,
        )
    }

    /// Like [`Config::load`] from TOML text (tests, embedded configs).
    pub fn from_toml_str(text: &str, profile: Option<&str>) -> Result<Config, ConfigError> {
        Self::from_figment(
            Figment::new().merge(Toml::string(text).nested()),
            "the given TOML",
            profile,
        )
    }

    fn from_figment(
        file: Figment,
        source: &str,
        profile: Option<&str>,
    ) -> Result<Config, ConfigError> {
        let profile = Self::selected_profile(profile);
        let defined: Vec<String> = file.profiles().map(|p| p.as_str().to_string()).collect();
        if profile != "default" && !defined.iter().any(|p| p.eq_ignore_ascii_case(&profile)) {
            return Err(ConfigError::new(
                format!(
                    "profile `{profile}` is not defined in {source} (defined: {})",
                    defined.join(", ")
                ),
                None,
            ));
        }
        let fig = file
            .merge(
                Env::prefixed("CAIRN_")
                    .split("__")
                    .ignore(NOT_KEYS)
                    .global(),
            )
            .select(profile.as_str());
        let mut config: Config = fig.extract().map_err(|errs| describe(errs, &profile))?;
        config.drop_inherited_foreign_keys(&fig);
        config.validate(source)?;
        Ok(config)
    }

    /// A profile cannot unset a key. When it changes a section's `kind`, keys it inherited
    /// from an earlier profile that only apply to the old kind are dropped; the same keys set
    /// alongside the new kind stay, and `validate` rejects them.
    fn drop_inherited_foreign_keys(&mut self, fig: &Figment) {
        // figment tags values from [default] and globals with their profile; values of the
        // selected profile carry none.
        let rank = |key: &str| -> Option<u8> {
            let value = fig.find_value(key).ok()?;
            Some(match value.tag().profile() {
                Some(p) if p == figment::Profile::Default => 0,
                Some(p) if p == figment::Profile::Global => 2,
                _ => 1,
            })
        };
        let inherited = |key: &str, kind_key: &str| matches!((rank(key), rank(kind_key)), (Some(k), Some(c)) if k < c);
        if self.journal.kind != JournalKind::File {
            for (key, slot) in [
                ("journal.sync", &mut self.journal.sync as &mut dyn Clear),
                ("journal.segment_bytes", &mut self.journal.segment_bytes),
                ("journal.dir", &mut self.journal.dir),
            ] {
                if inherited(key, "journal.kind") {
                    slot.clear();
                }
            }
        }
        if !matches!(self.journal.kind, JournalKind::Grpc | JournalKind::Object) {
            for (key, slot) in [
                ("journal.url", &mut self.journal.url as &mut dyn Clear),
                ("journal.timeout_ms", &mut self.journal.timeout_ms),
            ] {
                if inherited(key, "journal.kind") {
                    slot.clear();
                }
            }
        }
        if self.journal.kind != JournalKind::Object {
            let j = &mut self.journal;
            for (key, slot) in [
                ("journal.endpoint", &mut j.endpoint as &mut dyn Clear),
                ("journal.region", &mut j.region),
                ("journal.access_key_id", &mut j.access_key_id),
                ("journal.secret_access_key", &mut j.secret_access_key),
                ("journal.allow_http", &mut j.allow_http),
                ("journal.max_object_bytes", &mut j.max_object_bytes),
                ("journal.commit_delay_ms", &mut j.commit_delay_ms),
                ("journal.retry_for_ms", &mut j.retry_for_ms),
                ("journal.commits_in_flight", &mut j.commits_in_flight),
                ("journal.probe_ms", &mut j.probe_ms),
            ] {
                if inherited(key, "journal.kind") {
                    slot.clear();
                }
            }
        }
        if self.compaction.kind == CompactionKind::Local {
            for (key, slot) in [
                ("compaction.url", &mut self.compaction.url as &mut dyn Clear),
                ("compaction.urls", &mut self.compaction.urls),
                ("compaction.timeout_ms", &mut self.compaction.timeout_ms),
                ("compaction.fallback", &mut self.compaction.fallback),
                ("compaction.database", &mut self.compaction.database),
            ] {
                if inherited(key, "compaction.kind") {
                    slot.clear();
                }
            }
        }
        if self.memtable.kind != MemtableKind::Sharded
            && inherited("memtable.shards", "memtable.kind")
        {
            self.memtable.shards = None;
        }
        self.storage
            .drop_foreign(|key| inherited(&format!("storage.{key}"), "storage.kind"));
    }

    /// Rejects values and pairings no component can work with.
    fn validate(&self, source: &str) -> Result<(), ConfigError> {
        let bad = |key: &str, why: String| {
            Err(ConfigError::new(
                format!("invalid config: key `{key}` in {source}: {why}"),
                Some(key.to_string()),
            ))
        };
        let not_for = |key: &str, kind: &str| {
            bad(
                key,
                format!("does not apply to {kind}; remove it or change the kind"),
            )
        };
        let j = &self.journal;
        let journal_kind = match j.kind {
            JournalKind::File => "journal.kind = \"file\"",
            JournalKind::Memory => "journal.kind = \"memory\"",
            JournalKind::Grpc => "journal.kind = \"grpc\"",
            JournalKind::Object => "journal.kind = \"object\"",
        };
        const OBJECT: &[JournalKind] = &[JournalKind::Object];
        const REMOTE: &[JournalKind] = &[JournalKind::Grpc, JournalKind::Object];
        for (set, key, kinds) in [
            (j.dir.is_some(), "journal.dir", &[JournalKind::File][..]),
            (j.sync.is_some(), "journal.sync", &[JournalKind::File]),
            (
                j.segment_bytes.is_some(),
                "journal.segment_bytes",
                &[JournalKind::File],
            ),
            (j.url.is_some(), "journal.url", REMOTE),
            (j.timeout_ms.is_some(), "journal.timeout_ms", REMOTE),
            (j.endpoint.is_some(), "journal.endpoint", OBJECT),
            (j.region.is_some(), "journal.region", OBJECT),
            (j.access_key_id.is_some(), "journal.access_key_id", OBJECT),
            (
                j.secret_access_key.is_some(),
                "journal.secret_access_key",
                OBJECT,
            ),
            (j.allow_http.is_some(), "journal.allow_http", OBJECT),
            (
                j.max_object_bytes.is_some(),
                "journal.max_object_bytes",
                OBJECT,
            ),
            (
                j.commit_delay_ms.is_some(),
                "journal.commit_delay_ms",
                OBJECT,
            ),
            (j.retry_for_ms.is_some(), "journal.retry_for_ms", OBJECT),
            (
                j.commits_in_flight.is_some(),
                "journal.commits_in_flight",
                OBJECT,
            ),
            (j.probe_ms.is_some(), "journal.probe_ms", OBJECT),
            (
                j.database.is_some(),
                "journal.database",
                &[JournalKind::Grpc],
            ),
        ] {
            if set && !kinds.contains(&j.kind) {
                return not_for(key, journal_kind);
            }
        }
        if j.kind == JournalKind::Grpc
            && let Err(why) = check_server_url(j.url.as_deref())
        {
            return bad("journal.url", why);
        }
        if let Some(d) = &j.database
            && let Err(e) = cairn_rpc::check_database_name(d)
        {
            return bad("journal.database", e.to_string());
        }
        if j.segment_bytes == Some(0) {
            return bad("journal.segment_bytes", "must be greater than 0".into());
        }
        if j.max_object_bytes == Some(0) {
            return bad("journal.max_object_bytes", "must be greater than 0".into());
        }
        if let Some(n) = j.commits_in_flight
            && !(1..=cairn_journal::MAX_COMMITS_IN_FLIGHT).contains(&n)
        {
            return bad(
                "journal.commits_in_flight",
                format!(
                    "must be from 1 to {}, got {n}",
                    cairn_journal::MAX_COMMITS_IN_FLIGHT
                ),
            );
        }
        if j.kind == JournalKind::Object
            && let Err(e) =
                cairn_filestore::check_object_url(&self.journal_store_options().url, "journal")
        {
            return bad("journal.url", e.to_string());
        }
        if self.memtable.shards.is_some() {
            match self.memtable.kind {
                MemtableKind::Sharded => {}
                MemtableKind::SingleLock => {
                    return not_for("memtable.shards", "memtable.kind = \"single_lock\"");
                }
                MemtableKind::SkipList => {
                    return not_for("memtable.shards", "memtable.kind = \"skiplist\"");
                }
            }
        }
        if let Some(listen) = &self.metrics.listen
            && let Err(e) = listen.parse::<std::net::SocketAddr>()
        {
            return bad(
                "metrics.listen",
                format!("`{listen}` is not host:port ({e})"),
            );
        }
        if self.memtable.shards == Some(0) {
            return bad("memtable.shards", "must be at least 1".into());
        }
        if let Err((key, why)) = self.storage.validate("storage", false) {
            return bad(&key, why);
        }
        let c = &self.compaction;
        if c.kind == CompactionKind::Local {
            for (set, key) in [
                (c.url.is_some(), "compaction.url"),
                (!c.urls.is_empty(), "compaction.urls"),
                (c.timeout_ms.is_some(), "compaction.timeout_ms"),
                (c.fallback.is_some(), "compaction.fallback"),
                (c.database.is_some(), "compaction.database"),
            ] {
                if set {
                    return not_for(key, "compaction.kind = \"local\"");
                }
            }
        } else if !c.urls.is_empty() {
            if c.url.is_some() {
                return bad(
                    "compaction.urls",
                    "name the servers in `url` or in `urls`, not both".into(),
                );
            }
            for (i, u) in c.urls.iter().enumerate() {
                if let Err(why) = check_server_url(Some(u)) {
                    return bad(&format!("compaction.urls[{i}]"), why);
                }
            }
        } else if let Err(why) = check_server_url(c.url.as_deref()) {
            return bad("compaction.url", why);
        }
        if c.slots == Some(0) {
            return bad("compaction.slots", "must be at least 1".into());
        }
        if let Some(d) = &c.database
            && let Err(e) = cairn_rpc::check_database_name(d)
        {
            return bad("compaction.database", e.to_string());
        }
        if let Some(s) = &c.storage
            && let Err((key, why)) = s.validate("compaction.storage", false)
        {
            return bad(&key, why);
        }
        if self.rpc.tls_cert.is_some() != self.rpc.tls_key.is_some() {
            return bad(
                "rpc.tls_cert",
                "a server needs both rpc.tls_cert and rpc.tls_key, or neither".into(),
            );
        }
        if let Some(r) = &self.router
            && let Err((key, why)) = r.validate()
        {
            return bad(&key, why);
        }
        if let Some(c) = &self.cluster
            && let Err((key, why)) = c.validate(self)
        {
            return bad(&key, why);
        }
        if c.levels < 2 {
            return bad(
                "compaction.levels",
                format!("must be at least 2, got {}", c.levels),
            );
        }
        if c.l0_trigger == 0 {
            return bad("compaction.l0_trigger", "must be at least 1".into());
        }
        if c.subcompactions == 0 || c.subcompactions > 64 {
            return bad(
                "compaction.subcompactions",
                format!("must be from 1 to 64, got {}", c.subcompactions),
            );
        }
        if c.level_size_ratio < 2 {
            return bad("compaction.level_size_ratio", "must be at least 2".into());
        }
        if c.target_table_bytes == 0 || c.base_level_bytes == 0 {
            return bad(
                "compaction.target_table_bytes",
                "sizes must be greater than 0".into(),
            );
        }
        for t in &self.rpc.scoped_tokens {
            if t.token.is_empty() || t.databases.is_empty() {
                return bad(
                    "rpc.scoped_tokens",
                    "each needs a token and at least one database".into(),
                );
            }
            if let Some(e) = t
                .databases
                .iter()
                .find_map(|d| cairn_rpc::check_database_name(d).err())
            {
                return bad("rpc.scoped_tokens", e.to_string());
            }
        }
        let e = &self.engine;
        if e.l0_stop_writes <= c.l0_trigger {
            return bad(
                "engine.l0_stop_writes",
                format!(
                    "must be above compaction.l0_trigger ({}), or writes would stop before compaction starts",
                    c.l0_trigger
                ),
            );
        }
        if e.memtable_bytes == 0 {
            return bad("engine.memtable_bytes", "must be greater than 0".into());
        }
        if e.max_immutable_memtables == 0 {
            return bad(
                "engine.max_immutable_memtables",
                "must be at least 1".into(),
            );
        }
        if e.write_groups_in_flight == 0 {
            return bad("engine.write_groups_in_flight", "must be at least 1".into());
        }
        if let Err((key, why)) = self.values.check() {
            return bad(&format!("values.{key}"), why);
        }
        Ok(())
    }

    /// The config with every default spelled out, as `cairn config show` prints it.
    pub fn resolved(&self) -> Config {
        let mut c = self.clone();
        if c.journal.kind == JournalKind::File {
            let d = cairn_journal::FileJournalOptions::new(self.journal_dir());
            c.journal.dir = Some(self.journal_dir());
            c.journal.sync.get_or_insert(d.sync);
            c.journal.segment_bytes.get_or_insert(d.segment_bytes);
        }
        if c.journal.kind == JournalKind::Object {
            let store = self.journal_store_options();
            let o = self.object_journal_options();
            c.journal.url = Some(store.url);
            c.journal.timeout_ms = Some(store.timeout_ms);
            c.journal.allow_http = Some(store.allow_http);
            c.journal.max_object_bytes = Some(o.max_object_bytes);
            c.journal.commit_delay_ms = Some(o.commit_delay.as_millis() as u64);
            c.journal.retry_for_ms = Some(o.retry_for.as_millis() as u64);
            c.journal.commits_in_flight = Some(o.commits_in_flight);
            c.journal.probe_ms = Some(o.probe.as_millis() as u64);
            if c.journal.secret_access_key.is_some() {
                c.journal.secret_access_key = Some("(set)".into());
            }
        }
        if c.memtable.kind == MemtableKind::Sharded {
            c.memtable.shards.get_or_insert(32);
        }
        c.storage = self.storage.resolved(&self.data_dir);
        if c.compaction.kind == CompactionKind::Grpc {
            c.compaction
                .timeout_ms
                .get_or_insert(c.rpc.timeout_ms.unwrap_or(10_000));
            c.compaction.fallback.get_or_insert_default();
        }
        if let Some(s) = &self.compaction.storage {
            c.compaction.storage = Some(s.resolved(&self.data_dir));
        }
        c.rpc = self.rpc.resolved();
        if let Some(r) = &mut c.router {
            r.import_table_bytes
                .get_or_insert(cairn_router::IMPORT_TABLE_BYTES);
        }
        c
    }

    /// Where an object journal lives and how to reach it.
    pub fn journal_store_options(&self) -> cairn_filestore::ObjectStoreOptions {
        let j = &self.journal;
        let url = j.url.clone().unwrap_or_else(|| {
            let dir = self.data_dir.join("journal-objects");
            format!(
                "file://{}",
                std::path::absolute(&dir).unwrap_or(dir).display()
            )
        });
        let d = cairn_filestore::ObjectStoreOptions::new(url);
        cairn_filestore::ObjectStoreOptions {
            endpoint: j.endpoint.clone(),
            region: j.region.clone(),
            access_key_id: j.access_key_id.clone(),
            secret_access_key: j.secret_access_key.clone(),
            allow_http: j.allow_http.unwrap_or(d.allow_http),
            timeout_ms: j.timeout_ms.unwrap_or(d.timeout_ms),
            ..d
        }
    }

    /// How an object journal commits.
    pub fn object_journal_options(&self) -> cairn_journal::ObjectJournalOptions {
        let j = &self.journal;
        let d = cairn_journal::ObjectJournalOptions::default();
        cairn_journal::ObjectJournalOptions {
            max_object_bytes: j.max_object_bytes.unwrap_or(d.max_object_bytes),
            commit_delay: j
                .commit_delay_ms
                .map_or(d.commit_delay, std::time::Duration::from_millis),
            retry_for: j
                .retry_for_ms
                .map_or(d.retry_for, std::time::Duration::from_millis),
            commits_in_flight: j.commits_in_flight.unwrap_or(d.commits_in_flight),
            probe: j.probe_ms.map_or(d.probe, std::time::Duration::from_millis),
        }
    }

    pub fn journal_dir(&self) -> PathBuf {
        self.journal
            .dir
            .clone()
            .unwrap_or_else(|| self.data_dir.join("journal"))
    }

    /// The SSTable options of the top-level storage section (for tools that assume one).
    pub fn sst_options(&self) -> cairn_filestore::SstOptions {
        self.storage.sst_options(&self.data_dir)
    }

    pub fn engine_options(&self) -> EngineOptions {
        let mut e = self.engine.clone();
        e.compaction = self.compaction.picker();
        e
    }

    pub fn to_toml(&self) -> Result<String, ConfigError> {
        toml::to_string_pretty(self)
            .map_err(|e| ConfigError::new(format!("cannot print config: {e}"), None))
    }
}

fn is_default<T: Default + PartialEq>(t: &T) -> bool {
    *t == T::default()
}

/// A gRPC server URL: `http://host:port` or `https://host:port`.
pub(crate) fn check_server_url(url: Option<&str>) -> Result<(), String> {
    match url {
        None => Err("a grpc component needs its server's url".into()),
        Some(u) if u.starts_with("http://") || u.starts_with("https://") => Ok(()),
        Some(u) => Err(format!(
            "`{u}` is not http://host:port or https://host:port"
        )),
    }
}

trait Clear {
    fn clear(&mut self);
}

impl<T> Clear for Option<T> {
    fn clear(&mut self) {
        *self = None;
    }
}

impl<T> Clear for Vec<T> {
    fn clear(&mut self) {
        Vec::clear(self);
    }
}

/// Turns figment's errors into one message naming each key and its source (file or
/// environment variable).
fn describe(errs: figment::Error, profile: &str) -> ConfigError {
    let mut lines = Vec::new();
    let mut first_key = None;
    for e in errs {
        let mut path = e.path.clone();
        let named = match &e.kind {
            figment::error::Kind::UnknownField(field, _) => Some(field.clone()),
            figment::error::Kind::MissingField(field) => Some(field.to_string()),
            _ => None,
        };
        if let Some(field) = named
            && path.last() != Some(&field)
        {
            path.push(field);
        }
        let key = path.join(".");
        first_key.get_or_insert_with(|| key.clone());
        let source = match &e.metadata {
            Some(md) => match &md.source {
                Some(figment::Source::File(f)) => format!("{} (profile `{profile}`)", f.display()),
                Some(other) => other.to_string(),
                None => format!(
                    "environment variable CAIRN_{}",
                    path.join("__").to_uppercase()
                ),
            },
            None => format!("profile `{profile}` (a required key is missing)"),
        };
        let key = if key.is_empty() {
            "(top level)".to_string()
        } else {
            key
        };
        lines.push(format!(
            "invalid config: key `{key}` in {source}: {}",
            e.kind
        ));
    }
    ConfigError::new(lines.join("\n"), first_key)
}

#[cfg(test)]
mod tests;
