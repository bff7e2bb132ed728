//! [`WriteBehind`]: a [`PackStore`] whose writes happen after the answer.
//!
//! The coordinator's shared tier stores every cold compile's result. The
//! write is queued and a writer thread appends the queued entries to the
//! pack store in batches while the response is already on its way, so the
//! serving threads never wait for the disk.
//!
//! - **Reads see queued writes**: a lookup checks the queue first, so an
//!   entry is served from the moment it was put.
//! - **Misses without I/O**: a lookup of a key that is neither queued nor
//!   in the pack store's index is a miss answered on the caller's thread,
//!   without a hop to the blocking pool (the index is loaded by a thread of
//!   its own, see [`PackStore::load_index`]).
//! - **Bounded**: at most `max_pending` entries and [`MAX_PENDING_BYTES`]
//!   wait; a put beyond that is dropped (a cache is best effort), counted
//!   in `hybridgrid_cache_writes_total{tier="disk",result="dropped"}` and
//!   logged at debug level.
//! - **Never a torn entry**: a crash loses queued entries and may leave a
//!   partial record at the end of a pack, which the next start truncates;
//!   every record is checksummed, so a partial one is never served.
//! - **Flushed on shutdown**: [`WriteBehind::shutdown`] (and dropping the
//!   last handle) writes what is queued before the writer stops;
//!   [`WriteBehind::flush`] waits for the queue to empty.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use async_trait::async_trait;

use super::{CacheStats, CacheStore, Lookup, PackStore, PutOutcome};
use crate::entry::CacheEntry;
use crate::key::CacheKey;
use crate::layer::{METRIC_EVICTIONS, METRIC_SIZE};

/// Counter of background writes, by `tier` and `result` (`stored`,
/// `failed`, `dropped`); shared with the remote tier.
const METRIC_WRITES: &str = "hybridgrid_cache_writes_total";

/// The `tier` label of this store's write metrics.
const TIER: &str = "disk";

/// The most bytes of entries waiting to be written, whatever
/// `max_pending` allows.
pub const MAX_PENDING_BYTES: usize = 64 << 20;

/// Entries the writer takes from the queue at once.
const BATCH: usize = 64;

/// A [`PackStore`] written from a queue by a background thread (see the
/// module docs). Clones share the queue and the thread.
#[derive(Clone)]
pub struct WriteBehind {
    shared: Arc<Shared>,
    /// Joins the writer when the last clone goes.
    writer: Arc<Writer>,
}

struct Shared {
    store: PackStore,
    queue: Mutex<Queue>,
    /// Wakes the writer: work queued or shutting down.
    work: Condvar,
    /// Wakes flushers: the queue is empty and nothing is being written.
    idle: Condvar,
    max_pending: usize,
    max_bytes: usize,
    stored: AtomicU64,
    failed: AtomicU64,
    dropped: AtomicU64,
    /// The store's size after the last write (for the size gauge).
    size_bytes: AtomicU64,
}

#[derive(Default)]
struct Queue {
    /// Entries put and not yet on disk (including those being written).
    entries: HashMap<CacheKey, Pending>,
    /// Writes to do, oldest first; a key put again while queued has a
    /// newer generation and its older item is skipped.
    order: VecDeque<(CacheKey, u64)>,
    /// Bytes of `entries`.
    bytes: usize,
    /// Entries the writer has taken and not finished.
    writing: usize,
    generation: u64,
    closed: bool,
}

struct Pending {
    entry: CacheEntry,
    generation: u64,
    bytes: usize,
}

struct Writer {
    shared: Arc<Shared>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.shared.close();
        if let Some(t) = lock(&self.thread).take() {
            let _ = t.join();
        }
    }
}

/// A [`PackStore`] as a server's shared tier, its index loaded by a thread
/// of its own: written behind the answers with at most `max_pending`
/// entries waiting (the writer is returned, to flush at shutdown), or with
/// `max_pending` 0 written before answering. A store that is off (its
/// directory held by another process) is returned as it is: every lookup
/// misses.
pub fn shared_tier(
    store: PackStore,
    max_pending: usize,
) -> (Arc<dyn CacheStore>, Option<WriteBehind>) {
    if store.is_off() {
        return (Arc::new(store), None);
    }
    store.load_in_background();
    if max_pending == 0 {
        return (Arc::new(store), None);
    }
    let w = WriteBehind::new(store, max_pending);
    (Arc::new(w.clone()), Some(w))
}

