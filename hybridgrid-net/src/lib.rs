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
//! ```
//! use hybridgrid_core::GridError;
//! use hybridgrid_net::status::{from_status, to_status};
//!
//! // Grid errors survive the trip through a gRPC status.
//! let status = to_status(&GridError::CircuitOpen);
//! assert_eq!(from_status(&status, "coordinator"), GridError::CircuitOpen);
//! ```

pub mod auth;
pub mod client;
pub mod convert;
pub mod coordinator;
pub mod discovery;
pub mod http;
pub mod obs;
pub mod security;
pub mod server;
pub mod status;
pub mod tasks;
pub mod tls;
pub mod worker;

/// Generated code of the `hybridgrid.v1` protocol.
#[allow(missing_docs, unreachable_pub, clippy::all, clippy::pedantic)]
pub mod proto {
    tonic::include_proto!("hybridgrid.v1");
}

/// The largest gRPC message accepted or sent (compressed payloads of large
/// preprocessed sources fit easily; tonic's 4 MiB default would not).
pub const MAX_MESSAGE_BYTES: usize = 512 * 1024 * 1024;

/// The version of this build.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
