//! The set of live tables readers see, swapped atomically on every flush and compaction.
//! A table handle removed by compaction is deleted from storage when its last reader lets
//! go of it, so a scan that started before the compaction finishes on the tables it began with.

use cairn_common::{RangeDeletes, TableId, TableMeta};
use cairn_filestore::Table;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use tokio::sync::mpsc::UnboundedSender;

/// A table to delete once its handle is gone.
#[derive(Debug, Clone, Copy)]
pub struct Deletion {
    pub id: TableId,
    /// The table was in an installed version, so readers in other processes (replicas
    /// following the manifest) may still read it: it goes after the grace period.
    pub was_live: bool,
}

const LIVE: u8 = 0;
const RETIRED: u8 = 1;
const ABANDONED: u8 = 2;

pub struct TableHandle {
    pub meta: TableMeta,
    pub table: Arc<dyn Table>,
    /// The table's range tombstones, cut for lookups; `None` for a table without any.
    pub ranges: Option<Arc<RangeDeletes>>,
    state: AtomicU8,
    deleter: UnboundedSender<Deletion>,
}

impl TableHandle {
    pub fn new(table: Arc<dyn Table>, deleter: UnboundedSender<Deletion>) -> Arc<Self> {
        let ranges = (!table.range_deletes().is_empty())
            .then(|| Arc::new(RangeDeletes::new(table.range_deletes().iter().cloned())));
        Arc::new(TableHandle {
            meta: table.meta().clone(),
            ranges,
            table,
            state: AtomicU8::new(LIVE),
            deleter,
        })
    }

    /// Removed from the manifest (compacted away): deleted after the grace period once this
    /// process no longer reads it.
    pub fn mark_obsolete(&self) {
        self.state.store(RETIRED, Ordering::Release);
    }

    /// Never installed (an abandoned import): nobody else can have seen it.
    pub fn mark_abandoned(&self) {
        self.state.store(ABANDONED, Ordering::Release);
    }
}

impl Drop for TableHandle {
    fn drop(&mut self) {
        let state = self.state.load(Ordering::Acquire);
        if state != LIVE {
            let _ = self.deleter.send(Deletion {
                id: self.meta.id,
                was_live: state == RETIRED,
            });
        }
    }
}

#[derive(Clone, Default)]
pub struct Version {
    /// `levels[0]` newest first (tables may overlap); deeper levels sorted by smallest key,
    /// without overlap.
    pub levels: Vec<Vec<Arc<TableHandle>>>,
}

impl Version {
    pub fn metas(&self) -> Vec<Vec<TableMeta>> {
        self.levels
            .iter()
            .map(|l| l.iter().map(|t| t.meta.clone()).collect())
            .collect()
    }

    /// The one table of a sorted level whose key range can hold `key`.
    pub fn find_in_level<'a>(
        level: &'a [Arc<TableHandle>],
        key: &[u8],
    ) -> Option<&'a Arc<TableHandle>> {
        let i = level.partition_point(|t| t.meta.largest.as_slice() < key);
        level.get(i).filter(|t| t.meta.smallest.as_slice() <= key)
    }
}
