//! Reading a journal's objects for a replay: by listing or by probing numbers, fetched
//! ahead, and where a replay must stop short of a commit still in flight.

use super::format::{FILL, Header, RECORDS};
use super::{NEWEST, Shared};
use bytes::Bytes;
use cairn_common::{BoxStream, Lsn, Result};
use futures::StreamExt;
use std::sync::Arc;
use std::sync::atomic::Ordering;

/// Objects a replay reads ahead.
const REPLAY_AHEAD: usize = 16;

/// An object read for a replay: its number, header and records.
pub(super) type Object = (u64, Header, Vec<Bytes>);

/// The objects `numbers` names, read in order. Objects are fetched ahead, as many as a
/// journal of small group commits needs to replay at the store's throughput rather than its
/// latency; each is checked whole before its records go out.
pub(super) fn listed(s: Arc<Shared>, numbers: Vec<u64>) -> BoxStream<Result<Object>> {
    Box::pin(
        futures::stream::iter(numbers)
            .map(move |n| {
                let s = s.clone();
                async move {
                    let (h, records) = s.read(n).await?.ok_or_else(|| {
                        s.err(
                            "replay",
                            format_args!("object {n} vanished while replaying"),
                        )
                    })?;
                    Ok((n, h, records))
                }
            })
            .buffered(REPLAY_AHEAD),
    )
}

/// `first` (object `next - 1`), then the objects numbered from `next` on, fetched ahead in
/// batches, up to the first one missing: it never reads past a gap. A replica following the
/// tail finds about as many objects each time as the time before, so the first batch asks
/// for a few more than that (`Shared::ahead`), and each next one for twice as many, up to
/// `REPLAY_AHEAD`: one round of reads in the steady state, without 16 reads of nothing on
/// every poll.
pub(super) fn probed(s: Arc<Shared>, next: u64, first: Object) -> BoxStream<Result<Object>> {
    let ready = std::collections::VecDeque::from([Ok(first)]);
    let batch = (s.ahead.load(Ordering::Relaxed) + 2).min(REPLAY_AHEAD as u64);
    Box::pin(futures::stream::unfold(
        (s, next, batch, 0, ready, false),
        |(s, next, batch, mut found, mut ready, mut ended)| async move {
            if ready.is_empty() && !ended {
                let got = futures::future::join_all((next..next + batch).map(|n| {
                    let s = s.clone();
                    async move { s.read(n).await.map(|o| o.map(|(h, r)| (n, h, r))) }
                }))
                .await;
                for got in got {
                    match got {
                        Ok(Some(object)) => {
                            found += 1;
                            ready.push_back(Ok(object));
                        }
                        Ok(None) => {
                            ended = true;
                            s.ahead.store(found, Ordering::Relaxed);
                            break;
                        }
                        Err(e) => {
                            ready.push_back(Err(e));
                            ended = true;
                            break;
                        }
                    }
                }
                let (next, batch) = (next + batch, (batch * 2).min(REPLAY_AHEAD as u64));
                return ready
                    .pop_front()
                    .map(|item| (item, (s, next, batch, found, ready, ended)));
            }
            ready
                .pop_front()
                .map(|item| (item, (s, next, batch, found, ready, ended)))
        },
    ))
}

/// Where a replay of listed objects must stop: at a gap in the numbers where a commit may
/// still be in flight (or lost with later ones landed), so that no record is replayed
/// before an earlier one. Such a gap is among the `NEWEST` numbers,
/// and only a records object after it can show that the gap holds nothing asked for (that
/// it starts at or before both `from` and the next LSN of the object before the gap): a
/// gap that a truncation left lies further down, or holds only records before `from`.
pub(super) struct Gaps {
    pub highest: u64,
    pub from: Lsn,
    /// The number of the object before the next one, and the next LSN of the last object
    /// before it that is not a fill.
    pub before: Option<(u64, Lsn)>,
}

impl Gaps {
    /// Whether object `n` with `h` may be replayed, given the ones before it.
    pub fn passes(&mut self, n: u64, h: &Header) -> bool {
        let next = match self.before {
            Some((b, next)) => {
                if n > b + 1
                    && n - 1 + NEWEST > self.highest
                    && (h.kind != RECORDS || h.first_lsn > self.from.max(next))
                {
                    return false;
                }
                next
            }
            None => 0,
        };
        self.before = Some((n, if h.kind == FILL { next } else { h.next_lsn }));
        true
    }
}
