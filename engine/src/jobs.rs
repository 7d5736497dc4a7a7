//! What the background jobs (`background.rs`) share with the foreground: the signals that
//! wake them, the signal they give back, their last failure, their counters, and the lock
//! that lets one compaction run at a time.
//!
//! Invariants:
//! - `changed` is bumped after every flush, compaction, import and failure: whoever waits on
//!   background work (a stalled writer, `flush`) looks again then.
//! - A failure reaches waiters only once retries have not cured it (`PERSISTENT_FAILURES` in
//!   a row), or at once if it is a fence, which no retry cures; a success clears it.
//! - One compaction at a time: the loop's, a manual one, or an open import (which holds the
//!   lock from its first table to its install, so no table below level 0 can hold a write
//!   newer than the import's).

use crate::background::Counters;
use crate::changes::Changes;
use cairn_common::Error;
use parking_lot::Mutex;
use std::pin::Pin;
use std::sync::Arc;
use tokio::sync::futures::Notified;
use tokio::sync::{Notify, OwnedMutexGuard, watch};

/// Consecutive background failures after which waiting callers get the error.
const PERSISTENT_FAILURES: u32 = 5;

pub(crate) struct Jobs {
    changed: Changes,
    flush_wanted: Notify,
    compact_wanted: Notify,
    shutdown: watch::Sender<bool>,
    /// The last failure, how many attempts in a row have failed, and whether it was a fence.
    failure: Mutex<Option<(String, u32, bool)>>,
    counters: Counters,
    compaction: Arc<tokio::sync::Mutex<()>>,
    /// The compaction running now, for `stats`.
    running: Mutex<Option<InProgress>>,
}

/// A compaction while it runs: its levels, its input, and each part's output ids (a part's
/// attempts take their ids from these, which is how `stats` finds where each part runs).
#[derive(Clone)]
pub(crate) struct InProgress {
    pub level: usize,
    pub output_level: usize,
    pub input_bytes: u64,
    pub parts: Vec<Vec<cairn_common::TableId>>,
    pub started: std::time::Instant,
}

impl InProgress {
    /// As `stats` shows it: each part where the compactor's `placements` put it.
    pub fn shown(&self, placed: &[cairn_compaction::Placement]) -> crate::CompactionInProgress {
        crate::CompactionInProgress {
            level: self.level,
            output_level: self.output_level,
            input_bytes: self.input_bytes,
            running_ms: self.started.elapsed().as_millis() as u64,
            parts: self
                .parts
                .iter()
                .map(|ids| {
                    let p = placed.iter().find(|p| ids.contains(&p.first_id));
                    p.map(|p| p.worker.clone())
                })
                .collect(),
        }
    }
}

/// Shows a compaction in `stats` while it lives.
pub(crate) struct Shown<'a>(&'a Jobs);

impl Drop for Shown<'_> {
    fn drop(&mut self) {
        self.0.running.lock().take();
    }
}

impl Default for Jobs {
    fn default() -> Self {
        Jobs {
            changed: Changes::default(),
            flush_wanted: Notify::new(),
            compact_wanted: Notify::new(),
            shutdown: watch::channel(false).0,
            failure: Mutex::new(None),
            counters: Counters::default(),
            compaction: Arc::default(),
            running: Mutex::new(None),
        }
    }
}

impl Jobs {
    pub fn show(&self, c: InProgress) -> Shown<'_> {
        *self.running.lock() = Some(c);
        Shown(self)
    }

    pub fn in_progress(&self) -> Option<InProgress> {
        self.running.lock().clone()
    }

    /// Wakes the flush loop: a memtable is frozen, or a caller waits for one to be flushed.
    pub fn want_flush(&self) {
        self.flush_wanted.notify_one();
    }

    pub fn flush_wanted(&self) -> Notified<'_> {
        self.flush_wanted.notified()
    }

    /// Wakes the compaction loop: level 0 grew, or writers stall on it.
    pub fn want_compaction(&self) {
        self.compact_wanted.notify_one();
    }

    pub fn compaction_wanted(&self) -> Notified<'_> {
        self.compact_wanted.notified()
    }

    /// Background work changed something: waiters look again.
    pub fn changed(&self) {
        self.changed.bump();
    }

    /// A wait for the next change, armed now (`Changes::next`).
    pub fn next_change(&self) -> Pin<Box<Notified<'_>>> {
        self.changed.next()
    }

    /// A receiver that sees the stop; taken before a loop starts, so an early stop reaches it.
    pub fn stopping(&self) -> watch::Receiver<bool> {
        self.shutdown.subscribe()
    }

    pub fn stop(&self) {
        self.shutdown.send_replace(true);
    }

    /// `what` failed on attempt `attempt`; waiters are woken to judge it.
    pub fn failed(&self, what: &str, e: &Error, attempt: u32) {
        *self.failure.lock() = Some((format!("{what}: {e}"), attempt, e.is_fenced()));
        self.changed.bump();
    }

    pub fn succeeded(&self) {
        self.failure.lock().take();
    }

    /// The last failure, for `stats`.
    pub fn last_failure(&self) -> Option<String> {
        self.failure.lock().as_ref().map(|(e, _, _)| e.clone())
    }

    /// A failure that retries have not cured: callers waiting on background work get it as
    /// an error instead of waiting forever. Transient failures stay invisible; a fence is
    /// reported at once, as itself.
    pub fn persistent_failure(&self, context: &str) -> Option<Error> {
        let guard = self.failure.lock();
        let (e, attempts, fenced) = guard.as_ref()?;
        if *fenced {
            Some(Error::Fenced(e.clone()))
        } else if *attempts >= PERSISTENT_FAILURES {
            Some(Error::component(
                context,
                format!("{e} ({attempts} attempts)"),
            ))
        } else {
            None
        }
    }

    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// The compaction lock, for one compaction.
    pub async fn compaction(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.compaction.lock().await
    }

    /// The compaction lock, for an import that holds it across calls.
    pub async fn compaction_owned(&self) -> OwnedMutexGuard<()> {
        self.compaction.clone().lock_owned().await
    }
}
