//! The manifest file of databases made before the manifest moved beside the tables: one
//! `MANIFEST` in the compute node's data directory, rewritten whole on every change. Read once,
//! at the first open after the upgrade, to migrate it into the table store's manifest log.
//! The file is `[magic "CAIRNMAN"][version u32][crc32c u32][len u32][bincode]`.

use cairn_common::{Error, Lsn, Result, SeqNo, TableId, TableMeta};
use std::path::{Path, PathBuf};

const MAGIC: &[u8; 8] = b"CAIRNMAN";
const VERSION: u32 = 1;
const HEADER: usize = 20;
pub const FILE_NAME: &str = "MANIFEST";

#[derive(Debug, Clone, PartialEq, Eq, bincode::Encode, bincode::Decode)]
pub struct LegacyManifest {
    pub next_table_id: TableId,
    /// Every sequence number at or below this is either in a table or was never applied.
    pub last_seq: SeqNo,
    /// Journal records at or below this LSN are in tables and need no replay.
    pub flushed_lsn: Lsn,
    /// `levels[0]` newest first; deeper levels sorted by smallest key.
    pub levels: Vec<Vec<TableMeta>>,
}

impl LegacyManifest {
    pub fn path(dir: &Path) -> PathBuf {
        dir.join(FILE_NAME)
    }

    /// Reads the manifest in `dir`, or `None` when there is none yet.
    pub fn load(dir: &Path) -> Result<Option<LegacyManifest>> {
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
        let (m, used): (LegacyManifest, usize) =
            bincode::decode_from_slice(body, bincode::config::standard())
                .map_err(|e| corrupt(&e.to_string()))?;
        if used != len {
            return Err(corrupt("trailing bytes"));
        }
        Ok(Some(m))
    }

    /// The file's bytes, as the old engine wrote them (tests make old databases with it).
    #[cfg(test)]
    pub fn encode(&self) -> Vec<u8> {
        let body = bincode::encode_to_vec(self, bincode::config::standard()).unwrap_or_default();
        let mut out = Vec::with_capacity(HEADER + body.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&VERSION.to_le_bytes());
        out.extend_from_slice(&crc32c::crc32c(&body).to_le_bytes());
        out.extend_from_slice(&(body.len() as u32).to_le_bytes());
        out.extend_from_slice(&body);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_and_corruption() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(LegacyManifest::load(dir.path()).unwrap(), None);
        let mut m = LegacyManifest {
            next_table_id: 9,
            last_seq: 0,
            flushed_lsn: 0,
            levels: vec![Vec::new(); 3],
        };
        m.levels[1].push(TableMeta {
            id: 4,
            smallest: b"a".to_vec(),
            largest: b"b".to_vec(),
            min_seq: 1,
            max_seq: 2,
            entries: 2,
            size: 100,
        });
        let path = LegacyManifest::path(dir.path());
        std::fs::write(&path, m.encode()).unwrap();
        assert_eq!(LegacyManifest::load(dir.path()).unwrap(), Some(m));
        let mut data = std::fs::read(&path).unwrap();
        let last = data.len() - 1;
        data[last] ^= 1;
        std::fs::write(&path, data).unwrap();
        assert!(
            LegacyManifest::load(dir.path())
                .unwrap_err()
                .is_corruption()
        );
    }

    /// A database of the old layout (its manifest in the data directory) opens with its
    /// tables, its manifest moved beside them.
    #[tokio::test]
    async fn an_old_manifest_moves_beside_the_tables() {
        use crate::{Components, Db, EngineOptions};
        use cairn_filestore::{SstOptions, SstStorage, Storage, write_table};
        use std::sync::Arc;
        let dir = tempfile::tempdir().unwrap();
        let storage: Arc<dyn Storage> =
            Arc::new(SstStorage::open(SstOptions::new(dir.path().join("tables"))).unwrap());
        let entry = cairn_common::Entry {
            key: "k".into(),
            seq: 1,
            kind: cairn_common::EntryKind::Put,
            value: "v".into(),
        };
        let meta = write_table(storage.as_ref(), 3, &[entry]).await.unwrap();
        let mut levels = vec![Vec::new(); 3];
        levels[0].push(meta);
        let old = LegacyManifest {
            next_table_id: 4,
            last_seq: 1,
            flushed_lsn: 0,
            levels,
        };
        std::fs::write(LegacyManifest::path(dir.path()), old.encode()).unwrap();
        let comps = Components {
            journal: Arc::new(cairn_journal::MemoryJournal::new()),
            memtables: cairn_memtable::MemtableOptions::SingleLock.factory(),
            compactor: Arc::new(cairn_compaction::LocalCompactor::new(storage.clone())),
            storage: storage.clone(),
        };
        let db = Db::open(dir.path(), EngineOptions::default(), comps)
            .await
            .unwrap();
        assert_eq!(db.get(b"k").await.unwrap().as_deref(), Some(&b"v"[..]));
        assert!(db.stats().manifest_version >= 1);
        db.close().await.unwrap();
        assert!(!LegacyManifest::path(dir.path()).exists());
        assert!(dir.path().join("MANIFEST.migrated").exists());
        assert!(!storage.manifests().list().await.unwrap().is_empty());
    }
}
