//! The `[router]` section: a profile with one spreads its keys over the shards it lists, in
//! order. A `local` shard is a full engine in this process, built from the profile's own
//! component sections under `<data_dir>/shard-<i>`; a `grpc` shard is a shard server
//! (`cairn serve shard`). The list's length and order are fixed when the cluster is created.

use super::{Config, JournalKind, StorageKind, StorageSection};
use crate::config::CompactionKind;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum ShardKind {
    /// A `Db` in this process, called directly.
    #[default]
    Local,
    /// A shard server, over gRPC.
    Grpc,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShardSection {
    #[serde(default)]
    pub kind: ShardKind,
    /// grpc: the shard server, `http://host:port`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// grpc: deadline of one call in ms (default `rpc.timeout_ms`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// Read replicas of this shard (`cairn serve shard --read-only` servers following it),
    /// `http://host:port` each: gets, scans and aggregates take turns over the shard and
    /// these, and may be a poll interval behind the shard.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub replicas: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouterSection {
    /// The shards, in partition order: `{ kind = "local" }` or `{ kind = "grpc", url = ... }`.
    pub shards: Vec<ShardSection>,
    /// Bytes of entries a local shard gathers into one table during a bulk import
    /// (default 64 MiB).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub import_table_bytes: Option<usize>,
}

impl RouterSection {
    pub(super) fn validate(&self) -> Result<(), (String, String)> {
        let bad = |key: String, why: &str| Err((key, why.to_string()));
        if self.shards.is_empty() {
            return bad("router.shards".into(), "a router needs at least one shard");
        }
        if self.shards.len() > u32::MAX as usize {
            return bad("router.shards".into(), "too many shards");
        }
        for (i, s) in self.shards.iter().enumerate() {
            let at = |k: &str| format!("router.shards[{i}].{k}");
            match s.kind {
                ShardKind::Local => {
                    if s.url.is_some() {
                        return bad(at("url"), "does not apply to a local shard");
                    }
                    if s.timeout_ms.is_some() {
                        return bad(at("timeout_ms"), "does not apply to a local shard");
                    }
                }
                ShardKind::Grpc => {
                    if let Err(why) = super::check_server_url(s.url.as_deref()) {
                        return Err((at("url"), why));
                    }
                }
            }
            for (j, url) in s.replicas.iter().enumerate() {
                if let Err(why) = super::check_server_url(Some(url)) {
                    return Err((format!("router.shards[{i}].replicas[{j}]"), why));
                }
            }
        }
        if self.import_table_bytes == Some(0) {
            return bad("router.import_table_bytes".into(), "must be greater than 0");
        }
        Ok(())
    }

    pub fn local_count(&self) -> usize {
        self.shards
            .iter()
            .filter(|s| s.kind == ShardKind::Local)
            .count()
    }
}

/// A shard's database on a shared server: `shard-<i>`, after the profile's own name if any.
fn sub_database(base: &Option<String>, sub: &str) -> String {
    match base {
        Some(b) => format!("{b}-{sub}"),
        None => sub.to_string(),
    }
}

/// The directory under `data_dir` that holds shard `index`.
pub fn shard_dir_name(index: u32) -> String {
    format!("shard-{index}")
}

impl Config {
    /// The config of shard `index`'s engine: this profile's components, with every path and
    /// object prefix moved into the shard's own `shard-<index>` subdirectory.
    pub fn shard_config(&self, index: u32) -> Config {
        self.shard_config_in(&shard_dir_name(index))
    }

    /// The same components one level down, under `sub`: their own directories, Parquet
    /// prefixes, and databases on shared servers.
    pub fn shard_config_in(&self, sub: &str) -> Config {
        let sub = sub.to_string();
        let mut c = self.clone();
        c.router = None;
        c.data_dir = self.data_dir.join(&sub);
        c.reader_dir = self.reader_dir.as_ref().map(|d| d.join(&sub));
        c.journal.dir = self.journal.dir.as_ref().map(|d| d.join(&sub));
        if self.journal.kind == JournalKind::Grpc {
            c.journal.database = Some(sub_database(&self.journal.database, &sub));
        }
        // An object journal is one per database: shards sharing one would fence each other.
        if self.journal.kind == JournalKind::Object {
            c.journal.url = self
                .journal
                .url
                .as_ref()
                .map(|u| format!("{}/{sub}", u.trim_end_matches('/')));
        }
        c.storage = self.storage.in_subdir(&sub);
        if self.compaction.kind == CompactionKind::Grpc {
            c.compaction.database = Some(sub_database(&self.compaction.database, &sub));
        }
        c.compaction.storage = self.compaction.storage.as_ref().map(|s| s.in_subdir(&sub));
        c
    }
}

impl StorageSection {
    /// The same storage with its explicit directory and Parquet URL one level deeper, so
    /// shards sharing a profile do not share tables. Defaults derive from `data_dir` already.
    fn in_subdir(&self, sub: &str) -> StorageSection {
        let mut s = self.clone();
        s.dir = self.dir.as_ref().map(|d: &PathBuf| d.join(sub));
        if self.kind == StorageKind::Parquet {
            s.url = self
                .url
                .as_ref()
                .map(|u| format!("{}/{sub}", u.trim_end_matches('/')));
        }
        if self.kind == StorageKind::Grpc {
            s.database = Some(sub_database(&self.database, sub));
        }
        s.primary = self.primary.as_ref().map(|p| Box::new(p.in_subdir(sub)));
        s.secondary = self.secondary.as_ref().map(|p| Box::new(p.in_subdir(sub)));
        s
    }
}
