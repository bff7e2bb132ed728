//! The worker's gRPC service and its registration with a coordinator.
//!
//! [`WorkerServer`] serves `WorkerService` over any executor (a
//! `BoxCloneSyncService<CompileTask, CompileOutput, BoxError>`), with at most
//! `max_concurrent_tasks` compiles at once; [`run_registration`] keeps the
//! worker registered with a coordinator (handshake, heartbeats, registering
//! again after a coordinator restart, deregistering on shutdown).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hybridgrid_core::can_run::CanRun;
use hybridgrid_core::task::{CompileOutput, CompileTask};
use hybridgrid_core::worker::WorkerInfo;
use hybridgrid_core::{BoxError, GridError};
use tokio::sync::{Semaphore, watch};
use tonic::{Request, Response, Status};
use tower::ServiceExt;
use tower::util::BoxCloneSyncService;

use crate::client::{ChannelOptions, CoordinatorClient};
use crate::convert::{self, RequestLimits};
use crate::metrics::M_WORKER_TASKS;
use crate::proto;
use crate::proto::worker_service_server::WorkerService;
use crate::status::to_status;

/// A boxed executor as the worker server takes it.
pub type BoxExecutor = BoxCloneSyncService<CompileTask, CompileOutput, BoxError>;

/// Counters of a worker, shared with its HTTP endpoints and heartbeats.
#[derive(Debug, Default)]
pub struct WorkerCounters {
    /// Compiles running now.
    pub active: AtomicU32,
    /// Compiles waiting for a slot.
    pub queued: AtomicU32,
    /// Compiles finished (any exit code).
    pub completed: AtomicU64,
    /// Tasks that failed for a reason other than the user's code.
    pub failed: AtomicU64,
}

struct State {
    info: WorkerInfo,
    executor: BoxExecutor,
    slots: Arc<Semaphore>,
    counters: Arc<WorkerCounters>,
    draining: AtomicBool,
    started: Instant,
    limits: RequestLimits,
    check: Option<convert::TaskCheck>,
    can_run: Arc<dyn CanRun>,
}

/// Serves `hybridgrid.v1.WorkerService`.
#[derive(Clone)]
pub struct WorkerServer {
    state: Arc<State>,
}

impl std::fmt::Debug for WorkerServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerServer")
            .field("id", &self.state.info.id)
            .finish()
    }
}

impl WorkerServer {
    /// A worker service running `executor` at most `max_concurrent` at once.
    /// Until [`WorkerServer::with_executor_check`] is given, a task is
    /// admitted when `info`'s capabilities have its compiler (or a Docker
    /// image for its target).
    pub fn new(info: WorkerInfo, executor: BoxExecutor, max_concurrent: usize) -> Self {
        WorkerServer {
            state: Arc::new(State {
                can_run: Arc::new(info.capabilities.clone()),
                info,
                executor,
                slots: Arc::new(Semaphore::new(max_concurrent.max(1))),
                counters: Arc::new(WorkerCounters::default()),
                draining: AtomicBool::new(false),
                started: Instant::now(),
                limits: RequestLimits::default(),
                check: None,
            }),
        }
    }

    /// The same with other request limits and a check every task must
    /// pass before it is queued (e.g. the argument allow list). Call
    /// before serving.
    pub fn with_validation(self, limits: RequestLimits, check: Option<convert::TaskCheck>) -> Self {
        self.rebuild(|st| {
            st.limits = limits;
            st.check = check;
        })
    }

    /// A new state from this one's, changed by `change`.
    fn rebuild(self, change: impl FnOnce(&mut State)) -> Self {
        let st = &self.state;
        let mut next = State {
            info: st.info.clone(),
            executor: st.executor.clone(),
            slots: st.slots.clone(),
            counters: st.counters.clone(),
            draining: AtomicBool::new(st.draining.load(Ordering::SeqCst)),
            started: st.started,
            limits: st.limits,
            check: st.check.clone(),
            can_run: st.can_run.clone(),
        };
        change(&mut next);
        WorkerServer {
            state: Arc::new(next),
        }
    }

    /// Refuses a task this worker cannot or will not run, before it waits
    /// for a slot: what the executor says it cannot run (see
    /// [`WorkerServer::with_executor_check`]), or whatever the configured
    /// check refuses.
    pub fn admit(&self, task: &CompileTask) -> Result<(), GridError> {
        self.state.can_run.can_run(task)?;
        match &self.state.check {
            Some(check) => check(task),
            None => Ok(()),
        }
    }

    /// The same, asking `can_run` (the executor's own answer, e.g.
    /// `hybridgrid_exec::worker_stack::WorkerExecutor::can_run`) whether a
    /// task would run, instead of the advertised capabilities. Call before
    /// serving.
    pub fn with_executor_check(self, can_run: Arc<dyn CanRun>) -> Self {
        self.rebuild(|st| st.can_run = can_run)
    }

