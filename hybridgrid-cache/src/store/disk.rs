//! The on-disk store shared by every `hgbuild` process of a build: one
//! file per entry.
//!
//! # Layout
//!
//! ```text
//! <dir>/CACHEDIR.TAG          marks the directory as a cache for backup tools
//! <dir>/stats                 counters and the size estimate (text, replaced atomically)
//! <dir>/stats.lock            flock(2) guarding read-modify-write of `stats`
//! <dir>/evict.lock            flock(2) held by the one process scanning/evicting
//! <dir>/ab/abcdef…            one result entry per file, named by its 64-hex key
//! <dir>/ab/abcdef….m          a direct-mode manifest
//! <dir>/ab/.tmp-XXXXXX        a write in progress
//! ```
//!
//! # Concurrency
//!
//! `make -j32` runs 32 `hgbuild` processes on one directory. Every write
//! goes to a temporary file in the destination's own directory and is
//! renamed into place, so a reader sees either no file or a complete one;
//! the checksum in every entry catches the rest (disk corruption, a crash
//! mid-write of the file system). A corrupt or truncated entry is a miss:
//! it is removed and counted as an error.
//!
//! # Size
//!
//! Each put adds its size to the estimate in `stats` (under `stats.lock`),
//! so no put walks the tree. When the estimate passes the limit, or when
//! there is no estimate yet, one process (whoever gets `evict.lock`; the
//! others carry on) scans the tree, deletes the least recently used files
//! (by modification time, refreshed on every hit) down to 90% of the limit,
//! and writes the exact size back. Temporary files older than an hour
//! (left by killed processes) go in the same scan.
//!
//! # A store only one process uses
//!
//! [`DiskStore::exclusive`] is for a directory no other process writes:
//! the counters and the size estimate are
//! kept in memory and written to `stats` at most once a second (and when
//! the store is dropped), instead of a locked read-modify-write of `stats`
//! on every lookup and every write. Entries are written as above. Once
//! [`DiskStore::load_index`] has scanned the directory, an exclusive store
//! knows which keys it holds (8 bytes each, kept current on every write,
//! removal and eviction), and answers a lookup of any other key as a miss
//! without touching the disk or the blocking pool. (The coordinator's
//! shared tier is a [`PackStore`](super::PackStore) instead: one file per
//! entry costs an inode per compile, which a busy coordinator cannot
//! afford; it imports a directory of this layout when it first opens it.)
//!
//! # Failures
//!
//! An unwritable or missing directory, a full disk or a permission error
//! never fails the caller: the first one logs a warning, later ones log at
//! debug level, lookups become misses and writes are skipped. Counters
//! that cannot be written to `stats` are kept in memory.

use std::fs::{self, File, FileTimes};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::Bytes;

use super::stats::{Delta, LocalCounters, Persisted, TMP_PREFIX, read_stats_file};
use super::{CacheStats, Lookup, PutOutcome};
use crate::entry::CacheEntry;
use crate::key::CacheKey;

/// After an eviction the store holds at most this fraction of its limit.
pub(crate) const LOW_WATER: f64 = 0.9;

/// Temporary files older than this are debris from killed processes.
const STALE_TMP: Duration = Duration::from_secs(3600);

const MANIFEST_SUFFIX: &str = ".m";

/// A content-addressed store in a directory, safe to share between
/// processes. Cloning is cheap (the clones share state).
#[derive(Clone, Debug)]
pub struct DiskStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    dir: PathBuf,
    max_bytes: u64,
    warned: AtomicBool,
    /// Counter changes not yet written to the stats file.
    pending: Mutex<Delta>,
    /// The in-memory counters of an exclusive store.
    exclusive: Option<LocalCounters>,
    /// The keys of the entries on disk, once loaded (exclusive stores).
    index: Option<Mutex<KeyIndex>>,
}

/// The entries of an exclusive store, by the first 8 bytes of their key:
/// a lookup of a key not in it is a miss without touching the disk. Only
/// this process writes the directory, so every entry written is added and
/// every entry removed, evicted or found corrupt is taken out. A key left
/// in the index after its file went some other way only costs a read.
#[derive(Debug, Default)]
enum KeyIndex {
    /// Not loaded: every lookup reads the disk.
    #[default]
    Unloaded,
    /// A scan is running; entries written meanwhile are collected here.
    Loading(KeySet),
    /// Every entry on disk is in the set.
    Ready(KeySet),
}

