//! Tests of the pack store: records, recovery from damage, eviction, the old
//! layout's import, concurrent use.

use std::fs::{self, File};
use std::path::{Path, PathBuf};

use crate::store::Lookup;
use crate::store::disk::DiskStore;
use crate::store::disk::tests::{entry, key};

use super::*;

/// The store in `dir`, its index loaded.
fn open(dir: &Path, max: u64) -> PackStore {
    let p = PackStore::open(dir, max);
    assert!(!p.is_off());
    p.load_index();
    p
}

fn segment_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir.join(PACKS))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    v.sort();
    v
}

#[test]
fn put_get_remove() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), 1 << 30);
    assert_eq!(store.get_blocking(&key(1)), Lookup::Miss);
    assert!(!store.may_hold(&key(1)));
    let out = store.put_blocking(&key(1), &entry(1, 100));
    assert!(out.stored);
    let rec = (HEADER_LEN + entry(1, 100).encoded_len()) as u64;
    assert_eq!(out.size_bytes, rec);
    assert!(store.may_hold(&key(1)));
    assert_eq!(store.get_blocking(&key(1)), Lookup::Hit(entry(1, 100)));
    let s = store.stats_blocking();
    assert_eq!((s.hits, s.misses, s.entries, s.errors), (1, 1, 1, 0));
    assert_eq!(s.size_bytes, rec);
    assert!(store.remove_blocking(&key(1)));
    assert!(!store.remove_blocking(&key(1)));
    assert_eq!(store.get_blocking(&key(1)), Lookup::Miss);
    let s = store.stats_blocking();
    // The tombstone is in the size until its segment goes.
    assert_eq!((s.entries, s.size_bytes), (0, rec + HEADER_LEN as u64));
    // One segment file, nothing else per entry.
    assert_eq!(segment_files(dir.path()).len(), 1);
}

#[test]
fn survives_reopen_with_later_records_winning() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), 1 << 30);
    for n in 0..20 {
        assert!(store.put_blocking(&key(n), &entry(n, 1000)).stored);
    }
    // Key 3 written again with other content; key 4 removed.
    store.put_blocking(&key(3), &entry(333, 500));
    assert!(store.remove_blocking(&key(4)));
    assert!(store.get_blocking(&key(5)).is_hit());
    let before = store.stats_blocking();
    drop(store);

    let store = PackStore::open(dir.path(), 1 << 30);
    // Before the index is loaded, entries of earlier runs miss
    // without I/O; entries written since are found.
    assert!(!store.is_loaded());
    assert!(!store.may_hold(&key(1)));
    store.put_blocking(&key(100), &entry(100, 10));
    // ... and a removal meanwhile is not undone by the loader.
    store.remove_blocking(&key(6));
    assert_eq!(store.load_index(), 20 - 2 + 1);
    for n in (0..20).filter(|n| ![3, 4, 6].contains(n)) {
        assert_eq!(
            store.get_blocking(&key(n)),
            Lookup::Hit(entry(n, 1000)),
            "{n}"
        );
    }
    assert_eq!(store.get_blocking(&key(3)), Lookup::Hit(entry(333, 500)));
    assert_eq!(store.get_blocking(&key(4)), Lookup::Miss);
    assert_eq!(store.get_blocking(&key(6)), Lookup::Miss);
    assert!(store.get_blocking(&key(100)).is_hit());
    // Counters persisted and carried on.
    let s = store.stats_blocking();
    assert_eq!(s.hits, before.hits + 19);
    assert_eq!(s.entries, 19);
    drop(store);
    let store = open(dir.path(), 1 << 30);
    assert_eq!(store.get_blocking(&key(6)), Lookup::Miss);
    assert_eq!(store.stats_blocking().entries, 19);
}

#[test]
fn a_torn_tail_is_truncated_and_the_rest_served() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), 1 << 30);
    for n in 0..3 {
        store.put_blocking(&key(n), &entry(n, 5000));
    }
    drop(store);
    let seg = segment_files(dir.path()).pop().unwrap();
    let full = fs::metadata(&seg).unwrap().len();
    let rec = (HEADER_LEN + entry(2, 5000).encoded_len()) as u64;
    // A crash in the middle of the third record.
    File::options()
        .write(true)
        .open(&seg)
        .unwrap()
        .set_len(full - 100)
        .unwrap();
    let store = open(dir.path(), 1 << 30);
    assert_eq!(fs::metadata(&seg).unwrap().len(), full - rec);
    assert_eq!(store.get_blocking(&key(2)), Lookup::Miss);
    for n in 0..2 {
        assert_eq!(store.get_blocking(&key(n)), Lookup::Hit(entry(n, 5000)));
    }
    assert_eq!(store.stats_blocking().size_bytes, full - rec);
    // A torn header (a few bytes of one) goes the same way.
    drop(store);
    let mut f = File::options().append(true).open(&seg).unwrap();
    std::io::Write::write_all(&mut f, &MAGIC).unwrap();
    drop(f);
    let store = open(dir.path(), 1 << 30);
    assert_eq!(fs::metadata(&seg).unwrap().len(), full - rec);
    store.put_blocking(&key(9), &entry(9, 10));
    drop(store);
    let store = open(dir.path(), 1 << 30);
    assert!(store.get_blocking(&key(9)).is_hit());
    assert!(store.get_blocking(&key(1)).is_hit());
}

