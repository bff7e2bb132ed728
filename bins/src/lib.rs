//! # hybridgrid (binaries)
//!
//! The composition of the library crates into the three programs
//! `hg-coord`, `hg-worker` and `hgbuild`. Each `main` parses flags, builds
//! the configuration and calls into this crate; the same functions start an
//! in-process coordinator or worker for tests and examples.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use hybridgrid_core::config::ConfigLoader;
//!
//! // A coordinator on free loopback ports, mDNS off, as the tests start it.
//! let cfg = ConfigLoader::new()
//!     .no_search()
//!     .set("coordinator.bind_address", "127.0.0.1")
//!     .set("coordinator.grpc_port", 0)
//!     .set("coordinator.http_port", 0)
//!     .set("discovery.mdns.enabled", false)
//!     .load()?;
//! let coord = hybridgrid::coord::start(&cfg).await?;
//! println!("gRPC on {}, dashboard on http://{}/", coord.grpc_addr, coord.http_addr);
//! coord.shutdown(std::time::Duration::from_secs(5)).await;
//! # Ok(())
//! # }
//! ```
//!
//! Every program reports its version and the features it was built with:
//!
//! ```
//! assert!(hybridgrid::cli::version().starts_with(env!("CARGO_PKG_VERSION")));
//! ```

pub mod cli;
pub mod coord;
pub mod heap;
pub use hybridgrid_net::heap_profiling_allocator;
pub mod worker;

/// The worker's executor stack, built from its configuration (moved to
/// `hybridgrid_exec::worker_stack`; kept at its old path).
pub use hybridgrid_exec::worker_stack as executor;

/// Moved to the client crate; kept at their old paths.
pub use hybridgrid_client::{hgbuild, masquerade, remote_cache, trace};
