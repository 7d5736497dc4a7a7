//! `GrpcStorage`: a `Storage` whose tables live on a storage server.
//!
//! - Writes stream a table's entries in blocks; the order is checked here as well, so an
//!   out-of-order `add` fails at once rather than at `finish`.
//! - Point lookups of tables that have blocks (SSTables, and hybrid tables through their
//!   SSTable copy) locate the block locally from the layout fetched at open (key bounds,
//!   filter, block index), then read it from the client's block cache or fetch that one block.
//! - Scans stream blocks with bounded buffers; nothing is read whole into memory.
//! - Calls other than writes are idempotent and retried while the server is unavailable.

use super::BLOCK_BYTES;
use super::GrpcManifestStore;
use super::pb::storage_client::StorageClient;
use super::pb::{
    AggregateRequest, DeleteRequest, GetRequest, ReadBlockRequest, ScanRequest, TableRequest,
    WriteRequest,
};
use crate::tracker::MetaTracker;
use crate::{
    Block, BlockCache, BlockLayout, ManifestStore, Storage, Table, TableBuilder, find_in_block,
};
use async_trait::async_trait;
use bytes::Bytes;
use cairn_common::{
    AggregateState, BoxStream, Entry, Error, KeyRange, RangeTombstone, Result, SeqNo, TableId,
    TableMeta, ValueType,
};
use cairn_rpc::pb::{self as common_pb, Empty};
use cairn_rpc::{ClientOptions, RpcChannel, RpcClient, connect, decode_entries};
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;

#[derive(Clone)]
pub struct GrpcStorage {
    rpc: RpcClient,
    cache: BlockCache,
}

impl GrpcStorage {
    /// A client of the storage server at `opts.url`, caching up to `block_cache_bytes` of
    /// blocks (0: no cache). It connects on first use.
    pub fn new(opts: ClientOptions, block_cache_bytes: u64) -> Result<Self> {
        Ok(GrpcStorage {
            rpc: connect("storage", opts)?,
            cache: BlockCache::new(block_cache_bytes),
        })
    }

    pub fn cache(&self) -> &BlockCache {
        &self.cache
    }
}

pub(super) fn client(rpc: &RpcClient) -> StorageClient<RpcChannel> {
    let max = rpc.opts.max_message_bytes;
    StorageClient::new(rpc.channel.clone())
        .max_decoding_message_size(max)
        .max_encoding_message_size(max)
}

#[async_trait]
impl Storage for GrpcStorage {
    async fn create_table(&self, id: TableId, level: u32) -> Result<Box<dyn TableBuilder>> {
        let (tx, rx) = mpsc::channel::<WriteRequest>(4);
        let mut c = client(&self.rpc);
        // No deadline on the stream: it lasts as long as the flush or compaction feeding it.
        // Each message has a deadline to get into the stream instead, and the seal one to
        // be answered.
        let call = tokio::spawn(async move {
            c.create_table(ReceiverStream::new(rx))
                .await
                .map(|r| r.into_inner())
        });
        let mut b = GrpcBuilder {
            rpc: self.rpc.clone(),
            tx: Some(tx),
            call: Some(call),
            tracker: MetaTracker::new(id),
            pending: Vec::new(),
            pending_bytes: 0,
            written: 0,
        };
        b.send(WriteRequest {
            id,
            block: None,
            finish: false,
            level,
        })
        .await?;
        Ok(Box::new(b))
    }

    async fn open_table(&self, meta: &TableMeta) -> Result<Arc<dyn Table>> {
        let pb_meta = common_pb::TableMeta::from(meta);
        let open = self
            .rpc
            .retry("open_table", || {
                let mut c = client(&self.rpc);
                let req = self.rpc.request(TableRequest {
                    meta: Some(pb_meta.clone()),
                });
                async move { c.open_table(req).await.map(|r| r.into_inner()) }
            })
            .await?;
        let ranges = open
            .range_deletes
            .into_iter()
            .map(|e| Entry::try_from(e).and_then(|e| RangeTombstone::from_entry(&e)))
            .collect::<Result<Vec<_>>>()?;
        let layout = if open.has_blocks {
            let last_keys = open.last_keys.into_iter().map(|b| (b.key, b.seq)).collect();
            Some(Arc::new(
                BlockLayout::decode(last_keys, &open.filter).map_err(|e| {
                    Error::corruption(
                        format!("table {} from {}", meta.id, self.rpc.who()),
                        e.to_string(),
                    )
                })?,
            ))
        } else {
            None
        };
        Ok(Arc::new(GrpcTable {
            meta: meta.clone(),
            pb_meta,
            ranges,
            layout,
            rpc: self.rpc.clone(),
            cache: self.cache.clone(),
        }))
    }

