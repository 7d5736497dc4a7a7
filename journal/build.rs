//! Compiles the journal service (`proto/journal.proto`).

include!("../rpc/proto/build_protos.rs");

fn main() -> Result<(), Box<dyn std::error::Error>> {
    compile_service("proto/journal.proto")
}
