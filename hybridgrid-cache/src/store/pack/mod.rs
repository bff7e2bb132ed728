//! [`PackStore`]: entries appended to pack files, for a directory only one
//! process uses (the coordinator's shared tier).
//!
//! Creating a file per entry (as [`DiskStore`](crate::store::DiskStore) does) costs
//! an inode per compile; on a busy coordinator the kernel's inode
//! allocation alone was most of the cache writer's time. A pack store
//! appends every entry to an open file instead: a put is one positional
//! write.
//!
//! # Layout
//!
//! ```text
//! <dir>/CACHEDIR.TAG          marks the directory as a cache for backup tools
//! <dir>/pack.lock             flock(2) held by the process that owns the directory
//! <dir>/stats                 counters (text, written at most once a second)
//! <dir>/packs/00000001.pack   segments, append-only, oldest first
//! ```
//!
//! A segment is a sequence of records: a 48-byte header (magic `HGPK`, a
//! kind, the full 32-byte key, the length of what follows, and a checksum
//! of the header) followed by the entry as [`CacheEntry::encode`] writes it
//! (which carries its own checksum). Removing an entry appends a
//! tombstone: a header of its own kind with nothing after it. Records are
//! written without fsync (a crash loses the last writes, as with the
//! one-file-per-entry store). A new segment starts when the current one
//! would pass the segment size (1/64 of the limit, from 1 to 256 MiB, so a
//! cache has about 64 segments and as many open files); an entry bigger
//! than that gets a segment of its own, and one bigger than the whole
//! limit is not stored.
//!
//! # Index
//!
//! An in-memory map from the first 8 bytes of a key to its record's
//! segment, offset and length: 24 bytes per slot of a hash table kept
//! between 7/16 and 7/8 full, so 28 to 57 bytes per entry (about 40 MB for
//! a 10 GB cache of 10 KB entries). A read compares the record's full key
//! with the one asked for, so two keys sharing a prefix cost a miss, never
//! a wrong entry. A key not in the index is a miss answered without I/O.
//!
//! The index is rebuilt by [`PackStore::load_index`] (on a thread of its
//! own, [`PackStore::load_in_background`]) from the segments' headers,
//! oldest first, later records of a key winning. Until it is loaded,
//! lookups of entries from earlier runs miss (entries written since the
//! start are found); writes go to a new segment meanwhile. A segment whose
//! end does not parse (a crash mid-append) is truncated to its last whole
//! record, with a warning; an unparseable header in the middle is skipped
//! up to the next valid header, with a warning. An entry whose bytes are
//! corrupt is found by its checksum when read: a miss, counted as an
//! error, dropped from the index and tombstoned.
//!
//! # Size and eviction
//!
//! The size is the bytes of all segments, dead records included. Past the
//! limit, whole segments go, oldest first, down to 90% of the limit: dead
//! records (keys written again, removed or found corrupt) are reclaimed
//! only then. To keep entries in use, a hit on an entry in the oldest
//! quarter of the bytes (while the store is at least half full) appends it
//! again to the current segment, if no write is in progress at that moment
//! (best effort: an approximate LRU).
//!
//! # One process
//!
//! The store takes an exclusive lock on `pack.lock` when opened. If another
//! process (or another store in this one) holds it, the store is off: one
//! warning names the directory, every lookup misses and nothing is
//! written. Counters are kept in memory and written to `stats` at most
//! once a second, as for an exclusive disk store.
//!
//! # Upgrade
//!
//! Entries of the one-file-per-entry layout (`<dir>/ab/abcdef…`, see
//! [`DiskStore`](crate::store::DiskStore)) are imported into packs by the loader,
//! oldest first, and their files removed, so an upgraded coordinator
//! keeps its cache.
//!
//! # Parts
//!
//! | file | what |
//! |---|---|
//! | `mod.rs` | the store, its state and directory, the counters |
//! | `record.rs` | the record format and scanning a segment |
//! | `load.rs` | building the index from the segments; importing the old layout |
//! | `lookup.rs` | reads |
//! | `write.rs` | appends: entries, tombstones, new segments |
//! | `eviction.rs` | which segments are old, and deleting them |

