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
use crate::proto;
use crate::proto::build_service_server::BuildService;
use crate::proto::registry_service_server::RegistryService;
use crate::status::to_status;

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

/// The workers the coordinator knows: a façade over the core
/// [`Registry`] that the network layer (registration RPCs, discovery,
/// status pages) uses, plus each worker's circuit.
pub struct WorkerPool {
    registry: Registry,
    circuits: Arc<Mutex<HashMap<WorkerId, CircuitHandle>>>,
    channel: ChannelOptions,
    connector: Option<Connector>,
    heartbeat_ttl: Duration,
}

impl std::fmt::Debug for WorkerPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerPool")
            .field("workers", &self.registry.len())
            .field("heartbeat_ttl", &self.heartbeat_ttl)
            .finish_non_exhaustive()
    }
}

impl WorkerPool {
    /// An empty pool whose handshake workers expire after `heartbeat_ttl`
    /// without a heartbeat; `channel` is how workers are dialled.
    pub fn new(heartbeat_ttl: Duration, channel: ChannelOptions) -> Self {
        WorkerPool {
            registry: Registry::new(),
            circuits: Arc::new(Mutex::new(HashMap::new())),
            channel,
            connector: None,
            heartbeat_ttl,
        }
    }

    /// Calls workers through `connector` instead of dialling them with
    /// gRPC (an in-process benchmark's no-op workers, for instance).
    pub fn with_connector(mut self, connector: Connector) -> Self {
        self.connector = Some(connector);
        self
    }

    /// How workers are dialled (timeouts, TLS, token).
    pub fn channel_options(&self) -> ChannelOptions {
        self.channel.clone()
    }

    /// The registry behind the pool (the scheduler subscribes to it).
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Adds or updates a worker. A worker known under the same id or the
    /// same address is replaced, never duplicated.
    pub fn register(&self, info: WorkerInfo) -> Result<(), GridError> {
        addr::parse_host_port(&info.address).map_err(|e| GridError::InvalidTask(e.to_string()))?;
        self.registry.register(info);
        self.update_gauge();
        Ok(())
    }

    /// Records a heartbeat; false if the worker is unknown.
    pub fn heartbeat(&self, id: &WorkerId) -> bool {
        self.registry.heartbeat(id)
    }

    /// Removes a worker, logging why.
    pub fn remove(&self, id: &WorkerId, reason: &str) -> bool {
        let removed = self.registry.remove(id, reason).is_some();
        if removed {
            if let Ok(mut c) = self.circuits.lock() {
                c.remove(id);
            }
            self.update_gauge();
        }
        removed
    }

    /// Removes handshake workers whose last heartbeat is older than the
    /// TTL. Static and mDNS workers are kept alive by their discovery
    /// sources, which remove them when they stop answering.
    pub fn expire(&self) -> Vec<WorkerId> {
        for snap in self.registry.snapshot() {
            if !snap.sources.contains(&WorkerSource::Handshake) {
                self.registry.heartbeat(&snap.worker.info.id);
            }
        }
        let gone: Vec<WorkerId> = self
            .registry
            .expire(self.heartbeat_ttl)
            .into_iter()
            .map(|w| w.id)
            .collect();
        if !gone.is_empty() {
            if let Ok(mut c) = self.circuits.lock() {
                for id in &gone {
                    c.remove(id);
                }
            }
            self.update_gauge();
        }
        gone
    }

    /// Every worker, sorted by id.
    pub fn entries(&self) -> Vec<PoolEntry> {
        let circuits = self.circuits.lock().map(|c| c.clone()).unwrap_or_default();
        let mut v: Vec<PoolEntry> = self
            .registry
            .snapshot()
            .into_iter()
            .map(|s| PoolEntry {
                circuit: circuits.get(&s.worker.info.id).map(CircuitHandle::state),
                info: s.worker.info,
                stats: s.worker.stats,
            })
            .collect();
        v.sort_by(|a, b| a.info.id.cmp(&b.info.id));
        v
    }

