//! Compiles the hybridgrid.v1 protocol with the pure-Rust protox compiler
//! (no system protoc needed).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "proto/hybridgrid/v1/hybridgrid.proto";
    println!("cargo:rerun-if-changed={proto}");
    let fds = protox::compile([proto], ["proto"])?;
    tonic_prost_build::configure().bytes(".").compile_fds(fds)?;
    Ok(())
}
