//! # hybridgrid-net
//!
//! The network side of hybridgrid: the versioned `hybridgrid.v1` gRPC
//! protocol ([`proto`]), conversions to the core model ([`convert`]),
//! clients for the coordinator and workers ([`client`]), the gRPC services
//! of the coordinator ([`coordinator`]) and the worker ([`worker`]), and
//! the HTTP endpoints ([`http`]), and how workers and the coordinator
//! find each other ([`discovery`]: static lists, mDNS behind the `mdns`
//! feature), with TLS ([`tls`]) and token authentication ([`auth`])
//! on every connection when configured ([`security`]).
//!
//! All of that is the default `runtime` feature. With
//! `default-features = false` only the protocol messages ([`proto`]), their
//! conversions ([`convert`]) and the certificate name reader
//! (`tls::CertNames`) remain, without tonic, hyper, axum or rustls: the
//! fuzz targets (`fuzz/`) build on that.
//!
//! ```
//! use hybridgrid_core::GridError;
//! use hybridgrid_net::status::{from_status, to_status};
//!
//! // Grid errors survive the trip through a gRPC status.
//! let status = to_status(&GridError::CircuitOpen);
//! assert_eq!(from_status(&status, "coordinator"), GridError::CircuitOpen);
//! ```

#[cfg(feature = "runtime")]
pub mod auth;
#[cfg(feature = "runtime")]
pub mod client;
pub mod convert;
#[cfg(feature = "runtime")]
pub mod coordinator;
#[cfg(feature = "runtime")]
pub mod discovery;
#[cfg(feature = "runtime")]
pub mod heap;
#[cfg(feature = "runtime")]
pub mod http;
#[cfg(feature = "runtime")]
pub mod metrics;
#[cfg(feature = "runtime")]
pub mod obs;
#[cfg(feature = "runtime")]
pub mod reapi;
#[cfg(feature = "runtime")]
pub mod run;
#[cfg(feature = "runtime")]
pub mod security;
#[cfg(feature = "runtime")]
pub mod server;
#[cfg(feature = "runtime")]
pub mod status;
#[cfg(feature = "runtime")]
pub mod tasks;
#[cfg(feature = "runtime")]
pub mod tls;
/// TLS: without the `runtime` feature only the certificate name reader.
#[cfg(not(feature = "runtime"))]
pub mod tls {
    mod names;
    pub use names::CertNames;
}
#[cfg(feature = "runtime")]
pub mod worker;

/// Generated code of the `hybridgrid.v1` protocol.
#[allow(missing_docs, unreachable_pub, clippy::all, clippy::pedantic)]
pub mod proto {
    // The messages, and with the `runtime` feature the gRPC clients and
    // services.
    include!(concat!(env!("OUT_DIR"), "/hybridgrid.v1.rs"));
}

/// The largest gRPC message accepted or sent (compressed payloads of large
/// preprocessed sources fit easily; tonic's 4 MiB default would not).
pub const MAX_MESSAGE_BYTES: usize = 512 * 1024 * 1024;

/// Compile responses smaller than this go out without gRPC compression:
/// their files are compressed by their producer already, and for a few
/// hundred bytes a fresh zstd context (tonic makes one per message) costs
/// more CPU on both ends than the bytes saved.
pub const COMPRESS_MIN_BYTES: usize = 8 * 1024;

/// A compile response, compressed on the wire only when it is at least
/// [`COMPRESS_MIN_BYTES`] long (encoded).
#[cfg(feature = "runtime")]
pub(crate) fn compile_response(
    resp: proto::CompileResponse,
    encoded_len: usize,
) -> tonic::Response<proto::CompileResponse> {
    let mut r = tonic::Response::new(resp);
    if encoded_len < COMPRESS_MIN_BYTES {
        r.disable_compression();
    }
    r
}

/// The version of this build.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
