//! Which versions of each key survive a flush or a compaction, and what they become. Every
//! reader at or after the oldest snapshot must read what it read before:
//! - versions newer than the oldest snapshot stay as they are;
//! - of the rest, the newest (the one every reader sees) decides, and older ones go;
//! - a range tombstone every reader sees removes what it covers;
//! - merge operands every reader sees fold into one value once their base is known (a put, a
//!   tombstone, or nothing below the output), and into one operand where the operator can;
//! - an expiring put past its expiry becomes a tombstone, and a compaction filter's removal
//!   does too (at the bottom, where nothing older hides below, nothing is left).

use crate::CompactionJob;
use bytes::Bytes;
use cairn_common::{
    CompactionFilter, Entry, EntryKind, FilterDecision, MergeOperator, Operators, RangeDeletes,
    Result, SeqNo, split_expiring,
};
use std::sync::Arc;

/// What decides a job's versions, its operators resolved.
#[derive(Clone)]
pub struct Rules {
    pub oldest_snapshot: SeqNo,
    /// Nothing older lies below the output: tombstones every reader sees can go.
    pub drop_tombstones: bool,
    /// The time expiring puts are judged against.
    pub now_ms: u64,
    pub merge: Option<Arc<dyn MergeOperator>>,
    pub filter: Option<Arc<dyn CompactionFilter>>,
}

impl Rules {
    /// A job's rules, its operators looked up in the job's own registry (an engine running
    /// the job in process) or else in `registry` (a worker's).
    pub fn of(job: &CompactionJob, registry: &Operators) -> Result<Rules> {
        let ops = job.operators.as_ref().unwrap_or(registry);
        Ok(Rules {
            oldest_snapshot: job.oldest_snapshot,
            drop_tombstones: job.drop_tombstones,
            now_ms: job.now_ms,
            merge: job
                .merge_operator
                .as_deref()
                .map(|n| ops.merge(n))
                .transpose()?,
            filter: job
                .compaction_filter
                .as_deref()
                .map(|n| ops.filter(n))
                .transpose()?,
        })
    }
}

enum State {
    /// No version at or below the oldest snapshot met yet.
    Open,
    /// The deciding version is out; older ones are shadowed for every reader.
    Settled,
    /// Merge operands every reader sees, newest first, waiting for their base.
    Folding(Vec<Entry>),
    /// Operands with no operator to fold them: everything is kept as it is.
    KeepAll,
}

pub struct VersionFilter {
    rules: Rules,
    /// The range tombstones every reader sees.
    covered: RangeDeletes,
    current: Option<Bytes>,
    state: State,
}

impl VersionFilter {
    pub fn new(rules: Rules, covered: RangeDeletes) -> Self {
        VersionFilter {
            rules,
            covered,
            current: None,
            state: State::Open,
        }
    }

    /// Takes the next entry in internal order and appends what survives of it to `out`.
    /// Callers keep range tombstones aside (they are not versions of their start key) and
    /// add them to the survivors in order.
    pub fn push(&mut self, e: Entry, out: &mut Vec<Entry>) -> Result<()> {
        debug_assert!(!e.is_range_delete(), "range tombstones are kept aside");
        if self.current.as_ref() != Some(&e.key) {
            self.finish(out)?;
            self.current = Some(e.key.clone());
        }
        if e.seq > self.rules.oldest_snapshot || matches!(self.state, State::KeepAll) {
            out.push(e);
            return Ok(());
        }
        let covered = self.covered.deletes(&e.key, e.seq, SeqNo::MAX);
        match std::mem::replace(&mut self.state, State::Settled) {
            State::Settled | State::KeepAll => {}
            State::Open if covered => {}
            State::Open => self.settle(e, out),
            State::Folding(ops) if covered => self.fold(ops, None, out)?,
            State::Folding(mut ops) => match e.kind {
                EntryKind::Merge => {
                    ops.push(e);
                    self.state = State::Folding(ops);
                }
                EntryKind::Put => self.fold(ops, Some(&e.value), out)?,
                EntryKind::Delete | EntryKind::RangeDelete => self.fold(ops, None, out)?,
                EntryKind::Expiring => match split_expiring(&e.value) {
                    Some((at, _)) if self.rules.now_ms < at => {
                        // A folded value would outlive the put it folded in, or expire with
                        // it, and a reader after the expiry reads neither: keep them apart.
                        self.partial(ops, out);
                        out.push(e);
                    }
                    _ => self.fold(ops, None, out)?,
                },
            },
        }
        Ok(())
    }

