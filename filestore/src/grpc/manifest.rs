//! `GrpcManifestStore`: the manifest versions a storage server keeps beside the database's
//! tables. Every call is safe to retry: a create retried after a lost answer finds its own
//! version there, which the manifest log recognises by its content.

use super::client::client;
use super::pb::{ManifestData, ManifestRequest};
use crate::{ManifestStore, ManifestVersion};
use async_trait::async_trait;
use bytes::Bytes;
use cairn_common::Result;
use cairn_rpc::RpcClient;
use cairn_rpc::pb::Empty;

pub struct GrpcManifestStore {
    rpc: RpcClient,
}

impl GrpcManifestStore {
    pub fn new(rpc: RpcClient) -> Self {
        GrpcManifestStore { rpc }
    }
}

#[async_trait]
impl ManifestStore for GrpcManifestStore {
    async fn list(&self) -> Result<Vec<ManifestVersion>> {
        self.rpc
            .retry("list_manifests", || {
                let mut c = client(&self.rpc);
                let req = self.rpc.request(Empty {});
                async move { c.list_manifests(req).await.map(|r| r.into_inner().versions) }
            })
            .await
    }

    async fn read(&self, version: ManifestVersion) -> Result<Option<Bytes>> {
        let r = self
            .rpc
            .retry("read_manifest", || {
                let mut c = client(&self.rpc);
                let req = self.rpc.request(ManifestRequest { version });
                async move { c.read_manifest(req).await.map(|r| r.into_inner()) }
            })
            .await?;
        Ok(r.found.then_some(r.data))
    }

    async fn create(&self, version: ManifestVersion, data: Bytes) -> Result<bool> {
        self.rpc
            .retry("create_manifest", || {
                let mut c = client(&self.rpc);
                let req = self.rpc.request(ManifestData {
                    version,
                    found: true,
                    data: data.clone(),
                });
                async move { c.create_manifest(req).await.map(|r| r.into_inner().created) }
            })
            .await
    }

    async fn delete(&self, version: ManifestVersion) -> Result<()> {
        self.rpc
            .retry("delete_manifest", || {
                let mut c = client(&self.rpc);
                let req = self.rpc.request(ManifestRequest { version });
                async move { c.delete_manifest(req).await.map(|_| ()) }
            })
            .await
    }

    fn location(&self) -> String {
        self.rpc.who()
    }
}
