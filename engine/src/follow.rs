//! Read replicas. A `Db` opened with `Db::open_reader` follows its database's writer from the
//! outside: it reads the journal's tail as records land (`Journal::wait_past`), and every
//! `reader_poll_ms` the manifest (new tables after flushes and compactions, a new epoch after
//! a take-over), and publishes what it read as one newer snapshot, so a reader never sees
//! part of a batch. It never writes, deletes or truncates anything: it takes no epoch, claims
//! no journal, and the tables it stops using are dropped, not deleted.

use crate::db::{Components, Inner, MemSlot};
use crate::manifest::{self, Manifest};
use crate::recovery::replay_journal;
use crate::version::{Deletion, TableHandle, Version};
use cairn_common::{Lsn, Result, SeqNo, TableId};
use cairn_filestore::{ManifestVersion, Storage};
use parking_lot::Mutex;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

/// What a reader follows, and how far it has come.
pub(crate) struct Follower {
    poll: Duration,
    /// Held to publish a new view (tables, memtable, visible sequence number) and to take
    /// a snapshot, so a snapshot never pairs a view with another view's sequence number.
    publish: parking_lot::RwLock<()>,
    state: tokio::sync::Mutex<Position>,
    /// When the last poll that caught up began: every write acknowledged before then is
    /// visible (it was in the journal or the tables when the poll read them).
    caught_up: Mutex<Instant>,
    /// Whether this reader's journal is not its writer's, and when it last saw a new flush.
    flushes_only: std::sync::atomic::AtomicBool,
    flush_seen: Mutex<Instant>,
    applied_lsn: AtomicU64,
    /// The writer's epoch in the manifest version followed: it changes with a take-over.
    epoch: AtomicU64,
    polls: AtomicU64,
    last_error: Mutex<Option<String>>,
    /// Handles never mark a table obsolete here, but need a channel to be made with.
    deleter: mpsc::UnboundedSender<Deletion>,
}

/// Where the reader's view stands: the manifest version its tables come from, and the
/// newest journal record its memtable holds.
#[derive(Debug, Clone)]
pub(crate) struct Position {
    pub version: ManifestVersion,
    pub epoch: u64,
    /// Every write at or below this is in the tables (the manifest's `last_seq`).
    pub last_seq: SeqNo,
    /// The newest write in the tables: a journal batch at or below it is in them already.
    pub tables_seq: SeqNo,
    /// The journal and position the tables reach: while both stand, a newer manifest
    /// version (ids reserved, a lease renewed) leaves the view as it is.
    pub flushed_lsn: Lsn,
    pub journal: String,
    pub applied_lsn: Lsn,
    pub prefix: Prefix,
}

/// What a reader may show of its writer's batches. The writer numbers a batch before it
/// journals it, and concurrent batches land in any order, so the journal may hold 11
/// before 10; the writer shows neither until both are applied. A reader shows a prefix
/// too: up to the newest mark it has read (the writer's visible number when it encoded
/// a batch: every batch at or below it that the writer ever showed was journaled earlier),
/// and on through batches applied with no gap.
#[derive(Debug, Clone, Default)]
pub(crate) struct Prefix {
    shown: SeqNo,
    mark: SeqNo,
    /// Batches applied above `shown`, first sequence number to last.
    above: BTreeMap<SeqNo, SeqNo>,
}

impl Prefix {
    pub fn new(shown: SeqNo) -> Prefix {
        Prefix {
            shown,
            ..Prefix::default()
        }
    }

    /// What may be shown now; batches at or below it are never applied again.
    pub fn shown(&self) -> SeqNo {
        self.shown
    }

    /// Batch `first..=last`, which carried `mark`, is applied (not yet shown).
    pub fn applied(&mut self, first: SeqNo, last: SeqNo, mark: SeqNo) {
        self.mark = self.mark.max(mark);
        self.above.insert(first, last);
    }

