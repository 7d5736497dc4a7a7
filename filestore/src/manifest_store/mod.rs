//! Where a database's manifest lives: numbered versions stored beside its tables, each
//! created only if absent, so two writers can never both install the same version.
//!
//! The store knows nothing of what a version holds (the engine's manifest log encodes edits
//! and checkpoints); it gives the one primitive the log needs: an atomic create-if-absent.

mod dir;
mod object;

pub use dir::DirManifestStore;
pub use object::ObjectManifestStore;

use async_trait::async_trait;
use bytes::Bytes;
use cairn_common::Result;

/// A manifest version's number; the first is 1.
pub type ManifestVersion = u64;

#[async_trait]
pub trait ManifestStore: Send + Sync + 'static {
    /// The numbers of every stored version, ascending.
    async fn list(&self) -> Result<Vec<ManifestVersion>>;

    /// Version `n`, or `None` if there is none (never written, or deleted).
    async fn read(&self, n: ManifestVersion) -> Result<Option<Bytes>>;

    /// Stores version `n` if there is none yet: `true` if this call created it, `false` if
    /// it was there already (another writer's, or this writer's from an attempt whose answer
    /// was lost). Atomic and durable when it returns: readers see all of it or nothing.
    async fn create(&self, n: ManifestVersion, data: Bytes) -> Result<bool>;

    /// Removes version `n`; removing one that is not there is not an error.
    async fn delete(&self, n: ManifestVersion) -> Result<()>;

    /// Where the versions live, for messages: a directory, a URL, a server.
    fn location(&self) -> String;
}

/// The object or file name of version `n`: sorts in version order.
pub fn version_name(n: ManifestVersion) -> String {
    format!("{n:020}.manifest")
}

/// The version a file or object name holds, if it is one.
pub fn parse_version_name(name: &str) -> Option<ManifestVersion> {
    let digits = name.strip_suffix(".manifest")?;
    (digits.len() == 20 && digits.bytes().all(|b| b.is_ascii_digit()))
        .then(|| digits.parse().ok())?
}

/// The folder, beside a store's tables, that holds its manifest versions.
pub const MANIFEST_DIR: &str = "manifest";
