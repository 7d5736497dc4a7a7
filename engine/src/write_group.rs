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
    Lead(WriteBatch),
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
    Lead(WriteBatch),
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

    /// Leads at once if no group is under way, or queues behind it.
    pub fn join(&self, batch: WriteBatch) -> Joined {
        let mut s = self.state.lock();
        if s.leaders < self.max_leaders {
            s.leaders += 1;
            return Joined::Lead(batch);
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
    fn hand_over(&self) {
        let mut s = self.state.lock();
        while let Some(next) = s.queue.pop_front() {
            // A writer whose call was dropped while queued (only as the runtime ends) has
            // nothing taken and nothing journaled: its batch goes with it.
            if next.turn.send(Turn::Lead(next.batch)).is_ok() {
                return;
            }
        }
        s.leaders -= 1;
    }
}

/// A group's lead, handed over when dropped: the leader drops it once its append is done,
/// so the next group's append can overlap this group's memtable inserts.
pub(crate) struct Leading<'a>(pub &'a WriteGroups);

impl Drop for Leading<'_> {
    fn drop(&mut self) {
        self.0.hand_over();
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

    #[test]
    fn the_first_writer_leads_and_the_next_queue_behind_it() {
        let g = WriteGroups::new(1);
        assert!(matches!(g.join(batch(10)), Joined::Lead(_)));
        let (Joined::Wait(mut a), Joined::Wait(mut b)) = (g.join(batch(10)), g.join(batch(10)))
        else {
            panic!("a group is under way");
        };
        drop(Leading(&g));
        assert!(
            matches!(a.try_recv(), Ok(Turn::Lead(_))),
            "the oldest leads next"
        );
        assert!(b.try_recv().is_err(), "the other still waits");
        assert_eq!(g.followers(10).len(), 1);
        drop(Leading(&g));
        assert!(
            matches!(g.join(batch(10)), Joined::Lead(_)),
            "the lead lapsed"
        );
    }

    #[test]
    fn a_group_stops_at_its_byte_bound_and_skips_writers_gone() {
        let g = WriteGroups::new(1);
        let _lead = g.join(batch(10));
        let waits: Vec<_> = (0..4).map(|_| g.join(batch(GROUP_BYTES / 3))).collect();
        let taken = g.followers(10);
        assert_eq!(taken.len(), 2, "a third would pass GROUP_BYTES");
        drop(waits);
        drop(Leading(&g));
        assert!(
            matches!(g.join(batch(10)), Joined::Lead(_)),
            "the writers left in the queue were gone, so the lead lapsed"
        );
    }
}
