//! Copies tables from the primary to the secondary: before a `retry` store finishes a table
//! whose secondary write failed (a few attempts with backoff), and in a background task for
//! tables found missing from the secondary at open, which backs off while the secondary keeps
//! failing and stops when the store is dropped. A table deleted while its background upload
//! ran has the fresh copy deleted again.

use crate::Shared;
use crate::certify::certify;
use cairn_common::backoff::Backoff;
use cairn_common::{Entry, RangeTombstone, Result, TableMeta};
use cairn_filestore::ContentDigest;
use futures::StreamExt;
use std::sync::Weak;
use std::sync::atomic::Ordering;
use std::time::Duration;

pub(crate) async fn run(shared: Weak<Shared>) {
    let mut failures = 0;
    loop {
        let Some(s) = shared.upgrade() else { return };
        let next = s.pending.lock().values().next().cloned();
        let Some(meta) = next else {
            failures = 0;
            // Wait for work, looking every second whether the store still exists.
            let _ = tokio::time::timeout(Duration::from_secs(1), s.wake.notified()).await;
            continue;
        };
        match copy(&s, &meta).await {
            Ok(()) => {
                failures = 0;
                s.reuploads.fetch_add(1, Ordering::Relaxed);
                let still_live = s.pending.lock().remove(&meta.id).is_some();
                if !still_live {
                    let _ = s.secondary.delete_table(meta.id).await;
                }
                tracing::info!(table = meta.id, "re-uploaded to the secondary");
            }
            Err(e) => {
                s.secondary_failures.fetch_add(1, Ordering::Relaxed);
                failures += 1;
                let wait = s.backoff().delay(failures);
                tracing::warn!(table = meta.id, error = %e, ?wait, "re-upload failed");
                drop(s);
                tokio::time::sleep(wait).await;
            }
        }
    }
}

/// Copies `meta` to the secondary before its write is finished: up to `FINISH_ATTEMPTS`
/// attempts with backoff; the last failure is the error.
pub(crate) async fn upload_now(s: &Shared, meta: &TableMeta) -> Result<()> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        match copy(s, meta).await {
            Ok(()) => {
                s.reuploads.fetch_add(1, Ordering::Relaxed);
                return Ok(());
            }
            Err(e) if attempt >= crate::FINISH_ATTEMPTS => return Err(e),
            Err(e) => {
                s.secondary_failures.fetch_add(1, Ordering::Relaxed);
                let wait = s.backoff().delay(attempt);
                tracing::warn!(table = meta.id, attempt, error = %e, ?wait, "secondary copy failed; retrying");
                tokio::time::sleep(wait).await;
            }
        }
    }
}

impl Shared {
    /// The wait after `previous`: `retry_initial_ms` first, then doubling up to `retry_max_ms`.
    fn backoff(&self) -> Backoff {
        Backoff::new(
            Duration::from_millis(self.opts.retry_initial_ms),
            Duration::from_millis(self.opts.retry_max_ms),
        )
    }
}

/// Copies one table from the primary to the secondary: its entries with its range
/// tombstones put back among them (a table keeps those apart from its entries), the copy
/// certified against what was read from the primary.
async fn copy(s: &Shared, meta: &TableMeta) -> Result<()> {
    let table = s.primary.open_table(meta).await?;
    let mut entries = table.scan(&cairn_common::KeyRange::all()).await?;
    // Last first: popped as the entries pass their start keys.
    let mut ranges: Vec<Entry> = table
        .range_deletes()
        .iter()
        .map(RangeTombstone::to_entry)
        .collect();
    ranges.sort_by(|a, b| b.cmp_internal(a));
    // The level a table was built for is not in its metadata: a late copy takes level 0's
    // encoding (the next compaction of the table rewrites it at its own).
    let mut b = s.secondary.create_table(meta.id, 0).await?;
    b.keep_digest();
    let mut read = ContentDigest::default();
    let mut chunk: Vec<Entry> = Vec::with_capacity(1024);
    let res: Result<()> = async {
        loop {
            let next = entries.next().await.transpose()?;
            while let Some(r) =
                ranges.pop_if(|r| next.as_ref().is_none_or(|e| r.cmp_internal(e).is_lt()))
            {
                chunk.push(r);
            }
            let Some(e) = next else { break };
            chunk.push(e);
            if chunk.len() >= 1024 {
                chunk
                    .iter()
                    .for_each(|e| read.add(&e.key, e.seq, e.kind.as_u8(), &e.value));
                b.add(&chunk).await?;
                chunk.clear();
            }
        }
        if !chunk.is_empty() {
            chunk
                .iter()
                .for_each(|e| read.add(&e.key, e.seq, e.kind.as_u8(), &e.value));
            b.add(&chunk).await?;
        }
        Ok(())
    }
    .await;
    if let Err(e) = res {
        let _ = b.abandon().await;
        return Err(e);
    }
    let copied = b.finish_with_digest().await?;
    if let Err(e) = certify(meta.id, &(meta.clone(), Some(read)), &copied) {
        let _ = s.secondary.delete_table(meta.id).await;
        return Err(e);
    }
    Ok(())
}
