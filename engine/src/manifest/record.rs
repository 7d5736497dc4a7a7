//! One stored manifest version, byte by byte:
//! `[magic "CAIRNMV7"][crc32c u32 LE][len u32 LE][bincode body of len bytes]`.
//! The checksum covers the body; decoding is bounded, so a corrupt length cannot make it
//! allocate more than the version's own size. Versions 6 (`CAIRNMV6`, without the history
//! floor), 5 (`CAIRNMV5`, whose clones see all
//! of their origins' tables), 4 (`CAIRNMV4`, without clones), 3
//! (`CAIRNMV3`, without named checkpoints) and 2 (`CAIRNMV2`, without the writer's lease
//! either) are still read (`older.rs`).

use super::{Manifest, VersionEdit};
use cairn_common::{Error, Result};

const MAGIC: &[u8; 8] = b"CAIRNMV7";
pub(super) const MAGIC_V6: &[u8; 8] = b"CAIRNMV6";
pub(super) const MAGIC_V5: &[u8; 8] = b"CAIRNMV5";
pub(super) const MAGIC_V4: &[u8; 8] = b"CAIRNMV4";
pub(super) const MAGIC_V3: &[u8; 8] = b"CAIRNMV3";
pub(super) const MAGIC_V2: &[u8; 8] = b"CAIRNMV2";
const HEADER: usize = 16;
/// No manifest version is larger; bincode refuses to decode past it.
const LIMIT: usize = 256 << 20;

#[derive(Debug, Clone, PartialEq, Eq, bincode::Encode, bincode::Decode)]
pub struct Record {
    pub database: String,
    /// The epoch of the writer that wrote this version.
    pub epoch: u64,
    /// Random, made by each writer (and each attempt to open one): two writers never write
    /// the same bytes, so finding its own bytes at a version tells a writer it won it.
    pub writer: u64,
    pub body: Body,
    /// The lease its writer held when it wrote this version (see `Lease`); `None` for a
    /// writer whose journal fences by itself, or one that has let go (closed).
    pub lease: Option<Lease>,
}

/// A writer whose journal only its own node reaches holds a lease: each version it writes
/// renews it, and it acknowledges writes only while its last renewal is recent (see
/// `crate::lease`). A writer on another journal that finds one waits it out before taking
/// over.
#[derive(Debug, Clone, PartialEq, Eq, bincode::Encode, bincode::Decode)]
pub struct Lease {
    pub ms: u64,
    /// The journal it writes to: a writer reopening that same journal (its node, restarted)
    /// is fenced by the journal's claim and need not wait.
    pub journal: String,
}

#[derive(Debug, Clone, PartialEq, Eq, bincode::Encode, bincode::Decode)]
pub enum Body {
    Checkpoint(Manifest),
    Edit(VersionEdit),
}

pub(super) fn config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<LIMIT>()
}

impl Record {
    pub fn encode(&self) -> Result<Vec<u8>> {
        let body = bincode::encode_to_vec(self, config())
            .map_err(|e| Error::component("manifest encode", e))?;
        let mut out = Vec::with_capacity(HEADER + body.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&crc32c::crc32c(&body).to_le_bytes());
        out.extend_from_slice(&(body.len() as u32).to_le_bytes());
        out.extend_from_slice(&body);
        Ok(out)
    }

    /// Decodes a version read from `what` (named in the error).
    pub fn decode(data: &[u8], what: &str) -> Result<Record> {
        let corrupt = |d: &str| Error::corruption(what.to_string(), d.to_string());
        let magic = data.get(..8).unwrap_or_default();
        if data.len() < HEADER
            || ![&MAGIC[..], MAGIC_V6, MAGIC_V5, MAGIC_V4, MAGIC_V3, MAGIC_V2].contains(&magic)
        {
            return Err(corrupt("not a manifest version (bad header)"));
        }
        let word = |i: usize| u32::from_le_bytes([data[i], data[i + 1], data[i + 2], data[i + 3]]);
        let (crc, len) = (word(8), word(12) as usize);
        let body = &data[HEADER..];
        if body.len() != len {
            return Err(corrupt("length mismatch (torn or truncated)"));
        }
        if crc32c::crc32c(body) != crc {
            return Err(corrupt("checksum mismatch"));
        }
        let decoded = if magic == MAGIC {
            bincode::decode_from_slice(body, config())
        } else {
            super::older::decode(magic, body)
        };
        let (r, used): (Record, usize) = decoded.map_err(|e| corrupt(&e.to_string()))?;
        if used != len {
            return Err(corrupt("trailing bytes"));
        }
        Ok(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_common::TableMeta;

    /// Random bytes, and a valid version cut short or with bytes changed (its checksum then
    /// fixed, so the decoder itself is reached): an error or a record, never a panic or an
    /// allocation sized by the input.
    #[test]
    fn decoding_takes_any_bytes() {
        let meta = TableMeta {
            id: 7,
            smallest: b"a".to_vec(),
            largest: b"z".to_vec(),
            min_seq: 1,
            max_seq: 9,
            entries: 3,
            size: 100,
        };
        let valid = Record {
            database: "db".into(),
            epoch: 3,
            writer: 42,
            body: Body::Edit(VersionEdit {
                added: vec![(0, meta)],
                removed: vec![1, 2],
                ..VersionEdit::default()
            }),
            lease: Some(Lease {
                ms: 10_000,
                journal: "j".into(),
            }),
        }
        .encode()
        .unwrap();
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(13);
        let mut next = move || rng.random::<u64>();
        for round in 0..20_000 {
            let mut v = if round % 3 == 0 {
                (0..next() % 200).map(|_| next() as u8).collect::<Vec<u8>>()
            } else {
                valid.clone()
            };
            if round % 3 != 0 && v.len() > HEADER {
                for _ in 0..1 + next() % 3 {
                    let at = HEADER + (next() as usize) % (v.len() - HEADER);
                    v[at] = next() as u8;
                }
                if round % 3 == 2 {
                    v.truncate(HEADER + (next() as usize) % (v.len() - HEADER));
                }
                let body_len = (v.len() - HEADER) as u32;
                let crc = crc32c::crc32c(&v[HEADER..]);
                v[8..12].copy_from_slice(&crc.to_le_bytes());
                v[12..16].copy_from_slice(&body_len.to_le_bytes());
            }
            let _ = Record::decode(&v, "fuzz");
        }
        assert!(Record::decode(&valid, "valid").is_ok());
    }
}