#[test]
fn a_corrupt_record_in_the_middle_is_a_counted_miss_never_served() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), 1 << 30);
    for n in 0..4 {
        store.put_blocking(&key(n), &entry(n, 2000));
    }
    drop(store);
    let seg = segment_files(dir.path()).pop().unwrap();
    let rec = HEADER_LEN + entry(0, 2000).encoded_len();
    let mut data = fs::read(&seg).unwrap();
    // Record 1: a flipped byte in the entry. Record 2: in the header.
    data[rec + HEADER_LEN + 500] ^= 0xff;
    data[2 * rec + 20] ^= 0xff;
    fs::write(&seg, &data).unwrap();

    let store = open(dir.path(), 1 << 30);
    // The bad header is skipped: record 3 after it is still found.
    assert_eq!(store.get_blocking(&key(3)), Lookup::Hit(entry(3, 2000)));
    assert_eq!(store.get_blocking(&key(0)), Lookup::Hit(entry(0, 2000)));
    assert_eq!(store.get_blocking(&key(2)), Lookup::Miss);
    // The bad entry: failed once, counted, then gone.
    assert_eq!(store.get_blocking(&key(1)), Lookup::Failed);
    assert_eq!(store.get_blocking(&key(1)), Lookup::Miss);
    let s = store.stats_blocking();
    assert_eq!((s.errors, s.hits), (1, 2));
    assert_eq!(s.misses, 3);
    // Tombstoned: not back after a restart either.
    drop(store);
    let store = open(dir.path(), 1 << 30);
    assert_eq!(store.get_blocking(&key(1)), Lookup::Miss);
    assert_eq!(store.stats_blocking().errors, 1);
}

#[test]
fn eviction_deletes_oldest_segments_and_keeps_entries_in_use() {
    let dir = tempfile::tempdir().unwrap();
    let one = (HEADER_LEN + entry(0, 10_000).encoded_len()) as u64;
    // Four entries per segment, at most 40 entries.
    let max = 40 * one;
    let store = PackStore::with_segment_size(dir.path(), max, 4 * one);
    store.load_index();
    for n in 0..36 {
        assert!(store.put_blocking(&key(n), &entry(n, 10_000)).stored);
    }
    assert_eq!(store.stats_blocking().evictions, 0);
    // Key 1 is in the oldest segment and in use: a hit moves it.
    assert!(store.get_blocking(&key(1)).is_hit());
    let mut evicted = 0;
    for n in 36..60 {
        let out = store.put_blocking(&key(n), &entry(n, 10_000));
        assert!(out.stored && out.size_bytes <= max, "{out:?}");
        evicted += out.evicted;
    }
    let s = store.stats_blocking();
    assert!(evicted > 0 && s.evictions == evicted, "{s:?}");
    assert!(s.size_bytes <= max);
    assert_eq!(
        s.size_bytes,
        segment_files(dir.path())
            .iter()
            .map(|p| fs::metadata(p).unwrap().len())
            .sum::<u64>()
    );
    // Oldest gone (whole segments), newest kept, key 1 kept.
    assert_eq!(store.get_blocking(&key(0)), Lookup::Miss);
    assert_eq!(store.get_blocking(&key(2)), Lookup::Miss);
    assert_eq!(store.get_blocking(&key(1)), Lookup::Hit(entry(1, 10_000)));
    for n in 50..60 {
        assert!(store.get_blocking(&key(n)).is_hit(), "{n}");
    }
    assert!(!store.segment_ids().contains(&1));
    // Every key is either still there or was counted evicted.
    assert_eq!(s.entries + evicted, 60, "{s:?}");
}

#[test]
fn entries_bigger_than_the_limit_are_not_stored_and_big_ones_get_a_segment() {
    let dir = tempfile::tempdir().unwrap();
    let store = PackStore::with_segment_size(dir.path(), 100_000, 10_000);
    store.load_index();
    assert!(!store.put_blocking(&key(1), &entry(1, 200_000)).stored);
    assert_eq!(store.get_blocking(&key(1)), Lookup::Miss);
    store.put_blocking(&key(2), &entry(2, 100));
    assert!(store.put_blocking(&key(3), &entry(3, 30_000)).stored);
    store.put_blocking(&key(4), &entry(4, 100));
    assert_eq!(store.segment_ids().len(), 3);
    for n in 2..5 {
        assert!(store.get_blocking(&key(n)).is_hit(), "{n}");
    }
}