mod eviction;
mod load;
mod lookup;
mod record;
#[cfg(test)]
mod tests;
mod write;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::{self, File};
use std::hash::BuildHasherDefault;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::store::CacheStats;
use crate::store::disk::{LockGuard, PrefixHasher, lock_file};
use crate::store::stats::{Delta, LocalCounters};

use record::{segment_id, segment_name};

/// Bytes of a record header.
const HEADER_LEN: usize = 48;
const MAGIC: [u8; 4] = *b"HGPK";
const KIND_ENTRY: u8 = 1;
const KIND_TOMBSTONE: u8 = 2;

const MIN_SEGMENT: u64 = 1 << 20;
const MAX_SEGMENT: u64 = 256 << 20;

/// The subdirectory of the segments.
const PACKS: &str = "packs";
const LOCK_FILE: &str = "pack.lock";

/// The segment size for a limit of `max_bytes`.
fn segment_size(max_bytes: u64) -> u64 {
    (max_bytes / 64).clamp(MIN_SEGMENT, MAX_SEGMENT)
}

/// Where a record is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Loc {
    segment: u32,
    /// Offset of the header.
    offset: u32,
    /// Bytes after the header.
    len: u32,
}

type Index = HashMap<u64, Loc, BuildHasherDefault<PrefixHasher>>;

/// A store appending entries to pack files (see the module docs). Cloning
/// is cheap (the clones share state).
#[derive(Clone)]
pub struct PackStore {
    inner: Arc<Inner>,
}

struct Inner {
    dir: PathBuf,
    max_bytes: u64,
    segment_max: u64,
    /// Counters (none when off: the directory is another process's);
    /// written back when dropped, before the lock goes.
    counters: Option<LocalCounters>,
    /// The lock on `pack.lock`; `None`: the store is off.
    lock: Option<LockGuard>,
    warned: AtomicBool,
    /// Segments with an id below this existed when the store was opened
    /// (the loader scans them).
    first_new: u32,
    /// Serialises appends (and decides the current segment).
    append: Mutex<()>,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    index: Index,
    segments: BTreeMap<u32, Segment>,
    /// The segment appended to; none until the first write of this run.
    current: Option<u32>,
    next_id: u32,
    /// Bytes of all segments.
    total: u64,
    load: Load,
    /// Segments below this id are in the oldest quarter of the bytes.
    old_below: u32,
}

/// Keys removed before the index is loaded: they must not come back from
/// the older segments the loader merges.
type Removed = HashSet<u64, BuildHasherDefault<PrefixHasher>>;

enum Load {
    Unloaded(Removed),
    Loading(Removed),
    Ready,
}

impl Default for Load {
    fn default() -> Self {
        Load::Unloaded(Removed::default())
    }
}

struct Segment {
    file: Arc<File>,
    /// Bytes written (the end of the last whole record).
    len: u64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl PackStore {
    /// The store in `dir` holding at most `max_bytes`: takes the
    /// directory's lock and lists its segments (the index is loaded by
    /// [`Self::load_index`]). Never fails: a directory another process
    /// holds, or that cannot be used, gives a store that is off (see
    /// [`Self::is_off`]), with a warning.
    pub fn open(dir: impl Into<PathBuf>, max_bytes: u64) -> Self {
        Self::with_segment_size(dir, max_bytes, segment_size(max_bytes))
    }

    /// [`Self::open`] with segments of `segment_max` bytes.
    pub(crate) fn with_segment_size(
        dir: impl Into<PathBuf>,
        max_bytes: u64,
        segment_max: u64,
    ) -> Self {
        let dir = dir.into();
        let mut inner = Inner {
            dir,
            max_bytes,
            segment_max: segment_max.max(1),
            counters: None,
            lock: None,
            warned: AtomicBool::new(false),
            first_new: 1,
            append: Mutex::new(()),
            state: Mutex::new(State::default()),
        };
        match inner.open_dir() {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                tracing::warn!(
                    dir = %inner.dir.display(),
                    "cache directory is in use by another process: the shared cache tier is off \
                     (give each hg-coord its own cache.dir)"
                );
                inner.lock = None;
            }
            Err(e) => {
                inner.io_failure("open", &inner.dir.clone(), &e);
                inner.lock = None;
            }
        }
        if inner.lock.is_some() {
            inner.counters = Some(LocalCounters::new(&inner.dir));
        }
        PackStore {
            inner: Arc::new(inner),
        }
    }

