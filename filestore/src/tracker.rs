//! What every table builder checks and records while entries stream in: that they continue the
//! internal order, and the table's metadata (key bounds, sequence bounds, entry count). Each
//! storage format keeps its own bytes; this keeps the rules the same for all of them.

use bytes::Bytes;
use cairn_common::{Entry, Error, Result, SeqNo, TableId, TableMeta, compare_internal};
use std::cmp::Ordering;

pub(crate) struct MetaTracker {
    meta: TableMeta,
    last: Option<(Bytes, SeqNo)>,
}

impl MetaTracker {
    pub(crate) fn new(id: TableId) -> Self {
        MetaTracker {
            meta: TableMeta {
                id,
                smallest: Vec::new(),
                largest: Vec::new(),
                min_seq: SeqNo::MAX,
                max_seq: 0,
                entries: 0,
                size: 0,
            },
            last: None,
        }
    }

    /// Records `e`; returns whether it starts a new user key. Out-of-order input is refused.
    pub(crate) fn observe(&mut self, e: &Entry) -> Result<bool> {
        let new_key = match &self.last {
            Some((k, s)) => {
                if compare_internal(k, *s, &e.key, e.seq) != Ordering::Less {
                    return Err(Error::InvalidArgument(format!(
                        "table {}: entries out of order ({:?}@{} then {:?}@{})",
                        self.meta.id, k, s, e.key, e.seq
                    )));
                }
                k != &e.key
            }
            None => true,
        };
        if self.meta.entries == 0 {
            self.meta.smallest = e.key.to_vec();
        }
        self.meta.entries += 1;
        self.meta.min_seq = self.meta.min_seq.min(e.seq);
        self.meta.max_seq = self.meta.max_seq.max(e.seq);
        self.last = Some((e.key.clone(), e.seq));
        Ok(new_key)
    }

    /// The metadata so far, `largest` filled in; an empty table is refused.
    pub(crate) fn seal(&self) -> Result<TableMeta> {
        let Some((last_key, _)) = &self.last else {
            return Err(Error::InvalidArgument(format!(
                "table {}: no entries",
                self.meta.id
            )));
        };
        let mut meta = self.meta.clone();
        meta.largest = last_key.to_vec();
        Ok(meta)
    }
}
