//! # hybridgrid (binaries)
//!
//! The composition of the library crates into the three programs
//! `hg-coord`, `hg-worker` and `hgbuild`. Each `main` parses flags, builds
//! the configuration and calls into this crate; the same functions start an
//! in-process coordinator or worker for tests and examples.

pub mod cli;
pub mod coord;
pub mod executor;
pub mod heap;
pub mod hgbuild;
pub mod trace;
pub mod worker;
