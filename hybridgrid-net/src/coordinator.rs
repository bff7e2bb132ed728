//! The coordinator's gRPC services: `BuildService` for clients and
//! `RegistryService` for workers, over a [`WorkerPool`].

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

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

/// Task counters of the coordinator, for `/api/stats` and status.
#[derive(Debug, Default)]
pub struct TaskCounters {
    /// Tasks being compiled now.
    pub active: AtomicU64,
    /// Tasks waiting for admission.
    pub queued: AtomicU64,
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

/// One worker in the pool.
#[derive(Debug)]
pub struct PoolEntry {
    /// What it is.
    pub info: WorkerInfo,
    client: WorkerClient,
    /// Tasks running on it now.
    pub active: AtomicU32,
    /// Tasks it finished.
    pub completed: AtomicU64,
    /// Tasks that failed on it for reasons of the worker.
    pub failed: AtomicU64,
    last_seen: Mutex<tokio::time::Instant>,
    latency_ewma_us: AtomicU64,
}

impl PoolEntry {
    /// Average latency of its tasks (EWMA), in milliseconds.
    pub fn avg_latency_ms(&self) -> f64 {
        self.latency_ewma_us.load(Ordering::Relaxed) as f64 / 1000.0
    }

    fn record_latency(&self, d: Duration) {
        let new = d.as_micros() as u64;
        let old = self.latency_ewma_us.load(Ordering::Relaxed);
        let v = if old == 0 {
            new
        } else {
            (old * 7 + new * 3) / 10
        };
        self.latency_ewma_us.store(v, Ordering::Relaxed);
    }
}

/// The workers the coordinator knows, with their clients and load.
#[derive(Debug)]
pub struct WorkerPool {
    workers: RwLock<HashMap<WorkerId, Arc<PoolEntry>>>,
    channel: ChannelOptions,
    heartbeat_ttl: Duration,
}

impl WorkerPool {
    /// An empty pool whose workers expire after `heartbeat_ttl` without a
    /// heartbeat.
    pub fn new(heartbeat_ttl: Duration, channel: ChannelOptions) -> Self {
        WorkerPool {
            workers: RwLock::new(HashMap::new()),
            channel,
            heartbeat_ttl,
        }
    }

    /// Adds or updates a worker. A worker known under the same id or the
    /// same address is replaced, never duplicated.
    pub fn register(&self, info: WorkerInfo) -> Result<(), GridError> {
        addr::parse_host_port(&info.address).map_err(|e| GridError::InvalidTask(e.to_string()))?;
        let client = WorkerClient::new(info.id.clone(), &info.address, &self.channel)?;
        let entry = Arc::new(PoolEntry {
            client,
            active: AtomicU32::new(0),
            completed: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            last_seen: Mutex::new(tokio::time::Instant::now()),
            latency_ewma_us: AtomicU64::new(0),
            info,
        });
        let mut map = self
            .workers
            .write()
            .map_err(|_| GridError::Internal("pool lock".into()))?;
        map.retain(|id, e| id == &entry.info.id || e.info.address != entry.info.address);
        tracing::info!(
            worker_id = %entry.info.id,
            arch = %entry.info.capabilities.arch.as_ref().map(|a| a.to_string()).unwrap_or_default(),
            source = %entry.info.source,
            address = %entry.info.address,
            "worker registered"
        );
        map.insert(entry.info.id.clone(), entry);
        metrics::gauge!("hybridgrid_workers", "state" => "healthy").set(map.len() as f64);
        Ok(())
    }

    /// Records a heartbeat; false if the worker is unknown.
    pub fn heartbeat(&self, id: &WorkerId) -> bool {
        let map = match self.workers.read() {
            Ok(m) => m,
            Err(_) => return false,
        };
        match map.get(id) {
            Some(e) => {
                if let Ok(mut t) = e.last_seen.lock() {
                    *t = tokio::time::Instant::now();
                }
                true
            }
            None => false,
        }
    }

    /// Removes a worker, logging why.
    pub fn remove(&self, id: &WorkerId, reason: &str) -> bool {
        let Ok(mut map) = self.workers.write() else {
            return false;
        };
        let removed = map.remove(id).is_some();
        if removed {
            tracing::info!(worker_id = %id, reason = %reason, "worker left");
            metrics::gauge!("hybridgrid_workers", "state" => "healthy").set(map.len() as f64);
        }
        removed
    }

    /// Removes workers whose last heartbeat is older than the TTL.
    pub fn expire(&self) -> Vec<WorkerId> {
        let now = tokio::time::Instant::now();
        let stale: Vec<WorkerId> = match self.workers.read() {
            Ok(map) => map
                .values()
                .filter(|e| {
                    e.info.source == WorkerSource::Handshake
                        && e.last_seen
                            .lock()
                            .map(|t| now.duration_since(*t) > self.heartbeat_ttl)
                            .unwrap_or(false)
                })
                .map(|e| e.info.id.clone())
                .collect(),
            Err(_) => Vec::new(),
        };
        for id in &stale {
            self.remove(id, "heartbeat expired");
        }
        stale
    }

    /// Every worker.
    pub fn entries(&self) -> Vec<Arc<PoolEntry>> {
        let mut v: Vec<Arc<PoolEntry>> = self
            .workers
            .read()
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default();
        v.sort_by(|a, b| a.info.id.cmp(&b.info.id));
        v
    }

