//! The set of live tables readers see, swapped atomically on every flush and compaction.
//! A table handle removed by compaction is deleted from storage when its last reader lets
//! go of it, so a scan that started before the compaction finishes on the tables it began with.

use cairn_common::{TableId, TableMeta};
use cairn_filestore::Table;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio::sync::mpsc::UnboundedSender;

pub struct TableHandle {
    pub meta: TableMeta,
    pub table: Arc<dyn Table>,
    obsolete: AtomicBool,
    deleter: UnboundedSender<TableId>,
}

impl TableHandle {
    pub fn new(table: Arc<dyn Table>, deleter: UnboundedSender<TableId>) -> Arc<Self> {
        Arc::new(TableHandle {
            meta: table.meta().clone(),
            table,
            obsolete: AtomicBool::new(false),
            deleter,
        })
    }

    pub fn mark_obsolete(&self) {
        self.obsolete.store(true, Ordering::Release);
    }
}

impl Drop for TableHandle {
    fn drop(&mut self) {
        if self.obsolete.load(Ordering::Acquire) {
            let _ = self.deleter.send(self.meta.id);
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
