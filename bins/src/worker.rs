//! Starting a worker: detect compilers, build the executor stack
//! (`hybridgrid_exec::worker_stack`), and serve it with the servers of
//! `hybridgrid_net::run`.

use std::time::Duration;

use hybridgrid_core::config::Config;
use hybridgrid_core::logging::LogHandle;
use hybridgrid_core::worker::WorkerId;
use hybridgrid_exec::detect::{self, DetectOptions};
use hybridgrid_exec::worker_stack::{self as executor, WorkerExecutor};
use hybridgrid_net::convert::{RequestLimits, TaskCheck};
use hybridgrid_net::http::admin::AdminHooks;
use hybridgrid_net::run;
use hybridgrid_net::server::ServeError;
use hybridgrid_net::worker::WorkerServer;

/// A worker started with [`start`]: its servers (fields of
/// [`run::RunningWorker`], reached through it), its id and its executor.
#[derive(Debug)]
pub struct RunningWorker {
    /// Its id.
    pub id: WorkerId,
    running: run::RunningWorker,
    executor: WorkerExecutor,
}

impl std::ops::Deref for RunningWorker {
    type Target = run::RunningWorker;
    fn deref(&self) -> &Self::Target {
        &self.running
    }
}

impl RunningWorker {
    /// Stops taking new compiles, lets running ones finish within `grace`,
    /// deregisters and stops the servers.
    pub async fn shutdown(self, grace: Duration) {
        self.running.stop(grace).await;
        // Docker containers go last: no compile uses them any more.
        self.executor.shutdown().await;
    }
}

/// Detects this machine's capabilities and starts the worker.
pub async fn start(cfg: &Config) -> Result<RunningWorker, ServeError> {
    start_with(cfg, crate::heap::admin_hooks(LogHandle::detached())).await
}

/// [`start`] with the admin endpoints acting on `admin` (the process's log
/// handle, the heap profiler).
pub async fn start_with(cfg: &Config, admin: AdminHooks) -> Result<RunningWorker, ServeError> {
    let w = &cfg.worker;
    let bound = run::bind(cfg, &w.bind_address, w.grpc_port, w.http_port).await?;
    let compilers = detect::detect_compilers(&DetectOptions::default()).await;
    if compilers.is_empty() {
        tracing::warn!("no compiler found on PATH: this worker can compile nothing");
    }
    let id = run::worker_id(cfg, &bound);
    let executor = executor::build(w, &id, compilers)
        .await
        .map_err(|e| ServeError::Setup(e.to_string()))?;
    let caps = executor.capabilities(w.max_concurrent_tasks);
    let info = run::worker_info(cfg, &bound, &id, caps);
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
    let running = run::worker(cfg, admin, bound, server, info);
    Ok(RunningWorker {
        id: WorkerId(id),
        running,
        executor,
    })
}
