//! [`TieredStore`]: a fast tier in front of a slow one.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;

use super::{CacheStats, CacheStore, Lookup, PutOutcome};
use crate::entry::CacheEntry;
use crate::key::CacheKey;

/// Two tiers as one store: lookups try the fast tier (a local disk), then
/// the slow one (a remote server); a hit in the slow tier is copied into
/// the fast one, so the next lookup stays local. Writes go to both (a
/// `RemoteStore` queues its write and returns at
/// once). Tiers nest: the slow tier may itself be a `TieredStore`.
pub struct TieredStore {
    fast: Arc<dyn CacheStore>,
    slow: Arc<dyn CacheStore>,
    hits: AtomicU64,
    misses: AtomicU64,
    fills: AtomicU64,
}

impl TieredStore {
    /// `fast` in front of `slow`.
    pub fn new(fast: Arc<dyn CacheStore>, slow: Arc<dyn CacheStore>) -> Self {
        TieredStore {
            fast,
            slow,
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            fills: AtomicU64::new(0),
        }
    }

    /// The fast tier.
    pub fn fast(&self) -> &Arc<dyn CacheStore> {
        &self.fast
    }

    /// The slow tier.
    pub fn slow(&self) -> &Arc<dyn CacheStore> {
        &self.slow
    }

    /// Entries copied from the slow tier into the fast one.
    pub fn fills(&self) -> u64 {
        self.fills.load(Ordering::Relaxed)
    }
}

impl std::fmt::Debug for TieredStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TieredStore")
            .field("hits", &self.hits)
            .field("misses", &self.misses)
            .field("fills", &self.fills)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl CacheStore for TieredStore {
    async fn get(&self, key: &CacheKey) -> Lookup {
        let fast = self.fast.get(key).await;
        if fast.is_hit() {
            self.hits.fetch_add(1, Ordering::Relaxed);
            return fast;
        }
        match self.slow.get(key).await {
            Lookup::Hit(entry) => {
                self.hits.fetch_add(1, Ordering::Relaxed);
                if self.fast.put(key, &entry).await.stored {
                    self.fills.fetch_add(1, Ordering::Relaxed);
                }
                Lookup::Hit(entry)
            }
            Lookup::Miss => {
                self.misses.fetch_add(1, Ordering::Relaxed);
                fast
            }
            Lookup::Failed => {
                self.misses.fetch_add(1, Ordering::Relaxed);
                Lookup::Failed
            }
        }
    }

    async fn put(&self, key: &CacheKey, entry: &CacheEntry) -> PutOutcome {
        let out = self.fast.put(key, entry).await;
        self.slow.put(key, entry).await;
        out
    }

    async fn remove(&self, key: &CacheKey) -> bool {
        let a = self.fast.remove(key).await;
        let b = self.slow.remove(key).await;
        a || b
    }

    /// The fast tier's size and evictions; hits and misses of the tiers
    /// together; errors of both.
    async fn stats(&self) -> CacheStats {
        let fast = self.fast.stats().await;
        let slow = self.slow.stats().await;
        CacheStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            errors: fast.errors + slow.errors,
            ..fast
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemoryStore;
    use bytes::Bytes;

    fn entry(s: &'static str) -> CacheEntry {
        CacheEntry {
            stdout: Bytes::from_static(s.as_bytes()),
            ..CacheEntry::default()
        }
    }

    #[tokio::test]
    async fn a_slow_hit_fills_the_fast_tier() {
        let fast: Arc<dyn CacheStore> = Arc::new(MemoryStore::new(1 << 20));
        let slow: Arc<dyn CacheStore> = Arc::new(MemoryStore::new(1 << 20));
        let t = TieredStore::new(fast.clone(), slow.clone());
        let k = CacheKey::from_bytes([1; 32]);
        assert_eq!(t.get(&k).await, Lookup::Miss);

        slow.put(&k, &entry("a")).await;
        assert_eq!(t.get(&k).await, Lookup::Hit(entry("a")));
        assert_eq!(t.fills(), 1);
        assert!(fast.get(&k).await.is_hit(), "filled");
        // Now served by the fast tier: the slow one sees no new lookup.
        let slow_lookups = slow.stats().await.hits + slow.stats().await.misses;
        assert!(t.get(&k).await.is_hit());
        let after = slow.stats().await.hits + slow.stats().await.misses;
        assert_eq!(after, slow_lookups);

        let k2 = CacheKey::from_bytes([2; 32]);
        t.put(&k2, &entry("b")).await;
        assert!(fast.get(&k2).await.is_hit() && slow.get(&k2).await.is_hit());
        let s = t.stats().await;
        assert_eq!((s.hits, s.misses, s.entries), (2, 1, 2));
        assert!(t.remove(&k2).await);
        assert!(!fast.get(&k2).await.is_hit() && !slow.get(&k2).await.is_hit());
    }
}
