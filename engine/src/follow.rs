//! Read replicas. A `Db` opened with `Db::open_reader` follows its database's writer from the
//! outside: every `reader_poll_ms` it reads the manifest (new tables after flushes and
//! compactions, a new epoch after a take-over) and the journal's tail, and publishes what it
//! read as one newer snapshot, so a reader never sees part of a batch. It never writes,
//! deletes or truncates anything: it takes no epoch, claims no journal, and the tables it
//! stops using are dropped, not deleted.

use crate::db::{Components, Inner, MemSlot, MemState, replay_journal};
use crate::manifest::{self, Manifest};
use crate::version::{Deletion, TableHandle, Version};
use cairn_common::{Lsn, Result, SeqNo, TableId};
use cairn_filestore::{ManifestVersion, Storage};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};

/// What a reader follows, and how far it has come.
pub(crate) struct Follower {
    pub poll: Duration,
    /// Held to publish a new view (tables, memtable, visible sequence number) and to take
    /// a snapshot, so a snapshot never pairs a view with another view's sequence number.
    pub publish: parking_lot::RwLock<()>,
    state: tokio::sync::Mutex<Position>,
    /// When the last poll that caught up began: every write acknowledged before then is
    /// visible (it was in the journal or the tables when the poll read them).
    caught_up: Mutex<Instant>,
    applied_lsn: AtomicU64,
    /// The writer's epoch in the manifest version followed: it changes with a take-over.
    pub epoch: AtomicU64,
    polls: AtomicU64,
    last_error: Mutex<Option<String>>,
    /// Handles never mark a table obsolete here, but need a channel to be made with.
    pub deleter: mpsc::UnboundedSender<Deletion>,
}

/// Where the reader's view stands: the manifest version its tables come from, and the
/// newest journal record its memtable holds.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Position {
    pub version: ManifestVersion,
    pub epoch: u64,
    pub tables_seq: SeqNo,
    pub applied_lsn: Lsn,
}

/// A reader's view as `stats` reports it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ReaderStats {
    /// How stale the reader may be: the time since the last poll that caught up began.
    /// Every write its writer acknowledged before that is visible.
    pub staleness_ms: u64,
    /// The poll interval (`engine.reader_poll_ms`).
    pub poll_ms: u64,
    /// The newest journal record applied.
    pub applied_lsn: Lsn,
    pub polls: u64,
    /// The last poll's failure, cleared by the next success (the reader keeps serving its
    /// last view meanwhile).
    pub last_error: Option<String>,
}

impl Follower {
    pub fn new(
        poll: Duration,
        at: Position,
        started: Instant,
        deleter: mpsc::UnboundedSender<Deletion>,
    ) -> Follower {
        Follower {
            poll,
            publish: parking_lot::RwLock::new(()),
            state: tokio::sync::Mutex::new(at),
            caught_up: Mutex::new(started),
            applied_lsn: AtomicU64::new(at.applied_lsn),
            epoch: AtomicU64::new(at.epoch),
            polls: AtomicU64::new(0),
            last_error: Mutex::new(None),
            deleter,
        }
    }

    pub fn stats(&self) -> ReaderStats {
        ReaderStats {
            staleness_ms: self.caught_up.lock().elapsed().as_millis() as u64,
            poll_ms: self.poll.as_millis() as u64,
            applied_lsn: self.applied_lsn.load(Ordering::Relaxed),
            polls: self.polls.load(Ordering::Relaxed),
            last_error: self.last_error.lock().clone(),
        }
    }
}

/// The tables of `state`, reusing the handles `current` has open.
pub(crate) async fn open_version(
    state: &Manifest,
    current: Option<&Version>,
    storage: &dyn Storage,
    deleter: &mpsc::UnboundedSender<Deletion>,
) -> Result<Version> {
    let open: HashMap<TableId, Arc<TableHandle>> = current
        .map(|v| {
            v.levels
                .iter()
                .flatten()
                .map(|t| (t.meta.id, t.clone()))
                .collect()
        })
        .unwrap_or_default();
    let mut version = Version::default();
    for level in &state.levels {
        let mut handles = Vec::with_capacity(level.len());
        for meta in level {
            handles.push(match open.get(&meta.id) {
                Some(h) => h.clone(),
                None => TableHandle::new(storage.open_table(meta).await?, deleter.clone()),
            });
        }
        version.levels.push(handles);
    }
    Ok(version)
}

/// A reader's view of one manifest version and the journal past it.
pub(crate) struct View {
    pub state: Manifest,
    pub version: Version,
    pub active: MemSlot,
    pub last_seq: SeqNo,
    pub position: Position,
}

/// What `catch_up` found.
pub(crate) enum CatchUp {
    /// The store holds no manifest: no database.
    Empty,
    /// The writer truncated the journal past a flush newer than the manifest read: read
    /// it again.
    Raced,
    View(View),
}

