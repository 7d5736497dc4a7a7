//! Bulk import: entries written as a level-0 table and installed directly, past the journal
//! and the memtable (RocksDB's external file ingestion, for one table built here).
//!
//! The import takes one sequence number, S, for all its entries. Three things keep it
//! ordered against ordinary writes:
//! - S is taken and the memtable frozen under the write gate, so no memtable (hence no table
//!   flushed from one) holds writes from both sides of S;
//! - every memtable with writes older than S is flushed before the import is installed, since
//!   reads consult memtables before tables;
//! - compaction is held off from taking S until installing, so no table below level 0 can
//!   hold a write newer than S; in level 0 the import goes behind the tables newer than it.

use crate::db::Inner;
use crate::version::{TableHandle, Version};
use bytes::Bytes;
use cairn_common::{Entry, EntryKind, Result, SeqNo};
use std::sync::Arc;
use std::sync::atomic::Ordering;

/// Entries per `TableBuilder::add` call.
const CHUNK: usize = 1024;

pub(crate) async fn run(inner: &Arc<Inner>, mut entries: Vec<(Bytes, Bytes)>) -> Result<SeqNo> {
    if entries.is_empty() {
        return Ok(inner.seq.visible());
    }
    sort_last_wins(&mut entries);
    inner.wait_for_room().await?;
    let _no_compaction = inner.compaction_lock.lock().await;
    let seq = {
        let _exclusive = inner.gate.write().await;
        inner.check_open()?;
        let seq = inner.seq.begin(1);
        inner.seq.finish(seq);
        inner.swap_memtable(true);
        seq
    };
    inner.flush_all().await?;

    let id = inner.alloc_table_ids(1).start;
    let mut builder = inner.comps.storage.create_table(id).await?;
    let mut chunk = Vec::with_capacity(CHUNK);
    for (key, value) in entries {
        chunk.push(Entry {
            key,
            seq,
            kind: EntryKind::Put,
            value,
        });
        if chunk.len() == CHUNK {
            builder.add(&chunk).await?;
            chunk.clear();
        }
    }
    if !chunk.is_empty() {
        builder.add(&chunk).await?;
    }
    let meta = builder.finish().await?;
    let table = inner.comps.storage.open_table(&meta).await?;
    let handle = TableHandle::new(table, inner.deleter.clone());

    {
        let mut manifest = inner.manifest.lock().await;
        let mut next = manifest.clone();
        // Level 0 is newest first; tables flushed since S was taken hold only newer writes.
        let at = next.levels[0]
            .iter()
            .position(|t| t.max_seq < seq)
            .unwrap_or(next.levels[0].len());
        next.levels[0].insert(at, meta.clone());
        next.last_seq = next.last_seq.max(seq);
        next.next_table_id = inner.next_table_id.load(Ordering::Relaxed);
        next.store(&inner.dir)?;
        *manifest = next;
        let mut v = Version::clone(&inner.version.load());
        let at = v.levels[0]
            .iter()
            .position(|t| t.meta.max_seq < seq)
            .unwrap_or(v.levels[0].len());
        v.levels[0].insert(at, handle);
        inner.version.store(Arc::new(v));
    }
    inner.counters.imports.fetch_add(1, Ordering::Relaxed);
    inner
        .counters
        .bytes_imported
        .fetch_add(meta.size, Ordering::Relaxed);
    inner.changed.send_modify(|v| *v += 1);
    inner.compact_wanted.notify_one();
    Ok(seq)
}

/// Sorts by key, keeping only the last of each run of equal keys (a stable sort keeps them
/// in input order). Sorted input, the common case for a load, is only checked.
fn sort_last_wins(entries: &mut Vec<(Bytes, Bytes)>) {
    if entries.windows(2).all(|w| w[0].0 < w[1].0) {
        return;
    }
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    let mut out = 0;
    for i in 0..entries.len() {
        if i + 1 < entries.len() && entries[i].0 == entries[i + 1].0 {
            continue;
        }
        entries.swap(out, i);
        out += 1;
    }
    entries.truncate(out);
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
}
