// Shared by the build scripts of the crates with a gRPC service (`include!`d, since build
// scripts cannot share a library without a crate of their own): compiles one service with a
// vendored `protoc`, so builds need none installed, against the shared `common.proto`.

fn compile_service(proto: &str) -> Result<(), Box<dyn std::error::Error>> {
    if std::env::var_os("PROTOC").is_none() {
        // SAFETY: build scripts are single-threaded; nothing else reads the environment here.
        unsafe { std::env::set_var("PROTOC", protoc_bin_vendored::protoc_bin_path()?) };
    }
    // The service's descriptors (with the imported common.proto), for server reflection.
    let descriptors = std::path::PathBuf::from(std::env::var("OUT_DIR")?).join("descriptors.bin");
    tonic_prost_build::configure()
        .bytes(".")
        .extern_path(".cairn.common", "::cairn_rpc::pb")
        .file_descriptor_set_path(descriptors)
        .compile_protos(&[proto], &["proto", "../rpc/proto"])?;
    println!("cargo:rerun-if-changed={proto}");
    println!("cargo:rerun-if-changed=../rpc/proto/common.proto");
    Ok(())
}
