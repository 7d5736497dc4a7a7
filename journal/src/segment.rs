//! Segment file layout and the record codec shared by writing, tail repair and replay.
//!
//! A segment starts with a 16-byte header `[magic "CAIRNWAL"][version u32][reserved u32]`,
//! followed by records `[len u32][crc32c u32][lsn u64][payload; len]`, integers little-endian.
//! The CRC covers the LSN and the payload, so a torn or bit-flipped record is detected. From
//! version 2 the top bit of `len` marks the first record of each write (one group commit):
//! recovery tells a torn last write, whose pages may reach the disk in any order, from damage
//! to records written before it.

use bytes::Bytes;
use cairn_common::Lsn;
use std::path::{Path, PathBuf};

pub const MAGIC: &[u8; 8] = b"CAIRNWAL";
pub const VERSION: u32 = 2;
/// Segments of version 1 have no write marks; they are read the same way.
const OLDEST_VERSION: u32 = 1;
const WRITE_START: u32 = 1 << 31;
pub const HEADER_LEN: usize = 16;
pub const RECORD_HEADER_LEN: usize = 16;
/// Larger records are refused on append and treated as garbage when read back.
pub const MAX_RECORD: usize = 256 << 20;

pub fn header() -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[..8].copy_from_slice(MAGIC);
    h[8..12].copy_from_slice(&VERSION.to_le_bytes());
    h
}

pub fn file_name(first_lsn: Lsn) -> String {
    format!("{first_lsn:020}.wal")
}

pub fn parse_file_name(path: &Path) -> Option<Lsn> {
    let name = path.file_name()?.to_str()?;
    name.strip_suffix(".wal")?.parse().ok()
}

pub fn checksum(lsn: Lsn, payload: &[u8]) -> u32 {
    crc32c::crc32c_append(crc32c::crc32c(&lsn.to_le_bytes()), payload)
}

/// Appends one record; `starts_write` marks the first record of a write.
pub fn encode_into(buf: &mut Vec<u8>, lsn: Lsn, payload: &[u8], starts_write: bool) {
    let mark = if starts_write { WRITE_START } else { 0 };
    buf.extend_from_slice(&(payload.len() as u32 | mark).to_le_bytes());
    buf.extend_from_slice(&checksum(lsn, payload).to_le_bytes());
    buf.extend_from_slice(&lsn.to_le_bytes());
    buf.extend_from_slice(payload);
}

/// What decoding found at one offset of a segment's bytes.
pub enum Decoded {
    Record {
        lsn: Lsn,
        payload: Bytes,
        next: usize,
        /// The first record of a write (always false in version 1 segments).
        starts_write: bool,
    },
    /// Clean end of data.
    End,
    /// The bytes from this offset on are not a valid record (torn write or corruption).
    Bad(&'static str),
}

pub fn decode_at(data: &Bytes, off: usize) -> Decoded {
    if off == data.len() {
        return Decoded::End;
    }
    if data.len() - off < RECORD_HEADER_LEN {
        return Decoded::Bad("truncated record header");
    }
    let h = &data[off..off + RECORD_HEADER_LEN];
    let raw = u32::from_le_bytes([h[0], h[1], h[2], h[3]]);
    let (len, starts_write) = ((raw & !WRITE_START) as usize, raw & WRITE_START != 0);
    let crc = u32::from_le_bytes([h[4], h[5], h[6], h[7]]);
    let lsn = u64::from_le_bytes([h[8], h[9], h[10], h[11], h[12], h[13], h[14], h[15]]);
    if len > MAX_RECORD {
        return Decoded::Bad("record length out of range");
    }
    let start = off + RECORD_HEADER_LEN;
    if data.len() - start < len {
        return Decoded::Bad("truncated record payload");
    }
    let payload = data.slice(start..start + len);
    if checksum(lsn, &payload) != crc {
        return Decoded::Bad("record checksum mismatch");
    }
    Decoded::Record {
        lsn,
        payload,
        next: start + len,
        starts_write,
    }
}

/// Reads a whole segment and checks its header. Segments are bounded by the rollover size.
pub fn read_segment(path: &Path) -> std::io::Result<Result<Bytes, &'static str>> {
    let data = std::fs::read(path)?;
    if let Err(why) = check_header(&data) {
        return Ok(Err(why));
    }
    Ok(Ok(Bytes::from(data)))
}

/// Checks a segment's header, and returns its records from byte `offset` on (a record's
/// start, at or past the header): a reader of the tail need not read what it has read.
pub fn read_segment_from(path: &Path, offset: u64) -> std::io::Result<Result<Bytes, &'static str>> {
    use std::io::{Read, Seek, SeekFrom};
    let mut file = std::fs::File::open(path)?;
    let mut header = [0u8; HEADER_LEN];
    if let Err(e) = file.read_exact(&mut header) {
        return match e.kind() {
            std::io::ErrorKind::UnexpectedEof => Ok(Err("bad segment header")),
            _ => Err(e),
        };
    }
    if let Err(why) = check_header(&header) {
        return Ok(Err(why));
    }
    file.seek(SeekFrom::Start(offset.max(HEADER_LEN as u64)))?;
    let mut data = Vec::new();
    file.read_to_end(&mut data)?;
    Ok(Ok(Bytes::from(data)))
}

fn check_header(data: &[u8]) -> Result<(), &'static str> {
    if data.len() < HEADER_LEN || &data[..8] != MAGIC {
        return Err("bad segment header");
    }
    let version = u32::from_le_bytes([data[8], data[9], data[10], data[11]]);
    if !(OLDEST_VERSION..=VERSION).contains(&version) {
        return Err("unsupported segment version");
    }
    Ok(())
}

#[derive(Debug, Clone)]
pub struct SegmentInfo {
    pub first_lsn: Lsn,
    pub path: PathBuf,
}
