//! # hybridgrid-exec
//!
//! Running compilers: detecting which ones a machine has
//! ([`detect`]), and executors that compile a [`CompileTask`] into a
//! [`CompileOutput`]: [`native`], `docker` (cargo feature `docker`), and
//! [`routing`] to combine them; [`worker_stack`] builds a worker's stack of
//! them from its configuration.
//!
//! An [`Executor`] is any `tower::Service<CompileTask>` with the right
//! response and error types; write your own and it plugs into a worker.
//!
//! ```no_run
//! use hybridgrid_exec::{detect, native::NativeExecutor, Executor};
//!
//! # async fn run() -> Result<(), hybridgrid_core::BoxError> {
//! let compilers = detect::detect_compilers(&detect::DetectOptions::default()).await;
//! let exec = NativeExecutor::new(compilers, Default::default());
//! fn takes_executor<E: Executor>(_e: E) {}
//! takes_executor(exec);
//! # Ok(()) }
//! ```
//!
//! [`CompileTask`]: hybridgrid_core::task::CompileTask
//! [`CompileOutput`]: hybridgrid_core::task::CompileOutput

/// The builder methods every executor's options share, for a struct with
/// the fields `task_timeout`, `max_input_bytes`, `max_output_bytes` and
/// `work_root` (the native and Docker options).
macro_rules! task_bound_builders {
    ($options:ty) => {
        impl $options {
            /// Options with this timeout.
            pub fn with_timeout(mut self, t: std::time::Duration) -> Self {
                self.task_timeout = t;
                self
            }

            /// Options with this output bound.
            pub fn with_max_output_bytes(mut self, n: u64) -> Self {
                self.max_output_bytes = n;
                self
            }

            /// Options with this bound on the decoded input (each file).
            pub fn with_max_input_bytes(mut self, n: u64) -> Self {
                self.max_input_bytes = n;
                self
            }

            /// Options with this work root.
            pub fn with_work_root(mut self, p: impl Into<std::path::PathBuf>) -> Self {
                self.work_root = Some(p.into());
                self
            }
        }
    };
}

pub mod args;
pub mod detect;
#[cfg(feature = "docker")]
pub mod docker;
pub mod input_store;
pub mod native;
pub mod routing;
pub mod source_tree;
pub mod work_dir;
pub mod worker_stack;

use hybridgrid_core::BoxError;
use hybridgrid_core::task::{CompileOutput, CompileTask};

/// A service that compiles tasks: the native executor, the Docker executor,
/// or a plugin of your own.
pub trait Executor:
    tower::Service<CompileTask, Response = CompileOutput, Error = BoxError, Future: Send>
    + Clone
    + Send
    + 'static
{
}

impl<S> Executor for S where
    S: tower::Service<CompileTask, Response = CompileOutput, Error = BoxError, Future: Send>
        + Clone
        + Send
        + 'static
{
}