/// Key prefixes: blake3 output, so already uniformly spread.
type KeySet = std::collections::HashSet<u64, std::hash::BuildHasherDefault<PrefixHasher>>;

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

/// What an eviction or a clear did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EvictOutcome {
    /// Files removed.
    pub evicted: u64,
    /// Bytes freed.
    pub freed_bytes: u64,
    /// Bytes left.
    pub size_bytes: u64,
    /// Files left.
    pub entries: u64,
}

impl DiskStore {
    /// A store in `dir` holding at most `max_bytes`. Nothing is touched
    /// until the first operation; the directory is created when needed.
    pub fn new(dir: impl Into<PathBuf>, max_bytes: u64) -> Self {
        DiskStore {
            inner: Arc::new(Inner {
                dir: dir.into(),
                max_bytes,
                warned: AtomicBool::new(false),
                pending: Mutex::new(Delta::default()),
                exclusive: None,
                index: None,
            }),
        }
    }

    /// A store in `dir` that no other process uses (see the module docs):
    /// counters are kept in memory and written to `stats` at most once a
    /// second, which saves a locked rewrite of `stats` per operation.
    pub fn exclusive(dir: impl Into<PathBuf>, max_bytes: u64) -> Self {
        let dir = dir.into();
        DiskStore {
            inner: Arc::new(Inner {
                exclusive: Some(LocalCounters::new(&dir)),
                dir,
                max_bytes,
                warned: AtomicBool::new(false),
                pending: Mutex::new(Delta::default()),
                index: Some(Mutex::new(KeyIndex::Unloaded)),
            }),
        }
    }

    /// A store configured by the `cache:` section.
    pub fn from_config(config: &hybridgrid_core::config::CacheConfig) -> Self {
        DiskStore::new(config.dir_path(), config.max_size_bytes())
    }

    /// The cache directory.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// The size limit in bytes.
    pub fn max_bytes(&self) -> u64 {
        self.inner.max_bytes
    }

    /// The path of the entry for `key`.
    pub fn entry_path(&self, key: &CacheKey) -> PathBuf {
        let hex = key.to_hex();
        self.inner.dir.join(&hex[..2]).join(hex)
    }

    pub(crate) fn manifest_path(&self, key: &CacheKey) -> PathBuf {
        let hex = key.to_hex();
        self.inner
            .dir
            .join(&hex[..2])
            .join(format!("{hex}{MANIFEST_SUFFIX}"))
    }

    /// Looks `key` up, blocking the thread on file I/O.
    pub fn get_blocking(&self, key: &CacheKey) -> Lookup {
        self.get_counted(key, false)
    }

    /// Looks up the result a direct-mode manifest named: a hit counts as a
    /// hit and a direct-mode hit; a missing entry counts only as a
    /// direct-mode miss (the preprocessed lookup that follows counts itself).
    pub fn get_direct_blocking(&self, key: &CacheKey) -> Lookup {
        self.get_counted(key, true)
    }

    /// Counts a direct-mode lookup that found no usable manifest.
    pub fn count_direct_miss(&self) {
        self.record(Delta {
            direct_misses: 1,
            ..Delta::default()
        });
    }

    /// Direct-mode hits and misses so far (`hgbuild cache stats`).
    pub fn direct_stats_blocking(&self) -> (u64, u64) {
        let mut p = self.read_stats_locked();
        p.apply(*self.pending());
        (p.direct_hits, p.direct_misses)
    }