    /// The capable worker with the lowest load, skipping `exclude`.
    pub fn pick(
        &self,
        task: &CompileTask,
        exclude: &[WorkerId],
    ) -> Result<Arc<PoolEntry>, GridError> {
        let map = self
            .workers
            .read()
            .map_err(|_| GridError::Internal("pool lock".into()))?;
        if map.is_empty() {
            return Err(GridError::NoWorker(
                "no workers are registered with the coordinator".into(),
            ));
        }
        let best = map
            .values()
            .filter(|e| {
                e.info.capabilities.can_compile(&task.compiler)
                    && e.info.capabilities.can_target(&task.target_arch)
                    && !exclude.contains(&e.info.id)
            })
            .min_by(|a, b| {
                let la = a.active.load(Ordering::Relaxed) as f64
                    / a.info.capabilities.max_parallel_tasks.max(1) as f64;
                let lb = b.active.load(Ordering::Relaxed) as f64
                    / b.info.capabilities.max_parallel_tasks.max(1) as f64;
                la.total_cmp(&lb).then_with(|| {
                    a.completed
                        .load(Ordering::Relaxed)
                        .cmp(&b.completed.load(Ordering::Relaxed))
                })
            });
        best.cloned().ok_or_else(|| {
            if exclude.is_empty() {
                GridError::NoWorker(format!(
                    "none of the {} registered workers has {} for {}",
                    map.len(),
                    task.compiler,
                    task.target_arch
                ))
            } else {
                GridError::NoWorker(format!(
                    "every worker with {} failed this task",
                    task.compiler
                ))
            }
        })
    }
}

/// Dispatches tasks to the pool's workers, retrying retryable failures on
/// another worker.
#[derive(Clone, Debug)]
pub struct PoolService {
    pool: Arc<WorkerPool>,
    max_retries: u32,
}

impl PoolService {
    /// A dispatcher over `pool` with up to `max_retries` retries.
    pub fn new(pool: Arc<WorkerPool>, max_retries: u32) -> Self {
        PoolService { pool, max_retries }
    }

    async fn dispatch(self, task: CompileTask) -> Result<CompileOutput, GridError> {
        let mut tried: Vec<WorkerId> = Vec::new();
        let mut last: Option<GridError> = None;
        for attempt in 0..=self.max_retries {
            let entry = match self.pool.pick(&task, &tried) {
                Ok(e) => e,
                Err(e) => return Err(last.unwrap_or(e)),
            };
            if attempt > 0 {
                metrics::counter!("hybridgrid_retries_total").increment(1);
            }
            tried.push(entry.info.id.clone());
            tracing::info!(task_id = %task.id, worker = %entry.info.id, compiler = %task.compiler, "task started");
            entry.active.fetch_add(1, Ordering::SeqCst);
            let start = Instant::now();
            let mut client = entry.client.clone();
            let res = client.compile(&task).await;
            entry.active.fetch_sub(1, Ordering::SeqCst);
            let elapsed = start.elapsed();
            match res {
                Ok(out) => {
                    entry.completed.fetch_add(1, Ordering::Relaxed);
                    entry.record_latency(elapsed);
                    return Ok(out);
                }
                Err(e) => {
                    if e.is_worker_fault() {
                        entry.failed.fetch_add(1, Ordering::Relaxed);
                    }
                    if let GridError::WorkerUnavailable { reason, .. } = &e {
                        tracing::error!(worker = %entry.info.id, error = %reason, "worker unreachable");
                    }
                    if !e.is_retryable() {
                        return Err(e);
                    }
                    last = Some(e);
                }
            }
        }
        Err(last.unwrap_or_else(|| GridError::Internal("no attempt made".into())))
    }
}

impl tower::Service<CompileTask> for PoolService {
    type Response = CompileOutput;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<CompileOutput, BoxError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, task: CompileTask) -> Self::Future {
        let this = self.clone();
        Box::pin(async move { this.dispatch(task).await.map_err(BoxError::from) })
    }
}

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
}

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
        })
    }

    /// The counters as a stats message.
    pub fn stats(&self) -> proto::StatsResponse {
        let t = &self.tasks;
        let workers = self.pool.entries().len() as u32;
        proto::StatsResponse {
            workers_total: workers,
            workers_healthy: workers,
            tasks_active: t.active.load(Ordering::Relaxed),
            tasks_queued: t.queued.load(Ordering::Relaxed),
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
                circuit_state: "closed".into(),
                active_tasks: e.active.load(Ordering::Relaxed),
                completed_tasks: e.completed.load(Ordering::Relaxed),
                failed_tasks: e.failed.load(Ordering::Relaxed),
                avg_latency_ms: e.avg_latency_ms(),
                healthy: true,
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
        }
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
            Err(_) => ("error", false),
        };
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
        tracing::info!(task_id = %task_id, duration = ?duration, success, "task completed");
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
        let out = CoordinatorServer::compile(self, task)
            .await
            .map_err(|e| to_status(&e))?;
        let resp = convert::output_to_proto(&out);
        crate::obs::count_bytes(received, prost::Message::encoded_len(&resp));
        Ok(Response::new(resp))
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
}
