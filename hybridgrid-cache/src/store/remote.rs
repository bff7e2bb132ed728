//! [`RemoteStore`]: a shared tier on storage a team already runs (Redis,
//! a WebDAV or plain HTTP cache server, an S3-compatible object store),
//! reached through [opendal](https://opendal.apache.org).
//!
//! # Behaviour
//!
//! - **Lookups** wait at most `cache.remote.timeout`. The entry's blake3
//!   checksum ([`CacheEntry::decode_bytes`]) is verified: a corrupt or
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

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;
use hybridgrid_core::config::{RemoteCacheConfig, redact_url};
use opendal::{ErrorKind, Operator};
use tokio::sync::{Notify, Semaphore, mpsc};

use super::{CacheStats, CacheStore, Lookup, PutOutcome};
use crate::entry::CacheEntry;
use crate::key::CacheKey;
use crate::layer::{METRIC_ERRORS, METRIC_HITS, METRIC_MISSES};

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

/// Where an entry lives on the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// `ab/cdef…` (ccache's HTTP storage).
    Subdirs,
    /// `abcdef…`.
    Flat,
    /// `ac/abcdef…` (a Bazel HTTP cache's action cache).
    Bazel,
}

impl Layout {
    /// Parses `cache.remote.layout`.
    pub fn parse(s: &str) -> Option<Layout> {
        match s {
            "subdirs" => Some(Layout::Subdirs),
            "flat" => Some(Layout::Flat),
            "bazel" => Some(Layout::Bazel),
            _ => None,
        }
    }

