//! A journal that keeps records in memory: for tests, and for users who accept losing the
//! writes not yet flushed when the process ends.

use crate::{Journal, JournalRecord};
use async_trait::async_trait;
use bytes::Bytes;
use cairn_common::{BoxStream, Lsn, Result};
use parking_lot::Mutex;
use std::collections::VecDeque;

#[derive(Default)]
pub struct MemoryJournal {
    inner: Mutex<State>,
}

#[derive(Default)]
struct State {
    records: VecDeque<(Lsn, Bytes)>,
    last: Lsn,
}

impl MemoryJournal {
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait]
impl Journal for MemoryJournal {
    async fn append(&self, record: Bytes) -> Result<Lsn> {
        let mut s = self.inner.lock();
        s.last += 1;
        let lsn = s.last;
        s.records.push_back((lsn, record));
        Ok(lsn)
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
