//! The write path: how a write becomes visible. A write joins a write group, whose leader
//! takes its sequence numbers and journals it (`write_group`); where the journal's appends
//! do not wait, it takes them and journals itself, in one critical section with its memtable
//! insert where the journal appends on the caller's thread. It is applied to the active
//! memtable, and becomes visible once every write numbered before it has been applied too.
//! Flushes freeze memtables from here; imports take numbers here that hold visibility back until they are
//! installed.
//!
//! Invariants:
//! - A write holds the gate shared from taking its numbers until it is in the memtable; a
//!   freeze holds it exclusively. So every write lands wholly in the memtable it was
//!   journaled for, and the numbers in a frozen memtable are all below those after it.
//! - Visibility (`SeqTracker`) passes a number only once it is finished: applied, failed or
//!   abandoned. A number left unfinished stops visibility for good, so every path that takes
//!   one finishes it (`Taken`, an import's `release`).
//! - Readers load the memtables before the tables (`Inner::view`), and a flushed memtable
//!   is retired only after its table is installed, so a read never misses a write.

use crate::mem_ranges::MemRanges;
use crate::seq::{SeqTracker, Taken};
use crate::write_group::{Joined, Journaled, Leading, Turn, WriteGroups};
use arc_swap::ArcSwap;
use bytes::Bytes;
use cairn_common::{Entry, EntryKind, Error, RangeTombstone, Result, SeqNo, WriteBatch};
use cairn_journal::{InlineAppend, Journal};
use cairn_memtable::{Memtable, MemtableFactory};
use parking_lot::Mutex;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use tokio::sync::RwLock;

/// A memtable, its range tombstones and the newest journal record applied to it.
pub(crate) struct MemSlot {
    pub table: Arc<dyn Memtable>,
    pub ranges: MemRanges,
    pub max_lsn: AtomicU64,
}

impl MemSlot {
    pub fn new(table: Arc<dyn Memtable>, max_lsn: u64) -> MemSlot {
        MemSlot {
            table,
            ranges: MemRanges::default(),
            max_lsn: AtomicU64::new(max_lsn),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.table.is_empty() && self.ranges.is_empty()
    }

    pub fn approximate_bytes(&self) -> usize {
        self.table.approximate_bytes() + self.ranges.bytes()
    }
}

pub(crate) struct MemState {
    pub active: Arc<MemSlot>,
    /// Frozen memtables, newest first; the last one is flushed next.
    pub immutables: Vec<Arc<MemSlot>>,
}

/// A write journaled and applied (not yet visible).
pub(crate) struct Applied {
    /// The number of its last operation: it is visible once visibility reaches this.
    pub last: SeqNo,
    pub record_bytes: u64,
    /// The active memtable's size after it.
    pub memtable_bytes: usize,
}

pub(crate) struct WritePath {
    gate: RwLock<()>,
    seq: Arc<SeqTracker>,
    /// None where the journal's appends do not wait: every writer appends for itself.
    groups: Option<Arc<WriteGroups>>,
    /// Held by a write from its numbers to its memtable insert, where the journal appends
    /// inline (`journal_and_apply_inline`).
    serial: Mutex<()>,
    mem: ArcSwap<MemState>,
    /// Serialises changes to `mem` (a freeze, a flushed memtable's retirement).
    mem_lock: Mutex<()>,
    /// A freeze is under way: writers that fill the memtable together need only one.
    freezing: AtomicBool,
    memtables: MemtableFactory,
    memtable_bytes: usize,
    max_immutables: usize,
}

impl WritePath {
    /// Starts with `active` and visibility at `last_seq`.
    pub fn new(
        active: MemSlot,
        last_seq: SeqNo,
        memtables: MemtableFactory,
        memtable_bytes: usize,
        max_immutables: usize,
        groups_in_flight: Option<usize>,
    ) -> WritePath {
        WritePath {
            gate: RwLock::new(()),
            seq: Arc::new(SeqTracker::new(last_seq)),
            groups: groups_in_flight.map(|n| Arc::new(WriteGroups::new(n))),
            serial: Mutex::new(()),
            mem: ArcSwap::from_pointee(MemState {
                active: Arc::new(active),
                immutables: Vec::new(),
            }),
            mem_lock: Mutex::new(()),
            freezing: AtomicBool::new(false),
            memtables,
            memtable_bytes,
            max_immutables,
        }
    }

