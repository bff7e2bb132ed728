//! Tests of the disk store: entries, counters, the key index, eviction,
//! concurrent processes, damaged files.

use std::fs::{self, File};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use hybridgrid_core::payload::Payload;

use crate::entry::CacheEntry;
use crate::key::CacheKey;
use crate::store::{CacheStore, Lookup};

use super::*;

/// A key per number.
pub(crate) fn key(n: u32) -> CacheKey {
    CacheKey::from_bytes(*blake3::hash(&n.to_le_bytes()).as_bytes())
}

/// A deterministic entry per key number, so readers can check content.
pub(crate) fn entry(n: u32, len: usize) -> CacheEntry {
    let body: Vec<u8> = (0..len).map(|i| (i as u32 ^ n) as u8).collect();
    CacheEntry {
        stderr: Bytes::from(format!("warning {n}")),
        object: Some(Payload::raw(body)),
        ..CacheEntry::default()
    }
}

#[test]
fn put_get_remove() {
    let dir = tempfile::tempdir().unwrap();
    let store = DiskStore::new(dir.path().join("c"), 1 << 30);
    assert_eq!(store.get_blocking(&key(1)), Lookup::Miss);
    let out = store.put_blocking(&key(1), &entry(1, 100));
    assert!(out.stored);
    let path = store.entry_path(&key(1));
    let hex = key(1).to_hex();
    assert!(path.ends_with(format!("{}/{}", &hex[..2], hex)));
    assert_eq!(store.get_blocking(&key(1)), Lookup::Hit(entry(1, 100)));
    let s = store.stats_blocking();
    assert_eq!((s.hits, s.misses, s.entries, s.errors), (1, 1, 1, 0));
    assert_eq!(s.size_bytes, entry(1, 100).encoded_len() as u64);
    assert!(store.remove_blocking(&key(1)));
    assert!(!store.remove_blocking(&key(1)));
    assert_eq!(store.get_blocking(&key(1)), Lookup::Miss);
    let s = store.stats_blocking();
    assert_eq!((s.entries, s.size_bytes), (0, 0));
    // Another instance (another process) sees the same counters.
    let other = DiskStore::new(dir.path().join("c"), 1 << 30);
    assert_eq!(other.stats_blocking().hits, 1);
}

#[test]
fn exclusive_store_counts_in_memory_and_writes_back() {
    let dir = tempfile::tempdir().unwrap();
    let one = entry(0, 10_000).encoded_len() as u64;
    let store = DiskStore::exclusive(dir.path().join("c"), 3 * one + one / 2);
    assert_eq!(store.get_blocking(&key(1)), Lookup::Miss);
    for n in 0..3 {
        assert!(store.put_blocking(&key(n), &entry(n, 10_000)).stored);
    }
    assert!(store.get_blocking(&key(1)).is_hit());
    let s = store.stats_blocking();
    assert_eq!((s.hits, s.misses, s.entries), (1, 1, 3));
    assert_eq!(s.size_bytes, 3 * one);
    // Over the limit: eviction works from the in-memory estimate.
    let out = store.put_blocking(&key(3), &entry(3, 10_000));
    assert!(out.stored && out.evicted > 0);
    let s = store.stats_blocking();
    assert!(s.size_bytes <= store.max_bytes());
    assert_eq!(s.evictions, out.evicted);
    assert_eq!(store.rescan().size_bytes, s.size_bytes);
    // Many operations within a second: counted, written back on drop.
    for n in 10..20 {
        assert_eq!(store.get_blocking(&key(n)), Lookup::Miss);
    }
    drop(store);
    let again = DiskStore::new(dir.path().join("c"), 1 << 30).stats_blocking();
    assert_eq!((again.hits, again.misses), (1, 11));
    assert_eq!(again.size_bytes, s.size_bytes);
    // A new exclusive store starts from what was written.
    let reopened = DiskStore::exclusive(dir.path().join("c"), 1 << 30);
    assert_eq!(reopened.stats_blocking().misses, 11);
}

#[test]
fn overwrite_keeps_size_exact() {
    let dir = tempfile::tempdir().unwrap();
    let store = DiskStore::new(dir.path(), 1 << 30);
    store.put_blocking(&key(1), &entry(1, 100));
    store.put_blocking(&key(1), &entry(1, 300));
    let s = store.stats_blocking();
    assert_eq!(s.entries, 1);
    assert_eq!(s.size_bytes, entry(1, 300).encoded_len() as u64);
    assert_eq!(store.rescan().size_bytes, s.size_bytes);
}

