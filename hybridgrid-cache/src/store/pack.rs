//! [`PackStore`]: entries appended to pack files, for a directory only one
//! process uses (the coordinator's shared tier).
//!
//! Creating a file per entry (as [`DiskStore`](super::DiskStore) does) costs
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
//! [`DiskStore`](super::DiskStore)) are imported into packs by the loader,
//! oldest first, and their files removed, so an upgraded coordinator
//! keeps its cache.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::{self, File};
use std::hash::BuildHasherDefault;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, MutexGuard, TryLockError};

use bytes::Bytes;

use super::disk::{
    DiskStore, LOW_WATER, LockGuard, PrefixHasher, is_lower_hex, key_of_name, key_prefix, lock_file,
};
use super::stats::{Delta, LocalCounters, TMP_PREFIX};
use super::{CacheStats, Lookup, PutOutcome};
use crate::entry::CacheEntry;
use crate::key::CacheKey;

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

/// A parsed record header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Header {
    kind: u8,
    key: [u8; 32],
    len: u32,
}

fn header_check(h: &[u8]) -> [u8; 4] {
    let sum = blake3::hash(&h[..44]);
    let b = sum.as_bytes();
    [b[0], b[1], b[2], b[3]]
}

impl Header {
    fn encode(&self) -> [u8; HEADER_LEN] {
        let mut h = [0u8; HEADER_LEN];
        h[..4].copy_from_slice(&MAGIC);
        h[4] = self.kind;
        h[8..40].copy_from_slice(&self.key);
        h[40..44].copy_from_slice(&self.len.to_le_bytes());
        let check = header_check(&h);
        h[44..].copy_from_slice(&check);
        h
    }

    fn parse(h: &[u8]) -> Option<Header> {
        if h.len() < HEADER_LEN || h[..4] != MAGIC || h[44..48] != header_check(h) {
            return None;
        }
        let kind = h[4];
        let len = u32::from_le_bytes([h[40], h[41], h[42], h[43]]);
        let valid = match kind {
            KIND_ENTRY => true,
            KIND_TOMBSTONE => len == 0,
            _ => false,
        };
        if !valid || h[5..8] != [0, 0, 0] {
            return None;
        }
        let mut key = [0u8; 32];
        key.copy_from_slice(&h[8..40]);
        Some(Header { kind, key, len })
    }
}

