//! An entry is one version of one key. Versions are ordered by user key ascending, then
//! sequence number descending, so the newest visible version of a key is met first.

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::cmp::Ordering;
use std::ops::Bound;

/// Sequence number: the logical time of a write. A snapshot at `s` sees versions with seq <= s.
pub type SeqNo = u64;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[repr(u8)]
pub enum EntryKind {
    Put = 0,
    Delete = 1,
    /// A range tombstone: `key` is the first key it deletes, `value` the end (excluded).
    /// It deletes every version of the keys in `[key, value)` older than its own `seq`.
    RangeDelete = 2,
    /// A merge operand: folded with the versions below it by the database's merge operator
    /// (`crate::MergeOperator`), on read and by flush and compaction.
    Merge = 3,
    /// A put that expires: the value is `[expires_at u64 big-endian, unix ms][value]`. From
    /// its expiry on it reads as a tombstone, and compaction turns it into one.
    Expiring = 4,
}

impl EntryKind {
    pub fn as_u8(self) -> u8 {
        self as u8
    }

    pub fn from_u8(v: u8) -> Option<Self> {
        match v {
            0 => Some(EntryKind::Put),
            1 => Some(EntryKind::Delete),
            2 => Some(EntryKind::RangeDelete),
            3 => Some(EntryKind::Merge),
            4 => Some(EntryKind::Expiring),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub key: Bytes,
    pub seq: SeqNo,
    pub kind: EntryKind,
    /// Empty for tombstones.
    pub value: Bytes,
}

impl Entry {
    pub fn put(key: impl Into<Bytes>, seq: SeqNo, value: impl Into<Bytes>) -> Self {
        Entry {
            key: key.into(),
            seq,
            kind: EntryKind::Put,
            value: value.into(),
        }
    }

    pub fn delete(key: impl Into<Bytes>, seq: SeqNo) -> Self {
        Entry {
            key: key.into(),
            seq,
            kind: EntryKind::Delete,
            value: Bytes::new(),
        }
    }

    /// A range tombstone over `[start, end)`, carried as an entry at its start key.
    pub fn range_delete(start: impl Into<Bytes>, end: impl Into<Bytes>, seq: SeqNo) -> Self {
        Entry {
            key: start.into(),
            seq,
            kind: EntryKind::RangeDelete,
            value: end.into(),
        }
    }

    /// A merge operand for `key`.
    pub fn merge(key: impl Into<Bytes>, seq: SeqNo, operand: impl Into<Bytes>) -> Self {
        Entry {
            key: key.into(),
            seq,
            kind: EntryKind::Merge,
            value: operand.into(),
        }
    }

    /// A put that reads as deleted from `expires_at_ms` (unix milliseconds) on.
    pub fn expiring(key: impl Into<Bytes>, seq: SeqNo, value: &[u8], expires_at_ms: u64) -> Self {
        Entry {
            key: key.into(),
            seq,
            kind: EntryKind::Expiring,
            value: expiring_value(value, expires_at_ms),
        }
    }

    /// What a reader at time `now_ms` makes of this version, the key's newest.
    pub fn read(&self, now_ms: u64) -> Read {
        match self.kind {
            EntryKind::Put => Read::Value(self.value.clone()),
            EntryKind::Expiring => match split_expiring(&self.value) {
                Some((at, v)) if now_ms < at => Read::Value(v),
                _ => Read::Absent,
            },
            EntryKind::Merge => Read::Operand,
            EntryKind::Delete | EntryKind::RangeDelete => Read::Absent,
        }
    }

    /// A point tombstone (not a range one).
    pub fn is_delete(&self) -> bool {
        self.kind == EntryKind::Delete
    }

    pub fn is_range_delete(&self) -> bool {
        self.kind == EntryKind::RangeDelete
    }

    /// Bytes this entry costs in memory, close enough for memtable accounting.
    pub fn approximate_size(&self) -> usize {
        self.key.len() + self.value.len() + 24
    }

    pub fn cmp_internal(&self, other: &Entry) -> Ordering {
        compare_internal(&self.key, self.seq, &other.key, other.seq)
    }
}

/// What one version of a key says of its value to a reader (`Entry::read`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Read {
    /// This value, whatever is older.
    Value(Bytes),
    /// No value (deleted, or expired), whatever is older.
    Absent,
    /// A merge operand: the value depends on older versions too.
    Operand,
}

/// The stored value of an expiring put: its expiry, then the value.
pub fn expiring_value(value: &[u8], expires_at_ms: u64) -> Bytes {
    let mut v = Vec::with_capacity(8 + value.len());
    v.extend_from_slice(&expires_at_ms.to_be_bytes());
    v.extend_from_slice(value);
    Bytes::from(v)
}

/// The expiry and the value of an expiring put's stored value; `None` if it is too short to
/// hold an expiry, which reads as expired.
pub fn split_expiring(stored: &Bytes) -> Option<(u64, Bytes)> {
    let at = u64::from_be_bytes(stored.get(..8)?.try_into().ok()?);
    Some((at, stored.slice(8..)))
}

/// Order of (key, seq) pairs: key ascending, then seq descending.
#[inline]
pub fn compare_internal(ka: &[u8], sa: SeqNo, kb: &[u8], sb: SeqNo) -> Ordering {
    ka.cmp(kb).then_with(|| sb.cmp(&sa))
}

/// The 8 bytes of `key` after its first `skip`, big-endian and zero-padded: a number that
/// orders like the bytes. Among keys sharing their first `skip` bytes, where these numbers
/// differ they decide the order, so a search or sort can compare them in small, dense arrays
/// and read the keys themselves only on a tie.
#[inline]
pub fn key_prefix_after(key: &[u8], skip: usize) -> u64 {
    let rest = key.get(skip..).unwrap_or_default();
    let mut b = [0u8; 8];
    let n = rest.len().min(8);
    b[..n].copy_from_slice(&rest[..n]);
    u64::from_be_bytes(b)
}

/// The length of the prefix `a` and `b` share.
#[inline]
pub fn shared_prefix_len(a: &[u8], b: &[u8]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

/// An owned (key, seq) pair ordered like [`compare_internal`]; the memtables' map key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct InternalKey {
    pub key: Bytes,
    pub seq: SeqNo,
}

impl Ord for InternalKey {
    fn cmp(&self, other: &Self) -> Ordering {
        compare_internal(&self.key, self.seq, &other.key, other.seq)
    }
}

impl PartialOrd for InternalKey {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// A range of user keys, each end included, excluded or open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRange {
    pub start: Bound<Bytes>,
    pub end: Bound<Bytes>,
}

impl KeyRange {
    pub fn all() -> Self {
        KeyRange {
            start: Bound::Unbounded,
            end: Bound::Unbounded,
        }
    }