/// Reads the newest manifest version, opens its tables (reusing `current`'s handles) and
/// replays the journal past them into a fresh memtable.
pub(crate) async fn catch_up(
    comps: &Components,
    current: Option<&Version>,
    deleter: &mpsc::UnboundedSender<Deletion>,
) -> Result<CatchUp> {
    let store = comps.storage.manifests();
    let Some(loaded) = manifest::load(store.as_ref()).await? else {
        return Ok(CatchUp::Empty);
    };
    let state = loaded.state;
    let version = open_version(&state, current, comps.storage.as_ref(), deleter).await?;
    let active = MemSlot {
        table: (comps.memtables)(),
        max_lsn: AtomicU64::new(state.flushed_lsn),
    };
    let from = state.flushed_lsn + 1;
    let replayed = replay_journal(
        comps.journal.as_ref(),
        from,
        state.last_seq,
        state.last_seq,
        &active,
    )
    .await?;
    // The writer truncates its journal only after installing a newer manifest version. If
    // one appeared while this replayed, objects this replay had still to read may have gone
    // (the replay then ends early, with nothing amiss at its start): read again from it.
    if moved_on(comps, loaded.version).await? {
        return Ok(CatchUp::Raced);
    }
    Ok(CatchUp::View(View {
        position: Position {
            version: loaded.version,
            epoch: state.epoch,
            tables_seq: state.last_seq,
            applied_lsn: replayed.last_lsn.max(state.flushed_lsn),
        },
        last_seq: replayed.last_seq,
        state,
        version,
        active,
    }))
}

/// The follower's loop: a poll every `poll`, until the `Db` closes.
pub(crate) async fn follow_loop(inner: Arc<Inner>, mut shutdown: watch::Receiver<bool>) {
    let Some(follower) = inner.follower.as_ref() else {
        return;
    };
    loop {
        tokio::select! {
            _ = tokio::time::sleep(follower.poll) => {}
            _ = shutdown.changed() => return,
        }
        let started = Instant::now();
        follower.polls.fetch_add(1, Ordering::Relaxed);
        match follow_once(&inner, follower).await {
            Ok(true) => {
                *follower.caught_up.lock() = started;
                follower.last_error.lock().take();
            }
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(database = %inner.database, error = %e, "a reader's poll failed; its view stays as it was");
                *follower.last_error.lock() = Some(e.to_string());
            }
        }
    }
}

/// A poll now, outside the loop's schedule (a read failed on this view).
pub(crate) async fn poll_now(inner: &Inner, follower: &Follower) {
    let started = Instant::now();
    if let Ok(true) = follow_once(inner, follower).await {
        *follower.caught_up.lock() = started;
    }
}

/// Brings the reader up to the newest manifest version and the journal's tail; false if it
/// raced a flush and must look again.
async fn follow_once(inner: &Inner, follower: &Follower) -> Result<bool> {
    let mut at = follower.state.lock().await;
    let newest = inner.comps.storage.manifests().list().await?;
    if newest.last().is_some_and(|&n| n != at.version) {
        // New tables: a fresh memtable holds what the journal has past them. The tables go
        // in first: until the memtable follows, reads see the old memtable over the new
        // tables, which hold everything the old one did.
        let current = inner.version.load_full();
        let view = match catch_up(&inner.comps, Some(&current), &follower.deleter).await? {
            CatchUp::View(view) => view,
            CatchUp::Raced | CatchUp::Empty => return Ok(false),
        };
        if view.last_seq < inner.seq.visible() {
            // Visibility never goes back: a view behind what readers were shown would hide
            // writes they saw. (The check above keeps this from happening; this keeps it true.)
            return Ok(false);
        }
        let _publishing = follower.publish.write();
        inner.version.store(Arc::new(view.version));
        inner.mem.store(Arc::new(MemState {
            active: Arc::new(view.active),
            immutables: Vec::new(),
        }));
        inner.seq.advance_to(view.last_seq);
        inner
            .manifest_version
            .store(view.position.version, Ordering::Relaxed);
        follower.epoch.store(view.position.epoch, Ordering::Relaxed);
        *at = view.position;
    } else {
        let from = at.applied_lsn + 1;
        let mem = inner.mem.load();
        let replayed = replay_journal(
            inner.comps.journal.as_ref(),
            from,
            at.tables_seq,
            inner.seq.visible(),
            &mem.active,
        )
        .await?;
        if replayed.first_lsn.is_some_and(|l| l > from)
            && moved_on(&inner.comps, at.version).await?
        {
            // Records this reader had not read were truncated: a flush it has not seen
            // holds them. What this replay applied stays invisible (visibility did not
            // move), and the next poll replaces this memtable.
            return Ok(false);
        }
        let _publishing = follower.publish.write();
        inner.seq.advance_to(replayed.last_seq);
        at.applied_lsn = at.applied_lsn.max(replayed.last_lsn);
    }
    follower
        .applied_lsn
        .store(at.applied_lsn, Ordering::Relaxed);
    Ok(true)
}

/// Whether the manifest has a version newer than `version`.
async fn moved_on(comps: &Components, version: ManifestVersion) -> Result<bool> {
    let newest = comps.storage.manifests().list().await?;
    Ok(newest.last().is_some_and(|&n| n > version))
}
