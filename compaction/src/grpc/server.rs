//! Serves compactors, one per database the server's jobs name (the `cairn-database`
//! header, as journal and storage servers do), so one server runs the jobs of many databases.
//! A job is cancelled when its caller gives up (deadline or disconnect): the compactor drops
//! its partial outputs, so a retry elsewhere starts clean.

use super::pb::compaction_server::{Compaction as CompactionRpc, CompactionServer};
use super::pb::{Busy, Job, Outputs, Shared};
use crate::{CompactionJob, Compactor};
use cairn_common::Error;
use cairn_filestore::{TablesAt, Within};
use cairn_rpc::pb::Empty;
use cairn_rpc::pb::TableMeta as PbMeta;
use cairn_rpc::{
    Databases, ProgressMessage, ServerAuth, ServerOptions, StatusStream, heartbeat_interval,
    with_progress,
};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use tokio::sync::Semaphore;
use tonic::service::interceptor::InterceptedService;
use tonic::{Request, Response, Status};

pub struct CompactionService {
    dbs: Arc<Databases<dyn Compactor>>,
    /// A permit per job that may run at once; jobs beyond wait for one, counted in `queued`.
    slots: Arc<Semaphore>,
    queued: Arc<AtomicU32>,
}

/// The service for one compactor (the `default` database), behind the token check and the
/// message size bounds.
pub fn compaction_service(
    compactor: Arc<dyn Compactor>,
    opts: &ServerOptions,
) -> InterceptedService<CompactionServer<CompactionService>, ServerAuth> {
    compaction_service_for(Arc::new(Databases::single(compactor)), opts, DEFAULT_SLOTS)
}

/// Jobs a server runs at once unless told otherwise.
pub const DEFAULT_SLOTS: usize = 2;

/// The service for the compactors of many databases, each opened on its first job.
/// `slots` jobs run at once; more wait their turn.
pub fn compaction_service_for(
    dbs: Arc<Databases<dyn Compactor>>,
    opts: &ServerOptions,
    slots: usize,
) -> InterceptedService<CompactionServer<CompactionService>, ServerAuth> {
    let max = opts.max_message_bytes();
    let service = CompactionService {
        dbs,
        slots: Arc::new(Semaphore::new(slots.max(1))),
        queued: Arc::default(),
    };
    InterceptedService::new(
        CompactionServer::new(service)
            .max_decoding_message_size(max)
            .max_encoding_message_size(max),
        ServerAuth::new(opts),
    )
}

impl From<&CompactionJob> for Job {
    fn from(j: &CompactionJob) -> Self {
        Job {
            inputs: j.inputs.iter().map(PbMeta::from).collect(),
            output_level: j.output_level,
            output_ids: j.output_ids.clone(),
            oldest_snapshot: j.oldest_snapshot,
            drop_tombstones: j.drop_tombstones,
            target_table_bytes: j.target_table_bytes,
            merge_operator: j.merge_operator.clone(),
            compaction_filter: j.compaction_filter.clone(),
            now_ms: j.now_ms,
            shared: j
                .shared
                .iter()
                .map(|s| Shared {
                    reference: s.reference.clone(),
                    ids: s.ids.clone(),
                    lower: s.within.lower.clone().map(Into::into),
                    upper: s.within.upper.clone().map(Into::into),
                })
                .collect(),
            lower: j.lower.clone(),
            upper: j.upper.clone(),
        }
    }
}

impl From<Job> for CompactionJob {
    fn from(j: Job) -> Self {
        CompactionJob {
            inputs: j.inputs.into_iter().map(Into::into).collect(),
            output_level: j.output_level,
            output_ids: j.output_ids,
            oldest_snapshot: j.oldest_snapshot,
            drop_tombstones: j.drop_tombstones,
            target_table_bytes: j.target_table_bytes,
            merge_operator: j.merge_operator,
            compaction_filter: j.compaction_filter,
            now_ms: j.now_ms,
            shared: j
                .shared
                .into_iter()
                .map(|s| TablesAt {
                    reference: s.reference,
                    ids: s.ids,
                    within: Within {
                        lower: s.lower.map(Vec::from),
                        upper: s.upper.map(Vec::from),
                    },
                })
                .collect(),
            lower: j.lower,
            upper: j.upper,
            operators: None,
        }
    }
}

