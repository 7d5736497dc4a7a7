//! The SSTable byte layout (specified in FORMAT.md): block framing with compression and
//! crc32c, the bincode encodings of data, index and filter blocks, and the footer.

use crate::cache::BlockEntries;
use bytes::Bytes;
use cairn_common::{Entry, EntryKind, RangeTombstone};

pub const MAGIC: u64 = 0x4341_4952_4E53_5354; // "CAIRNSST"
/// Version 2 adds range tombstones (in the properties block, counted in the footer);
/// version 1 files, which have none, are still read.
pub const FORMAT_VERSION: u32 = 2;
pub const FORMAT_VERSION_1: u32 = 1;
pub const FOOTER_LEN: usize = 64;
/// A block ends with `[compression u8][crc32c u32]`.
pub const TRAILER_LEN: usize = 5;

pub const COMPRESSION_NONE: u8 = 0;
pub const COMPRESSION_LZ4: u8 = 1;
pub const COMPRESSION_ZSTD: u8 = 2;

pub fn bincode_config() -> bincode::config::Configuration {
    bincode::config::standard()
}

/// One entry as stored in a data block.
#[derive(bincode::Encode, bincode::BorrowDecode)]
pub struct RawEntry<'a> {
    pub key: &'a [u8],
    pub seq: u64,
    pub kind: u8,
    pub value: &'a [u8],
}