    fn update_gauge(&self) {
        metrics::gauge!("hybridgrid_workers", "state" => "healthy").set(self.registry.len() as f64);
    }

    /// The per-worker service the scheduler calls: a gRPC client guarded by
    /// the worker's circuit breaker (remembered for status pages).
    pub fn endpoint(
        &self,
        w: RegisteredWorker,
        breaker: &CircuitBreakerConfig,
    ) -> Endpoint<BoxCompile> {
        let id = w.info.id.clone();
        let client = match &self.connector {
            Some(connect) => connect(&w.info),
            None => WorkerClient::new(id.clone(), &w.info.address, &self.channel)
                .map(BoxCloneSyncService::new),
        };
        let client: BoxCompile = match client {
            Ok(c) => c,
            Err(e) => BoxCloneSyncService::new(tower::service_fn(move |_t: CompileTask| {
                let e = e.clone();
                async move { Err::<CompileOutput, BoxError>(e.into()) }
            })),
        };
        let ep = Endpoint::with_breaker(w, client, breaker.clone());
        if let (Some(c), Ok(mut map)) = (&ep.circuit, self.circuits.lock()) {
            map.insert(id, c.clone());
        }
        Endpoint {
            worker: ep.worker,
            circuit: ep.circuit,
            service: BoxCloneSyncService::new(ep.service),
        }
    }
}

