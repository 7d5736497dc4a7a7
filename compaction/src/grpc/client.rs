//! `GrpcCompactor`. Compaction is background work: it is never lost and never applied twice.
//! The engine installs a job's outputs only when `compact` returns them, and a job always
//! writes to the ids it was given, so a retried or fallen-back job overwrites whatever an
//! earlier attempt left rather than adding to it.

use super::pb::Job;
use super::pb::compaction_client::CompactionClient;
use crate::{CompactionJob, Compactor};
use async_trait::async_trait;
use cairn_common::{Error, Result, TableMeta};
use cairn_rpc::{ClientOptions, RpcClient, connect};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use tonic::Code;

/// What the client did, for `stats` and tests.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RemoteCompactionStats {
    pub remote_jobs: u64,
    pub retries: u64,
    pub fallbacks: u64,
}

pub struct GrpcCompactor {
    rpc: RpcClient,
    fallback: Option<Arc<dyn Compactor>>,
    remote_jobs: AtomicU64,
    retries: AtomicU64,
    fallbacks: AtomicU64,
}

impl GrpcCompactor {
    /// A client of the compaction server at `opts.url`. `opts.timeout` bounds each wait for
    /// the job's progress, which the server reports while it works; a job may run for long.
    /// With a `fallback`, a job the server cannot take after `opts.retries` retries runs there.
    pub fn new(opts: ClientOptions, fallback: Option<Arc<dyn Compactor>>) -> Result<Self> {
        Ok(GrpcCompactor {
            rpc: connect("compaction", opts)?,
            fallback,
            remote_jobs: AtomicU64::new(0),
            retries: AtomicU64::new(0),
            fallbacks: AtomicU64::new(0),
        })
    }

    pub fn stats(&self) -> RemoteCompactionStats {
        RemoteCompactionStats {
            remote_jobs: self.remote_jobs.load(Ordering::Relaxed),
            retries: self.retries.load(Ordering::Relaxed),
            fallbacks: self.fallbacks.load(Ordering::Relaxed),
        }
    }
}

#[async_trait]
impl Compactor for GrpcCompactor {
    async fn compact(&self, job: CompactionJob) -> Result<Vec<TableMeta>> {
        // A node that stops answering may still be working: each attempt, and the fallback,
        // writes ids of its own, so a late writer never overwrites what another installed.
        let attempts = self.rpc.opts.retries as usize + 1 + usize::from(self.fallback.is_some());
        let mut slices = id_slices(&job.output_ids, attempts).into_iter();
        let max = self.rpc.opts.max_message_bytes;
        let mut attempt = 0;
        let unreachable = loop {
            let mut msg = Job::from(&job);
            msg.output_ids = slices.next().unwrap_or_default();
            let mut c = CompactionClient::new(self.rpc.channel.clone())
                .max_decoding_message_size(max)
                .max_encoding_message_size(max);
            let outcome = match c.compact(self.rpc.request(msg)).await {
                Ok(progress) => self.rpc.progress_status(progress.into_inner()).await,
                Err(s) => Err(s),
            };
            match outcome {
                Ok(out) => {
                    self.remote_jobs.fetch_add(1, Ordering::Relaxed);
                    return Ok(out.tables.into_iter().map(Into::into).collect());
                }
                // A node that is down or too slow: try again, then elsewhere.
                Err(s)
                    if matches!(
                        s.code(),
                        Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled
                    ) =>
                {
                    if attempt >= self.rpc.opts.retries {
                        break self.rpc.error("compact", s);
                    }
                    attempt += 1;
                    self.retries.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(who = %self.rpc.who(), attempt, "compaction job: {}; retrying", s.message());
                    tokio::time::sleep(self.rpc.opts.backoff(attempt)).await;
                }
                Err(s) => return Err(self.rpc.error("compact", s)),
            }
        };
        match &self.fallback {
            Some(local) => {
                self.fallbacks.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(error = %unreachable, "running the compaction job locally");
                let mut job = job;
                job.output_ids = slices.next_back().unwrap_or_default();
                local.compact(job).await.map_err(|e| {
                    Error::component(
                        "compaction (local fallback)",
                        format!("{e}; the remote attempt failed with: {unreachable}"),
                    )
                })
            }
            None => Err(unreachable),
        }
    }
}

/// `ids` cut into `n` runs as even as they go, each of at least one id while there are
/// enough (a compactor's last id takes whatever is left, so fewer ids only make bigger tables).
fn id_slices(ids: &[u64], n: usize) -> Vec<Vec<u64>> {
    let n = n.clamp(1, ids.len().max(1));
    (0..n)
        .map(|i| ids[i * ids.len() / n..(i + 1) * ids.len() / n].to_vec())
        .collect()
}
