//! Range scans: a merge of every memtable and every table that can hold keys of the range,
//! reduced to the newest version of each key visible at the scan's snapshot, tombstones
//! hidden. Deeper levels are read one table after another, opened only when reached.

use crate::db::Inner;
use crate::snapshot::Snapshot;
use crate::version::TableHandle;
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
}

impl DbIter {
    pub(crate) async fn new(
        inner: &Inner,
        range: KeyRange,
        snapshot: SeqNo,
        guard: Option<Snapshot>,
    ) -> Result<DbIter> {
        let mem = inner.mem.load_full();
        let version = inner.version.load_full();
        let mut sources: Vec<BoxStream<Result<Entry>>> = Vec::new();
        for m in std::iter::once(&mem.active).chain(mem.immutables.iter()) {
            let it = m.table.scan(&range, snapshot);
            sources.push(Box::pin(futures::stream::iter(it.map(Ok))));
        }
        for t in &version.levels[0] {
            if range.overlaps(&t.meta.smallest, &t.meta.largest) && t.meta.min_seq <= snapshot {
                sources.push(t.table.scan(&range).await?);
            }
        }
        for level in &version.levels[1..] {
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
                    async move { t.table.scan(&r).await }
                })
                .try_flatten();
            sources.push(Box::pin(concat));
        }
        Ok(DbIter {
            merged: merge_sorted(sources),
            snapshot,
            last_key: None,
            _snapshot: guard,
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
