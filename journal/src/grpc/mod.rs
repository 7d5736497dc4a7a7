//! The journal over gRPC: a server that serves any local `Journal`, and `GrpcJournal`, a
//! client that is itself a `Journal`, so the engine cannot tell a remote log from a local one.

mod client;
mod server;

/// The generated messages and service stubs of `proto/journal.proto`.
#[allow(clippy::all, missing_docs)]
pub mod pb {
    tonic::include_proto!("cairn.journal");

    /// The service's protobuf descriptors, which its server answers reflection requests from.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/descriptors.bin"));
}

pub use client::GrpcJournal;
pub use server::{JournalService, journal_service, journal_service_for};

#[cfg(test)]
mod tests;
