//! # hybridgrid-cache
//!
//! Content-addressed compile cache: keys, entries, stores and the cache layer.

pub mod direct;
pub mod entry;
pub mod key;
pub mod layer;
pub mod store;

pub use entry::CacheEntry;
pub use key::{CacheKey, FORMAT_VERSION, KeyParams};
pub use layer::{Cache, CacheLayer};
pub use store::{CacheStats, CacheStore, DiskStore, Lookup, MemoryStore, PutOutcome};