/// Composes the coordinator's compile stack over the workers of `state`,
/// as DESIGN.md orders it: admission -> (cache, added by the caller
/// inside) -> retry on another worker -> hedging -> scheduler (capability
/// filter, algorithm, open circuits skipped) -> per-worker circuit breaker
/// -> gRPC client. `cache` wraps the retry stack (e.g. a `CacheLayer`);
/// pass `|s| s` for none. The tasks the stack keeps waiting (for admission,
/// or held by the cost-aware scheduler for a free slot) are what `state`
/// reports as queued.
pub fn compose_stack(
    state: &CoordinatorState,
    cfg: &hybridgrid_core::config::Config,
    cache: impl FnOnce(BoxCompile) -> BoxCompile,
) -> BoxCompile {
    let breaker = cfg.resilience.circuit_breaker.clone();
    let p = state.pool.clone();
    let endpoints = Endpoints::new(
        state.pool.registry().subscribe(),
        move |w: RegisteredWorker| p.endpoint(w, &breaker),
    );
    let scheduler = Scheduler::new(endpoints, &cfg.scheduler);
    let held = scheduler.clone();
    let hedge = Hedge::new(scheduler.clone(), scheduler, cfg.scheduler.hedge.clone());
    let retry = BoxCloneSyncService::new(Retry::new(hedge, cfg.resilience.retry.clone()));
    let admission = Admission::from_config(cache(retry), &cfg.coordinator);
    let waiting = admission.counts();
    state
        .waiting
        .set(move || (waiting.queued() + held.held()) as u64);
    BoxCloneSyncService::new(admission)
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
        if let Err(GridError::MissingInputs(paths)) = &res {
            // Not a failure: the client sends the task again with the files
            // the worker lacked (a worker's store fills this way).
            metrics::counter!("hybridgrid_tasks_total", "outcome" => outcome).increment(1);
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
        metrics::counter!("hybridgrid_tasks_total", "outcome" => outcome).increment(1);
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
mod tests {
    use super::*;

    #[test]
    fn advertised_addresses() {
        let peer: std::net::SocketAddr = "10.1.2.3:4444".parse().unwrap();
        assert_eq!(
            resolve_advertised("0.0.0.0:50052", Some(peer)),
            "10.1.2.3:50052"
        );
        assert_eq!(resolve_advertised(":50052", Some(peer)), "10.1.2.3:50052");
        assert_eq!(resolve_advertised("w1:50052", Some(peer)), "w1:50052");
        assert_eq!(resolve_advertised("0.0.0.0:50052", None), "0.0.0.0:50052");
    }

    fn gcc() -> hybridgrid_core::task::CompilerIdentity {
        use hybridgrid_core::task::{CompilerFamily, CompilerIdentity, DriverKind};
        CompilerIdentity {
            family: CompilerFamily::Gcc,
            driver: DriverKind::C,
            version: "12.2.0".into(),
            target: "x86_64-linux-gnu".into(),
        }
    }

    /// A coordinator stack over one worker with `slots` whose compiles wait
    /// until `release` has permits.
    fn stack_over_a_stuck_worker(
        slots: u32,
        cfg: &hybridgrid_core::config::Config,
    ) -> (
        Arc<CoordinatorState>,
        BoxCompile,
        Arc<tokio::sync::Semaphore>,
    ) {
        use hybridgrid_core::worker::{Arch, Capabilities, CompilerInfo};
        let release = Arc::new(tokio::sync::Semaphore::new(0));
        let r = release.clone();
        let connector: Connector = Arc::new(move |_w: &WorkerInfo| {
            let r = r.clone();
            Ok(BoxCompile::new(tower::service_fn(
                move |_t: CompileTask| {
                    let r = r.clone();
                    async move {
                        let _permit = r.acquire().await;
                        Ok::<_, BoxError>(CompileOutput::default())
                    }
                },
            )))
        });
        let pool = Arc::new(
            WorkerPool::new(Duration::from_secs(3600), ChannelOptions::default())
                .with_connector(connector),
        );
        let mut caps = Capabilities::new(Arch::Amd64);
        caps.max_parallel_tasks = slots;
        caps.compilers.push(CompilerInfo {
            name: "gcc".into(),
            path: "/usr/bin/gcc".into(),
            identity: gcc(),
        });
        pool.registry().register(WorkerInfo::new(
            WorkerId::from("w1"),
            "127.0.0.1:1",
            WorkerSource::Handshake,
            caps,
        ));
        let state = CoordinatorState::new(pool, Duration::from_secs(3600));
        let stack = compose_stack(&state, cfg, |s| s);
        (state, stack, release)
    }

    async fn queued_becomes(state: &CoordinatorState, want: u64) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while state.stats().tasks_queued != want {
            assert!(
                Instant::now() < deadline,
                "tasks.queued is {}, expected {want}",
                state.stats().tasks_queued
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Three compiles on a stuck worker with `slots`: two are reported
    /// waiting, then none once the worker answers.
    async fn three_compiles_two_waiting(slots: u32, cfg: &hybridgrid_core::config::Config) {
        let (state, stack, release) = stack_over_a_stuck_worker(slots, cfg);
        assert_eq!(state.stats().tasks_queued, 0);
        let calls: Vec<_> = (0..3).map(|n| compile(&stack, n)).collect();
        queued_becomes(&state, 2).await;
        release.add_permits(3);
        for c in calls {
            assert!(c.await.unwrap());
        }
        queued_becomes(&state, 0).await;
    }

    fn compile(stack: &BoxCompile, n: usize) -> tokio::task::JoinHandle<bool> {
        let stack = stack.clone();
        let task = CompileTask::new(
            gcc(),
            hybridgrid_core::task::Language::PreprocessedC,
            vec![],
            format!("t{n}.c"),
            hybridgrid_core::payload::Payload::raw(vec![b' '; 100 + n]),
        );
        tokio::spawn(async move { stack.oneshot(task).await.is_ok() })
    }

    /// `tasks.queued` (`/api/stats`, the `hybridgrid_tasks_queued` gauge)
    /// counts the tasks waiting for admission.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn queued_counts_tasks_waiting_for_admission() {
        let mut cfg = hybridgrid_core::config::Config::default();
        cfg.coordinator.max_concurrent_tasks = 1;
        cfg.coordinator.max_queued_tasks = 10;
        three_compiles_two_waiting(4, &cfg).await;
    }

    /// ... and the tasks the cost-aware scheduler holds for a free slot.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn queued_counts_tasks_held_for_a_free_slot() {
        let mut cfg = hybridgrid_core::config::Config::default();
        cfg.scheduler.algorithm = hybridgrid_core::config::Algorithm::CostAware;
        three_compiles_two_waiting(1, &cfg).await;
    }
}
