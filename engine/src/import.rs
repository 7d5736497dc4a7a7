//! Bulk import: entries written as tables and installed directly, past the journal and the
//! memtable (RocksDB's external file ingestion; `Db::ingest` feeds it files built elsewhere).
//! An import is any number of tables installed together in one manifest edit, so it lands
//! whole or not at all. Each table goes to the deepest level where no table of that level
//! or any above overlaps it (level 0 if that is none), as RocksDB places ingested files: its
//! writes are newer than everything below it, and nothing above it holds its keys.
//!
//! Each table takes a sequence number of its own, S, for all its entries (so a key repeated
//! in a later table of the same import is newer). Three things keep each S ordered against
//! ordinary writes:
//! - S is taken and the memtable frozen under the write gate, so no memtable (hence no table
//!   flushed from one) holds writes from both sides of S;
//! - every memtable with writes older than S is flushed before the import is installed, since
//!   reads consult memtables before tables;
//! - compaction is held off from the first S until installing, so no table below level 0
//!   can hold a write newer than S; in level 0 each table goes behind the tables newer than
//!   it. Compaction therefore waits while an import is open, and writers may stall on a full
//!   level 0 during a long one.
//!
//! And visibility stops below the first S until the import is installed (each S is taken,
//! not finished, in the sequence tracker): a write numbered after S that became visible
//! first would be shown without the import below it, and a snapshot taken then would change
//! when the import landed. Writers go on journaling and applying meanwhile, but are
//! acknowledged only once the import is in (or abandoned): an import is a pause in
//! acknowledgements as long as it stays open.

use crate::db::Inner;
use crate::manifest::VersionEdit;
use crate::version::TableHandle;
use crate::version::Version;
use bytes::Bytes;
use cairn_common::{
    Entry, EntryKind, Error, Result, SeqNo, TableMeta, key_prefix_after, shared_prefix_len,
};
use cairn_filestore::write_table_from;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use tokio::sync::OwnedMutexGuard;

/// An import under way (`Db::begin_import`): `add` writes tables, `finish` installs them all
/// in one manifest edit. Dropped unfinished, it deletes the tables it wrote; none was ever
/// visible.
pub struct Import {
    inner: Arc<Inner>,
    runtime: tokio::runtime::Handle,
    _no_compaction: OwnedMutexGuard<()>,
    tables: Vec<Arc<TableHandle>>,
    /// Each table's sequence number, taken and not yet finished: visibility waits for them.
    held: Vec<SeqNo>,
    last_seq: SeqNo,
}

impl Import {
    pub(crate) async fn begin(inner: Arc<Inner>, runtime: tokio::runtime::Handle) -> Result<Self> {
        inner.check_open()?;
        inner.wait_for_room().await?;
        let no_compaction = inner.jobs.compaction_owned().await;
        Ok(Import {
            inner,
            runtime,
            _no_compaction: no_compaction,
            tables: Vec::new(),
            held: Vec::new(),
            last_seq: 0,
        })
    }

    /// Writes `entries` (puts, in any order; of repeated keys the last wins, here and over
    /// earlier `add`s) as one table. Nothing is visible until `finish`.
    pub async fn add(&mut self, entries: Vec<(Bytes, Bytes)>) -> Result<()> {
        self.add_versions(entries.into_iter().map(|(k, v)| (k, Some(v))).collect())
            .await
    }

    /// Like `add`, with deletes: a `None` value deletes its key.
    pub async fn add_versions(&mut self, entries: Vec<(Bytes, Option<Bytes>)>) -> Result<()> {
        if entries.is_empty() {
            return Ok(());
        }
        for (k, v) in &entries {
            cairn_common::limits::check_pair(k, v.as_deref().unwrap_or_default())?;
        }
        self.inner.check_open()?;
        let inner = self.inner.clone();
        // Held here, before anything can fail: however this ends, `release` finishes it.
        let seq = inner.writes.hold_for_import().await;
        self.held.push(seq);
        inner.jobs.want_flush();
        // Sorting and writing the table is background work: it runs on the engine's own
        // runtime, so the caller's threads stay free (and shards import in parallel).
        let handle = self
            .runtime
            .spawn(async move { write_at(&inner, seq, entries).await })
            .await
            .map_err(|e| Error::component("import", e))??;
        self.last_seq = seq;
        self.tables.push(handle);
        Ok(())
    }

