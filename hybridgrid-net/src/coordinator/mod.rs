//! The coordinator's gRPC services: `BuildService` for clients and
//! `RegistryService` for workers, over a [`WorkerPool`].

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hybridgrid_core::admission::Admission;
use hybridgrid_core::breaker::{CircuitHandle, CircuitState};
use hybridgrid_core::config::CircuitBreakerConfig;
use hybridgrid_core::hedge::Hedge;
use hybridgrid_core::registry::{RegisteredWorker, Registry, WorkerStats};
use hybridgrid_core::retry::Retry;
use hybridgrid_core::scheduler::{Endpoint, Endpoints, Scheduler};
use hybridgrid_core::task::{CompileOutput, CompileTask};
use hybridgrid_core::worker::{WorkerId, WorkerInfo, WorkerSource};
use hybridgrid_core::{BoxError, GridError, addr};
use tonic::{Request, Response, Status};
use tower::ServiceExt;
use tower::util::BoxCloneSyncService;

use crate::client::{ChannelOptions, WorkerClient};
use crate::convert::{self, RequestLimits};
use crate::metrics::M_TASKS;
use crate::proto;
use crate::proto::build_service_server::BuildService;
use crate::proto::registry_service_server::RegistryService;
use crate::status::to_status;

mod pool;

pub use pool::{WorkerPool, compose_stack};

/// A boxed compile service as the coordinator composes it.
pub type BoxCompile = BoxCloneSyncService<CompileTask, CompileOutput, BoxError>;

/// Makes the service that calls one worker. The default dials the
/// worker's address with a gRPC [`WorkerClient`]; benchmarks and tests may
/// put an in-process service in its place.
pub type Connector = Arc<dyn Fn(&WorkerInfo) -> Result<BoxCompile, GridError> + Send + Sync>;

/// Task counters of the coordinator, for `/api/stats` and status.
#[derive(Debug, Default)]
pub struct TaskCounters {
    /// Tasks being compiled now.
    pub active: AtomicU64,
    /// Tasks received.
    pub total: AtomicU64,
    /// Tasks that compiled (exit code 0).
    pub successful: AtomicU64,
    /// Tasks that failed (compile error or grid error).
    pub failed: AtomicU64,
    /// Results served from the coordinator's cache.
    pub cache_hits: AtomicU64,
    /// Lookups that missed the coordinator's cache.
    pub cache_misses: AtomicU64,
}

/// One worker in the pool, as status pages show it.
#[derive(Debug, Clone)]
pub struct PoolEntry {
    /// What it is.
    pub info: Arc<WorkerInfo>,
    stats: Arc<WorkerStats>,
    circuit: Option<CircuitState>,
}

impl PoolEntry {
    /// Tasks running on it now.
    pub fn active(&self) -> u64 {
        self.stats.active()
    }

    /// Tasks it finished.
    pub fn completed(&self) -> u64 {
        self.stats.completed()
    }

    /// Tasks that failed on it for reasons of the worker.
    pub fn failed(&self) -> u64 {
        self.stats.failed()
    }

    /// Average latency of its tasks (EWMA), in milliseconds.
    pub fn avg_latency_ms(&self) -> f64 {
        self.stats.latency_secs() * 1000.0
    }

    /// `closed`, `half-open` or `open`.
    pub fn circuit_state(&self) -> &'static str {
        self.circuit.map(CircuitState::as_str).unwrap_or("closed")
    }

    /// True unless its circuit is open.
    pub fn healthy(&self) -> bool {
        self.circuit != Some(CircuitState::Open)
    }
}

/// A value the coordinator's state reports but does not own: a function
/// set once by whoever composes the stack (a second set is ignored), read
/// by the stats.
pub struct Report<T>(std::sync::OnceLock<Box<dyn Fn() -> T + Send + Sync>>);

impl<T> Default for Report<T> {
    fn default() -> Self {
        Report(std::sync::OnceLock::new())
    }
}

impl<T> Report<T> {
    /// Sets the function; a second call is ignored.
    pub fn set(&self, f: impl Fn() -> T + Send + Sync + 'static) {
        let _ = self.0.set(Box::new(f));
    }

