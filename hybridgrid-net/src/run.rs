//! Running the servers: a coordinator or a worker binds its two ports,
//! serves gRPC and HTTP (TLS and the token as configured), keeps its
//! background tasks (heartbeats, registration, discovery) and stops them
//! all on one path.
//!
//! What the servers run is the caller's: a coordinator's extra layers (the
//! shared cache tier) and request check, a worker's executor. The binaries
//! compose them; an embedding program can compose others.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hybridgrid_core::config::Config;
use hybridgrid_core::worker::{Capabilities, WorkerId, WorkerInfo, WorkerSource};
use tokio::net::TcpListener;

use crate::client::ChannelOptions;
use crate::convert::{RequestLimits, TaskCheck};
use crate::coordinator::{BoxCompile, CoordinatorServer, CoordinatorState, WorkerPool};
use crate::http::admin::AdminHooks;
use crate::reapi::ReapiServer;
use crate::security::Security;
use crate::server::{self, ServeError, ServerTasks};
use crate::worker::{WorkerServer, run_registration};

/// A server's two ports, bound, and its TLS and token (see [`bind`]).
#[derive(Debug)]
pub struct Bound {
    grpc: TcpListener,
    http: TcpListener,
    security: Security,
    /// Where the gRPC service listens.
    pub grpc_addr: SocketAddr,
    /// Where the HTTP endpoints listen.
    pub http_addr: SocketAddr,
}

/// Loads the TLS and token settings of `cfg` (a bad certificate or token
/// file fails here, before anything else starts) and binds
/// `host:grpc_port` and `host:http_port` (0: any free port).
pub async fn bind(
    cfg: &Config,
    host: &str,
    grpc_port: u16,
    http_port: u16,
) -> Result<Bound, ServeError> {
    let security = Security::for_server(cfg)?;
    let grpc = server::bind(host, grpc_port).await?;
    let http = server::bind(host, http_port).await?;
    Ok(Bound {
        grpc_addr: server::local_addr(&grpc),
        http_addr: server::local_addr(&http),
        grpc,
        http,
        security,
    })
}

/// The metrics path to serve (empty: none).
fn metrics_path(cfg: &Config) -> &str {
    if cfg.metrics.enabled {
        &cfg.metrics.path
    } else {
        ""
    }
}

/// Serves `router` on `listener` (HTTPS with the server's certificate when
/// TLS is on) until `tasks` stop.
fn serve_http(
    tasks: &mut ServerTasks,
    listener: TcpListener,
    router: axum::Router,
    security: &Security,
) {
    let stopped = tasks.stopped();
    tasks.serve(
        "HTTP server",
        crate::http::serve_with(listener, router, security.server_tls.clone(), stopped),
    );
}

/// A coordinator started with [`coordinator`].
#[derive(Debug)]
pub struct RunningCoordinator {
    /// Where its gRPC service listens.
    pub grpc_addr: SocketAddr,
    /// Where its HTTP endpoints listen.
    pub http_addr: SocketAddr,
    /// Its shared state.
    pub state: Arc<CoordinatorState>,
    /// The compile service behind `BuildService` (in-process callers,
    /// benchmarks).
    pub server: CoordinatorServer,
    tasks: ServerTasks,
}

impl RunningCoordinator {
    /// Stops accepting work, drains running calls (up to `grace`) and
    /// stops every server and background task.
    pub async fn stop(self, grace: Duration) {
        self.tasks.stop(grace).await;
    }
}

/// Starts a coordinator over the workers of `pool`: binds the ports of
/// `cfg.coordinator`, composes the compile stack with the caller's `layers`
/// in the place of the shared cache tier (`|_, dispatch| dispatch` for
/// none), checks every request with `check`, and serves the REAPI endpoint
/// when `coordinator.reapi.enabled`.
pub async fn coordinator(
    cfg: &Config,
    admin: AdminHooks,
    pool: WorkerPool,
    check: Option<TaskCheck>,
    layers: impl FnOnce(&Arc<CoordinatorState>, BoxCompile) -> BoxCompile,
) -> Result<RunningCoordinator, ServeError> {
    let c = &cfg.coordinator;
    let bound = bind(cfg, &c.bind_address, c.grpc_port, c.http_port).await?;
    let security = bound.security.clone();
    let admin = admin.with_token(security.token.clone());
    let (grpc_addr, http_addr) = (bound.grpc_addr, bound.http_addr);

    let pool = Arc::new(pool);
    let state = CoordinatorState::new(pool.clone(), c.heartbeat_ttl);
    let compile = crate::coordinator::compose_stack(&state, cfg, |d| layers(&state, d));
    let mut srv = CoordinatorServer::new(state.clone(), compile)
        .with_limits(RequestLimits::default().with_max_request_bytes(c.max_request_bytes));
    if let Some(check) = check {
        srv = srv.with_task_check(check);
    }
    if c.reapi.enabled {
        srv = srv.with_reapi(ReapiServer::new(&c.reapi.instance_name));
    }
    let server = srv.clone();

    let mut tasks = ServerTasks::new();
    let (sec, stopped) = (security.clone(), tasks.stopped());
    tasks.serve("gRPC server", async move {
        server::serve_coordinator_with(bound.grpc, srv, &sec, stopped).await
    });
    let router =
        crate::http::coordinator_app(state.clone(), metrics_path(cfg), admin, tasks.signal());
    serve_http(&mut tasks, bound.http, router, &security);
    // Workers that stopped sending heartbeats leave the pool.
    let ttl = c.heartbeat_ttl;
    let mut stop = tasks.signal();
    tasks.push(tokio::spawn(async move {
        let period = (ttl / 4).max(Duration::from_millis(100));
        loop {
            tokio::select! {
                _ = tokio::time::sleep(period) => { pool.expire(); }
                _ = stop.changed() => return,
            }
        }
    }));
    tasks.push(crate::discovery::spawn_coordinator(
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
    })
}