/// What the writer did so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WriteCounters {
    /// Entries written to disk.
    pub stored: u64,
    /// Entries the disk refused (full, unwritable: see the store's log).
    pub failed: u64,
    /// Entries dropped because the queue was full (or the store closed).
    pub dropped: u64,
    /// Entries waiting now.
    pub pending: u64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl WriteBehind {
    /// `store` written behind by a new thread, with at most `max_pending`
    /// entries (at least 1) waiting. The store's index is not loaded here
    /// (see [`PackStore::load_in_background`]).
    pub fn new(store: PackStore, max_pending: usize) -> Self {
        let this = Self::withoutwriter(store, max_pending);
        this.startwriter();
        this
    }

    fn withoutwriter(store: PackStore, max_pending: usize) -> Self {
        let shared = Arc::new(Shared {
            store,
            queue: Mutex::new(Queue::default()),
            work: Condvar::new(),
            idle: Condvar::new(),
            max_pending: max_pending.max(1),
            max_bytes: MAX_PENDING_BYTES,
            stored: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            size_bytes: AtomicU64::new(0),
        });
        for result in ["stored", "failed", "dropped"] {
            metrics::counter!(METRIC_WRITES, "tier" => TIER, "result" => result).increment(0);
        }
        WriteBehind {
            writer: Arc::new(Writer {
                shared: shared.clone(),
                thread: Mutex::new(None),
            }),
            shared,
        }
    }

    fn startwriter(&self) {
        let shared = self.shared.clone();
        let spawned = std::thread::Builder::new()
            .name("hg-cache-writer".into())
            .spawn(move || shared.run());
        match spawned {
            Ok(t) => *lock(&self.writer.thread) = Some(t),
            Err(e) => {
                // Without a writer nothing could be stored: close the
                // queue, so puts are dropped (and counted) instead of
                // piling up.
                tracing::warn!(error = %e, "cannot start the cache writer thread; results are not cached");
                self.shared.close();
            }
        }
    }

    /// The store written to.
    pub fn store(&self) -> &PackStore {
        &self.shared.store
    }

    /// The writer's counters.
    pub fn counters(&self) -> WriteCounters {
        let s = &self.shared;
        WriteCounters {
            stored: s.stored.load(Ordering::Relaxed),
            failed: s.failed.load(Ordering::Relaxed),
            dropped: s.dropped.load(Ordering::Relaxed),
            pending: lock(&s.queue).entries.len() as u64,
        }
    }

    /// Waits until every entry queued so far is written, at most `limit`;
    /// false if some were still waiting. Blocks the thread.
    pub fn flush_blocking(&self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        let mut q = lock(&self.shared.queue);
        loop {
            if q.order.is_empty() && q.writing == 0 {
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            q = self
                .shared
                .idle
                .wait_timeout(q, deadline - now)
                .map(|(g, _)| g)
                .unwrap_or_else(|p| p.into_inner().0);
        }
    }

    /// [`Self::flush_blocking`] off the async threads.
    pub async fn flush(&self, limit: Duration) -> bool {
        let this = self.clone();
        tokio::task::spawn_blocking(move || this.flush_blocking(limit))
            .await
            .unwrap_or(false)
    }

    /// Stops taking writes (later puts are dropped) and waits, at most
    /// `limit`, for the queued ones to be written; false if some were
    /// still waiting. The writer stops once the queue is empty.
    pub async fn shutdown(&self, limit: Duration) -> bool {
        self.shared.close();
        self.flush(limit).await
    }

    fn lookup_queued(&self, key: &CacheKey) -> Option<CacheEntry> {
        lock(&self.shared.queue)
            .entries
            .get(key)
            .map(|p| p.entry.clone())
    }

    fn drop_write(&self, key: &CacheKey, why: &'static str) -> PutOutcome {
        self.shared.dropped.fetch_add(1, Ordering::Relaxed);
        metrics::counter!(METRIC_WRITES, "tier" => TIER, "result" => "dropped").increment(1);
        tracing::debug!(key = %key, reason = why, "cache write dropped");
        PutOutcome {
            stored: false,
            evicted: 0,
            size_bytes: self.shared.size_bytes.load(Ordering::Relaxed),
        }
    }
}

impl std::fmt::Debug for WriteBehind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WriteBehind")
            .field("dir", &self.shared.store.dir())
            .field("max_pending", &self.shared.max_pending)
            .field("counters", &self.counters())
            .finish()
    }
}

