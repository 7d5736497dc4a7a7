//! The bytes of one journal object: its header (kind, epoch, LSNs, the writer's meta), its
//! records, and the crc32c that covers them all.

use bytes::{BufMut, Bytes, BytesMut};
use cairn_common::{Error, Lsn, Result};

// An object: MAGIC, kind (1 claim, 2 records, 3 fill), epoch, first, last and next LSN, record
// count, the meta's length, the meta (JSON), the records ([len u32][payload]), then a crc32c
// of all that comes before it.
pub(super) const MAGIC: &[u8; 8] = b"CAIRNJO1";
pub(super) const FIXED: usize = 8 + 1 + 8 * 4 + 4 + 4;
pub(super) const CLAIM: u8 = 1;
pub(super) const RECORDS: u8 = 2;
/// A number a claim took so that the writer it replaces, which may have had commits in flight
/// there, cannot land one: no records, never deleted.
pub(super) const FILL: u8 = 3;

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub(super) struct Meta {
    pub database: String,
    pub journal: String,
    pub writer: String,
    /// How many commits its writer may have in flight: the numbers a claim after it fills.
    /// Objects written before commits overlapped say nothing: one.
    #[serde(default = "one_in_flight")]
    pub window: u64,
}

fn one_in_flight() -> u64 {
    1
}

#[derive(Debug, Clone)]
pub(super) struct Header {
    pub kind: u8,
    pub epoch: u64,
    pub first_lsn: Lsn,
    pub last_lsn: Lsn,
    pub next_lsn: Lsn,
    pub meta: Meta,
}

pub(super) fn encode(h: &Header, records: &[Bytes]) -> Result<Bytes> {
    let meta = serde_json::to_vec(&h.meta)
        .map_err(|e| Error::InvalidArgument(format!("journal object meta: {e}")))?;
    let body: usize = records.iter().map(|r| 4 + r.len()).sum();
    let mut out = BytesMut::with_capacity(FIXED + meta.len() + body + 4);
    out.put_slice(MAGIC);
    out.put_u8(h.kind);
    for v in [h.epoch, h.first_lsn, h.last_lsn, h.next_lsn] {
        out.put_u64_le(v);
    }
    out.put_u32_le(records.len() as u32);
    out.put_u32_le(meta.len() as u32);
    out.put_slice(&meta);
    for r in records {
        out.put_u32_le(r.len() as u32);
        out.put_slice(r);
    }
    let crc = crc32c::crc32c(&out);
    out.put_u32_le(crc);
    Ok(out.freeze())
}

pub(super) fn decode(what: &str, data: &Bytes) -> Result<(Header, Vec<Bytes>)> {
    let bad = |d: &str| Error::corruption(what, d);
    if data.len() < FIXED + 4 || &data[..8] != MAGIC {
        return Err(bad("not a journal object (magic or length)"));
    }
    let (body, crc) = data.split_at(data.len() - 4);
    let crc = u32::from_le_bytes([crc[0], crc[1], crc[2], crc[3]]);
    if crc32c::crc32c(body) != crc {
        return Err(bad("checksum mismatch"));
    }
    let u64_at = |at: usize| u64::from_le_bytes(body[at..at + 8].try_into().unwrap_or([0; 8]));
    let u32_at = |at: usize| u32::from_le_bytes(body[at..at + 4].try_into().unwrap_or([0; 4]));
    let kind = body[8];
    let count = u32_at(41) as usize;
    let meta_len = u32_at(45) as usize;
    let meta_end = FIXED
        .checked_add(meta_len)
        .filter(|&e| e <= body.len())
        .ok_or_else(|| bad("meta runs past the object"))?;
    let meta: Meta =
        serde_json::from_slice(&body[FIXED..meta_end]).map_err(|e| bad(&format!("meta: {e}")))?;
    let h = Header {
        kind,
        epoch: u64_at(9),
        first_lsn: u64_at(17),
        last_lsn: u64_at(25),
        next_lsn: u64_at(33),
        meta,
    };
    let mut records = Vec::with_capacity(count.min(1 << 16));
    let mut at = meta_end;
    for _ in 0..count {
        if at + 4 > body.len() {
            return Err(bad("a record runs past the object"));
        }
        let len = u32_at(at) as usize;
        at += 4;
        if at + len > body.len() {
            return Err(bad("a record runs past the object"));
        }
        records.push(data.slice(at..at + len));
        at += len;
    }
    let consistent = match kind {
        CLAIM | FILL => count == 0,
        RECORDS => {
            count > 0
                && h.last_lsn == h.first_lsn + count as u64 - 1
                && h.next_lsn == h.last_lsn + 1
        }
        _ => false,
    };
    if !consistent || at != body.len() {
        return Err(bad("header and records disagree"));
    }
    Ok((h, records))
}

pub(super) fn object_name(number: u64) -> String {
    format!("{number:020}")
}
