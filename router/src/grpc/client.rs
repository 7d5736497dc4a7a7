//! `GrpcShard`: a shard served by another process (`cairn serve shard`). Reads are retried
//! while the server is unavailable; writes are not (their outcome would be unknown), so a
//! dead shard is an error naming it once the deadline or the retries run out.

use super::pb::shard_client::ShardClient;
use super::pb::{
    AggregateRequest, CheckpointRequest, GetRequest, ImportRequest, MultiGetRequest, QueryRequest,
    ScanRequest, ShardTag, Tagged, WriteRequest,
};
use super::{CHUNK_BYTES, pair_bytes, pairs_message, pairs_of};
use crate::cluster::ShardIdentity;
use crate::shard::{CheckpointOp, ImportStream, PairStream, Shard};
use async_trait::async_trait;
use bytes::Bytes;
use cairn_common::{
    AggregateState, EntryKind, Error, KeyRange, Result, SeqNo, ValueType, WriteBatch,
};
use cairn_engine::{CheckpointInfo, DbStats};
use cairn_rpc::{ClientOptions, RpcChannel, RpcClient, connect};
use cairn_sql::{BatchStream, Fragment};
use futures::StreamExt;

pub struct GrpcShard {
    rpc: RpcClient,
    /// The identity calls carry; none for a database no router has claimed.
    tag: Option<ShardTag>,
    name: String,
}

impl GrpcShard {
    /// Shard `id` served at `opts.url`. Nothing is dialled until the first call.
    pub fn new(opts: ClientOptions, id: ShardIdentity) -> Result<GrpcShard> {
        let name = format!("shard {} at {}", id.index, opts.url);
        Ok(GrpcShard {
            rpc: connect(format!("shard {}", id.index), opts)?,
            tag: Some(id.into()),
            name,
        })
    }

    /// Whatever database the server at `opts.url` serves, as the identity it answers with:
    /// a client for a served database that knows only its URL (`cairn --connect`).
    pub async fn identified(opts: ClientOptions) -> Result<GrpcShard> {
        let name = format!("the server at {}", opts.url);
        let mut shard = GrpcShard {
            rpc: connect(name.clone(), opts)?,
            tag: None,
            name,
        };
        let r = shard
            .rpc
            .retry("identify", || {
                let mut c = shard.client();
                let req = shard.rpc.request(cairn_rpc::pb::Empty {});
                async move { c.identify(req).await }
            })
            .await?;
        shard.tag = r.into_inner().tag;
        Ok(shard)
    }

    fn client(&self) -> ShardClient<RpcChannel> {
        let max = self.rpc.opts.max_message_bytes;
        ShardClient::new(self.rpc.channel.clone())
            .max_decoding_message_size(max)
            .max_encoding_message_size(max)
    }

    fn tagged(&self) -> Tagged {
        Tagged { tag: self.tag }
    }
}

#[async_trait]
impl Shard for GrpcShard {
    fn name(&self) -> &str {
        &self.name
    }

    fn is_remote(&self) -> bool {
        true
    }

    async fn check(&self) -> Result<()> {
        self.rpc
            .retry("claim", || {
                let mut c = self.client();
                let req = self.rpc.request(self.tagged());
                async move { c.claim(req).await }
            })
            .await?;
        Ok(())
    }

    async fn get(&self, key: &[u8]) -> Result<Option<Bytes>> {
        let r = self
            .rpc
            .retry("get", || {
                let mut c = self.client();
                let req = self.rpc.request(GetRequest {
                    tag: self.tag,
                    key: Bytes::copy_from_slice(key),
                });
                async move { c.get(req).await }
            })
            .await?
            .into_inner();
        Ok(r.found.then_some(r.value))
    }

