//! Aggregates at one snapshot, pushed down to the tables where they can be. The deepest
//! non-empty level holds most of the data in non-overlapping tables; each of those folds its
//! own part (a Parquet table from column data) as `Table::aggregate`. Everything newer (the
//! memtables and the upper levels) is merged as a scan would, and the keys it decides are
//! passed down as `shadowed`, so a key is counted once, at its newest visible version, even
//! when that version was written a moment ago.
//!
//! Where a range tombstone is in view over the range, or a merge operand or an expiring put
//! decides a key (the tables' folds know neither the operator nor the reader's clock), the
//! aggregate folds a merged scan instead.
//!
//! The shadowed keys are held in memory: with leveled compaction the upper levels are a small
//! fraction of the data (a tenth at the default size ratio).

use crate::db::ReadView;
use crate::operators::ReadRules;
use crate::scan::{DbIter, range_deletes_in, sources};
use bytes::Bytes;
use cairn_common::{AggregateState, EntryKind, KeyRange, Merge, Result, SeqNo, ValueType};
use futures::StreamExt;

pub(crate) async fn run(
    view: &ReadView,
    range: KeyRange,
    snapshot: SeqNo,
    value_type: ValueType,
    rules: ReadRules,
) -> Result<AggregateState> {
    let mut state = AggregateState::new(value_type);
    if range.is_empty() {
        return Ok(state);
    }
    let (mem, version) = (&view.mem, &view.version);
    if range_deletes_in(mem, version, &range, snapshot).is_some() {
        // A range tombstone may cover keys of any level below it, which the tables' own
        // folds cannot know: fold the merged scan, which applies it.
        return by_scan(view, range, snapshot, value_type, rules).await;
    }
    let base = (1..version.levels.len())
        .rev()
        .find(|&l| !version.levels[l].is_empty());
    let overlay_levels = base.unwrap_or(version.levels.len());
    let overlay = sources(mem, version, &range, snapshot, overlay_levels, false).await?;
    let mut merged = Merge::new(overlay);
    let mut shadowed: Vec<Bytes> = Vec::new();
    while let Some(e) = merged.next().await {
        let e = e?;
        if e.seq > snapshot || shadowed.last() == Some(&e.key) {
            continue;
        }
        match e.kind {
            EntryKind::Put => state.add(&e.value),
            EntryKind::Merge | EntryKind::Expiring => {
                return by_scan(view, range, snapshot, value_type, rules).await;
            }
            EntryKind::Delete | EntryKind::RangeDelete => {}
        }
        shadowed.push(e.key);
    }
    let Some(base) = base else {
        return Ok(state);
    };
    let mut parts = Vec::new();
    for t in &version.levels[base] {
        if !range.overlaps(&t.meta.smallest, &t.meta.largest) {
            continue;
        }
        let lo = shadowed.partition_point(|k| k.as_ref() < t.meta.smallest.as_slice());
        let hi = shadowed.partition_point(|k| k.as_ref() <= t.meta.largest.as_slice());
        let (t, range, mine) = (t.clone(), range.clone(), shadowed[lo..hi].to_vec());
        // Tables fold in parallel: decoding column data is CPU work.
        parts.push(tokio::spawn(async move {
            t.table.aggregate(&range, snapshot, value_type, &mine).await
        }));
    }
    for p in parts {
        let part = p
            .await
            .map_err(|e| cairn_common::Error::component("aggregate", e))??;
        state.merge(&part);
    }
    if state.unresolved > 0 {
        // A table met a merge operand or an expiring put, which it cannot fold alone.
        return by_scan(view, range, snapshot, value_type, rules).await;
    }
    Ok(state)
}

/// The aggregate of a merged scan, which resolves everything a table's fold cannot.
async fn by_scan(
    view: &ReadView,
    range: KeyRange,
    snapshot: SeqNo,
    value_type: ValueType,
    rules: ReadRules,
) -> Result<AggregateState> {
    let mut state = AggregateState::new(value_type);
    let mut it = DbIter::over(view.clone(), range, snapshot, None, false, rules).await?;
    while let Some((_, v)) = it.next().await? {
        state.add(&v);
    }
    Ok(state)
}
