//! Copies tables from the primary to the secondary: before a `retry` store finishes a table
//! whose secondary write failed (a few attempts with backoff), and in a background task for
//! tables found missing from the secondary at open, which backs off while the secondary keeps
//! failing and stops when the store is dropped. A table deleted while its background upload
//! ran has the fresh copy deleted again.

use crate::Shared;
use cairn_common::backoff::Backoff;
use cairn_common::{Error, Result, TableMeta};
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

/// Copies one table from the primary to the secondary.
async fn copy(s: &Shared, meta: &TableMeta) -> Result<()> {
    let table = s.primary.open_table(meta).await?;
    let mut entries = table.scan(&cairn_common::KeyRange::all()).await?;
    // The level a table was built for is not in its metadata: a late copy takes level 0's
    // encoding (the next compaction of the table rewrites it at its own).
    let mut b = s.secondary.create_table(meta.id, 0).await?;
    let mut chunk = Vec::with_capacity(1024);
    let res: Result<()> = async {
        while let Some(e) = entries.next().await {
            chunk.push(e?);
            if chunk.len() == 1024 {
                b.add(&chunk).await?;
                chunk.clear();
            }
        }
        if !chunk.is_empty() {
            b.add(&chunk).await?;
        }
        Ok(())
    }
    .await;
    if let Err(e) = res {
        let _ = b.abandon().await;
        return Err(e);
    }
    let copied = b.finish().await?;
    if copied.entries != meta.entries || copied.smallest != meta.smallest {
        let _ = s.secondary.delete_table(meta.id).await;
        return Err(Error::Corruption {
            what: format!("re-upload of table {}", meta.id),
            detail: format!(
                "copied {} entries from {:?}, expected {} from {:?}",
                copied.entries, copied.smallest, meta.entries, meta.smallest
            ),
        });
    }
    Ok(())
}