    async fn delete_table(&self, id: TableId) -> Result<()> {
        self.rpc
            .retry("delete_table", || {
                let mut c = client(&self.rpc);
                let req = self.rpc.request(DeleteRequest { id });
                async move { c.delete_table(req).await.map(|_| ()) }
            })
            .await
    }

    async fn list_tables(&self) -> Result<Vec<TableId>> {
        self.rpc
            .retry("list_tables", || {
                let mut c = client(&self.rpc);
                let req = self.rpc.request(Empty {});
                async move { c.list_tables(req).await.map(|r| r.into_inner().ids) }
            })
            .await
    }

    fn manifests(&self) -> Arc<dyn ManifestStore> {
        Arc::new(GrpcManifestStore::new(self.rpc.clone()))
    }

    /// The database's name on its server.
    fn reference(&self) -> Option<String> {
        let name = self.rpc.opts.database.as_deref();
        Some(name.unwrap_or(cairn_rpc::DEFAULT_DATABASE).to_string())
    }

    /// Database `reference` of the same server, with this client's options and block cache
    /// (a clone's own table ids come after its parent's, so the two never meet in it).
    fn open_reference(&self, reference: &str) -> Result<Arc<dyn Storage>> {
        let opts = ClientOptions {
            database: Some(reference.to_string()),
            ..self.rpc.opts.clone()
        };
        Ok(Arc::new(GrpcStorage {
            rpc: connect("storage", opts)?,
            cache: self.cache.clone(),
        }))
    }
}

struct GrpcBuilder {
    rpc: RpcClient,
    tx: Option<mpsc::Sender<WriteRequest>>,
    call: Option<JoinHandle<Result<common_pb::TableMeta, Status>>>,
    tracker: MetaTracker,
    pending: Vec<common_pb::Entry>,
    pending_bytes: usize,
    written: u64,
}

impl GrpcBuilder {
    /// Sends one message; if the stream is gone, the call's own error says why.
    async fn send(&mut self, msg: WriteRequest) -> Result<()> {
        let sent = match &self.tx {
            Some(tx) => tokio::time::timeout(self.rpc.opts.timeout, tx.send(msg)).await,
            None => return Err(Error::InvalidArgument("the table is already sealed".into())),
        };
        match sent {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(self.outcome().await.err().unwrap_or_else(|| {
                self.rpc.error(
                    "create_table",
                    Status::aborted("the server ended the table stream"),
                )
            })),
            Err(_) => Err(self.rpc.error(
                "create_table",
                Status::deadline_exceeded("the server took no more table data"),
            )),
        }
    }

    async fn outcome(&mut self) -> Result<TableMeta> {
        self.tx = None;
        let Some(call) = self.call.take() else {
            return Err(Error::InvalidArgument(
                "the table stream already ended".into(),
            ));
        };
        // The server answers once it has sealed the table: its last block and the seal
        // must take no longer than the call deadline.
        let abort = call.abort_handle();
        match tokio::time::timeout(self.rpc.opts.timeout, call).await {
            Ok(Ok(Ok(meta))) => Ok(meta.into()),
            Ok(Ok(Err(s))) => Err(self.rpc.error("create_table", s)),
            Ok(Err(e)) => Err(Error::component(self.rpc.who(), e)),
            Err(_) => {
                abort.abort();
                Err(self.rpc.error(
                    "create_table",
                    Status::deadline_exceeded("the server did not seal the table"),
                ))
            }
        }
    }

    async fn flush_pending(&mut self, finish: bool) -> Result<()> {
        let block = (!self.pending.is_empty()).then(|| common_pb::Block {
            entries: std::mem::take(&mut self.pending),
        });
        self.pending_bytes = 0;
        if block.is_none() && !finish {
            return Ok(());
        }
        self.send(WriteRequest {
            id: 0,
            block,
            finish,
            level: 0,
        })
        .await
    }
}

#[async_trait]
impl TableBuilder for GrpcBuilder {
    async fn add(&mut self, entries: &[Entry]) -> Result<()> {
        for e in entries {
            self.tracker.observe(e)?;
            let n = e.key.len() + e.value.len() + 16;
            self.pending_bytes += n;
            self.written += n as u64;
            self.pending.push(e.into());
        }
        if self.pending_bytes >= BLOCK_BYTES {
            self.flush_pending(false).await?;
        }
        Ok(())
    }

    fn estimated_size(&self) -> u64 {
        self.written
    }

    async fn finish(mut self: Box<Self>) -> Result<TableMeta> {
        self.tracker.seal()?;
        self.flush_pending(true).await?;
        self.outcome().await
    }

