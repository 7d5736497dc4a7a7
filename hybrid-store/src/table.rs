//! A table read through the hybrid store: lookups from the primary copy; analytics (and, in
//! the compaction view, scans) from the secondary once it holds the table, the primary until
//! then. A secondary read that fails continues on the primary from where it stopped, so an
//! object-store outage slows compaction and analytics down but does not fail them.

use crate::{Shared, Side};
use async_trait::async_trait;
use bytes::Bytes;
use cairn_common::{
    AggregateState, BoxStream, Entry, EntryIter, KeyRange, RangeTombstone, Result, SeqNo,
    TableMeta, ValueType, compare_internal,
};
use cairn_filestore::{Block, BlockLayout, ColumnCondition, RecordBatch, Table, arrow_schema};
use futures::StreamExt;
use std::cmp::Ordering;
use std::ops::Bound;
use std::sync::Arc;
use tokio::sync::OnceCell;

pub(crate) struct HybridTable {
    primary: Arc<dyn Table>,
    secondary: OnceCell<Arc<dyn Table>>,
    shared: Arc<Shared>,
    scans: Side,
}

impl HybridTable {
    pub(crate) fn new(primary: Arc<dyn Table>, shared: Arc<Shared>, scans: Side) -> Self {
        HybridTable {
            primary,
            secondary: OnceCell::new(),
            shared,
            scans,
        }
    }

    /// The secondary copy, opened on first use; `None` while the secondary lacks it.
    async fn secondary(&self) -> Result<Option<Arc<dyn Table>>> {
        if let Some(t) = self.secondary.get() {
            return Ok(Some(t.clone()));
        }
        let meta = self.primary.meta();
        if !self.shared.secondary_has(meta.id) {
            return Ok(None);
        }
        let t = self
            .secondary
            .get_or_try_init(|| self.shared.secondary.open_table(meta))
            .await?;
        Ok(Some(t.clone()))
    }

    fn fell_back(&self, what: &str, e: &cairn_common::Error) {
        tracing::warn!(table = self.meta().id, error = %e, "secondary {what} failed; reading the primary");
    }

    async fn bulk_scan(
        &self,
        range: &KeyRange,
        analytic: bool,
    ) -> Result<BoxStream<Result<Entry>>> {
        let secondary = match self.secondary().await {
            Ok(Some(t)) => t,
            Ok(None) => return self.primary.scan(range).await,
            Err(e) => {
                self.fell_back("open", &e);
                return self.primary.scan(range).await;
            }
        };
        let first = if analytic {
            secondary.analytic_scan(range).await
        } else {
            secondary.scan(range).await
        };
        match first {
            Ok(s) => Ok(resume_on_primary(s, self.primary.clone(), range.clone())),
            Err(e) => {
                self.fell_back("scan", &e);
                self.primary.scan(range).await
            }
        }
    }
}

struct Resume {
    current: BoxStream<Result<Entry>>,
    on_primary: bool,
    /// The last version yielded; a resumed scan skips up to and including it.
    last: Option<(Bytes, SeqNo)>,
    primary: Arc<dyn Table>,
    range: KeyRange,
}

/// Streams the secondary's scan; at its first error, continues with the primary's entries
/// after the last one yielded.
fn resume_on_primary(
    secondary: BoxStream<Result<Entry>>,
    primary: Arc<dyn Table>,
    range: KeyRange,
) -> BoxStream<Result<Entry>> {
    let state = Resume {
        current: secondary,
        on_primary: false,
        last: None,
        primary,
        range,
    };
    Box::pin(futures::stream::unfold(Some(state), |st| async move {
        let mut st = st?;
        loop {
            match st.current.next().await {
                None => return None,
                Some(Ok(e)) => {
                    if st.on_primary
                        && let Some((k, s)) = &st.last
                        && compare_internal(&e.key, e.seq, k, *s) != Ordering::Greater
                    {
                        continue;
                    }
                    st.last = Some((e.key.clone(), e.seq));
                    return Some((Ok(e), Some(st)));
                }
                Some(Err(e)) if !st.on_primary => {
                    tracing::warn!(error = %e, "secondary scan failed; resuming on the primary");
                    let mut r = st.range.clone();
                    if let Some((k, _)) = &st.last {
                        r.start = Bound::Included(k.clone());
                    }
                    match st.primary.scan(&r).await {
                        Ok(s) => {
                            st.current = s;
                            st.on_primary = true;
                        }
                        Err(e) => return Some((Err(e), None)),
                    }
                }
                Some(Err(e)) => return Some((Err(e), None)),
            }
        }
    }))
}

#[async_trait]
impl Table for HybridTable {
    fn meta(&self) -> &TableMeta {
        self.primary.meta()
    }

    /// Both copies hold the same tombstones (the builder gives both every entry).
    fn range_deletes(&self) -> &[RangeTombstone] {
        self.primary.range_deletes()
    }

    async fn get(&self, key: &[u8], snapshot: SeqNo) -> Result<Option<Entry>> {
        self.primary.get(key, snapshot).await
    }

    fn block_layout(&self) -> Option<Arc<BlockLayout>> {
        self.primary.block_layout()
    }

    async fn read_block(&self, index: usize) -> Result<Block> {
        self.primary.read_block(index).await
    }

    async fn scan(&self, range: &KeyRange) -> Result<BoxStream<Result<Entry>>> {
        match self.scans {
            Side::Primary => self.primary.scan(range).await,
            Side::Secondary => self.bulk_scan(range, false).await,
        }
    }

    fn scan_ready(&self, range: &KeyRange) -> Option<Result<EntryIter>> {
        match self.scans {
            Side::Primary => self.primary.scan_ready(range),
            Side::Secondary => None,
        }
    }

    async fn aggregate(
        &self,
        range: &KeyRange,
        snapshot: SeqNo,
        value_type: ValueType,
        shadowed: &[Bytes],
    ) -> Result<AggregateState> {
        let res = match self.secondary().await {
            Ok(Some(t)) => t.aggregate(range, snapshot, value_type, shadowed).await,
            Ok(None) => {
                return self
                    .primary
                    .aggregate(range, snapshot, value_type, shadowed)
                    .await;
            }
            Err(e) => Err(e),
        };
        match res {
            Ok(state) => Ok(state),
            Err(e) => {
                self.fell_back("aggregate", &e);
                self.primary
                    .aggregate(range, snapshot, value_type, shadowed)
                    .await
            }
        }
    }

    async fn analytic_scan(&self, range: &KeyRange) -> Result<BoxStream<Result<Entry>>> {
        self.bulk_scan(range, true).await
    }

    /// The secondary's: the primary's SSTables cannot tell.
    async fn puts_only(&self) -> bool {
        match self.secondary().await {
            Ok(Some(t)) => t.puts_only().await,
            _ => false,
        }
    }

    /// The secondary's columns; `None` while it lacks the table, and the reader decodes
    /// entries instead.
    async fn columns(
        &self,
        range: &KeyRange,
        fields: &[arrow_schema::Field],
        conditions: &[ColumnCondition],
    ) -> Result<Option<BoxStream<Result<RecordBatch>>>> {
        match self.secondary().await {
            Ok(Some(t)) => t.columns(range, fields, conditions).await,
            Ok(None) => Ok(None),
            Err(e) => {
                self.fell_back("columns", &e);
                Ok(None)
            }
        }
    }
}
