//! What every table builder checks and records while entries stream in: that they continue the
//! internal order, and the table's metadata (key bounds, sequence bounds, entry count). Each
//! storage format keeps its own bytes; this keeps the rules the same for all of them.
//!
//! Range tombstones arrive among the entries at their start keys. The tracker keeps them
//! aside for the builder, and stretches the table's key bounds over their ends, so that a
//! reader looking for a key they cover finds the table (`largest` may then be an end key,
//! which the tombstone itself excludes).

use bytes::Bytes;
use cairn_common::{
    Entry, Error, RangeTombstone, Result, SeqNo, TableId, TableMeta, compare_internal,
};
use std::cmp::Ordering;

pub(crate) struct MetaTracker {
    meta: TableMeta,
    /// The last entry's key and number. Keys are copied into buffers kept from one entry to
    /// the next: a clone of an entry's `Bytes` (and the drop of the one before) would be two
    /// atomic operations on a count that the hybrid store's other builder, on another
    /// thread, touches too.
    last: Option<Vec<u8>>,
    last_seq: SeqNo,
    /// The last key of a version (not of a range tombstone), and that version's number.
    last_point: Option<Vec<u8>>,
    last_point_seq: SeqNo,
    ranges: Vec<RangeTombstone>,
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
            last_seq: 0,
            last_point: None,
            last_point_seq: 0,
            ranges: Vec::new(),
        }
    }

    /// Records `e`; returns whether it is a version of a key no earlier version had (false
    /// for a range tombstone, which the tracker keeps). Out-of-order input is refused.
    pub(crate) fn observe(&mut self, e: &Entry) -> Result<bool> {
        if let Some(k) = &self.last
            && compare_internal(k, self.last_seq, &e.key, e.seq) != Ordering::Less
        {
            return Err(Error::InvalidArgument(format!(
                "table {}: entries out of order ({:?}@{} then {:?}@{})",
                self.meta.id,
                Bytes::copy_from_slice(k),
                self.last_seq,
                e.key,
                e.seq
            )));
        }
        let new_key = if e.is_range_delete() {
            let t = RangeTombstone::from_entry(e)
                .map_err(|err| Error::InvalidArgument(format!("table {}: {err}", self.meta.id)))?;
            if self.meta.largest.as_slice() < t.end.as_ref() {
                self.meta.largest = t.end.to_vec();
            }
            self.ranges.push(t);
            false
        } else {
            let new = self.last_point.as_deref() != Some(e.key.as_ref());
            if new {
                copy_into(&mut self.last_point, &e.key);
            }
            self.last_point_seq = e.seq;
            new
        };
        if self.meta.entries == 0 {
            self.meta.smallest = e.key.to_vec();
        }
        self.meta.entries += 1;
        self.meta.min_seq = self.meta.min_seq.min(e.seq);
        self.meta.max_seq = self.meta.max_seq.max(e.seq);
        copy_into(&mut self.last, &e.key);
        self.last_seq = e.seq;
        Ok(new_key)
    }

    /// The metadata so far, `largest` filled in; an empty table is refused.
    pub(crate) fn seal(&self) -> Result<TableMeta> {
        let Some(last_key) = &self.last else {
            return Err(Error::InvalidArgument(format!(
                "table {}: no entries",
                self.meta.id
            )));
        };
        let mut meta = self.meta.clone();
        if meta.largest.as_slice() < last_key.as_slice() {
            meta.largest = last_key.clone();
        }
        Ok(meta)
    }

    /// The internal key of the last version seen (not of a range tombstone): what an
    /// SSTable's block index names as its block's last entry.
    pub(crate) fn last_point(&self) -> Option<(&[u8], SeqNo)> {
        self.last_point.as_deref().map(|k| (k, self.last_point_seq))
    }

    /// The range tombstones seen so far, in the order they came (internal order).
    pub(crate) fn ranges(&self) -> &[RangeTombstone] {
        &self.ranges
    }
}

/// `key` in `buf`, reusing its allocation.
fn copy_into(buf: &mut Option<Vec<u8>>, key: &[u8]) {
    let b = buf.get_or_insert_with(Vec::new);
    b.clear();
    b.extend_from_slice(key);
}
