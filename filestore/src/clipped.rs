//! `Clipped`: a table seen only within a key range. A shard split leaves each child sharing
//! its parent's tables, which hold keys on both sides of the split; each child sees them
//! clipped to its own range, so the other side's keys (and the parts of range tombstones
//! over them) are not there for its reads, and its compactions, which read through the same
//! tables, write none of them out.

use crate::{Table, shared::Within};
use async_trait::async_trait;
use bytes::Bytes;
use cairn_common::{
    AggregateState, BoxStream, Entry, EntryIter, KeyRange, RangeTombstone, Result, SeqNo,
    TableMeta, ValueType,
};
use std::ops::Bound;
use std::sync::Arc;

pub(crate) struct Clipped {
    inner: Arc<dyn Table>,
    within: Within,
    range_deletes: Vec<RangeTombstone>,
}

impl Clipped {
    pub(crate) fn new(inner: Arc<dyn Table>, within: Within) -> Clipped {
        let range_deletes = inner
            .range_deletes()
            .iter()
            .filter_map(|t| within.clip_tombstone(t))
            .collect();
        Clipped {
            inner,
            within,
            range_deletes,
        }
    }
}

impl Within {
    pub fn contains(&self, key: &[u8]) -> bool {
        self.lower.as_deref().is_none_or(|l| key >= l)
            && self.upper.as_deref().is_none_or(|u| key < u)
    }

    /// `range`, narrowed to this one.
    pub fn clip(&self, range: &KeyRange) -> KeyRange {
        let start = match (&self.lower, &range.start) {
            (None, s) => s.clone(),
            (Some(l), Bound::Included(s) | Bound::Excluded(s)) if s.as_ref() >= l.as_slice() => {
                range.start.clone()
            }
            (Some(l), _) => Bound::Included(Bytes::copy_from_slice(l)),
        };
        let end = match (&self.upper, &range.end) {
            (None, e) => e.clone(),
            (Some(u), Bound::Included(e)) if e.as_ref() < u.as_slice() => range.end.clone(),
            (Some(u), Bound::Excluded(e)) if e.as_ref() <= u.as_slice() => range.end.clone(),
            (Some(u), _) => Bound::Excluded(Bytes::copy_from_slice(u)),
        };
        KeyRange { start, end }
    }

    fn clip_tombstone(&self, t: &RangeTombstone) -> Option<RangeTombstone> {
        let start = match &self.lower {
            Some(l) if t.start.as_ref() < l.as_slice() => Bytes::copy_from_slice(l),
            _ => t.start.clone(),
        };
        let end = match &self.upper {
            Some(u) if t.end.as_ref() > u.as_slice() => Bytes::copy_from_slice(u),
            _ => t.end.clone(),
        };
        (start < end).then(|| RangeTombstone::new(start, end, t.seq))
    }
}

#[async_trait]
impl Table for Clipped {
    /// The table's own: the engine places tables in levels by it, and a clip only hides
    /// entries, never moves a table.
    fn meta(&self) -> &TableMeta {
        self.inner.meta()
    }

    fn range_deletes(&self) -> &[RangeTombstone] {
        &self.range_deletes
    }

    async fn get(&self, key: &[u8], snapshot: SeqNo) -> Result<Option<Entry>> {
        if !self.within.contains(key) {
            return Ok(None);
        }
        self.inner.get(key, snapshot).await
    }

    async fn scan(&self, range: &KeyRange) -> Result<BoxStream<Result<Entry>>> {
        self.inner.scan(&self.within.clip(range)).await
    }

    fn scan_ready(&self, range: &KeyRange) -> Option<Result<EntryIter>> {
        self.inner.scan_ready(&self.within.clip(range))
    }

    async fn aggregate(
        &self,
        range: &KeyRange,
        snapshot: SeqNo,
        value_type: ValueType,
        shadowed: &[Bytes],
    ) -> Result<AggregateState> {
        let range = self.within.clip(range);
        self.inner
            .aggregate(&range, snapshot, value_type, shadowed)
            .await
    }

    async fn analytic_scan(&self, range: &KeyRange) -> Result<BoxStream<Result<Entry>>> {
        self.inner.analytic_scan(&self.within.clip(range)).await
    }

    // `puts_only` stays `false`: the metadata is the whole table's, so counts read from it
    // would not be the clip's. `block_layout` stays `None`: a block holds keys on both sides of the clip, and a
    // reader by blocks would see them all.
}

#[cfg(test)]
mod tests {
    use super::*;

    fn within(l: Option<&str>, u: Option<&str>) -> Within {
        Within {
            lower: l.map(|s| s.as_bytes().to_vec()),
            upper: u.map(|s| s.as_bytes().to_vec()),
        }
    }

    fn range(s: Bound<&'static str>, e: Bound<&'static str>) -> KeyRange {
        let b = |x: Bound<&'static str>| x.map(|s| Bytes::from_static(s.as_bytes()));
        KeyRange {
            start: b(s),
            end: b(e),
        }
    }

    #[test]
    fn a_range_is_narrowed_to_the_clip_and_never_widened() {
        use Bound::*;
        let w = within(Some("c"), Some("m"));
        assert_eq!(
            w.clip(&KeyRange::all()),
            range(Included("c"), Excluded("m"))
        );
        assert_eq!(
            w.clip(&range(Excluded("d"), Included("k"))),
            range(Excluded("d"), Included("k"))
        );
        assert_eq!(
            w.clip(&range(Included("a"), Included("z"))),
            range(Included("c"), Excluded("m"))
        );
        assert_eq!(
            w.clip(&range(Included("a"), Included("m"))),
            range(Included("c"), Excluded("m"))
        );
        assert!(w.clip(&range(Included("n"), Excluded("p"))).is_empty());
        let open = within(None, None);
        assert_eq!(
            open.clip(&range(Included("a"), Unbounded)),
            range(Included("a"), Unbounded)
        );
        assert!(w.contains(b"c") && w.contains(b"l\xff") && !w.contains(b"m") && !w.contains(b"b"));
    }

    #[test]
    fn a_range_tombstone_keeps_only_its_part_inside() {
        let w = within(Some("c"), Some("m"));
        let t = |s: &'static str, e: &'static str| RangeTombstone::new(s, e, 7);
        assert_eq!(w.clip_tombstone(&t("a", "z")), Some(t("c", "m")));
        assert_eq!(w.clip_tombstone(&t("d", "f")), Some(t("d", "f")));
        assert_eq!(w.clip_tombstone(&t("a", "c")), None);
        assert_eq!(w.clip_tombstone(&t("m", "q")), None);
    }
}
