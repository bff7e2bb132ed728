//! Eviction and clearing: scanning the directory, deleting the least recently
//! used entries down to the low-water mark, and the lock that lets one process
//! at a time do it.

use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::store::stats::{Delta, TMP_PREFIX};

use super::*;

impl DiskStore {
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

impl DiskStore {
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
    pub(super) fn evict(&self, target: u64, blocking: bool) -> Option<EvictOutcome> {
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
