//! What the `hgbuild` program does beyond [`crate::Client`]: how it was
//! invoked, one compile per process, and the status commands.
//!
//! # Parts
//!
//! | file | what |
//! |---|---|
//! | `command.rs` | the invocation forms, logging, one compiler command as a process |
//! | `status.rs` | `hgbuild status`, `stats` and `cache` |

mod command;
mod status;

pub use crate::build::{default_jobs, wrap};
pub use crate::client::{ENV_NO_FALLBACK, ENV_VERBOSE, RunOptions, find_real_compiler};
pub use crate::dial::{BoxCompile, LazyCoordinator, remote_stack, security_env};
pub use crate::events::{BuildSummary, CompileEvent, ENV_EVENTS};
pub use command::{
    Invocation, compile, configured_compiler, init_logging, looks_like_compiler, run_ccache,
};
pub use status::{CacheAction, cache_command, stats, status};

pub use crate::masquerade::MASQUERADE_NAMES;
