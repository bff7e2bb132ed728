//! Where cache entries live.
//!
//! [`CacheStore`] is the small interface every tier implements: [`DiskStore`]
//! (the client's local cache, shared by every `hgbuild` process of a build),
//! [`PackStore`] (entries appended to pack files in a directory one process
//! owns: the coordinator's shared tier), [`MemoryStore`] (tests, embedding),
//! and with the `remote` feature `RemoteStore` (Redis, WebDAV/HTTP or S3
//! shared by many coordinators). [`TieredStore`] stacks two tiers: a hit in
//! the slower one fills the faster one. [`WriteBehind`] puts a pack
//! store's writes on a background thread (the coordinator's tier). A store
//! never fails its caller: I/O problems become misses or skipped writes,
//! are logged once and counted in [`CacheStats::errors`].

use async_trait::async_trait;

use crate::entry::CacheEntry;
use crate::key::CacheKey;

mod behind;
mod disk;
mod memory;
mod pack;
#[cfg(feature = "remote")]
pub mod remote;
mod stats;
mod tiered;

pub use behind::{MAX_PENDING_BYTES, WriteBehind, WriteCounters, shared_tier};
pub use disk::{DiskStore, EvictOutcome};
pub use memory::MemoryStore;
pub use pack::PackStore;
#[cfg(feature = "remote")]
pub use remote::{Layout, RemoteError, RemoteStats, RemoteStore};
pub use tiered::TieredStore;

/// The result of a lookup.
#[derive(Clone, Debug, PartialEq)]
#[allow(clippy::large_enum_variant)] // short-lived: one per lookup
pub enum Lookup {
    /// The entry was found and is intact.
    Hit(CacheEntry),
    /// No entry for the key.
    Miss,
    /// The entry could not be read or was corrupt (and was removed). For the
    /// caller this is a miss; it is counted as both a miss and an error.
    Failed,
}

impl Lookup {
    /// The entry, if this is a hit.
    pub fn into_entry(self) -> Option<CacheEntry> {
        match self {
            Lookup::Hit(e) => Some(e),
            Lookup::Miss | Lookup::Failed => None,
        }
    }

    /// True for [`Lookup::Hit`].
    pub fn is_hit(&self) -> bool {
        matches!(self, Lookup::Hit(_))
    }
}

/// What a [`CacheStore::put`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PutOutcome {
    /// The entry was stored.
    pub stored: bool,
    /// Entries evicted to make room (by this put).
    pub evicted: u64,
    /// The store's size estimate afterwards, in bytes.
    pub size_bytes: u64,
}

/// Counters and size of a store.
///
/// For a [`DiskStore`] the counters are shared by every process using the
/// directory and persist across runs; the size is an estimate kept exact by
/// periodic scans.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Lookups that found an entry.
    pub hits: u64,
    /// Lookups that found none (including failed ones).
    pub misses: u64,
    /// Entries removed to stay under the size limit.
    pub evictions: u64,
    /// Corrupt entries and I/O failures.
    pub errors: u64,
    /// Bytes stored.
    pub size_bytes: u64,
    /// Entries stored.
    pub entries: u64,
    /// The size limit.
    pub max_size_bytes: u64,
}

impl CacheStats {
    /// Hits over lookups, 0 when there were none.
    pub fn hit_rate(&self) -> f64 {
        let total = self.hits + self.misses;
        if total == 0 {
            0.0
        } else {
            self.hits as f64 / total as f64
        }
    }
}

/// A cache tier. Every method is infallible by design: a store that cannot
/// do its job answers [`Lookup::Failed`] / `stored: false` and logs.
#[async_trait]
pub trait CacheStore: Send + Sync {
    /// Looks an entry up (and marks it recently used).
    async fn get(&self, key: &CacheKey) -> Lookup;
    /// Stores an entry, evicting older ones if the store is over its limit.
    async fn put(&self, key: &CacheKey, entry: &CacheEntry) -> PutOutcome;
    /// Removes an entry; true if there was one.
    async fn remove(&self, key: &CacheKey) -> bool;
    /// The current counters.
    async fn stats(&self) -> CacheStats;
}

/// Runs `f` on the blocking pool when inside a tokio runtime, inline
/// otherwise; `fallback` if the blocking task died.
pub(crate) async fn blocking<R: Send + 'static>(
    fallback: R,
    f: impl FnOnce() -> R + Send + 'static,
) -> R {
    if tokio::runtime::Handle::try_current().is_err() {
        return f();
    }
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r,
        Err(err) => {
            tracing::warn!(error = %err, "cache task failed");
            fallback
        }
    }
}

/// Runs `f` on a clone of `store` on the blocking pool.
async fn on_pool<S: Clone + Send + Sync + 'static, R: Send + 'static>(
    store: &S,
    fallback: R,
    f: impl FnOnce(&S) -> R + Send + 'static,
) -> R {
    let this = store.clone();
    blocking(fallback, move || f(&this)).await
}

/// The [`CacheStore`] of a store whose operations block on file I/O
/// ([`DiskStore`], [`PackStore`]: their inherent `miss_without_io`,
/// `get_blocking`, `put_encoded`, `remove_blocking`, `stats_blocking`):
/// what needs no I/O is answered at once, the rest runs on the blocking
/// pool.
macro_rules! blocking_cache_store {
    ($store:ty) => {
        #[async_trait]
        impl CacheStore for $store {
            async fn get(&self, key: &CacheKey) -> Lookup {
                if <$store>::miss_without_io(self, key) {
                    return Lookup::Miss;
                }
                let key = *key;
                on_pool(self, Lookup::Failed, move |s| s.get_blocking(&key)).await
            }

            async fn put(&self, key: &CacheKey, entry: &CacheEntry) -> PutOutcome {
                let key = *key;
                let data = entry.encode();
                on_pool(self, PutOutcome::default(), move |s| {
                    s.put_encoded(&key, &data)
                })
                .await
            }

            async fn remove(&self, key: &CacheKey) -> bool {
                let key = *key;
                on_pool(self, false, move |s| s.remove_blocking(&key)).await
            }

            async fn stats(&self) -> CacheStats {
                on_pool(self, CacheStats::default(), |s| s.stats_blocking()).await
            }
        }
    };
}

blocking_cache_store!(DiskStore);
blocking_cache_store!(PackStore);

#[async_trait]
impl<T: CacheStore + ?Sized> CacheStore for std::sync::Arc<T> {
    async fn get(&self, key: &CacheKey) -> Lookup {
        (**self).get(key).await
    }
    async fn put(&self, key: &CacheKey, entry: &CacheEntry) -> PutOutcome {
        (**self).put(key, entry).await
    }
    async fn remove(&self, key: &CacheKey) -> bool {
        (**self).remove(key).await
    }
    async fn stats(&self) -> CacheStats {
        (**self).stats().await
    }
}
