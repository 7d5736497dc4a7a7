//! What the gRPC services of every component share: the protobuf messages for entries, table
//! metadata, ranges and aggregates; client and server options (deadlines, retries, TLS, the
//! bearer token, message size bounds); connecting, authenticating and serving; and the
//! mapping between `Error` and gRPC status codes, so a remote failure names its component and
//! URL and a corrupt table stays a corruption on the far side of the wire.

mod client;
mod convert;
mod options;
mod server;

/// The generated protobuf messages of `proto/common.proto`.
#[allow(clippy::all, missing_docs)]
pub mod pb {
    tonic::include_proto!("cairn.common");
}

pub use client::{Auth, RpcChannel, RpcClient, connect};
pub use convert::{decode_entries, decode_meta, decode_range, encode_entries};
pub use options::{ClientOptions, ServerOptions};
pub use server::{ServerAuth, ServerHandle, builder, serve, status};
