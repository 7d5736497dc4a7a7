//! Compiles the compaction service with a vendored `protoc`, so builds need none installed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    if std::env::var_os("PROTOC").is_none() {
        // SAFETY: build scripts are single-threaded; nothing else reads the environment here.
        unsafe { std::env::set_var("PROTOC", protoc_bin_vendored::protoc_bin_path()?) };
    }
    tonic_prost_build::configure()
        .bytes(".")
        .extern_path(".cairn.common", "::cairn_common::rpc::pb")
        .compile_protos(&["proto/compaction.proto"], &["proto", "../common/proto"])?;
    println!("cargo:rerun-if-changed=proto/compaction.proto");
    Ok(())
}
