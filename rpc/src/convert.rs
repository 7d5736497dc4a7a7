//! Conversions between the engine's types and their protobuf messages. Decoding checks what
//! the wire cannot: entry kinds, bound kinds and field lengths, so a malformed request is an
//! `InvalidArgument`, never a panic.

use super::pb;
use cairn_common::{
    AggregateState, Entry, EntryKind, Error, KeyRange, Result, TableMeta, ValueType,
};
use std::ops::Bound;

impl From<&Entry> for pb::Entry {
    fn from(e: &Entry) -> Self {
        pb::Entry {
            key: e.key.clone(),
            seq: e.seq,
            kind: e.kind.as_u8() as u32,
            value: e.value.clone(),
        }
    }
}

impl TryFrom<pb::Entry> for Entry {
    type Error = Error;

    fn try_from(e: pb::Entry) -> Result<Self> {
        let kind = u8::try_from(e.kind)
            .ok()
            .and_then(EntryKind::from_u8)
            .ok_or_else(|| Error::InvalidArgument(format!("unknown entry kind {}", e.kind)))?;
        Ok(Entry {
            key: e.key,
            seq: e.seq,
            kind,
            value: e.value,
        })
    }
}

pub fn encode_entries(entries: &[Entry]) -> pb::Block {
    pb::Block {
        entries: entries.iter().map(pb::Entry::from).collect(),
    }
}

pub fn decode_entries(block: pb::Block) -> Result<Vec<Entry>> {
    block.entries.into_iter().map(Entry::try_from).collect()
}

impl From<&TableMeta> for pb::TableMeta {
    fn from(m: &TableMeta) -> Self {
        pb::TableMeta {
            id: m.id,
            smallest: m.smallest.clone().into(),
            largest: m.largest.clone().into(),
            min_seq: m.min_seq,
            max_seq: m.max_seq,
            entries: m.entries,
            size: m.size,
        }
    }
}

impl From<pb::TableMeta> for TableMeta {
    fn from(m: pb::TableMeta) -> Self {
        TableMeta {
            id: m.id,
            smallest: m.smallest.to_vec(),
            largest: m.largest.to_vec(),
            min_seq: m.min_seq,
            max_seq: m.max_seq,
            entries: m.entries,
            size: m.size,
        }
    }
}

/// A required table meta field.
pub fn decode_meta(m: Option<pb::TableMeta>) -> Result<TableMeta> {
    m.map(TableMeta::from)
        .ok_or_else(|| Error::InvalidArgument("request names no table".into()))
}

fn encode_bound(b: &Bound<bytes::Bytes>) -> pb::Bound {
    match b {
        Bound::Unbounded => pb::Bound {
            kind: 0,
            key: Default::default(),
        },
        Bound::Included(k) => pb::Bound {
            kind: 1,
            key: k.clone(),
        },
        Bound::Excluded(k) => pb::Bound {
            kind: 2,
            key: k.clone(),
        },
    }
}

fn decode_bound(b: Option<pb::Bound>) -> Result<Bound<bytes::Bytes>> {
    let Some(b) = b else {
        return Ok(Bound::Unbounded);
    };
    Ok(match b.kind {
        0 => Bound::Unbounded,
        1 => Bound::Included(b.key),
        2 => Bound::Excluded(b.key),
        k => return Err(Error::InvalidArgument(format!("unknown bound kind {k}"))),
    })
}

impl From<&KeyRange> for pb::KeyRange {
    fn from(r: &KeyRange) -> Self {
        pb::KeyRange {
            start: Some(encode_bound(&r.start)),
            end: Some(encode_bound(&r.end)),
        }
    }
}

/// A missing range is the whole key space.
pub fn decode_range(r: Option<pb::KeyRange>) -> Result<KeyRange> {
    let Some(r) = r else {
        return Ok(KeyRange::all());
    };
    Ok(KeyRange {
        start: decode_bound(r.start)?,
        end: decode_bound(r.end)?,
    })
}

impl From<&AggregateState> for pb::AggregateState {
    fn from(s: &AggregateState) -> Self {
        pb::AggregateState {
            value_type: s.value_type.into(),
            rows: s.rows,
            numeric: s.numeric,
            skipped: s.skipped,
            sum_i: bytes::Bytes::copy_from_slice(&s.sum_i.to_le_bytes()),
            sum_f: s.sum_f,
            min: s.min,
            max: s.max,
            min_i: s.min_i,
            max_i: s.max_i,
            unresolved: s.unresolved,
        }
    }
}

impl TryFrom<pb::AggregateState> for AggregateState {
    type Error = Error;

    fn try_from(s: pb::AggregateState) -> Result<Self> {
        let sum_i = <[u8; 16]>::try_from(s.sum_i.as_ref())
            .map_err(|_| Error::InvalidArgument("sum_i must be 16 bytes".into()))?;
        Ok(AggregateState {
            value_type: ValueType::try_from(s.value_type)?,
            rows: s.rows,
            numeric: s.numeric,
            skipped: s.skipped,
            sum_i: i128::from_le_bytes(sum_i),
            sum_f: s.sum_f,
            min: s.min,
            max: s.max,
            min_i: s.min_i,
            max_i: s.max_i,
            unresolved: s.unresolved,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    #[test]
    fn entries_ranges_and_aggregates_roundtrip() {
        let entries = vec![Entry::put("a", 3, "x"), Entry::delete("b", 2)];
        assert_eq!(decode_entries(encode_entries(&entries)).unwrap(), entries);
        for r in [
            KeyRange::all(),
            KeyRange::new(Some(Bytes::from("a")), Some(Bytes::from("c"))),
            KeyRange {
                start: Bound::Excluded(Bytes::from("a")),
                end: Bound::Included(Bytes::from("z")),
            },
        ] {
            assert_eq!(decode_range(Some((&r).into())).unwrap(), r);
        }
        let mut s = AggregateState::new(ValueType::I64);
        s.add(&(-5i64).to_le_bytes());
        s.add(b"not a number");
        assert_eq!(
            AggregateState::try_from(pb::AggregateState::from(&s)).unwrap(),
            s
        );
    }

    #[test]
    fn malformed_messages_are_invalid_arguments() {
        let bad = pb::Entry {
            kind: 7,
            ..Default::default()
        };
        assert!(matches!(
            Entry::try_from(bad),
            Err(Error::InvalidArgument(_))
        ));
        let bad = pb::KeyRange {
            start: Some(pb::Bound {
                kind: 9,
                key: Bytes::new(),
            }),
            end: None,
        };
        assert!(decode_range(Some(bad)).is_err());
        let bad = pb::AggregateState::default();
        assert!(AggregateState::try_from(bad).is_err());
        assert!(decode_meta(None).is_err());
    }
}
