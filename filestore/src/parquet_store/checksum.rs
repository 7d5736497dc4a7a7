//! Row-group checksums. parquet-rs writes no page CRCs, and zstd stores incompressible data
//! raw, so a flipped bit in a value would decode as a different value. Each row group's rows
//! are summed with crc32c as they are written (key, seq, kind, value, with lengths) and the
//! sums kept in the footer under `cairn.row_group_crc32c`; a read of whole row groups (a full
//! scan, which is what compaction does) recomputes and compares them.

use super::schema::{KEY, KIND, SEQ, VALUE};
use crate::ContentDigest;
use arrow_array::RecordBatch;
use arrow_array::cast::AsArray;
use arrow_array::types::{UInt8Type, UInt64Type};
use cairn_common::{Error, Result};

pub const ROW_GROUP_CRC_KEY: &str = "cairn.row_group_crc32c";

/// The running sum of one row group.
#[derive(Default, Clone, Copy)]
pub struct RowCrc(u32);

impl RowCrc {
    pub fn add(&mut self, key: &[u8], seq: u64, kind: u8, value: &[u8]) {
        self.0 = crate::digest::row_crc(self.0, key, seq, kind, value);
    }
}

/// A row group's checksum and, if asked for, the digest of its rows, read from the batch of
/// its own columns that is encoded.
pub fn sums(batch: &RecordBatch, keep_digest: bool) -> (u32, Option<ContentDigest>) {
    let keys = batch.column(KEY).as_binary::<i32>();
    let seqs = batch.column(SEQ).as_primitive::<UInt64Type>();
    let kinds = batch.column(KIND).as_primitive::<UInt8Type>();
    let values = batch.column(VALUE).as_binary::<i32>();
    let mut sum = RowCrc::default();
    let mut digest = keep_digest.then(ContentDigest::default);
    for i in 0..batch.num_rows() {
        let (k, s, t, v) = (
            keys.value(i),
            seqs.value(i),
            kinds.value(i),
            values.value(i),
        );
        sum.add(k, s, t, v);
        if let Some(d) = &mut digest {
            d.add(k, s, t, v);
        }
    }
    (sum.0, digest)
}

/// The footer's value: the sums in row-group order, comma-separated hex.
pub fn encode(sums: &[u32]) -> String {
    sums.iter()
        .map(|s| format!("{s:08x}"))
        .collect::<Vec<_>>()
        .join(",")
}

pub fn decode(text: &str, groups: usize) -> std::result::Result<Vec<u32>, String> {
    let sums: Vec<u32> = if text.is_empty() {
        Vec::new()
    } else {
        text.split(',')
            .map(|s| u32::from_str_radix(s, 16).map_err(|e| format!("{ROW_GROUP_CRC_KEY}: {e}")))
            .collect::<std::result::Result<_, _>>()?
    };
    if sums.len() != groups {
        return Err(format!(
            "{ROW_GROUP_CRC_KEY} holds {} sums for {groups} row groups",
            sums.len()
        ));
    }
    Ok(sums)
}

/// Checks the batches of a read of every row, in order, against the sums.
pub struct Verifier {
    sums: Vec<u32>,
    rows: Vec<usize>,
    group: usize,
    left: usize,
    running: RowCrc,
    what: String,
}

impl Verifier {
    /// `rows` holds each row group's row count.
    pub fn new(sums: Vec<u32>, rows: Vec<usize>, what: String) -> Self {
        let left = rows.first().copied().unwrap_or(0);
        Verifier {
            sums,
            rows,
            group: 0,
            left,
            running: RowCrc::default(),
            what,
        }
    }

    pub fn check(&mut self, batch: &RecordBatch) -> Result<()> {
        let keys = batch.column(KEY).as_binary::<i32>();
        let seqs = batch.column(SEQ).as_primitive::<UInt64Type>();
        let kinds = batch.column(KIND).as_primitive::<UInt8Type>();
        let values = batch.column(VALUE).as_binary::<i32>();
        for i in 0..batch.num_rows() {
            if self.group >= self.sums.len() {
                return Err(self.corrupt("more rows than its row groups hold".into()));
            }
            self.running.add(
                keys.value(i),
                seqs.value(i),
                kinds.value(i),
                values.value(i),
            );
            self.left -= 1;
            if self.left == 0 {
                if self.running.0 != self.sums[self.group] {
                    return Err(
                        self.corrupt(format!("row group {} fails its checksum", self.group))
                    );
                }
                self.group += 1;
                self.running = RowCrc::default();
                self.left = self.rows.get(self.group).copied().unwrap_or(0);
            }
        }
        Ok(())
    }

    fn corrupt(&self, detail: String) -> Error {
        Error::corruption(self.what.clone(), detail)
    }
}
