//! The conformance suite every `Journal` implementation runs (local, remote, decorated).
//! Call [`run`] with a fresh journal; it panics with a description on the first violation.

use crate::{Journal, JournalClaim};
use bytes::Bytes;
use futures::TryStreamExt;
use std::collections::HashSet;
use std::sync::Arc;

/// Runs every check on `journal`, which must be new.
pub async fn run(journal: Arc<dyn Journal>) {
    a_new_journal_numbers_after_the_tables(&journal).await;
    lsns_increase_and_replay_in_order(&journal).await;
    replay_from_the_middle(&journal).await;
    concurrent_appends_get_distinct_lsns(&journal).await;
    truncate_keeps_later_records(&journal).await;
    odd_payloads_roundtrip(&journal).await;
    waiting_past_an_lsn_wakes_on_an_append(&journal).await;
    inline_appends_are_appends(&journal).await;
    newer_epochs_fence_older_ones(&journal).await;
}

fn claim(database: &str, epoch: u64, flushed_lsn: u64) -> JournalClaim {
    JournalClaim {
        database: database.into(),
        epoch,
        flushed_lsn,
    }
}

/// A journal new to a database numbers its records after those already in its tables.
async fn a_new_journal_numbers_after_the_tables(journal: &Arc<dyn Journal>) {
    let first = journal
        .claim(&claim("conformance", 1, 1000))
        .await
        .expect("claim a new journal");
    assert_eq!(first.last_lsn, 0, "a new journal has given no LSN");
    let again = journal
        .claim(&claim("conformance", 1, 1000))
        .await
        .expect("claim again at the same epoch");
    assert_eq!(again.journal, first.journal, "a journal keeps its id");
}

async fn newer_epochs_fence_older_ones(journal: &Arc<dyn Journal>) {
    let last = all(journal, 0).await.last().map(|r| r.0).unwrap_or(0);
    journal
        .claim(&claim("conformance", 2, last))
        .await
        .expect("claim at epoch 2");
    let e = journal
        .append(1, Bytes::from_static(b"stale"))
        .await
        .expect_err("an epoch-1 append after epoch 2 claimed");
    assert!(e.is_fenced(), "fenced, not: {e}");
    assert!(
        e.to_string().contains("epoch 2"),
        "names the newer epoch: {e}"
    );
    if let Some(inline) = journal.inline() {
        let e = inline
            .append_now(1, &Bytes::from_static(b"stale"))
            .expect_err("an epoch-1 inline append after epoch 2 claimed");
        assert!(e.is_fenced(), "fenced inline too, not: {e}");
    }
    let lsn = journal
        .append(2, Bytes::from_static(b"fresh"))
        .await
        .expect("an epoch-2 append");
    assert!(lsn > last);
    let e = journal
        .claim(&claim("conformance", 1, last))
        .await
        .expect_err("claim at an older epoch");
    assert!(e.is_fenced(), "{e}");
    let e = journal
        .claim(&claim("another", 3, 0))
        .await
        .expect_err("claim by another database");
    let msg = e.to_string();
    assert!(
        msg.contains("conformance") && msg.contains("another"),
        "names both: {msg}"
    );
    let c = journal
        .claim(&claim("conformance", 3, lsn + 100))
        .await
        .expect("claim behind the tables");
    assert_eq!(c.last_lsn, lsn, "the claim reports where the journal ended");
    let next = journal
        .append(3, Bytes::from_static(b"after"))
        .await
        .expect("append");
    assert!(
        next > lsn + 100,
        "numbering continues after the tables: {next}"
    );
    assert!(
        !all(journal, 0)
            .await
            .iter()
            .any(|r| r.1 == Bytes::from_static(b"stale")),
        "the fenced record is nowhere"
    );
}

/// A journal that appends inline (`Journal::inline`) numbers, replays and wakes waiters for
/// those appends as for any other, and its appends do not wait (the engine would otherwise
/// group writers in front of it).
async fn inline_appends_are_appends(journal: &Arc<dyn Journal>) {
    let Some(inline) = journal.inline() else {
        return;
    };
    assert!(
        !journal.appends_wait(),
        "a journal that appends inline says its appends do not wait"
    );
    let before = journal
        .append(1, Bytes::from_static(b"async"))
        .await
        .expect("append");
    let now = inline
        .append_now(1, &Bytes::from_static(b"inline"))
        .expect("inline append");
    assert!(now > before, "LSNs increase across both ways of appending");
    journal
        .wait_past(before, std::time::Duration::from_secs(5))
        .await
        .expect("wait_past");
    let replayed = all(journal, before).await;
    assert_eq!(
        replayed,
        vec![
            (before, Bytes::from_static(b"async")),
            (now, Bytes::from_static(b"inline"))
        ]
    );
}

