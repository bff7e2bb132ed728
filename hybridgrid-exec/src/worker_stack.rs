//! A worker's executor stack, built from its configuration: native
//! compiles, plus Docker images for the architectures in
//! `worker.docker.images` (cargo feature `docker`).
//!
//! At start the worker probes the Docker daemon (a short timeout), starts a
//! long-lived container for each configured image that is present, and
//! advertises the images and the compilers found in them. Tasks whose
//! compiler the native executor lacks and whose target architecture is
//! configured for Docker go to the Docker executor; without a usable daemon
//! they get `Docker not available: <reason>`.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use hybridgrid_core::BoxError;
use hybridgrid_core::can_run::CanRun;
use hybridgrid_core::config::WorkerConfig;
use hybridgrid_core::task::{CompileOutput, CompileTask};
use hybridgrid_core::worker::{Arch, Capabilities, CompilerInfo, DockerImage};
use tower::util::BoxCloneSyncService;

use crate::input_store::InputStore;
use crate::native::{NativeExecutor, NativeOptions};
use crate::work_dir::{WorkDir, WorkDirError};

/// A boxed executor, as a worker's server takes it (the same type as
/// `hybridgrid_net::worker::BoxExecutor`).
pub type BoxExecutor = BoxCloneSyncService<CompileTask, CompileOutput, BoxError>;

/// How long the worker waits for the Docker daemon at start.
pub const DOCKER_PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// The executor a worker serves, and what it adds to the capabilities.
pub struct WorkerExecutor {
    /// The executor to serve.
    pub executor: BoxExecutor,
    /// Its answer to whether it would run a task, for the worker's
    /// admission (`hybridgrid_net::worker::WorkerServer::with_executor_check`).
    pub can_run: Arc<dyn CanRun>,
    /// Compilers in Docker images (to advertise beside the native ones).
    pub docker_compilers: Vec<CompilerInfo>,
    /// Docker images compiles can run in (empty without a usable daemon).
    pub docker_images: Vec<DockerImage>,
    /// The compilers the native executor runs.
    native_compilers: Vec<CompilerInfo>,
    #[cfg(feature = "docker")]
    docker: Option<crate::docker::DockerExecutor>,
}

impl std::fmt::Debug for WorkerExecutor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerExecutor")
            .field("docker_compilers", &self.docker_compilers)
            .field("docker_images", &self.docker_images)
            .finish_non_exhaustive()
    }
}

impl WorkerExecutor {
    /// What a worker with this stack advertises: this machine's
    /// architecture, cores and memory, the native compilers and those in
    /// Docker images, the images, and `max_parallel_tasks`.
    pub fn capabilities(&self, max_parallel_tasks: usize) -> Capabilities {
        let mut caps = Capabilities::new(Arch::host());
        caps.cores = std::thread::available_parallelism()
            .map(|n| n.get() as u32)
            .unwrap_or(1);
        caps.memory_bytes = crate::detect::total_memory();
        caps.compilers = self.native_compilers.clone();
        caps.compilers.extend(self.docker_compilers.iter().cloned());
        caps.docker_images = self.docker_images.clone();
        caps.max_parallel_tasks = max_parallel_tasks as u32;
        caps
    }

    /// Removes the Docker containers (worker shutdown). Later Docker tasks
    /// fail with `Docker not available`.
    pub async fn shutdown(&self) {
        #[cfg(feature = "docker")]
        if let Some(d) = &self.docker {
            d.shutdown().await;
        }
    }
}