    /// The path of `key` (relative to the prefix).
    pub fn path(self, key: &CacheKey) -> String {
        let hex = key.to_hex();
        match self {
            Layout::Subdirs => format!("{}/{}", &hex[..2], &hex[2..]),
            Layout::Flat => hex,
            Layout::Bazel => format!("ac/{hex}"),
        }
    }
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

/// The parts of a URL opendal takes separately.
struct UrlParts {
    /// `scheme://host[:port]` plus, for HTTP, the path.
    endpoint: String,
    /// Path after the authority (without the leading `/`).
    path: String,
    user: Option<String>,
    password: Option<String>,
}

fn split_url(url: &str) -> UrlParts {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let (userinfo, host) = match authority.rfind('@') {
        Some(at) => (Some(&authority[..at]), &authority[at + 1..]),
        None => (None, authority),
    };
    let (user, password) = match userinfo {
        Some(u) => match u.split_once(':') {
            Some((a, b)) => (Some(a.to_owned()), Some(b.to_owned())),
            None => (Some(u.to_owned()), None),
        },
        None => (None, None),
    };
    let path = tail.split(['?', '#']).next().unwrap_or("");
    UrlParts {
        endpoint: format!("{scheme}://{host}{}", path.trim_end_matches('/')),
        path: path.trim_matches('/').to_owned(),
        user: user.filter(|u| !u.is_empty()),
        password,
    }
}

/// Installs rustls' ring provider for the HTTP client, once per process
/// (a provider installed by someone else is kept).
fn install_crypto_provider() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

fn root(prefix: &str) -> String {
    let p = prefix.trim_matches('/');
    if p.is_empty() {
        "/".into()
    } else {
        format!("/{p}/")
    }
}

fn operator(cfg: &RemoteCacheConfig) -> Result<Operator, RemoteError> {
    install_crypto_provider();
    let parts = split_url(&cfg.url);
    let password = cfg.password()?.or(parts.password.clone());
    let user = if cfg.username.is_empty() {
        parts.user.clone()
    } else {
        Some(cfg.username.clone())
    };
    let backend_err = |e: opendal::Error| RemoteError::Backend(e.to_string());
    match cfg.backend.as_str() {
        #[cfg(feature = "remote-redis")]
        "redis" => {
            let authority = parts
                .endpoint
                .split_once("://")
                .map(|(s, rest)| format!("{s}://{}", rest.split('/').next().unwrap_or("")))
                .unwrap_or_default();
            let db = if parts.path.is_empty() {
                0
            } else {
                parts.path.parse::<i64>().map_err(|_| {
                    RemoteError::Backend(format!(
                        "cache.remote.url: `{}` is not a database number",
                        parts.path
                    ))
                })?
            };
            let mut b = opendal::services::Redis::default()
                .endpoint(&authority)
                .db(db)
                .root(&root(&cfg.prefix));
            if let Some(u) = &user {
                b = b.username(u);
            }
            if let Some(p) = &password {
                b = b.password(p);
            }
            Ok(Operator::new(b).map_err(backend_err)?.finish())
        }
        #[cfg(feature = "remote-webdav")]
        "webdav" | "http" => {
            let mut b = opendal::services::Webdav::default()
                .endpoint(&parts.endpoint)
                .root(&root(&cfg.prefix))
                // Plain HTTP caches (ccache's, bazel-remote) take a PUT
                // anywhere; a WebDAV server wants the collections first.
                .disable_create_dir(cfg.backend == "http");
            if let Some(u) = &user {
                b = b.username(u);
            }
            if let Some(p) = &password {
                b = b.password(p);
            }
            Ok(Operator::new(b).map_err(backend_err)?.finish())
        }
        #[cfg(feature = "remote-s3")]
        "s3" => {
            let region = if cfg.region.is_empty() {
                "us-east-1"
            } else {
                &cfg.region
            };
            let mut b = opendal::services::S3::default()
                .bucket(&cfg.bucket)
                .region(region)
                .root(&root(&cfg.prefix));
            if !cfg.url.is_empty() {
                b = b.endpoint(&parts.endpoint);
            }
            if !cfg.access_key_id.is_empty() {
                b = b.access_key_id(&cfg.access_key_id);
            }
            if let Some(secret) = cfg.secret_access_key()? {
                b = b.secret_access_key(&secret);
            }
            Ok(Operator::new(b).map_err(backend_err)?.finish())
        }
        other => {
            let _ = (user, password, backend_err);
            Err(RemoteError::Unsupported(other.to_owned()))
        }
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

impl Inner {
    fn is_down(&self) -> bool {
        let local = self
            .down_until
            .lock()
            .map(|d| d.is_some_and(|t| Instant::now() < t))
            .unwrap_or(false);
        local || self.marker_is_fresh()
    }

    fn marker_is_fresh(&self) -> bool {
        let Some(path) = self.down_marker.get() else {
            return false;
        };
        std::fs::metadata(path)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| SystemTime::now().duration_since(t).ok())
            .is_some_and(|age| age < self.retry_after)
    }

    /// A call failed: skip the tier for `retry_after`, warn once.
    fn mark_down(&self, what: &str, error: &str) {
        self.counters.errors.fetch_add(1, Ordering::Relaxed);
        metrics::counter!(METRIC_ERRORS, "tier" => TIER).increment(1);
        metrics::gauge!(METRIC_AVAILABLE, "tier" => TIER).set(0.0);
        if let Ok(mut d) = self.down_until.lock() {
            *d = Some(Instant::now() + self.retry_after);
        }
        // Another process already announced this outage.
        let shared = self.marker_is_fresh();
        if let Some(path) = self.down_marker.get() {
            let _ = std::fs::write(path, format!("{}: {error}\n", self.url));
        }
        if !self.warned.swap(true, Ordering::Relaxed) && !shared {
            tracing::warn!(
                backend = %self.backend,
                url = %self.url,
                operation = what,
                error,
                retry_after = ?self.retry_after,
                "remote cache unavailable; using the local cache tiers until it is back"
            );
        } else {
            tracing::debug!(backend = %self.backend, operation = what, error, "remote cache call failed");
        }
    }

    /// A call succeeded: the tier is back if it was down.
    fn mark_up(&self) {
        if self.warned.swap(false, Ordering::Relaxed) {
            tracing::info!(backend = %self.backend, url = %self.url, "remote cache available again");
            metrics::gauge!(METRIC_AVAILABLE, "tier" => TIER).set(1.0);
            if let Some(path) = self.down_marker.get() {
                let _ = std::fs::remove_file(path);
            }
        }
        if let Ok(mut d) = self.down_until.lock() {
            *d = None;
        }
    }

    fn miss(&self) {
        self.counters.misses.fetch_add(1, Ordering::Relaxed);
        metrics::counter!(METRIC_MISSES, "tier" => TIER).increment(1);
    }

    async fn write(&self, path: &str, data: Bytes) {
        if self.is_down() {
            self.counters.dropped_writes.fetch_add(1, Ordering::Relaxed);
            metrics::counter!(METRIC_WRITES, "tier" => TIER, "result" => "dropped").increment(1);
            return;
        }
        match tokio::time::timeout(self.write_timeout, self.op.write(path, data)).await {
            Ok(Ok(_)) => {
                self.counters.writes.fetch_add(1, Ordering::Relaxed);
                metrics::counter!(METRIC_WRITES, "tier" => TIER, "result" => "stored").increment(1);
                self.mark_up();
            }
            Ok(Err(e)) => {
                self.counters.write_errors.fetch_add(1, Ordering::Relaxed);
                metrics::counter!(METRIC_WRITES, "tier" => TIER, "result" => "failed").increment(1);
                self.mark_down("write", &e.to_string());
            }
            Err(_) => {
                self.counters.write_errors.fetch_add(1, Ordering::Relaxed);
                metrics::counter!(METRIC_WRITES, "tier" => TIER, "result" => "failed").increment(1);
                self.mark_down(
                    "write",
                    &format!("timed out after {:?}", self.write_timeout),
                );
            }
        }
    }

    fn done_writing(&self) {
        if self.pending.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.drained.notify_waiters();
        }
    }
}

/// Takes queued writes and runs them, a few at a time, until the store is
/// dropped.
async fn writer(inner: std::sync::Weak<Inner>, mut rx: mpsc::Receiver<(String, Bytes)>) {
    let slots = Arc::new(Semaphore::new(WRITE_CONCURRENCY));
    while let Some((path, data)) = rx.recv().await {
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        let Some(inner) = inner.upgrade() else {
            return;
        };
        tokio::spawn(async move {
            inner.write(&path, data).await;
            inner.done_writing();
            drop(permit);
        });
    }
}

#[async_trait]
impl CacheStore for RemoteStore {
    async fn get(&self, key: &CacheKey) -> Lookup {
        let inner = &self.inner;
        if inner.is_down() {
            inner.counters.skipped.fetch_add(1, Ordering::Relaxed);
            inner.miss();
            return Lookup::Miss;
        }
        let path = inner.layout.path(key);
        match tokio::time::timeout(inner.timeout, inner.op.read(&path)).await {
            Ok(Ok(buf)) => {
                inner.mark_up();
                match CacheEntry::decode_bytes(buf.to_bytes()) {
                    Ok(entry) => {
                        inner.counters.hits.fetch_add(1, Ordering::Relaxed);
                        metrics::counter!(METRIC_HITS, "tier" => TIER).increment(1);
                        Lookup::Hit(entry)
                    }
                    Err(e) => {
                        inner.counters.corrupt.fetch_add(1, Ordering::Relaxed);
                        inner.counters.errors.fetch_add(1, Ordering::Relaxed);
                        metrics::counter!(METRIC_CORRUPT, "tier" => TIER).increment(1);
                        metrics::counter!(METRIC_ERRORS, "tier" => TIER).increment(1);
                        inner.miss();
                        tracing::warn!(
                            backend = %inner.backend,
                            key = %key,
                            error = %e,
                            "corrupt remote cache entry ignored"
                        );
                        if !inner.read_only {
                            let _ =
                                tokio::time::timeout(inner.timeout, inner.op.delete(&path)).await;
                        }
                        Lookup::Failed
                    }
                }
            }
            Ok(Err(e)) if e.kind() == ErrorKind::NotFound => {
                inner.mark_up();
                inner.miss();
                Lookup::Miss
            }
            Ok(Err(e)) => {
                inner.miss();
                inner.mark_down("read", &e.to_string());
                Lookup::Failed
            }
            Err(_) => {
                inner.miss();
                inner.mark_down("read", &format!("timed out after {:?}", inner.timeout));
                Lookup::Failed
            }
        }
    }

