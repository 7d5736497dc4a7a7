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
use crate::scan::{DbIter, range_deletes_in};
use crate::split_read::{base_level, overlay};
use cairn_common::{AggregateState, KeyRange, Result, SeqNo, ValueType};

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
    let base = base_level(version);
    let Some((puts, shadowed)) = overlay(view, &range, snapshot, base).await? else {
        // A merge operand or an expiring put: the tables' folds know neither the operator
        // nor the reader's clock.
        return by_scan(view, range, snapshot, value_type, rules).await;
    };
    puts.iter().for_each(|(_, v)| state.add(v));
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
