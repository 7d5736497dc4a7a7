//! `GrpcCompactor`: a client of one compaction server or of a pool of them. Compaction is
//! background work: it is never lost and never applied twice. The engine installs a job's
//! outputs only when `compact` returns them. Each attempt at a job (on one server, on the next,
//! in a later round, or the local fallback) writes table ids of its own, cut from the job's:
//! an attempt given up on may still finish on a node that stopped answering, and then writes
//! tables no one installs: the engine deletes what such attempts wrote once the job is done
//! (after its grace period), and the database what they write later still when it next opens
//! (reserved ids the manifest never named). A call whose stream breaks under it (the server's
//! process died) counts as the server being down, not as its answer.

use super::pb::Job;
use super::pb::compaction_client::CompactionClient;
use crate::{CompactionJob, Compactor, Placement};
use async_trait::async_trait;
use cairn_common::{Error, Result, TableId, TableMeta};
use cairn_rpc::{ClientOptions, RpcClient, connect};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use tonic::Code;

/// What the client did, for `stats` and tests.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RemoteCompactionStats {
    pub remote_jobs: u64,
    pub retries: u64,
    pub fallbacks: u64,
}

pub struct GrpcCompactor {
    /// The compaction servers jobs may go to: each job to the least busy that answers.
    workers: Vec<RpcClient>,
    /// Jobs this client has running on each worker. A server's own count misses a job sent
    /// but not arrived yet, so the parts of one job asking at once would all pick the same
    /// idle server; this spreads them.
    running: Vec<AtomicU32>,
    /// Held while a job sorts the workers and counts its pick.
    picking: parking_lot::Mutex<()>,
    /// The attempts running now, for `placements`.
    placed: parking_lot::Mutex<Vec<Placement>>,
    /// `cairn_compaction_jobs_running{worker}`, one per worker.
    running_gauges: Vec<metrics::Gauge>,
    reassignments: metrics::Counter,
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
        Self::pool(vec![opts], fallback)
    }

    /// A client of several compaction servers: a job goes to the least busy (fewest queued
    /// jobs, then most free slots), and to the next when one is down or stops answering
    /// within its deadline; `retries` rounds over all of them, then the `fallback`.
    pub fn pool(workers: Vec<ClientOptions>, fallback: Option<Arc<dyn Compactor>>) -> Result<Self> {
        if workers.is_empty() {
            return Err(Error::InvalidArgument(
                "a compaction pool needs at least one server".into(),
            ));
        }
        Ok(GrpcCompactor {
            running: workers.iter().map(|_| AtomicU32::new(0)).collect(),
            picking: parking_lot::Mutex::new(()),
            placed: Default::default(),
            running_gauges: workers
                .iter()
                .map(
                    |o| metrics::gauge!("cairn_compaction_jobs_running", "worker" => o.url.clone()),
                )
                .collect(),
            reassignments: metrics::counter!("cairn_compaction_reassignments_total"),
            workers: workers
                .into_iter()
                .map(|o| connect("compaction", o))
                .collect::<Result<_>>()?,
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

    fn client(&self, w: &RpcClient) -> CompactionClient<cairn_rpc::RpcChannel> {
        let max = w.opts.max_message_bytes;
        CompactionClient::new(w.channel.clone())
            .max_decoding_message_size(max)
            .max_encoding_message_size(max)
    }

    /// The workers' indexes, least busy first (fewest of this client's jobs, then fewest
    /// queued, then most free slots); those that do not say how busy they are, last. The
    /// first is counted as running a job of this client's already (the guard returned), and
    /// under a lock with the sorting: jobs picking at the same moment see each other's pick.
    async fn by_load(&self) -> (Vec<usize>, Running<'_>) {
        if self.workers.len() == 1 {
            return (vec![0], Running::on(self, 0));
        }
        let asks = self.workers.iter().map(|w| async move {
            let mut req = w.request(cairn_rpc::pb::Empty {});
            req.set_timeout(w.opts.connect_timeout.min(w.opts.timeout));
            match self.client(w).load(req).await {
                Ok(b) => {
                    let b = b.into_inner();
                    (0, i64::from(b.queued) - i64::from(b.free_slots))
                }
                Err(_) => (1, 0),
            }
        });
        let scores = futures::future::join_all(asks).await;
        let mut order: Vec<usize> = (0..self.workers.len()).collect();
        let _picking = self.picking.lock();
        order.sort_by_key(|&i| {
            let (down, busy) = scores[i];
            (down, self.running[i].load(Ordering::Relaxed), busy)
        });
        let first = Running::on(self, order[0]);
        (order, first)
    }
}

#[async_trait]
impl Compactor for GrpcCompactor {
    fn placements(&self) -> Vec<Placement> {
        self.placed.lock().clone()
    }

    async fn compact(&self, job: CompactionJob) -> Result<Vec<TableMeta>> {
        // A node that stops answering may still be working: each attempt, and the fallback,
        // writes ids of its own, so a late writer never overwrites what another installed.
        let rounds = self.workers[0].opts.retries as usize + 1;
        let attempts = rounds * self.workers.len() + usize::from(self.fallback.is_some());
        let mut slices = id_slices(&job.output_ids, attempts);
        let fallback_ids = match self.fallback {
            Some(_) if slices.len() > 1 => slices.pop(),
            _ => None,
        };
        let mut slices = slices.into_iter();
        let mut unreachable = None;
        'rounds: for round in 0..rounds {
            if round > 0 {
                self.retries.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(self.workers[0].opts.backoff(round as u32)).await;
            }
            let (order, first) = self.by_load().await;
            let mut first = Some(first);
            for i in order {
                let Some(ids) = slices.next() else {
                    break 'rounds;
                };
                let w = &self.workers[i];
                let mut msg = Job::from(&job);
                let first_id = ids.first().copied();
                msg.output_ids = ids;
                let outcome = {
                    let running = first.take().unwrap_or_else(|| Running::on(self, i));
                    let _placed = first_id.map(|id| running.placed(id));
                    match self.client(w).compact(w.request(msg)).await {
                        Ok(progress) => w.progress_status(progress.into_inner()).await,
                        Err(s) => Err(cairn_rpc::lost_server(s)),
                    }
                };
                match outcome {
                    Ok(out) => {
                        self.remote_jobs.fetch_add(1, Ordering::Relaxed);
                        return Ok(out.tables.into_iter().map(Into::into).collect());
                    }
                    // A node that is down or too slow: try another, then again, then here.
                    Err(s)
                        if matches!(
                            s.code(),
                            Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled
                        ) =>
                    {
                        tracing::warn!(who = %w.who(), round, "compaction job: {}; trying elsewhere", s.message());
                        self.reassignments.increment(1);
                        unreachable = Some(w.error("compact", s));
                    }
                    Err(s) => return Err(w.error("compact", s)),
                }
            }
        }
        let unreachable = unreachable.unwrap_or_else(|| {
            Error::component("compaction", "no table ids left for another attempt")
        });
        match (&self.fallback, fallback_ids) {
            (Some(local), Some(ids)) => {
                self.fallbacks.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(error = %unreachable, "running the compaction job locally");
                let mut job = job;
                job.output_ids = ids;
                local.compact(job).await.map_err(|e| {
                    Error::component(
                        "compaction (local fallback)",
                        format!("{e}; the remote attempt failed with: {unreachable}"),
                    )
                })
            }
            _ => Err(unreachable),
        }
    }
}

/// One job counted as running on worker `i` while it lives (a job given up on, its future
/// dropped, stops counting too).
struct Running<'a> {
    pool: &'a GrpcCompactor,
    i: usize,
}

impl<'a> Running<'a> {
    fn on(pool: &'a GrpcCompactor, i: usize) -> Self {
        pool.running[i].fetch_add(1, Ordering::Relaxed);
        pool.running_gauges[i].increment(1.0);
        Running { pool, i }
    }

    /// Lists the attempt whose first output id is `first_id` in `placements` while the
    /// returned guard lives.
    fn placed(&self, first_id: TableId) -> Placed<'a> {
        let worker = self.pool.workers[self.i].opts.url.clone();
        self.pool.placed.lock().push(Placement { first_id, worker });
        Placed {
            pool: self.pool,
            first_id,
        }
    }
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.pool.running[self.i].fetch_sub(1, Ordering::Relaxed);
        self.pool.running_gauges[self.i].decrement(1.0);
    }
}

struct Placed<'a> {
    pool: &'a GrpcCompactor,
    first_id: TableId,
}

impl Drop for Placed<'_> {
    fn drop(&mut self) {
        self.pool
            .placed
            .lock()
            .retain(|p| p.first_id != self.first_id);
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
