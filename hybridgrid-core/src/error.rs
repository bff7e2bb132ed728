//! Errors shared across crates.

/// The error type at service boundaries.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;
