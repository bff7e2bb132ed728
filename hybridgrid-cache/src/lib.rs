//! # hybridgrid-cache
//!
//! Content-addressed compile cache: keys, entries, stores and the cache layer.

pub mod entry;
pub mod key;