/// `wait_past` returns at once when a record past the LSN is there, when one is appended
/// while it waits (long before its limit), and after its limit when none comes.
async fn waiting_past_an_lsn_wakes_on_an_append(journal: &Arc<dyn Journal>) {
    use std::time::Duration;
    // Far beyond what any journal here takes to notice: reaching it means it never did.
    const NEVER: Duration = Duration::from_secs(30);
    let long = Duration::from_secs(600);
    let last = all(journal, 0).await.last().map_or(0, |r| r.0);
    tokio::time::timeout(NEVER, journal.wait_past(last - 1, long))
        .await
        .expect("a record past the LSN is there: no wait")
        .expect("wait_past");
    let waiter = {
        let journal = journal.clone();
        tokio::spawn(async move { journal.wait_past(last, long).await })
    };
    // Give the waiter time to start waiting (an early start is allowed to return early).
    tokio::time::sleep(Duration::from_millis(50)).await;
    let lsn = journal
        .append(1, Bytes::from_static(b"wakes"))
        .await
        .expect("append");
    tokio::time::timeout(NEVER, waiter)
        .await
        .expect("an append wakes a waiter long before its limit")
        .expect("waiter task")
        .expect("wait_past");
    let started = std::time::Instant::now();
    tokio::time::timeout(NEVER, journal.wait_past(lsn, Duration::from_millis(200)))
        .await
        .expect("a wait with nothing new ends at its limit")
        .expect("wait_past");
    assert!(
        started.elapsed() >= Duration::from_millis(150),
        "nothing new: it waits about its limit, not {:?}",
        started.elapsed()
    );
}

async fn all(journal: &Arc<dyn Journal>, from: u64) -> Vec<(u64, Bytes)> {
    journal
        .replay(from)
        .await
        .expect("replay")
        .map_ok(|r| (r.lsn, r.payload))
        .try_collect()
        .await
        .expect("replay stream")
}

async fn lsns_increase_and_replay_in_order(journal: &Arc<dyn Journal>) {
    let mut lsns = Vec::new();
    for i in 0..100u32 {
        lsns.push(
            journal
                .append(1, Bytes::from(format!("rec-{i}")))
                .await
                .expect("append"),
        );
    }
    assert!(
        lsns.windows(2).all(|w| w[0] < w[1]),
        "LSNs must increase: {lsns:?}"
    );
    assert!(lsns[0] > 1000, "after the claimed flushed LSN: {}", lsns[0]);
    let got = all(journal, 0).await;
    assert_eq!(got.len(), 100, "replay returns every record");
    for (i, (lsn, payload)) in got.iter().enumerate() {
        assert_eq!(*lsn, lsns[i]);
        assert_eq!(payload, &Bytes::from(format!("rec-{i}")));
    }
}

async fn replay_from_the_middle(journal: &Arc<dyn Journal>) {
    let got = all(journal, 0).await;
    let mid = got[got.len() / 2].0;
    let tail = all(journal, mid).await;
    assert_eq!(
        tail.first().map(|r| r.0),
        Some(mid),
        "replay(from) starts at from"
    );
    assert_eq!(tail.len(), got.iter().filter(|r| r.0 >= mid).count());
}

async fn concurrent_appends_get_distinct_lsns(journal: &Arc<dyn Journal>) {
    let before = all(journal, 0).await.len();
    let mut tasks = Vec::new();
    for t in 0..32u32 {
        let j = journal.clone();
        tasks.push(tokio::spawn(async move {
            let mut out = Vec::new();
            for i in 0..20u32 {
                let lsn = j
                    .append(1, Bytes::from(format!("c-{t}-{i}")))
                    .await
                    .expect("append");
                out.push((lsn, format!("c-{t}-{i}")));
            }
            out
        }));
    }
    let mut acked = Vec::new();
    for t in tasks {
        acked.extend(t.await.expect("task"));
    }
    let distinct: HashSet<u64> = acked.iter().map(|a| a.0).collect();
    assert_eq!(distinct.len(), acked.len(), "every append gets its own LSN");
    let got = all(journal, 0).await;
    assert_eq!(got.len(), before + acked.len());
    for (lsn, payload) in &acked {
        let rec = got
            .iter()
            .find(|r| r.0 == *lsn)
            .expect("acked record is replayed");
        assert_eq!(&rec.1[..], payload.as_bytes(), "payload at LSN {lsn}");
    }
}

async fn truncate_keeps_later_records(journal: &Arc<dyn Journal>) {
    let got = all(journal, 0).await;
    let cut = got[got.len() - 10].0;
    journal.truncate(cut).await.expect("truncate");
    let after = all(journal, 0).await;
    let expect_kept: Vec<_> = got.iter().filter(|r| r.0 > cut).cloned().collect();
    let kept: Vec<_> = after.iter().filter(|r| r.0 > cut).cloned().collect();
    assert_eq!(
        kept, expect_kept,
        "records after the truncation point survive"
    );
    let next = journal
        .append(1, Bytes::from_static(b"after-truncate"))
        .await
        .expect("append");
    assert!(
        next > got.last().map(|r| r.0).unwrap_or(0),
        "LSNs keep increasing after truncate"
    );
}

async fn odd_payloads_roundtrip(journal: &Arc<dyn Journal>) {
    let big = Bytes::from(vec![0xAB; 1 << 20]);
    let empty_lsn = journal.append(1, Bytes::new()).await.expect("empty append");
    let big_lsn = journal.append(1, big.clone()).await.expect("big append");
    let got = all(journal, empty_lsn).await;
    assert_eq!(got[0], (empty_lsn, Bytes::new()));
    assert_eq!(got[1], (big_lsn, big));
}