    fn get_counted(&self, key: &CacheKey, direct: bool) -> Lookup {
        let path = self.entry_path(key);
        match self.read_object(&path) {
            Ok(Some(data)) => {
                let len = data.len();
                match CacheEntry::decode_bytes(data) {
                    Ok(entry) => {
                        self.record(Delta {
                            hits: 1,
                            direct_hits: u64::from(direct),
                            ..Delta::default()
                        });
                        Lookup::Hit(entry)
                    }
                    Err(err) => {
                        tracing::warn!(path = %path.display(), error = %err, "corrupt cache entry removed");
                        self.drop_corrupt(&path, len);
                        self.index_remove(key_prefix(key));
                        Lookup::Failed
                    }
                }
            }
            Ok(None) => {
                self.record(Delta {
                    misses: u64::from(!direct),
                    direct_misses: u64::from(direct),
                    ..Delta::default()
                });
                Lookup::Miss
            }
            Err(err) => {
                self.io_failure("read", &path, &err);
                self.record(Delta {
                    misses: 1,
                    errors: 1,
                    ..Delta::default()
                });
                Lookup::Failed
            }
        }
    }

    /// Stores `entry` under `key`, blocking the thread on file I/O.
    pub fn put_blocking(&self, key: &CacheKey, entry: &CacheEntry) -> PutOutcome {
        self.put_encoded(key, &entry.encode())
    }

    /// Stores an already encoded entry ([`CacheEntry::encode`]) under
    /// `key`, blocking the thread on file I/O.
    pub fn put_encoded(&self, key: &CacheKey, data: &[u8]) -> PutOutcome {
        let path = self.entry_path(key);
        match self.write_object(&path, data) {
            Some(stats) => {
                self.index_add(key_prefix(key));
                self.after_write(stats)
            }
            None => PutOutcome::default(),
        }
    }

    /// Removes the entry for `key`, blocking; true if there was one.
    pub fn remove_blocking(&self, key: &CacheKey) -> bool {
        let removed = self.remove_object(&self.entry_path(key));
        self.index_remove(key_prefix(key));
        removed
    }

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

    fn index_add(&self, prefix: u64) {
        if let Some(index) = &self.inner.index {
            match &mut *lock(index) {
                KeyIndex::Loading(set) | KeyIndex::Ready(set) => {
                    set.insert(prefix);
                }
                KeyIndex::Unloaded => {}
            }
        }
    }

    fn index_remove(&self, prefix: u64) {
        if let Some(index) = &self.inner.index
            && let KeyIndex::Ready(set) = &mut *lock(index)
        {
            set.remove(&prefix);
        }
    }

    /// Takes a removed file out of the index, if it is an entry.
    fn index_remove_path(&self, path: &Path) {
        if self.inner.index.is_some()
            && let Some(p) = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(name_prefix)
        {
            self.index_remove(p);
        }
    }

    /// The counters: those in the stats file plus any this process could
    /// not write there.
    pub fn stats_blocking(&self) -> CacheStats {
        let p = match &self.inner.exclusive {
            Some(_) => self.update_stats(Delta::default(), None),
            None => {
                let mut p = self.read_stats_locked();
                p.apply(*self.pending());
                p
            }
        };
        CacheStats {
            hits: p.hits,
            misses: p.misses,
            evictions: p.evictions,
            errors: p.errors,
            size_bytes: p.size_bytes,
            entries: p.entries,
            max_size_bytes: self.inner.max_bytes,
        }
    }

    /// Evicts least recently used files until at most `max_bytes` remain
    /// (`hgbuild cache evict --max-size`), and makes the size estimate
    /// exact. Waits for a concurrent eviction to finish first.
    pub fn evict_to(&self, max_bytes: u64) -> EvictOutcome {
        self.evict(max_bytes, true).unwrap_or_default()
    }

    /// Walks the directory and makes the size estimate exact, removing
    /// nothing but stale temporary files.
    pub fn rescan(&self) -> EvictOutcome {
        self.evict_to(u64::MAX)
    }

