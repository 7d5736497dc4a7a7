//! The manifest as a log of numbered versions in a [`ManifestStore`], RocksDB's MANIFEST and
//! SlateDB's numbered manifests in one: version 1 is a checkpoint (the whole state), each later
//! version an edit, and every [`CHECKPOINT_EVERY`] versions a checkpoint again, after which
//! the versions before it are deleted. A reader starts at the newest checkpoint.
//!
//! Every version is created only if absent, so of two writers only one installs version n.
//! Opening as the writer appends an epoch bump; a writer that finds its next version taken
//! has been replaced by a newer epoch and is fenced: it writes nothing more.

use super::record::{Body, Record};
use super::{Manifest, VersionEdit};
use bytes::Bytes;
use cairn_common::{Error, Result, TableId};
use cairn_filestore::{ManifestStore, ManifestVersion};
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

/// A checkpoint is written when this many versions have passed since the last one.
pub const CHECKPOINT_EVERY: u64 = 64;

/// Table ids are reserved this many beyond what a job asks for, so most jobs find theirs
/// reserved already and reserving costs one manifest write per many tables.
const RESERVE_AHEAD: u64 = 64;

/// Attempts at one version before its outcome counts as unknown.
const WRITE_ATTEMPTS: u32 = 5;

/// The newest state in a store, and where it stands in the log.
pub struct Loaded {
    pub state: Manifest,
    pub version: ManifestVersion,
    pub checkpoint: ManifestVersion,
}

/// Reads the newest state: the newest checkpoint and the edits after it; `None` if the store
/// holds no version. A version deleted while this read (a writer's checkpoint made it garbage)
/// starts the read again.
pub async fn load(store: &dyn ManifestStore) -> Result<Option<Loaded>> {
    let mut vanished = None;
    for _ in 0..WRITE_ATTEMPTS {
        match load_once(store).await? {
            Ok(loaded) => return Ok(loaded),
            Err(missing) => vanished = Some(missing),
        }
    }
    let n = vanished.unwrap_or_default();
    Err(Error::corruption(
        format!("manifest at {}", store.location()),
        format!("version {n} is missing between the newest checkpoint and the newest version"),
    ))
}

/// `Err(n)` inside when version n was listed or needed but not found.
async fn load_once(
    store: &dyn ManifestStore,
) -> Result<std::result::Result<Option<Loaded>, ManifestVersion>> {
    let versions = store.list().await?;
    let Some(&newest) = versions.last() else {
        return Ok(Ok(None));
    };
    let what = |n| format!("manifest version {n} at {}", store.location());
    let mut edits = Vec::new();
    let mut n = newest;
    let (checkpoint, base) = loop {
        let Some(data) = store.read(n).await? else {
            return Ok(Err(n));
        };
        let rec = Record::decode(&data, &what(n))?;
        match rec.body {
            Body::Checkpoint(m) => {
                if m.database != rec.database {
                    return Err(Error::corruption(what(n), "checkpoint of another database"));
                }
                break (n, m);
            }
            Body::Edit(e) => edits.push((n, rec.database, rec.epoch, e)),
        }
        if n <= 1 {
            return Err(Error::corruption(what(n), "no checkpoint before it"));
        }
        n -= 1;
    };
    let mut state = base;
    for (n, database, epoch, edit) in edits.into_iter().rev() {
        if database != state.database {
            return Err(Error::corruption(
                what(n),
                format!(
                    "edit of database {database} in the log of {}",
                    state.database
                ),
            ));
        }
        if epoch < state.epoch {
            return Err(Error::corruption(
                what(n),
                format!("epoch {epoch} after epoch {}", state.epoch),
            ));
        }
        state = state.apply(&edit);
        state.epoch = epoch;
    }
    Ok(Ok(Some(Loaded {
        state,
        version: newest,
        checkpoint,
    })))
}

enum Created {
    Ours,
    /// Another writer's version was there.
    Taken(Bytes),
}

/// Creates version `n`, retrying failures; finding its own bytes there (an earlier attempt
/// whose answer was lost) counts as created.
async fn create_version(
    store: &dyn ManifestStore,
    n: ManifestVersion,
    data: &Bytes,
) -> Result<Created> {
    let mut attempt = 0;
    loop {
        let failed = match store.create(n, data.clone()).await {
            Ok(true) => return Ok(Created::Ours),
            Ok(false) => match store.read(n).await {
                Ok(Some(d)) if d == *data => return Ok(Created::Ours),
                Ok(Some(d)) => return Ok(Created::Taken(d)),
                // Gone again already: only garbage collection deletes, and never the newest.
                Ok(None) => {
                    return Err(Error::corruption(
                        format!("manifest version {n} at {}", store.location()),
                        "refused as existing, then not found",
                    ));
                }
                Err(e) => e,
            },
            Err(e) => e,
        };
        attempt += 1;
        if attempt >= WRITE_ATTEMPTS {
            return Err(failed);
        }
        tracing::warn!(version = n, attempt, error = %failed, "manifest write failed; retrying");
        tokio::time::sleep(Duration::from_millis(20 << attempt)).await;
    }
}

/// The writer's end of the log.
pub struct ManifestLog {
    store: Arc<dyn ManifestStore>,
    state: Manifest,
    version: ManifestVersion,
    checkpoint: ManifestVersion,
    /// Ids from here up to `state.next_table_id` are reserved and not yet handed out.
    next_free_id: TableId,
    /// A version whose write failed without a definite answer: it may still land, so it is
    /// looked at before the next one is written.
    pending: Option<(ManifestVersion, Bytes)>,
    /// Why nothing more may be written: fenced, or a pending version that landed after all.
    stopped: Option<Error>,
    writer: u64,
}