/// The worker's id: `worker.id`, else this machine's host name, with
/// `-PORT` when the gRPC port is not the default one (several workers on one
/// machine).
pub fn worker_id(cfg: &Config, bound: &Bound) -> String {
    let w = &cfg.worker;
    let host = || hybridgrid_core::addr::hostname().unwrap_or_else(|| "localhost".into());
    if !w.id.is_empty() {
        w.id.clone()
    } else if w.grpc_port == 50052 {
        host()
    } else {
        format!("{}-{}", host(), bound.grpc_addr.port())
    }
}

/// What worker `id` registers with: `caps`, the address the coordinator
/// dials back (`worker.advertise_address`, else this port on every
/// address), its HTTP port and version.
pub fn worker_info(cfg: &Config, bound: &Bound, id: &str, caps: Capabilities) -> WorkerInfo {
    let w = &cfg.worker;
    let advertise = if w.advertise_address.is_empty() {
        format!("0.0.0.0:{}", bound.grpc_addr.port())
    } else {
        w.advertise_address.clone()
    };
    let mut info = WorkerInfo::new(
        WorkerId(id.to_owned()),
        advertise,
        WorkerSource::Handshake,
        caps,
    );
    info.http_port = bound.http_addr.port();
    info.version = crate::VERSION.to_owned();
    info
}

/// A worker started with [`worker`].
#[derive(Debug)]
pub struct RunningWorker {
    /// Where its gRPC service listens.
    pub grpc_addr: SocketAddr,
    /// Where its HTTP endpoints listen.
    pub http_addr: SocketAddr,
    /// The service (counters, drain).
    pub server: WorkerServer,
    tasks: ServerTasks,
}

impl RunningWorker {
    /// Stops taking new compiles, lets running ones finish within `grace`,
    /// deregisters and stops the servers.
    pub async fn stop(self, grace: Duration) {
        self.server.drain();
        if !self.server.wait_idle(grace).await {
            tracing::warn!("grace period over with compiles still running");
        }
        self.tasks.stop(grace).await;
    }
}

/// Serves `server` (the worker `info` describes) on the ports `bound`
/// (see [`bind`]; its id may name the port it got), registers with
/// `worker.coordinator` or finds it by mDNS, and announces itself.
pub fn worker(
    cfg: &Config,
    admin: AdminHooks,
    bound: Bound,
    server: WorkerServer,
    info: WorkerInfo,
) -> RunningWorker {
    let w = &cfg.worker;
    let security = bound.security.clone();
    let admin = admin.with_token(security.token.clone());
    let (grpc_addr, http_addr) = (bound.grpc_addr, bound.http_addr);
    // How the coordinator is called: its TLS and token.
    let channel = ChannelOptions::default().with_security(&security);

    let mut tasks = ServerTasks::new();
    let (s, sec, stopped) = (server.clone(), security.clone(), tasks.stopped());
    tasks.serve("gRPC server", async move {
        server::serve_worker_with(bound.grpc, s, &sec, stopped).await
    });
    let router = crate::http::worker_app(server.clone(), metrics_path(cfg), admin);
    serve_http(&mut tasks, bound.http, router, &security);
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
    let id = info.id.0.clone();
    tasks.push(crate::discovery::spawn_worker(
        cfg,
        info,
        grpc_addr.port(),
        server.counters(),
        channel,
        tasks.signal(),
    ));
    tracing::info!(worker_id = %id, grpc = %grpc_addr, http = %http_addr, "worker listening");
    RunningWorker {
        grpc_addr,
        http_addr,
        server,
        tasks,
    }
}

/// Completes on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

/// Serves until SIGINT or SIGTERM: logs `stopping` and awaits `stop` with
/// the server `started`, then flushes the log. A server that did not start
/// is exit status 1, with the reason on standard error and in the log.
pub async fn serve_until_signal<R>(
    program: &str,
    started: Result<R, ServeError>,
    stopping: &str,
    stop: impl AsyncFnOnce(R),
) -> std::process::ExitCode {
    let running = match started {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, "cannot start");
            eprintln!("{program}: {e}");
            return std::process::ExitCode::from(1);
        }
    };
    shutdown_signal().await;
    tracing::info!("{stopping}");
    stop(running).await;
    tracing::info!("stopped");
    hybridgrid_core::logging::flush();
    std::process::ExitCode::SUCCESS
}
