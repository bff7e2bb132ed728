//! # hybridgrid-client
//!
//! The client side of hybridgrid, for `hgbuild` and for build tools that
//! embed the grid: one compile command through any
//! `tower::Service<CompileTask>` (the coordinator's client, a cache layer
//! around it, or your own), with local fallback, and the local cache with
//! direct mode in front of it.
//!
//! - [`compile`] / [`compile_with`]: classify a command line, preprocess
//!   here, compile remotely, write the outputs, or run the compiler locally
//!   when the command is not distributable or the grid cannot help.
//! - [`local_cache::LocalCache`]: the local tier and direct mode (a result
//!   found without running the preprocessor).
//! - [`masquerade`]: the compiler links a wrapped build puts in PATH, CC and
//!   CXX, which configured build directories record.
//! - [`trace`]: a Chrome/Perfetto trace of a build's compiles.
//! - [`hgbuild`]: what the `hgbuild` program does: one compiler command
//!   through the coordinator, a wrapped build, and the status commands.
//! - [`remote_cache`]: the `cache.remote` tier behind a local one.
//!
//! It builds on `hybridgrid-exec` (the argument model, compiler detection),
//! `hybridgrid-cache` and `hybridgrid-net` (the coordinator's client,
//! discovery); nothing below it depends on it.

mod compile;
pub mod hgbuild;
pub mod local_cache;
pub mod masquerade;
pub mod remote_cache;
mod search_memo;
pub mod trace;

pub use compile::{
    ClientOptions, LocalCache, Outcome, PrepareError, Prepared, Route, adds_color, apply_output,
    compile, compile_with, context_files, prepare, run_local, source_mode_refusal, write_atomic,
};
