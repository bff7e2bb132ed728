//! Starting a worker: detect compilers, build the executor, serve gRPC and
//! HTTP, and register with the coordinator.

use std::net::SocketAddr;
use std::time::Duration;

use hybridgrid_core::config::Config;
use hybridgrid_core::logging::LogHandle;
use hybridgrid_core::worker::{WorkerId, WorkerInfo, WorkerSource};
use hybridgrid_exec::detect::{self, DetectOptions};
use hybridgrid_net::client::ChannelOptions;
use hybridgrid_net::convert::{RequestLimits, TaskCheck};
use hybridgrid_net::http::admin::AdminHooks;
use hybridgrid_net::security::Security;
use hybridgrid_net::worker::{WorkerServer, run_registration};
use hybridgrid_net::{http, server};

use crate::cli::hostname;
use hybridgrid_exec::worker_stack::{self as executor, WorkerExecutor};

/// A worker started with [`start`].
#[derive(Debug)]
pub struct RunningWorker {
    /// Its id.
    pub id: WorkerId,
    /// Where its gRPC service listens.
    pub grpc_addr: SocketAddr,
    /// Where its HTTP endpoints listen.
    pub http_addr: SocketAddr,
    /// The service (counters, drain).
    pub server: WorkerServer,
    tasks: server::ServerTasks,
    executor: WorkerExecutor,
}

impl RunningWorker {
    /// Stops taking new compiles, lets running ones finish within `grace`,
    /// deregisters and stops the servers.
    pub async fn shutdown(self, grace: Duration) {
        self.server.drain();
        if !self.server.wait_idle(grace).await {
            tracing::warn!("grace period over with compiles still running");
        }
        self.tasks.stop(grace).await;
        // Docker containers go last: no compile uses them any more.
        self.executor.shutdown().await;
    }
}

/// Detects this machine's capabilities and starts the worker.
pub async fn start(cfg: &Config) -> Result<RunningWorker, server::ServeError> {
    start_with(cfg, crate::heap::admin_hooks(LogHandle::detached())).await
}

/// [`start`] with the admin endpoints acting on `admin` (the process's log
/// handle, the heap profiler).
pub async fn start_with(
    cfg: &Config,
    admin: AdminHooks,
) -> Result<RunningWorker, server::ServeError> {
    let w = &cfg.worker;
    let security = Security::for_server(cfg)?;
    let admin = admin.with_token(security.token.clone());
    let grpc = server::bind(&w.bind_address, w.grpc_port).await?;
    let http_l = server::bind(&w.bind_address, w.http_port).await?;
    let grpc_addr = server::local_addr(&grpc);
    let http_addr = server::local_addr(&http_l);

    let compilers = detect::detect_compilers(&DetectOptions::default()).await;
    if compilers.is_empty() {
        tracing::warn!("no compiler found on PATH: this worker can compile nothing");
    }
    let id = if !w.id.is_empty() {
        w.id.clone()
    } else if w.grpc_port == 50052 {
        hostname()
    } else {
        format!("{}-{}", hostname(), grpc_addr.port())
    };
    let executor = executor::build(w, &id, compilers)
        .await
        .map_err(|e| server::ServeError::Setup(e.to_string()))?;
    let caps = executor.capabilities(w.max_concurrent_tasks);
    let advertise = if w.advertise_address.is_empty() {
        format!("0.0.0.0:{}", grpc_addr.port())
    } else {
        w.advertise_address.clone()
    };
    let mut info = WorkerInfo::new(
        WorkerId(id.clone()),
        advertise,
        WorkerSource::Handshake,
        caps,
    );
    info.http_port = http_addr.port();
    info.version = hybridgrid_net::VERSION.to_owned();

    let server = WorkerServer::new(
        info.clone(),
        executor.executor.clone(),
        w.max_concurrent_tasks,
    )
    .with_validation(
        RequestLimits::default().with_max_request_bytes(w.max_request_bytes),
        Some(std::sync::Arc::new(hybridgrid_exec::args::check_task) as TaskCheck),
    )
    .with_executor_check(executor.can_run.clone());
    // How the coordinator is called: its TLS and token.
    let channel = ChannelOptions::default().with_security(&security);

    let mut tasks = server::ServerTasks::new();
    let (s, sec, stopped) = (server.clone(), security.clone(), tasks.stopped());
    tasks.serve("gRPC server", async move {
        server::serve_worker_with(grpc, s, &sec, stopped).await
    });
    let router = http::worker_app(
        server.clone(),
        if cfg.metrics.enabled {
            &cfg.metrics.path
        } else {
            ""
        },
        admin,
    );
    tasks.serve(
        "HTTP server",
        http::serve_with(http_l, router, security.server_tls.clone(), tasks.stopped()),
    );
    if !w.coordinator.is_empty() {
        tasks.push(tokio::spawn(run_registration(
            w.coordinator.clone(),
            info.clone(),
            server.counters(),
            w.heartbeat_interval,
            channel.clone(),
            tasks.signal(),
        )));
    }
    // mDNS announcement, and the coordinator lookup when none is configured.
    tasks.push(hybridgrid_net::discovery::spawn_worker(
        cfg,
        info,
        grpc_addr.port(),
        server.counters(),
        channel,
        tasks.signal(),
    ));
    tracing::info!(worker_id = %id, grpc = %grpc_addr, http = %http_addr, "worker listening");
    Ok(RunningWorker {
        id: WorkerId(id),
        grpc_addr,
        http_addr,
        server,
        tasks,
        executor,
    })
}
