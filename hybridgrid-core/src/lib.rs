//! # hybridgrid-core
//!
//! The parts of hybridgrid that know nothing of the network or of processes:
//! the task and worker model, configuration, logging, and (as they land) the
//! scheduler, circuit breaker and retry policy, all usable as tower services
//! by other build tools.
//!
//! ```
//! use hybridgrid_core::payload::Payload;
//! use hybridgrid_core::task::{CompileTask, CompilerFamily, CompilerIdentity, DriverKind, Language};
//!
//! let gcc = CompilerIdentity {
//!     family: CompilerFamily::Gcc,
//!     driver: DriverKind::C,
//!     version: "12.2.0".into(),
//!     target: "x86_64-linux-gnu".into(),
//! };
//! let task = CompileTask::new(gcc, Language::PreprocessedC, vec!["-O2".into()], "x.c",
//!                             Payload::compress(&b"int x;\n"[..]));
//! assert_eq!(task.target_arch.as_str(), "amd64");
//! ```

#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod addr;
pub mod admission;
pub mod breaker;
pub mod can_run;
pub mod config;
pub mod error;
pub mod hedge;
pub mod hex;
pub mod identity;
pub mod logging;
pub mod payload;
pub mod preprocessed;
pub mod registry;
pub mod retry;
pub mod scheduler;
#[cfg(any(test, feature = "sim"))]
pub mod sim;
pub mod task;
pub mod worker;

#[cfg(test)]
mod testutil;

pub use error::{BoxError, GridError};
