//! Write groups: the queue in which writers wait while another writer's group is in the
//! journal, and the hand-over that makes the oldest of them lead the next group. As in
//! RocksDB's write group, a group costs one journal append, one reservation of sequence
//! numbers and one wake-up of its leader however many writers it holds; under load the
//! writers that arrive during one append are the next group, so the group grows with the
//! journal's latency (a synced file, a journal server) and a lone writer leads itself at
//! once. `WritePath::journal_and_apply` leads and applies; this file only queues.

use cairn_common::{Error, Lsn, WriteBatch};
use parking_lot::Mutex;
use std::collections::VecDeque;
use std::sync::Arc;
use tokio::sync::oneshot;

use crate::seq::Taken;

/// A leader takes queued writers into its group while the group's keys and values stay
/// within this (RocksDB's `max_write_batch_group_size_bytes`): a larger group would make its
/// first writers wait on the last ones' bytes. A leader's own batch may be larger.
pub(crate) const GROUP_BYTES: usize = 1 << 20;

/// A writer waiting in the queue: its batch, and where its turn is sent.
pub(crate) struct Joiner {
    pub batch: WriteBatch,
    pub turn: oneshot::Sender<Turn>,
}

/// What a waiting writer is told.
pub(crate) enum Turn {
    /// Lead the next group, starting with this batch (its own, given back).
    Lead(WriteBatch, Leading),
    /// A leader journaled this batch in its group: apply it.
    Journaled(Journaled),
    /// The group's append failed: nothing of the batch was acknowledged.
    Failed(Error),
}

/// A batch in the journal, with its numbers: applied next, by its own writer.
pub(crate) struct Journaled {
    pub batch: WriteBatch,
    pub taken: Taken,
    pub lsn: Lsn,
    /// The group record's size for its leader, 0 for the others (so counters add up).
    pub record_bytes: u64,
}

/// How a writer joined: it leads now, or waits for its turn.
pub(crate) enum Joined {
    Lead(WriteBatch, Leading),
    Wait(oneshot::Receiver<Turn>),
}

pub(crate) struct WriteGroups {
    state: Mutex<State>,
    max_leaders: usize,
}

#[derive(Default)]
struct State {
    /// Groups being formed or in the journal.
    leaders: usize,
    queue: VecDeque<Joiner>,
}

impl WriteGroups {
    /// Groups with up to `in_flight` in the journal at once (at least one).
    pub fn new(in_flight: usize) -> WriteGroups {
        WriteGroups {
            state: Mutex::default(),
            max_leaders: in_flight.max(1),
        }
    }

    /// Leads at once if fewer than the bound of groups are under way, or queues behind them.
    pub fn join(self: &Arc<Self>, batch: WriteBatch) -> Joined {
        let mut s = self.state.lock();
        if s.leaders < self.max_leaders {
            s.leaders += 1;
            return Joined::Lead(batch, Leading(Some(self.clone())));
        }
        let (turn, rx) = oneshot::channel();
        s.queue.push_back(Joiner { batch, turn });
        Joined::Wait(rx)
    }

    /// The leader's followers: queued writers, oldest first, while the group stays within
    /// `GROUP_BYTES` (counting the leader's `leader_bytes`).
    pub fn followers(&self, leader_bytes: usize) -> Vec<Joiner> {
        let mut s = self.state.lock();
        let mut bytes = leader_bytes;
        let mut n = 0;
        for j in &s.queue {
            bytes += j.batch.payload_bytes();
            if bytes > GROUP_BYTES {
                break;
            }
            n += 1;
        }
        s.queue.drain(..n).collect()
    }

    /// The lead passes to the oldest queued writer, or lapses if none is queued.
    fn hand_over(self: &Arc<Self>) {
        let mut s = self.state.lock();
        while let Some(next) = s.queue.pop_front() {
            let lead = Leading(Some(self.clone()));
            match next.turn.send(Turn::Lead(next.batch, lead)) {
                Ok(()) => return,
                // A writer whose call was dropped while queued (only as a runtime ends) has
                // nothing taken and nothing journaled: its batch goes with it, and the lead
                // comes back here (defused: this lock is held).
                Err(Turn::Lead(_, mut lead)) => lead.0 = None,
                Err(_) => {}
            }
        }
        s.leaders -= 1;
    }
}

/// A group's lead: an owned token, handed over wherever it is dropped. Its leader drops it
/// once its append is done, so the next group's append can overlap this group's memtable
/// inserts; one sent to a writer whose call is dropped before it takes it up passes on too,
/// or the groups it counts would be stuck for good.
pub(crate) struct Leading(Option<Arc<WriteGroups>>);

impl Drop for Leading {
    fn drop(&mut self) {
        if let Some(groups) = self.0.take() {
            groups.hand_over();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(bytes: usize) -> WriteBatch {
        let mut b = WriteBatch::new();
        b.put("k", vec![0u8; bytes - 1]);
        b
    }

    fn lead(j: Joined) -> Leading {
        match j {
            Joined::Lead(_, lead) => lead,
            Joined::Wait(_) => panic!("it should lead"),
        }
    }

    fn wait(j: Joined) -> oneshot::Receiver<Turn> {
        match j {
            Joined::Wait(rx) => rx,
            Joined::Lead(..) => panic!("it should wait"),
        }
    }

    #[test]
    fn the_first_writer_leads_and_the_next_queue_behind_it() {
        let g = Arc::new(WriteGroups::new(1));
        let first = lead(g.join(batch(10)));
        let (mut a, mut b) = (wait(g.join(batch(10))), wait(g.join(batch(10))));
        drop(first);
        let Ok(Turn::Lead(_, second)) = a.try_recv() else {
            panic!("the oldest leads next");
        };
        assert!(b.try_recv().is_err(), "the other still waits");
        assert_eq!(g.followers(10).len(), 1);
        drop(second);
        lead(g.join(batch(10)));
    }

    #[test]
    fn a_group_stops_at_its_byte_bound_and_skips_writers_gone() {
        let g = Arc::new(WriteGroups::new(1));
        let first = lead(g.join(batch(10)));
        let waits: Vec<_> = (0..4)
            .map(|_| wait(g.join(batch(GROUP_BYTES / 3))))
            .collect();
        let taken = g.followers(10);
        assert_eq!(taken.len(), 2, "a third would pass GROUP_BYTES");
        drop(waits);
        drop(first);
        lead(g.join(batch(10)));
    }

    /// A writer told to lead whose call is dropped before it takes the lead up (its
    /// runtime ended) passes it on, or every later writer would queue for good.
    #[test]
    fn a_lead_dropped_unopened_passes_to_the_next_writer() {
        let g = Arc::new(WriteGroups::new(1));
        let first = lead(g.join(batch(10)));
        let (gone, mut next) = (wait(g.join(batch(10))), wait(g.join(batch(10))));
        drop(first);
        drop(gone);
        assert!(matches!(next.try_recv(), Ok(Turn::Lead(..))));
    }

    #[test]
    fn up_to_the_bound_of_groups_lead_at_once() {
        let g = Arc::new(WriteGroups::new(2));
        let (a, b) = (lead(g.join(batch(10))), lead(g.join(batch(10))));
        let mut c = wait(g.join(batch(10)));
        drop(a);
        assert!(matches!(c.try_recv(), Ok(Turn::Lead(..))));
        drop(b);
    }
}