#[test]
fn corrupt_and_truncated_entries_are_misses_removed_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let store = DiskStore::new(dir.path(), 1 << 30);
    store.put_blocking(&key(1), &entry(1, 1000));
    store.put_blocking(&key(2), &entry(2, 1000));
    let p1 = store.entry_path(&key(1));
    let mut data = fs::read(&p1).unwrap();
    data[100] ^= 0xff;
    fs::write(&p1, &data).unwrap();
    let p2 = store.entry_path(&key(2));
    let data = fs::read(&p2).unwrap();
    fs::write(&p2, &data[..data.len() / 2]).unwrap();

    assert_eq!(store.get_blocking(&key(1)), Lookup::Failed);
    assert_eq!(store.get_blocking(&key(2)), Lookup::Failed);
    assert!(!p1.exists() && !p2.exists());
    let s = store.stats_blocking();
    assert_eq!((s.errors, s.misses, s.hits), (2, 2, 0));
    assert_eq!(store.get_blocking(&key(1)), Lookup::Miss);
}

#[test]
fn evicts_least_recently_used_to_the_limit() {
    let dir = tempfile::tempdir().unwrap();
    let one = entry(0, 10_000).encoded_len() as u64;
    let store = DiskStore::new(dir.path(), 5 * one + one / 2);
    let old = SystemTime::now() - Duration::from_secs(1000);
    for n in 0..5 {
        assert!(store.put_blocking(&key(n), &entry(n, 10_000)).stored);
        // Spread the LRU clock: key 0 oldest.
        let f = File::open(store.entry_path(&key(n))).unwrap();
        f.set_modified(old + Duration::from_secs(u64::from(n) * 10))
            .unwrap();
    }
    // A hit makes key 0 the most recently used.
    assert!(store.get_blocking(&key(0)).is_hit());
    let out = store.put_blocking(&key(5), &entry(5, 10_000));
    assert!(out.stored);
    // Over the limit: down to 90% of 5.5 entries, so 4 remain.
    assert_eq!(out.evicted, 2);
    for n in [1, 2] {
        assert_eq!(store.get_blocking(&key(n)), Lookup::Miss, "{n}");
    }
    for n in [0, 3, 4, 5] {
        assert!(store.get_blocking(&key(n)).is_hit(), "{n}");
    }
    let s = store.stats_blocking();
    assert_eq!((s.entries, s.size_bytes, s.evictions), (4, 4 * one, 2));
    assert!(s.size_bytes <= store.max_bytes());

    let ev = store.evict_to(one);
    assert_eq!((ev.evicted, ev.entries, ev.size_bytes), (3, 1, one));
    let c = store.clear();
    assert_eq!((c.evicted, c.size_bytes), (1, 0));
    assert_eq!(store.stats_blocking().entries, 0);
}

#[test]
fn entry_bigger_than_the_limit_is_not_stored() {
    let dir = tempfile::tempdir().unwrap();
    let store = DiskStore::new(dir.path(), 100);
    assert!(!store.put_blocking(&key(1), &entry(1, 1000)).stored);
    assert_eq!(store.get_blocking(&key(1)), Lookup::Miss);
}

#[test]
fn missing_estimate_triggers_a_rescan() {
    let dir = tempfile::tempdir().unwrap();
    let store = DiskStore::new(dir.path(), 1 << 30);
    for n in 0..3 {
        store.put_blocking(&key(n), &entry(n, 100));
    }
    fs::remove_file(dir.path().join("stats")).unwrap();
    store.put_blocking(&key(9), &entry(9, 100));
    assert_eq!(store.stats_blocking().entries, 4);
}

#[test]
fn stale_temp_files_are_cleaned_by_scans() {
    let dir = tempfile::tempdir().unwrap();
    let store = DiskStore::new(dir.path(), 1 << 30);
    store.put_blocking(&key(1), &entry(1, 10));
    let shard = store.entry_path(&key(1)).parent().unwrap().to_path_buf();
    let stale = shard.join(".tmp-stale");
    let fresh = shard.join(".tmp-fresh");
    fs::write(&stale, b"x").unwrap();
    fs::write(&fresh, b"x").unwrap();
    File::options()
        .write(true)
        .open(&stale)
        .unwrap()
        .set_modified(SystemTime::now() - Duration::from_secs(7200))
        .unwrap();
    let out = store.rescan();
    assert_eq!(out.entries, 1);
    assert!(!stale.exists());
    assert!(fresh.exists());
}

