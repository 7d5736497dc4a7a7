//! Compiles the storage service (`proto/storage.proto`).

include!("../rpc/proto/build_protos.rs");

fn main() -> Result<(), Box<dyn std::error::Error>> {
    compile_service("proto/storage.proto")
}