impl Shared {
    fn close(&self) {
        lock(&self.queue).closed = true;
        self.work.notify_all();
    }

    /// The writer thread: writes batches until the store is closed and
    /// the queue is empty.
    fn run(&self) {
        loop {
            let batch: Vec<(CacheKey, u64, CacheEntry)> = {
                let mut q = lock(&self.queue);
                while q.order.is_empty() && !q.closed {
                    q = self.work.wait(q).unwrap_or_else(|p| p.into_inner());
                }
                if q.order.is_empty() {
                    // Closed and drained.
                    self.idle.notify_all();
                    return;
                }
                let mut batch = Vec::with_capacity(BATCH.min(q.order.len()));
                while batch.len() < BATCH {
                    let Some((key, generation)) = q.order.pop_front() else {
                        break;
                    };
                    if let Some(p) = q.entries.get(&key)
                        && p.generation == generation
                    {
                        batch.push((key, generation, p.entry.clone()));
                    }
                }
                q.writing = batch.len();
                batch
            };
            let mut done = Vec::with_capacity(batch.len());
            for (key, generation, entry) in batch {
                let out = self.store.put_encoded(&key, &entry.encode());
                if out.stored {
                    self.stored.fetch_add(1, Ordering::Relaxed);
                    metrics::counter!(METRIC_WRITES, "tier" => TIER, "result" => "stored")
                        .increment(1);
                    if out.evicted > 0 {
                        metrics::counter!(METRIC_EVICTIONS).increment(out.evicted);
                    }
                    self.size_bytes.store(out.size_bytes, Ordering::Relaxed);
                    metrics::gauge!(METRIC_SIZE).set(out.size_bytes as f64);
                } else {
                    // The store logged why (once as a warning).
                    self.failed.fetch_add(1, Ordering::Relaxed);
                    metrics::counter!(METRIC_WRITES, "tier" => TIER, "result" => "failed")
                        .increment(1);
                }
                done.push((key, generation));
            }
            let mut q = lock(&self.queue);
            for (key, generation) in done {
                // A newer put of the same key stays queued.
                if q.entries
                    .get(&key)
                    .is_some_and(|p| p.generation == generation)
                    && let Some(p) = q.entries.remove(&key)
                {
                    q.bytes -= p.bytes;
                }
            }
            q.writing = 0;
            if q.order.is_empty() {
                self.idle.notify_all();
            }
        }
    }
}

#[async_trait]
impl CacheStore for WriteBehind {
    async fn get(&self, key: &CacheKey) -> Lookup {
        if let Some(entry) = self.lookup_queued(key) {
            self.shared.store.count_lookup(true);
            return Lookup::Hit(entry);
        }
        // The pack store answers a key its index does not have at once,
        // and reads the pack on the blocking pool otherwise.
        self.shared.store.get(key).await
    }

