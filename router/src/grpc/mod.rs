//! Shards over gRPC: `shard_service` serves one local shard, and `GrpcShard` is a `Shard` that
//! calls such a server. Every call carries the shard identity the router expects.

mod client;
mod server;

/// The generated messages and service stubs of `proto/shard.proto`.
#[allow(clippy::all, missing_docs)]
pub mod pb {
    tonic::include_proto!("cairn.shard");

    /// The service's protobuf descriptors, which its server answers reflection requests from.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/descriptors.bin"));
}

pub use client::GrpcShard;
pub use server::{ShardHost, ShardService, host_service, shard_service};

/// Scans and imports move pairs in messages of about this many bytes.
const CHUNK_BYTES: usize = 64 << 10;

use crate::cluster::ShardIdentity;
use bytes::Bytes;
use cairn_common::{Error, Result};

impl From<ShardIdentity> for pb::ShardTag {
    fn from(id: ShardIdentity) -> Self {
        pb::ShardTag {
            cluster: id.cluster,
            index: id.index,
            count: id.count,
            generation: id.generation,
        }
    }
}

impl From<pb::ShardTag> for ShardIdentity {
    fn from(t: pb::ShardTag) -> Self {
        ShardIdentity {
            cluster: t.cluster,
            index: t.index,
            count: t.count,
            generation: t.generation,
        }
    }
}

fn pairs_message(pairs: Vec<(Bytes, Bytes)>) -> pb::Pairs {
    let (keys, values) = pairs.into_iter().unzip();
    pb::Pairs { keys, values }
}

fn pairs_of(p: pb::Pairs) -> Result<Vec<(Bytes, Bytes)>> {
    if p.keys.len() != p.values.len() {
        return Err(Error::InvalidArgument(format!(
            "{} keys but {} values",
            p.keys.len(),
            p.values.len()
        )));
    }
    Ok(p.keys.into_iter().zip(p.values).collect())
}

fn pair_bytes(p: &(Bytes, Bytes)) -> usize {
    p.0.len() + p.1.len() + 8
}

#[cfg(test)]
mod tests;
