//! Entries and manifests on disk: get, put and remove, counted, and what
//! becomes of damaged files.

use std::fs::{self, File, FileTimes};
use std::io::{self, Read, Write};
use std::path::Path;
use std::time::SystemTime;

use bytes::Bytes;

use crate::entry::CacheEntry;
use crate::key::CacheKey;
use crate::store::stats::{Delta, Persisted, TMP_PREFIX};
use crate::store::{Lookup, PutOutcome};

use super::*;

impl DiskStore {
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
}

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

impl DiskStore {
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
}
