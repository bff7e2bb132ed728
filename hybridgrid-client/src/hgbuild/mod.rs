//! What `hgbuild` does: compile as a drop-in compiler, wrap a build tool
//! so every compile goes through the grid, and show the grid's state.
//!
//! # Parts
//!
//! | file | what |
//! |---|---|
//! | `command.rs` | one compiler command: finding the real compiler, compiling through the grid, recording the event |
//! | `coordinator.rs` | dialling the coordinator (in the background, with TLS and token) and the compile stack |
//! | `build.rs` | a wrapped build (`hgbuild make`/`ninja`/`cmake`): the links, the environment, progress and summary |
//! | `status.rs` | `hgbuild status`, `stats` and `cache` |

mod build;
mod command;
mod coordinator;
mod status;

pub use build::{BuildSummary, default_jobs, wrap};
pub use command::{
    CompileEvent, ENV_EVENTS, ENV_NO_FALLBACK, ENV_VERBOSE, RunOptions, compile,
    find_real_compiler, looks_like_compiler,
};
pub use coordinator::{BoxCompile, LazyCoordinator, remote_stack, security_env};
pub use status::{CacheAction, cache_command, stats, status};

pub use crate::masquerade::MASQUERADE_NAMES;
