//! Serves local shards: one (`cairn serve shard`), or those a node holds (`ShardHost`). Each
//! call must carry the identity its router expects; the first call to a data directory that is
//! no shard yet gives it that identity. A database no router has claimed also takes calls
//! without one (a single served database, `cairn --connect`).

use super::pb::shard_server::{Shard as ShardRpc, ShardServer};
use super::pb::{
    AggregateRequest, ArrowPiece, CheckpointRequest, CheckpointResponse, GetRequest, GetResponse,
    IdentifyResponse, ImportRequest, MultiGetRequest, MultiGetResponse, Pairs, QueryRequest,
    ScanRequest, ShardTag, StatsResponse, Tagged, WriteRequest, WriteResponse,
};
use super::{CHUNK_BYTES, pair_bytes, pairs_message, pairs_of};
use crate::cluster::ShardIdentity;
use crate::local::LocalShard;
use crate::shard::{CheckpointOp, ImportStream, Shard};
use bytes::Bytes;
use cairn_common::{BatchOp, EntryKind, Error, Result, ValueType, WriteBatch};
use cairn_rpc::pb::{AggregateState, Empty, Progress};
use cairn_rpc::{
    DEFAULT_DATABASE, ServerAuth, ServerOptions, StatusStream, check_access, chunked,
    counting_progress, decode_range, heartbeat_interval, status,
};
use cairn_sql::Fragment;
use futures::StreamExt;
use std::sync::Arc;
use tonic::service::interceptor::InterceptedService;
use tonic::{Request, Response, Status, Streaming};

/// Which local shard answers a call, by the identity the call carries.
pub trait ShardHost: Send + Sync + 'static {
    /// The shard `tag` names, or why this server does not serve it (`Error::Moved` when the
    /// caller's map is stale).
    fn shard_for(&self, tag: Option<ShardIdentity>) -> Result<Arc<LocalShard>>;
    /// What `Identify` answers.
    fn identity(&self) -> Option<ShardIdentity>;
}

/// A server of one shard: calls must carry its identity once it has one.
struct OneShard(Arc<LocalShard>);

impl ShardHost for OneShard {
    fn shard_for(&self, tag: Option<ShardIdentity>) -> Result<Arc<LocalShard>> {
        match (tag, self.0.identity()) {
            (Some(tag), _) => self.0.claim(tag)?,
            (None, None) => {}
            (None, Some(id)) => {
                return Err(Error::InvalidArgument(format!(
                    "this server's database is {id}: a call must say which shard it means (tag); Identify tells"
                )));
            }
        }
        Ok(self.0.clone())
    }

    fn identity(&self) -> Option<ShardIdentity> {
        self.0.identity()
    }
}

pub struct ShardService {
    host: Arc<dyn ShardHost>,
}

/// The service of one shard, behind the token check and the message size bounds.
pub fn shard_service(
    shard: Arc<LocalShard>,
    opts: &ServerOptions,
) -> InterceptedService<ShardServer<ShardService>, ServerAuth> {
    host_service(Arc::new(OneShard(shard)), opts)
}

/// The service of the shards `host` holds.
pub fn host_service(
    host: Arc<dyn ShardHost>,
    opts: &ServerOptions,
) -> InterceptedService<ShardServer<ShardService>, ServerAuth> {
    let max = opts.max_message_bytes();
    InterceptedService::new(
        ShardServer::new(ShardService { host })
            .max_decoding_message_size(max)
            .max_encoding_message_size(max),
        ServerAuth::new(opts),
    )
}

impl ShardService {
    fn shard(&self, tag: Option<ShardTag>) -> Result<Arc<LocalShard>, Status> {
        self.host.shard_for(tag.map(Into::into)).map_err(status)
    }
}

fn value_type(v: u32) -> Result<ValueType, Status> {
    ValueType::try_from(v).map_err(status)
}

#[tonic::async_trait]
impl ShardRpc for ShardService {
    type ScanStream = StatusStream<Pairs>;
    type QueryStream = StatusStream<ArrowPiece>;
    type ImportStream = StatusStream<Progress>;
    type FlushStream = StatusStream<Progress>;
    type CompactStream = StatusStream<Progress>;

