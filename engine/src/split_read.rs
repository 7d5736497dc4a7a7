//! A read of one range at one snapshot, split for a columnar reader (SQL over the live
//! database). The deepest non-empty level holds most of the data in tables that do not
//! overlap; the reader reads those itself, table by table and in parallel, from column data
//! where a table keeps it. Everything newer (the memtables and the upper levels) is merged
//! here, as `aggregate.rs` does, into the live puts it decides and the keys it decides: a
//! table row whose key is among those is shadowed and left out.
//!
//! The split is offered only where it is exact: no range tombstone in view, nothing newer
//! that needs the merge operator or the clock, and base tables that hold only puts, each of
//! a key of its own, none newer than the snapshot. Anywhere else the reader falls back to a
//! merged scan (`Db::scan_at`).

use crate::db::ReadView;
use crate::scan::{range_deletes_in, sources};
use crate::version::Version;
use bytes::Bytes;
use cairn_common::{EntryKind, KeyRange, Merge, Result, SeqNo};
use cairn_filestore::Table;
use futures::StreamExt;
use std::sync::Arc;

/// See the module's comment.
pub struct SplitRead {
    /// The live puts the memtables and upper levels decide, in key order.
    pub overlay: Vec<(Bytes, Bytes)>,
    /// Every key those sources decide (puts and deletes), sorted: rows of `base` with one of
    /// these keys are not live.
    pub shadowed: Vec<Bytes>,
    /// The deepest level's tables over the range, in key order, each holding only puts of
    /// distinct keys, none newer than the snapshot.
    pub base: Vec<Arc<dyn Table>>,
    /// Keeps the tables from being deleted while they are read.
    _version: Arc<Version>,
}

impl SplitRead {
    /// The number of live keys in `range`, when table metadata alone gives it: nothing newer
    /// than the base tables, and every base table wholly inside the range.
    pub fn exact_count(&self, range: &KeyRange) -> Option<u64> {
        let whole = self
            .base
            .iter()
            .all(|t| range.contains(&t.meta().smallest) && range.contains(&t.meta().largest));
        (self.shadowed.is_empty() && whole)
            .then(|| self.base.iter().map(|t| t.meta().entries).sum())
    }
}

/// The deepest non-empty level below level 0, which holds most of the data in tables that
/// do not overlap.
pub(crate) fn base_level(version: &Version) -> Option<usize> {
    (1..version.levels.len())
        .rev()
        .find(|&l| !version.levels[l].is_empty())
}

/// What the memtables and the levels above `base` decide in `range` at `snapshot`: the
/// live puts, and every key decided (puts and deletes, sorted). `None` where a merge
/// operand or an expiring put decides a key, which needs the operator or the clock.
pub(crate) async fn overlay(
    view: &ReadView,
    range: &KeyRange,
    snapshot: SeqNo,
    base: Option<usize>,
) -> Result<Option<Overlay>> {
    let (mem, version) = (&view.mem, &view.version);
    let levels = base.unwrap_or(version.levels.len());
    let mut merged = Merge::new(sources(mem, version, range, snapshot, levels, false).await?);
    let (mut puts, mut decided) = (Vec::new(), Vec::<Bytes>::new());
    while let Some(e) = merged.next().await {
        let e = e?;
        if e.seq > snapshot || decided.last() == Some(&e.key) {
            continue;
        }
        match e.kind {
            EntryKind::Put => puts.push((e.key.clone(), e.value)),
            EntryKind::Delete | EntryKind::RangeDelete => {}
            EntryKind::Merge | EntryKind::Expiring => return Ok(None),
        }
        decided.push(e.key);
    }
    Ok(Some((puts, decided)))
}

/// The live puts of an overlay, and the keys it decides.
pub(crate) type Overlay = (Vec<(Bytes, Bytes)>, Vec<Bytes>);

pub(crate) async fn plan(
    view: &ReadView,
    range: &KeyRange,
    snapshot: SeqNo,
) -> Result<Option<SplitRead>> {
    let (mem, version) = (&view.mem, &view.version);
    if range_deletes_in(mem, version, range, snapshot).is_some() {
        return Ok(None);
    }
    let base_level = base_level(version);
    let mut base = Vec::new();
    if let Some(l) = base_level {
        for t in &version.levels[l] {
            if range.is_empty() || !range.overlaps(&t.meta.smallest, &t.meta.largest) {
                continue;
            }
            if t.meta.max_seq > snapshot || !t.table.puts_only().await {
                return Ok(None);
            }
            base.push(t.table.clone());
        }
    }
    let Some((overlay, shadowed)) = overlay(view, range, snapshot, base_level).await? else {
        return Ok(None);
    };
    Ok(Some(SplitRead {
        overlay,
        shadowed,
        base,
        _version: version.clone(),
    }))
}
