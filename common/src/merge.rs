//! K-way merge of entry sources that are each in internal order, into one stream in internal
//! order. The engine merges memtables and tables with it; the compactor merges its inputs.
//! Exact duplicates (same key and seq, which can only be the same write) appear once.

use crate::BoxStream;
use crate::entry::Entry;
use crate::error::Result;
use futures::{Stream, StreamExt};
use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::collections::binary_heap::PeekMut;
use std::pin::Pin;
use std::task::{Context, Poll};

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

/// One input of a merge: an iterator that never waits (a memtable, a table on local disk),
/// read with a plain call per entry, or a stream that may (a table across the network).
pub enum MergeSource {
    Ready(crate::EntryIter),
    Stream(BoxStream<Result<Entry>>),
}

impl MergeSource {
    fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Entry>>> {
        match self {
            MergeSource::Ready(it) => Poll::Ready(it.next()),
            MergeSource::Stream(s) => s.poll_next_unpin(cx),
        }
    }
}

impl Stream for MergeSource {
    type Item = Result<Entry>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Entry>>> {
        MergeSource::poll_next(self.get_mut(), cx)
    }
}

/// The merge as a stream, polled directly: no future is made per entry, and entries of
/// `Ready` sources cost an iterator call and a sift of the heap's top, which ends at once
/// while one source keeps holding the smallest keys (the deepest level, mostly).
pub struct Merge {
    sources: Vec<MergeSource>,
    heap: BinaryHeap<MergeHead>,
    /// Sources not yet read from; each must have its first entry in the heap before the
    /// first pop.
    unstarted: Vec<usize>,
    /// The last (key, seq) given, when exact duplicates are dropped.
    last: Option<(bytes::Bytes, u64)>,
    dedupe: bool,
}

impl Merge {
    /// A merge that passes exact duplicates on, for readers that keep only the first version
    /// of each key and so drop them anyway.
    pub fn new(sources: Vec<MergeSource>) -> Self {
        Merge {
            heap: BinaryHeap::with_capacity(sources.len()),
            unstarted: (0..sources.len()).rev().collect(),
            sources,
            last: None,
            dedupe: false,
        }
    }

    /// A merge that gives each exact duplicate once, for readers that keep every version.
    pub fn deduplicated(sources: Vec<MergeSource>) -> Self {
        Merge {
            dedupe: true,
            ..Merge::new(sources)
        }
    }
}

impl Stream for Merge {
    type Item = Result<Entry>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Entry>>> {
        let this = self.get_mut();
        while let Some(&src) = this.unstarted.last() {
            match this.sources[src].poll_next(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Ok(entry))) => this.heap.push(MergeHead { entry, src }),
                Poll::Ready(Some(Err(e))) => {
                    this.unstarted.pop();
                    return Poll::Ready(Some(Err(e)));
                }
                Poll::Ready(None) => {}
            }
            this.unstarted.pop();
        }
        loop {
            // The top stays in the heap until its source's next entry is known, which then
            // takes its place; a source that is pending is polled again with the top intact.
            let Some(mut top) = this.heap.peek_mut() else {
                return Poll::Ready(None);
            };
            let src = top.src;
            let entry = match this.sources[src].poll_next(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Ok(next))) => std::mem::replace(&mut top.entry, next),
                Poll::Ready(None) => PeekMut::pop(top).entry,
                Poll::Ready(Some(Err(e))) => {
                    PeekMut::pop(top);
                    return Poll::Ready(Some(Err(e)));
                }
            };
            if this.dedupe {
                if this
                    .last
                    .as_ref()
                    .is_some_and(|(k, s)| *s == entry.seq && *k == entry.key)
                {
                    continue;
                }
                this.last = Some((entry.key.clone(), entry.seq));
            }
            return Poll::Ready(Some(Ok(entry)));
        }
    }
}

/// Merges streams into one, giving exact duplicates once (the compactor's and the router's merge).
pub fn merge_sorted(sources: Vec<BoxStream<Result<Entry>>>) -> BoxStream<Result<Entry>> {
    if sources.len() == 1 {
        return sources
            .into_iter()
            .next()
            .unwrap_or_else(|| Box::pin(futures::stream::empty()));
    }
    Box::pin(Merge::deduplicated(
        sources.into_iter().map(MergeSource::Stream).collect(),
    ))
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
    fn ready_and_waiting_sources_merge_alike() {
        let ready = MergeSource::Ready(Box::new(
            vec![Entry::put("a", 1, ""), Entry::put("d", 1, "")]
                .into_iter()
                .map(Ok),
        ));
        // A stream that is pending before each entry, as a remote table's is.
        let waiting = MergeSource::Stream(Box::pin(
            futures::stream::iter(vec![Entry::put("b", 1, ""), Entry::put("c", 1, "")]).then(
                |e| async move {
                    tokio::task::yield_now().await;
                    Ok(e)
                },
            ),
        ));
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let out: Vec<Entry> = rt
            .block_on(Merge::new(vec![ready, waiting]).try_collect())
            .unwrap();
        let keys: Vec<&[u8]> = out.iter().map(|e| &e.key[..]).collect();
        assert_eq!(keys, vec![&b"a"[..], b"b", b"c", b"d"]);
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
