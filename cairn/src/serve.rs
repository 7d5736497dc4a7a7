//! `cairn serve`: one component of a profile (its journal, its storage, or a compactor over
//! its storage) served over gRPC, for engines whose profile names it `kind = "grpc"`.

use crate::config::{Config, JournalKind, StorageKind};
use crate::wiring;
use cairn_common::rpc::{ServerHandle, builder, serve};
use cairn_common::{Error, Result};
use cairn_compaction::{LocalCompactor, compaction_service};
use cairn_filestore::storage_service;
use cairn_journal::{Journal, journal_service};
use std::future::Future;
use std::sync::Arc;
use tokio::net::TcpListener;

/// What `cairn serve` can serve.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Component {
    Journal,
    Storage,
    Compaction,
}

impl Component {
    pub fn name(self) -> &'static str {
        match self {
            Component::Journal => "journal",
            Component::Storage => "storage",
            Component::Compaction => "compaction",
        }
    }

    /// Where it listens unless told otherwise: loopback, on the port the `remote` profile uses.
    pub fn default_listen(self) -> &'static str {
        match self {
            Component::Journal => "127.0.0.1:10001",
            Component::Storage => "127.0.0.1:10002",
            Component::Compaction => "127.0.0.1:10003",
        }
    }
}

impl std::str::FromStr for Component {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "journal" => Ok(Component::Journal),
            "storage" => Ok(Component::Storage),
            "compaction" => Ok(Component::Compaction),
            other => Err(format!(
                "cannot serve `{other}` (journal, storage, compaction)"
            )),
        }
    }
}

/// A component being served.
pub struct ComponentServer {
    handle: ServerHandle,
    journal: Option<Arc<dyn Journal>>,
    pub component: Component,
}

impl ComponentServer {
    pub fn url(&self) -> String {
        self.handle.url()
    }

    /// Waits for the shutdown signal and for the calls in flight, then closes the journal,
    /// so every append the server acknowledged is durable and no new one was taken.
    pub async fn wait(self) -> Result<()> {
        let served = self.handle.wait().await;
        served.and(close(self.journal).await)
    }

    /// Stops now, as the signal would.
    pub async fn stop(self) -> Result<()> {
        let served = self.handle.stop().await;
        served.and(close(self.journal).await)
    }
}

async fn close(journal: Option<Arc<dyn Journal>>) -> Result<()> {
    match journal {
        Some(j) => j.close().await,
        None => Ok(()),
    }
}

/// Serves `component` of `config` on `listener` until `signal` fires.
pub async fn start(
    config: &Config,
    component: Component,
    listener: TcpListener,
    signal: impl Future<Output = ()> + Send + 'static,
) -> Result<ComponentServer> {
    let opts = config.rpc.server();
    let refuse = |what: &str| {
        Err(Error::InvalidArgument(format!(
            "cannot serve {what} = \"grpc\": a server serves a local implementation; pick a profile whose {what} is local"
        )))
    };
    let (drain, draining) = tokio::sync::watch::channel(false);
    let mut journal = None;
    let router = match component {
        Component::Journal => {
            if config.journal.kind == JournalKind::Grpc {
                return refuse("journal.kind");
            }
            let j = wiring::journal(config)?;
            journal = Some(j.clone());
            builder(&opts)?.add_service(journal_service(j, &opts, draining))
        }
        Component::Storage => {
            if config.storage.kind == StorageKind::Grpc {
                return refuse("storage.kind");
            }
            let (storage, _) =
                wiring::storage(&config.storage, &config.data_dir, &config.rpc).await?;
            builder(&opts)?.add_service(storage_service(storage, &opts))
        }
        Component::Compaction => {
            let storage = wiring::compaction_node_storage(config).await?;
            let compactor = Arc::new(LocalCompactor::new(storage));
            builder(&opts)?.add_service(compaction_service(compactor, &opts))
        }
    };
    let tls = opts.tls_cert.is_some();
    let handle = serve(router, listener, tls, drain, signal)?;
    Ok(ComponentServer {
        handle,
        journal,
        component,
    })
}
