//! # hybridgrid-client
//!
//! The client side of hybridgrid, for `hgbuild` and for build tools that
//! embed the grid: one compile command through any
//! `tower::Service<CompileTask>` (the coordinator's client, a cache layer
//! around it, or your own), with local fallback, and the local cache with
//! direct mode in front of it.
//!
//! - [`Client`]: built from configuration, it compiles one command at a
//!   time with local fallback (dialling the coordinator once for all of
//!   them), runs a whole wrapped build ([`Client::run_build`]), and keeps
//!   the build's event stream ([`events`]) from which its summary and its
//!   trace are drawn.
//! - [`compile`] / [`compile_with`]: the same for one command through any
//!   compile service you give it: classify a command line, preprocess
//!   here, compile remotely, write the outputs, or run the compiler locally
//!   when the command is not distributable or the grid cannot help.
//! - [`local_cache::LocalCache`]: the local tier and direct mode (a result
//!   found without running the preprocessor).
//! - [`masquerade`]: the compiler links a wrapped build puts in PATH, CC and
//!   CXX, which configured build directories record.
//! - [`events`]: one event per compiler invocation; [`trace`]: the
//!   Chrome/Perfetto trace drawn from them.
//! - [`hgbuild`]: what the `hgbuild` program does beyond that: how it was
//!   invoked, one compile per process, and the status commands.
//! - [`remote_cache`]: the `cache.remote` tier behind a local one.
//!
//! It builds on `hybridgrid-exec` (the argument model, compiler detection),
//! `hybridgrid-cache` and `hybridgrid-net` (the coordinator's client,
//! discovery); nothing below it depends on it.

mod build;
mod client;
mod compile;
mod dial;
pub mod events;
pub mod hgbuild;
pub mod local_cache;
pub mod masquerade;
pub mod remote_cache;
mod search_memo;
pub mod trace;

pub use client::{Client, RunOptions};
pub use compile::{
    ClientOptions, LocalCache, Outcome, PrepareError, Prepared, Route, adds_color, apply_output,
    compile, compile_with, context_files, prepare, run_local, source_mode_refusal, write_atomic,
};
