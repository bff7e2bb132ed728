//! [`RemoteStore`]: a shared tier on storage a team already runs (Redis,
//! a WebDAV or plain HTTP cache server, an S3-compatible object store),
//! reached through [opendal](https://opendal.apache.org).
//!
//! # Behaviour
//!
//! - **Lookups** wait at most `cache.remote.timeout`. The entry's blake3
//!   checksum ([`CacheEntry::decode_bytes`](crate::CacheEntry::decode_bytes)) is verified: a corrupt or
//!   truncated object is a miss, is counted (`corrupt`, `errors`), logged,
//!   and removed unless the tier is read-only.
//! - **Writes** are queued (at most `cache.remote.max_pending_writes`) and
//!   done in the background, a few at a time, each bounded by
//!   `cache.remote.write_timeout`; a full queue drops the write and counts
//!   it. A build never waits for the server. `read_only` stores nothing.
//! - **Failures** (server down, slow, full, refusing): the call is counted
//!   as an error and the tier is skipped for `cache.remote.retry_after`,
//!   so lookups cost nothing while it is down. One warning is logged per
//!   outage, and one line when the server is back. With a
//!   [down marker](RemoteStore::with_down_marker) the outage is shared by
//!   every process using the same cache directory (one `hgbuild` per
//!   compile), so a build with a dead server warns once, not per compile.
//!
//! # Layout
//!
//! Every entry lives under `cache.remote.prefix` at a path given by
//! `cache.remote.layout`: `subdirs` puts key `abcdef…` at `ab/cdef…` (the
//! layout of ccache's HTTP storage), `flat` at `abcdef…`, `bazel` at
//! `ac/abcdef…` (the action-cache path of a Bazel HTTP cache). For Redis
//! the path is the key.
//!
//! # Parts
//!
//! | file | what |
//! |---|---|
//! | `mod.rs` | the store, its errors and counters |
//! | `layout.rs` | where a key lives on the backend (ccache, flat, Bazel) |
//! | `backend.rs` | building the backend (opendal operator) from the configuration |
//! | `health.rs` | the down marker, and the background writes |
//! | `store.rs` | [`CacheStore`](crate::store::CacheStore) for the remote tier |

mod backend;
mod health;
mod layout;
mod store;
#[cfg(test)]
mod tests;

pub use layout::Layout;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hybridgrid_core::config::{RemoteCacheConfig, redact_url};
use opendal::Operator;
use tokio::sync::{Notify, mpsc};

use crate::key::CacheKey;
use crate::layer::{METRIC_ERRORS, METRIC_HITS, METRIC_MISSES};

use backend::operator;
use health::writer;

/// Counter: entries of a tier that failed verification (`tier` label).
pub const METRIC_CORRUPT: &str = "hybridgrid_cache_corrupt_total";
/// Counter: background writes of a tier, by `result` (`stored`, `failed`,
/// `dropped`).
pub const METRIC_WRITES: &str = "hybridgrid_cache_writes_total";
/// Gauge: 1 while a tier is reachable, 0 while it is skipped after a
/// failure (`tier` label).
pub const METRIC_AVAILABLE: &str = "hybridgrid_cache_available";
/// The `tier` label value of this store's metrics.
pub const TIER: &str = "remote";

/// Background writes in flight at once.
const WRITE_CONCURRENCY: usize = 4;

/// Why a remote tier could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RemoteError {
    /// The configuration names a backend this build does not include.
    #[error(
        "cache.remote.backend `{0}` is not supported by this build (hybridgrid-cache \
         features: remote-redis for redis, remote-webdav for webdav and http, remote-s3 for s3)"
    )]
    Unsupported(String),
    /// A key's value is unusable (e.g. a secret file cannot be read).
    #[error(transparent)]
    Config(#[from] hybridgrid_core::config::ConfigError),
    /// opendal refused the settings.
    #[error("cache.remote: {0}")]
    Backend(String),
    /// Not called inside a tokio runtime (the writer is a task).
    #[error("a remote cache tier needs a tokio runtime")]
    NoRuntime,
}

/// Counters of a remote tier, for `/api/stats` and tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RemoteStats {
    /// Lookups that found an intact entry.
    pub hits: u64,
    /// Lookups that found none (including failed and skipped ones).
    pub misses: u64,
    /// Failed calls (timeouts, refused connections, server errors) and
    /// corrupt entries.
    pub errors: u64,
    /// Entries that failed verification.
    pub corrupt: u64,
    /// Lookups not sent because the tier was down.
    pub skipped: u64,
    /// Entries written.
    pub writes: u64,
    /// Writes that failed.
    pub write_errors: u64,
    /// Writes dropped: queue full, or the tier down.
    pub dropped_writes: u64,
    /// Writes queued or in flight now.
    pub pending_writes: u64,
    /// False while the tier is skipped after a failure.
    pub available: bool,
}

