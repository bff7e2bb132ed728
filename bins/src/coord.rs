//! Starting a coordinator: gRPC and HTTP servers over the composed
//! compile stack.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hybridgrid_cache::layer::CacheLayer;
use hybridgrid_cache::store::{WriteBehind, WriteCounters};
use hybridgrid_core::config::Config;
use hybridgrid_core::logging::LogHandle;
use hybridgrid_net::client::ChannelOptions;
use hybridgrid_net::convert::RequestLimits;
use hybridgrid_net::coordinator::{CoordinatorServer, CoordinatorState, WorkerPool, compose_stack};
use hybridgrid_net::http::admin::AdminHooks;
use hybridgrid_net::reapi::ReapiServer;
use hybridgrid_net::security::Security;
use hybridgrid_net::{http, server};
use tower::Layer;
use tower::util::BoxCloneSyncService;

/// A coordinator started with [`start`].
#[derive(Debug)]
pub struct RunningCoordinator {
    /// Where its gRPC service listens.
    pub grpc_addr: SocketAddr,
    /// Where its HTTP endpoints listen.
    pub http_addr: SocketAddr,
    /// Its shared state.
    pub state: Arc<CoordinatorState>,
    /// The compile service behind `BuildService` (in-process callers, benchmarks).
    pub server: CoordinatorServer,
    tasks: server::ServerTasks,
    /// The shared tier's background writer, flushed at shutdown.
    cache_writer: Option<WriteBehind>,
}

impl RunningCoordinator {
    /// Stops accepting work, drains running calls (up to `grace`), writes
    /// the cache entries still queued (up to `grace` more) and stops.
    pub async fn shutdown(self, grace: Duration) {
        self.tasks.stop(grace).await;
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
pub async fn start(cfg: &Config) -> Result<RunningCoordinator, server::ServeError> {
    start_with(cfg, crate::heap::admin_hooks(LogHandle::detached())).await
}

/// [`start`] with the admin endpoints acting on `admin` (the process's log
/// handle, the heap profiler).
pub async fn start_with(
    cfg: &Config,
    admin: AdminHooks,
) -> Result<RunningCoordinator, server::ServeError> {
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
) -> Result<RunningCoordinator, server::ServeError> {
    let c = &cfg.coordinator;
    let security = Security::for_server(cfg)?;
    let admin = admin.with_token(security.token.clone());
    let grpc = server::bind(&c.bind_address, c.grpc_port).await?;
    let http_l = server::bind(&c.bind_address, c.http_port).await?;
    let grpc_addr = server::local_addr(&grpc);
    let http_addr = server::local_addr(&http_l);

    let pool = Arc::new(pool);
    let state = CoordinatorState::new(pool.clone(), c.heartbeat_ttl);
    let mut cache_writer = None;
    let compile = compose_stack(&state, cfg, |dispatch| {
        if !cfg.cache.enabled {
            return dispatch;
        }
        // The shared tier (packs on this disk, `cache.remote` behind).
        let tier = hybridgrid_cache::tiers::coordinator(&cfg.cache);
        cache_writer = tier.writer;
        if let Some(remote) = tier.remote {
            state
                .cache_tiers
                .set(move || crate::remote_cache::report(&remote));
        }
        state
            .cache_enabled
            .store(true, std::sync::atomic::Ordering::Relaxed);
        BoxCloneSyncService::new(CacheLayer::from_arc(tier.store).layer(dispatch))
    });
    let srv = CoordinatorServer::new(state.clone(), compile)
        .with_limits(RequestLimits::default().with_max_request_bytes(c.max_request_bytes))
        .with_task_check(std::sync::Arc::new(hybridgrid_exec::args::check_task));
    let srv = if c.reapi.enabled {
        srv.with_reapi(ReapiServer::new(&c.reapi.instance_name))
    } else {
        srv
    };
    let server = srv.clone();

    let mut tasks = server::ServerTasks::new();
    let sec = security.clone();
    let stopped = tasks.stopped();
    tasks.serve("gRPC server", async move {
        server::serve_coordinator_with(grpc, srv, &sec, stopped).await
    });
    let router = http::coordinator_app(
        state.clone(),
        if cfg.metrics.enabled {
            &cfg.metrics.path
        } else {
            ""
        },
        admin,
        tasks.signal(),
    );
    tasks.serve(
        "HTTP server",
        http::serve_with(http_l, router, security.server_tls.clone(), tasks.stopped()),
    );
    let ttl = c.heartbeat_ttl;
    let mut r = tasks.signal();
    tasks.push(tokio::spawn(async move {
        let period = (ttl / 4).max(Duration::from_millis(100));
        loop {
            tokio::select! {
                _ = tokio::time::sleep(period) => { pool.expire(); }
                _ = r.changed() => return,
            }
        }
    }));
    tasks.push(hybridgrid_net::discovery::spawn_coordinator(
        cfg,
        state.pool.clone(),
        grpc_addr.port(),
        http_addr.port(),
        tasks.signal(),
    ));
    tracing::info!(grpc = %grpc_addr, http = %http_addr,
        scheduler = ?cfg.scheduler.algorithm, reapi = c.reapi.enabled, "coordinator listening");
    Ok(RunningCoordinator {
        grpc_addr,
        http_addr,
        state,
        server,
        tasks,
        cache_writer,
    })
}
