//! Compiles the compaction service (`proto/compaction.proto`).

include!("../rpc/proto/build_protos.rs");

fn main() -> Result<(), Box<dyn std::error::Error>> {
    compile_service("proto/compaction.proto")
}
