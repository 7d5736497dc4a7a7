//! Serves local journals, one per database the calls name. Appends from one stream run
//! concurrently, so the journal's group commit batches them; each is acknowledged when
//! durable. On shutdown a stream stops taking new records, acknowledges those it took, and
//! ends.

use super::pb::journal_server::{Journal as JournalRpc, JournalServer};
use super::pb::{
    AppendAcks, AppendBatch, AppendRequest, AppendResponse, ClaimRequest, ClaimResponse, Record,
    ReplayChunk, ReplayRequest, TruncateRequest, WaitPastRequest,
};
use crate::{Journal, JournalClaim};
use cairn_rpc::{Databases, ServerAuth, ServerOptions, StatusStream, chunked, pb::Empty, status};
use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt};
use std::sync::Arc;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::service::interceptor::InterceptedService;
use tonic::{Request, Response, Status, Streaming};

/// Replay chunks are cut at about this many payload bytes.
const CHUNK_BYTES: usize = 256 << 10;

/// What one append stream may have in flight in the journal: past either bound the server
/// stops reading the stream until appends complete, and HTTP/2 flow control holds the client
/// back. Far above what group commit needs (a few hundred writers), far below memory.
pub(crate) const MAX_INFLIGHT_RECORDS: usize = 16 << 10;
pub(crate) const MAX_INFLIGHT_BYTES: usize = 64 << 20;

/// The longest a `WaitPast` call is held, whatever its client asks: a long poll ties up a
/// request slot, and a client that wants longer asks again.
pub(crate) const MAX_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

pub struct JournalService {
    dbs: Arc<Databases<dyn Journal>>,
    shutdown: watch::Receiver<bool>,
}

/// The service for one journal (the `default` database), behind the token check and the
/// message size bounds. Setting `shutdown` to true ends every append stream after its
/// accepted records are acknowledged.
pub fn journal_service(
    journal: Arc<dyn Journal>,
    opts: &ServerOptions,
    shutdown: watch::Receiver<bool>,
) -> InterceptedService<JournalServer<JournalService>, ServerAuth> {
    journal_service_for(Arc::new(Databases::single(journal)), opts, shutdown)
}

/// The service for every database `dbs` opens.
pub fn journal_service_for(
    dbs: Arc<Databases<dyn Journal>>,
    opts: &ServerOptions,
    shutdown: watch::Receiver<bool>,
) -> InterceptedService<JournalServer<JournalService>, ServerAuth> {
    let max = opts.max_message_bytes();
    InterceptedService::new(
        JournalServer::new(JournalService { dbs, shutdown })
            .max_decoding_message_size(max)
            .max_encoding_message_size(max),
        ServerAuth::new(opts),
    )
}

#[tonic::async_trait]
impl JournalRpc for JournalService {
    type AppendStream = StatusStream<AppendAcks>;
    type ReplayStream = StatusStream<ReplayChunk>;

    async fn append(
        &self,
        req: Request<Streaming<AppendBatch>>,
    ) -> Result<Response<Self::AppendStream>, Status> {
        let (_, journal) = self.dbs.of(&req, true).await?;
        let mut input = req.into_inner();
        let mut shutdown = self.shutdown.clone();
        let (tx, rx) = mpsc::channel(4096);
        tokio::spawn(async move {
            let mut inflight = FuturesUnordered::new();
            let mut inflight_bytes = 0usize;
            let mut accepting = !*shutdown.borrow();
            loop {
                tokio::select! {
                    Some((first, bytes)) = inflight.next(), if !inflight.is_empty() => {
                        // Every acknowledgement ready now goes in one message.
                        inflight_bytes -= bytes;
                        let mut acks = vec![first];
                        while let Some(Some((more, bytes))) = inflight.next().now_or_never() {
                            inflight_bytes -= bytes;
                            acks.push(more);
                        }
                        // If the client left, the appends it sent still complete.
                        let _ = tx.send(Ok(AppendAcks { acks })).await;
                    }
                    msg = input.message(), if accepting
                        && inflight.len() < MAX_INFLIGHT_RECORDS
                        && inflight_bytes < MAX_INFLIGHT_BYTES => match msg {
                        Ok(Some(AppendBatch { records })) => {
                            for AppendRequest { id, payload, epoch } in records {
                                let journal = journal.clone();
                                let bytes = payload.len();
                                inflight_bytes += bytes;
                                inflight.push(async move {
                                    let ack = match journal.append(epoch, payload).await {
                                        Ok(lsn) => AppendResponse { id, lsn, error_code: 0, error: String::new() },
                                        Err(e) => {
                                            let s = status(e);
                                            AppendResponse { id, lsn: 0, error_code: s.code() as u32, error: s.message().to_string() }
                                        }
                                    };
                                    (ack, bytes)
                                });
                            }
                        }
                        Ok(None) => accepting = false,
                        Err(e) => {
                            tracing::debug!(error = %e, "journal append stream broke");
                            accepting = false;
                        }
                    },
                    _ = shutdown.changed(), if accepting => accepting = !*shutdown.borrow(),
                    else => break,
                }
                if !accepting && inflight.is_empty() {
                    break;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn replay(
        &self,
        req: Request<ReplayRequest>,
    ) -> Result<Response<Self::ReplayStream>, Status> {
        let (_, journal) = self.dbs.of(&req, false).await?;
        let records = journal
            .replay(req.into_inner().from)
            .await
            .map_err(status)?;
        Ok(Response::new(chunked(
            records,
            CHUNK_BYTES,
            |r| r.payload.len() + 16,
            |records| ReplayChunk {
                records: records
                    .into_iter()
                    .map(|r| Record {
                        lsn: r.lsn,
                        payload: r.payload,
                    })
                    .collect(),
            },
        )))
    }

    async fn truncate(&self, req: Request<TruncateRequest>) -> Result<Response<Empty>, Status> {
        let (_, journal) = self.dbs.of(&req, true).await?;
        journal
            .truncate(req.into_inner().upto)
            .await
            .map_err(status)?;
        Ok(Response::new(Empty {}))
    }

    async fn wait_past(&self, req: Request<WaitPastRequest>) -> Result<Response<Empty>, Status> {
        let (_, journal) = self.dbs.of(&req, false).await?;
        let r = req.into_inner();
        let limit = std::time::Duration::from_millis(r.limit_ms).min(MAX_WAIT);
        let mut shutdown = self.shutdown.clone();
        // A server shutting down answers at once: the replica asks again elsewhere or later.
        tokio::select! {
            waited = journal.wait_past(r.lsn, limit) => waited.map_err(status)?,
            _ = shutdown.wait_for(|&s| s) => {}
        }
        Ok(Response::new(Empty {}))
    }

    async fn claim(&self, req: Request<ClaimRequest>) -> Result<Response<ClaimResponse>, Status> {
        let (_, journal) = self.dbs.of(&req, true).await?;
        let r = req.into_inner();
        let claim = JournalClaim {
            database: r.database,
            epoch: r.epoch,
            flushed_lsn: r.flushed_lsn,
        };
        let c = journal.claim(&claim).await.map_err(status)?;
        Ok(Response::new(ClaimResponse {
            journal: c.journal,
            last_lsn: c.last_lsn,
        }))
    }
}
