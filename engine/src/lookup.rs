//! Point lookups: the sources of a key are read newest first (memtables, level-0 tables, the
//! one table of each deeper level that can hold it), and the first that knows anything of
//! it, a version or a range tombstone over it, decides: no older source can hold a newer
//! change. Gets answer from what it found (unless it is a merge operand, which a merged read
//! of the key resolves); a transaction's commit asks how new it is.

use crate::db::ReadView;
use crate::operators::ReadRules;
use crate::scan::DbIter;
use crate::version::{TableHandle, Version};
use crate::write_path::MemState;
use bytes::Bytes;
use cairn_common::{Entry, EntryKind, KeyRange, Read, Result, SeqNo};
use std::sync::Arc;

/// What the deciding source holds of a key.
pub(crate) struct Found {
    pub version: Option<Entry>,
    /// Its newest range tombstone over the key.
    pub covered: Option<SeqNo>,
}

impl Found {
    fn of(version: Option<Entry>, covered: Option<SeqNo>) -> Option<Found> {
        (version.is_some() || covered.is_some()).then_some(Found { version, covered })
    }

    /// The key's value, read at `now_ms` (a closure: only an expiring put needs the time).
    pub fn answer(self, now_ms: impl FnOnce() -> u64) -> Answer {
        let Some(e) = self.version else {
            return Answer::Value(None);
        };
        if self.covered.is_some_and(|t| t > e.seq) {
            return Answer::Value(None);
        }
        match e.kind {
            EntryKind::Put => Answer::Value(Some(e.value)),
            EntryKind::Merge => Answer::Operands,
            EntryKind::Expiring => match e.read(now_ms()) {
                Read::Value(v) => Answer::Value(Some(v)),
                _ => Answer::Value(None),
            },
            EntryKind::Delete | EntryKind::RangeDelete => Answer::Value(None),
        }
    }

    /// The sequence number of the key's newest change, a version or a tombstone.
    pub fn newest_change(&self) -> Option<SeqNo> {
        self.version.as_ref().map(|e| e.seq).max(self.covered)
    }
}

/// What a point read found.
pub(crate) enum Answer {
    /// The value, or `None` if absent, deleted, expired or covered by a newer range
    /// tombstone.
    Value(Option<Bytes>),
    /// Merge operands: the value depends on older versions too, which a merged read of the
    /// key gathers.
    Operands,
}

/// What the memtables, newest first, know of `key` at `snapshot`, if anything.
pub(crate) fn in_memtables(mem: &MemState, key: &[u8], snapshot: SeqNo) -> Option<Found> {
    std::iter::once(&mem.active)
        .chain(mem.immutables.iter())
        .find_map(|m| {
            let covered = m.ranges.get().and_then(|r| r.covering(key, snapshot));
            Found::of(m.table.get(key, snapshot), covered)
        })
}

/// What the tables know of `key` at `snapshot`, newest first, if anything.
pub(crate) async fn in_tables(
    version: &Version,
    key: &[u8],
    snapshot: SeqNo,
) -> Result<Option<Found>> {
    for t in tables_for(version, key, snapshot) {
        let covered = t.ranges.as_ref().and_then(|r| r.covering(key, snapshot));
        if let Some(found) = Found::of(t.table.get(key, snapshot).await?, covered) {
            return Ok(Some(found));
        }
    }
    Ok(None)
}

/// The tables that can hold versions of `key` at `snapshot`, newest first: the L0 tables
/// whose range holds it, then the one table of each deeper level that can.
fn tables_for<'a>(
    version: &'a Version,
    key: &'a [u8],
    snapshot: SeqNo,
) -> impl Iterator<Item = &'a Arc<TableHandle>> + 'a {
    let l0 = version.levels[0].iter().filter(move |t| {
        t.meta.smallest.as_slice() <= key
            && key <= t.meta.largest.as_slice()
            && t.meta.min_seq <= snapshot
    });
    let deeper = version.levels[1..]
        .iter()
        .filter_map(move |level| Version::find_in_level(level, key));
    l0.chain(deeper)
}

/// `key` at `snapshot` through a merged read of every source, which folds its merge operands
/// over the version below them (`Answer::Operands`).
pub(crate) async fn merged(
    view: &ReadView,
    key: &[u8],
    snapshot: SeqNo,
    rules: ReadRules,
) -> Result<Option<Bytes>> {
    let point = KeyRange {
        start: std::ops::Bound::Included(Bytes::copy_from_slice(key)),
        end: std::ops::Bound::Included(Bytes::copy_from_slice(key)),
    };
    let mut it = DbIter::over(view.clone(), point, snapshot, None, false, rules).await?;
    Ok(it.next().await?.map(|(_, v)| v))
}
