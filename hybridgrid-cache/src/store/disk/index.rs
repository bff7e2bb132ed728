//! The key index of an exclusive store: which keys it holds (8-byte prefixes),
//! so a lookup of any other key misses without I/O.

use std::path::Path;

use crate::key::CacheKey;
use crate::store::stats::Delta;

use super::*;

/// A hasher for key prefixes, which need no further mixing.
#[derive(Default)]
pub(crate) struct PrefixHasher(u64);

impl std::hash::Hasher for PrefixHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// The index prefix of a key.
pub(crate) fn key_prefix(key: &CacheKey) -> u64 {
    let b = key.as_bytes();
    u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]])
}

/// The key of an entry file's name (64 lowercase hex digits, no suffix).
pub(crate) fn key_of_name(name: &str) -> Option<CacheKey> {
    if !name.bytes().all(is_lower_hex) {
        return None;
    }
    name.parse().ok()
}

/// The index prefix of an entry file's name.
fn name_prefix(name: &str) -> Option<u64> {
    key_of_name(name).map(|k| key_prefix(&k))
}

impl DiskStore {
    /// Loads the index of the entries on disk (a scan of the directory) so
    /// that [`Self::known_absent`] can answer; blocking. Only an
    /// [exclusive](Self::exclusive) store keeps an index (other processes
    /// write the directory of a shared one): elsewhere this does nothing.
    /// Returns the number of entries indexed.
    pub fn load_index(&self) -> usize {
        let Some(index) = &self.inner.index else {
            return 0;
        };
        {
            let mut ix = lock(index);
            match &*ix {
                KeyIndex::Unloaded => *ix = KeyIndex::Loading(KeySet::default()),
                KeyIndex::Loading(_) => return 0,
                KeyIndex::Ready(set) => return set.len(),
            }
        }
        let mut found = KeySet::default();
        for f in self.scan() {
            if let Some(p) = f
                .path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(name_prefix)
            {
                found.insert(p);
            }
        }
        let mut ix = lock(index);
        if let KeyIndex::Loading(added) = std::mem::take(&mut *ix) {
            found.extend(added);
        }
        let n = found.len();
        *ix = KeyIndex::Ready(found);
        n
    }

    /// True when the index is loaded and has no entry for `key`: a lookup
    /// would miss, and need not touch the disk. Never blocks on I/O.
    pub fn known_absent(&self, key: &CacheKey) -> bool {
        match &self.inner.index {
            Some(index) => match &*lock(index) {
                KeyIndex::Ready(set) => !set.contains(&key_prefix(key)),
                KeyIndex::Unloaded | KeyIndex::Loading(_) => false,
            },
            None => false,
        }
    }

    /// Counts a lookup answered without reading the disk (from the index,
    /// or from writes not yet on disk): a hit or a miss.
    pub fn count_lookup(&self, hit: bool) {
        self.record(Delta {
            hits: u64::from(hit),
            misses: u64::from(!hit),
            ..Delta::default()
        });
    }

    pub(super) fn index_add(&self, prefix: u64) {
        if let Some(index) = &self.inner.index {
            match &mut *lock(index) {
                KeyIndex::Loading(set) | KeyIndex::Ready(set) => {
                    set.insert(prefix);
                }
                KeyIndex::Unloaded => {}
            }
        }
    }

    pub(super) fn index_remove(&self, prefix: u64) {
        if let Some(index) = &self.inner.index
            && let KeyIndex::Ready(set) = &mut *lock(index)
        {
            set.remove(&prefix);
        }
    }

    /// Takes a removed file out of the index, if it is an entry.
    pub(super) fn index_remove_path(&self, path: &Path) {
        if self.inner.index.is_some()
            && let Some(p) = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(name_prefix)
        {
            self.index_remove(p);
        }
    }
}

impl DiskStore {
    /// True if `key` is certainly absent (the miss is then counted):
    /// the lookup needs no I/O.
    pub(crate) fn miss_without_io(&self, key: &CacheKey) -> bool {
        if !self.known_absent(key) {
            return false;
        }
        self.count_lookup(false);
        true
    }
}