    async fn identify(&self, req: Request<Empty>) -> Result<Response<IdentifyResponse>, Status> {
        check_access(&req, DEFAULT_DATABASE, false)?;
        Ok(Response::new(IdentifyResponse {
            tag: self.host.identity().map(ShardTag::from),
        }))
    }

    async fn claim(&self, req: Request<Tagged>) -> Result<Response<Empty>, Status> {
        check_access(&req, DEFAULT_DATABASE, true)?;
        self.shard(req.into_inner().tag)?;
        Ok(Response::new(Empty {}))
    }

    async fn get(&self, req: Request<GetRequest>) -> Result<Response<GetResponse>, Status> {
        check_access(&req, DEFAULT_DATABASE, false)?;
        let req = req.into_inner();
        let shard = self.shard(req.tag)?;
        let v = shard.get(&req.key).await.map_err(status)?;
        Ok(Response::new(GetResponse {
            found: v.is_some(),
            value: v.unwrap_or_default(),
        }))
    }

    async fn multi_get(
        &self,
        req: Request<MultiGetRequest>,
    ) -> Result<Response<MultiGetResponse>, Status> {
        check_access(&req, DEFAULT_DATABASE, false)?;
        let req = req.into_inner();
        let shard = self.shard(req.tag)?;
        let got = shard.multi_get(req.keys).await.map_err(status)?;
        let found = got.iter().map(Option::is_some).collect();
        let values = got.into_iter().flatten().collect();
        Ok(Response::new(MultiGetResponse { found, values }))
    }

    async fn write(&self, req: Request<WriteRequest>) -> Result<Response<WriteResponse>, Status> {
        check_access(&req, DEFAULT_DATABASE, true)?;
        let req = req.into_inner();
        let shard = self.shard(req.tag)?;
        if req.kinds.len() != req.keys.len() {
            return Err(Status::invalid_argument("a kind for every key"));
        }
        let mut batch = WriteBatch::new();
        let mut values = req.values.into_iter();
        for (key, kind) in req.keys.into_iter().zip(req.kinds) {
            let kind = u8::try_from(kind)
                .ok()
                .and_then(EntryKind::from_u8)
                .ok_or_else(|| Status::invalid_argument(format!("unknown write kind {kind}")))?;
            let value = match kind {
                EntryKind::Delete => Bytes::new(),
                _ => values.next().ok_or_else(|| {
                    Status::invalid_argument(
                        "a value (a range delete's end) for every write but a delete",
                    )
                })?,
            };
            batch.push(BatchOp { kind, key, value });
        }
        let seq = shard.write(batch).await.map_err(status)?;
        Ok(Response::new(WriteResponse { seq }))
    }

    async fn scan(&self, req: Request<ScanRequest>) -> Result<Response<Self::ScanStream>, Status> {
        check_access(&req, DEFAULT_DATABASE, false)?;
        let req = req.into_inner();
        let shard = self.shard(req.tag)?;
        let range = decode_range(req.range).map_err(status)?;
        let limit = (req.limit > 0).then_some(req.limit as usize);
        let pairs = shard.scan(range, limit).await.map_err(status)?;
        Ok(Response::new(chunked(
            pairs,
            CHUNK_BYTES,
            pair_bytes,
            pairs_message,
        )))
    }

    async fn aggregate(
        &self,
        req: Request<AggregateRequest>,
    ) -> Result<Response<AggregateState>, Status> {
        check_access(&req, DEFAULT_DATABASE, false)?;
        let req = req.into_inner();
        let shard = self.shard(req.tag)?;
        let range = decode_range(req.range).map_err(status)?;
        let state = shard
            .aggregate(range, value_type(req.value_type)?)
            .await
            .map_err(status)?;
        Ok(Response::new((&state).into()))
    }