/// One index entry per data block: the block's last internal key and where the block is.
#[derive(Debug, Clone, bincode::Encode, bincode::Decode)]
pub struct IndexEntry {
    pub last_key: Vec<u8>,
    pub last_seq: u64,
    pub offset: u64,
    /// On-disk length including the trailer.
    pub len: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Handle {
    pub offset: u64,
    pub len: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Footer {
    pub filter: Handle,
    pub index: Handle,
    pub props: Handle,
    /// How many range tombstones the properties block holds after the table's metadata.
    pub range_deletes: u32,
}

impl Footer {
    pub fn encode(&self) -> [u8; FOOTER_LEN] {
        let mut out = [0u8; FOOTER_LEN];
        let fields = [
            self.filter.offset,
            self.filter.len,
            self.index.offset,
            self.index.len,
            self.props.offset,
            self.props.len,
        ];
        for (i, f) in fields.iter().enumerate() {
            out[i * 8..i * 8 + 8].copy_from_slice(&f.to_le_bytes());
        }
        out[48..52].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        out[52..56].copy_from_slice(&self.range_deletes.to_le_bytes());
        out[56..64].copy_from_slice(&MAGIC.to_le_bytes());
        out
    }

    pub fn decode(b: &[u8]) -> Result<Footer, String> {
        if b.len() != FOOTER_LEN {
            return Err(format!(
                "footer is {} bytes, expected {FOOTER_LEN}",
                b.len()
            ));
        }
        let u64_at = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().unwrap_or([0; 8]));
        if u64_at(56) != MAGIC {
            return Err("bad magic number (not a Cairn SSTable)".into());
        }
        let u32_at = |i: usize| u32::from_le_bytes(b[i..i + 4].try_into().unwrap_or([0; 4]));
        let version = u32_at(48);
        let range_deletes = match version {
            FORMAT_VERSION => u32_at(52),
            FORMAT_VERSION_1 => 0,
            _ => return Err(format!("unsupported format version {version}")),
        };
        let h = |i: usize| Handle {
            offset: u64_at(i),
            len: u64_at(i + 8),
        };
        Ok(Footer {
            filter: h(0),
            index: h(16),
            props: h(32),
            range_deletes,
        })
    }
}

/// One range tombstone as the properties block stores it.
#[derive(Debug, Clone, bincode::Encode, bincode::Decode)]
pub struct RawRangeDelete {
    pub start: Vec<u8>,
    pub end: Vec<u8>,
    pub seq: u64,
}

pub fn raw_range_deletes(ranges: &[RangeTombstone]) -> Vec<RawRangeDelete> {
    ranges
        .iter()
        .map(|t| RawRangeDelete {
            start: t.start.to_vec(),
            end: t.end.to_vec(),
            seq: t.seq,
        })
        .collect()
}

/// The range tombstones of a version 2 properties block (`TableMeta` then
/// `Vec<RawRangeDelete>`), checked against the count the footer gives.
pub fn decode_range_deletes(payload: &[u8], count: u32) -> Result<Vec<RangeTombstone>, String> {
    let (_, raw): (cairn_common::TableMeta, Vec<RawRangeDelete>) = decode(payload)?;
    if raw.len() != count as usize {
        return Err(format!(
            "{} range tombstones, the footer says {count}",
            raw.len()
        ));
    }
    raw.into_iter()
        .map(|r| {
            cairn_common::check_bounds(&r.start, &r.end).map_err(|e| e.to_string())?;
            Ok(RangeTombstone::new(r.start, r.end, r.seq))
        })
        .collect()
}

/// How a writer compresses the blocks of one table. zstd keeps its context between blocks:
/// building one per 4 KiB block would cost more than compressing it.
pub enum BlockCodec {
    None,
    Lz4,
    Zstd(Box<zstd::bulk::Compressor<'static>>),
}

impl BlockCodec {
    pub fn zstd(level: i32) -> Result<Self, String> {
        zstd::bulk::Compressor::new(level)
            .map(|c| BlockCodec::Zstd(Box::new(c)))
            .map_err(|e| format!("zstd level {level}: {e}"))
    }
}

/// Frames a block payload: optional compression, then the trailer with the checksum of the
/// stored bytes and the compression byte. A compressed payload starts with its uncompressed
/// length (u32 LE), for both codecs.
pub fn frame_block(payload: &[u8], codec: &mut BlockCodec, out: &mut Vec<u8>) {
    let start = out.len();
    let compressed = match codec {
        BlockCodec::None => None,
        BlockCodec::Lz4 => Some((
            lz4_flex::block::compress_prepend_size(payload),
            COMPRESSION_LZ4,
        )),
        BlockCodec::Zstd(c) => u32::try_from(payload.len()).ok().and_then(|len| {
            let mut stored = len.to_le_bytes().to_vec();
            // A codec that fails (it cannot on a buffer it sizes itself) leaves the block raw.
            let body = c.compress(payload).ok()?;
            stored.extend_from_slice(&body);
            Some((stored, COMPRESSION_ZSTD))
        }),
    };
    let compression = match compressed {
        // Keep the raw payload when compression does not pay for itself.
        Some((stored, kind)) if stored.len() < payload.len() - payload.len() / 8 => {
            out.extend_from_slice(&stored);
            kind
        }
        _ => {
            out.extend_from_slice(payload);
            COMPRESSION_NONE
        }
    };
    out.push(compression);
    let crc = crc32c::crc32c(&out[start..]);
    out.extend_from_slice(&crc.to_le_bytes());
}

/// Checks a framed block and returns its (decompressed) payload: an uncompressed one is the
/// framed buffer itself, cut to its payload, not a copy.
pub fn unframe_block(framed: Vec<u8>) -> Result<Bytes, String> {
    if framed.len() < TRAILER_LEN {
        return Err("block shorter than its trailer".into());
    }
    let body_end = framed.len() - 4;
    let stored = u32::from_le_bytes(framed[body_end..].try_into().map_err(|_| "trailer")?);
    if crc32c::crc32c(&framed[..body_end]) != stored {
        return Err("block checksum mismatch".into());
    }
    let payload = &framed[..body_end - 1];
    match framed[body_end - 1] {
        COMPRESSION_NONE => {
            let mut framed = framed;
            framed.truncate(body_end - 1);
            Ok(Bytes::from(framed))
        }
        COMPRESSION_LZ4 => lz4_flex::block::decompress_size_prepended(payload)
            .map(Bytes::from)
            .map_err(|e| format!("lz4: {e}")),
        COMPRESSION_ZSTD => unzstd(payload).map(Bytes::from),
        other => Err(format!("unknown compression type {other}")),
    }
}

fn unzstd(payload: &[u8]) -> Result<Vec<u8>, String> {
    thread_local! {
        static DECOMPRESSOR: std::cell::RefCell<Option<zstd::bulk::Decompressor<'static>>> =
            const { std::cell::RefCell::new(None) };
    }
    let (len, body) = payload
        .split_first_chunk::<4>()
        .ok_or("zstd block shorter than its length")?;
    let len = u32::from_le_bytes(*len) as usize;
    DECOMPRESSOR.with_borrow_mut(|d| {
        let d = match d {
            Some(d) => d,
            None => d.insert(zstd::bulk::Decompressor::new().map_err(|e| format!("zstd: {e}"))?),
        };
        let out = d.decompress(body, len).map_err(|e| format!("zstd: {e}"))?;
        if out.len() != len {
            return Err(format!(
                "zstd: {} bytes where the block says {len}",
                out.len()
            ));
        }
        Ok(out)
    })
}

#[cfg(test)]
pub fn encode_data_block(entries: &[Entry]) -> Result<Vec<u8>, String> {
    let mut w = DataBlockWriter::default();
    for e in entries {
        w.add(e)?;
    }
    Ok(w.finish()?.to_vec())
}

/// Room kept in front of a block's entries for their count: a bincode varint is at most 9
/// bytes.
const COUNT_ROOM: usize = 9;

/// Builds a data block entry by entry, as bincode writes a `Vec<RawEntry>` (the count as a
/// varint, then the entries), without holding the entries: a table builder encodes each as
/// it comes instead of cloning it until the block is cut.
pub struct DataBlockWriter {
    /// `COUNT_ROOM` bytes, then the encoded entries.
    buf: Vec<u8>,
    count: u64,
}

impl Default for DataBlockWriter {
    fn default() -> Self {
        DataBlockWriter {
            buf: vec![0; COUNT_ROOM],
            count: 0,
        }
    }
}

impl DataBlockWriter {
    pub fn add(&mut self, e: &Entry) -> Result<(), String> {
        let raw = RawEntry {
            key: &e.key,
            seq: e.seq,
            kind: e.kind.as_u8(),
            value: &e.value,
        };
        bincode::encode_into_std_write(raw, &mut self.buf, bincode_config())
            .map_err(|e| e.to_string())?;
        self.count += 1;
        Ok(())
    }

