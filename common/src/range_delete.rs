//! Range tombstones and the form readers check keys against.
//!
//! A range tombstone deletes every version older than itself of the keys in `[start, end)`.
//! It travels as an entry (`EntryKind::RangeDelete`, key = start, value = end) through batches,
//! journals, table builders and the wire, in internal order at its start key. Readers cannot
//! meet it in key order (it covers keys after its own), so each memtable and table keeps its
//! tombstones aside, and readers check a key against them cut into `RangeDeletes`: pieces that
//! do not overlap, each with the sequence numbers of every tombstone over it, as RocksDB's
//! fragmented range tombstones do.

use crate::entry::{Entry, EntryKind, SeqNo};
use crate::error::{Error, Result};
use bytes::Bytes;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RangeTombstone {
    pub start: Bytes,
    /// Excluded.
    pub end: Bytes,
    pub seq: SeqNo,
}

impl RangeTombstone {
    pub fn new(start: impl Into<Bytes>, end: impl Into<Bytes>, seq: SeqNo) -> Self {
        RangeTombstone {
            start: start.into(),
            end: end.into(),
            seq,
        }
    }

    /// The tombstone an entry carries; an error for any other kind, or for an empty range.
    pub fn from_entry(e: &Entry) -> Result<Self> {
        if e.kind != EntryKind::RangeDelete {
            return Err(Error::InvalidArgument(format!(
                "a {:?} entry is not a range tombstone",
                e.kind
            )));
        }
        check_bounds(&e.key, &e.value)?;
        Ok(RangeTombstone::new(e.key.clone(), e.value.clone(), e.seq))
    }

    pub fn to_entry(&self) -> Entry {
        Entry::range_delete(self.start.clone(), self.end.clone(), self.seq)
    }

    pub fn covers(&self, key: &[u8]) -> bool {
        self.start.as_ref() <= key && key < self.end.as_ref()
    }
}

/// Refuses a range that deletes nothing: its end must come after its start.
pub fn check_bounds(start: &[u8], end: &[u8]) -> Result<()> {
    if start < end {
        Ok(())
    } else {
        Err(Error::InvalidArgument(format!(
            "a range delete needs its start before its end (got {:?} to {:?})",
            String::from_utf8_lossy(start),
            String::from_utf8_lossy(end)
        )))
    }
}

/// One piece of `RangeDeletes`: the keys `[start, end)` and the sequence numbers of every
/// tombstone over all of them, newest first.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Piece {
    start: Bytes,
    end: Bytes,
    seqs: Vec<SeqNo>,
}

/// Tombstones cut at every start and end into pieces that do not overlap, sorted by key, so
/// that finding what covers a key is a binary search.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RangeDeletes {
    pieces: Vec<Piece>,
    /// The tombstones as given, for writing them out again.
    tombstones: Vec<RangeTombstone>,
}

impl RangeDeletes {
    pub fn new(tombstones: impl IntoIterator<Item = RangeTombstone>) -> Self {
        let mut tombstones: Vec<RangeTombstone> =
            tombstones.into_iter().filter(|t| t.start < t.end).collect();
        tombstones.sort_by(|a, b| a.start.cmp(&b.start).then(b.seq.cmp(&a.seq)));
        tombstones.dedup();
        let mut bounds: Vec<&Bytes> = tombstones.iter().flat_map(|t| [&t.start, &t.end]).collect();
        bounds.sort();
        bounds.dedup();
        let mut pieces: Vec<Piece> = Vec::new();
        let mut active: Vec<(&Bytes, SeqNo)> = Vec::new();
        let mut next = 0;
        for w in bounds.windows(2) {
            let (lo, hi) = (w[0], w[1]);
            active.retain(|(end, _)| *end > lo);
            while let Some(t) = tombstones.get(next).filter(|t| t.start <= *lo) {
                active.push((&t.end, t.seq));
                next += 1;
            }
            if active.is_empty() {
                continue;
            }
            let mut seqs: Vec<SeqNo> = active.iter().map(|(_, s)| *s).collect();
            seqs.sort_unstable_by(|a, b| b.cmp(a));
            seqs.dedup();
            match pieces.last_mut() {
                Some(p) if p.end == lo && p.seqs == seqs => p.end = hi.clone(),
                _ => pieces.push(Piece {
                    start: lo.clone(),
                    end: hi.clone(),
                    seqs,
                }),
            }
        }
        RangeDeletes { pieces, tombstones }
    }

    pub fn is_empty(&self) -> bool {
        self.tombstones.is_empty()
    }

    pub fn tombstones(&self) -> &[RangeTombstone] {
        &self.tombstones
    }