    /// The cache directory.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// The size limit in bytes.
    pub fn max_bytes(&self) -> u64 {
        self.inner.max_bytes
    }

    /// True if the store could not take its directory (another process
    /// holds it, or it is unusable): lookups miss, nothing is written.
    pub fn is_off(&self) -> bool {
        self.inner.lock.is_none()
    }

    /// True once [`Self::load_index`] has finished.
    pub fn is_loaded(&self) -> bool {
        matches!(lock(&self.inner.state).load, Load::Ready)
    }
}

impl PackStore {
    /// The counters.
    pub fn stats_blocking(&self) -> CacheStats {
        if self.is_off() {
            return CacheStats {
                max_size_bytes: self.inner.max_bytes,
                ..CacheStats::default()
            };
        }
        let (_, p) = self.inner.update(Delta::default(), false);
        p.stats(self.inner.max_bytes)
    }

    #[cfg(test)]
    fn segment_ids(&self) -> Vec<u32> {
        lock(&self.inner.state).segments.keys().copied().collect()
    }
}

impl Inner {
    /// Creates the directory, takes the lock, lists the segments.
    fn open_dir(&mut self) -> io::Result<()> {
        let packs = self.dir.join(PACKS);
        fs::create_dir_all(&packs)?;
        self.lock = Some(lock_file(&self.dir.join(LOCK_FILE), false)?);
        let tag = self.dir.join("CACHEDIR.TAG");
        if !tag.exists() {
            let _ = fs::write(
                &tag,
                "Signature: 8a477f597d28d172789f06886806bc55\n\
                 # This file is a cache directory tag created by hybridgrid.\n",
            );
        }
        let st = self.state.get_mut().unwrap_or_else(|p| p.into_inner());
        for f in fs::read_dir(&packs)?.flatten() {
            let Some(id) = f.file_name().to_str().and_then(segment_id) else {
                continue;
            };
            let file = File::options().read(true).write(true).open(f.path())?;
            let len = file.metadata()?.len();
            st.total += len;
            st.segments.insert(
                id,
                Segment {
                    file: Arc::new(file),
                    len,
                },
            );
        }
        st.next_id = st.segments.keys().next_back().map_or(1, |&id| id + 1);
        self.first_new = st.next_id;
        Ok(())
    }

    fn segment_path(&self, id: u32) -> PathBuf {
        self.dir.join(PACKS).join(segment_name(id))
    }

    /// Logs the first I/O failure as a warning, later ones at debug level.
    fn io_failure(&self, op: &str, path: &Path, err: &io::Error) {
        crate::store::stats::io_failure(&self.warned, &self.dir, op, path, err);
    }

    fn write_failed(&self, e: &io::Error) {
        self.io_failure("write", &self.dir.join(PACKS), e);
        self.update(
            Delta {
                errors: 1,
                ..Delta::default()
            },
            false,
        );
    }

    fn state_remove(&self, prefix: u64) {
        lock(&self.state).remove_key(prefix);
    }

    /// Applies `delta` to the counters with the store's size and entry
    /// count; returns (size, counters).
    fn update(&self, delta: Delta, force: bool) -> (u64, crate::store::stats::Persisted) {
        let (total, entries) = {
            let st = lock(&self.state);
            (st.total, st.index.len() as u64)
        };
        let Some(c) = &self.counters else {
            return (total, crate::store::stats::Persisted::default());
        };
        let (p, err) = c.update(delta, Some((total, entries)), force);
        if let Some(err) = err {
            self.io_failure("update stats", &self.dir.join("stats"), &err);
        }
        (total, p)
    }
}

impl std::fmt::Debug for PackStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PackStore")
            .field("dir", &self.inner.dir)
            .field("max_bytes", &self.inner.max_bytes)
            .field("off", &self.is_off())
            .finish()
    }
}
