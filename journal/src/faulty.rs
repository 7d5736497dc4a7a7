//! `FaultyJournal`: a journal decorator that injects failures and delays into appends and
//! replays, and holds an append back until released, for chaos tests of the engine and of a
//! user's deployment. A delayed append behaves like one on the wire to a journal server: it
//! lands after the delay even if its caller has gone away.

use crate::{Claimed, Journal, JournalClaim, JournalRecord};
use async_trait::async_trait;
use bytes::Bytes;
use cairn_common::{BoxStream, Error, Lsn, Result};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

pub struct FaultyJournal {
    inner: Arc<dyn Journal>,
    fail_next: AtomicUsize,
    delay_micros: AtomicU64,
    replay_delay_micros: AtomicU64,
    appends: AtomicU64,
    hold_next: AtomicBool,
    released: tokio::sync::Semaphore,
    /// Each append's own extra delay, drawn when it starts (a seeded simulation's random
    /// delays, which reorder appends).
    jitter: parking_lot::Mutex<Option<Delays>>,
    /// Decides, for each append, whether its answer is lost: it lands, and its caller gets
    /// an error (a reply cut off on the wire).
    lose: parking_lot::Mutex<Option<Box<dyn FnMut() -> bool + Send>>>,
}

type Delays = Box<dyn FnMut() -> Duration + Send>;

impl FaultyJournal {
    pub fn new(inner: Arc<dyn Journal>) -> Arc<Self> {
        Arc::new(FaultyJournal {
            inner,
            fail_next: AtomicUsize::new(0),
            delay_micros: AtomicU64::new(0),
            replay_delay_micros: AtomicU64::new(0),
            appends: AtomicU64::new(0),
            hold_next: AtomicBool::new(false),
            released: tokio::sync::Semaphore::new(0),
            jitter: parking_lot::Mutex::new(None),
            lose: parking_lot::Mutex::new(None),
        })
    }

    /// Holds the next append back until `release`: a write that reaches the journal after
    /// writes begun later than it.
    pub fn hold_next_append(&self) {
        self.hold_next.store(true, Ordering::SeqCst);
    }

    /// Lets one held append go on.
    pub fn release(&self) {
        self.released.add_permits(1);
    }

    /// Makes every replay start `d` late (a slow store to list and read).
    pub fn set_replay_delay(&self, d: Duration) {
        self.replay_delay_micros
            .store(d.as_micros() as u64, Ordering::Relaxed);
    }

    /// Fails the next `n` appends (as a journal with a full or failing disk would).
    pub fn fail_next(&self, n: usize) {
        self.fail_next.store(n, Ordering::SeqCst);
    }

    /// Appends handed to this journal so far, finished or not.
    pub fn appends(&self) -> u64 {
        self.appends.load(Ordering::Relaxed)
    }

    /// Makes each append reach the journal, and each replay start, late by what `draw`
    /// returns for it (on top of `set_delay` and `set_replay_delay`): appends begun in one
    /// order land in another, and a reader's look at the journal comes a while after its
    /// look at anything else.
    pub fn set_jitter(&self, draw: impl FnMut() -> Duration + Send + 'static) {
        *self.jitter.lock() = Some(Box::new(draw));
    }

    /// Loses the answer of each append for which `decide` says so: the record lands, and
    /// the caller is told the append failed.
    pub fn set_lost_answers(&self, decide: impl FnMut() -> bool + Send + 'static) {
        *self.lose.lock() = Some(Box::new(decide));
    }

    /// Makes every append reach the journal `d` late.
    pub fn set_delay(&self, d: Duration) {
        self.delay_micros
            .store(d.as_micros() as u64, Ordering::Relaxed);
    }
}

#[async_trait]
impl Journal for FaultyJournal {
    fn reach(&self) -> crate::Reach {
        self.inner.reach()
    }

    /// Its appends may be held, delayed and reordered, as on the wire to a journal server,
    /// so writers queue in groups behind them whatever the journal inside.
    fn appends_wait(&self) -> bool {
        true
    }

    async fn claim(&self, claim: &JournalClaim) -> Result<Claimed> {
        self.inner.claim(claim).await
    }

    async fn append(&self, epoch: u64, record: Bytes) -> Result<Lsn> {
        self.appends.fetch_add(1, Ordering::Relaxed);
        let failing = self
            .fail_next
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if failing {
            return Err(Error::component("faulty journal", "injected failure"));
        }
        if self.hold_next.swap(false, Ordering::SeqCst) {
            let held = self.released.acquire().await;
            held.map_err(|e| Error::component("faulty journal", e))?
                .forget();
        }
        let jitter = self
            .jitter
            .lock()
            .as_mut()
            .map_or(Duration::ZERO, |draw| draw());
        let delay = Duration::from_micros(self.delay_micros.load(Ordering::Relaxed)) + jitter;
        let lost = self.lose.lock().as_mut().is_some_and(|decide| decide());
        let landed = if delay.is_zero() {
            self.inner.append(epoch, record).await
        } else {
            let inner = self.inner.clone();
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                inner.append(epoch, record).await
            })
            .await
            .map_err(|e| Error::component("faulty journal", e))?
        };
        match landed {
            Ok(lsn) if lost => Err(Error::component(
                "faulty journal",
                format!("the answer was lost (record {lsn} landed)"),
            )),
            other => other,
        }
    }

    async fn replay(&self, from: Lsn) -> Result<BoxStream<Result<JournalRecord>>> {
        let jitter = self
            .jitter
            .lock()
            .as_mut()
            .map_or(Duration::ZERO, |draw| draw());
        let delay =
            Duration::from_micros(self.replay_delay_micros.load(Ordering::Relaxed)) + jitter;
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        self.inner.replay(from).await
    }

    async fn wait_past(&self, lsn: Lsn, limit: Duration) -> Result<()> {
        self.inner.wait_past(lsn, limit).await
    }

    async fn truncate(&self, upto: Lsn) -> Result<()> {
        self.inner.truncate(upto).await
    }

    async fn close(&self) -> Result<()> {
        self.inner.close().await
    }
}
