//! Writes one table to both storages at once: the primary inline, the secondary on a task of
//! its own fed the same entry chunks, so the two encodings run on different cores.

use crate::certify::{Copy, certify};
use crate::{OnSecondaryFailure, Shared};
use async_trait::async_trait;
use cairn_common::{Entry, Error, Result, TableId, TableMeta};
use cairn_filestore::{ContentDigest, TableBuilder};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use tokio::sync::{mpsc, oneshot};

enum Msg {
    Add(Vec<Entry>),
    Finish(oneshot::Sender<Result<Copy>>),
}

pub(crate) struct HybridBuilder {
    id: TableId,
    shared: Arc<Shared>,
    primary: Box<dyn TableBuilder>,
    /// `None` once the secondary's task has gone.
    secondary: Option<mpsc::Sender<Msg>>,
}

/// Chunks in flight to the secondary; bounds memory when it is slower than the primary.
const QUEUE: usize = 8;

impl HybridBuilder {
    pub(crate) async fn start(
        shared: Arc<Shared>,
        id: TableId,
        level: u32,
    ) -> Result<Box<dyn TableBuilder>> {
        let mut primary = shared.primary.create_table(id, level).await?;
        primary.keep_digest();
        let secondary = match shared.secondary.create_table(id, level).await {
            Ok(mut b) => {
                b.keep_digest();
                let (tx, rx) = mpsc::channel(QUEUE);
                tokio::spawn(feed(b, rx));
                Some(tx)
            }
            Err(e) => {
                secondary_failed(&shared, id, &e)?;
                None
            }
        };
        Ok(Box::new(HybridBuilder {
            id,
            shared,
            primary,
            secondary,
        }))
    }
}

/// Counts a secondary failure; under `fail` it becomes the caller's error.
fn secondary_failed(shared: &Shared, id: TableId, e: &Error) -> Result<()> {
    shared.secondary_failures.fetch_add(1, Ordering::Relaxed);
    match shared.opts.on_secondary_failure {
        OnSecondaryFailure::Fail => Err(Error::component(
            "hybrid store secondary",
            format_args!("table {id}: {e}"),
        )),
        OnSecondaryFailure::Retry => {
            tracing::warn!(table = id, error = %e, "secondary write failed; re-uploading");
            Ok(())
        }
    }
}

/// Runs the secondary builder. After its first error it drops the rest and reports the error
/// at finish; if the sender goes away without a finish, the partial table is abandoned.
async fn feed(mut b: Box<dyn TableBuilder>, mut rx: mpsc::Receiver<Msg>) {
    let mut failed: Option<Error> = None;
    while let Some(msg) = rx.recv().await {
        match msg {
            Msg::Add(chunk) => {
                if failed.is_none()
                    && let Err(e) = b.add(&chunk).await
                {
                    failed = Some(e);
                }
            }
            Msg::Finish(reply) => {
                let res = match failed {
                    Some(e) => {
                        let _ = b.abandon().await;
                        Err(e)
                    }
                    None => b.finish_with_digest().await,
                };
                let _ = reply.send(res);
                return;
            }
        }
    }
    let _ = b.abandon().await;
}

#[async_trait]
impl TableBuilder for HybridBuilder {
    async fn add(&mut self, entries: &[Entry]) -> Result<()> {
        if let Some(tx) = &self.secondary {
            // Entries share their key and value buffers, so the copy is of headers only.
            if tx.send(Msg::Add(entries.to_vec())).await.is_err() {
                self.secondary = None;
                let e = Error::component("hybrid store secondary", "writer task ended");
                secondary_failed(&self.shared, self.id, &e)?;
            }
        }
        self.primary.add(entries).await
    }

    fn estimated_size(&self) -> u64 {
        self.primary.estimated_size()
    }

    async fn finish(self: Box<Self>) -> Result<TableMeta> {
        Ok(self.finish_with_digest().await?.0)
    }

    async fn finish_with_digest(mut self: Box<Self>) -> Result<(TableMeta, Option<ContentDigest>)> {
        // The secondary is told to finish before the primary starts: a primary whose finish
        // blocks (an SSTable's fsync) would otherwise hold the request back until it is done.
        let answer = match self.secondary.take() {
            Some(tx) => {
                let (reply, answer) = oneshot::channel();
                match tx.send(Msg::Finish(reply)).await {
                    Ok(()) => Some(Ok(answer)),
                    Err(_) => Some(Err(())),
                }
            }
            None => None,
        };
        let primary = self.primary.finish_with_digest().await;
        let ended = || Error::component("hybrid store secondary", "writer task ended");
        let secondary = match answer {
            None => None,
            Some(Err(())) => Some(Err(ended())),
            Some(Ok(answer)) => Some(answer.await.unwrap_or_else(|_| Err(ended()))),
        };
        let primary = match primary {
            Ok(copy) => copy,
            Err(e) => {
                if matches!(secondary, Some(Ok(_))) {
                    let _ = self.shared.secondary.delete_table(self.id).await;
                }
                return Err(e);
            }
        };
        let secondary_err = match secondary {
            Some(Ok(copy)) => {
                if let Err(e) = certify(self.id, &primary, &copy) {
                    let _ = self.shared.secondary.delete_table(self.id).await;
                    let _ = self.shared.primary.delete_table(self.id).await;
                    return Err(e);
                }
                return Ok(primary);
            }
            Some(Err(e)) => e,
            None => Error::component("hybrid store secondary", "not written"),
        };
        // Neither copy may stay behind as a table unless both are there: the manifest that will
        // name it lives with the secondary, and a node that loses its disk rebuilds from there.
        let meta = &primary.0;
        let retried = match secondary_failed(&self.shared, self.id, &secondary_err) {
            Ok(()) => crate::uploader::upload_now(&self.shared, meta)
                .await
                .map_err(|e| {
                    Error::component(
                        "hybrid store secondary",
                        format_args!(
                            "table {}: {secondary_err}; {} re-uploads failed too, the last: {e}",
                            self.id,
                            crate::FINISH_ATTEMPTS
                        ),
                    )
                }),
            Err(e) => Err(e),
        };
        if retried.is_err() {
            let _ = self.shared.primary.delete_table(self.id).await;
        }
        retried.map(|()| primary)
    }

    async fn abandon(mut self: Box<Self>) -> Result<()> {
        // Dropping the sender makes the secondary task abandon its half.
        self.secondary = None;
        self.primary.abandon().await
    }
}
