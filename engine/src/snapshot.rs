//! Snapshots: a sequence number that compaction must keep readable while the handle lives.

use crate::db::ReadView;
use cairn_common::SeqNo;
use parking_lot::Mutex;
use std::collections::BTreeMap;
use std::sync::Arc;

/// Live snapshots, counted per sequence number.
#[derive(Default)]
pub struct SnapshotList {
    live: Mutex<BTreeMap<SeqNo, usize>>,
}

impl SnapshotList {
    /// Registers a snapshot at whatever `current` returns, under the list's lock, so a
    /// compaction computing the oldest snapshot either sees it or ran entirely before it.
    pub fn acquire(self: &Arc<Self>, current: impl FnOnce() -> SeqNo) -> Snapshot {
        let mut live = self.live.lock();
        let seq = current();
        *live.entry(seq).or_default() += 1;
        Snapshot {
            seq,
            list: self.clone(),
            view: None,
        }
    }

    /// The oldest sequence number any reader may still ask for.
    pub fn oldest(&self, current: impl FnOnce() -> SeqNo) -> SeqNo {
        let live = self.live.lock();
        let now = current();
        live.keys().next().copied().map_or(now, |s| s.min(now))
    }

    pub fn count(&self) -> usize {
        self.live.lock().values().sum()
    }
}

/// A consistent view of the database at one sequence number. Reads through it see exactly
/// the writes acknowledged before it was taken. Dropping it lets compaction reclaim versions.
pub struct Snapshot {
    seq: SeqNo,
    list: Arc<SnapshotList>,
    /// A reader's snapshot keeps the memtable and tables it was taken over: the writer's
    /// compactions know nothing of it, and the tables its follower swaps in later need not
    /// hold versions this old.
    view: Option<ReadView>,
}

impl Snapshot {
    pub fn seq(&self) -> SeqNo {
        self.seq
    }

    pub(crate) fn with_view(mut self, view: ReadView) -> Snapshot {
        self.view = Some(view);
        self
    }

    pub(crate) fn view(&self) -> Option<&ReadView> {
        self.view.as_ref()
    }
}

impl Drop for Snapshot {
    fn drop(&mut self) {
        let mut live = self.list.live.lock();
        if let Some(n) = live.get_mut(&self.seq) {
            *n -= 1;
            if *n == 0 {
                live.remove(&self.seq);
            }
        }
    }
}

impl std::fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Snapshot").field("seq", &self.seq).finish()
    }
}
