//! What the gRPC services of every component share: the protobuf messages for entries, table
//! metadata, ranges and aggregates; client and server options (deadlines, retries, TLS, the
//! bearer token, message size bounds); connecting, authenticating and serving; and the
//! mapping between `Error` and gRPC status codes, so a remote failure names its component and
//! URL and a corrupt table stays a corruption on the far side of the wire.

mod access;
mod client;
mod coalesce;
mod convert;
mod databases;
mod metered;
mod options;
mod progress;
mod server;

/// Makes ring the process's TLS crypto provider unless one is set already. With more than
/// one provider compiled in (object_store brings aws-lc-rs), rustls would refuse to pick.
pub(crate) fn tls_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// The generated protobuf messages of `proto/common.proto`.
#[allow(clippy::all, missing_docs)]
pub mod pb {
    tonic::include_proto!("cairn.common");
}

/// The metadata key naming which of a server's databases a call is about.
pub const DATABASE_HEADER: &str = "cairn-database";

/// The database a call names, `default` when it names none.
pub fn database_of<T>(req: &tonic::Request<T>) -> Result<String, tonic::Status> {
    let Some(v) = req.metadata().get(DATABASE_HEADER) else {
        return Ok(DEFAULT_DATABASE.to_string());
    };
    let name = v
        .to_str()
        .map_err(|_| tonic::Status::invalid_argument("the database name is not ASCII"))?;
    check_database_name(name).map_err(|e| tonic::Status::invalid_argument(e.to_string()))?;
    Ok(name.to_string())
}

/// The database of a server's clients that name none.
pub const DEFAULT_DATABASE: &str = "default";

/// A database name becomes a directory or an object prefix on the server: 1 to 64 of
/// `A-Z a-z 0-9 _ - .`, not starting with a dot.
pub fn check_database_name(name: &str) -> cairn_common::Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.');
    if ok {
        Ok(())
    } else {
        Err(cairn_common::Error::InvalidArgument(format!(
            "database name `{name}`: use 1 to 64 of A-Z a-z 0-9 _ - . (not starting with a dot)"
        )))
    }
}

pub use access::{Access, ScopedToken, check_access};
pub use client::{Auth, RpcChannel, RpcClient, connect};
pub use convert::{decode_entries, decode_meta, decode_range, encode_entries};
pub use databases::{Databases, MAX_DATABASES};
pub use options::{ClientOptions, ServerOptions};
pub use progress::{
    ProgressMessage, counting_progress, heartbeat_interval, lost_server, never_sent, with_progress,
};
pub use server::{
    DRAIN_GRACE, ServerAuth, ServerHandle, ServerRouter, StatusStream, builder, check_exposure,
    chunked, serve, status,
};
