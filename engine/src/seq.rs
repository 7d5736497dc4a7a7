//! Sequence numbers and visibility. Writers take a range of sequence numbers, then journal
//! and apply their batch concurrently with others; a sequence number becomes visible to
//! readers only once every batch at or below it has been applied, so a reader never sees a
//! later write without an earlier one.

use cairn_common::SeqNo;
use parking_lot::Mutex;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::sync::oneshot;

pub struct SeqTracker {
    inner: Mutex<Inner>,
    visible: AtomicU64,
}

struct Inner {
    next: SeqNo,
    /// First sequence number of every batch taken but not yet applied.
    in_flight: BTreeSet<SeqNo>,
    /// Writers waiting for their batch to become visible, by its last sequence number: each
    /// is woken once, when visibility reaches it (not at every advance, which with hundreds of
    /// writers in one group commit would wake each of them hundreds of times).
    waiting: BTreeMap<SeqNo, Vec<oneshot::Sender<()>>>,
}

impl SeqTracker {
    /// Continues after `last`, the newest sequence number known to be applied.
    pub fn new(last: SeqNo) -> Self {
        SeqTracker {
            inner: Mutex::new(Inner {
                next: last + 1,
                in_flight: BTreeSet::new(),
                waiting: BTreeMap::new(),
            }),
            visible: AtomicU64::new(last),
        }
    }

    /// Reserves `n` consecutive sequence numbers and returns the first.
    pub fn begin(&self, n: u64) -> SeqNo {
        let mut s = self.inner.lock();
        let first = s.next;
        s.next += n;
        s.in_flight.insert(first);
        first
    }

    /// Reserves consecutive numbers for a write group: `lead` for its leader's batch, then
    /// `rest` for each of the others'. Returns each batch's first: one record numbers them
    /// all in a row.
    pub fn begin_group(&self, lead: u64, rest: impl Iterator<Item = u64>) -> (SeqNo, Vec<SeqNo>) {
        let mut s = self.inner.lock();
        let mut take = |n: u64| {
            let first = s.next;
            s.next += n;
            s.in_flight.insert(first);
            first
        };
        let first = take(lead);
        (first, rest.map(take).collect())
    }

    /// Marks the batch starting at `first` applied (or abandoned) and advances visibility.
    pub fn finish(&self, first: SeqNo) {
        let mut s = self.inner.lock();
        s.in_flight.remove(&first);
        let visible = match s.in_flight.first() {
            Some(&oldest) => oldest - 1,
            None => s.next - 1,
        };
        self.visible.fetch_max(visible, Ordering::Release);
        if s.waiting.is_empty() {
            return;
        }
        let later = s.waiting.split_off(&(visible + 1));
        let ready = std::mem::replace(&mut s.waiting, later);
        drop(s);
        for tx in ready.into_values().flatten() {
            let _ = tx.send(());
        }
    }

    /// Waits until `seq` is visible: a write is acknowledged only then, so that its caller
    /// reads it back (while an older batch of another writer is still being journaled, a
    /// finished batch is applied but not yet visible).
    pub async fn wait_visible(&self, seq: SeqNo) {
        if self.visible() >= seq {
            return;
        }
        let ready = {
            let mut s = self.inner.lock();
            // Checked again under the lock, which `finish` holds while it advances visibility.
            if self.visible() >= seq {
                return;
            }
            let (tx, rx) = oneshot::channel();
            s.waiting.entry(seq).or_default().push(tx);
            rx
        };
        let _ = ready.await;
    }

    /// Makes everything up to `seq` visible at once: a reader's follower publishes each
    /// batch of its writer's it has applied (there are no writers of its own in flight).
    pub fn advance_to(&self, seq: SeqNo) {
        let mut s = self.inner.lock();
        s.next = s.next.max(seq + 1);
        self.visible.fetch_max(seq, Ordering::Release);
    }

    pub fn visible(&self) -> SeqNo {
        self.visible.load(Ordering::Acquire)
    }
}

/// A batch's numbers, finished when dropped: however its write ends (applied, failed, or
/// abandoned), visibility is not held back by it.
pub(crate) struct Taken {
    seq: Arc<SeqTracker>,
    pub first: SeqNo,
}

impl Taken {
    pub fn new(seq: Arc<SeqTracker>, first: SeqNo) -> Taken {
        Taken { seq, first }
    }
}

impl Drop for Taken {
    fn drop(&mut self) {
        self.seq.finish(self.first);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn visibility_waits_for_the_oldest_batch_in_flight() {
        let t = SeqTracker::new(10);
        let a = t.begin(2); // 11, 12
        let b = t.begin(1); // 13
        assert_eq!((a, b), (11, 13));
        t.finish(b);
        assert_eq!(t.visible(), 10, "13 is applied but 11-12 are not");
        t.finish(a);
        assert_eq!(t.visible(), 13);
    }

    #[tokio::test]
    async fn a_writer_waits_until_its_batch_is_visible() {
        let t = std::sync::Arc::new(SeqTracker::new(10));
        let a = t.begin(1); // 11
        let b = t.begin(1); // 12
        t.finish(b);
        let waiter = {
            let t = t.clone();
            tokio::spawn(async move { t.wait_visible(b).await })
        };
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished(), "11 is not applied yet");
        t.finish(a);
        waiter.await.unwrap();
        t.wait_visible(12).await;
    }

    #[test]
    fn a_group_numbers_its_batches_in_a_row_and_each_finishes_alone() {
        let t = Arc::new(SeqTracker::new(10));
        let (lead, rest) = t.begin_group(2, [1, 3].into_iter());
        assert_eq!((lead, rest.clone()), (11, vec![13, 14]));
        let mut taken: Vec<_> = std::iter::once(lead)
            .chain(rest)
            .map(|f| Taken::new(t.clone(), f))
            .collect();
        drop(taken.remove(1));
        assert_eq!(t.visible(), 10, "11-12 are still in flight");
        drop(taken.remove(0));
        assert_eq!(t.visible(), 13);
        drop(taken);
        assert_eq!(t.visible(), 16);
    }
}
