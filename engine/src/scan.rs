//! Range scans: a merge of every memtable and every table that can hold keys of the range,
//! reduced to the newest version of each key visible at the scan's snapshot, tombstones
//! hidden. Deeper levels are read one table after another, opened only when reached.

use crate::db::{Inner, MemState};
use crate::snapshot::Snapshot;
use crate::version::TableHandle;
use crate::version::Version;
use bytes::Bytes;
use cairn_common::{BoxStream, Entry, EntryKind, KeyRange, Result, SeqNo, merge_sorted};
use futures::{StreamExt, TryStreamExt};
use std::sync::Arc;

pub struct DbIter {
    merged: BoxStream<Result<Entry>>,
    snapshot: SeqNo,
    last_key: Option<Bytes>,
    /// Keeps versions this scan needs from being compacted away while it runs.
    _snapshot: Option<Snapshot>,
    /// Keeps the tables being read from deletion until the scan is dropped: a table's stream
    /// need not keep its file alive (an SSTable's open descriptor does; an object does not).
    _version: Arc<Version>,
}

impl DbIter {
    pub(crate) async fn new(
        inner: &Inner,
        range: KeyRange,
        snapshot: SeqNo,
        guard: Option<Snapshot>,
        analytic: bool,
    ) -> Result<DbIter> {
        let mem = inner.mem.load_full();
        let version = inner.version.load_full();
        let levels = version.levels.len();
        let sources = sources(&mem, &version, &range, snapshot, levels, analytic).await?;
        Ok(DbIter {
            merged: merge_sorted(sources),
            snapshot,
            last_key: None,
            _snapshot: guard,
            _version: version,
        })
    }

    /// The next live (key, value) in key order.
    pub async fn next(&mut self) -> Result<Option<(Bytes, Bytes)>> {
        while let Some(e) = self.merged.next().await {
            let e = e?;
            if e.seq > self.snapshot || self.last_key.as_ref() == Some(&e.key) {
                continue;
            }
            // The first version at or below the snapshot decides the key.
            self.last_key = Some(e.key.clone());
            if e.kind == EntryKind::Put {
                return Ok(Some((e.key, e.value)));
            }
        }
        Ok(None)
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

/// One sorted stream per memtable, per L0 table, and per deeper level (its tables read one
/// after another), for the levels below `levels` only. `analytic` reads tables through
/// `Table::analytic_scan`, the copy a hybrid store keeps for bulk reads.
pub(crate) async fn sources(
    mem: &MemState,
    version: &Version,
    range: &KeyRange,
    snapshot: SeqNo,
    levels: usize,
    analytic: bool,
) -> Result<Vec<BoxStream<Result<Entry>>>> {
    let mut sources: Vec<BoxStream<Result<Entry>>> = Vec::new();
    for m in std::iter::once(&mem.active).chain(mem.immutables.iter()) {
        let it = m.table.scan(range, snapshot);
        sources.push(Box::pin(futures::stream::iter(it.map(Ok))));
    }
    let levels = &version.levels[..levels.min(version.levels.len())];
    let Some((l0, deeper)) = levels.split_first() else {
        return Ok(sources);
    };
    for t in l0 {
        if range.overlaps(&t.meta.smallest, &t.meta.largest) && t.meta.min_seq <= snapshot {
            sources.push(scan_table(t, range, analytic).await?);
        }
    }
    for level in deeper {
        let tables: Vec<Arc<TableHandle>> = level
            .iter()
            .filter(|t| range.overlaps(&t.meta.smallest, &t.meta.largest))
            .cloned()
            .collect();
        if tables.is_empty() {
            continue;
        }
        let r = range.clone();
        let concat = futures::stream::iter(tables)
            .then(move |t| {
                let r = r.clone();
                async move { scan_table(&t, &r, analytic).await }
            })
            .try_flatten();
        sources.push(Box::pin(concat));
    }
    Ok(sources)
}

async fn scan_table(
    t: &TableHandle,
    range: &KeyRange,
    analytic: bool,
) -> Result<BoxStream<Result<Entry>>> {
    if analytic {
        t.table.analytic_scan(range).await
    } else {
        t.table.scan(range).await
    }
}