    async fn put(&self, key: &CacheKey, entry: &CacheEntry) -> PutOutcome {
        let bytes = entry.encoded_len();
        let s = &self.shared;
        {
            let mut q = lock(&s.queue);
            if q.closed {
                drop(q);
                return self.drop_write(key, "store closed");
            }
            let replaced = q.entries.get(key).map_or(0, |p| p.bytes);
            let full = q.entries.len() - usize::from(replaced > 0) >= s.max_pending
                || (q.bytes - replaced + bytes > s.max_bytes && !q.entries.is_empty());
            if full {
                drop(q);
                return self.drop_write(key, "write queue full");
            }
            q.generation += 1;
            let generation = q.generation;
            q.bytes = q.bytes - replaced + bytes;
            q.entries.insert(
                *key,
                Pending {
                    entry: entry.clone(),
                    generation,
                    bytes,
                },
            );
            q.order.push_back((*key, generation));
        }
        s.work.notify_one();
        PutOutcome {
            stored: true,
            evicted: 0,
            size_bytes: s.size_bytes.load(Ordering::Relaxed),
        }
    }

    async fn remove(&self, key: &CacheKey) -> bool {
        let queued = {
            let mut q = lock(&self.shared.queue);
            match q.entries.remove(key) {
                Some(p) => {
                    q.bytes -= p.bytes;
                    true
                }
                None => false,
            }
        };
        let on_disk = self.shared.store.remove(key).await;
        queued || on_disk
    }

