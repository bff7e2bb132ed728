//! The counters a store keeps in `<dir>/stats`: the text format, and
//! [`LocalCounters`], the in-memory copy of a store only one process
//! uses (an exclusive [`DiskStore`](super::DiskStore), the
//! [`PackStore`](super::PackStore)), written back at most once a second.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// How often [`LocalCounters`] writes its counters to `stats`.
const FLUSH_EVERY: Duration = Duration::from_secs(1);

/// The prefix of temporary files in a cache directory.
pub(crate) const TMP_PREFIX: &str = ".tmp-";

/// Logs a cache I/O failure: the first one of a store (`warned` not yet
/// set) as the warning users look for, later ones at debug level.
pub(crate) fn io_failure(warned: &AtomicBool, dir: &Path, op: &str, path: &Path, err: &io::Error) {
    if !warned.swap(true, Ordering::Relaxed) {
        tracing::warn!(
            dir = %dir.display(),
            op,
            path = %path.display(),
            error = %err,
            "local cache unavailable, continuing without it"
        );
    } else {
        tracing::debug!(op, path = %path.display(), error = %err, "cache I/O failed");
    }
}

/// The persisted counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Persisted {
    pub(crate) hits: u64,
    pub(crate) misses: u64,
    pub(crate) evictions: u64,
    pub(crate) errors: u64,
    pub(crate) size_bytes: u64,
    pub(crate) entries: u64,
    /// The size comes from a scan (plus deltas since), not from nothing.
    pub(crate) scanned: bool,
    pub(crate) direct_hits: u64,
    pub(crate) direct_misses: u64,
}

/// A change to the persisted counters.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Delta {
    pub(crate) hits: u64,
    pub(crate) misses: u64,
    pub(crate) evictions: u64,
    pub(crate) errors: u64,
    pub(crate) size: i64,
    pub(crate) entries: i64,
    pub(crate) direct_hits: u64,
    pub(crate) direct_misses: u64,
}

impl Delta {
    pub(crate) fn add(&mut self, o: Delta) {
        self.direct_hits += o.direct_hits;
        self.direct_misses += o.direct_misses;
        self.hits += o.hits;
        self.misses += o.misses;
        self.evictions += o.evictions;
        self.errors += o.errors;
        self.size += o.size;
        self.entries += o.entries;
    }
}

impl Persisted {
    /// The counters as a store reports them, with its size limit.
    pub(crate) fn stats(&self, max_size_bytes: u64) -> super::CacheStats {
        super::CacheStats {
            hits: self.hits,
            misses: self.misses,
            evictions: self.evictions,
            errors: self.errors,
            size_bytes: self.size_bytes,
            entries: self.entries,
            max_size_bytes,
        }
    }

    pub(crate) fn apply(&mut self, d: Delta) {
        self.direct_hits += d.direct_hits;
        self.direct_misses += d.direct_misses;
        self.hits += d.hits;
        self.misses += d.misses;
        self.evictions += d.evictions;
        self.errors += d.errors;
        self.size_bytes = self.size_bytes.saturating_add_signed(d.size);
        self.entries = self.entries.saturating_add_signed(d.entries);
    }

    pub(crate) fn parse(text: &str) -> Persisted {
        let mut p = Persisted::default();
        for line in text.lines() {
            let mut it = line.split_whitespace();
            let (Some(name), Some(value)) = (it.next(), it.next()) else {
                continue;
            };
            let Ok(v) = value.parse::<u64>() else {
                continue;
            };
            match name {
                "hits" => p.hits = v,
                "misses" => p.misses = v,
                "evictions" => p.evictions = v,
                "errors" => p.errors = v,
                "size_bytes" => p.size_bytes = v,
                "entries" => p.entries = v,
                "scanned" => p.scanned = v == 1,
                "direct_hits" => p.direct_hits = v,
                "direct_misses" => p.direct_misses = v,
                _ => {}
            }
        }
        p
    }

    pub(crate) fn render(&self) -> String {
        format!(
            "hits {}\nmisses {}\nevictions {}\nerrors {}\nsize_bytes {}\nentries {}\nscanned {}\n\
             direct_hits {}\ndirect_misses {}\n",
            self.hits,
            self.misses,
            self.evictions,
            self.errors,
            self.size_bytes,
            self.entries,
            u8::from(self.scanned),
            self.direct_hits,
            self.direct_misses,
        )
    }
}

/// `<dir>/stats`; zeros if it is missing or garbled (a garbled file is
/// rebuilt by the next scan or write).
pub(crate) fn read_stats_file(dir: &Path) -> io::Result<Persisted> {
    match fs::read_to_string(dir.join("stats")) {
        Ok(text) => Ok(Persisted::parse(&text)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Persisted::default()),
        Err(e) if e.kind() == io::ErrorKind::InvalidData => Ok(Persisted::default()),
        Err(e) => Err(e),
    }
}

/// Replaces `<dir>/stats` atomically.
pub(crate) fn write_stats_file(dir: &Path, p: &Persisted) -> io::Result<()> {
    fs::create_dir_all(dir)?;
    let mut tmp = tempfile::Builder::new()
        .prefix(TMP_PREFIX)
        .tempfile_in(dir)?;
    tmp.write_all(p.render().as_bytes())?;
    tmp.persist(dir.join("stats")).map_err(|e| e.error)?;
    Ok(())
}

/// The counters of a directory no other process uses: kept in memory
/// (loaded from `stats` on first use) and written back at most once a
/// second, when forced, and when dropped.
#[derive(Debug)]
pub(crate) struct LocalCounters {
    dir: PathBuf,
    state: Mutex<LocalState>,
}

#[derive(Debug, Default)]
struct LocalState {
    view: Option<Persisted>,
    last_flush: Option<Instant>,
    dirty: bool,
}

impl LocalCounters {
    /// The counters of `dir` (nothing is read until the first update).
    pub(crate) fn new(dir: impl Into<PathBuf>) -> Self {
        LocalCounters {
            dir: dir.into(),
            state: Mutex::new(LocalState::default()),
        }
    }

    /// Applies `delta`; `set` replaces the size and the entry count. The
    /// file is written when `force` is set or the last write is a second
    /// old. Returns the counters afterwards, and the error of a write that
    /// failed (the counters stay in memory).
    pub(crate) fn update(
        &self,
        delta: Delta,
        set: Option<(u64, u64)>,
        force: bool,
    ) -> (Persisted, Option<io::Error>) {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let view = match &mut st.view {
            Some(v) => v,
            slot => slot.insert(read_stats_file(&self.dir).unwrap_or_default()),
        };
        view.apply(delta);
        if let Some((size, entries)) = set {
            view.size_bytes = size;
            view.entries = entries;
            view.scanned = true;
        }
        let p = *view;
        st.dirty = true;
        let due = st.last_flush.is_none_or(|t| t.elapsed() >= FLUSH_EVERY);
        let mut err = None;
        if force || due {
            st.last_flush = Some(Instant::now());
            match write_stats_file(&self.dir, &p) {
                Ok(()) => st.dirty = false,
                Err(e) => err = Some(e),
            }
        }
        (p, err)
    }
}

impl Drop for LocalCounters {
    fn drop(&mut self) {
        let st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if let (true, Some(view)) = (st.dirty, st.view) {
            let _ = write_stats_file(&self.dir, &view);
        }
    }
}
