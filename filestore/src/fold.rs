//! Folding one table's versions into an aggregate: per key, only the newest version at or below
//! the snapshot counts, tombstones count as absent, and keys a newer source decides (the
//! `shadowed` list the engine passes) are left to that source. Row-wise and columnar readers
//! feed the same fold, so both answer alike.

use bytes::Bytes;
use cairn_common::{AggregateState, Entry, EntryKind, Result, SeqNo, ValueType};
use futures::{Stream, StreamExt};

pub struct VisibleFold<'a> {
    snapshot: SeqNo,
    /// Sorted, without duplicates.
    shadowed: &'a [Bytes],
    next_shadow: usize,
    decided: bool,
    state: AggregateState,
}

impl<'a> VisibleFold<'a> {
    pub fn new(snapshot: SeqNo, value_type: ValueType, shadowed: &'a [Bytes]) -> Self {
        VisibleFold {
            snapshot,
            shadowed,
            next_shadow: 0,
            decided: false,
            state: AggregateState::new(value_type),
        }
    }

    /// One version, in internal order; `new_key` says it is the first version of its key.
    #[inline]
    pub fn push(&mut self, new_key: bool, key: &[u8], seq: SeqNo, kind: EntryKind, value: &[u8]) {
        if new_key {
            self.decided = false;
        }
        if self.decided || seq > self.snapshot {
            return;
        }
        self.decided = true;
        while self
            .shadowed
            .get(self.next_shadow)
            .is_some_and(|s| s.as_ref() < key)
        {
            self.next_shadow += 1;
        }
        if self
            .shadowed
            .get(self.next_shadow)
            .is_some_and(|s| s.as_ref() == key)
        {
            return;
        }
        match kind {
            EntryKind::Put => self.state.add(value),
            // The fold knows neither the merge operator nor the reader's clock.
            EntryKind::Merge | EntryKind::Expiring => self.state.unresolved += 1,
            EntryKind::Delete | EntryKind::RangeDelete => {}
        }
    }

    pub fn finish(self) -> AggregateState {
        self.state
    }

    /// Folds a stream of entries in internal order.
    pub async fn fold_stream(
        mut self,
        mut entries: impl Stream<Item = Result<Entry>> + Unpin,
    ) -> Result<AggregateState> {
        let mut last: Option<Bytes> = None;
        while let Some(e) = entries.next().await {
            let e = e?;
            let new_key = last.as_ref() != Some(&e.key);
            self.push(new_key, &e.key, e.seq, e.kind, &e.value);
            if new_key {
                last = Some(e.key);
            }
        }
        Ok(self.finish())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(v: i64) -> Bytes {
        Bytes::copy_from_slice(&v.to_le_bytes())
    }

    #[tokio::test]
    async fn newest_visible_version_counts_and_shadowed_keys_do_not() {
        let entries = vec![
            Entry::put("a", 9, n(100)),
            Entry::put("a", 5, n(1)),
            Entry::delete("b", 7),
            Entry::put("b", 3, n(2)),
            Entry::put("c", 4, n(4)),
            Entry::put("d", 2, n(8)),
        ];
        let fold = |snap, shadowed: Vec<Bytes>| {
            let entries = entries.clone();
            async move {
                VisibleFold::new(snap, ValueType::I64, &shadowed)
                    .fold_stream(futures::stream::iter(entries.into_iter().map(Ok)))
                    .await
                    .unwrap()
            }
        };
        // At 9: a=100, b deleted, c=4, d=8.
        let s = fold(9, vec![]).await;
        assert_eq!((s.rows, s.sum_i), (3, 112));
        // At 6: a=1, b=2 (its tombstone is newer), c=4, d=8.
        let s = fold(6, vec![]).await;
        assert_eq!((s.rows, s.sum_i), (4, 15));
        // Shadowing a and d leaves them to a newer source.
        let s = fold(
            9,
            vec![Bytes::from("a"), Bytes::from("d"), Bytes::from("z")],
        )
        .await;
        assert_eq!((s.rows, s.sum_i), (1, 4));
    }
}
