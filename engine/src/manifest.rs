//! The manifest: which tables are live at which level, the next table id, the newest sequence
//! number in a table, and the journal position up to which everything is in tables.
//!
//! Each change rewrites the whole (small) manifest to `MANIFEST.tmp`, syncs it, renames it
//! over `MANIFEST` and syncs the directory, so a reopen sees the old or the new state, never
//! half of one. The file is `[magic "CAIRNMAN"][version u32][crc32c u32][len u32][bincode]`.

use cairn_common::{Error, IoContext, Lsn, Result, SeqNo, TableId, TableMeta};
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

const MAGIC: &[u8; 8] = b"CAIRNMAN";
const VERSION: u32 = 1;
const HEADER: usize = 20;
pub const FILE_NAME: &str = "MANIFEST";

#[derive(Debug, Clone, PartialEq, Eq, bincode::Encode, bincode::Decode)]
pub struct Manifest {
    pub next_table_id: TableId,
    /// Every sequence number at or below this is either in a table or was never applied.
    pub last_seq: SeqNo,
    /// Journal records at or below this LSN are in tables and need no replay.
    pub flushed_lsn: Lsn,
    /// `levels[0]` newest first; deeper levels sorted by smallest key.
    pub levels: Vec<Vec<TableMeta>>,
}

impl Manifest {
    pub fn empty(levels: usize) -> Self {
        Manifest {
            next_table_id: 1,
            last_seq: 0,
            flushed_lsn: 0,
            levels: vec![Vec::new(); levels.max(2)],
        }
    }

    pub fn path(dir: &Path) -> PathBuf {
        dir.join(FILE_NAME)
    }

    /// Reads the manifest in `dir`, or `None` when there is none yet.
    pub fn load(dir: &Path) -> Result<Option<Manifest>> {
        let path = Self::path(dir);
        let data = match std::fs::read(&path) {
            Ok(d) => d,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io(path, e)),
        };
        let corrupt =
            |d: &str| Error::corruption(format!("manifest {}", path.display()), d.to_string());
        if data.len() < HEADER || &data[..8] != MAGIC {
            return Err(corrupt("bad header"));
        }
        let word = |i: usize| u32::from_le_bytes([data[i], data[i + 1], data[i + 2], data[i + 3]]);
        if word(8) != VERSION {
            return Err(corrupt("unsupported manifest version"));
        }
        let (crc, len) = (word(12), word(16) as usize);
        let body = &data[HEADER..];
        if body.len() != len {
            return Err(corrupt("length mismatch"));
        }
        if crc32c::crc32c(body) != crc {
            return Err(corrupt("checksum mismatch"));
        }
        let (m, used): (Manifest, usize) =
            bincode::decode_from_slice(body, bincode::config::standard())
                .map_err(|e| corrupt(&e.to_string()))?;
        if used != len {
            return Err(corrupt("trailing bytes"));
        }
        Ok(Some(m))
    }

    pub fn store(&self, dir: &Path) -> Result<()> {
        let body = bincode::encode_to_vec(self, bincode::config::standard())
            .map_err(|e| Error::component("manifest encode", e))?;
        let mut out = Vec::with_capacity(HEADER + body.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&VERSION.to_le_bytes());
        out.extend_from_slice(&crc32c::crc32c(&body).to_le_bytes());
        out.extend_from_slice(&(body.len() as u32).to_le_bytes());
        out.extend_from_slice(&body);
        let tmp = dir.join("MANIFEST.tmp");
        let mut f = File::create(&tmp).at(&tmp)?;
        f.write_all(&out).at(&tmp)?;
        f.sync_all().at(&tmp)?;
        let path = Self::path(dir);
        std::fs::rename(&tmp, &path).at(&path)?;
        File::open(dir).and_then(|d| d.sync_all()).at(dir)
    }

    pub fn live_ids(&self) -> impl Iterator<Item = TableId> + '_ {
        self.levels.iter().flatten().map(|t| t.id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_and_corruption() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(Manifest::load(dir.path()).unwrap(), None);
        let mut m = Manifest::empty(3);
        m.next_table_id = 9;
        m.levels[1].push(TableMeta {
            id: 4,
            smallest: b"a".to_vec(),
            largest: b"b".to_vec(),
            min_seq: 1,
            max_seq: 2,
            entries: 2,
            size: 100,
        });
        m.store(dir.path()).unwrap();
        assert_eq!(Manifest::load(dir.path()).unwrap(), Some(m));
        let path = Manifest::path(dir.path());
        let mut data = std::fs::read(&path).unwrap();
        let last = data.len() - 1;
        data[last] ^= 1;
        std::fs::write(&path, data).unwrap();
        assert!(Manifest::load(dir.path()).unwrap_err().is_corruption());
    }
}