    async fn multi_get(&self, keys: Vec<Bytes>) -> Result<Vec<Option<Bytes>>> {
        let n = keys.len();
        let r = self
            .rpc
            .retry("multi_get", || {
                let mut c = self.client();
                let req = self.rpc.request(MultiGetRequest {
                    tag: self.tag,
                    keys: keys.clone(),
                });
                async move { c.multi_get(req).await }
            })
            .await?
            .into_inner();
        let found_count = r.found.iter().filter(|f| **f).count();
        if r.found.len() != n || r.values.len() != found_count {
            return Err(Error::component(
                self.rpc.who(),
                format!(
                    "multi_get: {n} keys asked, {} answered with {} values",
                    r.found.len(),
                    r.values.len()
                ),
            ));
        }
        let mut values = r.values.into_iter();
        Ok(r.found
            .into_iter()
            .map(|f| if f { values.next() } else { None })
            .collect())
    }

    async fn write(&self, batch: WriteBatch) -> Result<SeqNo> {
        let n = batch.len();
        let mut req = WriteRequest {
            tag: self.tag,
            keys: Vec::with_capacity(n),
            kinds: Vec::with_capacity(n),
            values: Vec::with_capacity(n),
        };
        for op in batch.into_ops() {
            req.keys.push(op.key);
            req.kinds.push(u32::from(op.kind.as_u8()));
            if op.kind != EntryKind::Delete {
                req.values.push(op.value);
            }
        }
        let r = self
            .client()
            .write(self.rpc.request(req))
            .await
            .map_err(|s| {
                if cairn_rpc::never_sent(&s) {
                    // Refused before a byte was sent: certainly not applied.
                    Error::Unreached(format!("{}: write ({})", self.name, s.message()))
                } else {
                    // A connection that broke under the call: its outcome is unknown.
                    self.rpc.error("write", cairn_rpc::lost_server(s))
                }
            })?;
        Ok(r.into_inner().seq)
    }

    async fn scan(&self, range: KeyRange, limit: Option<usize>) -> Result<PairStream> {
        let range = cairn_rpc::pb::KeyRange::from(&range);
        let chunks = self
            .rpc
            .retry("scan", || {
                let mut c = self.client();
                let req = self.rpc.request(ScanRequest {
                    tag: self.tag,
                    range: Some(range.clone()),
                    limit: limit.map_or(0, |l| l as u64),
                });
                async move { c.scan(req).await }
            })
            .await?
            .into_inner();
        Ok(self.rpc.unchunk("scan", chunks, pairs_of))
    }

    async fn query(&self, fragment: Fragment) -> Result<BatchStream> {
        let columns_json = serde_json::to_string(&fragment.columns)
            .map_err(|e| Error::InvalidArgument(format!("the value columns: {e}")))?;
        let pieces = self
            .rpc
            .retry("query", || {
                let mut c = self.client();
                let req = self.rpc.request(QueryRequest {
                    tag: self.tag,
                    sql: fragment.sql.clone(),
                    columns_json: columns_json.clone(),
                });
                async move { c.query(req).await }
            })
            .await?
            .into_inner();
        let pieces = self.rpc.unchunk("query", pieces, |p| Ok(vec![p.ipc]));
        Ok(cairn_sql::ipc::decode(pieces))
    }

    async fn aggregate(&self, range: KeyRange, value_type: ValueType) -> Result<AggregateState> {
        let range = cairn_rpc::pb::KeyRange::from(&range);
        let r = self
            .rpc
            .retry("aggregate", || {
                let mut c = self.client();
                let req = self.rpc.request(AggregateRequest {
                    tag: self.tag,
                    range: Some(range.clone()),
                    value_type: value_type.into(),
                });
                async move { c.aggregate(req).await }
            })
            .await?
            .into_inner();
        AggregateState::try_from(r)
    }

