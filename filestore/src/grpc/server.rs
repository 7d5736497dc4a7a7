//! Serves local storages, one per database the calls name. Requests name tables by their
//! metadata; opened tables are kept in a small cache so that the next request for the same
//! table skips the open.

use super::BLOCK_BYTES;
use super::pb::storage_server::{Storage as StorageRpc, StorageServer};
use super::pb::{
    AggregateRequest, BlockBound, DeleteRequest, GetRequest, GetResponse, ManifestCreated,
    ManifestData, ManifestList, ManifestRequest, OpenResponse, ReadBlockRequest, ScanRequest,
    TableList, TableRequest, WriteRequest,
};
use crate::{ManifestStore, Storage, Table};
use cairn_common::{Error, TableId, ValueType};
use cairn_rpc::pb::{AggregateState, Block, Empty, TableMeta as PbMeta};
use cairn_rpc::{
    Databases, ServerAuth, ServerOptions, StatusStream, chunked, decode_entries, decode_meta,
    decode_range, encode_entries, status,
};
use quick_cache::sync::Cache;
use std::sync::Arc;
use tonic::service::interceptor::InterceptedService;
use tonic::{Request, Response, Status, Streaming};

pub struct StorageService {
    dbs: Arc<Databases<dyn Storage>>,
    tables: Cache<(String, TableId), Arc<dyn Table>>,
}

/// The service for one database (`default`), behind the token check and the message size
/// bounds.
pub fn storage_service(
    storage: Arc<dyn Storage>,
    opts: &ServerOptions,
) -> InterceptedService<StorageServer<StorageService>, ServerAuth> {
    storage_service_for(Arc::new(Databases::single(storage)), opts)
}

/// The service for every database `dbs` opens.
pub fn storage_service_for(
    dbs: Arc<Databases<dyn Storage>>,
    opts: &ServerOptions,
) -> InterceptedService<StorageServer<StorageService>, ServerAuth> {
    let max = opts.max_message_bytes();
    InterceptedService::new(
        StorageServer::new(StorageService {
            dbs,
            tables: Cache::new(4096),
        })
        .max_decoding_message_size(max)
        .max_encoding_message_size(max),
        ServerAuth::new(opts),
    )
}

impl StorageService {
    async fn table<M>(
        &self,
        req: &Request<M>,
        meta: Option<PbMeta>,
    ) -> Result<Arc<dyn Table>, Status> {
        let (db, storage) = self.dbs.of(req, false).await?;
        let meta = decode_meta(meta).map_err(status)?;
        let key = (db, meta.id);
        if let Some(t) = self.tables.get(&key)
            && t.meta() == &meta
        {
            return Ok(t);
        }
        let t = storage.open_table(&meta).await.map_err(status)?;
        self.tables.insert(key, t.clone());
        Ok(t)
    }

    async fn manifests<M>(
        &self,
        req: &Request<M>,
        writes: bool,
    ) -> Result<Arc<dyn ManifestStore>, Status> {
        Ok(self.dbs.of(req, writes).await?.1.manifests())
    }
}

#[tonic::async_trait]
impl StorageRpc for StorageService {
    type ScanStream = StatusStream<Block>;

    async fn create_table(
        &self,
        req: Request<Streaming<WriteRequest>>,
    ) -> Result<Response<PbMeta>, Status> {
        let (_, storage) = self.dbs.of(&req, true).await?;
        let mut input = req.into_inner();
        let first = input
            .message()
            .await?
            .ok_or_else(|| Status::invalid_argument("empty table stream"))?;
        let mut builder = storage
            .create_table(first.id, first.level)
            .await
            .map_err(status)?;
        let mut next = Some(first);
        let fed: Result<(), Status> = async {
            while let Some(msg) = next.take() {
                if let Some(block) = msg.block {
                    let entries = decode_entries(block).map_err(status)?;
                    builder.add(&entries).await.map_err(status)?;
                }
                if msg.finish {
                    return Ok(());
                }
                next = input.message().await?;
            }
            Err(Status::cancelled(
                "the table stream ended without finishing; the table is abandoned",
            ))
        }
        .await;
        match fed {
            Ok(()) => {
                let meta = builder.finish().await.map_err(status)?;
                Ok(Response::new(PbMeta::from(&meta)))
            }
            Err(s) => {
                if let Err(e) = builder.abandon().await {
                    tracing::warn!(error = %e, "abandoning a table whose stream failed");
                }
                Err(s)
            }
        }
    }