    async fn query(
        &self,
        req: Request<QueryRequest>,
    ) -> Result<Response<Self::QueryStream>, Status> {
        check_access(&req, DEFAULT_DATABASE, false)?;
        let req = req.into_inner();
        let shard = self.shard(req.tag)?;
        let columns = serde_json::from_str(&req.columns_json)
            .map_err(|e| Status::invalid_argument(format!("columns_json: {e}")))?;
        let batches = shard
            .query(Fragment {
                sql: req.sql,
                columns,
            })
            .await
            .map_err(status)?;
        let pieces = cairn_sql::ipc::encode(batches)
            .map(|piece| piece.map(|ipc| ArrowPiece { ipc }).map_err(status));
        Ok(Response::new(Box::pin(pieces)))
    }

    async fn import(
        &self,
        req: Request<Streaming<ImportRequest>>,
    ) -> Result<Response<Self::ImportStream>, Status> {
        check_access(&req, DEFAULT_DATABASE, true)?;
        let every = heartbeat_interval(&req);
        let mut input = req.into_inner();
        let first = input
            .message()
            .await?
            .ok_or_else(|| Status::invalid_argument("empty import stream"))?;
        let shard = self.shard(first.tag)?;
        // The stream's batches, until the one marked finish; ending without it is an error,
        // so the shard does not load the tail of an import broken off.
        let batches =
            futures::stream::unfold((Some(first), Some(input)), |(pending, input)| async move {
                let mut input = input?;
                let msg = match pending {
                    Some(m) => m,
                    None => match input.message().await {
                        Ok(Some(m)) => m,
                        Ok(None) => {
                            return Some((
                                Err(Error::component(
                                    "import",
                                    "the stream ended before its finish: the client went away",
                                )),
                                (None, None),
                            ));
                        }
                        Err(s) => {
                            return Some((
                                Err(Error::component("import", s.message())),
                                (None, None),
                            ));
                        }
                    },
                };
                let batch = pairs_of(msg.pairs.unwrap_or_default());
                let next = if msg.finish { None } else { Some(input) };
                Some((batch, (None, next)))
            });
        let batches: ImportStream = Box::pin(
            batches.filter(|b| futures::future::ready(!matches!(b, Ok(v) if v.is_empty()))),
        );
        Ok(Response::new(counting_progress(every, async move {
            shard.import(batches).await
        })))
    }

    async fn flush(&self, req: Request<Tagged>) -> Result<Response<Self::FlushStream>, Status> {
        check_access(&req, DEFAULT_DATABASE, true)?;
        let every = heartbeat_interval(&req);
        let shard = self.shard(req.into_inner().tag)?;
        Ok(Response::new(counting_progress(every, async move {
            shard.flush().await.map(|()| 0)
        })))
    }

    async fn compact(&self, req: Request<Tagged>) -> Result<Response<Self::CompactStream>, Status> {
        check_access(&req, DEFAULT_DATABASE, true)?;
        let every = heartbeat_interval(&req);
        let shard = self.shard(req.into_inner().tag)?;
        Ok(Response::new(counting_progress(every, async move {
            shard.compact().await.map(|()| 0)
        })))
    }

    async fn stats(&self, req: Request<Tagged>) -> Result<Response<StatsResponse>, Status> {
        check_access(&req, DEFAULT_DATABASE, false)?;
        let shard = self.shard(req.into_inner().tag)?;
        let stats = shard.stats().await.map_err(status)?;
        let json = serde_json::to_string(&stats).map_err(|e| Status::internal(e.to_string()))?;
        Ok(Response::new(StatsResponse { json }))
    }

    async fn checkpoint(
        &self,
        req: Request<CheckpointRequest>,
    ) -> Result<Response<CheckpointResponse>, Status> {
        check_access(&req, DEFAULT_DATABASE, req.get_ref().op != 0)?;
        let r = req.into_inner();
        let shard = self.shard(r.tag)?;
        let op = match r.op {
            0 => CheckpointOp::List,
            1 => CheckpointOp::Create(r.name),
            2 => CheckpointOp::Delete(r.name),
            3 => CheckpointOp::Clone {
                name: r.name,
                into: r.into,
            },
            k => {
                return Err(Status::invalid_argument(format!(
                    "unknown checkpoint op {k}"
                )));
            }
        };
        let list = shard.checkpoint(op).await.map_err(status)?;
        let json = serde_json::to_string(&list).map_err(|e| Status::internal(e.to_string()))?;
        Ok(Response::new(CheckpointResponse { json }))
    }
}
