//! Range scans: a merge of every memtable and every table that can hold keys of the range,
//! reduced to the newest version of each key visible at the scan's snapshot, tombstones
//! hidden: point tombstones where they stand, range tombstones by checking each key against
//! every one in view that overlaps the range, gathered when the scan starts. Merge operands
//! fold over the version below them with the database's operator; expiring puts read as
//! absent from their expiry on (the time the scan started). Deeper levels
//! are read one table after another, opened only when reached.
//!
//! Memtables and tables that read without waiting (`Table::scan_ready`: SSTables on local
//! disk) are merged as plain iterators; the merge and this iterator are streams polled
//! directly, so a local scan makes no future per entry.

use crate::db::{Inner, MemState, ReadView};
use crate::operators::ReadRules;
use crate::snapshot::Snapshot;
use crate::version::TableHandle;
use crate::version::Version;
use bytes::Bytes;
use cairn_common::{
    BoxStream, Entry, EntryKind, KeyRange, Merge, MergeSource, RangeDeletes, RangeTombstone, Read,
    Result, SeqNo,
};
use futures::future::BoxFuture;
use futures::{FutureExt, Stream, StreamExt, TryStreamExt};
use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

pub struct DbIter {
    merged: Merge,
    snapshot: SeqNo,
    rules: ReadRules,
    /// Merge operands of `last_key`, newest first, while they wait for their base.
    operands: Vec<Bytes>,
    /// The sequence number of the last version of `last_key` taken: the merge passes exact
    /// duplicates on (a memtable and the table it was just flushed into, both in view), which
    /// a fold must take once.
    last_seq: SeqNo,
    /// An entry read past the end of a fold, for the next call.
    stash: Option<Entry>,
    /// The range tombstones in view over the range, if any.
    ranges: Option<Arc<RangeDeletes>>,
    /// The key decided last, copied: a byte copy costs less than another count on a block's
    /// shared buffer, which every reader of that block touches.
    last_key: Option<Vec<u8>>,
    /// Keeps versions this scan needs from being compacted away while it runs.
    _snapshot: Option<Snapshot>,
    /// Keeps the tables being read from deletion until the scan is dropped: a table's stream
    /// need not keep its file alive (an SSTable's open descriptor does; an object does not).
    _version: Arc<Version>,
}

impl DbIter {
    pub(crate) async fn new(
        inner: &Inner,
        view: ReadView,
        range: KeyRange,
        snapshot: SeqNo,
        guard: Option<Snapshot>,
        analytic: bool,
    ) -> Result<DbIter> {
        inner.metrics.scans.increment(1);
        let rules = inner.ops.read_rules();
        Self::over(view, range, snapshot, guard, analytic, rules).await
    }

    /// The scan itself, without the metrics: aggregates fold one where range tombstones are
    /// in view.
    pub(crate) async fn over(
        view: ReadView,
        range: KeyRange,
        snapshot: SeqNo,
        guard: Option<Snapshot>,
        analytic: bool,
        rules: ReadRules,
    ) -> Result<DbIter> {
        let ReadView { mem, version } = view;
        let levels = version.levels.len();
        let sources = sources(&mem, &version, &range, snapshot, levels, analytic).await?;
        Ok(DbIter {
            merged: Merge::new(sources),
            snapshot,
            rules,
            operands: Vec::new(),
            last_seq: 0,
            stash: None,
            ranges: range_deletes_in(&mem, &version, &range, snapshot),
            last_key: None,
            _snapshot: guard,
            _version: version,
        })
    }

    /// The next live (key, value) in key order.
    pub async fn next(&mut self) -> Result<Option<(Bytes, Bytes)>> {
        self.try_next().await
    }

    /// Reads the rest (or up to `limit` entries) into a vector.
    pub async fn collect(mut self, limit: Option<usize>) -> Result<Vec<(Bytes, Bytes)>> {
        let mut out = Vec::new();
        while limit.is_none_or(|l| out.len() < l) {
            match self.next().await? {
                Some(kv) => out.push(kv),
                None => break,
            }
        }
        Ok(out)
    }
}

