//! The one error type of the library crates. Each variant says what failed and where, so a
//! caller can tell a corrupt file from a full disk from a dead server.

use std::path::PathBuf;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("I/O error on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A checksum, magic number or encoding did not match: the named object cannot be trusted.
    #[error("corruption in {what}: {detail}")]
    Corruption { what: String, detail: String },
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    #[error("database is closed")]
    Closed,
    /// Another process holds the database directory.
    #[error("{0} is locked by another process")]
    Locked(PathBuf),
    #[error("{component} failed: {detail}")]
    Component { component: String, detail: String },
    /// Another writer took the database over (a newer epoch): this one may no longer change
    /// it. Nothing it wrote before is lost; nothing more of it is accepted.
    #[error("fenced: {0}")]
    Fenced(String),
    /// A live writer holds the database's lease (its journal is its node's own, so only the
    /// lease keeps two writers apart): it must stop, or its lease run out, first.
    #[error("held by another writer: {0}")]
    Held(String),
    /// A transaction's commit found a key changed since its snapshot: nothing of it was
    /// written, and it may be run again.
    #[error("transaction conflict: {0}")]
    Conflict(String),
    /// The shard a call named is not served where it was sent (it moved, or waits for an
    /// owner): the caller routed by a stale cluster map. Nothing of the call was applied, so
    /// it may be sent again where the map now says.
    #[error("moved: {0}")]
    Moved(String),
    /// The server could not be reached (its connection was refused): the call was never
    /// sent, so nothing of it was applied.
    #[error("{0}: server unavailable, nothing was sent")]
    Unreached(String),
}

impl Error {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    pub fn corruption(what: impl Into<String>, detail: impl Into<String>) -> Self {
        Error::Corruption {
            what: what.into(),
            detail: detail.into(),
        }
    }

    pub fn component(component: impl Into<String>, detail: impl std::fmt::Display) -> Self {
        Error::Component {
            component: component.into(),
            detail: detail.to_string(),
        }
    }

    pub fn is_corruption(&self) -> bool {
        matches!(self, Error::Corruption { .. })
    }

    pub fn is_fenced(&self) -> bool {
        matches!(self, Error::Fenced(_))
    }

    pub fn is_moved(&self) -> bool {
        matches!(self, Error::Moved(_))
    }

    /// Whether the call certainly changed nothing where it was sent, so it may be sent again
    /// (to where a fresh cluster map says): the shard moved, or the server was not reached.
    pub fn not_applied(&self) -> bool {
        matches!(self, Error::Moved(_) | Error::Unreached(_))
    }

    /// The same error again, for each of the callers a shared failure answers (a group
    /// commit's writers, the calls after a sticky failure). An I/O error keeps its kind and
    /// message.
    pub fn duplicate(&self) -> Error {
        match self {
            Error::Io { path, source } => Error::Io {
                path: path.clone(),
                source: std::io::Error::new(source.kind(), source.to_string()),
            },
            Error::Corruption { what, detail } => Error::corruption(what, detail),
            Error::InvalidArgument(m) => Error::InvalidArgument(m.clone()),
            Error::Closed => Error::Closed,
            Error::Locked(p) => Error::Locked(p.clone()),
            Error::Component { component, detail } => Error::component(component, detail),
            Error::Fenced(m) => Error::Fenced(m.clone()),
            Error::Held(m) => Error::Held(m.clone()),
            Error::Conflict(m) => Error::Conflict(m.clone()),
            Error::Moved(m) => Error::Moved(m.clone()),
            Error::Unreached(m) => Error::Unreached(m.clone()),
        }
    }
}

/// Attaches a path to `std::io::Error`s.
pub trait IoContext<T> {
    fn at(self, path: impl Into<PathBuf>) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn at(self, path: impl Into<PathBuf>) -> Result<T> {
        self.map_err(|e| Error::io(path, e))
    }
}