    /// Ends the current key (and the input, when called last).
    pub fn finish(&mut self, out: &mut Vec<Entry>) -> Result<()> {
        if let State::Folding(ops) = std::mem::replace(&mut self.state, State::Open) {
            if self.rules.drop_tombstones {
                self.fold(ops, None, out)?;
            } else {
                self.partial(ops, out);
            }
        }
        self.state = State::Open;
        Ok(())
    }

    /// The version every reader sees, first of its key.
    fn settle(&mut self, e: Entry, out: &mut Vec<Entry>) {
        let value = match e.kind {
            EntryKind::Merge if self.rules.merge.is_some() => {
                self.state = State::Folding(vec![e]);
                return;
            }
            EntryKind::Merge => {
                out.push(e);
                self.state = State::KeepAll;
                return;
            }
            EntryKind::Delete | EntryKind::RangeDelete => return self.tombstone(e, out),
            EntryKind::Put => (None, e.value.clone()),
            EntryKind::Expiring => match split_expiring(&e.value) {
                Some((at, v)) if self.rules.now_ms < at => (Some(at), v),
                _ => return self.tombstone(e, out),
            },
        };
        let decision = match &self.rules.filter {
            Some(f) => f.filter(&e.key, &value.1),
            None => FilterDecision::Keep,
        };
        match (decision, value.0) {
            (FilterDecision::Keep, _) => out.push(e),
            (FilterDecision::Remove, _) => self.tombstone(e, out),
            (FilterDecision::Change(v), None) => out.push(Entry::put(e.key, e.seq, v)),
            (FilterDecision::Change(v), Some(at)) => {
                out.push(Entry::expiring(e.key, e.seq, &v, at))
            }
        }
    }

    /// `e`'s key is absent from `e`'s version down: a tombstone, unless nothing below needs
    /// hiding.
    fn tombstone(&self, e: Entry, out: &mut Vec<Entry>) {
        if !self.rules.drop_tombstones {
            out.push(Entry::delete(e.key, e.seq));
        }
    }

    /// Operands (newest first) over `base`, folded into a put at the newest one's number.
    fn fold(&self, ops: Vec<Entry>, base: Option<&[u8]>, out: &mut Vec<Entry>) -> Result<()> {
        let Some(op) = &self.rules.merge else {
            out.extend(ops);
            return Ok(());
        };
        let operands: Vec<Bytes> = ops.iter().rev().map(|e| e.value.clone()).collect();
        let newest = &ops[0];
        let value = op.full_merge(&newest.key, base, &operands)?;
        out.push(Entry::put(newest.key.clone(), newest.seq, value));
        Ok(())
    }

    /// Operands (newest first) whose base is not known here, as one operand where the
    /// operator can fold them alone.
    fn partial(&self, ops: Vec<Entry>, out: &mut Vec<Entry>) {
        if ops.len() > 1
            && let Some(op) = &self.rules.merge
        {
            let operands: Vec<Bytes> = ops.iter().rev().map(|e| e.value.clone()).collect();
            if let Some(v) = op.partial_merge(&ops[0].key, &operands) {
                out.push(Entry::merge(ops[0].key.clone(), ops[0].seq, v));
                return;
            }
        }
        out.extend(ops);
    }
}

/// The survivors of an iterator of entries in internal order, as an iterator, for writers
/// that take plain entries (a flush). An operator's error ends the entries early and is kept
/// in `error` for the caller to check once the writer is done.
pub struct Survivors<I> {
    entries: I,
    filter: VersionFilter,
    ready: std::collections::VecDeque<Entry>,
    buf: Vec<Entry>,
    done: bool,
    pub error: Option<cairn_common::Error>,
}

impl<I: Iterator<Item = Entry>> Survivors<I> {
    pub fn new(entries: I, filter: VersionFilter) -> Self {
        Survivors {
            entries,
            filter,
            ready: Default::default(),
            buf: Vec::new(),
            done: false,
            error: None,
        }
    }
}

impl<I: Iterator<Item = Entry>> Iterator for &mut Survivors<I> {
    type Item = Entry;

    fn next(&mut self) -> Option<Entry> {
        loop {
            if let Some(e) = self.ready.pop_front() {
                return Some(e);
            }
            if self.done {
                return None;
            }
            let step = match self.entries.next() {
                Some(e) => self.filter.push(e, &mut self.buf),
                None => {
                    self.done = true;
                    self.filter.finish(&mut self.buf)
                }
            };
            if let Err(e) = step {
                self.error = Some(e);
                self.done = true;
                self.ready.clear();
                return None;
            }
            self.ready.extend(self.buf.drain(..));
        }
    }
}
