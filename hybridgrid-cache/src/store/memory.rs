//! An in-memory store, bounded by bytes, least recently used out first.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use async_trait::async_trait;

use super::{CacheStats, CacheStore, Lookup, PutOutcome};
use crate::entry::CacheEntry;
use crate::key::CacheKey;

/// An in-memory LRU store bounded by the encoded size of its entries.
///
/// ```
/// # tokio_test_block(async {
/// use hybridgrid_cache::{CacheEntry, CacheKey, CacheStore, MemoryStore};
///
/// let store = MemoryStore::new(1 << 20);
/// let key = CacheKey::from_bytes([1; 32]);
/// store.put(&key, &CacheEntry::default()).await;
/// assert!(store.get(&key).await.is_hit());
/// # });
/// # fn tokio_test_block(f: impl std::future::Future<Output = ()>) {
/// #     tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(f)
/// # }
/// ```
#[derive(Debug)]
pub struct MemoryStore {
    max_bytes: u64,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    map: HashMap<CacheKey, Slot>,
    /// Use tick -> key, oldest first.
    order: BTreeMap<u64, CacheKey>,
    tick: u64,
    size: u64,
    hits: u64,
    misses: u64,
    evictions: u64,
}

#[derive(Debug)]
struct Slot {
    entry: CacheEntry,
    size: u64,
    tick: u64,
}

impl MemoryStore {
    /// A store holding at most `max_bytes` of encoded entries.
    pub fn new(max_bytes: u64) -> Self {
        MemoryStore {
            max_bytes,
            inner: Mutex::new(Inner::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave the maps inconsistent
        // in a way that matters more than losing the cache; keep going.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Looks an entry up without going through the async trait.
    pub fn get_now(&self, key: &CacheKey) -> Lookup {
        let mut g = self.lock();
        let inner = &mut *g;
        inner.tick += 1;
        let tick = inner.tick;
        match inner.map.get_mut(key) {
            Some(slot) => {
                inner.order.remove(&slot.tick);
                slot.tick = tick;
                inner.order.insert(tick, *key);
                inner.hits += 1;
                Lookup::Hit(slot.entry.clone())
            }
            None => {
                inner.misses += 1;
                Lookup::Miss
            }
        }
    }

    /// Stores an entry without going through the async trait.
    pub fn put_now(&self, key: &CacheKey, entry: &CacheEntry) -> PutOutcome {
        let size = entry.encoded_len() as u64;
        let mut g = self.lock();
        let inner = &mut *g;
        if size > self.max_bytes {
            return PutOutcome {
                stored: false,
                evicted: 0,
                size_bytes: inner.size,
            };
        }
        if let Some(old) = inner.map.remove(key) {
            inner.order.remove(&old.tick);
            inner.size -= old.size;
        }
        let mut evicted = 0;
        while inner.size + size > self.max_bytes {
            let Some((_, victim)) = inner.order.pop_first() else {
                break;
            };
            if let Some(old) = inner.map.remove(&victim) {
                inner.size -= old.size;
                evicted += 1;
            }
        }
        inner.evictions += evicted;
        inner.tick += 1;
        let tick = inner.tick;
        inner.order.insert(tick, *key);
        inner.map.insert(
            *key,
            Slot {
                entry: entry.clone(),
                size,
                tick,
            },
        );
        inner.size += size;
        PutOutcome {
            stored: true,
            evicted,
            size_bytes: inner.size,
        }
    }

    /// Removes an entry without going through the async trait.
    pub fn remove_now(&self, key: &CacheKey) -> bool {
        let mut g = self.lock();
        match g.map.remove(key) {
            Some(old) => {
                g.order.remove(&old.tick);
                g.size -= old.size;
                true
            }
            None => false,
        }
    }

    /// The counters, without going through the async trait.
    pub fn stats_now(&self) -> CacheStats {
        let g = self.lock();
        CacheStats {
            hits: g.hits,
            misses: g.misses,
            evictions: g.evictions,
            errors: 0,
            size_bytes: g.size,
            entries: g.map.len() as u64,
            max_size_bytes: self.max_bytes,
        }
    }

    /// Removes every entry (the counters stay).
    pub fn clear(&self) {
        let mut g = self.lock();
        g.map.clear();
        g.order.clear();
        g.size = 0;
    }
}

#[async_trait]
impl CacheStore for MemoryStore {
    async fn get(&self, key: &CacheKey) -> Lookup {
        self.get_now(key)
    }
    async fn put(&self, key: &CacheKey, entry: &CacheEntry) -> PutOutcome {
        self.put_now(key, entry)
    }
    async fn remove(&self, key: &CacheKey) -> bool {
        self.remove_now(key)
    }
    async fn stats(&self) -> CacheStats {
        self.stats_now()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn key(n: u8) -> CacheKey {
        CacheKey::from_bytes([n; 32])
    }

    fn entry(len: usize) -> CacheEntry {
        CacheEntry {
            stdout: Bytes::from(vec![b'x'; len]),
            ..CacheEntry::default()
        }
    }

    #[test]
    fn lru_by_bytes() {
        let one = entry(1000).encoded_len() as u64;
        let store = MemoryStore::new(3 * one);
        for n in 0..3 {
            assert!(store.put_now(&key(n), &entry(1000)).stored);
        }
        // Touch 0 so 1 is the oldest.
        assert!(store.get_now(&key(0)).is_hit());
        let out = store.put_now(&key(3), &entry(1000));
        assert_eq!(out.evicted, 1);
        assert!(!store.get_now(&key(1)).is_hit());
        for n in [0, 2, 3] {
            assert!(store.get_now(&key(n)).is_hit(), "{n}");
        }
        let s = store.stats_now();
        assert_eq!((s.entries, s.size_bytes, s.evictions), (3, 3 * one, 1));
        assert_eq!((s.hits, s.misses), (4, 1));
    }

    #[test]
    fn too_big_is_not_stored_and_replace_keeps_size_exact() {
        let store = MemoryStore::new(100);
        assert!(!store.put_now(&key(1), &entry(1000)).stored);
        assert!(store.put_now(&key(1), &entry(10)).stored);
        assert!(store.put_now(&key(1), &entry(20)).stored);
        assert_eq!(store.stats_now().size_bytes, entry(20).encoded_len() as u64);
        assert!(store.remove_now(&key(1)));
        assert!(!store.remove_now(&key(1)));
        assert_eq!(store.stats_now().size_bytes, 0);
    }
}