    /// Installs every table written, atomically and durably. Returns the sequence number of
    /// the last table (the visible sequence number if nothing was added).
    pub async fn finish(mut self) -> Result<SeqNo> {
        // A closed database's flush would wait for background work that has stopped.
        self.inner.check_writable()?;
        let tables = std::mem::take(&mut self.tables);
        let inner = self.inner.clone();
        if tables.is_empty() {
            return Ok(inner.writes.visible());
        }
        inner.flush_all().await?;
        // Level 0 is newest first; tables flushed since each S was taken hold only newer
        // writes, and the edit places each table behind them.
        // Every write numbered below the newest flushed one is in a table now, and so is
        // this import once the edit lands.
        let flushed = inner
            .versions
            .current()
            .levels
            .iter()
            .flatten()
            .map(|h| h.meta.max_seq)
            .max();
        let levels = placement(&inner.versions.current(), &tables);
        let edit = VersionEdit {
            added: tables
                .iter()
                .zip(levels)
                .map(|(t, level)| (level, t.meta.clone()))
                .collect(),
            last_seq: Some(self.last_seq.max(flushed.unwrap_or(0))),
            ..VersionEdit::default()
        };
        let bytes: u64 = tables.iter().map(|t| t.meta.size).sum();
        // A failed install leaves the tables alone: the manifest may hold them after all
        // (its write's outcome is unknown), and the next open sweeps them if it does not.
        fail::fail_point!("import-before-install");
        inner.install(edit, tables).await?;
        fail::fail_point!("import-after-install");
        self.release();
        inner
            .jobs
            .counters()
            .imports
            .fetch_add(1, Ordering::Relaxed);
        inner
            .jobs
            .counters()
            .bytes_imported
            .fetch_add(bytes, Ordering::Relaxed);
        inner.jobs.changed();
        inner.jobs.want_compaction();
        Ok(self.last_seq)
    }

    /// Lets visibility pass this import's sequence numbers: it is installed, or abandoned.
    fn release(&mut self) {
        for seq in self.held.drain(..) {
            self.inner.writes.release(seq);
        }
    }
}

impl Drop for Import {
    fn drop(&mut self) {
        // Abandoned: the tables were never in the manifest, so they are garbage.
        for t in self.tables.drain(..) {
            t.mark_abandoned();
        }
        self.release();
    }
}

impl crate::Db {
    /// Loads table files built elsewhere (`cairn_filestore::read_table_file`: Cairn
    /// SSTables, or Parquet files with Cairn's schema, sorted or not) in one import: each
    /// file's newest version of each key, put or delete, under a sequence number of its own
    /// (a later file is newer), placed at the deepest level it does not overlap. A file with
    /// range tombstones is refused: their order against the file's versions would not survive
    /// renumbering (apply them with `delete_range`). Returns the last file's number.
    pub async fn ingest(&self, files: &[PathBuf]) -> Result<SeqNo> {
        let mut import = self.begin_import().await?;
        for path in files {
            let p = path.clone();
            let file = tokio::task::spawn_blocking(move || cairn_filestore::read_table_file(&p))
                .await
                .map_err(|e| Error::component("ingest", e))??;
            if !file.range_deletes.is_empty() {
                return Err(Error::InvalidArgument(format!(
                    "{} holds {} range tombstones: ingest takes puts and deletes (apply range deletes with delete_range)",
                    path.display(),
                    file.range_deletes.len()
                )));
            }
            let mut newest: Vec<(Bytes, Option<Bytes>)> = Vec::with_capacity(file.entries.len());
            for e in file.entries {
                if newest.last().is_some_and(|(k, _)| *k == e.key) {
                    continue; // an older version: the file's newest decides
                }
                let value = match e.kind {
                    EntryKind::Put => Some(e.value),
                    EntryKind::Delete => None,
                    kind => {
                        return Err(Error::InvalidArgument(format!(
                            "{} holds a version of kind {kind:?} (key {:?}): ingest takes puts and deletes",
                            path.display(),
                            String::from_utf8_lossy(&e.key)
                        )));
                    }
                };
                newest.push((e.key, value));
            }
            import.add_versions(newest).await?;
        }
        import.finish().await
    }
}

/// The level of each of `tables` (oldest first): the deepest where neither that level nor
/// any above holds a table that overlaps it, the tables placed before it included; else 0.
fn placement(version: &Version, tables: &[Arc<TableHandle>]) -> Vec<u32> {
    let overlaps = |a: &TableMeta, b: &TableMeta| a.overlaps_keys(&b.smallest, &b.largest);
    let mut placed: Vec<(usize, &TableMeta)> = Vec::new();
    let mut out = Vec::with_capacity(tables.len());
    for t in tables {
        let clear = |level: usize| {
            version.levels[level]
                .iter()
                .all(|o| !overlaps(&o.meta, &t.meta))
                && placed
                    .iter()
                    .all(|(l, m)| *l != level || !overlaps(m, &t.meta))
        };
        let above = (0..version.levels.len()).take_while(|&l| clear(l)).last();
        let level = match above {
            Some(l) if l > 0 => l,
            _ => 0,
        };
        placed.push((level, &t.meta));
        out.push(level as u32);
    }
    out
}

