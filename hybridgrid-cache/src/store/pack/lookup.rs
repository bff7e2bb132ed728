//! Reads: whether the index may hold a key, and getting an entry (refreshing it
//! when it is about to be evicted).

use std::io;
use std::os::unix::fs::FileExt;
use std::sync::TryLockError;

use bytes::Bytes;

use crate::entry::CacheEntry;
use crate::key::CacheKey;
use crate::store::Lookup;
use crate::store::disk::key_prefix;
use crate::store::stats::Delta;

use super::record::Header;
use super::*;

impl PackStore {
    /// True if the index may hold `key` (false: a lookup misses without
    /// I/O).
    pub fn may_hold(&self, key: &CacheKey) -> bool {
        !self.is_off() && lock(&self.inner.state).index.contains_key(&key_prefix(key))
    }

    /// Counts a lookup answered without reading the store (from the
    /// index, or from writes not yet stored): a hit or a miss.
    pub fn count_lookup(&self, hit: bool) {
        self.inner.update(
            Delta {
                hits: u64::from(hit),
                misses: u64::from(!hit),
                ..Delta::default()
            },
            false,
        );
    }

    /// Looks `key` up, blocking the thread on file I/O.
    pub fn get_blocking(&self, key: &CacheKey) -> Lookup {
        let inner = &self.inner;
        if self.is_off() {
            return Lookup::Miss;
        }
        let prefix = key_prefix(key);
        let found = {
            let st = lock(&inner.state);
            st.index.get(&prefix).map(|&loc| {
                let file = st.segments.get(&loc.segment).map(|s| s.file.clone());
                let old = loc.segment < st.old_below && st.total >= inner.max_bytes / 2;
                (loc, file, old)
            })
        };
        let Some((loc, Some(file), old)) = found else {
            self.count_lookup(false);
            return Lookup::Miss;
        };
        let mut buf = vec![0u8; HEADER_LEN + loc.len as usize];
        let read = file.read_exact_at(&mut buf, u64::from(loc.offset));
        let bad = match read {
            Ok(()) => match Header::parse(&buf) {
                Some(h) if h.kind == KIND_ENTRY && h.len == loc.len => {
                    if h.key != *key.as_bytes() {
                        // Another key with the same prefix.
                        self.count_lookup(false);
                        return Lookup::Miss;
                    }
                    let all = Bytes::from(buf);
                    match CacheEntry::decode_bytes(all.slice(HEADER_LEN..)) {
                        Ok(entry) => {
                            self.count_lookup(true);
                            if old {
                                self.refresh(key, loc, &all);
                            }
                            return Lookup::Hit(entry);
                        }
                        Err(e) => e.to_string(),
                    }
                }
                _ => "bad record header".to_string(),
            },
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => "truncated".to_string(),
            Err(e) => {
                inner.io_failure("read", &inner.segment_path(loc.segment), &e);
                e.to_string()
            }
        };
        tracing::warn!(segment = %inner.segment_path(loc.segment).display(),
            offset = loc.offset, error = %bad, "corrupt cache entry removed");
        inner.update(
            Delta {
                misses: 1,
                errors: 1,
                ..Delta::default()
            },
            false,
        );
        // Out of the index, and tombstoned so that a restart does not
        // bring it back.
        let _append = lock(&inner.append);
        if lock(&inner.state).index.get(&prefix) == Some(&loc) {
            self.append_tombstone(key);
        }
        Lookup::Failed
    }

    /// Appends an entry in the oldest part of the store again, so that
    /// eviction keeps it; skipped if a write is in progress.
    fn refresh(&self, key: &CacheKey, loc: Loc, rec: &[u8]) {
        let inner = &self.inner;
        let _append = match inner.append.try_lock() {
            Ok(g) => g,
            Err(TryLockError::Poisoned(p)) => p.into_inner(),
            Err(TryLockError::WouldBlock) => return,
        };
        // Only if it is still the entry of its key (a newer one must win
        // on a rescan).
        if lock(&inner.state).index.get(&key_prefix(key)) != Some(&loc) {
            return;
        }
        if let Err(e) = inner.append_locked(key_prefix(key), rec, true) {
            inner.write_failed(&e);
        }
    }
}

impl PackStore {
    /// True if `key` is certainly absent (the miss is then counted):
    /// the lookup needs no I/O.
    pub(crate) fn miss_without_io(&self, key: &CacheKey) -> bool {
        if self.may_hold(key) {
            return false;
        }
        if !self.is_off() {
            self.count_lookup(false);
        }
        true
    }
}