    /// Journals the batch and applies it to the memtable it was journaled for. The batch
    /// joins a write group (`write_group`): its leader takes the group's numbers and journals
    /// it as one record, which carries what is visible now (for replicas); each writer then
    /// applies its own batch. `open` is checked once the gate is held, so nothing is
    /// journaled after a close has begun.
    pub async fn journal_and_apply(
        &self,
        journal: &dyn Journal,
        epoch: u64,
        batch: WriteBatch,
        open: impl FnOnce() -> Result<()>,
    ) -> Result<Applied> {
        // Every writer of a group holds the gate until it has applied its batch, so the
        // memtable cannot be frozen between the group's append and any of its inserts.
        let _shared = self.gate.read().await;
        open()?;
        let Some(groups) = &self.groups else {
            if let Some(inline) = journal.inline() {
                return self.journal_and_apply_inline(inline, epoch, batch);
            }
            let alone = self.append_alone(journal, epoch, batch).await?;
            return Ok(self.apply_journaled(alone));
        };
        let mine = match groups.join(batch) {
            Joined::Lead(batch, leading) => {
                self.lead(groups, journal, epoch, batch, leading).await?
            }
            Joined::Wait(turn) => match turn.await {
                Ok(Turn::Lead(batch, leading)) => {
                    self.lead(groups, journal, epoch, batch, leading).await?
                }
                Ok(Turn::Journaled(j)) => j,
                Ok(Turn::Failed(e)) => return Err(e),
                // Its leader was dropped mid-append, which only a runtime's end does.
                Err(_) => return Err(Error::Closed),
            },
        };
        Ok(self.apply_journaled(mine))
    }

    /// Numbers, journals and applies the batch in one critical section, where the journal
    /// appends on its caller's thread (`Journal::inline`). Writes then finish in the order of
    /// their numbers, so each is visible as it leaves: no writer waits to be woken once
    /// another's thread has applied an older batch. On 2 cores under 4 writers such a
    /// wake-up could sit behind the waker's own work for hundreds of microseconds (a task a
    /// runtime thread wakes runs on that thread, after the task it is running). The writes
    /// this serialises were serialised already: the journal's `write` by its own lock, the
    /// default memtable's inserts by its own.
    fn journal_and_apply_inline(
        &self,
        inline: &dyn InlineAppend,
        epoch: u64,
        batch: WriteBatch,
    ) -> Result<Applied> {
        let _serial = self.serial.lock();
        let (taken, record) = self.numbered(&batch);
        let lsn = inline.append_now(epoch, &record)?;
        Ok(self.apply_journaled(Journaled {
            batch,
            taken,
            lsn,
            record_bytes: record.len() as u64,
        }))
    }

    /// Takes the batch's numbers, finished however its write ends (a failed append included),
    /// and encodes it as a record of its own.
    fn numbered(&self, batch: &WriteBatch) -> (Taken, Bytes) {
        let taken = Taken::new(self.seq.clone(), self.seq.begin(batch.len() as u64));
        let record = batch.encode(taken.first, self.seq.visible());
        (taken, record)
    }

    /// Takes the batch's numbers and journals it as a record of its own: a writer with no
    /// group, or a leader no one queued behind.
    async fn append_alone(
        &self,
        journal: &dyn Journal,
        epoch: u64,
        batch: WriteBatch,
    ) -> Result<Journaled> {
        let (taken, record) = self.numbered(&batch);
        let record_bytes = record.len() as u64;
        let lsn = journal.append(epoch, record).await?;
        Ok(Journaled {
            batch,
            taken,
            lsn,
            record_bytes,
        })
    }

