//! `SharedTables`: a database's own store, plus tables it shares by reference with another
//! database (a clone with its parent). Reads of a shared table go to the store that holds
//! it; nothing is ever written to that store or deleted from it, since its own database
//! deletes a table once nothing references it. Tables shared with a bound (`Within`: the
//! children of a shard split) are read clipped to it (`Clipped`).

use crate::clipped::Clipped;
use crate::{ManifestStore, Storage, Table, TableBuilder};
use async_trait::async_trait;
use cairn_common::{Error, Result, TableId, TableMeta};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::Arc;

/// Tables that live in another database's store: that store's `Storage::reference`, and
/// the tables' ids there, and the keys of them this database sees.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TablesAt {
    pub reference: String,
    pub ids: Vec<TableId>,
    #[serde(default)]
    pub within: Within,
}

/// The keys `[lower, upper)` of a shared table that a database sees; either side open when
/// absent. All of them by default.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Within {
    pub lower: Option<Vec<u8>>,
    pub upper: Option<Vec<u8>>,
}

impl Within {
    pub fn is_all(&self) -> bool {
        self.lower.is_none() && self.upper.is_none()
    }

    /// The keys in both.
    pub fn and(&self, other: &Within) -> Within {
        let lower = match (&self.lower, &other.lower) {
            (Some(a), Some(b)) => Some(a.max(b).clone()),
            (a, b) => a.clone().or(b.clone()),
        };
        let upper = match (&self.upper, &other.upper) {
            (Some(a), Some(b)) => Some(a.min(b).clone()),
            (a, b) => a.clone().or(b.clone()),
        };
        Within { lower, upper }
    }
}

pub struct SharedTables {
    own: Arc<dyn Storage>,
    elsewhere: HashMap<TableId, (Arc<dyn Storage>, Within)>,
}

impl SharedTables {
    /// `own`, reading the tables each `TablesAt` lists from the store it names (reached
    /// through `own.open_reference`); `own` itself when nothing is shared.
    pub fn wrap(own: Arc<dyn Storage>, shared: &[TablesAt]) -> Result<Arc<dyn Storage>> {
        if shared.iter().all(|s| s.ids.is_empty()) {
            return Ok(own);
        }
        let mut elsewhere = HashMap::new();
        for s in shared.iter().filter(|s| !s.ids.is_empty()) {
            let store = own.open_reference(&s.reference)?;
            for id in &s.ids {
                elsewhere.insert(*id, (store.clone(), s.within.clone()));
            }
        }
        Ok(Arc::new(SharedTables { own, elsewhere }))
    }
}

#[async_trait]
impl Storage for SharedTables {
    async fn create_table(&self, id: TableId, level: u32) -> Result<Box<dyn TableBuilder>> {
        if self.elsewhere.contains_key(&id) {
            return Err(Error::InvalidArgument(format!(
                "table {id} belongs to another database this one shares tables with; it is never written here"
            )));
        }
        self.own.create_table(id, level).await
    }

    async fn open_table(&self, meta: &TableMeta) -> Result<Arc<dyn Table>> {
        match self.elsewhere.get(&meta.id) {
            Some((store, within)) if within.is_all() => store.open_table(meta).await,
            Some((store, within)) => Ok(Arc::new(Clipped::new(
                store.open_table(meta).await?,
                within.clone(),
            ))),
            None => self.own.open_table(meta).await,
        }
    }

    /// A shared table is left alone: it is its own database's to delete.
    async fn delete_table(&self, id: TableId) -> Result<()> {
        if self.elsewhere.contains_key(&id) {
            return Ok(());
        }
        self.own.delete_table(id).await
    }

    async fn list_tables(&self) -> Result<Vec<TableId>> {
        self.own.list_tables().await
    }

    fn manifests(&self) -> Arc<dyn ManifestStore> {
        self.own.manifests()
    }

    fn reference(&self) -> Option<String> {
        self.own.reference()
    }

    fn open_reference(&self, reference: &str) -> Result<Arc<dyn Storage>> {
        self.own.open_reference(reference)
    }
}
