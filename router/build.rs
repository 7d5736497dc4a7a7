//! Compiles the shard service (`proto/shard.proto`).

include!("../rpc/proto/build_protos.rs");

fn main() -> Result<(), Box<dyn std::error::Error>> {
    compile_service("proto/shard.proto")
}
