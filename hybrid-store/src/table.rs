//! A table read through the hybrid store: lookups from the primary copy; analytics (and, in
//! the compaction view, scans) from the secondary once it holds the table, the primary until
//! then.

use crate::{Shared, Side};
use async_trait::async_trait;
use bytes::Bytes;
use cairn_common::{
    AggregateState, BoxStream, Entry, KeyRange, Result, SeqNo, TableMeta, ValueType,
};
use cairn_filestore::Table;
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

    /// The secondary copy, opened on first use; the primary while the secondary lacks it.
    async fn bulk(&self) -> Result<&Arc<dyn Table>> {
        if let Some(t) = self.secondary.get() {
            return Ok(t);
        }
        let meta = self.primary.meta();
        if !self.shared.secondary_has(meta.id) {
            return Ok(&self.primary);
        }
        self.secondary
            .get_or_try_init(|| self.shared.secondary.open_table(meta))
            .await
    }
}

#[async_trait]
impl Table for HybridTable {
    fn meta(&self) -> &TableMeta {
        self.primary.meta()
    }

    async fn get(&self, key: &[u8], snapshot: SeqNo) -> Result<Option<Entry>> {
        self.primary.get(key, snapshot).await
    }

    async fn scan(&self, range: &KeyRange) -> Result<BoxStream<Result<Entry>>> {
        match self.scans {
            Side::Primary => self.primary.scan(range).await,
            Side::Secondary => self.bulk().await?.scan(range).await,
        }
    }

    async fn aggregate(
        &self,
        range: &KeyRange,
        snapshot: SeqNo,
        value_type: ValueType,
        shadowed: &[Bytes],
    ) -> Result<AggregateState> {
        self.bulk()
            .await?
            .aggregate(range, snapshot, value_type, shadowed)
            .await
    }

    async fn analytic_scan(&self, range: &KeyRange) -> Result<BoxStream<Result<Entry>>> {
        self.bulk().await?.analytic_scan(range).await
    }
}