impl Stream for DbIter {
    type Item = Result<(Bytes, Bytes)>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            let e = match this.stash.take() {
                Some(e) => e,
                None => match this.merged.poll_next_unpin(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e))),
                    Poll::Ready(Some(Ok(e))) => e,
                    // Operands with nothing below them fold over no value.
                    Poll::Ready(None) => return Poll::Ready(this.fold(None)),
                },
            };
            if e.seq > this.snapshot {
                continue;
            }
            let covered = |this: &Self, e: &Entry| {
                this.ranges
                    .as_ref()
                    .is_some_and(|r| r.deletes(&e.key, e.seq, this.snapshot))
            };
            if this.last_key.as_deref() == Some(e.key.as_ref()) {
                // An older version: shadowed, unless operands above it wait for their base.
                if this.operands.is_empty() || e.seq == this.last_seq {
                    continue;
                }
                this.last_seq = e.seq;
                if covered(this, &e) {
                    return Poll::Ready(this.fold(None));
                }
                match e.read(this.rules.now_ms) {
                    Read::Operand => this.operands.push(e.value),
                    Read::Value(v) => return Poll::Ready(this.fold(Some(&v))),
                    Read::Absent => return Poll::Ready(this.fold(None)),
                }
                continue;
            }
            if !this.operands.is_empty() {
                // A new key ends the previous one's operands, with no value below them.
                this.stash = Some(e);
                return Poll::Ready(this.fold(None));
            }
            // The first version at or below the snapshot decides the key.
            match &mut this.last_key {
                Some(k) => {
                    k.clear();
                    k.extend_from_slice(&e.key);
                }
                None => this.last_key = Some(e.key.to_vec()),
            }
            this.last_seq = e.seq;
            if covered(this, &e) {
                continue;
            }
            match e.kind {
                EntryKind::Put => return Poll::Ready(Some(Ok((e.key, e.value)))),
                EntryKind::Delete | EntryKind::RangeDelete => {}
                EntryKind::Merge => this.operands.push(e.value),
                EntryKind::Expiring => {
                    if let Read::Value(v) = e.read(this.rules.now_ms) {
                        return Poll::Ready(Some(Ok((e.key, v))));
                    }
                }
            }
        }
    }
}

impl DbIter {
    /// The value `last_key`'s operands fold into over `base`, if it has operands.
    fn fold(&mut self, base: Option<&[u8]>) -> Option<Result<(Bytes, Bytes)>> {
        if self.operands.is_empty() {
            return None;
        }
        let key = Bytes::copy_from_slice(self.last_key.as_deref().unwrap_or_default());
        let operands = std::mem::take(&mut self.operands);
        Some(self.rules.fold(&key, base, operands).map(|v| (key, v)))
    }
}

/// The range tombstones at or below `snapshot` in the memtables and the tables, over keys of
/// `range`: `None` when there are none, as there mostly are, and one source's own pieces,
/// shared, when only one source has any.
pub(crate) fn range_deletes_in(
    mem: &MemState,
    version: &Version,
    range: &KeyRange,
    snapshot: SeqNo,
) -> Option<Arc<RangeDeletes>> {
    let in_mem = std::iter::once(&mem.active)
        .chain(mem.immutables.iter())
        .filter_map(|m| m.ranges.get());
    let in_tables = version
        .levels
        .iter()
        .flatten()
        // The pointer check first: nearly every table has no tombstones.
        .filter(|t| t.ranges.is_some() && range.overlaps(&t.meta.smallest, &t.meta.largest))
        .filter_map(|t| t.ranges.clone());
    let mut sources: Vec<Arc<RangeDeletes>> = in_mem.chain(in_tables).collect();
    let over = |t: &RangeTombstone| {
        t.seq <= snapshot && !range.is_past_end(&t.start) && !range.is_before_start(&t.end)
    };
    if sources.len() <= 1 {
        return sources.pop().filter(|r| r.tombstones().iter().any(over));
    }
    let found: Vec<RangeTombstone> = sources
        .iter()
        .flat_map(|r| r.tombstones())
        .filter(|t| over(t))
        .cloned()
        .collect();
    (!found.is_empty()).then(|| Arc::new(RangeDeletes::new(found)))
}