/// A record: header and body.
fn record(key: &CacheKey, kind: u8, body: &[u8]) -> Option<Vec<u8>> {
    let len = u32::try_from(body.len()).ok()?;
    let h = Header {
        kind,
        key: *key.as_bytes(),
        len,
    };
    let mut out = Vec::with_capacity(HEADER_LEN + body.len());
    out.extend_from_slice(&h.encode());
    out.extend_from_slice(body);
    Some(out)
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn segment_name(id: u32) -> String {
    format!("{id:08}.pack")
}

fn segment_id(name: &str) -> Option<u32> {
    let stem = name.strip_suffix(".pack")?;
    if stem.len() != 8 || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    stem.parse().ok()
}

/// What a scan of a segment's headers found.
#[derive(Default)]
struct Scan {
    /// (header, offset) of every record, in order.
    records: Vec<(Header, u64)>,
    /// The end of the last whole record.
    good_end: u64,
    /// Bytes skipped in the middle (unparseable).
    skipped: u64,
}

/// Reads the header at `off` of a segment of `len` bytes; `None` if there
/// is no whole valid record there.
fn read_header(file: &File, off: u64, len: u64) -> Option<Header> {
    if off + HEADER_LEN as u64 > len {
        return None;
    }
    let mut h = [0u8; HEADER_LEN];
    file.read_exact_at(&mut h, off).ok()?;
    let hdr = Header::parse(&h)?;
    (off + HEADER_LEN as u64 + u64::from(hdr.len) <= len).then_some(hdr)
}

/// The offset of the next valid record at or after `from`, if any.
fn resync(file: &File, from: u64, len: u64) -> Option<u64> {
    const CHUNK: usize = 64 << 10;
    let mut buf = vec![0u8; CHUNK + MAGIC.len()];
    let mut at = from;
    while at < len {
        let n = usize::try_from((len - at).min(buf.len() as u64)).ok()?;
        file.read_exact_at(&mut buf[..n], at).ok()?;
        for i in 0..n.saturating_sub(MAGIC.len() - 1) {
            if buf[i..i + MAGIC.len()] == MAGIC && read_header(file, at + i as u64, len).is_some() {
                return Some(at + i as u64);
            }
        }
        // Overlap by the magic's length minus one.
        at += (n.saturating_sub(MAGIC.len() - 1)).max(1) as u64;
    }
    None
}

fn scan_segment(file: &File, len: u64) -> Scan {
    let mut out = Scan::default();
    let mut off = 0u64;
    while off < len {
        match read_header(file, off, len) {
            Some(h) => {
                out.records.push((h, off));
                off += HEADER_LEN as u64 + u64::from(h.len);
                out.good_end = off;
            }
            None => match resync(file, off + 1, len) {
                Some(next) => {
                    out.skipped += next - off;
                    off = next;
                }
                None => break,
            },
        }
    }
    out
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

    /// Loads the index from the segments on a thread of its own (then
    /// imports old-layout entries); see [`Self::load_index`].
    pub fn load_in_background(&self) {
        if self.is_off() {
            return;
        }
        let this = self.clone();
        let spawned = std::thread::Builder::new()
            .name("hg-cache-index".into())
            .spawn(move || this.load_index());
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "cannot start the cache index thread; loading it here");
            self.load_index();
        }
    }

    /// Scans the headers of the segments that existed when the store was
    /// opened and merges them into the index (entries written since win),
    /// truncating torn tails; then imports entries of the one-file-per-
    /// entry layout. Blocking; returns the entries indexed. Does nothing if
    /// the index is loaded or loading.
    pub fn load_index(&self) -> usize {
        let inner = &self.inner;
        if self.is_off() {
            return 0;
        }
        let todo: Vec<(u32, Arc<File>, u64)> = {
            let mut st = lock(&inner.state);
            match &mut st.load {
                Load::Unloaded(removed) => {
                    let removed = std::mem::take(removed);
                    st.load = Load::Loading(removed);
                }
                Load::Loading(_) => return 0,
                Load::Ready => return st.index.len(),
            }
            st.segments
                .range(..inner.first_new)
                .map(|(&id, s)| (id, s.file.clone(), s.len))
                .collect()
        };
        let mut found = Index::default();
        for (id, file, len) in todo {
            let scan = scan_segment(&file, len);
            for (h, off) in &scan.records {
                let prefix = key_prefix(&CacheKey::from_bytes(h.key));
                match (h.kind, u32::try_from(*off)) {
                    (KIND_ENTRY, Ok(offset)) => {
                        found.insert(
                            prefix,
                            Loc {
                                segment: id,
                                offset,
                                len: h.len,
                            },
                        );
                    }
                    _ => {
                        found.remove(&prefix);
                    }
                }
            }
            let path = inner.segment_path(id);
            if scan.skipped > 0 {
                tracing::warn!(segment = %path.display(), skipped_bytes = scan.skipped,
                    "corrupt records skipped in a cache pack");
            }
            if scan.good_end < len {
                tracing::warn!(segment = %path.display(), kept_bytes = scan.good_end,
                    dropped_bytes = len - scan.good_end,
                    "cache pack truncated after its last whole record (an interrupted write)");
                if let Err(e) = file.set_len(scan.good_end) {
                    inner.io_failure("truncate", &path, &e);
                }
                let mut guard = lock(&inner.state);
                let st = &mut *guard;
                if let Some(s) = st.segments.get_mut(&id) {
                    st.total -= s.len - scan.good_end;
                    s.len = scan.good_end;
                }
            }
        }
        {
            let mut st = lock(&inner.state);
            let removed = match std::mem::replace(&mut st.load, Load::Ready) {
                Load::Loading(r) | Load::Unloaded(r) => r,
                Load::Ready => Removed::default(),
            };
            let live = std::mem::take(&mut st.index);
            let segments = &st.segments;
            found.retain(|k, loc| segments.contains_key(&loc.segment) && !removed.contains(k));
            // Written since the start: newer.
            found.extend(live);
            st.index = found;
            st.mark_old();
        }
        let imported = self.import_old_layout();
        let (n, total) = {
            let st = lock(&inner.state);
            (st.index.len(), st.total)
        };
        inner.update(Delta::default(), true);
        tracing::debug!(dir = %inner.dir.display(), entries = n, size_bytes = total, imported,
            "cache index loaded");
        n
    }

    /// Imports the entries of the one-file-per-entry layout in the
    /// directory, oldest first, and removes their files; returns how many.
    fn import_old_layout(&self) -> usize {
        let inner = &self.inner;
        let old = DiskStore::new(&inner.dir, u64::MAX);
        let mut files = old.scan();
        if files.is_empty() {
            return 0;
        }
        files.sort_by_key(|f| f.mtime);
        let mut imported = 0;
        for f in &files {
            let Some(name) = f.path.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            // Direct-mode manifests (`.m`) have no place here: dropped.
            if let Some(key) = key_of_name(name) {
                let data = match fs::read(&f.path) {
                    Ok(d) => Bytes::from(d),
                    Err(e) => {
                        inner.io_failure("import", &f.path, &e);
                        continue;
                    }
                };
                let known = lock(&inner.state).index.contains_key(&key_prefix(&key));
                if !known && CacheEntry::decode_bytes(data.clone()).is_ok() {
                    if !self.put_encoded(&key, &data).stored {
                        // Full disk or similar: keep the rest for the
                        // next start.
                        break;
                    }
                    imported += 1;
                }
            }
            let _ = fs::remove_file(&f.path);
        }
        // Temporary files of the old layout, then its empty directories.
        if let Ok(shards) = fs::read_dir(&inner.dir) {
            for shard in shards.flatten() {
                let name = shard.file_name();
                let Some(name) = name.to_str() else { continue };
                if name.len() != 2 || !name.bytes().all(is_lower_hex) {
                    continue;
                }
                if let Ok(files) = fs::read_dir(shard.path()) {
                    for f in files.flatten() {
                        if f.file_name().to_string_lossy().starts_with(TMP_PREFIX) {
                            let _ = fs::remove_file(f.path());
                        }
                    }
                }
                let _ = fs::remove_dir(shard.path());
            }
        }
        for name in ["evict.lock", "stats.lock"] {
            let _ = fs::remove_file(inner.dir.join(name));
        }
        tracing::info!(dir = %inner.dir.display(), imported, files = files.len(),
            "cache entries of the one-file-per-entry layout moved into packs");
        imported
    }

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

    /// Stores an already encoded entry ([`CacheEntry::encode`]) under
    /// `key`, blocking the thread on file I/O.
    pub fn put_encoded(&self, key: &CacheKey, data: &[u8]) -> PutOutcome {
        let inner = &self.inner;
        if self.is_off() || data.len() as u64 > inner.max_bytes {
            return PutOutcome::default();
        }
        let Some(rec) = record(key, KIND_ENTRY, data) else {
            return PutOutcome::default();
        };
        let appended = {
            let _append = lock(&inner.append);
            inner.append_locked(key_prefix(key), &rec, true)
        };
        match appended {
            Ok(evicted) => {
                let (size_bytes, _) = inner.update(
                    Delta {
                        evictions: evicted,
                        ..Delta::default()
                    },
                    false,
                );
                PutOutcome {
                    stored: true,
                    evicted,
                    size_bytes,
                }
            }
            Err(e) => {
                inner.write_failed(&e);
                PutOutcome::default()
            }
        }
    }

    /// Stores `entry` under `key`, blocking the thread on file I/O.
    pub fn put_blocking(&self, key: &CacheKey, entry: &CacheEntry) -> PutOutcome {
        self.put_encoded(key, &entry.encode())
    }

    /// Removes the entry for `key` (appends a tombstone), blocking; true if
    /// the index had it.
    pub fn remove_blocking(&self, key: &CacheKey) -> bool {
        if self.is_off() {
            return false;
        }
        let _append = lock(&self.inner.append);
        let (had, ready) = {
            let st = lock(&self.inner.state);
            (
                st.index.contains_key(&key_prefix(key)),
                matches!(st.load, Load::Ready),
            )
        };
        // Before the index is loaded the key may be in an older segment.
        if had || !ready {
            self.append_tombstone(key);
        }
        had
    }

    /// Appends a tombstone for `key` (taking it out of the index); the
    /// caller holds the append lock.
    fn append_tombstone(&self, key: &CacheKey) {
        let Some(rec) = record(key, KIND_TOMBSTONE, &[]) else {
            return;
        };
        if let Err(e) = self.inner.append_locked(key_prefix(key), &rec, false) {
            // At least out of this run's index.
            self.inner.state_remove(key_prefix(key));
            self.inner.write_failed(&e);
        }
    }

    /// The counters.
    pub fn stats_blocking(&self) -> CacheStats {
        if self.is_off() {
            return CacheStats {
                max_size_bytes: self.inner.max_bytes,
                ..CacheStats::default()
            };
        }
        let (_, p) = self.inner.update(Delta::default(), false);
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

    #[cfg(test)]
    fn segment_ids(&self) -> Vec<u32> {
        lock(&self.inner.state).segments.keys().copied().collect()
    }
}

