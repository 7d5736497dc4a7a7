//! Who is who in a cluster. A cluster gets a random id when its router first opens, recorded
//! with its shard count and partitioning scheme in `<router data_dir>/CLUSTER`; each shard
//! records which shard of which cluster it is in `<shard data_dir>/SHARD`, taken on first
//! contact. From then on a router whose shard list changed count or order is refused: a
//! shard asked to be shard 1 that knows it is shard 2 says so. Both files are JSON, written
//! to a temporary file, synced and renamed, so a crash leaves the old one or the new one.

use crate::partition::SCHEME;
use cairn_common::{Error, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// Which shard of which cluster. In a cluster placed by a map (`map`), `count` is 0, `index`
/// the shard's id and `generation` its count of owner changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardIdentity {
    pub cluster: u64,
    pub index: u32,
    pub count: u32,
    #[serde(default)]
    pub generation: u64,
}

impl std::fmt::Display for ShardIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.count == 0 {
            return write!(
                f,
                "shard {} (generation {}) in cluster {:016x}",
                self.index, self.generation, self.cluster
            );
        }
        write!(
            f,
            "shard {} of {} in cluster {:016x}",
            self.index, self.count, self.cluster
        )
    }
}

/// What a router records about its cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cluster {
    pub cluster: u64,
    pub shards: u32,
    pub partitioning: String,
}

const CLUSTER_FILE: &str = "CLUSTER";
const SHARD_FILE: &str = "SHARD";

impl Cluster {
    /// The cluster recorded in `dir`, or a new one of `shards` shards. An existing cluster
    /// with another shard count or scheme is refused.
    pub fn open_or_create(dir: &Path, shards: u32) -> Result<Cluster> {
        let path = dir.join(CLUSTER_FILE);
        if let Some(c) = load::<Cluster>(&path)? {
            if c.partitioning != SCHEME {
                return Err(Error::InvalidArgument(format!(
                    "{} was created with partitioning `{}`; this version routes with `{SCHEME}`",
                    path.display(),
                    c.partitioning
                )));
            }
            if c.shards != shards {
                return Err(Error::InvalidArgument(format!(
                    "the cluster in {} was created with {} shards and the config lists {shards}: \
                     a cluster's shard count is fixed when it is created (changing it would \
                     move most keys to other shards)",
                    path.display(),
                    c.shards
                )));
            }
            return Ok(c);
        }
        let c = Cluster {
            cluster: rand::random::<u64>(),
            shards,
            partitioning: SCHEME.to_string(),
        };
        cairn_common::durable::create_dir_durably(dir)?;
        store(&path, &c)?;
        tracing::info!(cluster = %format!("{:016x}", c.cluster), shards, "created a cluster");
        Ok(c)
    }

    pub fn identity(&self, index: u32) -> ShardIdentity {
        ShardIdentity {
            cluster: self.cluster,
            index,
            count: self.shards,
            generation: 0,
        }
    }
}

/// The identity a shard's data directory holds, taken on first claim and checked on every
/// later one (one load of an atomic once taken).
pub struct IdentitySlot {
    path: PathBuf,
    taken: OnceLock<ShardIdentity>,
    writing: parking_lot::Mutex<()>,
}

impl IdentitySlot {
    pub fn open(dir: &Path) -> Result<IdentitySlot> {
        let path = dir.join(SHARD_FILE);
        let taken = OnceLock::new();
        if let Some(id) = load::<ShardIdentity>(&path)? {
            let _ = taken.set(id);
        }
        Ok(IdentitySlot {
            path,
            taken,
            writing: parking_lot::Mutex::new(()),
        })
    }

    pub fn get(&self) -> Option<ShardIdentity> {
        self.taken.get().copied()
    }

    /// Succeeds if this shard is `want`, becoming it if it is no shard yet.
    pub fn claim(&self, want: ShardIdentity) -> Result<()> {
        if let Some(have) = self.taken.get() {
            return check(*have, want, &self.path);
        }
        let _one = self.writing.lock();
        if let Some(have) = self.taken.get() {
            return check(*have, want, &self.path);
        }
        store(&self.path, &want)?;
        let _ = self.taken.set(want);
        tracing::info!(identity = %want, "this data directory is now a shard");
        Ok(())
    }
}

fn check(have: ShardIdentity, want: ShardIdentity, path: &Path) -> Result<()> {
    if have == want {
        return Ok(());
    }
    let why = if have.cluster != want.cluster {
        "it belongs to another cluster"
    } else if have.count != want.count {
        "the shard count changed"
    } else {
        "the shard list's order changed"
    };
    Err(Error::InvalidArgument(format!(
        "refused: this is {have} (per {}), but the router expects {want}: {why}",
        path.display()
    )))
}

fn load<T: serde::de::DeserializeOwned>(path: &Path) -> Result<Option<T>> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| Error::corruption(path.display().to_string(), e.to_string())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io(path, e)),
    }
}

fn store<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let text = serde_json::to_vec_pretty(value)
        .map_err(|e| Error::InvalidArgument(format!("cannot encode {}: {e}", path.display())))?;
    cairn_common::durable::replace_file(path, &text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cluster_keeps_its_id_and_refuses_another_count() {
        let dir = tempfile::tempdir().unwrap();
        let a = Cluster::open_or_create(dir.path(), 3).unwrap();
        let b = Cluster::open_or_create(dir.path(), 3).unwrap();
        assert_eq!(a, b);
        let e = Cluster::open_or_create(dir.path(), 4)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("created with 3 shards") && e.contains("lists 4"),
            "{e}"
        );
    }

    #[test]
    fn a_shard_takes_its_identity_once_and_refuses_another() {
        let dir = tempfile::tempdir().unwrap();
        let c = Cluster::open_or_create(dir.path(), 3).unwrap();
        let slot = IdentitySlot::open(dir.path()).unwrap();
        assert_eq!(slot.get(), None);
        slot.claim(c.identity(1)).unwrap();
        slot.claim(c.identity(1)).unwrap();
        let e = slot.claim(c.identity(2)).unwrap_err().to_string();
        assert!(e.contains("order changed"), "{e}");
        // It survives a reopen.
        let slot = IdentitySlot::open(dir.path()).unwrap();
        assert_eq!(slot.get(), Some(c.identity(1)));
        let other = ShardIdentity {
            cluster: c.cluster ^ 1,
            ..c.identity(1)
        };
        let e = slot.claim(other).unwrap_err().to_string();
        assert!(e.contains("another cluster"), "{e}");
    }

    #[test]
    fn a_damaged_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("SHARD"), b"{not json").unwrap();
        let e = IdentitySlot::open(dir.path()).err().unwrap().to_string();
        assert!(e.contains("SHARD") && e.contains("corruption"), "{e}");
    }
}