    /// Journals `batch` with the writers queued behind it, as one record, and hands each of
    /// them its batch back journaled (or the failure). The lead passes on as soon as the
    /// append is done.
    async fn lead(
        &self,
        groups: &WriteGroups,
        journal: &dyn Journal,
        epoch: u64,
        batch: WriteBatch,
        leading: Leading,
    ) -> Result<Journaled> {
        let followers = groups.followers(batch.payload_bytes());
        if followers.is_empty() {
            let alone = self.append_alone(journal, epoch, batch).await;
            drop(leading);
            return alone;
        }
        // Guards for every batch's numbers at once, before anything can fail: a number not
        // in a guard would never be finished, and visibility would stop at it.
        let (first, rest) = self.seq.begin_group(
            batch.len() as u64,
            followers.iter().map(|f| f.batch.len() as u64),
        );
        let mine = Taken::new(self.seq.clone(), first);
        let taken: Vec<Taken> = rest
            .into_iter()
            .map(|first| Taken::new(self.seq.clone(), first))
            .collect();
        let record = {
            let mut all = Vec::with_capacity(followers.len() + 1);
            all.push(&batch);
            all.extend(followers.iter().map(|f| &f.batch));
            WriteBatch::encode_group(&all, mine.first, self.seq.visible())
        };
        let record_bytes = record.len() as u64;
        let appended = journal.append(epoch, record).await;
        drop(leading);
        let lsn = match appended {
            Ok(lsn) => lsn,
            Err(e) => {
                for f in followers {
                    let _ = f.turn.send(Turn::Failed(e.duplicate()));
                }
                return Err(e);
            }
        };
        for (f, taken) in followers.into_iter().zip(taken) {
            let journaled = Journaled {
                batch: f.batch,
                taken,
                lsn,
                record_bytes: 0,
            };
            // A follower whose call was dropped (only as the runtime ends) no longer holds
            // the gate, but this leader does: what was journaled is applied here.
            if let Err(Turn::Journaled(j)) = f.turn.send(Turn::Journaled(journaled)) {
                self.apply_journaled(j);
            }
        }
        Ok(Journaled {
            batch,
            taken: mine,
            lsn,
            record_bytes,
        })
    }

    /// Inserts a journaled batch into the active memtable; its numbers are finished as it
    /// returns.
    fn apply_journaled(&self, j: Journaled) -> Applied {
        let last = j.taken.first + j.batch.len() as u64 - 1;
        let mem = self.mem.load();
        apply(&mem.active, j.taken.first, j.batch);
        mem.active.max_lsn.fetch_max(j.lsn, Ordering::Relaxed);
        Applied {
            last,
            record_bytes: j.record_bytes,
            memtable_bytes: mem.active.approximate_bytes(),
        }
    }

    /// The newest number every reader may see.
    pub fn visible(&self) -> SeqNo {
        self.seq.visible()
    }

    /// Waits until `seq` is visible: a write is acknowledged only then.
    pub async fn wait_visible(&self, seq: SeqNo) {
        self.seq.wait_visible(seq).await
    }

    /// A reader shows its writer's writes up to `seq` (it has no writers of its own).
    pub fn advance_to(&self, seq: SeqNo) {
        self.seq.advance_to(seq)
    }

    /// An import's number: taken with the memtable frozen (no memtable then holds writes
    /// from both sides of it) and held, so visibility stops below it until `release`.
    pub async fn hold_for_import(&self) -> SeqNo {
        let _exclusive = self.gate.write().await;
        let seq = self.seq.begin(1);
        self.swap(true);
        seq
    }

    /// Lets visibility pass a number `hold_for_import` took.
    pub fn release(&self, seq: SeqNo) {
        self.seq.finish(seq)
    }

    /// The memtables now, active first.
    pub fn mem(&self) -> Arc<MemState> {
        self.mem.load_full()
    }

    /// Whether writes must wait for a flush: the frozen queue and the active memtable are
    /// both full.
    pub fn is_full(&self) -> bool {
        let mem = self.mem.load();
        mem.immutables.len() >= self.max_immutables
            && mem.active.approximate_bytes() >= self.memtable_bytes
    }

    /// Moves the active memtable to the flush queue, if the queue has room (or `force`, for
    /// an explicit flush) and it holds anything. True if it did.
    pub async fn freeze(&self, force: bool) -> bool {
        // Writers that cross the size limit together need only one freeze between them; a
        // forced freeze always goes ahead, ordered after the other by the gate.
        if self.freezing.swap(true, Ordering::AcqRel) && !force {
            return false;
        }
        let frozen = {
            let _exclusive = self.gate.write().await;
            self.swap(force)
        };
        self.freezing.store(false, Ordering::Release);
        frozen
    }