    async fn stats(&self) -> CacheStats {
        self.shared.store.stats().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::disk::tests::{entry, key};

    const LIMIT: Duration = Duration::from_secs(20);

    /// The store in `dir`, its index loaded.
    fn pack(dir: &std::path::Path, max: u64) -> PackStore {
        let p = PackStore::open(dir, max);
        assert!(!p.is_off());
        p.load_index();
        p
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn written_behind_entries_are_readable_at_once_and_after_flush() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c");
        let store = WriteBehind::new(pack(&path, 1 << 30), 1024);
        for n in 0..50 {
            assert!(store.put(&key(n), &entry(n, 500)).await.stored);
            // Served from the queue or the packs, never missed.
            assert_eq!(store.get(&key(n)).await, Lookup::Hit(entry(n, 500)));
        }
        assert!(store.flush(LIMIT).await);
        let c = store.counters();
        assert_eq!((c.stored, c.failed, c.dropped, c.pending), (50, 0, 0, 0));
        let s = store.stats().await;
        assert_eq!((s.hits, s.misses, s.entries), (50, 0, 50));
        drop(store);
        // In the packs, through a store that knows nothing of the queue.
        let other = pack(&path, 1 << 30);
        for n in 0..50 {
            assert_eq!(other.get_blocking(&key(n)), Lookup::Hit(entry(n, 500)));
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn misses_of_unknown_keys_need_no_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c");
        // An entry from an earlier run is found once the index is loaded.
        pack(&path, 1 << 30).put_blocking(&key(1), &entry(1, 10));
        let (tier, writer) = shared_tier(PackStore::open(&path, 1 << 30), 16);
        let store = writer.unwrap();
        let deadline = Instant::now() + LIMIT;
        while !store.store().is_loaded() {
            assert!(Instant::now() < deadline, "index not loaded");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(store.store().may_hold(&key(1)));
        assert!(!store.store().may_hold(&key(2)));
        assert_eq!(tier.get(&key(1)).await, Lookup::Hit(entry(1, 10)));
        assert_eq!(tier.get(&key(2)).await, Lookup::Miss);
        // Written through the store, it is known; removed, it is not.
        tier.put(&key(3), &entry(3, 10)).await;
        assert!(store.flush(LIMIT).await);
        assert!(store.store().may_hold(&key(3)));
        assert!(tier.remove(&key(3)).await);
        assert!(!store.store().may_hold(&key(3)));
        assert_eq!(tier.get(&key(3)).await, Lookup::Miss);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_full_queue_drops_and_counts() {
        let dir = tempfile::tempdir().unwrap();
        // No writer yet: the queue only fills.
        let store = WriteBehind::withoutwriter(pack(&dir.path().join("c"), 1 << 30), 3);
        for n in 0..3 {
            assert!(store.put(&key(n), &entry(n, 100)).await.stored);
        }
        // Putting a queued key again replaces it and takes no room.
        assert!(store.put(&key(2), &entry(2, 100)).await.stored);
        for n in 3..5 {
            assert!(!store.put(&key(n), &entry(n, 100)).await.stored);
        }
        let c = store.counters();
        assert_eq!((c.dropped, c.pending), (2, 3));
        // Dropped entries are misses, queued ones hits.
        assert_eq!(store.get(&key(4)).await, Lookup::Miss);
        assert!(store.get(&key(0)).await.is_hit());
        store.startwriter();
        assert!(store.flush(LIMIT).await);
        let c = store.counters();
        assert_eq!((c.stored, c.dropped, c.pending), (3, 2, 0));
        assert_eq!(store.store().stats_blocking().entries, 3);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_byte_limit_drops_too() {
        let dir = tempfile::tempdir().unwrap();
        let store = WriteBehind::withoutwriter(pack(&dir.path().join("c"), 1 << 40), 1000);
        let big = MAX_PENDING_BYTES / 4;
        for n in 0..3 {
            assert!(store.put(&key(n), &entry(n, big)).await.stored, "{n}");
        }
        assert!(!store.put(&key(3), &entry(3, big)).await.stored);
        assert_eq!(store.counters().dropped, 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn shutdown_and_drop_flush_pending_writes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c");
        let store = WriteBehind::new(pack(&path, 1 << 30), 4096);
        for n in 0..200 {
            store.put(&key(n), &entry(n, 2000)).await;
        }
        assert!(store.shutdown(LIMIT).await);
        // Closed: later puts are dropped, not lost silently.
        assert!(!store.put(&key(999), &entry(999, 10)).await.stored);
        assert_eq!(store.counters().dropped, 1);
        drop(store);
        let other = pack(&path, 1 << 30);
        for n in 0..200 {
            assert!(other.get_blocking(&key(n)).is_hit(), "{n}");
        }
        drop(other);

        // Dropping the last handle writes what is queued, too.
        let store = WriteBehind::new(pack(&path, 1 << 30), 4096);
        for n in 1000..1100 {
            store.put(&key(n), &entry(n, 2000)).await;
        }
        drop(store);
        let other = pack(&path, 1 << 30);
        for n in (0..200).chain(1000..1100) {
            assert!(other.get_blocking(&key(n)).is_hit(), "{n}");
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn writes_before_answering_without_a_queue() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c");
        let (tier, writer) = shared_tier(PackStore::open(&path, 1 << 30), 0);
        assert!(writer.is_none());
        let out = tier.put(&key(1), &entry(1, 100)).await;
        assert!(out.stored && out.size_bytes > 0);
        assert_eq!(tier.get(&key(1)).await, Lookup::Hit(entry(1, 100)));
        drop(tier);
        // Once the background loader lets go of the directory, it reopens
        // with the entry.
        let deadline = Instant::now() + LIMIT;
        let again = loop {
            let p = PackStore::open(&path, 1 << 30);
            if !p.is_off() {
                break p;
            }
            drop(p);
            assert!(Instant::now() < deadline, "directory still held");
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        again.load_index();
        assert_eq!(again.get_blocking(&key(1)), Lookup::Hit(entry(1, 100)));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_puts_and_gets_see_whole_entries() {
        let dir = tempfile::tempdir().unwrap();
        let one = entry(0, 3000).encoded_len() as u64;
        // Small enough that the writer evicts while others read.
        let disk = PackStore::with_segment_size(dir.path().join("c"), 60 * one, 8 * one);
        disk.load_index();
        let store = WriteBehind::new(disk, 32);
        let mut tasks = Vec::new();
        for t in 0..8u32 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                for r in 0..100u32 {
                    let n = (t * 31 + r * 7) % 150;
                    match store.get(&key(n)).await {
                        Lookup::Hit(e) => assert_eq!(e, entry(n, 3000), "key {n}"),
                        Lookup::Miss => {
                            store.put(&key(n), &entry(n, 3000)).await;
                        }
                        Lookup::Failed => panic!("corrupt entry for key {n}"),
                    }
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        assert!(store.flush(LIMIT).await);
        let c = store.counters();
        assert!(c.stored > 0 && c.failed == 0, "{c:?}");
        let s = store.store().stats_blocking();
        assert_eq!(s.errors, 0);
        assert!(s.evictions > 0, "{s:?}");
    }
}
