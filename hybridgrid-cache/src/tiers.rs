//! The cache tiers a program builds from its configuration.
//!
//! - [`coordinator`]: hg-coord's shared tier, every client's results in
//!   packs on the coordinator's disk (`<cache.dir>/coordinator`), written
//!   behind the answers, with the remote tier of `cache.remote` (shared by
//!   many coordinators: offices, CI fleets) behind it.
//! - [`with_remote`]: any local tier with the remote one behind it (hgbuild
//!   uses it with no coordinator, around a compile on its own machine).
//!
//! A remote tier that cannot be set up (a secret file missing, a backend
//! left out of the build) is logged and left out: the build goes on with
//! the local tiers.

use std::path::PathBuf;
use std::sync::Arc;

use hybridgrid_core::config::CacheConfig;

use crate::store::{CacheStore, PackStore, TieredStore, WriteBehind};

/// The remote tier of this build, when one was set up.
#[cfg(feature = "remote")]
pub type Remote = crate::store::RemoteStore;

/// The remote tier of this build (none: built without the `remote`
/// feature).
#[cfg(not(feature = "remote"))]
#[derive(Clone, Debug)]
pub enum Remote {}

/// `local` with the remote tier of `cfg.remote` behind it, if one is
/// configured and can be set up; `marker` shares outages between
/// processes (see `RemoteStore::with_down_marker`).
pub fn with_remote(
    cfg: &CacheConfig,
    local: Arc<dyn CacheStore>,
    marker: Option<PathBuf>,
) -> (Arc<dyn CacheStore>, Option<Remote>) {
    if !cfg.remote.is_configured() {
        return (local, None);
    }
    match open(cfg, marker) {
        Ok((slow, remote)) => {
            tracing::info!(
                backend = %cfg.remote.backend,
                url = %hybridgrid_core::config::redact_url(&cfg.remote.url),
                read_only = cfg.remote.read_only,
                "remote cache tier enabled"
            );
            let tiers = TieredStore::new(local, slow);
            (Arc::new(tiers), Some(remote))
        }
        Err(e) => {
            tracing::warn!(error = %e, "remote cache tier disabled");
            (local, None)
        }
    }
}

/// The remote tier as a store, and its handle.
type Opened = (Arc<dyn CacheStore>, Remote);

#[cfg(feature = "remote")]
fn open(cfg: &CacheConfig, marker: Option<PathBuf>) -> Result<Opened, String> {
    let store = Remote::new(&cfg.remote).map_err(|e| e.to_string())?;
    let store = match marker {
        Some(m) => store.with_down_marker(m),
        None => store,
    };
    Ok((Arc::new(store.clone()), store))
}

#[cfg(not(feature = "remote"))]
fn open(cfg: &CacheConfig, _marker: Option<PathBuf>) -> Result<Opened, String> {
    Err(format!(
        "cache.remote.backend `{}`: this hybridgrid was built without the remote-cache feature",
        cfg.remote.backend
    ))
}

/// Waits for queued remote writes before a short-lived process exits, at
/// most `cache.remote.write_timeout`.
pub async fn flush(remote: &Remote, cfg: &CacheConfig) {
    #[cfg(feature = "remote")]
    {
        let left = remote.flush(cfg.remote.write_timeout).await;
        if left > 0 {
            tracing::debug!(left, "remote cache writes not finished before exit");
        }
    }
    #[cfg(not(feature = "remote"))]
    {
        let _ = cfg;
        match *remote {}
    }
}

/// The remote tier's counters as `/api/stats` shows them under
/// `cache.remote`.
pub fn report(remote: &Remote) -> serde_json::Value {
    #[cfg(feature = "remote")]
    {
        let s = remote.remote_stats();
        serde_json::json!({ "remote": {
            "backend": remote.backend(),
            "read_only": remote.read_only(),
            "available": s.available,
            "hits": s.hits,
            "misses": s.misses,
            "errors": s.errors,
            "corrupt": s.corrupt,
            "skipped": s.skipped,
            "writes": s.writes,
            "write_errors": s.write_errors,
            "dropped_writes": s.dropped_writes,
            "pending_writes": s.pending_writes,
        }})
    }
    #[cfg(not(feature = "remote"))]
    match *remote {}
}

/// hg-coord's shared tier (see the module docs).
pub struct CoordinatorTier {
    /// The store to put a `CacheLayer` over.
    pub store: Arc<dyn CacheStore>,
    /// The disk tier's background writer, to flush at shutdown (none when
    /// `cache.max_pending_writes` is 0 or the directory is held by another
    /// process).
    pub writer: Option<WriteBehind>,
    /// The remote tier behind it, if one was set up.
    pub remote: Option<Remote>,
}

impl std::fmt::Debug for CoordinatorTier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CoordinatorTier")
            .field("writer", &self.writer.is_some())
            .field("remote", &self.remote)
            .finish_non_exhaustive()
    }
}

/// Opens hg-coord's shared tier from `cfg`.
pub fn coordinator(cfg: &CacheConfig) -> CoordinatorTier {
    let packs = PackStore::open(cfg.dir_path().join("coordinator"), cfg.max_size_bytes());
    let (store, writer) = crate::store::shared_tier(packs, cfg.max_pending_writes);
    let (store, remote) = with_remote(cfg, store, None);
    CoordinatorTier {
        store,
        writer,
        remote,
    }
}
