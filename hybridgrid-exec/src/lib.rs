//! hybridgrid execution: the compiler command-line model, compiler detection
//! and executors.
//!
//! ```
//! use hybridgrid_exec::args::{classify, Classification};
//! use hybridgrid_core::task::{CompilerFamily, DriverKind};
//!
//! let argv: Vec<std::ffi::OsString> = ["-c", "foo.c", "-o", "foo.o"].iter().map(Into::into).collect();
//! assert!(matches!(
//!     classify(CompilerFamily::Gcc, DriverKind::C, &argv),
//!     Classification::Distributable(_)
//! ));
//! ```

pub mod args;
