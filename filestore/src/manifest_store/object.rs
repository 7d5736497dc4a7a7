//! Manifest versions as objects in an object store (beside a Parquet store's tables): every
//! create is a `PutMode::Create` put, which the store refuses if the object exists.

use super::{ManifestStore, ManifestVersion, parse_version_name, version_name};
use async_trait::async_trait;
use bytes::Bytes;
use cairn_common::{Error, Result};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use std::path::PathBuf;
use std::sync::Arc;

pub struct ObjectManifestStore {
    store: Arc<dyn ObjectStore>,
    prefix: Path,
    url: String,
    /// For `file://`: the directory, synced after each create (object_store does not).
    local_dir: Option<PathBuf>,
}

impl ObjectManifestStore {
    /// Versions under `prefix` of `store`; `url` names the place in messages.
    pub fn new(
        store: Arc<dyn ObjectStore>,
        prefix: Path,
        url: impl Into<String>,
        local_dir: Option<PathBuf>,
    ) -> Self {
        ObjectManifestStore {
            store,
            prefix,
            url: url.into(),
            local_dir,
        }
    }

    fn path(&self, n: ManifestVersion) -> Path {
        self.prefix.clone().join(version_name(n))
    }

    fn err(&self, what: impl std::fmt::Display, e: impl std::fmt::Display) -> Error {
        Error::component(format!("manifest at {}", self.url), format!("{what}: {e}"))
    }
}

#[async_trait]
impl ManifestStore for ObjectManifestStore {
    async fn list(&self) -> Result<Vec<ManifestVersion>> {
        // One level: the versions sit directly under the prefix.
        let listed = self
            .store
            .list_with_delimiter(Some(&self.prefix))
            .await
            .map_err(|e| self.err("list", e))?;
        let mut out: Vec<ManifestVersion> = listed
            .objects
            .iter()
            .filter_map(|o| o.location.filename().and_then(parse_version_name))
            .collect();
        out.sort_unstable();
        Ok(out)
    }

    async fn read(&self, n: ManifestVersion) -> Result<Option<Bytes>> {
        match self.store.get(&self.path(n)).await {
            Ok(r) => {
                Ok(Some(r.bytes().await.map_err(|e| {
                    self.err(format_args!("read version {n}"), e)
                })?))
            }
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.err(format_args!("read version {n}"), e)),
        }
    }

    async fn create(&self, n: ManifestVersion, data: Bytes) -> Result<bool> {
        let opts = PutOptions {
            mode: PutMode::Create,
            ..PutOptions::default()
        };
        let path = self.path(n);
        match self
            .store
            .put_opts(&path, PutPayload::from(data), opts)
            .await
        {
            Ok(_) => {}
            Err(object_store::Error::AlreadyExists { .. }) => return Ok(false),
            Err(e) => return Err(self.err(format_args!("create version {n}"), e)),
        }
        if let Some(dir) = &self.local_dir {
            let file = dir.join(path.as_ref());
            cairn_common::durable::sync_file(&file)?;
            if let Some(parent) = file.parent() {
                cairn_common::durable::sync_dir(parent)?;
            }
        }
        Ok(true)
    }

    async fn delete(&self, n: ManifestVersion) -> Result<()> {
        match self.store.delete(&self.path(n)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.err(format_args!("delete version {n}"), e)),
        }
    }

    fn location(&self) -> String {
        self.url.clone()
    }
}
