//! The counters: kept in memory, written to the `stats` file at most once a
//! second, and read back.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::Path;

use crate::store::CacheStats;
use crate::store::stats::{Delta, Persisted, read_stats_file};

use super::*;

impl DiskStore {
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
        p.stats(self.inner.max_bytes)
    }
}

impl DiskStore {
    pub(super) fn pending(&self) -> std::sync::MutexGuard<'_, Delta> {
        self.inner.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Logs the first I/O failure as a warning, later ones at debug level.
    pub(super) fn io_failure(&self, op: &str, path: &Path, err: &io::Error) {
        crate::store::stats::io_failure(&self.inner.warned, &self.inner.dir, op, path, err);
    }
}

impl DiskStore {
    /// Adds a delta to the shared counters; returns them afterwards.
    pub(super) fn record(&self, delta: Delta) -> Persisted {
        self.update_stats(delta, None)
    }

    /// Read-modify-write of the stats file under `stats.lock`. `set`
    /// replaces the size and entry count (after a scan). On failure the
    /// delta is kept in memory and the in-memory view is returned.
    pub(super) fn update_stats(&self, delta: Delta, set: Option<(u64, u64)>) -> Persisted {
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
    pub(super) fn read_stats_locked(&self) -> Persisted {
        let lock = lock_file(&self.inner.dir.join("stats.lock"), true);
        let p = read_stats_file(&self.inner.dir).unwrap_or_default();
        drop(lock);
        p
    }
}
