//! What the gRPC services of every component share: the protobuf messages for entries, table
//! metadata, ranges and aggregates; client and server options (deadlines, retries, TLS, the
//! bearer token, message size bounds); connecting, authenticating and serving; and the
//! mapping between `Error` and gRPC status codes, so a remote failure names its component and
//! URL and a corrupt table stays a corruption on the far side of the wire.

mod client;
mod coalesce;
mod convert;
mod options;
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

pub use client::{Auth, RpcChannel, RpcClient, connect};
pub use convert::{decode_entries, decode_meta, decode_range, encode_entries};
pub use options::{ClientOptions, ServerOptions};
pub use server::{ServerAuth, ServerHandle, StatusStream, builder, chunked, serve, status};
