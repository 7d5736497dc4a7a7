//! Write batches: the unit of atomicity and the payload of one journal record.
//!
//! The journal stores opaque bytes; the engine encodes a batch together with the sequence
//! number of its first operation, so replay restores exactly the versions that were acknowledged.

use crate::entry::{EntryKind, SeqNo};
use crate::error::{Error, Result};
use bytes::Bytes;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchOp {
    pub kind: EntryKind,
    pub key: Bytes,
    pub value: Bytes,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WriteBatch {
    ops: Vec<BatchOp>,
    bytes: usize,
}

/// Version of the record encoding below, the first byte of every encoded batch.
/// Format 1: no mark; format 2 carries the writer's visible sequence number (the mark).
const BATCH_FORMAT_V1: u8 = 1;
const BATCH_FORMAT: u8 = 2;

impl WriteBatch {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn put(&mut self, key: impl Into<Bytes>, value: impl Into<Bytes>) -> &mut Self {
        let (key, value) = (key.into(), value.into());
        self.bytes += key.len() + value.len();
        self.ops.push(BatchOp {
            kind: EntryKind::Put,
            key,
            value,
        });
        self
    }

    pub fn delete(&mut self, key: impl Into<Bytes>) -> &mut Self {
        let key = key.into();
        self.bytes += key.len();
        self.ops.push(BatchOp {
            kind: EntryKind::Delete,
            key,
            value: Bytes::new(),
        });
        self
    }

    /// A merge operand for `key`, folded into its value by the database's merge operator.
    pub fn merge(&mut self, key: impl Into<Bytes>, operand: impl Into<Bytes>) -> &mut Self {
        let (key, value) = (key.into(), operand.into());
        self.bytes += key.len() + value.len();
        self.ops.push(BatchOp {
            kind: EntryKind::Merge,
            key,
            value,
        });
        self
    }

    /// A put that reads as deleted from `expires_at_ms` (unix milliseconds) on.
    pub fn put_expiring(
        &mut self,
        key: impl Into<Bytes>,
        value: &[u8],
        expires_at_ms: u64,
    ) -> &mut Self {
        let (key, value) = (key.into(), crate::expiring_value(value, expires_at_ms));
        self.bytes += key.len() + value.len();
        self.ops.push(BatchOp {
            kind: EntryKind::Expiring,
            key,
            value,
        });
        self
    }

    /// Appends an operation as it is (one taken from another batch).
    pub fn push(&mut self, op: BatchOp) -> &mut Self {
        self.bytes += op.key.len() + op.value.len();
        self.ops.push(op);
        self
    }

    /// Deletes every key in `[start, end)` that the batch's writes before this do not set
    /// again after it: one operation, whatever the number of keys.
    pub fn delete_range(&mut self, start: impl Into<Bytes>, end: impl Into<Bytes>) -> &mut Self {
        let (key, value) = (start.into(), end.into());
        self.bytes += key.len() + value.len();
        self.ops.push(BatchOp {
            kind: EntryKind::RangeDelete,
            key,
            value,
        });
        self
    }

    pub fn ops(&self) -> &[BatchOp] {
        &self.ops
    }

    /// The operations, moved out: the write path hands keys and values to the memtable
    /// without cloning them.
    pub fn into_ops(self) -> Vec<BatchOp> {
        self.ops
    }

    pub fn len(&self) -> usize {
        self.ops.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// Sum of key and value lengths.
    pub fn payload_bytes(&self) -> usize {
        self.bytes
    }

    /// Encodes `[format u8 = 2][first_seq u64][count u32][mark u64]` then per op
    /// `[kind u8][key_len u32][key][value_len u32][value]`, integers little-endian. A range
    /// delete (kind 2) has its start as the key and its end as the value; a merge (kind 3)
    /// its operand as the value; an expiring put (kind 4) its expiry and value, as stored. `mark`
    /// is the writer's visible sequence number as it encodes: every batch at or below it
    /// that the writer ever showed was journaled before this one, so a replica that has
    /// applied the journal up to here may show everything up to the mark.
    pub fn encode(&self, first_seq: SeqNo, mark: SeqNo) -> Bytes {
        Self::encode_group(&[self], first_seq, mark)
    }

    /// Encodes `batches` as one record, as if they were one batch of their operations in
    /// order, numbered from `first_seq`: a write group's leader journals its group so.
    pub fn encode_group(batches: &[&WriteBatch], first_seq: SeqNo, mark: SeqNo) -> Bytes {
        let (bytes, count) = batches
            .iter()
            .fold((0, 0), |(b, n), w| (b + w.bytes, n + w.ops.len()));
        let mut out = Vec::with_capacity(21 + bytes + count * 9);
        out.push(BATCH_FORMAT);
        out.extend_from_slice(&first_seq.to_le_bytes());
        out.extend_from_slice(&(count as u32).to_le_bytes());
        out.extend_from_slice(&mark.to_le_bytes());
        for op in batches.iter().flat_map(|b| &b.ops) {
            out.push(op.kind.as_u8());
            out.extend_from_slice(&(op.key.len() as u32).to_le_bytes());
            out.extend_from_slice(&op.key);
            out.extend_from_slice(&(op.value.len() as u32).to_le_bytes());
            out.extend_from_slice(&op.value);
        }
        Bytes::from(out)
    }

    /// Decodes what [`WriteBatch::encode`] wrote; keys and values share `data`'s buffer.
    pub fn decode(data: &Bytes) -> Result<(SeqNo, WriteBatch)> {
        Self::decode_marked(data).map(|(first, _, batch)| (first, batch))
    }

    /// Decodes the first sequence number, the mark (0 in format 1, which had none) and the
    /// batch.
    pub fn decode_marked(data: &Bytes) -> Result<(SeqNo, SeqNo, WriteBatch)> {
        let bad = |why: &str| Error::corruption("journal record", why.to_string());
        let mut pos = 0usize;
        let take = |pos: &mut usize, n: usize| -> Result<Bytes> {
            if data.len() < *pos + n {
                return Err(bad("batch is truncated"));
            }
            let s = data.slice(*pos..*pos + n);
            *pos += n;
            Ok(s)
        };
        let fmt = take(&mut pos, 1)?;
        if fmt[0] != BATCH_FORMAT && fmt[0] != BATCH_FORMAT_V1 {
            return Err(bad("unknown batch format"));
        }
        let seq = u64::from_le_bytes(take(&mut pos, 8)?[..].try_into().map_err(|_| bad("seq"))?);
        let count = u32::from_le_bytes(
            take(&mut pos, 4)?[..]
                .try_into()
                .map_err(|_| bad("count"))?,
        );
        let mark = if fmt[0] == BATCH_FORMAT {
            u64::from_le_bytes(take(&mut pos, 8)?[..].try_into().map_err(|_| bad("mark"))?)
        } else {
            0
        };
        let mut batch = WriteBatch::new();
        for _ in 0..count {
            let kind =
                EntryKind::from_u8(take(&mut pos, 1)?[0]).ok_or_else(|| bad("bad op kind"))?;
            let klen = u32::from_le_bytes(
                take(&mut pos, 4)?[..]
                    .try_into()
                    .map_err(|_| bad("key length"))?,
            );
            let key = take(&mut pos, klen as usize)?;
            let vlen = u32::from_le_bytes(
                take(&mut pos, 4)?[..]
                    .try_into()
                    .map_err(|_| bad("value length"))?,
            );
            let value = take(&mut pos, vlen as usize)?;
            batch.bytes += key.len() + value.len();
            batch.ops.push(BatchOp { kind, key, value });
        }
        if pos != data.len() {
            return Err(bad("trailing bytes after batch"));
        }
        Ok((seq, mark, batch))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip() {
        let mut b = WriteBatch::new();
        b.put("a", "1")
            .delete("b")
            .put("", "")
            .delete_range("c", "f")
            .merge("m", "+")
            .put_expiring("e", b"v", 99);
        let enc = b.encode(42, 40);
        let (seq, mark, back) = WriteBatch::decode_marked(&enc).unwrap();
        assert_eq!((seq, mark), (42, 40));
        assert_eq!(back, b);
    }

    #[test]
    fn a_group_reads_back_as_one_batch_of_its_operations() {
        let (mut a, mut b) = (WriteBatch::new(), WriteBatch::new());
        a.put("a", "1").delete("b");
        b.delete_range("c", "f").merge("m", "+");
        let enc = WriteBatch::encode_group(&[&a, &b], 42, 40);
        let (seq, mark, back) = WriteBatch::decode_marked(&enc).unwrap();
        assert_eq!((seq, mark), (42, 40));
        let mut whole = WriteBatch::new();
        whole
            .put("a", "1")
            .delete("b")
            .delete_range("c", "f")
            .merge("m", "+");
        assert_eq!(back, whole);
    }

    /// Format 1, written before marks, reads with mark 0.
    #[test]
    fn a_format_1_batch_reads_with_no_mark() {
        let mut b = WriteBatch::new();
        b.put("k", "v");
        let mut v1 = vec![BATCH_FORMAT_V1];
        v1.extend_from_slice(&7u64.to_le_bytes());
        v1.extend_from_slice(&1u32.to_le_bytes());
        v1.push(EntryKind::Put.as_u8());
        v1.extend_from_slice(&1u32.to_le_bytes());
        v1.extend_from_slice(b"k");
        v1.extend_from_slice(&1u32.to_le_bytes());
        v1.extend_from_slice(b"v");
        let (seq, mark, back) = WriteBatch::decode_marked(&Bytes::from(v1)).unwrap();
        assert_eq!((seq, mark), (7, 0));
        assert_eq!(back, b);
    }

    /// Random bytes and mutated encodings: an error or a batch, never a panic (lengths are
    /// checked against the bytes there before anything is taken).
    #[test]
    fn decoding_takes_any_bytes() {
        let mut b = WriteBatch::new();
        b.put("key", "value").delete("gone").put("", "empty key");
        let valid = b.encode(5, 4).to_vec();
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(13);
        let mut next = move || rng.random::<u64>();
        for round in 0..20_000 {
            let mut v = if round % 2 == 0 {
                (0..next() % 100).map(|_| next() as u8).collect::<Vec<u8>>()
            } else {
                valid.clone()
            };
            for _ in 0..next() % 3 {
                if !v.is_empty() {
                    let at = (next() as usize) % v.len();
                    v[at] = next() as u8;
                }
            }
            let _ = WriteBatch::decode(&Bytes::from(v));
        }
    }

    #[test]
    fn truncated_is_an_error() {
        let mut b = WriteBatch::new();
        b.put("key", "value");
        let enc = b.encode(1, 0);
        for cut in 0..enc.len() {
            assert!(
                WriteBatch::decode(&enc.slice(..cut)).is_err(),
                "cut at {cut}"
            );
        }
    }
}