    /// The newest tombstone over `key` that `snapshot` sees, if any.
    pub fn covering(&self, key: &[u8], snapshot: SeqNo) -> Option<SeqNo> {
        let i = self.pieces.partition_point(|p| p.end.as_ref() <= key);
        let p = self.pieces.get(i)?;
        if p.start.as_ref() > key {
            return None;
        }
        p.seqs.iter().copied().find(|&s| s <= snapshot)
    }

    /// Whether a tombstone that `snapshot` sees deletes `e` (a version of a key).
    pub fn deletes(&self, key: &[u8], seq: SeqNo, snapshot: SeqNo) -> bool {
        self.covering(key, snapshot).is_some_and(|t| t > seq)
    }
}

/// `entries` (in internal order) with `tombstones` put in among them at their start keys, in
/// internal order too: what a table builder takes.
pub fn interleave<I>(entries: I, tombstones: &[RangeTombstone]) -> Interleave<I::IntoIter>
where
    I: IntoIterator<Item = Entry>,
{
    let mut ranges: Vec<Entry> = tombstones.iter().map(RangeTombstone::to_entry).collect();
    ranges.sort_by(|a, b| b.cmp_internal(a));
    Interleave {
        entries: entries.into_iter().peekable(),
        ranges,
    }
}

pub struct Interleave<I: Iterator<Item = Entry>> {
    entries: std::iter::Peekable<I>,
    /// Last first.
    ranges: Vec<Entry>,
}

impl<I: Iterator<Item = Entry>> Iterator for Interleave<I> {
    type Item = Entry;

    fn next(&mut self) -> Option<Entry> {
        match (self.entries.peek(), self.ranges.last()) {
            (Some(e), Some(r)) if r.cmp_internal(e).is_lt() => self.ranges.pop(),
            (Some(_), _) => self.entries.next(),
            (None, _) => self.ranges.pop(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &'static str, e: &'static str, seq: SeqNo) -> RangeTombstone {
        RangeTombstone::new(
            Bytes::from_static(s.as_bytes()),
            Bytes::from_static(e.as_bytes()),
            seq,
        )
    }

    #[test]
    fn a_key_is_covered_by_the_newest_tombstone_its_snapshot_sees() {
        let r = RangeDeletes::new([t("b", "f", 10), t("d", "h", 20), t("x", "z", 5)]);
        assert_eq!(r.covering(b"a", 100), None);
        assert_eq!(r.covering(b"b", 100), Some(10));
        assert_eq!(r.covering(b"d", 100), Some(20));
        assert_eq!(r.covering(b"d", 15), Some(10));
        assert_eq!(r.covering(b"d", 9), None);
        assert_eq!(
            r.covering(b"f", 100),
            Some(20),
            "f is past the first, inside the second"
        );
        assert_eq!(r.covering(b"h", 100), None, "ends are excluded");
        assert_eq!(r.covering(b"y", 100), Some(5));
        assert!(r.deletes(b"c", 9, 100));
        assert!(
            !r.deletes(b"c", 11, 100),
            "a version newer than the tombstone stays"
        );
    }

    #[test]
    fn overlapping_tombstones_are_cut_into_disjoint_pieces() {
        let r = RangeDeletes::new([t("a", "m", 3), t("c", "e", 7), t("a", "m", 3)]);
        let cuts: Vec<_> = r
            .pieces
            .iter()
            .map(|p| (p.start.clone(), p.end.clone(), p.seqs.clone()))
            .collect();
        let b = |s: &'static str| Bytes::from_static(s.as_bytes());
        assert_eq!(
            cuts,
            vec![
                (b("a"), b("c"), vec![3]),
                (b("c"), b("e"), vec![7, 3]),
                (b("e"), b("m"), vec![3]),
            ]
        );
        assert_eq!(r.tombstones().len(), 2, "the duplicate is kept once");
    }

    #[test]
    fn tombstones_are_put_in_at_their_start_keys() {
        let entries = vec![
            Entry::put("a", 1, "x"),
            Entry::put("c", 9, "y"),
            Entry::put("c", 2, "z"),
        ];
        let out: Vec<(Bytes, SeqNo)> = interleave(entries, &[t("c", "d", 5), t("b", "c", 3)])
            .map(|e| (e.key, e.seq))
            .collect();
        let b = |s: &'static str| Bytes::from_static(s.as_bytes());
        assert_eq!(
            out,
            vec![
                (b("a"), 1),
                (b("b"), 3),
                (b("c"), 9),
                (b("c"), 5),
                (b("c"), 2)
            ]
        );
    }

    #[test]
    fn an_empty_range_is_refused_and_an_entry_round_trips() {
        assert!(check_bounds(b"b", b"a").is_err());
        assert!(check_bounds(b"a", b"a").is_err());
        let x = t("a", "b", 4);
        assert_eq!(RangeTombstone::from_entry(&x.to_entry()).unwrap(), x);
        assert!(RangeTombstone::from_entry(&Entry::put("a", 1, "v")).is_err());
    }
}