impl ManifestLog {
    /// Opens the log as the database's writer, bumping the epoch, which fences the previous
    /// writer. With no version in the store, `create` gives the new database's first state
    /// (or the reason not to make one).
    pub async fn open_writer(
        store: Arc<dyn ManifestStore>,
        create: impl Fn() -> Result<Manifest>,
    ) -> Result<ManifestLog> {
        for _ in 0..16 {
            let (state, version, checkpoint) = match load(store.as_ref()).await? {
                None => (create()?, 1, 1),
                Some(l) => {
                    let mut state = l.state;
                    state.epoch += 1;
                    (state, l.version + 1, l.checkpoint)
                }
            };
            let is_checkpoint = version == 1 || version - checkpoint >= CHECKPOINT_EVERY;
            let body = if is_checkpoint {
                Body::Checkpoint(state.clone())
            } else {
                Body::Edit(VersionEdit::default())
            };
            let writer = rand::random();
            let data = Bytes::from(
                Record {
                    database: state.database.clone(),
                    epoch: state.epoch,
                    writer,
                    body,
                }
                .encode()?,
            );
            let checkpoint = if is_checkpoint { version } else { checkpoint };
            match create_version(store.as_ref(), version, &data).await? {
                Created::Ours => {
                    tracing::info!(
                        database = %state.database,
                        epoch = state.epoch,
                        version,
                        location = %store.location(),
                        "opened the manifest as writer"
                    );
                    return Ok(ManifestLog {
                        next_free_id: state.next_table_id,
                        store,
                        state,
                        version,
                        checkpoint,
                        pending: None,
                        stopped: None,
                        writer,
                    });
                }
                // Another writer opened or wrote in between: read again and go after it.
                Created::Taken(_) => continue,
            }
        }
        Err(Error::component(
            format!("manifest at {}", store.location()),
            "other writers kept taking the next version while this one opened",
        ))
    }

    pub fn state(&self) -> &Manifest {
        &self.state
    }

    pub fn version(&self) -> ManifestVersion {
        self.version
    }

    pub fn location(&self) -> String {
        self.store.location()
    }

    /// Writes `edit` as the next version and applies it to the state. Fails, changing
    /// nothing, when the store fails; fails for good when a newer writer has taken over.
    pub async fn commit(&mut self, edit: VersionEdit) -> Result<()> {
        if let Some(e) = &self.stopped {
            return Err(same(e));
        }
        if let Some((n, data)) = self.pending.take() {
            match self.store.read(n).await {
                Err(e) => {
                    self.pending = Some((n, data));
                    return Err(e);
                }
                Ok(None) => {}
                Ok(Some(d)) if d == data => {
                    return Err(self.stop(Error::component(
                        format!("manifest at {}", self.store.location()),
                        format!(
                            "version {n}, whose write had failed, landed after all; reopen the database to continue from it"
                        ),
                    )));
                }
                Ok(Some(d)) => return Err(self.stop(self.fenced(n, &d))),
            }
        }
        let next = self.state.apply(&edit);
        let n = self.version + 1;
        let checkpoint = n - self.checkpoint >= CHECKPOINT_EVERY;
        let body = if checkpoint {
            Body::Checkpoint(next.clone())
        } else {
            Body::Edit(edit)
        };
        let data = Bytes::from(
            Record {
                database: self.state.database.clone(),
                epoch: self.state.epoch,
                writer: self.writer,
                body,
            }
            .encode()?,
        );
        match create_version(self.store.as_ref(), n, &data).await {
            Ok(Created::Ours) => {}
            Ok(Created::Taken(d)) => return Err(self.stop(self.fenced(n, &d))),
            Err(e) => {
                self.pending = Some((n, data));
                return Err(e);
            }
        }
        self.state = next;
        self.version = n;
        if checkpoint {
            let garbage = self.checkpoint..n;
            self.checkpoint = n;
            let store = self.store.clone();
            // Versions before a checkpoint are never read again; a reader that listed them
            // and finds one gone starts over from the newer checkpoint.
            tokio::spawn(async move {
                for v in garbage {
                    if let Err(e) = store.delete(v).await {
                        tracing::warn!(version = v, error = %e, "deleting an old manifest version failed");
                        return;
                    }
                }
            });
        }
        Ok(())
    }

    /// Hands out `n` table ids no writer of this database ever had or will have, reserving
    /// more in the manifest first when the reserved ones run out.
    pub async fn reserve_ids(&mut self, n: u64) -> Result<Range<TableId>> {
        let end = self.next_free_id + n;
        if end > self.state.next_table_id {
            self.commit(VersionEdit {
                next_table_id: Some(end + RESERVE_AHEAD),
                ..VersionEdit::default()
            })
            .await?;
        }
        let ids = self.next_free_id..end;
        self.next_free_id = end;
        Ok(ids)
    }

    fn fenced(&self, n: ManifestVersion, theirs: &[u8]) -> Error {
        let by = match Record::decode(theirs, "") {
            Ok(r) if r.database != self.state.database => format!("database {}", r.database),
            Ok(r) => format!("epoch {}", r.epoch),
            Err(_) => "an unreadable version".to_string(),
        };
        Error::Fenced(format!(
            "database {}: this writer (epoch {}) was replaced by {by} at manifest version {n} in {}; it accepts no more changes",
            self.state.database,
            self.state.epoch,
            self.store.location()
        ))
    }

    fn stop(&mut self, e: Error) -> Error {
        let out = same(&e);
        self.stopped = Some(e);
        out
    }
}

/// A copy of a sticky error, for each caller that meets it.
fn same(e: &Error) -> Error {
    match e {
        Error::Fenced(m) => Error::Fenced(m.clone()),
        other => Error::component("manifest", other),
    }
}