    /// The value now, if a function is set.
    pub fn report(&self) -> Option<T> {
        self.0.get().map(|f| f())
    }
}

impl<T> std::fmt::Debug for Report<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Report")
            .field("set", &self.0.get().is_some())
            .finish()
    }
}

/// The tasks a composed stack keeps waiting (see [`compose_stack`]).
pub type WaitingReport = Report<u64>;

/// Shared state of the coordinator's services.
#[derive(Debug)]
pub struct CoordinatorState {
    /// The workers.
    pub pool: Arc<WorkerPool>,
    /// Task counters.
    pub tasks: TaskCounters,
    /// When it started.
    pub started: Instant,
    /// The heartbeat interval suggested to workers.
    pub heartbeat_interval: Duration,
    /// Whether the compile stack has a shared cache (for hit/miss counts).
    pub cache_enabled: std::sync::atomic::AtomicBool,
    /// The most recent finished tasks (`/api/v1/tasks`, the dashboard).
    pub recent: crate::tasks::RecentTasks,
    /// Counters of extra cache tiers (the remote tier) for `/api/stats`.
    pub cache_tiers: CacheTierReport,
    /// Tasks waiting in the compile stack (`tasks.queued`).
    pub waiting: WaitingReport,
}

/// Reports the counters of cache tiers the network layer does not know
/// (e.g. `cache.remote`), read by `/api/stats`, which adds each of the
/// object's fields to its `cache` object.
pub type CacheTierReport = Report<serde_json::Value>;

impl CoordinatorState {
    /// State over `pool`.
    pub fn new(pool: Arc<WorkerPool>, heartbeat_ttl: Duration) -> Arc<Self> {
        Arc::new(CoordinatorState {
            pool,
            tasks: TaskCounters::default(),
            started: Instant::now(),
            heartbeat_interval: (heartbeat_ttl / 3).max(Duration::from_millis(100)),
            cache_enabled: std::sync::atomic::AtomicBool::new(false),
            recent: crate::tasks::RecentTasks::default(),
            cache_tiers: CacheTierReport::default(),
            waiting: WaitingReport::default(),
        })
    }

    /// The counters as a stats message.
    pub fn stats(&self) -> proto::StatsResponse {
        let t = &self.tasks;
        let entries = self.pool.entries();
        let workers = entries.len() as u32;
        let healthy = entries.iter().filter(|e| e.healthy()).count() as u32;
        proto::StatsResponse {
            workers_total: workers,
            workers_healthy: healthy,
            tasks_active: t.active.load(Ordering::Relaxed),
            tasks_queued: self.waiting.report().unwrap_or(0),
            tasks_total: t.total.load(Ordering::Relaxed),
            tasks_successful: t.successful.load(Ordering::Relaxed),
            tasks_failed: t.failed.load(Ordering::Relaxed),
            cache_hits: t.cache_hits.load(Ordering::Relaxed),
            cache_misses: t.cache_misses.load(Ordering::Relaxed),
            uptime_seconds: self.started.elapsed().as_secs(),
        }
    }

    /// The status of every worker.
    pub fn worker_status(&self) -> Vec<proto::WorkerStatus> {
        self.pool
            .entries()
            .iter()
            .map(|e| proto::WorkerStatus {
                info: Some(convert::worker_to_proto(&e.info)),
                circuit_state: e.circuit_state().into(),
                active_tasks: e.active() as u32,
                completed_tasks: e.completed(),
                failed_tasks: e.failed(),
                avg_latency_ms: e.avg_latency_ms(),
                healthy: e.healthy(),
            })
            .collect()
    }
}

/// Serves `BuildService` and `RegistryService`.
#[derive(Clone)]
pub struct CoordinatorServer {
    state: Arc<CoordinatorState>,
    compile: BoxCompile,
    limits: RequestLimits,
    check: Option<convert::TaskCheck>,
    reapi: Option<crate::reapi::ReapiServer>,
}

impl std::fmt::Debug for CoordinatorServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CoordinatorServer").finish()
    }
}