#[derive(Default)]
struct Counters {
    hits: AtomicU64,
    misses: AtomicU64,
    errors: AtomicU64,
    corrupt: AtomicU64,
    skipped: AtomicU64,
    writes: AtomicU64,
    write_errors: AtomicU64,
    dropped_writes: AtomicU64,
}

struct Inner {
    op: Operator,
    backend: String,
    url: String,
    layout: Layout,
    read_only: bool,
    timeout: Duration,
    write_timeout: Duration,
    retry_after: Duration,
    counters: Counters,
    pending: AtomicUsize,
    drained: Notify,
    down_until: Mutex<Option<Instant>>,
    warned: AtomicBool,
    down_marker: OnceLock<PathBuf>,
}

/// A cache tier on a remote server. See the [module docs](self).
///
/// Clones share the server connection, the counters and the write queue.
#[derive(Clone)]
pub struct RemoteStore {
    inner: Arc<Inner>,
    queue: mpsc::Sender<(String, Bytes)>,
}

impl std::fmt::Debug for RemoteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL is shown redacted; credentials are never kept here.
        f.debug_struct("RemoteStore")
            .field("backend", &self.inner.backend)
            .field("url", &self.inner.url)
            .field("read_only", &self.inner.read_only)
            .finish_non_exhaustive()
    }
}

impl RemoteStore {
    /// A store for `cfg` (`cache.remote`). Must be called inside a tokio
    /// runtime: the background writer is spawned on it.
    pub fn new(cfg: &RemoteCacheConfig) -> Result<Self, RemoteError> {
        let handle = tokio::runtime::Handle::try_current().map_err(|_| RemoteError::NoRuntime)?;
        let layout = Layout::parse(&cfg.layout).ok_or_else(|| {
            RemoteError::Backend(format!("unknown cache.remote.layout `{}`", cfg.layout))
        })?;
        let op = operator(cfg)?;
        let inner = Arc::new(Inner {
            op,
            backend: cfg.backend.clone(),
            url: redact_url(&cfg.url),
            layout,
            read_only: cfg.read_only,
            timeout: cfg.timeout,
            write_timeout: cfg.write_timeout,
            retry_after: cfg.retry_after,
            counters: Counters::default(),
            pending: AtomicUsize::new(0),
            drained: Notify::new(),
            down_until: Mutex::new(None),
            warned: AtomicBool::new(false),
            down_marker: OnceLock::new(),
        });
        let (queue, rx) = mpsc::channel(cfg.max_pending_writes.max(1));
        handle.spawn(writer(Arc::downgrade(&inner), rx));
        for name in [METRIC_HITS, METRIC_MISSES, METRIC_ERRORS, METRIC_CORRUPT] {
            metrics::counter!(name, "tier" => TIER).increment(0);
        }
        for result in ["stored", "failed", "dropped"] {
            metrics::counter!(METRIC_WRITES, "tier" => TIER, "result" => result).increment(0);
        }
        metrics::gauge!(METRIC_AVAILABLE, "tier" => TIER).set(1.0);
        Ok(RemoteStore { inner, queue })
    }

    /// Shares outages through a file (e.g. `<cache.dir>/remote-down`):
    /// while it is younger than `retry_after`, every process using it skips
    /// the tier and stays quiet, so many short-lived processes warn once.
    /// Set once; later calls are ignored.
    pub fn with_down_marker(self, path: impl Into<PathBuf>) -> Self {
        let _ = self.inner.down_marker.set(path.into());
        self
    }

    /// The backend name (`redis`, `webdav`, `http`, `s3`).
    pub fn backend(&self) -> &str {
        &self.inner.backend
    }

    /// True when the tier stores nothing.
    pub fn read_only(&self) -> bool {
        self.inner.read_only
    }

    /// Where `key` lives on the server (relative to the prefix).
    pub fn path_of(&self, key: &CacheKey) -> String {
        self.inner.layout.path(key)
    }

    /// The counters now.
    pub fn remote_stats(&self) -> RemoteStats {
        let c = &self.inner.counters;
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        RemoteStats {
            hits: l(&c.hits),
            misses: l(&c.misses),
            errors: l(&c.errors),
            corrupt: l(&c.corrupt),
            skipped: l(&c.skipped),
            writes: l(&c.writes),
            write_errors: l(&c.write_errors),
            dropped_writes: l(&c.dropped_writes),
            pending_writes: self.inner.pending.load(Ordering::Relaxed) as u64,
            available: !self.inner.is_down(),
        }
    }

    /// Waits until every queued write is done, at most `limit`; returns
    /// how many are still pending (a process about to exit calls this).
    pub async fn flush(&self, limit: Duration) -> usize {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let notified = self.inner.drained.notified();
            let n = self.inner.pending.load(Ordering::SeqCst);
            if n == 0 {
                return 0;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return self.inner.pending.load(Ordering::SeqCst);
            }
        }
    }
}