    /// The worker's description.
    pub fn info(&self) -> &WorkerInfo {
        &self.state.info
    }

    /// How long it has been serving.
    pub fn uptime(&self) -> Duration {
        self.state.started.elapsed()
    }

    /// Its counters.
    pub fn counters(&self) -> Arc<WorkerCounters> {
        self.state.counters.clone()
    }

    /// Stops accepting new compiles (graceful shutdown); running ones finish.
    pub fn drain(&self) {
        self.state.draining.store(true, Ordering::SeqCst);
    }

    /// Waits until no compile is running, or `grace` has passed.
    pub async fn wait_idle(&self, grace: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + grace;
        loop {
            if self.state.counters.active.load(Ordering::SeqCst) == 0
                && self.state.counters.queued.load(Ordering::SeqCst) == 0
            {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The tonic service to add to a server.
    pub fn into_service(self) -> proto::worker_service_server::WorkerServiceServer<Self> {
        let max = self.state.limits.max_request_bytes;
        proto::worker_service_server::WorkerServiceServer::new(self)
            .max_decoding_message_size(max)
            .max_encoding_message_size(crate::MAX_MESSAGE_BYTES)
            .send_compressed(tonic::codec::CompressionEncoding::Zstd)
            .accept_compressed(tonic::codec::CompressionEncoding::Zstd)
    }

    /// Runs one task through the concurrency limit and the executor.
    pub async fn compile(&self, task: CompileTask) -> Result<CompileOutput, GridError> {
        let st = &self.state;
        if st.draining.load(Ordering::SeqCst) {
            return Err(GridError::WorkerUnavailable {
                worker: st.info.id.0.clone(),
                reason: "worker is shutting down".into(),
            });
        }
        let queued_at = Instant::now();
        st.counters.queued.fetch_add(1, Ordering::SeqCst);
        let permit = st.slots.clone().acquire_owned().await;
        st.counters.queued.fetch_sub(1, Ordering::SeqCst);
        let _permit = permit.map_err(|_| GridError::Internal("worker closed".into()))?;
        let queue = queued_at.elapsed();
        st.counters.active.fetch_add(1, Ordering::SeqCst);
        let task_id = task.id.clone();
        tracing::debug!(task_id = %task_id, compiler = %task.compiler, "compile started");
        let result = st.executor.clone().oneshot(task).await;
        st.counters.active.fetch_sub(1, Ordering::SeqCst);
        match result {
            Ok(mut out) => {
                st.counters.completed.fetch_add(1, Ordering::Relaxed);
                out.worker_id = Some(st.info.id.clone());
                out.timings.queue += queue;
                metrics::counter!(M_WORKER_TASKS, "result" => if out.success() { "success" } else { "compile_error" }).increment(1);
                metrics::histogram!("hybridgrid_worker_compile_duration_seconds")
                    .record(out.timings.compile.as_secs_f64());
                Ok(out)
            }
            Err(e) => {
                let g = GridError::find(e.as_ref())
                    .cloned()
                    .unwrap_or_else(|| GridError::Internal(e.to_string()));
                if let GridError::MissingInputs(paths) = &g {
                    // Not a failure: the client sends them.
                    metrics::counter!(M_WORKER_TASKS, "result" => "missing_inputs").increment(1);
                    tracing::debug!(task_id = %task_id, files = paths.len(), "files sent by digest are not here; asked for");
                    return Err(g);
                }
                st.counters.failed.fetch_add(1, Ordering::Relaxed);
                metrics::counter!(M_WORKER_TASKS, "result" => "error").increment(1);
                tracing::warn!(task_id = %task_id, error = %g, "task failed on worker");
                Err(g)
            }
        }
    }
}

#[tonic::async_trait]
impl WorkerService for WorkerServer {
    async fn compile(
        &self,
        req: Request<proto::CompileRequest>,
    ) -> Result<Response<proto::CompileResponse>, Status> {
        let received = prost::Message::encoded_len(req.get_ref());
        let task = convert::task_from_proto(req.into_inner(), &self.state.limits)
            .map_err(|e| to_status(&e))?;
        self.admit(&task).map_err(|e| to_status(&e))?;
        let out = WorkerServer::compile(self, task)
            .await
            .map_err(|e| to_status(&e))?;
        let resp = convert::output_to_proto(&out);
        let sent = prost::Message::encoded_len(&resp);
        crate::metrics::count_bytes(received, sent);
        Ok(crate::compile_response(resp, sent))
    }

    async fn get_capabilities(
        &self,
        _req: Request<proto::CapabilitiesRequest>,
    ) -> Result<Response<proto::WorkerInfo>, Status> {
        Ok(Response::new(convert::worker_to_proto(&self.state.info)))
    }

    async fn health_check(
        &self,
        _req: Request<proto::HealthCheckRequest>,
    ) -> Result<Response<proto::HealthCheckResponse>, Status> {
        Ok(Response::new(proto::HealthCheckResponse {
            healthy: !self.state.draining.load(Ordering::SeqCst),
            version: crate::VERSION.to_owned(),
            uptime_seconds: self.state.started.elapsed().as_secs(),
        }))
    }
}

/// Keeps `info` registered with the coordinator at `coordinator` until
/// `shutdown` turns true, then deregisters. Failures are logged and retried
/// with backoff; a heartbeat the coordinator does not recognise (it
/// restarted) leads to a new registration. Calls carry the TLS and token
/// of `channel` (its timeouts are replaced by 3 s to connect, 10 s a call).
pub async fn run_registration(
    coordinator: String,
    info: WorkerInfo,
    counters: Arc<WorkerCounters>,
    heartbeat_interval: Duration,
    channel: ChannelOptions,
    mut shutdown: watch::Receiver<bool>,
) {
    let opts = ChannelOptions::new(Duration::from_secs(3), Duration::from_secs(10))
        .with_tls(channel.tls)
        .with_token(channel.token);
    let mut backoff = Duration::from_millis(200);
    let mut registered = false;
    let mut warned = false;
    let client = match CoordinatorClient::lazy(&coordinator, &opts) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(coordinator = %coordinator, error = %e, "invalid coordinator address");
            return;
        }
    };
    loop {
        if *shutdown.borrow() {
            break;
        }
        let mut c = client.clone();
        let wait = if !registered {
            match c.register(&info).await {
                Ok(r) if r.accepted => {
                    registered = true;
                    warned = false;
                    backoff = Duration::from_millis(200);
                    tracing::info!(coordinator = %coordinator, worker_id = %info.id, address = %r.address, "registered with coordinator");
                    heartbeat_interval
                }
                Ok(r) => {
                    tracing::warn!(coordinator = %coordinator, message = %r.message, "coordinator refused registration");
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                    backoff
                }
                Err(e) => {
                    if !warned {
                        tracing::warn!(coordinator = %coordinator, error = %e, "cannot register with coordinator; retrying");
                        warned = true;
                    } else {
                        tracing::debug!(coordinator = %coordinator, error = %e, "registration failed");
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    backoff
                }
            }
        } else {
            let req = proto::HeartbeatRequest {
                worker_id: info.id.0.clone(),
                active_tasks: counters.active.load(Ordering::Relaxed),
                completed_tasks: counters.completed.load(Ordering::Relaxed),
            };
            match c.heartbeat(req).await {
                Ok(true) => heartbeat_interval,
                Ok(false) => {
                    tracing::info!(coordinator = %coordinator, "coordinator does not know this worker; registering again");
                    registered = false;
                    Duration::ZERO
                }
                Err(e) => {
                    tracing::warn!(coordinator = %coordinator, error = %e, "heartbeat failed; registering again");
                    registered = false;
                    Duration::from_millis(200)
                }
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.changed() => {}
        }
    }
    if registered {
        let mut c = client.clone();
        match tokio::time::timeout(Duration::from_secs(3), c.deregister(&info.id.0, "shutdown"))
            .await
        {
            Ok(Ok(())) => {
                tracing::info!(coordinator = %coordinator, "deregistered from coordinator")
            }
            Ok(Err(e)) => tracing::warn!(error = %e, "deregistration failed"),
            Err(_) => tracing::warn!("deregistration timed out"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hybridgrid_core::payload::Payload;
    use hybridgrid_core::task::{CompilerFamily, CompilerIdentity, DriverKind, Language};
    use hybridgrid_core::worker::{Arch, Capabilities, WorkerId, WorkerSource};

    struct Yes;

    impl CanRun for Yes {
        fn can_run(&self, _task: &CompileTask) -> Result<(), GridError> {
            Ok(())
        }
    }

    #[test]
    fn admission_asks_the_executor_once_it_is_given() {
        let exec = BoxExecutor::new(tower::service_fn(|_t: CompileTask| async {
            Ok::<_, BoxError>(CompileOutput::default())
        }));
        // It advertised no compiler.
        let info = WorkerInfo::new(
            WorkerId("w".into()),
            "127.0.0.1:0",
            WorkerSource::Static,
            Capabilities::new(Arch::Amd64),
        );
        let task = CompileTask::new(
            CompilerIdentity {
                family: CompilerFamily::Gcc,
                driver: DriverKind::C,
                version: "12.2.0".into(),
                target: "x86_64-linux-gnu".into(),
            },
            Language::PreprocessedC,
            vec![],
            "x.c",
            Payload::raw(b"int x;".to_vec()),
        );
        let server = WorkerServer::new(info, exec, 1);
        let e = server.admit(&task).expect_err("nothing advertised");
        assert!(
            e.to_string().contains("not one this worker detected"),
            "{e}"
        );
        let server = server.with_executor_check(Arc::new(Yes));
        assert!(server.admit(&task).is_ok());
    }
}