#[test]
fn unusable_directory_degrades_to_misses() {
    let dir = tempfile::tempdir().unwrap();
    // A path below a regular file can never be created, even by root.
    let file = dir.path().join("file");
    fs::write(&file, b"x").unwrap();
    let store = DiskStore::new(file.join("cache"), 1 << 30);
    let out = store.put_blocking(&key(1), &entry(1, 10));
    assert!(!out.stored);
    // Not a plain miss (it is counted as an error), but no entry.
    assert_eq!(store.get_blocking(&key(1)), Lookup::Failed);
    assert!(!store.remove_blocking(&key(1)));
    assert_eq!(store.evict_to(0), EvictOutcome::default());
    assert_eq!(store.clear(), EvictOutcome::default());
    let s = store.stats_blocking();
    assert_eq!((s.misses, s.errors), (1, 2));
}

#[cfg(unix)]
#[test]
fn read_only_directory_degrades_to_no_op() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o500)).unwrap();
    if fs::write(dir.path().join("probe"), b"x").is_ok() {
        // Root writes anywhere; the test above covers the failure path.
        return;
    }
    let store = DiskStore::new(dir.path(), 1 << 30);
    assert!(!store.put_blocking(&key(1), &entry(1, 10)).stored);
    assert_eq!(store.get_blocking(&key(1)), Lookup::Miss);
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o700)).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_trait_roundtrip() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn CacheStore> = Arc::new(DiskStore::new(dir.path(), 1 << 30));
    assert_eq!(store.get(&key(1)).await, Lookup::Miss);
    assert!(store.put(&key(1), &entry(1, 50)).await.stored);
    assert_eq!(store.get(&key(1)).await, Lookup::Hit(entry(1, 50)));
    assert_eq!(store.stats().await.entries, 1);
    assert!(store.remove(&key(1)).await);
}

/// Many threads, each with its own `DiskStore` (as separate processes
/// would have), put and get shared and private keys in one directory
/// with a limit small enough to force evictions. Every hit must be
/// exactly the entry stored for its key and nothing may be corrupt.
#[test]
fn concurrent_processes_never_see_corruption() {
    let dir = tempfile::tempdir().unwrap();
    let one = entry(0, 20_000).encoded_len() as u64;
    let max = 40 * one;
    let threads = 16;
    let rounds = 60u32;
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let path = dir.path().to_path_buf();
            std::thread::spawn(move || {
                let store = DiskStore::new(path, max);
                let mut hits = 0;
                for r in 0..rounds {
                    // Shared keys 0..20 everyone fights over, and
                    // private ones.
                    let shared = (r * 7 + t) % 20;
                    let private = 1000 + t * 1000 + r;
                    // Rewrite a shared key whether or not it exists,
                    // so readers race with writers of the same file.
                    let rewrite = (r * 3 + t * 5) % 20;
                    assert!(
                        store
                            .put_blocking(&key(rewrite), &entry(rewrite, 20_000))
                            .stored
                    );
                    for n in [shared, private] {
                        match store.get_blocking(&key(n)) {
                            Lookup::Hit(e) => {
                                assert_eq!(e, entry(n, 20_000), "key {n}");
                                hits += 1;
                            }
                            Lookup::Miss => {
                                assert!(store.put_blocking(&key(n), &entry(n, 20_000)).stored);
                            }
                            Lookup::Failed => panic!("corrupt entry for key {n}"),
                        }
                    }
                }
                hits
            })
        })
        .collect();
    let hits: u32 = handles.into_iter().map(|h| h.join().unwrap()).sum();
    assert!(hits > 0);
    let store = DiskStore::new(dir.path(), max);
    let s = store.stats_blocking();
    assert_eq!(s.errors, 0);
    assert_eq!(s.hits + s.misses, u64::from(threads * rounds * 2));
    assert!(s.hits > 0);
    assert!(s.evictions > 0);
    // The estimate matches reality after a scan, and reality is
    // within the limit plus what was in flight.
    let scanned = store.rescan();
    assert!(
        scanned.size_bytes <= max + threads as u64 * one,
        "{scanned:?}"
    );
    // Every file left decodes.
    for f in store.scan() {
        let data = fs::read(&f.path).unwrap();
        assert!(CacheEntry::decode(&data).is_ok(), "{}", f.path.display());
    }
}