#[test]
fn a_second_opener_gets_the_tier_off_without_touching_it() {
    let dir = tempfile::tempdir().unwrap();
    let first = open(dir.path(), 1 << 30);
    first.put_blocking(&key(1), &entry(1, 100));
    let second = PackStore::open(dir.path(), 1 << 30);
    assert!(second.is_off());
    assert_eq!(second.load_index(), 0);
    assert_eq!(second.get_blocking(&key(1)), Lookup::Miss);
    assert!(!second.put_blocking(&key(2), &entry(2, 100)).stored);
    assert!(!second.remove_blocking(&key(1)));
    assert_eq!(second.stats_blocking().hits, 0);
    drop(second);
    // The first is unharmed, and hands over when it goes.
    assert!(first.get_blocking(&key(1)).is_hit());
    assert_eq!(segment_files(dir.path()).len(), 1);
    drop(first);
    let third = open(dir.path(), 1 << 30);
    assert!(third.get_blocking(&key(1)).is_hit());
    assert_eq!(third.get_blocking(&key(2)), Lookup::Miss);
}

#[test]
fn the_one_file_per_entry_layout_is_imported() {
    let dir = tempfile::tempdir().unwrap();
    let old = DiskStore::new(dir.path(), 1 << 30);
    for n in 0..5 {
        old.put_blocking(&key(n), &entry(n, 3000));
    }
    old.write_manifest_bytes(&key(7), b"manifest");
    // A corrupt entry and a write a killed process left.
    let bad = old.entry_path(&key(8));
    old.put_blocking(&key(8), &entry(8, 3000));
    let mut data = fs::read(&bad).unwrap();
    data[100] ^= 0xff;
    fs::write(&bad, &data).unwrap();
    let shard = old.entry_path(&key(0)).parent().unwrap().to_path_buf();
    fs::write(shard.join(".tmp-crashed"), b"x").unwrap();
    let hits_before = old.stats_blocking().hits;
    drop(old);

    let store = open(dir.path(), 1 << 30);
    for n in 0..5 {
        assert_eq!(
            store.get_blocking(&key(n)),
            Lookup::Hit(entry(n, 3000)),
            "{n}"
        );
    }
    assert_eq!(store.get_blocking(&key(8)), Lookup::Miss);
    // Only the packs, the lock, the stats and the tag are left.
    let mut left: Vec<String> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(left, ["CACHEDIR.TAG", "pack.lock", "packs", "stats"]);
    let s = store.stats_blocking();
    assert_eq!((s.entries, s.hits), (5, hits_before + 5));
    drop(store);
    let store = open(dir.path(), 1 << 30);
    assert!(store.get_blocking(&key(4)).is_hit());
}

#[test]
fn concurrent_puts_and_gets_while_evicting() {
    let dir = tempfile::tempdir().unwrap();
    let one = (HEADER_LEN + entry(0, 5000).encoded_len()) as u64;
    let store = PackStore::with_segment_size(dir.path(), 50 * one, 5 * one);
    store.load_index();
    let threads: Vec<_> = (0..8u32)
        .map(|t| {
            let store = store.clone();
            std::thread::spawn(move || {
                let mut hits = 0;
                for r in 0..200u32 {
                    let n = (t * 37 + r * 11) % 120;
                    match store.get_blocking(&key(n)) {
                        Lookup::Hit(e) => {
                            assert_eq!(e, entry(n, 5000), "key {n}");
                            hits += 1;
                        }
                        Lookup::Miss => {
                            assert!(store.put_blocking(&key(n), &entry(n, 5000)).stored);
                        }
                        Lookup::Failed => panic!("corrupt entry for key {n}"),
                    }
                    if r % 50 == 0 {
                        store.remove_blocking(&key(n));
                    }
                }
                hits
            })
        })
        .collect();
    let hits: u32 = threads.into_iter().map(|h| h.join().unwrap()).sum();
    let s = store.stats_blocking();
    assert!(hits > 0 && s.evictions > 0, "{s:?}");
    assert_eq!(s.errors, 0);
    assert_eq!(s.hits + s.misses, 8 * 200);
    assert!(s.size_bytes <= 50 * one);
    // Everything indexed reads back after a restart.
    drop(store);
    let store = open(dir.path(), 50 * one);
    let mut found = 0;
    for n in 0..120 {
        match store.get_blocking(&key(n)) {
            Lookup::Hit(e) => {
                assert_eq!(e, entry(n, 5000));
                found += 1;
            }
            Lookup::Miss => {}
            Lookup::Failed => panic!("corrupt entry for key {n}"),
        }
    }
    assert!(found > 0);
    assert_eq!(store.stats_blocking().errors, 0);
}