    async fn import(&self, mut batches: ImportStream) -> Result<u64> {
        // A failure of the input is kept aside and the request stream ended without its
        // finish, so the server drops the tail; the caller gets the input's error.
        let (tx, rx) = tokio::sync::mpsc::channel::<ImportRequest>(2);
        let tag = self.tag;
        let feed = tokio::spawn(async move {
            let first = ImportRequest {
                tag,
                pairs: None,
                finish: false,
            };
            if tx.send(first).await.is_err() {
                return Ok(());
            }
            while let Some(batch) = batches.next().await {
                for chunk in rechunk(batch?) {
                    let msg = ImportRequest {
                        tag: None,
                        pairs: Some(pairs_message(chunk)),
                        finish: false,
                    };
                    if tx.send(msg).await.is_err() {
                        return Ok(());
                    }
                }
            }
            let last = ImportRequest {
                tag: None,
                pairs: None,
                finish: true,
            };
            let _ = tx.send(last).await;
            Ok::<(), Error>(())
        });
        // The call deadline bounds each wait for the server's progress, not the import: the
        // server reports while it reads and while it builds tables.
        let requests = tokio_stream::wrappers::ReceiverStream::new(rx);
        let loaded = match self.client().import(self.rpc.request(requests)).await {
            Ok(progress) => self
                .rpc
                .progress("import", progress.into_inner())
                .await
                .map(|p| p.count),
            Err(s) => Err(self.rpc.error("import", s)),
        };
        if loaded.is_err() {
            // Whatever is still queued would go nowhere.
            feed.abort();
        }
        match feed.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(e),
            Err(e) if e.is_cancelled() => {}
            Err(e) => return Err(Error::component("import input", e)),
        }
        loaded
    }

    async fn flush(&self) -> Result<()> {
        let progress = self
            .client()
            .flush(self.rpc.request(self.tagged()))
            .await
            .map_err(|s| self.rpc.error("flush", s))?;
        self.rpc.progress("flush", progress.into_inner()).await?;
        Ok(())
    }

    async fn compact(&self) -> Result<()> {
        let progress = self
            .client()
            .compact(self.rpc.request(self.tagged()))
            .await
            .map_err(|s| self.rpc.error("compact", s))?;
        self.rpc.progress("compact", progress.into_inner()).await?;
        Ok(())
    }

    async fn stats(&self) -> Result<DbStats> {
        let r = self
            .rpc
            .retry("stats", || {
                let mut c = self.client();
                let req = self.rpc.request(self.tagged());
                async move { c.stats(req).await }
            })
            .await?
            .into_inner();
        serde_json::from_str(&r.json)
            .map_err(|e| Error::component(self.rpc.who(), format!("stats: {e}")))
    }

    async fn checkpoint(&self, op: CheckpointOp) -> Result<Vec<CheckpointInfo>> {
        let (code, name, into) = match op {
            CheckpointOp::List => (0, String::new(), String::new()),
            CheckpointOp::Create(name) => {
                // The flush, which may be long, under a deadline on its progress.
                self.flush().await?;
                (1, name, String::new())
            }
            CheckpointOp::Delete(name) => (2, name, String::new()),
            CheckpointOp::Clone { name, into } => (3, name, into),
        };
        let req = CheckpointRequest {
            tag: self.tag,
            op: code,
            name,
            into,
        };
        // Not retried: a delete whose answer was lost would fail again as "no such
        // checkpoint".
        let r = self
            .client()
            .checkpoint(self.rpc.request(req))
            .await
            .map_err(|s| self.rpc.error("checkpoint", s))?
            .into_inner();
        serde_json::from_str(&r.json)
            .map_err(|e| Error::component(self.rpc.who(), format!("checkpoint: {e}")))
    }

    async fn close(&self) -> Result<()> {
        Ok(())
    }
}

/// Splits a batch into messages of about `CHUNK_BYTES`, so no message outgrows the limit.
fn rechunk(batch: Vec<(Bytes, Bytes)>) -> Vec<Vec<(Bytes, Bytes)>> {
    let mut out = Vec::new();
    let mut cur = Vec::new();
    let mut bytes = 0;
    for p in batch {
        bytes += pair_bytes(&p);
        cur.push(p);
        if bytes >= CHUNK_BYTES {
            out.push(std::mem::take(&mut cur));
            bytes = 0;
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}