    /// Removes every entry and manifest (`hgbuild cache clear`); the hit and
    /// miss counters stay.
    pub fn clear(&self) -> EvictOutcome {
        let Some(lock) = self.lock("evict.lock", true) else {
            return EvictOutcome::default();
        };
        let files = self.scan();
        let mut out = EvictOutcome::default();
        let mut left = 0u64;
        let mut left_entries = 0u64;
        for f in files {
            match fs::remove_file(&f.path) {
                Ok(()) => {
                    self.index_remove_path(&f.path);
                    out.evicted += 1;
                    out.freed_bytes += f.len;
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => {
                    self.io_failure("remove", &f.path, &e);
                    left += f.len;
                    left_entries += 1;
                }
            }
        }
        self.update_stats(Delta::default(), Some((left, left_entries)));
        drop(lock);
        out.size_bytes = left;
        out.entries = left_entries;
        out
    }
}

// Blobs shared with direct mode.
impl DiskStore {
    pub(crate) fn read_manifest_bytes(&self, key: &CacheKey) -> Option<Bytes> {
        let path = self.manifest_path(key);
        match self.read_object(&path) {
            Ok(data) => data,
            Err(err) => {
                self.io_failure("read", &path, &err);
                None
            }
        }
    }

    pub(crate) fn write_manifest_bytes(&self, key: &CacheKey, data: &[u8]) -> bool {
        let path = self.manifest_path(key);
        match self.write_object(&path, data) {
            Some(stats) => {
                self.after_write(stats);
                true
            }
            None => false,
        }
    }

