//! What a call's token admits it to: every database (the server's `token`, or any call when
//! the server checks none), or some databases, perhaps to read only (a scoped token, so a
//! tenant of a shared server reaches only its own). The token check records it on the call;
//! services check it against the database a call names and whether the call writes.

use serde::{Deserialize, Serialize};
use std::sync::Arc;
use tonic::{Request, Status};

/// A token for some databases of a server (`rpc.scoped_tokens`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScopedToken {
    pub token: String,
    /// The names calls give their database (`journal.database`, `storage.database`; a shard
    /// server's one database is `default`).
    pub databases: Vec<String>,
    /// Reads only: appends, claims, truncations, table and manifest writes, deletions,
    /// writes, imports, flushes, compactions and checkpoint changes are refused.
    #[serde(default)]
    pub read_only: bool,
}

#[derive(Debug, Clone)]
pub enum Access {
    All,
    Scoped {
        databases: Arc<[String]>,
        read_only: bool,
    },
}

impl From<&ScopedToken> for Access {
    fn from(t: &ScopedToken) -> Self {
        Access::Scoped {
            databases: t.databases.clone().into(),
            read_only: t.read_only,
        }
    }
}

/// Refuses a call whose token does not reach `database`, or that `writes` with a token that
/// only reads.
pub fn check_access<T>(req: &Request<T>, database: &str, writes: bool) -> Result<(), Status> {
    match req.extensions().get::<Access>() {
        None | Some(Access::All) => Ok(()),
        Some(Access::Scoped { databases, .. }) if !databases.iter().any(|d| d == database) => Err(
            Status::permission_denied(format!("this token does not reach database `{database}`")),
        ),
        Some(Access::Scoped {
            read_only: true, ..
        }) if writes => Err(Status::permission_denied(format!(
            "this token only reads database `{database}`"
        ))),
        Some(Access::Scoped { .. }) => Ok(()),
    }
}