    /// The bytes of the entries added since the last `finish`.
    pub fn len(&self) -> usize {
        self.buf.len() - COUNT_ROOM
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The block of the entries added since the last `clear`.
    pub fn finish(&mut self) -> Result<&[u8], String> {
        let mut count = [0u8; COUNT_ROOM];
        let n = bincode::encode_into_slice(self.count, &mut count, bincode_config())
            .map_err(|e| e.to_string())?;
        let start = COUNT_ROOM - n;
        self.buf[start..COUNT_ROOM].copy_from_slice(&count[..n]);
        Ok(&self.buf[start..])
    }

    /// Starts the next block, keeping the buffer.
    pub fn clear(&mut self) {
        self.buf.truncate(COUNT_ROOM);
        self.count = 0;
    }
}

/// Decodes a data block; keys and values stay slices of `payload`, not copies.
pub fn decode_data_block(payload: Bytes) -> Result<BlockEntries, String> {
    // bincode sizes the entry vector by the count the block claims: a count the block's
    // bytes cannot hold (every entry takes at least 4) is refused before anything is
    // allocated for it.
    let count = claimed_len(&payload).ok_or("truncated entry count")?;
    if count.saturating_mul(4) > payload.len() as u64 {
        return Err(format!(
            "block claims {count} entries in {} bytes",
            payload.len()
        ));
    }
    let (raw, used): (Vec<RawEntry<'_>>, usize) =
        bincode::borrow_decode_from_slice(&payload, bincode_config()).map_err(|e| e.to_string())?;
    if used != payload.len() {
        return Err("trailing bytes in data block".into());
    }
    let mut entries = Vec::with_capacity(raw.len());
    for r in &raw {
        let kind = EntryKind::from_u8(r.kind)
            .filter(|k| *k != EntryKind::RangeDelete)
            .ok_or_else(|| format!("bad entry kind {} in a data block", r.kind))?;
        entries.push((r.key, r.seq, kind, r.value));
    }
    BlockEntries::over(payload.clone(), entries.into_iter())
}

pub fn encode<T: bincode::Encode>(v: &T) -> Result<Vec<u8>, String> {
    bincode::encode_to_vec(v, bincode_config()).map_err(|e| e.to_string())
}

/// The leading length of a bincode sequence (its varint: one byte below 251, else a tag and 2,
/// 4 or 8 little-endian bytes).
fn claimed_len(b: &[u8]) -> Option<u64> {
    let le = |n: usize| {
        let mut w = [0u8; 8];
        w[..n].copy_from_slice(b.get(1..1 + n)?);
        Some(u64::from_le_bytes(w))
    };
    match *b.first()? {
        x @ 0..=250 => Some(x as u64),
        251 => le(2),
        252 => le(4),
        253 => le(8),
        _ => None,
    }
}

/// What a filter, index or properties block may claim to hold: a bound on what a corrupt or
/// hostile one can make the decoder allocate. A table's filter at 10 bits per key stays under
/// it up to 200 million keys.
const DECODE_LIMIT: usize = 256 << 20;

pub fn decode<T: bincode::Decode<()>>(payload: &[u8]) -> Result<T, String> {
    let (v, used) =
        bincode::decode_from_slice(payload, bincode_config().with_limit::<DECODE_LIMIT>())
            .map_err(|e| e.to_string())?;
    if used != payload.len() {
        return Err("trailing bytes".into());
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A block written entry by entry is the bincode encoding of all its entries at once,
    /// across the sizes where the count's varint grows, and after a `clear` as when new.
    #[test]
    fn a_block_written_entry_by_entry_is_bincodes_encoding_of_them_all() {
        let mut w = DataBlockWriter::default();
        for n in [0usize, 1, 250, 251, 65_535, 65_536, 70_000] {
            let entries: Vec<Entry> = (0..n)
                .map(|i| Entry::put(format!("k{i:06}"), i as u64 * 977, vec![i as u8; i % 7]))
                .collect();
            let raw: Vec<RawEntry<'_>> = entries
                .iter()
                .map(|e| RawEntry {
                    key: &e.key,
                    seq: e.seq,
                    kind: e.kind.as_u8(),
                    value: &e.value,
                })
                .collect();
            let whole = bincode::encode_to_vec(&raw, bincode_config()).unwrap();
            w.clear();
            entries.iter().for_each(|e| w.add(e).unwrap());
            assert_eq!(w.is_empty(), n == 0);
            assert_eq!(w.finish().unwrap(), whole.as_slice(), "{n} entries");
            let decoded = decode_data_block(Bytes::from(whole)).unwrap();
            assert_eq!(decoded.len(), n);
        }
    }

    /// Random bytes, and valid encodings cut short or with bytes changed, fed to every decoder
    /// of the format: each answers with an error or a value, never a panic or an allocation
    /// the input's claimed lengths size.
    #[test]
    fn decoders_take_any_bytes() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(13);
        let mut next = move || rng.random::<u64>();
        let entries: Vec<Entry> = (0..20u32)
            .map(|i| Entry::put(format!("key{i}"), i as u64, vec![b'v'; i as usize * 3]))
            .collect();
        let block = encode_data_block(&entries).unwrap();
        let bloom = encode(&crate::bloom::Bloom::build(&[1, 2, 3], 10)).unwrap();
        let mut framed = Vec::new();
        frame_block(&block, &mut BlockCodec::Lz4, &mut framed);
        let mut zstd_framed = Vec::new();
        frame_block(&block, &mut BlockCodec::zstd(3).unwrap(), &mut zstd_framed);
        assert_eq!(zstd_framed[zstd_framed.len() - 5], COMPRESSION_ZSTD);
        let footer = Footer {
            filter: Handle { offset: 1, len: 2 },
            index: Handle { offset: 3, len: 4 },
            props: Handle { offset: 5, len: 6 },
            range_deletes: 1,
        }
        .encode();
        let valid = [block, bloom, framed, footer.to_vec(), zstd_framed];
        for round in 0..20_000 {
            let input: Vec<u8> = if round % 2 == 0 {
                (0..next() % 300).map(|_| next() as u8).collect()
            } else {
                let mut v = valid[(next() % valid.len() as u64) as usize].clone();
                v.truncate((next() as usize) % (v.len() + 1));
                for _ in 0..next() % 4 {
                    if !v.is_empty() {
                        let at = (next() as usize) % v.len();
                        v[at] = next() as u8;
                    }
                }
                v
            };
            let _ = decode_data_block(Bytes::from(input.clone()));
            let _ = decode::<crate::bloom::Bloom>(&input);
            let _ = Footer::decode(&input);
            let _ = unframe_block(input);
        }
    }

    /// Every codec gives back the payload it framed; one that does not pay for itself (random
    /// bytes) leaves the block raw.
    #[test]
    fn every_codec_round_trips() {
        use rand::{RngCore, SeedableRng};
        let text: Vec<u8> = (0..5000u32)
            .flat_map(|i| format!("key{:06} ", i % 97).into_bytes())
            .collect();
        let mut noise = vec![0u8; 5000];
        rand::rngs::StdRng::seed_from_u64(5).fill_bytes(&mut noise);
        let codecs = || {
            [
                (BlockCodec::None, COMPRESSION_NONE),
                (BlockCodec::Lz4, COMPRESSION_LZ4),
                (BlockCodec::zstd(1).unwrap(), COMPRESSION_ZSTD),
                (BlockCodec::zstd(19).unwrap(), COMPRESSION_ZSTD),
            ]
        };
        for (mut codec, kind) in codecs() {
            for (payload, compressible) in [(&text, true), (&noise, false)] {
                let mut framed = Vec::new();
                frame_block(payload, &mut codec, &mut framed);
                let stored = framed[framed.len() - 5];
                assert_eq!(stored, if compressible { kind } else { COMPRESSION_NONE });
                assert_eq!(unframe_block(framed).unwrap(), payload[..]);
            }
        }
    }

    /// The example in FORMAT.md, byte for byte.
    #[test]
    fn data_block_encoding_matches_the_spec() {
        let block = encode_data_block(&[Entry::put("ab", 300, "")]).unwrap();
        assert_eq!(
            block,
            vec![0x01, 0x02, 0x61, 0x62, 0xfb, 0x2c, 0x01, 0x00, 0x00]
        );
        let tomb = encode_data_block(&[Entry::delete("ab", 300)]).unwrap();
        assert_eq!(
            tomb,
            vec![0x01, 0x02, 0x61, 0x62, 0xfb, 0x2c, 0x01, 0x01, 0x00]
        );
    }

    #[test]
    fn footer_layout_matches_the_spec() {
        let f = Footer {
            filter: Handle { offset: 1, len: 2 },
            index: Handle { offset: 3, len: 4 },
            props: Handle { offset: 5, len: 6 },
            range_deletes: 7,
        };
        let mut b = f.encode();
        assert_eq!(&b[56..], b"TSSNRIAC");
        assert_eq!(u32::from_le_bytes(b[48..52].try_into().unwrap()), 2);
        assert_eq!(u32::from_le_bytes(b[52..56].try_into().unwrap()), 7);
        assert_eq!(u64::from_le_bytes(b[16..24].try_into().unwrap()), 3);
        assert_eq!(Footer::decode(&b), Ok(f));
        // Version 1 had no range tombstones, and 0 in the field that now counts them.
        b[48..56].copy_from_slice(&[1, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(Footer::decode(&b).map(|f| f.range_deletes), Ok(0));
        b[48] = 3;
        assert!(Footer::decode(&b).is_err());
    }

    /// A version 2 properties block: the table's metadata, then its range tombstones.
    #[test]
    fn range_tombstones_follow_the_metadata_in_the_properties_block() {
        let meta = cairn_common::TableMeta {
            id: 1,
            smallest: b"a".to_vec(),
            largest: b"c".to_vec(),
            min_seq: 5,
            max_seq: 5,
            entries: 1,
            size: 0,
        };
        let t = [RangeTombstone::new("a", "c", 5)];
        let payload = encode(&(&meta, &raw_range_deletes(&t))).unwrap();
        assert_eq!(
            &payload[payload.len() - 6..],
            &[0x01, 0x01, b'a', 0x01, b'c', 0x05],
            "varint(count) then each {{start, end, seq}}"
        );
        assert_eq!(decode_range_deletes(&payload, 1).unwrap(), t);
        assert!(
            decode_range_deletes(&payload, 2).is_err(),
            "the footer's count is checked"
        );
    }
}
