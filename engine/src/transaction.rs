//! Optimistic transactions on one database. A transaction reads at the snapshot taken when it
//! begins (its own writes first), buffers its writes, and commits them as one atomic batch,
//! unless a key it writes (snapshot isolation) or also one it read (`Serializable`) was
//! changed after its snapshot: then the commit fails with `Error::Conflict` and writes
//! nothing, and the caller may run it again.
//!
//! Commits are checked one at a time, under the commit lock, against what is visible and
//! against the keys of transactions that passed their check and are still being written (the
//! pending keys): two transactions never both commit over each other's changes, yet their
//! journal writes (an fsync each) overlap and share group commits, as plain writes do. A
//! plain write acknowledged before a commit's check is seen by it; one still in flight may
//! not be (it is not part of a transaction).

use crate::db::{Db, ReadView};
use crate::lookup::{in_memtables, in_tables};
use crate::snapshot::Snapshot;
use bytes::Bytes;
use cairn_common::{Error, Result, SeqNo, WriteBatch};
use parking_lot::Mutex;
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// The commit lock, and the keys of commits that passed their check and are being written.
#[derive(Default)]
pub(crate) struct Commits {
    check: tokio::sync::Mutex<()>,
    /// Key -> how many commits in flight write it.
    pending: Mutex<HashMap<Bytes, usize>>,
    /// Woken whenever keys leave `pending`.
    cleared: tokio::sync::Notify,
}

impl Commits {
    /// Waits until no commit in flight writes `key`.
    async fn written(&self, key: &[u8]) {
        loop {
            let cleared = self.cleared.notified();
            tokio::pin!(cleared);
            cleared.as_mut().enable();
            if !self.pending.lock().contains_key(key) {
                return;
            }
            cleared.await;
        }
    }
}

/// Takes a commit's keys out of `pending` when it is written (or fails, or is dropped).
struct Pending<'a> {
    commits: &'a Commits,
    keys: Vec<Bytes>,
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        let mut pending = self.commits.pending.lock();
        for k in &self.keys {
            if let Some(n) = pending.get_mut(k) {
                *n -= 1;
                if *n == 0 {
                    pending.remove(k);
                }
            }
        }
        drop(pending);
        self.commits.cleared.notify_waiters();
    }
}

/// What a commit checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Isolation {
    /// The keys it writes: no write-write conflict (two transactions updating one key from
    /// the same snapshot cannot both commit).
    #[default]
    Snapshot,
    /// The keys it reads as well, so that it commits only if what it read is still so:
    /// write skew is refused too.
    Serializable,
}

pub struct Transaction<'a> {
    db: &'a Db,
    snapshot: Snapshot,
    isolation: Isolation,
    /// `None` deletes.
    writes: BTreeMap<Bytes, Option<Bytes>>,
    reads: BTreeSet<Bytes>,
}

impl Db {
    /// Begins a transaction at a snapshot taken now. Only a writer has them.
    pub fn begin(&self, isolation: Isolation) -> Result<Transaction<'_>> {
        self.inner.check_writable()?;
        Ok(Transaction {
            db: self,
            snapshot: self.snapshot(),
            isolation,
            writes: BTreeMap::new(),
            reads: BTreeSet::new(),
        })
    }
}

impl Transaction<'_> {
    /// The sequence number it reads at.
    pub fn snapshot_seq(&self) -> SeqNo {
        self.snapshot.seq()
    }

    /// The value of `key`: this transaction's own write, or the snapshot's.
    pub async fn get(&mut self, key: &[u8]) -> Result<Option<Bytes>> {
        if let Some(w) = self.writes.get(key) {
            return Ok(w.clone());
        }
        if self.isolation == Isolation::Serializable {
            self.reads.insert(Bytes::copy_from_slice(key));
        }
        self.db.get_at(key, &self.snapshot).await
    }

    pub fn put(&mut self, key: impl Into<Bytes>, value: impl Into<Bytes>) {
        self.writes.insert(key.into(), Some(value.into()));
    }

    pub fn delete(&mut self, key: impl Into<Bytes>) {
        self.writes.insert(key.into(), None);
    }

    /// Writes the transaction's changes as one batch, or fails with `Error::Conflict`
    /// naming a key changed since its snapshot. Returns the batch's last sequence number (the
    /// snapshot's for a transaction that wrote nothing).
    pub async fn commit(self) -> Result<SeqNo> {
        let since = self.snapshot.seq();
        if self.writes.is_empty() {
            return Ok(since);
        }
        let commits = &self.db.inner.commits;
        let mut in_flight = None;
        // Holds this commit's keys in `pending` until its write is visible.
        let _pending = {
            let _one_at_a_time = commits.check.lock().await;
            let view = self.db.inner.view();
            for key in self.writes.keys().chain(self.reads.iter()) {
                if commits.pending.lock().contains_key(key) {
                    in_flight = Some(key.clone());
                    break;
                }
                if let Some(changed) = newest_change(&view, key).await?
                    && changed > since
                {
                    return Err(Error::Conflict(format!(
                        "key {:?} was changed at sequence number {changed}, after this transaction's snapshot at {since}; nothing was written, run it again",
                        String::from_utf8_lossy(key)
                    )));
                }
            }
            if in_flight.is_none() {
                let keys: Vec<Bytes> = self.writes.keys().cloned().collect();
                let mut pending = commits.pending.lock();
                for k in &keys {
                    *pending.entry(k.clone()).or_default() += 1;
                }
                Some(Pending { commits, keys })
            } else {
                None
            }
        };
        if let Some(key) = in_flight {
            // Another commit is writing it, after this snapshot: a conflict. Answered once
            // that write is visible, so that the caller's next attempt reads it rather than
            // meeting it in flight again.
            commits.written(&key).await;
            return Err(Error::Conflict(format!(
                "key {:?} was written by another transaction's commit after this transaction's snapshot at {since}; nothing was written, run it again",
                String::from_utf8_lossy(&key)
            )));
        }
        let mut batch = WriteBatch::new();
        for (k, v) in self.writes {
            match v {
                Some(v) => batch.put(k, v),
                None => batch.delete(k),
            };
        }
        self.db.write(batch).await
    }
}

/// The sequence number of the newest change to `key`: its newest version or the newest range
/// tombstone over it, whichever is newer, from the newest source that has either.
async fn newest_change(view: &ReadView, key: &[u8]) -> Result<Option<SeqNo>> {
    let found = match in_memtables(&view.mem, key, SeqNo::MAX) {
        Some(found) => Some(found),
        None => in_tables(&view.version, key, SeqNo::MAX).await?,
    };
    Ok(found.and_then(|f| f.newest_change()))
}