/// One source per memtable, per L0 table, and per deeper level (its tables read one after
/// another), for the levels below `levels` only. `analytic` reads tables through
/// `Table::analytic_scan`, the copy a hybrid store keeps for bulk reads.
pub(crate) async fn sources(
    mem: &MemState,
    version: &Version,
    range: &KeyRange,
    snapshot: SeqNo,
    levels: usize,
    analytic: bool,
) -> Result<Vec<MergeSource>> {
    let mut sources = Vec::new();
    for m in std::iter::once(&mem.active).chain(mem.immutables.iter()) {
        let it = m.table.scan(range, snapshot);
        sources.push(MergeSource::Ready(Box::new(it.map(Ok))));
    }
    let levels = &version.levels[..levels.min(version.levels.len())];
    let Some((l0, deeper)) = levels.split_first() else {
        return Ok(sources);
    };
    for t in l0 {
        if range.overlaps(&t.meta.smallest, &t.meta.largest) && t.meta.min_seq <= snapshot {
            sources.push(match ready_scan(t, range, analytic) {
                Some(it) => MergeSource::Ready(it?),
                None => MergeSource::Stream(scan_table(t.clone(), range.clone(), analytic).await?),
            });
        }
    }
    for level in deeper {
        let tables: VecDeque<Arc<TableHandle>> = level
            .iter()
            .filter(|t| range.overlaps(&t.meta.smallest, &t.meta.largest))
            .cloned()
            .collect();
        if !tables.is_empty() {
            sources.push(MergeSource::Stream(Box::pin(LevelScan {
                tables,
                range: range.clone(),
                analytic,
                current: None,
                opening: None,
            })));
        }
    }
    Ok(sources)
}

fn ready_scan(
    t: &TableHandle,
    range: &KeyRange,
    analytic: bool,
) -> Option<Result<cairn_common::EntryIter>> {
    if analytic {
        None
    } else {
        t.table.scan_ready(range)
    }
}

async fn scan_table(
    t: Arc<TableHandle>,
    range: KeyRange,
    analytic: bool,
) -> Result<BoxStream<Result<Entry>>> {
    if analytic {
        t.table.analytic_scan(&range).await
    } else {
        t.table.scan(&range).await
    }
}

/// The tables of one sorted level, read one after another, each opened when reached.
struct LevelScan {
    tables: VecDeque<Arc<TableHandle>>,
    range: KeyRange,
    analytic: bool,
    current: Option<MergeSource>,
    opening: Option<BoxFuture<'static, Result<BoxStream<Result<Entry>>>>>,
}

impl Stream for LevelScan {
    type Item = Result<Entry>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Entry>>> {
        let this = self.get_mut();
        loop {
            if let Some(cur) = &mut this.current {
                match cur.poll_next_unpin(cx) {
                    Poll::Ready(None) => this.current = None,
                    other => return other,
                }
            } else if let Some(opening) = &mut this.opening {
                let opened = std::task::ready!(opening.poll_unpin(cx));
                this.opening = None;
                match opened {
                    Ok(s) => this.current = Some(MergeSource::Stream(s)),
                    Err(e) => {
                        this.tables.clear();
                        return Poll::Ready(Some(Err(e)));
                    }
                }
            } else {
                let Some(t) = this.tables.pop_front() else {
                    return Poll::Ready(None);
                };
                match ready_scan(&t, &this.range, this.analytic) {
                    Some(Ok(it)) => this.current = Some(MergeSource::Ready(it)),
                    Some(Err(e)) => {
                        this.tables.clear();
                        return Poll::Ready(Some(Err(e)));
                    }
                    None => {
                        let range = this.range.clone();
                        this.opening = Some(Box::pin(scan_table(t, range, this.analytic)));
                    }
                }
            }
        }
    }
}
