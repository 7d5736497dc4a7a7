//! K-way merge of entry streams that are each in internal order, into one stream in internal
//! order. The engine merges memtables and tables with it; the compactor merges its inputs.
//! Exact duplicates (same key and seq, which can only be the same write) appear once.

use crate::BoxStream;
use crate::entry::Entry;
use crate::error::Result;
use futures::StreamExt;
use std::cmp::Ordering;
use std::collections::BinaryHeap;

/// An entry and the index of the source it came from, ordered for a `BinaryHeap` (a max-heap)
/// so that the smallest internal key, then the lowest source index, is on top.
pub struct MergeHead {
    pub entry: Entry,
    /// Sources earlier in the input list win ties, so callers list newer sources first.
    pub src: usize,
}

impl PartialEq for MergeHead {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for MergeHead {}
impl PartialOrd for MergeHead {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for MergeHead {
    fn cmp(&self, other: &Self) -> Ordering {
        // Max-heap: reverse so the smallest internal key (then the lowest source) is on top.
        other
            .entry
            .cmp_internal(&self.entry)
            .then_with(|| other.src.cmp(&self.src))
    }
}

struct State {
    sources: Vec<BoxStream<Result<Entry>>>,
    heap: BinaryHeap<MergeHead>,
    started: bool,
    last: Option<(bytes::Bytes, u64)>,
}

pub fn merge_sorted(sources: Vec<BoxStream<Result<Entry>>>) -> BoxStream<Result<Entry>> {
    if sources.len() == 1 {
        return sources
            .into_iter()
            .next()
            .unwrap_or_else(|| Box::pin(futures::stream::empty()));
    }
    let state = State {
        heap: BinaryHeap::with_capacity(sources.len()),
        sources,
        started: false,
        last: None,
    };
    Box::pin(futures::stream::try_unfold(state, |mut st| async move {
        if !st.started {
            st.started = true;
            for src in 0..st.sources.len() {
                if let Some(entry) = st.sources[src].next().await.transpose()? {
                    st.heap.push(MergeHead { entry, src });
                }
            }
        }
        loop {
            let Some(MergeHead { entry, src }) = st.heap.pop() else {
                return Ok(None);
            };
            if let Some(next) = st.sources[src].next().await.transpose()? {
                st.heap.push(MergeHead { entry: next, src });
            }
            if st
                .last
                .as_ref()
                .is_some_and(|(k, s)| *s == entry.seq && *k == entry.key)
            {
                continue;
            }
            st.last = Some((entry.key.clone(), entry.seq));
            return Ok(Some((entry, st)));
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::TryStreamExt;

    fn src(v: Vec<Entry>) -> BoxStream<Result<Entry>> {
        Box::pin(futures::stream::iter(v.into_iter().map(Ok)))
    }

    #[test]
    fn merges_in_internal_order_and_drops_exact_duplicates() {
        let a = vec![Entry::put("a", 5, "a5"), Entry::put("c", 1, "c1")];
        let b = vec![
            Entry::put("a", 7, "a7"),
            Entry::put("a", 5, "a5"),
            Entry::put("b", 2, "b2"),
        ];
        let out: Vec<Entry> = futures::executor::block_on(
            merge_sorted(vec![src(a), src(b), src(vec![])]).try_collect(),
        )
        .unwrap();
        let got: Vec<(&[u8], u64)> = out.iter().map(|e| (&e.key[..], e.seq)).collect();
        assert_eq!(got, vec![(&b"a"[..], 7), (b"a", 5), (b"b", 2), (b"c", 1)]);
    }

    #[test]
    fn an_error_in_a_source_is_passed_on() {
        let bad: BoxStream<Result<Entry>> = Box::pin(futures::stream::iter(vec![
            Ok(Entry::put("a", 1, "x")),
            Err(crate::Error::corruption("t", "bad")),
        ]));
        let r: Result<Vec<Entry>> = futures::executor::block_on(
            merge_sorted(vec![bad, src(vec![Entry::put("b", 1, "")])]).try_collect(),
        );
        assert!(r.unwrap_err().is_corruption());
    }
}