    /// `[from, to)`; either side may be absent.
    pub fn new(from: Option<Bytes>, to: Option<Bytes>) -> Self {
        KeyRange {
            start: from.map_or(Bound::Unbounded, Bound::Included),
            end: to.map_or(Bound::Unbounded, Bound::Excluded),
        }
    }

    /// True when no key can fall inside (start after end, or `(k, k)` with an open end).
    pub fn is_empty(&self) -> bool {
        match (&self.start, &self.end) {
            (Bound::Unbounded, _) | (_, Bound::Unbounded) => false,
            (Bound::Included(s), Bound::Included(e)) => s > e,
            (Bound::Included(s) | Bound::Excluded(s), Bound::Included(e) | Bound::Excluded(e)) => {
                s >= e
            }
        }
    }

    pub fn contains(&self, key: &[u8]) -> bool {
        !self.is_before_start(key) && !self.is_past_end(key)
    }

    pub fn is_before_start(&self, key: &[u8]) -> bool {
        match &self.start {
            Bound::Included(s) => key < s.as_ref(),
            Bound::Excluded(s) => key <= s.as_ref(),
            Bound::Unbounded => false,
        }
    }

    pub fn is_past_end(&self, key: &[u8]) -> bool {
        match &self.end {
            Bound::Included(e) => key > e.as_ref(),
            Bound::Excluded(e) => key >= e.as_ref(),
            Bound::Unbounded => false,
        }
    }

    /// Whether any key in `[smallest, largest]` can fall inside this range.
    pub fn overlaps(&self, smallest: &[u8], largest: &[u8]) -> bool {
        !self.is_past_end(smallest) && !self.is_before_start(largest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_order_is_key_asc_seq_desc() {
        let mut v = [
            InternalKey {
                key: Bytes::from_static(b"b"),
                seq: 1,
            },
            InternalKey {
                key: Bytes::from_static(b"a"),
                seq: 1,
            },
            InternalKey {
                key: Bytes::from_static(b"a"),
                seq: 9,
            },
        ];
        v.sort();
        assert_eq!(v[0].seq, 9);
        assert_eq!(v[1].seq, 1);
        assert_eq!(&v[2].key[..], b"b");
    }

    #[test]
    fn range_bounds() {
        let r = KeyRange::new(
            Some(Bytes::from_static(b"b")),
            Some(Bytes::from_static(b"d")),
        );
        assert!(!r.contains(b"a"));
        assert!(r.contains(b"b"));
        assert!(r.contains(b"c"));
        assert!(!r.contains(b"d"));
        assert!(r.overlaps(b"a", b"b"));
        assert!(!r.overlaps(b"d", b"z"));
        assert!(KeyRange::all().contains(b""));
        let b = |s: &'static str| Bytes::from_static(s.as_bytes());
        assert!(
            KeyRange {
                start: Bound::Excluded(b("k")),
                end: Bound::Excluded(b("k"))
            }
            .is_empty()
        );
        assert!(
            KeyRange {
                start: Bound::Included(b("k")),
                end: Bound::Excluded(b("k"))
            }
            .is_empty()
        );
        assert!(
            !KeyRange {
                start: Bound::Included(b("k")),
                end: Bound::Included(b("k"))
            }
            .is_empty()
        );
        assert!(KeyRange::new(Some(b("z")), Some(b("a"))).is_empty());
    }
}