    pub(crate) fn remove_manifest(&self, key: &CacheKey, len: usize) {
        self.drop_corrupt(&self.manifest_path(key), len);
    }
}

/// Locks `m`, whatever a panicking holder left (plain data).
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl DiskStore {
    fn pending(&self) -> std::sync::MutexGuard<'_, Delta> {
        self.inner.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Logs the first I/O failure as a warning, later ones at debug level.
    fn io_failure(&self, op: &str, path: &Path, err: &io::Error) {
        super::stats::io_failure(&self.inner.warned, &self.inner.dir, op, path, err);
    }

    /// Reads a whole object file; `None` if it does not exist. A hit
    /// refreshes its modification time (the LRU clock).
    fn read_object(&self, path: &Path) -> io::Result<Option<Bytes>> {
        let mut f = match File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let len = f.metadata()?.len();
        let mut buf = Vec::with_capacity(usize::try_from(len).unwrap_or(0).min(1 << 30));
        f.read_to_end(&mut buf)?;
        let now = SystemTime::now();
        // Best effort: a read-only cache still serves hits.
        let _ = f.set_times(FileTimes::new().set_accessed(now).set_modified(now));
        Ok(Some(Bytes::from(buf)))
    }

    /// Writes a file atomically; returns the stats after accounting for it,
    /// or `None` if nothing was written.
    fn write_object(&self, path: &Path, data: &[u8]) -> Option<Persisted> {
        if data.len() as u64 > self.inner.max_bytes {
            return None;
        }
        let shard = path.parent()?;
        let result = (|| -> io::Result<Option<u64>> {
            fs::create_dir_all(shard)?;
            let mut tmp = tempfile::Builder::new()
                .prefix(TMP_PREFIX)
                .tempfile_in(shard)?;
            tmp.write_all(data)?;
            let old = fs::metadata(path).ok().map(|m| m.len());
            tmp.persist(path).map_err(|e| e.error)?;
            Ok(old)
        })();
        match result {
            Ok(old) => {
                let delta = Delta {
                    size: data.len() as i64 - old.unwrap_or(0) as i64,
                    entries: i64::from(old.is_none()),
                    ..Delta::default()
                };
                Some(self.record(delta))
            }
            Err(err) => {
                self.io_failure("write", path, &err);
                self.record(Delta {
                    errors: 1,
                    ..Delta::default()
                });
                None
            }
        }
    }

    fn after_write(&self, stats: Persisted) -> PutOutcome {
        let mut out = PutOutcome {
            stored: true,
            evicted: 0,
            size_bytes: stats.size_bytes,
        };
        let max = self.inner.max_bytes;
        if !stats.scanned || stats.size_bytes > max {
            let target = if stats.size_bytes > max {
                (max as f64 * LOW_WATER) as u64
            } else {
                max
            };
            if let Some(ev) = self.evict(target, false) {
                out.evicted = ev.evicted;
                out.size_bytes = ev.size_bytes;
            }
        }
        out
    }

    fn remove_object(&self, path: &Path) -> bool {
        let len = fs::metadata(path).map(|m| m.len()).unwrap_or(0);
        match fs::remove_file(path) {
            Ok(()) => {
                self.record(Delta {
                    size: -(len as i64),
                    entries: -1,
                    ..Delta::default()
                });
                true
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => false,
            Err(e) => {
                self.io_failure("remove", path, &e);
                false
            }
        }
    }

    fn drop_corrupt(&self, path: &Path, len: usize) {
        let removed = fs::remove_file(path).is_ok();
        self.record(Delta {
            misses: 1,
            errors: 1,
            size: if removed { -(len as i64) } else { 0 },
            entries: if removed { -1 } else { 0 },
            ..Delta::default()
        });
    }

    /// Adds a delta to the shared counters; returns them afterwards.
    fn record(&self, delta: Delta) -> Persisted {
        self.update_stats(delta, None)
    }

    /// Read-modify-write of the stats file under `stats.lock`. `set`
    /// replaces the size and entry count (after a scan). On failure the
    /// delta is kept in memory and the in-memory view is returned.
    fn update_stats(&self, delta: Delta, set: Option<(u64, u64)>) -> Persisted {
        if let Some(ex) = &self.inner.exclusive {
            // In memory, written back after a scan or when the last write
            // is a second old.
            let (p, err) = ex.update(delta, set, set.is_some());
            if let Some(err) = err {
                self.io_failure("update stats", &self.inner.dir.join("stats"), &err);
            }
            return p;
        }
        let mut pending = self.pending();
        let mut total = *pending;
        total.add(delta);
        let result = (|| -> io::Result<Persisted> {
            let _lock = match lock_file(&self.inner.dir.join("stats.lock"), true) {
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    fs::create_dir_all(&self.inner.dir)?;
                    lock_file(&self.inner.dir.join("stats.lock"), true)?
                }
                other => other?,
            };
            // Rewritten in place under the lock (every reader takes it):
            // no temporary file, no rename per compile.
            let mut f = File::options()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(self.inner.dir.join("stats"))?;
            let mut text = String::new();
            // A garbled stats file is rebuilt by the next scan.
            let mut p = match f.read_to_string(&mut text) {
                Ok(_) => Persisted::parse(&text),
                Err(e) if e.kind() == io::ErrorKind::InvalidData => Persisted::default(),
                Err(e) => return Err(e),
            };
            p.apply(total);
            if let Some((size, entries)) = set {
                p.size_bytes = size;
                p.entries = entries;
                p.scanned = true;
            }
            let out = p.render();
            use std::io::{Seek, SeekFrom};
            f.seek(SeekFrom::Start(0))?;
            f.write_all(out.as_bytes())?;
            f.set_len(out.len() as u64)?;
            Ok(p)
        })();
        match result {
            Ok(p) => {
                *pending = Delta::default();
                p
            }
            Err(err) => {
                *pending = total;
                drop(pending);
                self.io_failure("update stats", &self.inner.dir.join("stats"), &err);
                let mut p = read_stats_file(&self.inner.dir).unwrap_or_default();
                p.apply(total);
                if let Some((size, entries)) = set {
                    p.size_bytes = size;
                    p.entries = entries;
                }
                // Without a writable stats file, never trigger scans on
                // every put.
                p.scanned = true;
                p
            }
        }
    }

    /// The stats file as the last writer left it (it is rewritten in
    /// place under `stats.lock`).
    fn read_stats_locked(&self) -> Persisted {
        let lock = lock_file(&self.inner.dir.join("stats.lock"), true);
        let p = read_stats_file(&self.inner.dir).unwrap_or_default();
        drop(lock);
        p
    }

    fn lock(&self, name: &str, blocking: bool) -> Option<LockGuard> {
        let path = self.inner.dir.join(name);
        let r = fs::create_dir_all(&self.inner.dir).and_then(|()| lock_file(&path, blocking));
        match r {
            Ok(g) => Some(g),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => None,
            Err(e) => {
                self.io_failure("lock", &path, &e);
                None
            }
        }
    }

    /// Scans, then evicts oldest first down to `target`; `None` if another
    /// process holds the eviction lock (and `blocking` is false) or the
    /// directory is unusable.
    fn evict(&self, target: u64, blocking: bool) -> Option<EvictOutcome> {
        let lock = self.lock("evict.lock", blocking)?;
        let mut files = self.scan();
        let mut size: u64 = files.iter().map(|f| f.len).sum();
        let mut entries = files.len() as u64;
        let mut out = EvictOutcome::default();
        if size > target {
            files.sort_by_key(|f| f.mtime);
            for f in &files {
                if size <= target {
                    break;
                }
                match fs::remove_file(&f.path) {
                    Ok(()) => {
                        self.index_remove_path(&f.path);
                        out.evicted += 1;
                        out.freed_bytes += f.len;
                        size -= f.len;
                        entries -= 1;
                    }
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {
                        self.index_remove_path(&f.path);
                        size -= f.len;
                        entries -= 1;
                    }
                    Err(e) => self.io_failure("evict", &f.path, &e),
                }
            }
        }
        self.update_stats(
            Delta {
                evictions: out.evicted,
                ..Delta::default()
            },
            Some((size, entries)),
        );
        drop(lock);
        if out.evicted > 0 {
            tracing::debug!(
                evicted = out.evicted,
                freed_bytes = out.freed_bytes,
                size_bytes = size,
                "cache evicted"
            );
        }
        out.size_bytes = size;
        out.entries = entries;
        Some(out)
    }

    /// Every entry and manifest file; removes stale temporary files.
    pub(crate) fn scan(&self) -> Vec<ScannedFile> {
        let mut out = Vec::new();
        let dir = &self.inner.dir;
        let tag = dir.join("CACHEDIR.TAG");
        if !tag.exists() {
            let _ = fs::write(
                &tag,
                "Signature: 8a477f597d28d172789f06886806bc55\n\
                 # This file is a cache directory tag created by hybridgrid.\n",
            );
        }
        let Ok(shards) = fs::read_dir(dir) else {
            return out;
        };
        let now = SystemTime::now();
        for shard in shards.flatten() {
            let name = shard.file_name();
            let Some(name) = name.to_str() else { continue };
            if name.len() != 2 || !name.bytes().all(is_lower_hex) {
                continue;
            }
            let Ok(files) = fs::read_dir(shard.path()) else {
                continue;
            };
            for f in files.flatten() {
                let fname = f.file_name();
                let Some(fname) = fname.to_str() else {
                    continue;
                };
                let Ok(meta) = f.metadata() else { continue };
                if !meta.is_file() {
                    continue;
                }
                let mtime = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
                if is_object_name(fname) {
                    out.push(ScannedFile {
                        path: f.path(),
                        len: meta.len(),
                        mtime,
                    });
                } else if fname.starts_with(TMP_PREFIX)
                    && now.duration_since(mtime).unwrap_or_default() > STALE_TMP
                {
                    let _ = fs::remove_file(f.path());
                }
            }
        }
        out
    }
}

pub(crate) struct ScannedFile {
    pub(crate) path: PathBuf,
    pub(crate) len: u64,
    pub(crate) mtime: SystemTime,
}

pub(crate) fn is_lower_hex(b: u8) -> bool {
    b.is_ascii_digit() || (b'a'..=b'f').contains(&b)
}

fn is_object_name(name: &str) -> bool {
    let hex = name.strip_suffix(MANIFEST_SUFFIX).unwrap_or(name);
    hex.len() == 64 && hex.bytes().all(is_lower_hex)
}

#[cfg(unix)]
pub(crate) type LockGuard = nix::fcntl::Flock<File>;
#[cfg(not(unix))]
pub(crate) type LockGuard = File;

/// Opens (creating) and flocks `path`; `WouldBlock` if `blocking` is false
/// and another process holds it. The lock goes with the guard.
pub(crate) fn lock_file(path: &Path, blocking: bool) -> io::Result<LockGuard> {
    let f = File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)?;
    #[cfg(unix)]
    {
        use nix::fcntl::{Flock, FlockArg};
        let arg = if blocking {
            FlockArg::LockExclusive
        } else {
            FlockArg::LockExclusiveNonblock
        };
        Flock::lock(f, arg).map_err(|(_, errno)| io::Error::from(errno))
    }
    #[cfg(not(unix))]
    {
        let _ = blocking;
        Ok(f)
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

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::store::CacheStore;
    use hybridgrid_core::payload::Payload;

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
}
