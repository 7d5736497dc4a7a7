//! Making local files and directories durable: the fsyncs a crash-safe write needs, in one
//! place (a created or renamed entry is durable only once its directory is synced).

use crate::{IoContext, Result};
use std::fs::File;
use std::io::Write;
use std::path::Path;

pub fn sync_file(path: &Path) -> Result<()> {
    File::open(path).and_then(|f| f.sync_all()).at(path)
}

pub fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir).and_then(|d| d.sync_all()).at(dir)
}

/// Creates `dir` and any missing parents, syncing each parent whose entry was added.
pub fn create_dir_durably(dir: &Path) -> Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        create_dir_durably(parent)?;
    }
    match std::fs::create_dir(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Ok(()),
        Err(e) => return Err(crate::Error::io(dir, e)),
    }
    match dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        Some(parent) => sync_dir(parent),
        None => Ok(()),
    }
}

/// Replaces `path` with `data` so that a crash leaves the old or the new content, never a
/// mix: written to a temporary file beside it, synced, renamed over it, directory synced.
pub fn replace_file(path: &Path, data: &[u8]) -> Result<()> {
    let mut tmp_name = path.as_os_str().to_owned();
    tmp_name.push(".tmp");
    let tmp = Path::new(&tmp_name);
    let mut f = File::create(tmp).at(tmp)?;
    f.write_all(data).at(tmp)?;
    f.sync_all().at(tmp)?;
    rename_durably(tmp, path)
}

/// Renames a synced `from` over `to` and syncs the directory, so the new name survives a
/// crash: the last step of every write-then-rename.
pub fn rename_durably(from: &Path, to: &Path) -> Result<()> {
    std::fs::rename(from, to).at(to)?;
    match to.parent().filter(|p| !p.as_os_str().is_empty()) {
        Some(dir) => sync_dir(dir),
        None => sync_dir(Path::new(".")),
    }
}
