//! Compiles the hybridgrid.v1 protocol with the pure-Rust protox compiler
//! (no system protoc needed).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "proto/hybridgrid/v1/hybridgrid.proto";
    println!("cargo:rerun-if-changed={proto}");
    let fds = protox::compile([proto], ["proto"])?;
    // Without the `runtime` feature (the fuzz targets) the messages only:
    // the generated clients and services need tonic.
    let services = std::env::var_os("CARGO_FEATURE_RUNTIME").is_some();
    tonic_prost_build::configure()
        .build_client(services)
        .build_server(services)
        .bytes(".")
        .compile_fds(fds)?;
    Ok(())
}
