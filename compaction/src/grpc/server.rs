//! Serves compactors, one per database the server's jobs name (the `cairn-database`
//! header, as journal and storage servers do), so one server runs the jobs of many databases.
//! A job is cancelled when its caller gives up (deadline or disconnect): the compactor drops
//! its partial outputs, so a retry elsewhere starts clean.

use super::pb::compaction_server::{Compaction as CompactionRpc, CompactionServer};
use super::pb::{Job, Outputs};
use crate::{CompactionJob, Compactor};
use cairn_rpc::pb::TableMeta as PbMeta;
use cairn_rpc::{
    Databases, ProgressMessage, ServerAuth, ServerOptions, StatusStream, heartbeat_interval,
    with_progress,
};
use std::sync::Arc;
use tonic::service::interceptor::InterceptedService;
use tonic::{Request, Response, Status};

pub struct CompactionService {
    dbs: Arc<Databases<dyn Compactor>>,
}

/// The service for one compactor (the `default` database), behind the token check and the
/// message size bounds.
pub fn compaction_service(
    compactor: Arc<dyn Compactor>,
    opts: &ServerOptions,
) -> InterceptedService<CompactionServer<CompactionService>, ServerAuth> {
    compaction_service_for(Arc::new(Databases::single(compactor)), opts)
}

/// The service for the compactors of many databases, each opened on its first job.
pub fn compaction_service_for(
    dbs: Arc<Databases<dyn Compactor>>,
    opts: &ServerOptions,
) -> InterceptedService<CompactionServer<CompactionService>, ServerAuth> {
    let max = opts.max_message_bytes();
    InterceptedService::new(
        CompactionServer::new(CompactionService { dbs })
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
            operators: None,
        }
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
        let (_, compactor) = self.dbs.of(&req, true).await?;
        let every = heartbeat_interval(&req);
        let job = CompactionJob::from(req.into_inner());
        if job.inputs.is_empty() || job.output_ids.is_empty() {
            return Err(Status::invalid_argument(
                "a compaction job needs inputs and output ids",
            ));
        }
        Ok(Response::new(with_progress(every, async move {
            let started = std::time::Instant::now();
            let outputs = compactor.compact(job).await?;
            tracing::info!(
                outputs = outputs.len(),
                ms = started.elapsed().as_millis() as u64,
                "compaction job done"
            );
            Ok(Outputs {
                tables: outputs.iter().map(PbMeta::from).collect(),
                done: true,
            })
        })))
    }
}