impl State {
    /// Recomputes which segments are in the oldest quarter of the bytes.
    fn mark_old(&mut self) {
        let quarter = self.total / 4;
        let mut before = 0;
        self.old_below = 0;
        for (&id, s) in &self.segments {
            if Some(id) == self.current || before >= quarter {
                break;
            }
            self.old_below = id + 1;
            before += s.len;
        }
    }

    fn remove_key(&mut self, prefix: u64) {
        self.index.remove(&prefix);
        if let Load::Unloaded(removed) | Load::Loading(removed) = &mut self.load {
            removed.insert(prefix);
        }
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
        super::stats::io_failure(&self.warned, &self.dir, op, path, err);
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
    fn update(&self, delta: Delta, force: bool) -> (u64, super::stats::Persisted) {
        let (total, entries) = {
            let st = lock(&self.state);
            (st.total, st.index.len() as u64)
        };
        let Some(c) = &self.counters else {
            return (total, super::stats::Persisted::default());
        };
        let (p, err) = c.update(delta, Some((total, entries)), force);
        if let Some(err) = err {
            self.io_failure("update stats", &self.dir.join("stats"), &err);
        }
        (total, p)
    }

    /// Appends `rec` (a whole record) for the key `prefix`: an entry goes
    /// into the index, a tombstone takes the key out. The caller holds
    /// the append lock. Returns the entries evicted.
    fn append_locked(&self, prefix: u64, rec: &[u8], entry: bool) -> io::Result<u64> {
        let rec_len = rec.len() as u64;
        let current = {
            let st = lock(&self.state);
            st.current
                .and_then(|id| st.segments.get(&id).map(|s| (id, s.file.clone(), s.len)))
                .filter(|(_, _, len)| *len == 0 || len + rec_len <= self.segment_max)
        };
        let (id, file, offset) = match current {
            Some(c) => c,
            None => self.new_segment()?,
        };
        let at = u32::try_from(offset)
            .map_err(|_| io::Error::other("pack segment offset out of range"))?;
        let len = u32::try_from(rec_len - HEADER_LEN as u64)
            .map_err(|_| io::Error::other("cache entry too large"))?;
        if let Err(e) = file.write_all_at(rec, offset) {
            // Best effort: no partial record left behind.
            let _ = file.set_len(offset);
            return Err(e);
        }
        let mut st = lock(&self.state);
        if let Some(s) = st.segments.get_mut(&id) {
            s.len = offset + rec_len;
        }
        st.total += rec_len;
        if entry {
            st.index.insert(
                prefix,
                Loc {
                    segment: id,
                    offset: at,
                    len,
                },
            );
        } else {
            st.remove_key(prefix);
        }
        if st.total <= self.max_bytes {
            return Ok(0);
        }
        Ok(self.evict(st))
    }

    /// Starts a new segment and makes it the current one.
    fn new_segment(&self) -> io::Result<(u32, Arc<File>, u64)> {
        let id = lock(&self.state).next_id;
        let path = self.segment_path(id);
        let file = Arc::new(
            File::options()
                .read(true)
                .write(true)
                .create_new(true)
                .open(&path)?,
        );
        let mut st = lock(&self.state);
        st.next_id = id + 1;
        st.segments.insert(
            id,
            Segment {
                file: file.clone(),
                len: 0,
            },
        );
        st.current = Some(id);
        st.mark_old();
        Ok((id, file, 0))
    }

    /// Deletes the oldest segments (never the current one) down to 90% of
    /// the limit; returns the entries that went with them.
    fn evict(&self, mut st: MutexGuard<'_, State>) -> u64 {
        let target = (self.max_bytes as f64 * LOW_WATER) as u64;
        let mut gone = Vec::new();
        while st.total > target {
            let Some((&id, _)) = st.segments.iter().next() else {
                break;
            };
            if Some(id) == st.current {
                break;
            }
            if let Some(s) = st.segments.remove(&id) {
                st.total -= s.len;
                gone.push((id, s.len));
            }
        }
        let Some(&(last, _)) = gone.last() else {
            return 0;
        };
        let before = st.index.len();
        st.index.retain(|_, loc| loc.segment > last);
        let evicted = (before - st.index.len()) as u64;
        st.mark_old();
        let size = st.total;
        drop(st);
        let mut freed = 0;
        for (id, len) in &gone {
            let path = self.segment_path(*id);
            if let Err(e) = fs::remove_file(&path)
                && e.kind() != io::ErrorKind::NotFound
            {
                self.io_failure("evict", &path, &e);
            }
            freed += len;
        }
        tracing::debug!(
            segments = gone.len(),
            evicted,
            freed_bytes = freed,
            size_bytes = size,
            "cache evicted"
        );
        evicted
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::disk::tests::{entry, key};

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
}