    async fn put(&self, key: &CacheKey, entry: &CacheEntry) -> PutOutcome {
        let inner = &self.inner;
        if inner.read_only {
            return PutOutcome::default();
        }
        let data = Bytes::from(entry.encode());
        inner.pending.fetch_add(1, Ordering::SeqCst);
        match self.queue.try_send((inner.layout.path(key), data)) {
            Ok(()) => PutOutcome {
                stored: true,
                ..PutOutcome::default()
            },
            Err(_) => {
                inner.done_writing();
                inner
                    .counters
                    .dropped_writes
                    .fetch_add(1, Ordering::Relaxed);
                metrics::counter!(METRIC_WRITES, "tier" => TIER, "result" => "dropped")
                    .increment(1);
                tracing::debug!(backend = %inner.backend, "remote cache write queue full; write dropped");
                PutOutcome::default()
            }
        }
    }

    async fn remove(&self, key: &CacheKey) -> bool {
        let inner = &self.inner;
        if inner.read_only || inner.is_down() {
            return false;
        }
        let path = inner.layout.path(key);
        matches!(
            tokio::time::timeout(inner.timeout, inner.op.delete(&path)).await,
            Ok(Ok(()))
        )
    }

    /// Hits, misses and errors; a remote tier has no size limit of ours.
    async fn stats(&self) -> CacheStats {
        let s = self.remote_stats();
        CacheStats {
            hits: s.hits,
            misses: s.misses,
            errors: s.errors,
            ..CacheStats::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_match_ccache_and_bazel() {
        let k = CacheKey::from_bytes([0xab; 32]);
        let hex = "ab".repeat(32);
        assert_eq!(Layout::Subdirs.path(&k), format!("ab/{}", &hex[2..]));
        assert_eq!(Layout::Flat.path(&k), hex);
        assert_eq!(Layout::Bazel.path(&k), format!("ac/{hex}"));
        assert_eq!(Layout::parse("bazel"), Some(Layout::Bazel));
        assert_eq!(Layout::parse("deep"), None);
    }

    #[test]
    fn urls_are_split_for_opendal() {
        let p = split_url("redis://user:pw@127.0.0.1:6379/3");
        assert_eq!(p.endpoint, "redis://127.0.0.1:6379/3");
        assert_eq!(p.path, "3");
        assert_eq!(p.user.as_deref(), Some("user"));
        assert_eq!(p.password.as_deref(), Some("pw"));
        let p = split_url("http://h:8080/cache/");
        assert_eq!(p.endpoint, "http://h:8080/cache");
        assert_eq!((p.user, p.password), (None, None));
        assert_eq!(root(""), "/");
        assert_eq!(root("/team/x/"), "/team/x/");
    }

    #[tokio::test]
    async fn backends_left_out_of_the_build_are_named() {
        let mut cfg = RemoteCacheConfig::default();
        cfg.backend = "tape".into();
        cfg.url = "http://127.0.0.1:1".into();
        let e = RemoteStore::new(&cfg).unwrap_err().to_string();
        assert!(e.contains("tape") && e.contains("not supported"), "{e}");
    }
}
