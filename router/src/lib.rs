//! The router: one keyspace spread over shards, each a full Cairn engine. A local shard is a
//! `Db` in this process, called directly; a remote one is a shard server (`cairn serve
//! shard`) reached over gRPC. Keys map to shards by `seahash(key) % shards` (`partition.rs`),
//! fixed when the cluster is created and checked on every open and every remote call
//! (`cluster.rs`).

mod cluster;
#[cfg(any(test, feature = "conformance"))]
pub mod conformance;
pub mod grpc;
mod local;
pub mod map;
mod metered;
mod partition;
mod replicated;
mod router;
mod shard;

pub use cluster::{Cluster, IdentitySlot, ShardIdentity};
pub use grpc::{GrpcShard, shard_service};
pub use local::{IMPORT_TABLE_BYTES, LocalShard};
pub use metered::MeteredShard;
pub use partition::{Partitioner, SCHEME};
pub use replicated::ReplicatedShard;
pub use router::{Router, ShardStats};
pub use shard::{CheckpointOp, ImportStream, PairStream, Shard};