    /// The body of `freeze`, under the gate held exclusively.
    fn swap(&self, force: bool) -> bool {
        let _g = self.mem_lock.lock();
        let cur = self.mem.load_full();
        let full = cur.active.approximate_bytes() >= self.memtable_bytes;
        let room = cur.immutables.len() < self.max_immutables;
        if cur.active.is_empty() || !(force || (full && room)) {
            return false;
        }
        let mut immutables = Vec::with_capacity(cur.immutables.len() + 1);
        immutables.push(cur.active.clone());
        immutables.extend(cur.immutables.iter().cloned());
        self.mem.store(Arc::new(MemState {
            active: Arc::new(MemSlot::new(
                (self.memtables)(),
                cur.active.max_lsn.load(Ordering::Relaxed),
            )),
            immutables,
        }));
        true
    }

    /// Drops a frozen memtable whose table is installed: readers find its writes there now.
    pub fn retire(&self, slot: &Arc<MemSlot>) {
        let _g = self.mem_lock.lock();
        let cur = self.mem.load_full();
        self.mem.store(Arc::new(MemState {
            active: cur.active.clone(),
            immutables: cur
                .immutables
                .iter()
                .filter(|m| !Arc::ptr_eq(m, slot))
                .cloned()
                .collect(),
        }));
    }

    /// A reader's follower swaps in the memtable of a newer view of its writer.
    pub fn replace(&self, active: MemSlot) {
        let _g = self.mem_lock.lock();
        self.mem.store(Arc::new(MemState {
            active: Arc::new(active),
            immutables: Vec::new(),
        }));
    }

    /// Waits until no write is between taking its numbers and its memtable: at close, so
    /// every write in flight finishes before the journal does.
    pub async fn drain(&self) {
        drop(self.gate.write().await);
    }
}

/// Inserts `batch` into `slot`, numbered from `first`: range tombstones beside the memtable,
/// every other operation in it.
pub(crate) fn apply(slot: &MemSlot, first: SeqNo, batch: WriteBatch) {
    for (i, op) in batch.into_ops().into_iter().enumerate() {
        let seq = first + i as u64;
        if op.kind == EntryKind::RangeDelete {
            slot.ranges
                .insert(RangeTombstone::new(op.key, op.value, seq));
        } else {
            slot.table.insert(Entry {
                key: op.key,
                seq,
                kind: op.kind,
                value: op.value,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_journal::MemoryJournal;
    use cairn_memtable::MemtableOptions;

    fn write_path() -> Arc<WritePath> {
        let memtables = MemtableOptions::default().factory();
        let active = MemSlot::new(memtables(), 0);
        Arc::new(WritePath::new(active, 0, memtables, 1 << 30, 2, None))
    }

    /// Where the journal appends inline, a write is visible as it returns, however many
    /// writers run at once: none of them needs another's thread to run before it is
    /// acknowledged. (Numbered, journaled and applied apart, a write returned here while an
    /// older one was still between its number and its insert.)
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn an_inline_write_is_visible_as_it_returns() {
        let (path, journal) = (write_path(), Arc::new(MemoryJournal::new()));
        let writers: Vec<_> = (0..4)
            .map(|w| {
                let (path, journal) = (path.clone(), journal.clone());
                tokio::spawn(async move {
                    for i in 0..5_000 {
                        let mut batch = WriteBatch::new();
                        batch.put(format!("k{w}-{i}"), "v");
                        let applied = path
                            .journal_and_apply(journal.as_ref(), 1, batch, || Ok(()))
                            .await
                            .unwrap();
                        assert!(
                            path.visible() >= applied.last,
                            "write {} returned with visibility at {}",
                            applied.last,
                            path.visible()
                        );
                    }
                })
            })
            .collect();
        for w in writers {
            w.await.unwrap();
        }
        assert_eq!(path.visible(), 20_000);
    }

    /// A refused inline append finishes the numbers it took: later writes become visible.
    #[tokio::test]
    async fn a_refused_inline_append_does_not_hold_visibility_back() {
        let (path, journal) = (write_path(), MemoryJournal::new());
        let claim = |epoch| cairn_journal::JournalClaim {
            database: "db".into(),
            epoch,
            flushed_lsn: 0,
        };
        journal.claim(&claim(2)).await.unwrap();
        let batch = || {
            let mut b = WriteBatch::new();
            b.put("k", "v");
            b
        };
        let refused = path
            .journal_and_apply(&journal, 1, batch(), || Ok(()))
            .await;
        assert!(matches!(refused, Err(Error::Fenced(_))));
        let applied = path
            .journal_and_apply(&journal, 2, batch(), || Ok(()))
            .await
            .unwrap();
        assert_eq!((applied.last, path.visible()), (2, 2));
    }
}
