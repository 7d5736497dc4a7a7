//! The router: one keyspace spread over shards, each a full Cairn engine. A local shard is a
//! `Db` in this process, called directly; a remote one is a shard server (`cairn serve
//! shard`) reached over gRPC. Keys map to shards either by `seahash(key) % shards`
//! (`partition.rs`), a list fixed when the cluster is created and checked on every open and
//! every remote call (`cluster.rs`), or by key ranges in a cluster map (`map`) that nodes
//! (`node.rs`, `cairn serve node`) follow and routers follow (`following.rs`).

mod cluster;
#[cfg(any(test, feature = "conformance"))]
pub mod conformance;
mod following;
mod gate;
pub mod grpc;
mod local;
pub mod map;
mod metered;
mod node;
mod partition;
mod query;
mod replicated;
mod router;
mod routing;
mod shard;

pub use cluster::{Cluster, IdentitySlot, ShardIdentity};
pub use following::{Connect, MapFollower};
pub use grpc::{GrpcShard, ShardHost, host_service, shard_service};
pub use local::{IMPORT_TABLE_BYTES, LocalShard};
pub use metered::MeteredShard;
pub use node::{Node, NodeOptions, ShardDatabases};
pub use partition::{Partitioner, SCHEME};
pub use replicated::ReplicatedShard;
pub use router::{Router, ShardStats};
pub use routing::Routing;
pub use shard::{CheckpointOp, ImportStream, PairStream, Shard};