    async fn abandon(mut self: Box<Self>) -> Result<()> {
        // Ending the stream without a finish makes the server drop the partial table.
        self.tx = None;
        let _ = self.outcome().await;
        Ok(())
    }
}

struct GrpcTable {
    meta: TableMeta,
    pb_meta: common_pb::TableMeta,
    ranges: Vec<RangeTombstone>,
    layout: Option<Arc<BlockLayout>>,
    rpc: RpcClient,
    cache: BlockCache,
}

impl GrpcTable {
    async fn block(&self, index: usize) -> Result<Block> {
        if let Some(b) = self.cache.get(self.meta.id, index as u64) {
            return Ok(b);
        }
        let block = self
            .rpc
            .retry("read_block", || {
                let mut c = client(&self.rpc);
                let req = self.rpc.request(ReadBlockRequest {
                    meta: Some(self.pb_meta.clone()),
                    index: index as u64,
                });
                async move { c.read_block(req).await.map(|r| r.into_inner()) }
            })
            .await?;
        let block: Block = Arc::new(crate::cache::BlockEntries::from_entries(&decode_entries(
            block,
        )?));
        self.cache.insert(self.meta.id, index as u64, block.clone());
        Ok(block)
    }

    async fn stream(&self, range: &KeyRange, analytic: bool) -> Result<BoxStream<Result<Entry>>> {
        let req = ScanRequest {
            meta: Some(self.pb_meta.clone()),
            range: Some(range.into()),
            analytic,
        };
        let blocks = self
            .rpc
            .retry("scan", || {
                let mut c = client(&self.rpc);
                let req = req.clone();
                async move { c.scan(req).await.map(|r| r.into_inner()) }
            })
            .await?;
        Ok(self.rpc.unchunk("scan", blocks, decode_entries))
    }
}

#[async_trait]
impl Table for GrpcTable {
    fn meta(&self) -> &TableMeta {
        &self.meta
    }

    fn range_deletes(&self) -> &[RangeTombstone] {
        &self.ranges
    }

    async fn get(&self, key: &[u8], snapshot: SeqNo) -> Result<Option<Entry>> {
        if let Some(layout) = &self.layout {
            return match layout.locate(&self.meta, key, snapshot) {
                Some(i) => Ok(find_in_block(&self.block(i).await?, key, snapshot)),
                None => Ok(None),
            };
        }
        let req = GetRequest {
            meta: Some(self.pb_meta.clone()),
            key: Bytes::copy_from_slice(key),
            snapshot,
        };
        let got = self
            .rpc
            .retry("get", || {
                let mut c = client(&self.rpc);
                let req = self.rpc.request(req.clone());
                async move { c.get(req).await.map(|r| r.into_inner().entry) }
            })
            .await?;
        got.map(Entry::try_from).transpose()
    }

    async fn scan(&self, range: &KeyRange) -> Result<BoxStream<Result<Entry>>> {
        self.stream(range, false).await
    }

    async fn analytic_scan(&self, range: &KeyRange) -> Result<BoxStream<Result<Entry>>> {
        self.stream(range, true).await
    }

    async fn aggregate(
        &self,
        range: &KeyRange,
        snapshot: SeqNo,
        value_type: ValueType,
        shadowed: &[Bytes],
    ) -> Result<AggregateState> {
        // The keys travel in the request: past half a message (a large memtable or L0 decides
        // many keys) the request would be refused, so the table's entries come here instead,
        // streamed in chunks, and are folded on this side.
        let shadowed_bytes: usize = shadowed.iter().map(|k| k.len() + 4).sum();
        if shadowed_bytes > self.rpc.opts.max_message_bytes / 2 {
            let entries = self.analytic_scan(range).await?;
            return crate::VisibleFold::new(snapshot, value_type, shadowed)
                .fold_stream(entries)
                .await;
        }
        let req = AggregateRequest {
            meta: Some(self.pb_meta.clone()),
            range: Some(range.into()),
            snapshot,
            value_type: value_type.into(),
            shadowed: shadowed.to_vec(),
        };
        let state = self
            .rpc
            .retry("aggregate", || {
                let mut c = client(&self.rpc);
                let req = self.rpc.request(req.clone());
                async move { c.aggregate(req).await.map(|r| r.into_inner()) }
            })
            .await?;
        AggregateState::try_from(state)
    }

    fn block_layout(&self) -> Option<Arc<BlockLayout>> {
        self.layout.clone()
    }

    async fn read_block(&self, index: usize) -> Result<Block> {
        match &self.layout {
            Some(l) if index < l.len() => self.block(index).await,
            _ => Err(Error::InvalidArgument(format!(
                "table {} has no block {index}",
                self.meta.id
            ))),
        }
    }
}
