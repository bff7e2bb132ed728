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

pub mod args;
pub mod detect;
#[cfg(feature = "docker")]
pub mod docker;
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