    async fn open_table(
        &self,
        req: Request<TableRequest>,
    ) -> Result<Response<OpenResponse>, Status> {
        let meta = req.get_ref().meta.clone();
        let table = self.table(&req, meta).await?;
        let mut open = match table.block_layout() {
            Some(layout) => OpenResponse {
                has_blocks: true,
                last_keys: layout
                    .last_keys()
                    .iter()
                    .map(|(key, seq)| BlockBound {
                        key: key.clone(),
                        seq: *seq,
                    })
                    .collect(),
                filter: layout.encoded_filter().into(),
                range_deletes: Vec::new(),
            },
            None => OpenResponse::default(),
        };
        open.range_deletes = table
            .range_deletes()
            .iter()
            .map(|t| (&t.to_entry()).into())
            .collect();
        Ok(Response::new(open))
    }

    async fn get(&self, req: Request<GetRequest>) -> Result<Response<GetResponse>, Status> {
        let table = self.table(&req, req.get_ref().meta.clone()).await?;
        let r = req.into_inner();
        let entry = table.get(&r.key, r.snapshot).await.map_err(status)?;
        Ok(Response::new(GetResponse {
            entry: entry.as_ref().map(Into::into),
        }))
    }

    async fn read_block(&self, req: Request<ReadBlockRequest>) -> Result<Response<Block>, Status> {
        let table = self.table(&req, req.get_ref().meta.clone()).await?;
        let r = req.into_inner();
        let index = usize::try_from(r.index)
            .map_err(|_| Status::invalid_argument("block index out of range"))?;
        let block = table.read_block(index).await.map_err(status)?;
        Ok(Response::new(encode_entries(
            &block.entries().collect::<Vec<_>>(),
        )))
    }

    async fn scan(&self, req: Request<ScanRequest>) -> Result<Response<Self::ScanStream>, Status> {
        let table = self.table(&req, req.get_ref().meta.clone()).await?;
        let r = req.into_inner();
        let range = decode_range(r.range).map_err(status)?;
        let entries = if r.analytic {
            table.analytic_scan(&range).await
        } else {
            table.scan(&range).await
        }
        .map_err(status)?;
        Ok(Response::new(chunked(
            entries,
            BLOCK_BYTES,
            |e| e.key.len() + e.value.len() + 16,
            |block| encode_entries(&block),
        )))
    }

    async fn aggregate(
        &self,
        req: Request<AggregateRequest>,
    ) -> Result<Response<AggregateState>, Status> {
        let table = self.table(&req, req.get_ref().meta.clone()).await?;
        let r = req.into_inner();
        let range = decode_range(r.range).map_err(status)?;
        let value_type = ValueType::try_from(r.value_type).map_err(status)?;
        if !r.shadowed.windows(2).all(|w| w[0] < w[1]) {
            return Err(status(Error::InvalidArgument(
                "shadowed keys must be sorted and distinct".into(),
            )));
        }
        let state = table
            .aggregate(&range, r.snapshot, value_type, &r.shadowed)
            .await
            .map_err(status)?;
        Ok(Response::new(AggregateState::from(&state)))
    }

    async fn delete_table(&self, req: Request<DeleteRequest>) -> Result<Response<Empty>, Status> {
        let (db, storage) = self.dbs.of(&req, true).await?;
        let id = req.into_inner().id;
        self.tables.remove(&(db, id));
        storage.delete_table(id).await.map_err(status)?;
        Ok(Response::new(Empty {}))
    }

    async fn list_tables(&self, req: Request<Empty>) -> Result<Response<TableList>, Status> {
        let (_, storage) = self.dbs.of(&req, false).await?;
        let ids = storage.list_tables().await.map_err(status)?;
        Ok(Response::new(TableList { ids }))
    }

    async fn list_manifests(&self, req: Request<Empty>) -> Result<Response<ManifestList>, Status> {
        let versions = self
            .manifests(&req, false)
            .await?
            .list()
            .await
            .map_err(status)?;
        Ok(Response::new(ManifestList { versions }))
    }

    async fn read_manifest(
        &self,
        req: Request<ManifestRequest>,
    ) -> Result<Response<ManifestData>, Status> {
        let store = self.manifests(&req, false).await?;
        let version = req.into_inner().version;
        let data = store.read(version).await.map_err(status)?;
        Ok(Response::new(ManifestData {
            version,
            found: data.is_some(),
            data: data.unwrap_or_default(),
        }))
    }

    async fn create_manifest(
        &self,
        req: Request<ManifestData>,
    ) -> Result<Response<ManifestCreated>, Status> {
        let store = self.manifests(&req, true).await?;
        let r = req.into_inner();
        let created = store.create(r.version, r.data).await.map_err(status)?;
        Ok(Response::new(ManifestCreated { created }))
    }

    async fn delete_manifest(
        &self,
        req: Request<ManifestRequest>,
    ) -> Result<Response<Empty>, Status> {
        let store = self.manifests(&req, true).await?;
        store
            .delete(req.into_inner().version)
            .await
            .map_err(status)?;
        Ok(Response::new(Empty {}))
    }
}
