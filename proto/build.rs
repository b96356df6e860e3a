//! Compiles `proto/danmu/internal.proto` with protox (pure Rust, so no `protoc` on the build
//! machine) and prost-build. `bytes` fields become `bytes::Bytes` so an `EdgeBatch.packet` can be
//! handed to every gateway connection without copying.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    const PROTO: &str = "proto/danmu/internal.proto";
    println!("cargo:rerun-if-changed={PROTO}");
    let fds = protox::compile([PROTO], ["proto"])?;
    prost_build::Config::new().bytes(["."]).compile_fds(fds)?;
    Ok(())
}
