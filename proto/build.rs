//! Compiles `proto/ovnet.proto` with protox (pure Rust), so our own build
//! needs no system `protoc`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/ovnet.proto");
    let fds = protox::compile(["proto/ovnet.proto"], ["proto"])?;
    tonic_prost_build::configure().compile_fds(fds)?;
    Ok(())
}
