//! Manifest versions as files in a local directory (beside an SSTable store's tables).
//! Create-if-absent is a hard link of a fully written and synced temporary file: the link
//! fails if the name exists, and a reader never sees a half-written version.

use super::{ManifestStore, ManifestVersion, parse_version_name, version_name};
use async_trait::async_trait;
use bytes::Bytes;
use cairn_common::{Error, IoContext, Result};
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

pub struct DirManifestStore {
    dir: PathBuf,
}

/// Names temporary files apart between the writers of one process; other processes differ
/// by pid.
static TMP_SEQ: AtomicU64 = AtomicU64::new(0);

impl DirManifestStore {
    /// The versions in `dir`, created (with its parent entry synced) if missing.
    pub fn open(dir: impl Into<PathBuf>) -> Result<Self> {
        let dir = dir.into();
        cairn_common::durable::create_dir_durably(&dir)?;
        Ok(DirManifestStore { dir })
    }

    /// The store at `dir` without creating anything: a missing directory holds no versions,
    /// and is made by the first version created (where a clone goes, or a store that a
    /// check only reads).
    pub fn at(dir: impl Into<PathBuf>) -> Self {
        DirManifestStore { dir: dir.into() }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path(&self, n: ManifestVersion) -> PathBuf {
        self.dir.join(version_name(n))
    }
}

#[async_trait]
impl ManifestStore for DirManifestStore {
    async fn list(&self) -> Result<Vec<ManifestVersion>> {
        let mut out = Vec::new();
        let listing = match std::fs::read_dir(&self.dir) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
            listing => listing.at(&self.dir)?,
        };
        for ent in listing {
            let ent = ent.at(&self.dir)?;
            if let Some(n) = ent.file_name().to_str().and_then(parse_version_name) {
                out.push(n);
            }
        }
        out.sort_unstable();
        Ok(out)
    }

    async fn read(&self, n: ManifestVersion) -> Result<Option<Bytes>> {
        let path = self.path(n);
        match std::fs::read(&path) {
            Ok(d) => Ok(Some(d.into())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io(path, e)),
        }
    }

    async fn create(&self, n: ManifestVersion, data: Bytes) -> Result<bool> {
        let (dir, path) = (self.dir.clone(), self.path(n));
        let tmp = self.dir.join(format!(
            "{}.{}.{}.tmp",
            version_name(n),
            std::process::id(),
            TMP_SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        // Off the async worker, as its fsyncs may wait on a busy disk.
        tokio::task::spawn_blocking(move || create_linked(&dir, &tmp, &path, &data))
            .await
            .map_err(|e| Error::component(format!("manifest store {}", self.dir.display()), e))?
    }

    async fn delete(&self, n: ManifestVersion) -> Result<()> {
        let path = self.path(n);
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io(path, e)),
        }
    }

    fn location(&self) -> String {
        self.dir.display().to_string()
    }
}

/// Writes `data` to `tmp`, syncs it and links it in as `path` unless `path` exists (false).
fn create_linked(dir: &Path, tmp: &Path, path: &Path, data: &[u8]) -> Result<bool> {
    if !dir.is_dir() {
        cairn_common::durable::create_dir_durably(dir)?;
    }
    let written = (|| {
        let mut f = File::create(tmp)?;
        f.write_all(data)?;
        f.sync_all()
    })()
    .at(tmp);
    let linked = written.and_then(|()| match std::fs::hard_link(tmp, path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(Error::io(path, e)),
    });
    let _ = std::fs::remove_file(tmp);
    let created = linked?;
    if created {
        cairn_common::durable::sync_dir(dir)?;
    }
    Ok(created)
}
