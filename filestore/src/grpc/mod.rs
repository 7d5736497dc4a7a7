//! Table storage over gRPC: a server that serves any local `Storage` (SSTables, Parquet, a
//! hybrid store), and `GrpcStorage`, a client that is itself a `Storage`, with a block cache
//! so that hot reads do not cross the network.

mod client;
mod manifest;
mod server;

/// The generated messages and service stubs of `proto/storage.proto`.
#[allow(clippy::all, missing_docs)]
pub mod pb {
    tonic::include_proto!("cairn.storage");

    /// The service's protobuf descriptors, which its server answers reflection requests from.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/descriptors.bin"));
}

pub use client::GrpcStorage;
pub use manifest::GrpcManifestStore;
pub use server::{StorageService, storage_service, storage_service_for};

/// Scans and table writes move entries in messages of about this many bytes.
const BLOCK_BYTES: usize = 64 << 10;

#[cfg(test)]
mod tests;
