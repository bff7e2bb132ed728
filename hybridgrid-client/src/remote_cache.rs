//! `cache.remote`: putting the remote shared tier behind a local one.
//!
//! hg-coord: its disk tier (`<cache.dir>/coordinator`) in front of the
//! remote tier, so several coordinators (offices, CI fleets) share results.
//! hgbuild without a coordinator (a CI machine on its own): its local disk
//! tier in front of the remote tier, around a local compile. With a
//! coordinator, hgbuild leaves the remote tier to the coordinator.
//!
//! A remote tier that cannot be set up (a secret file missing, a backend
//! left out of the build) is logged and left out: the build goes on with
//! the local tiers.

use std::path::PathBuf;
use std::sync::Arc;

use hybridgrid_cache::store::{CacheStore, TieredStore};
use hybridgrid_core::config::CacheConfig;

/// The remote tier of this build, when one was set up.
#[cfg(feature = "remote-cache")]
pub type Remote = hybridgrid_cache::store::RemoteStore;

/// The remote tier of this build (none: built without `remote-cache`).
#[cfg(not(feature = "remote-cache"))]
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

#[cfg(feature = "remote-cache")]
fn open(cfg: &CacheConfig, marker: Option<PathBuf>) -> Result<Opened, String> {
    let store = Remote::new(&cfg.remote).map_err(|e| e.to_string())?;
    let store = match marker {
        Some(m) => store.with_down_marker(m),
        None => store,
    };
    Ok((Arc::new(store.clone()), store))
}

#[cfg(not(feature = "remote-cache"))]
fn open(cfg: &CacheConfig, _marker: Option<PathBuf>) -> Result<Opened, String> {
    Err(format!(
        "cache.remote.backend `{}`: this hybridgrid was built without the remote-cache feature",
        cfg.remote.backend
    ))
}

/// The remote tier's counters as `/api/stats` shows them under
/// `cache.remote`.
pub fn report(remote: &Remote) -> serde_json::Value {
    #[cfg(feature = "remote-cache")]
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
    #[cfg(not(feature = "remote-cache"))]
    match *remote {}
}

/// Waits for queued remote writes before a short-lived process exits, at
/// most `cache.remote.write_timeout`.
pub async fn flush(remote: &Remote, cfg: &CacheConfig) {
    #[cfg(feature = "remote-cache")]
    {
        let left = remote.flush(cfg.remote.write_timeout).await;
        if left > 0 {
            tracing::debug!(left, "remote cache writes not finished before exit");
        }
    }
    #[cfg(not(feature = "remote-cache"))]
    {
        let _ = cfg;
        match *remote {}
    }
}

/// hgbuild with no coordinator but a `cache.remote`: the local disk tier
/// (`local`, the caller's store) and the remote tier around a compile on
/// this machine, so a CI machine
/// on its own shares results with its fleet. `None` when no remote tier is
/// configured (or it cannot be set up): hgbuild then compiles as before.
pub fn local_stack(
    cfg: &hybridgrid_core::config::Config,
    compiler: &hybridgrid_core::worker::CompilerInfo,
    local: &hybridgrid_cache::DiskStore,
) -> Option<(hybridgrid_net::coordinator::BoxCompile, Remote)> {
    use hybridgrid_core::task::CompileOutput;
    use hybridgrid_core::worker::WorkerId;
    use tower::{Layer, ServiceBuilder};

    if !cfg.cache.enabled || !cfg.cache.remote.is_configured() {
        return None;
    }
    let local = Arc::new(local.clone());
    // One warning per outage for the whole build, not one per hgbuild.
    let marker = cfg.cache.dir_path().join("remote-down");
    let (store, remote) = with_remote(&cfg.cache, local, Some(marker));
    let remote = remote?;
    // The user's own compiler on the user's own code: no sandbox.
    let opts = hybridgrid_exec::native::NativeOptions::default()
        .with_timeout(cfg.client.request_timeout)
        .with_isolation(hybridgrid_core::config::IsolationMode::Off);
    let exec = hybridgrid_exec::native::NativeExecutor::new(vec![compiler.clone()], opts);
    let here = ServiceBuilder::new()
        .map_response(|mut o: CompileOutput| {
            o.worker_id.get_or_insert_with(|| WorkerId("local".into()));
            o
        })
        .service(exec);
    let svc = hybridgrid_cache::CacheLayer::from_arc(store).layer(here);
    Some((tower::util::BoxCloneSyncService::new(svc), remote))
}