/// What a compaction server reports, per database: jobs waiting for a slot and running (the
/// queue depth and the slots in use), jobs done and the bytes they wrote.
struct ServerMetrics {
    queued: metrics::Gauge,
    running: metrics::Gauge,
    jobs: metrics::Counter,
    written: metrics::Counter,
}

impl ServerMetrics {
    fn of(database: &str) -> Self {
        let l = [("database", database.to_string())];
        ServerMetrics {
            queued: metrics::gauge!("cairn_compaction_server_queued_jobs", &l),
            running: metrics::gauge!("cairn_compaction_server_running_jobs", &l),
            jobs: metrics::counter!("cairn_compaction_server_jobs_total", &l),
            written: metrics::counter!("cairn_compaction_server_written_bytes_total", &l),
        }
    }
}

/// A job counted in a gauge (and in the server's own count of waiting jobs, for `Load`)
/// while it lives: a job whose client went away, its work dropped, stops counting too.
struct Gauged<'a> {
    count: Option<&'a AtomicU32>,
    gauge: &'a metrics::Gauge,
}

impl<'a> Gauged<'a> {
    fn up(count: Option<&'a AtomicU32>, gauge: &'a metrics::Gauge) -> Self {
        if let Some(c) = count {
            c.fetch_add(1, Ordering::Relaxed);
        }
        gauge.increment(1.0);
        Gauged { count, gauge }
    }
}

impl Drop for Gauged<'_> {
    fn drop(&mut self) {
        if let Some(c) = self.count {
            c.fetch_sub(1, Ordering::Relaxed);
        }
        self.gauge.decrement(1.0);
    }
}

impl ProgressMessage for Outputs {
    fn heartbeat() -> Self {
        Outputs {
            tables: Vec::new(),
            done: false,
        }
    }

    fn is_done(&self) -> bool {
        self.done
    }
}

#[tonic::async_trait]
impl CompactionRpc for CompactionService {
    type CompactStream = StatusStream<Outputs>;

    async fn compact(&self, req: Request<Job>) -> Result<Response<Self::CompactStream>, Status> {
        let (database, compactor) = self.dbs.of(&req, true).await?;
        let every = heartbeat_interval(&req);
        let job = CompactionJob::from(req.into_inner());
        if job.inputs.is_empty() || job.output_ids.is_empty() {
            return Err(Status::invalid_argument(
                "a compaction job needs inputs and output ids",
            ));
        }
        let (slots, queued) = (self.slots.clone(), self.queued.clone());
        let m = ServerMetrics::of(&database);
        Ok(Response::new(with_progress(every, async move {
            let waiting = Gauged::up(Some(&queued), &m.queued);
            let permit = slots.acquire_owned().await;
            drop(waiting);
            let _permit = permit.map_err(|_| Error::Closed)?;
            let running = Gauged::up(None, &m.running);
            let started = std::time::Instant::now();
            let outputs = compactor.compact(job).await?;
            drop(running);
            let written: u64 = outputs.iter().map(|t| t.size).sum();
            m.jobs.increment(1);
            m.written.increment(written);
            tracing::info!(
                %database,
                outputs = outputs.len(),
                bytes = written,
                ms = started.elapsed().as_millis() as u64,
                "compaction job done"
            );
            Ok(Outputs {
                tables: outputs.iter().map(PbMeta::from).collect(),
                done: true,
            })
        })))
    }

    async fn load(&self, _req: Request<Empty>) -> Result<Response<Busy>, Status> {
        Ok(Response::new(Busy {
            free_slots: self.slots.available_permits() as u32,
            queued: self.queued.load(Ordering::Relaxed),
        }))
    }
}
