//! Starting a coordinator: the servers of `hybridgrid_net::run` over the
//! compile stack, with the shared cache tier of `hybridgrid_cache::tiers`
//! and the argument allow list of `hybridgrid_exec::args`.

use std::sync::Arc;
use std::time::Duration;

use hybridgrid_cache::layer::CacheLayer;
use hybridgrid_cache::store::{WriteBehind, WriteCounters};
use hybridgrid_core::config::Config;
use hybridgrid_core::logging::LogHandle;
use hybridgrid_net::client::ChannelOptions;
use hybridgrid_net::coordinator::WorkerPool;
use hybridgrid_net::http::admin::AdminHooks;
use hybridgrid_net::run;
use hybridgrid_net::security::Security;
use hybridgrid_net::server::ServeError;
use tower::Layer;
use tower::util::BoxCloneSyncService;

/// A coordinator started with [`start`]: its servers (fields of
/// [`run::RunningCoordinator`], reached through it) and its cache writer.
#[derive(Debug)]
pub struct RunningCoordinator {
    running: run::RunningCoordinator,
    /// The shared tier's background writer, flushed at shutdown.
    cache_writer: Option<WriteBehind>,
}

impl std::ops::Deref for RunningCoordinator {
    type Target = run::RunningCoordinator;
    fn deref(&self) -> &Self::Target {
        &self.running
    }
}

impl RunningCoordinator {
    /// Stops accepting work, drains running calls (up to `grace`), writes
    /// the cache entries still queued (up to `grace` more) and stops.
    pub async fn shutdown(self, grace: Duration) {
        self.running.stop(grace).await;
        if let Some(w) = self.cache_writer
            && !w.shutdown(grace).await
        {
            tracing::warn!(
                pending = w.counters().pending,
                "cache entries still queued at shutdown were not written"
            );
        }
    }

    /// Waits, at most `limit`, until the results queued for the shared
    /// cache tier so far are written; false if some still wait.
    pub async fn flush_cache(&self, limit: Duration) -> bool {
        match &self.cache_writer {
            Some(w) => w.flush(limit).await,
            None => true,
        }
    }

    /// The counters of the shared cache tier's background writer (none:
    /// no cache tier, or `cache.max_pending_writes: 0`).
    pub fn cache_writes(&self) -> Option<WriteCounters> {
        self.cache_writer.as_ref().map(WriteBehind::counters)
    }
}

/// Binds the ports of `cfg.coordinator` and serves until shut down.
pub async fn start(cfg: &Config) -> Result<RunningCoordinator, ServeError> {
    start_with(cfg, crate::heap::admin_hooks(LogHandle::detached())).await
}

/// [`start`] with the admin endpoints acting on `admin` (the process's log
/// handle, the heap profiler).
pub async fn start_with(cfg: &Config, admin: AdminHooks) -> Result<RunningCoordinator, ServeError> {
    let security = Security::for_server(cfg)?;
    let channel = ChannelOptions::new(
        Duration::from_secs(3),
        cfg.worker.task_timeout + Duration::from_secs(30),
    )
    .with_security(&security);
    let pool = WorkerPool::new(cfg.coordinator.heartbeat_ttl, channel);
    start_on(cfg, admin, pool).await
}

/// [`start_with`] over `pool` (e.g. one whose workers are in-process
/// services, for benchmarks).
pub async fn start_on(
    cfg: &Config,
    admin: AdminHooks,
    pool: WorkerPool,
) -> Result<RunningCoordinator, ServeError> {
    let mut cache_writer = None;
    let check = Arc::new(hybridgrid_exec::args::check_task);
    let running = run::coordinator(cfg, admin, pool, Some(check), |state, dispatch| {
        if !cfg.cache.enabled {
            return dispatch;
        }
        // The shared tier (packs on this disk, `cache.remote` behind).
        let tier = hybridgrid_cache::tiers::coordinator(&cfg.cache);
        cache_writer = tier.writer;
        if let Some(remote) = tier.remote {
            state
                .cache_tiers
                .set(move || hybridgrid_cache::tiers::report(&remote));
        }
        state
            .cache_enabled
            .store(true, std::sync::atomic::Ordering::Relaxed);
        BoxCloneSyncService::new(CacheLayer::from_arc(tier.store).layer(dispatch))
    })
    .await?;
    Ok(RunningCoordinator {
        running,
        cache_writer,
    })
}