    /// Whether the marks read lead past the batches applied without a gap: then showing
    /// them would show sequence numbers no batch read holds (an import's, in tables the view
    /// lacks). Otherwise everything shown was applied here.
    pub fn leads_past_applied(&self) -> bool {
        let mut reach = self.shown;
        for (&first, &last) in &self.above {
            if first > reach + 1 {
                break;
            }
            reach = reach.max(last);
        }
        self.mark > reach
    }

    /// Moves what is shown as far as the marks and gapless batches allow, once every record
    /// read so far is applied.
    pub fn advance(&mut self) -> SeqNo {
        self.shown = self.shown.max(self.mark);
        while let Some((&first, &last)) = self.above.first_key_value() {
            if first > self.shown + 1 {
                break;
            }
            self.above.pop_first();
            self.shown = self.shown.max(last);
        }
        self.shown
    }
}

/// A reader's view as `stats` reports it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ReaderStats {
    /// How stale the reader may be: the time since the last poll that caught up began, so
    /// every write its writer acknowledged before that is visible. For a reader that follows
    /// flushes only, the time since it last saw a new flush.
    pub staleness_ms: u64,
    /// Its journal is not its writer's (a file journal on the writer's node): it sees
    /// flushed writes only, and none that are still in the writer's journal.
    #[serde(default)]
    pub follows_flushes_only: bool,
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
    /// The writer's epoch in the manifest version followed.
    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Relaxed)
    }

    /// Takes what `take` returns while no new view is being published: a snapshot then
    /// pairs a view with that view's own sequence number.
    pub fn unchanging<T>(&self, take: impl FnOnce() -> T) -> T {
        let _published = self.publish.read();
        take()
    }

    pub fn new(
        poll: Duration,
        at: Position,
        started: Instant,
        flushes_only: bool,
        deleter: mpsc::UnboundedSender<Deletion>,
    ) -> Follower {
        Follower {
            flushes_only: flushes_only.into(),
            flush_seen: Mutex::new(started),
            poll,
            publish: parking_lot::RwLock::new(()),
            applied_lsn: AtomicU64::new(at.applied_lsn),
            epoch: AtomicU64::new(at.epoch),
            state: tokio::sync::Mutex::new(at),
            caught_up: Mutex::new(started),
            polls: AtomicU64::new(0),
            last_error: Mutex::new(None),
            deleter,
        }
    }

    /// Time since the last poll that caught up began.
    pub fn staleness(&self) -> Duration {
        self.caught_up.lock().elapsed()
    }

    pub fn last_error(&self) -> Option<String> {
        self.last_error.lock().clone()
    }

    pub fn stats(&self) -> ReaderStats {
        let flushes_only = self.flushes_only.load(Ordering::Relaxed);
        let since = if flushes_only {
            self.flush_seen.lock().elapsed()
        } else {
            self.staleness()
        };
        ReaderStats {
            staleness_ms: since.as_millis() as u64,
            follows_flushes_only: flushes_only,
            poll_ms: self.poll.as_millis() as u64,
            applied_lsn: self.applied_lsn.load(Ordering::Relaxed),
            polls: self.polls.load(Ordering::Relaxed),
            last_error: self.last_error.lock().clone(),
        }
    }
}