impl CoordinatorServer {
    /// Serves compiles through `compile` and registrations into `state`.
    pub fn new(state: Arc<CoordinatorState>, compile: BoxCompile) -> Self {
        CoordinatorServer {
            state,
            compile,
            limits: RequestLimits::default(),
            check: None,
            reapi: None,
        }
    }

    /// The same serving the Remote Execution API beside the grid's own
    /// services, on the same port ([`crate::reapi`]).
    pub fn with_reapi(mut self, reapi: crate::reapi::ReapiServer) -> Self {
        self.reapi = Some(reapi);
        self
    }

    /// Its REAPI services, when it serves them.
    pub fn reapi(&self) -> Option<&crate::reapi::ReapiServer> {
        self.reapi.as_ref()
    }

    /// The same with other request limits.
    pub fn with_limits(mut self, limits: RequestLimits) -> Self {
        self.limits = limits;
        self
    }

    /// The same refusing tasks `check` refuses before they are scheduled
    /// (a refused argument never reaches a worker).
    pub fn with_task_check(mut self, check: convert::TaskCheck) -> Self {
        self.check = Some(check);
        self
    }

    /// The request limits.
    pub fn limits(&self) -> &RequestLimits {
        &self.limits
    }

    /// The shared state.
    pub fn state(&self) -> &Arc<CoordinatorState> {
        &self.state
    }

    /// Compiles one task through the composed stack, with logs and counters.
    pub async fn compile(&self, task: CompileTask) -> Result<CompileOutput, GridError> {
        let t = &self.state.tasks;
        t.total.fetch_add(1, Ordering::Relaxed);
        t.active.fetch_add(1, Ordering::SeqCst);
        let start = Instant::now();
        let task_id = task.id.clone();
        let source = task.source_name.clone();
        let res = self.compile.clone().oneshot(task).await;
        t.active.fetch_sub(1, Ordering::SeqCst);
        let duration = start.elapsed();
        let res = res.map_err(|e| {
            GridError::find(e.as_ref())
                .cloned()
                .unwrap_or_else(|| GridError::Internal(e.to_string()))
        });
        let (outcome, success) = match &res {
            Ok(o) if o.success() => ("success", true),
            Ok(_) => ("compile_error", false),
            Err(GridError::MissingInputs(_)) => ("missing_inputs", false),
            Err(_) => ("error", false),
        };
        metrics::counter!(M_TASKS, "outcome" => outcome).increment(1);
        if let Err(GridError::MissingInputs(paths)) = &res {
            // Not a failure: the client sends the task again with the files
            // the worker lacked (a worker's store fills this way).
            tracing::debug!(task_id = %task_id, files = paths.len(), "the worker lacks files sent by digest; the client sends them");
            return res;
        }
        if let Ok(o) = &res
            && self.state.cache_enabled.load(Ordering::Relaxed)
        {
            if o.from_cache {
                t.cache_hits.fetch_add(1, Ordering::Relaxed);
            } else {
                t.cache_misses.fetch_add(1, Ordering::Relaxed);
            }
        }
        if success {
            t.successful.fetch_add(1, Ordering::Relaxed);
        } else {
            t.failed.fetch_add(1, Ordering::Relaxed);
        }
        metrics::histogram!("hybridgrid_task_duration_seconds").record(duration.as_secs_f64());
        if matches!(&res, Ok(o) if o.from_cache) {
            // Served by the shared cache: no worker ran it, so the
            // scheduler logged nothing.
            tracing::info!(task_id = %task_id, duration = ?duration, success, from_cache = true, "task completed");
        }
        self.state
            .recent
            .record(&task_id.0, &source, duration, &res);
        match &res {
            Ok(o) if !o.success() => {
                let stderr = String::from_utf8_lossy(&o.stderr);
                let stderr: String = stderr.chars().take(2000).collect();
                tracing::error!(task_id = %task_id, error = %format!("exit code {}", o.exit_code), stderr = %stderr, "compilation failed");
            }
            Err(e) => {
                tracing::error!(task_id = %task_id, error = %e, stderr = "", "compilation failed");
            }
            _ => {}
        }
        res
    }
}

