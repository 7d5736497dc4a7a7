//! Compaction over gRPC: a server that runs jobs with any local `Compactor` (against the
//! server's own storage), and `GrpcCompactor`, a client that is itself a `Compactor`. A job
//! the server cannot take is retried with backoff and, if the node stays down, run by a local
//! fallback compactor when one is configured.

mod client;
mod server;

/// The generated messages and service stubs of `proto/compaction.proto`.
#[allow(clippy::all, missing_docs)]
pub mod pb {
    tonic::include_proto!("cairn.compaction");

    /// The service's protobuf descriptors, which its server answers reflection requests from.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/descriptors.bin"));
}

pub use client::{GrpcCompactor, RemoteCompactionStats};
pub use server::{CompactionService, DEFAULT_SLOTS, compaction_service, compaction_service_for};

#[cfg(test)]
mod tests;