/// Builds the executor of worker `worker_id` from its configuration and the
/// compilers detected on PATH. Native task directories go in a directory
/// the worker claims in `worker.work_dir` (see [`crate::work_dir`]); it
/// fails only when that directory cannot be used.
pub async fn build(
    w: &WorkerConfig,
    worker_id: &str,
    compilers: Vec<CompilerInfo>,
) -> Result<WorkerExecutor, WorkDirError> {
    let configured = (!w.work_dir.is_empty()).then(|| Path::new(&w.work_dir));
    let dir = WorkDir::claim(configured)?;
    tracing::info!(dir = %dir.path().display(), why = dir.why(), "task directories");
    let store = input_store(w, &dir);
    let mut opts = NativeOptions::default()
        .with_timeout(w.task_timeout)
        .with_max_output_bytes(w.max_output_bytes)
        .with_max_input_bytes(w.max_request_bytes as u64)
        .with_isolation(w.isolation)
        .with_work_dir(Arc::new(dir));
    if let Some(store) = store {
        opts = opts.with_input_store(Arc::new(store));
    }
    let native = NativeExecutor::new(compilers, opts);
    if !w.docker.enabled || w.docker.images.is_empty() {
        return Ok(native_only(native));
    }
    Ok(with_docker(w, worker_id, native).await)
}

/// The input store beside the task directories (same file system, so its
/// files reach a task by hard link), or `None` when `worker.input_store_mb`
/// is 0 or it cannot be opened (said in the log; compiles still run).
fn input_store(w: &WorkerConfig, dir: &WorkDir) -> Option<InputStore> {
    if w.input_store_mb == 0 {
        return None;
    }
    let parent = dir.path().parent().unwrap_or(dir.path());
    match InputStore::claim(parent, w.input_store_mb << 20) {
        Ok(s) => {
            let (files, bytes) = s.usage();
            tracing::info!(
                dir = %s.dir().display(),
                files,
                mib = bytes >> 20,
                "input store"
            );
            Some(s)
        }
        Err(e) => {
            tracing::warn!(
                parent = %parent.display(),
                error = %e,
                "input store unavailable: every file of a compile from source is sent \
                 and written per compile (set worker.work_dir to a writable directory, \
                 or worker.input_store_mb: 0 to silence this)"
            );
            None
        }
    }
}

fn native_only(native: NativeExecutor) -> WorkerExecutor {
    WorkerExecutor {
        can_run: Arc::new(native.clone()),
        native_compilers: native.compilers().to_vec(),
        executor: BoxCloneSyncService::new(native),
        docker_compilers: Vec::new(),
        docker_images: Vec::new(),
        #[cfg(feature = "docker")]
        docker: None,
    }
}

#[cfg(feature = "docker")]
async fn with_docker(w: &WorkerConfig, worker_id: &str, native: NativeExecutor) -> WorkerExecutor {
    use crate::docker::{DockerExecutor, DockerOptions};
    use crate::routing::RoutingExecutor;

    let mut opts = DockerOptions::new(worker_id, w.docker.images.clone())
        .with_timeout(w.task_timeout)
        .with_max_output_bytes(w.max_output_bytes);
    opts.connect_timeout = DOCKER_PROBE_TIMEOUT;
    // Logs one line saying why when the daemon is not usable.
    let docker = DockerExecutor::start(opts).await;
    let docker_images = docker.images().to_vec();
    // Advertise only what the native executor does not already serve.
    let docker_compilers = docker
        .compilers()
        .into_iter()
        .filter(|c| !native.compilers().iter().any(|n| n.identity == c.identity))
        .collect();
    let native_compilers = native.compilers().to_vec();
    let routing = RoutingExecutor::docker_or_native(native, docker.clone());
    WorkerExecutor {
        native_compilers,
        can_run: Arc::new(routing.clone()),
        executor: BoxCloneSyncService::new(routing),
        docker_compilers,
        docker_images,
        docker: Some(docker),
    }
}

#[cfg(not(feature = "docker"))]
async fn with_docker(
    _w: &WorkerConfig,
    _worker_id: &str,
    native: NativeExecutor,
) -> WorkerExecutor {
    tracing::info!(
        "Docker not available: this hg-worker was built without the `docker` feature; no Docker capability advertised"
    );
    native_only(native)
}
