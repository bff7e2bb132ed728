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
//! shared tier is a [`PackStore`](crate::store::PackStore) instead: one file per
//! entry costs an inode per compile, which a busy coordinator cannot
//! afford; it imports a directory of this layout when it first opens it.)
//!
//! # Failures
//!
//! An unwritable or missing directory, a full disk or a permission error
//! never fails the caller: the first one logs a warning, later ones log at
//! debug level, lookups become misses and writes are skipped. Counters
//! that cannot be written to `stats` are kept in memory.
//!
//! # Parts
//!
//! | file | what |
//! |---|---|
//! | `mod.rs` | the store and its directory layout |
//! | `objects.rs` | entries and manifests: get, put, remove, and damaged files |
//! | `index.rs` | the in-memory key index of an exclusive store |
//! | `counters.rs` | the counters and the `stats` file |
//! | `eviction.rs` | scanning, eviction, clearing, and the directory's lock |

mod counters;
mod eviction;
mod index;
mod objects;
#[cfg(test)]
pub(crate) mod tests;

pub(crate) use eviction::{LockGuard, is_lower_hex, lock_file};
pub(crate) use index::{PrefixHasher, key_of_name, key_prefix};

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::key::CacheKey;
use crate::store::stats::{Delta, LocalCounters};

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
}

/// Locks `m`, whatever a panicking holder left (plain data).
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
