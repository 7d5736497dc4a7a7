//! A server's databases: journal and storage servers hold many, each opened on its first call
//! (the call names it in the `cairn-database` header) and kept apart from the others.

use super::{DEFAULT_DATABASE, database_of, status};
use cairn_common::{Error, Result};
use futures::future::BoxFuture;
use std::collections::HashMap;
use std::sync::Arc;
use tonic::{Request, Status};

type Opener<T> = Box<dyn Fn(String) -> BoxFuture<'static, Result<Arc<T>>> + Send + Sync>;

pub struct Databases<T: ?Sized> {
    open: Opener<T>,
    /// Held while one is opened, so two first calls do not open it twice.
    opening: tokio::sync::Mutex<()>,
    /// Opened ones, read without waiting behind an open in progress.
    known: parking_lot::RwLock<HashMap<String, Arc<T>>>,
    /// At most this many; a client naming more is refused, not given more memory and files.
    limit: usize,
}

/// How many databases a server holds unless told otherwise.
pub const MAX_DATABASES: usize = 1024;

impl<T: ?Sized + Send + Sync + 'static> Databases<T> {
    /// Opens each database with `open(name)` when it is first named.
    pub fn new<F, Fut>(limit: usize, open: F) -> Self
    where
        F: Fn(String) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = Result<Arc<T>>> + Send + 'static,
    {
        Databases {
            open: Box::new(move |name| Box::pin(open(name))),
            opening: tokio::sync::Mutex::new(()),
            known: parking_lot::RwLock::new(HashMap::new()),
            limit,
        }
    }

    /// One database, `default`, already open; naming any other is refused.
    pub fn single(db: Arc<T>) -> Self {
        let this = Self::new(1, |name: String| async move {
            Err(Error::InvalidArgument(format!(
                "this server holds only the `{DEFAULT_DATABASE}` database, not `{name}`"
            )))
        });
        this.known.write().insert(DEFAULT_DATABASE.to_string(), db);
        this
    }

    /// The database a call names (its name, and it), opened if this is its first call,
    /// once the call's token is found to reach it (and to write, if the call `writes`).
    pub async fn of<M>(&self, req: &Request<M>, writes: bool) -> Result<(String, Arc<T>), Status> {
        let name = database_of(req)?;
        crate::check_access(req, &name, writes)?;
        let db = self.get(&name).await.map_err(status)?;
        Ok((name, db))
    }

    pub async fn get(&self, name: &str) -> Result<Arc<T>> {
        if let Some(db) = self.known.read().get(name) {
            return Ok(db.clone());
        }
        let _one = self.opening.lock().await;
        if let Some(db) = self.known.read().get(name) {
            return Ok(db.clone());
        }
        if self.known.read().len() >= self.limit {
            return Err(Error::InvalidArgument(format!(
                "this server holds its limit of {} databases; `{name}` is not one of them",
                self.limit
            )));
        }
        let db = (self.open)(name.to_string()).await?;
        self.known.write().insert(name.to_string(), db.clone());
        Ok(db)
    }

    /// Every open database, for closing them.
    pub fn all(&self) -> Vec<(String, Arc<T>)> {
        self.known
            .read()
            .iter()
            .map(|(n, d)| (n.clone(), d.clone()))
            .collect()
    }
}
