//! Compiles the shared protobuf messages with a vendored `protoc`, so builds need none installed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    if std::env::var_os("PROTOC").is_none() {
        // SAFETY: build scripts are single-threaded; nothing else reads the environment here.
        unsafe { std::env::set_var("PROTOC", protoc_bin_vendored::protoc_bin_path()?) };
    }
    tonic_prost_build::configure()
        .bytes(".")
        .build_server(false)
        .build_client(false)
        .compile_protos(&["proto/common.proto"], &["proto"])?;
    println!("cargo:rerun-if-changed=proto/common.proto");
    Ok(())
}
