//! Metadata of one immutable table, as the manifest records it and storages return it.

use crate::TableId;
use crate::entry::SeqNo;
use bytes::Bytes;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, bincode::Encode, bincode::Decode)]
pub struct TableMeta {
    pub id: TableId,
    /// Smallest and largest user keys in the table (inclusive).
    pub smallest: Vec<u8>,
    pub largest: Vec<u8>,
    pub min_seq: SeqNo,
    pub max_seq: SeqNo,
    pub entries: u64,
    /// Size of the table's file in bytes.
    pub size: u64,
}

impl TableMeta {
    pub fn smallest_key(&self) -> Bytes {
        Bytes::copy_from_slice(&self.smallest)
    }

    pub fn overlaps_keys(&self, smallest: &[u8], largest: &[u8]) -> bool {
        self.smallest.as_slice() <= largest && smallest <= self.largest.as_slice()
    }
}
