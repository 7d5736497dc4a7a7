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
use crate::manifest::VersionEdit;
use crate::version::TableHandle;
use bytes::Bytes;
use cairn_common::{Entry, EntryKind, Result, SeqNo, key_prefix_after, shared_prefix_len};
use cairn_filestore::write_table_from;
use std::sync::Arc;
use std::sync::atomic::Ordering;

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

    let id = inner.reserve_table_ids(1).await?.start;
    let entries = entries.into_iter().map(|(key, value)| Entry {
        key,
        seq,
        kind: EntryKind::Put,
        value,
    });
    let meta = write_table_from(inner.comps.storage.as_ref(), id, entries).await?;
    let table = inner.comps.storage.open_table(&meta).await?;
    let handle = TableHandle::new(table, inner.deleter.clone());
    // Level 0 is newest first; tables flushed since S was taken hold only newer writes, and
    // the edit places the import behind them.
    let edit = VersionEdit {
        added: vec![(0, meta.clone())],
        last_seq: Some(seq),
        ..VersionEdit::default()
    };
    inner.install(edit, vec![handle]).await?;
    inner.counters.imports.fetch_add(1, Ordering::Relaxed);
    inner
        .counters
        .bytes_imported
        .fetch_add(meta.size, Ordering::Relaxed);
    inner.changed.send_modify(|v| *v += 1);
    inner.compact_wanted.notify_one();
    Ok(seq)
}

/// Sorts by key, keeping only the last of each run of equal keys. Sorted input, the common
/// case for a load, is only checked. Otherwise the sort orders small (prefix, position) pairs
/// instead of chasing every key's pointer: the 8 key bytes after the prefix all keys share
/// decide almost every comparison, and only ties read the keys.
fn sort_last_wins(entries: &mut Vec<(Bytes, Bytes)>) {
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