#[tonic::async_trait]
impl BuildService for CoordinatorServer {
    async fn compile(
        &self,
        req: Request<proto::CompileRequest>,
    ) -> Result<Response<proto::CompileResponse>, Status> {
        let received = prost::Message::encoded_len(req.get_ref());
        let task =
            convert::task_from_proto(req.into_inner(), &self.limits).map_err(|e| to_status(&e))?;
        if let Some(check) = &self.check {
            check(&task).map_err(|e| to_status(&e))?;
        }
        let out = CoordinatorServer::compile(self, task)
            .await
            .map_err(|e| to_status(&e))?;
        let resp = convert::output_to_proto(&out);
        let sent = prost::Message::encoded_len(&resp);
        crate::metrics::count_bytes(received, sent);
        Ok(crate::compile_response(resp, sent))
    }

    async fn health_check(
        &self,
        _req: Request<proto::HealthCheckRequest>,
    ) -> Result<Response<proto::HealthCheckResponse>, Status> {
        Ok(Response::new(proto::HealthCheckResponse {
            healthy: true,
            version: crate::VERSION.to_owned(),
            uptime_seconds: self.state.started.elapsed().as_secs(),
        }))
    }

    async fn get_stats(
        &self,
        _req: Request<proto::StatsRequest>,
    ) -> Result<Response<proto::StatsResponse>, Status> {
        Ok(Response::new(self.state.stats()))
    }

    async fn get_worker_status(
        &self,
        _req: Request<proto::WorkerStatusRequest>,
    ) -> Result<Response<proto::WorkerStatusResponse>, Status> {
        Ok(Response::new(proto::WorkerStatusResponse {
            workers: self.state.worker_status(),
        }))
    }
}

/// Replaces an unspecified host (`0.0.0.0:P`, `[::]:P`, `:P`) with the
/// peer's IP address.
pub fn resolve_advertised(address: &str, peer: Option<std::net::SocketAddr>) -> String {
    let (host, port) = match addr::parse_host_port(address) {
        Ok(hp) => hp,
        Err(_) => match address
            .strip_prefix(':')
            .and_then(|p| p.parse::<u16>().ok())
        {
            Some(p) => (String::new(), p),
            None => return address.to_owned(),
        },
    };
    let unspecified = host.is_empty() || host == "0.0.0.0" || host == "::";
    match (unspecified, peer) {
        (true, Some(p)) => std::net::SocketAddr::new(p.ip(), port).to_string(),
        _ => address.to_owned(),
    }
}

#[tonic::async_trait]
impl RegistryService for CoordinatorServer {
    async fn register(
        &self,
        req: Request<proto::RegisterRequest>,
    ) -> Result<Response<proto::RegisterResponse>, Status> {
        let peer = req.remote_addr();
        let w = req
            .into_inner()
            .worker
            .ok_or_else(|| Status::invalid_argument("worker missing"))?;
        let mut info = convert::worker_from_proto(w).map_err(|e| to_status(&e))?;
        info.address = resolve_advertised(&info.address, peer);
        info.source = WorkerSource::Handshake;
        let address = info.address.clone();
        self.state.pool.register(info).map_err(|e| to_status(&e))?;
        Ok(Response::new(proto::RegisterResponse {
            accepted: true,
            message: String::new(),
            heartbeat_interval_ms: self.state.heartbeat_interval.as_millis() as u64,
            address,
        }))
    }

    async fn heartbeat(
        &self,
        req: Request<proto::HeartbeatRequest>,
    ) -> Result<Response<proto::HeartbeatResponse>, Status> {
        let r = req.into_inner();
        let known = self.state.pool.heartbeat(&WorkerId(r.worker_id));
        Ok(Response::new(proto::HeartbeatResponse { known }))
    }

    async fn deregister(
        &self,
        req: Request<proto::DeregisterRequest>,
    ) -> Result<Response<proto::DeregisterResponse>, Status> {
        let r = req.into_inner();
        let reason = if r.reason.is_empty() {
            "deregistered".to_owned()
        } else {
            format!("deregistered: {}", r.reason)
        };
        self.state.pool.remove(&WorkerId(r.worker_id), &reason);
        Ok(Response::new(proto::DeregisterResponse {}))
    }
}

#[cfg(test)]
mod tests;