/// Writes one table of `entries`, every entry under sequence number `seq`.
async fn write_at(
    inner: &Arc<Inner>,
    seq: SeqNo,
    mut entries: Vec<(Bytes, Option<Bytes>)>,
) -> Result<Arc<TableHandle>> {
    inner.check_open()?;
    sort_last_wins(&mut entries);
    let id = inner.versions.reserve_table_ids(1).await?.start;
    let entries = entries.into_iter().map(|(key, value)| match value {
        Some(value) => Entry::put(key, seq, value),
        None => Entry::delete(key, seq),
    });
    let meta = write_table_from(inner.comps.storage.as_ref(), id, 0, entries).await?;
    let table = inner.comps.storage.open_table(&meta).await?;
    Ok(TableHandle::new(table, inner.deleter.clone()))
}

/// Sorts by key, keeping only the last of each run of equal keys. Sorted input, the common
/// case for a load, is only checked. Otherwise the sort orders small (prefix, position) pairs
/// instead of chasing every key's pointer: the 8 key bytes after the prefix all keys share
/// decide almost every comparison, and only ties read the keys.
fn sort_last_wins<V: Default>(entries: &mut Vec<(Bytes, V)>) {
    if entries.windows(2).all(|w| w[0].0 < w[1].0) {
        return;
    }
    let first = entries[0].0.clone();
    let shared = entries
        .iter()
        .fold(first.len(), |n, (k, _)| n.min(shared_prefix_len(k, &first)));
    let mut order: Vec<(u64, usize)> = entries
        .iter()
        .enumerate()
        .map(|(i, (k, _))| (key_prefix_after(k, shared), i))
        .collect();
    order.sort_unstable();
    // Runs of equal prefixes: by whole key, then position (so the last of a key comes last).
    let mut start = 0;
    while start < order.len() {
        let mut end = start + 1;
        while end < order.len() && order[end].0 == order[start].0 {
            end += 1;
        }
        if end - start > 1 {
            order[start..end]
                .sort_unstable_by(|a, b| entries[a.1].0.cmp(&entries[b.1].0).then(a.1.cmp(&b.1)));
        }
        start = end;
    }
    let mut out = Vec::with_capacity(entries.len());
    for (n, &(_, i)) in order.iter().enumerate() {
        let next_same = order
            .get(n + 1)
            .is_some_and(|&(_, j)| entries[j].0 == entries[i].0);
        if !next_same {
            out.push(std::mem::take(&mut entries[i]));
        }
    }
    *entries = out;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sorting_keeps_the_last_of_repeated_keys() {
        let b = |s: &str| Bytes::copy_from_slice(s.as_bytes());
        let mut e = vec![
            (b("c"), b("1")),
            (b("a"), b("1")),
            (b("c"), b("2")),
            (b("b"), b("1")),
            (b("a"), b("2")),
            (b("c"), b("3")),
        ];
        sort_last_wins(&mut e);
        assert_eq!(
            e,
            vec![(b("a"), b("2")), (b("b"), b("1")), (b("c"), b("3"))]
        );
    }

    /// Against a plain stable sort, on keys that share prefixes, tie in their first 8 bytes
    /// after them, and hold zero bytes.
    #[test]
    fn sorting_agrees_with_a_stable_sort() {
        let mut seed = 7u64;
        let mut next = move |n: u64| {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (seed >> 33) % n
        };
        for _ in 0..200 {
            let len = 1 + next(80) as usize;
            let mut e: Vec<(Bytes, Bytes)> = (0..len)
                .map(|i| {
                    let mut k = b"pre".to_vec();
                    for _ in 0..next(14) {
                        k.push(next(3) as u8);
                    }
                    (Bytes::from(k), Bytes::from(i.to_string()))
                })
                .collect();
            let mut want = e.clone();
            want.sort_by(|a, b| a.0.cmp(&b.0));
            let want: Vec<_> = want
                .iter()
                .enumerate()
                .filter(|(i, x)| want.get(i + 1).is_none_or(|y| y.0 != x.0))
                .map(|(_, x)| x.clone())
                .collect();
            sort_last_wins(&mut e);
            assert_eq!(e, want);
        }
    }
}
