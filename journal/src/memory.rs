//! A journal that keeps records in memory: for tests, and for users who accept losing the
//! writes not yet flushed when the process ends.

use crate::{
    Claimed, InlineAppend, Journal, JournalClaim, JournalRecord, check_claim, fenced_error,
};
use async_trait::async_trait;
use bytes::Bytes;
use cairn_common::{BoxStream, Lsn, Result};
use parking_lot::Mutex;
use std::collections::VecDeque;
use std::time::Duration;

pub struct MemoryJournal {
    inner: Mutex<State>,
    id: String,
    /// The newest LSN given, for `wait_past`.
    last: tokio::sync::watch::Sender<Lsn>,
}

impl Default for MemoryJournal {
    fn default() -> Self {
        MemoryJournal {
            inner: Mutex::default(),
            id: crate::new_journal_id(),
            last: tokio::sync::watch::Sender::new(0),
        }
    }
}

#[derive(Default)]
struct State {
    records: VecDeque<(Lsn, Bytes)>,
    last: Lsn,
    claim: Option<JournalClaim>,
}

impl MemoryJournal {
    pub fn new() -> Self {
        Self::default()
    }
}

impl InlineAppend for MemoryJournal {
    fn append_now(&self, epoch: u64, record: &Bytes) -> Result<Lsn> {
        let mut s = self.inner.lock();
        if let Some(c) = &s.claim
            && epoch < c.epoch
        {
            return Err(fenced_error("in memory", &c.database, epoch, c.epoch));
        }
        s.last += 1;
        let lsn = s.last;
        s.records.push_back((lsn, record.clone()));
        self.last.send_replace(lsn);
        Ok(lsn)
    }
}

#[async_trait]
impl Journal for MemoryJournal {
    fn reach(&self) -> crate::Reach {
        crate::Reach::Node {
            id: self.id.clone(),
        }
    }

    fn appends_wait(&self) -> bool {
        false
    }

    async fn claim(&self, claim: &JournalClaim) -> Result<Claimed> {
        let mut s = self.inner.lock();
        check_claim("in memory", s.claim.as_ref(), claim)?;
        let last_lsn = s.last;
        s.last = s.last.max(claim.flushed_lsn);
        s.claim = Some(claim.clone());
        Ok(Claimed {
            journal: self.id.clone(),
            last_lsn,
        })
    }

    async fn append(&self, epoch: u64, record: Bytes) -> Result<Lsn> {
        self.append_now(epoch, &record)
    }

    fn inline(&self) -> Option<&dyn InlineAppend> {
        Some(self)
    }

    async fn wait_past(&self, lsn: Lsn, limit: Duration) -> Result<()> {
        crate::watch_past(&self.last, lsn, limit).await;
        Ok(())
    }

    async fn replay(&self, from: Lsn) -> Result<BoxStream<Result<JournalRecord>>> {
        let out: Vec<Result<JournalRecord>> = self
            .inner
            .lock()
            .records
            .iter()
            .filter(|(lsn, _)| *lsn >= from)
            .map(|(lsn, payload)| {
                Ok(JournalRecord {
                    lsn: *lsn,
                    payload: payload.clone(),
                })
            })
            .collect();
        Ok(Box::pin(futures::stream::iter(out)))
    }

    async fn truncate(&self, upto: Lsn) -> Result<()> {
        let mut s = self.inner.lock();
        while s.records.front().is_some_and(|(lsn, _)| *lsn <= upto) {
            s.records.pop_front();
        }
        Ok(())
    }

    /// Nothing to release; the same journal may be handed to a new `Db` (tests use this to
    /// reopen an engine whose process "crashed").
    async fn close(&self) -> Result<()> {
        Ok(())
    }
}