/// Whether a reader on `journal` follows flushes only: its journal is not the one the
/// writer's manifest names (the writer's own file journal, out of this node's reach).
pub(crate) fn flushes_only(journal: &dyn cairn_journal::Journal, state: &Manifest) -> bool {
    match journal.reach() {
        cairn_journal::Reach::Shared => false,
        cairn_journal::Reach::Node { id } => id != state.journal,
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
    /// The writer may have truncated the journal past a flush newer than the manifest read:
    /// read it again (reusing these open tables).
    Raced(Version),
    View(Box<View>),
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
    view_of(comps, loaded, current, deleter).await
}

/// The view of `loaded`: its tables (reusing `current`'s handles) and the journal past them
/// in a fresh memtable.
async fn view_of(
    comps: &Components,
    loaded: manifest::Loaded,
    current: Option<&Version>,
    deleter: &mpsc::UnboundedSender<Deletion>,
) -> Result<CatchUp> {
    let state = loaded.state;
    let version = open_version(&state, current, comps.storage.as_ref(), deleter).await?;
    let active = MemSlot::new((comps.memtables)(), state.flushed_lsn);
    let from = state.flushed_lsn + 1;
    let mut prefix = Prefix::new(state.last_seq);
    let replayed = replay_journal(
        comps.journal.as_ref(),
        from,
        state.newest_seq(),
        state.last_seq,
        &active,
        Some(&mut prefix),
    )
    .await?;
    // A newer version may hold writes this replay did not see: a flush, after which the
    // writer truncates records the replay had still to read (it then ends early, with
    // nothing amiss at its start), or an import, whose writes never pass through the
    // journal while the marks read lead past them. Read again from it.
    if holds_unseen_writes(
        comps.storage.manifests().as_ref(),
        loaded.version,
        state.last_seq,
        state.flushed_lsn,
        &state.journal,
    )
    .await?
    {
        return Ok(CatchUp::Raced(version));
    }
    let shown = prefix.advance();
    Ok(CatchUp::View(Box::new(View {
        last_seq: shown,
        position: Position {
            version: loaded.version,
            epoch: state.epoch,
            last_seq: state.last_seq,
            tables_seq: state.newest_seq(),
            flushed_lsn: state.flushed_lsn,
            journal: state.journal.clone(),
            applied_lsn: replayed.last_lsn.max(state.flushed_lsn),
            prefix,
        },
        state,
        version,
        active,
    })))
}

/// The least time between two reads of the journal's tail: records that land close together
/// are applied and published as one view, so a busy writer costs its replica a read per
/// this, not one per commit.
const MIN_GAP: Duration = Duration::from_millis(5);

/// The follower's loop, until the `Db` closes: it reads the journal's tail as soon as the
/// journal says a record past the last one applied is there (`Journal::wait_past`), at
/// most every `MIN_GAP`, and the manifest every `poll` (new tables, a new epoch). With a
/// journal that cannot say, or one out of its reach, that is a poll every `poll`.
pub(crate) async fn follow_loop(inner: Arc<Inner>, mut shutdown: watch::Receiver<bool>) {
    let Some(follower) = inner.follower.as_ref() else {
        return;
    };
    let journal = inner.comps.journal.clone();
    let mut manifest_due = Instant::now() + follower.poll;
    let mut started = Instant::now();
    loop {
        let waited = async {
            tokio::time::sleep_until(started + MIN_GAP).await;
            if follower.flushes_only.load(Ordering::Relaxed) {
                tokio::time::sleep_until(manifest_due).await;
                return;
            }
            let applied = follower.applied_lsn.load(Ordering::Relaxed);
            let limit = manifest_due.saturating_duration_since(Instant::now());
            if let Err(e) = journal.wait_past(applied, limit).await {
                // Told nothing: read when the manifest is due, as without it. The poll
                // then says what failed, if the journal still does.
                tracing::debug!(database = %inner.database, error = %e, "waiting for journal records failed");
                tokio::time::sleep_until(manifest_due).await;
            }
        };
        tokio::select! {
            biased;
            _ = shutdown.changed() => return,
            _ = waited => {}
        }
        started = Instant::now();
        let full = started >= manifest_due;
        match poll(&inner, follower, full).await {
            // Behind a flush it has not read: the manifest next, at once.
            Some(Polled {
                caught_up: false, ..
            }) => manifest_due = started,
            // Read, or failed (tried again at the poll, not at every wake-up).
            Some(Polled { manifest: true, .. }) | None => manifest_due = started + follower.poll,
            Some(_) => {}
        }
    }
}

/// What one poll did.
#[derive(Debug, Clone, Copy)]
struct Polled {
    caught_up: bool,
    /// It read the manifest.
    manifest: bool,
}

/// One poll that reads the manifest too: one outside the loop's schedule (a read failed on
/// this view, or found it too old).
pub(crate) async fn poll_now(inner: &Inner, follower: &Follower) {
    poll(inner, follower, true).await;
}

/// One poll, its outcome recorded for `stats` (`None` if it failed). `full` reads the
/// manifest first; otherwise only the journal's tail is read, unless it holds nothing new.
async fn poll(inner: &Inner, follower: &Follower, full: bool) -> Option<Polled> {
    let started = Instant::now();
    follower.polls.fetch_add(1, Ordering::Relaxed);
    match follow_once(inner, follower, full).await {
        Ok(polled) => {
            if polled.caught_up {
                *follower.caught_up.lock() = started;
                follower.last_error.lock().take();
            }
            Some(polled)
        }
        Err(e) => {
            tracing::warn!(database = %inner.database, error = %e, "a reader's poll failed; its view stays as it was");
            *follower.last_error.lock() = Some(e.to_string());
            None
        }
    }
}

/// Brings the reader up to the journal's tail, and first to the newest manifest version if
/// `full`; not caught up if it raced a flush and must look again.
///
/// A poll of the tail alone is as sound as one after a listing that found nothing new:
/// records a flush truncated before they were read show as a replay that starts late, or
/// holds nothing, and then the manifest is read after all.
async fn follow_once(inner: &Inner, follower: &Follower, full: bool) -> Result<Polled> {
    let mut at = follower.state.lock().await;
    if full && let Some(caught_up) = follow_manifest(inner, follower, &mut at).await? {
        return Ok(Polled {
            caught_up,
            manifest: true,
        });
    }
    match follow_tail(inner, follower, &mut at, !full).await? {
        Some(caught_up) => Ok(Polled {
            caught_up,
            manifest: full,
        }),
        // Nothing new, and no version past the one followed, listed after that replay (a
        // flush writes its version before it truncates): caught up as of the replay.
        None => Ok(Polled {
            caught_up: follow_manifest(inner, follower, &mut at)
                .await?
                .unwrap_or(true),
            manifest: true,
        }),
    }
}

/// Reads the manifest's newest version. With new tables (or a new journal), publishes a
/// fresh view of them and the journal past them, and says whether it caught up; otherwise
/// `None`: the tail is to be followed.
async fn follow_manifest(
    inner: &Inner,
    follower: &Follower,
    at: &mut Position,
) -> Result<Option<bool>> {
    let store = inner.comps.storage.manifests();
    let newest = store.list().await?;
    if newest.last().is_none_or(|&n| n == at.version) {
        return Ok(None);
    }
    let Some(loaded) = manifest::load(store.as_ref()).await? else {
        return Ok(Some(false));
    };
    let current = inner.versions.current();
    if loaded.state.flushed_lsn == at.flushed_lsn
        && loaded.state.journal == at.journal
        && same_tables(&loaded.state, &current)
    {
        // Ids reserved, a lease renewed: the tables and the journal's start stand, so the
        // memtable does too. Follow the tail.
        at.version = loaded.version;
        at.epoch = loaded.state.epoch;
        inner.versions.follow(None, loaded.version);
        follower.epoch.store(at.epoch, Ordering::Relaxed);
        return Ok(None);
    }
    // New tables: a fresh memtable holds what the journal has past them.
    let view = match view_of(&inner.comps, loaded, Some(&current), &follower.deleter).await? {
        CatchUp::View(view) => view,
        CatchUp::Raced(_) | CatchUp::Empty => return Ok(Some(false)),
    };
    if view.last_seq < inner.writes.visible() {
        // Visibility never goes back: a view behind what readers were shown would hide
        // writes they saw.
        return Ok(Some(false));
    }
    let _publishing = follower.publish.write();
    inner.versions.follow(
        Some((view.version, view.state.history_floor)),
        view.position.version,
    );
    inner.writes.replace(view.active);
    inner.writes.advance_to(view.last_seq);
    follower.epoch.store(view.position.epoch, Ordering::Relaxed);
    follower.flushes_only.store(
        flushes_only(inner.comps.journal.as_ref(), &view.state),
        Ordering::Relaxed,
    );
    if view.position.flushed_lsn != at.flushed_lsn || view.position.journal != at.journal {
        *follower.flush_seen.lock() = Instant::now();
    }
    *at = view.position;
    follower
        .applied_lsn
        .store(at.applied_lsn, Ordering::Relaxed);
    Ok(Some(true))
}

/// Applies the journal's records past the last one applied and publishes them; whether it
/// caught up, or `None` if `unless_empty` and there were none (the caller then reads the
/// manifest: a flush may have truncated them).
async fn follow_tail(
    inner: &Inner,
    follower: &Follower,
    at: &mut Position,
    unless_empty: bool,
) -> Result<Option<bool>> {
    let from = at.applied_lsn + 1;
    let mem = inner.writes.mem();
    // Worked on a copy: a replay that fails midway leaves the prefix as it was, and the
    // next poll reads the same records again.
    let mut prefix = at.prefix.clone();
    let replayed = replay_journal(
        inner.comps.journal.as_ref(),
        from,
        at.tables_seq,
        inner.writes.visible(),
        &mem.active,
        Some(&mut prefix),
    )
    .await?;
    if unless_empty && replayed.first_lsn.is_none() {
        return Ok(None);
    }
    let leads = prefix.leads_past_applied();
    let shown = prefix.advance();
    // Records this reader had not read were truncated (a flush it has not seen holds them),
    // or it would show past writes the journal lacks (an import's): a newer version holds
    // them. What this replay applied stays invisible, and the next poll loads that version.
    // Only a mark can lead past writes the journal lacks, so the manifest is read then, not
    // on every poll that shows new writes.
    let cut_short = replayed.first_lsn.is_some_and(|l| l > from);
    if (cut_short || (leads && shown > inner.writes.visible()))
        && holds_unseen_writes(
            inner.comps.storage.manifests().as_ref(),
            at.version,
            at.last_seq,
            at.flushed_lsn,
            &at.journal,
        )
        .await?
    {
        return Ok(Some(false));
    }
    let _publishing = follower.publish.write();
    // Applied above what was shown, never below: a snapshot taken earlier reads the same.
    inner.writes.advance_to(shown);
    at.prefix = prefix;
    at.applied_lsn = at.applied_lsn.max(replayed.last_lsn);
    follower
        .applied_lsn
        .store(at.applied_lsn, Ordering::Relaxed);
    Ok(Some(true))
}

/// Whether the tables of `state` are the ones `version` holds, level by level.
fn same_tables(state: &Manifest, version: &Version) -> bool {
    state.levels.len() == version.levels.len()
        && state
            .levels
            .iter()
            .zip(&version.levels)
            .all(|(m, v)| m.iter().map(|t| t.id).eq(v.iter().map(|h| h.meta.id)))
}

/// Whether a manifest version after `version` holds writes this reader's journal replay
/// does not: an import's (tables numbered past `last_seq`, the writes complete in the view's
/// tables, whose writes never pass through the journal) or a flush's (past `flushed_lsn` in
/// `journal`, whose records the writer may truncate). Marks read from the journal may then
/// lead past writes the view lacks. Reads the versions one by one: there are rarely more
/// than one or two, and a missing one is a cheap answer (with one more read to tell it
/// from versions collected since).
async fn holds_unseen_writes(
    store: &dyn cairn_filestore::ManifestStore,
    version: ManifestVersion,
    last_seq: SeqNo,
    flushed_lsn: Lsn,
    journal: &str,
) -> Result<bool> {
    let mut n = version + 1;
    while let Some(data) = store.read(n).await? {
        let record = manifest::Record::decode(&data, &format!("manifest version {n}"))?;
        let newer = match record.body {
            manifest::Body::Checkpoint(m) => {
                m.last_seq > last_seq || m.flushed_lsn != flushed_lsn || m.journal != journal
            }
            manifest::Body::Edit(e) => {
                e.last_seq.is_some_and(|s| s > last_seq)
                    || e.flushed_lsn.is_some_and(|l| l != flushed_lsn)
                    || e.journal.is_some()
            }
        };
        if newer {
            return Ok(true);
        }
        n += 1;
    }
    // Version `n` is not there. Either none was written past the last one read, or the
    // versions from `n` on were collected below a checkpoint written since (versions are
    // written in order, and only those below an existing checkpoint are collected): then
    // the first checkpoint after `n` exists, and what the collected ones held is unknown.
    let checkpoint = manifest::checkpoint_at_or_above(n + 1);
    Ok(store.read(checkpoint).await?.is_some())
}

#[cfg(test)]
mod tests {
    use super::{Prefix, holds_unseen_writes};
    use crate::manifest::{Manifest, ManifestLog, VersionEdit};
    use cairn_filestore::{DirManifestStore, ManifestStore};
    use std::sync::Arc;

    /// A replica far behind its writer may find the versions after its own collected (a
    /// checkpoint deletes those below it): that is not "nothing newer".
    #[tokio::test]
    async fn versions_collected_after_the_replicas_own_count_as_unseen_writes() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn ManifestStore> = Arc::new(DirManifestStore::open(dir.path()).unwrap());
        let mut log =
            ManifestLog::open_writer(store.clone(), || Ok(Manifest::new("db".into(), 2)), None)
                .await
                .unwrap();
        let seen = log.version();
        let (last_seq, flushed_lsn) = (log.state().last_seq, log.state().flushed_lsn);
        let journal = log.state().journal.clone();
        assert!(
            !holds_unseen_writes(store.as_ref(), seen, last_seq, flushed_lsn, &journal)
                .await
                .unwrap(),
            "nothing newer yet"
        );
        // Versions up to `upto`, each a little more complete, and what the collection for
        // checkpoint `checkpoint` does, finished before the replica looks.
        async fn write_and_collect(
            log: &mut ManifestLog,
            store: &dyn ManifestStore,
            upto: u64,
            checkpoint: u64,
        ) {
            while log.version() < upto {
                let seq = log.version();
                log.commit(VersionEdit {
                    last_seq: Some(seq),
                    ..VersionEdit::default()
                })
                .await
                .unwrap();
            }
            for v in store.list().await.unwrap() {
                if v < checkpoint {
                    store.delete(v).await.unwrap();
                }
            }
        }
        write_and_collect(&mut log, store.as_ref(), 70, 64).await;
        assert!(
            holds_unseen_writes(store.as_ref(), seen, last_seq, flushed_lsn, &journal)
                .await
                .unwrap(),
            "writes past the replica's view, in versions since collected"
        );
        // A replica whose own version was a checkpoint since collected too.
        write_and_collect(&mut log, store.as_ref(), 130, 128).await;
        assert!(
            holds_unseen_writes(store.as_ref(), 63, 63, flushed_lsn, &journal)
                .await
                .unwrap(),
            "from a collected checkpoint's predecessor"
        );
    }

    #[test]
    fn a_prefix_waits_for_gaps_and_jumps_to_marks() {
        let mut p = Prefix::new(9);
        p.applied(11, 11, 9); // 11 landed before 10
        assert!(!p.leads_past_applied());
        assert_eq!(p.advance(), 9, "10 is missing");
        p.applied(10, 10, 9);
        assert!(!p.leads_past_applied());
        assert_eq!(p.advance(), 11);
        p.applied(14, 15, 11); // 12-13 failed and never landed
        assert_eq!(p.advance(), 11);
        p.applied(16, 16, 15); // the writer had shown up to 15: 12-13 are gone
        assert!(p.leads_past_applied(), "12-13 are shown unread");
        assert_eq!(p.advance(), 16);
        assert!(!p.leads_past_applied());
        assert_eq!(p.shown(), 16);
    }
}
