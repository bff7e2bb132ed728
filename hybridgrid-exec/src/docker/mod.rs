//! The Docker executor: compiles inside long-lived containers, one per
//! configured image (`worker.docker.images`, architecture -> image).
//!
//! At [`DockerExecutor::start`] it connects to the daemon, removes
//! containers a previous run of the same worker left behind (label
//! `hybridgrid.worker=<id>`), starts one container per image (`sleep`,
//! network `none`, read-only root, capabilities dropped, memory/CPU/PID
//! limits, the worker's uid, `docker-init` as PID 1) with the Docker work
//! root bind-mounted at the same path, and identifies the compilers inside
//! (`$CC`, `$CXX`, and every `gcc`/`<triple>-gcc`-like name on the image's
//! `PATH` whose target is the image's architecture).
//!
//! Each compile gets a task directory under the work root. The worker
//! writes the input and a one-line command file there (the compiler's path
//! and arguments, shell-quoted, run with `exec`) and hands the directory to
//! the container's main process, a few lines of `sh` ([`Dispatch::Runner`]):
//! it reads task directories from a FIFO in the work root, runs each
//! compile in the background with its output redirected to files in the
//! task directory, and reports `<dir> <exit code>` on a second FIFO the
//! worker reads. The object is read back from the shared directory: there
//! is no Docker API call, no copy in or out of the container and no
//! `runc exec` per compile. ([`Dispatch::Exec`], one `docker exec` per
//! compile, is kept for comparison.) A compile that outlives the timeout
//! is killed (every process whose working directory is the task
//! directory; the container is restarted if that fails); a container that
//! dies is replaced.
//!
//! Without a usable daemon the executor still starts, logs why, reports no
//! images and answers every task with
//! [`GridError::DockerUnavailable`] (`Docker not available: <reason>`).
//! Containers are removed by [`DockerExecutor::shutdown`], and on drop as
//! a best effort.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bollard::Docker;
use bollard::container::LogOutput;
use bollard::exec::{CreateExecOptions, StartExecOptions, StartExecResults};
use bollard::models::{ContainerCreateBody, HostConfig};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, ListContainersOptionsBuilder, RemoveContainerOptionsBuilder,
};
use bytes::Bytes;
use futures::StreamExt;
use hybridgrid_core::payload::Payload;
use hybridgrid_core::task::{CompileOutput, CompileTask, OutputFile, OutputKind, Timings};
use hybridgrid_core::worker::{Arch, CompilerInfo, DockerImage};
use hybridgrid_core::{BoxError, GridError};
use tokio::io::AsyncBufReadExt;
use tokio::io::AsyncWriteExt;
use tokio::net::unix::pipe;

use crate::detect;
use crate::native::read_output;

/// The label every container of a worker carries, with the worker id as value.
pub const WORKER_LABEL: &str = "hybridgrid.worker";

/// How a compile reaches its container.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Dispatch {
    /// The container's main process, a small `sh` loop, takes task
    /// directories from a FIFO in the shared work root and runs each
    /// compile; no Docker API call per compile (the default).
    #[default]
    Runner,
    /// One `docker exec` per compile (create, start and inspect: three API
    /// calls and a `runc exec`); slower, kept for comparison.
    Exec,
}

/// The container's main process (`sh -c RUNNER hg-runner REQ DONE`): reads
/// task directories from the FIFO `REQ`, runs `./.hg-cmd` in each (in the
/// background, double-forked so `docker-init` reaps it) with its output in
/// files, and writes `<dir> <exit code>` to the FIFO `DONE`. Both FIFOs are
/// opened read-write, so neither open blocks and `REQ` never reaches EOF.
const RUNNER: &str = r#"exec 3<>"$1" 4<>"$2" || exit 1
while IFS= read -r d <&3; do
  ( ( ( cd "$d" && . ./.hg-cmd ) <&- >"$d/.hg-stdout" 2>"$d/.hg-stderr" 3<&- 4<&-; echo "$d $?" >&4 ) & )
done"#;

/// Quotes `s` for `sh` (single quotes; a quote becomes `'\''`).
fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// Settings of the Docker executor.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct DockerOptions {
    /// The worker id (container label value; leftovers with it are removed).
    pub worker_id: String,
    /// Architecture name (`arm64`...) -> image.
    pub images: BTreeMap<String, String>,
    /// A compile running longer is killed.
    pub task_timeout: Duration,
    /// Largest decoded input accepted, in bytes.
    pub max_input_bytes: u64,
    /// Largest output (object plus diagnostics) returned, in bytes.
    pub max_output_bytes: u64,
    /// Directory shared with the containers, holding task directories
    /// (default: `<temp dir>/hybridgrid-docker-<worker id>`).
    pub work_root: Option<PathBuf>,
    /// The daemon's socket (`unix:///var/run/docker.sock`); default:
    /// `DOCKER_HOST` or the standard socket.
    pub docker_host: Option<String>,
    /// Memory limit per container, in bytes.
    pub memory_bytes: i64,
    /// CPU limit per container, in CPUs (0: unlimited).
    pub cpus: f64,
    /// Process limit per container.
    pub pids_limit: i64,
    /// How long to wait for the daemon to answer at start.
    pub connect_timeout: Duration,
    /// How compiles reach the container.
    pub dispatch: Dispatch,
}

task_bound_builders!(DockerOptions);

impl DockerOptions {
    /// Options for this worker and these images, with defaults for the rest.
    pub fn new(worker_id: impl Into<String>, images: BTreeMap<String, String>) -> Self {
        DockerOptions {
            worker_id: worker_id.into(),
            images,
            task_timeout: Duration::from_secs(300),
            max_input_bytes: 1024 * 1024 * 1024,
            max_output_bytes: 256 * 1024 * 1024,
            work_root: None,
            docker_host: None,
            memory_bytes: 4 * 1024 * 1024 * 1024,
            cpus: 0.0,
            pids_limit: 1024,
            connect_timeout: Duration::from_secs(5),
            dispatch: Dispatch::Runner,
        }
    }

    /// Options with this way of reaching the container.
    pub fn with_dispatch(mut self, d: Dispatch) -> Self {
        self.dispatch = d;
        self
    }

    /// Options with this daemon socket.
    pub fn with_docker_host(mut self, h: impl Into<String>) -> Self {
        self.docker_host = Some(h.into());
        self
    }
}

/// A compiler inside one of the containers.
#[derive(Clone, Debug)]
struct Placed {
    info: CompilerInfo,
    image: String,
}

/// A running container and the FIFO its runner reads task directories from.
#[derive(Clone, Debug)]
struct Slot {
    id: String,
    requests: PathBuf,
}

/// Task directory -> who waits for its exit code.
type Pending = Arc<std::sync::Mutex<HashMap<String, tokio::sync::oneshot::Sender<i64>>>>;

struct Inner {
    opts: DockerOptions,
    /// `Err(reason)` without a usable daemon.
    docker: Result<Docker, String>,
    work_root: PathBuf,
    user: String,
    /// image -> running container.
    containers: tokio::sync::Mutex<HashMap<String, Slot>>,
    /// Compiles waiting for their runner's report.
    pending: Pending,
    /// The FIFO runners report on (read by `done_reader`).
    done_fifo: PathBuf,
    done_reader: Option<tokio::task::AbortHandle>,
    compilers: Vec<Placed>,
    images: Vec<DockerImage>,
    /// Architectures configured but unusable, and why.
    unusable: BTreeMap<Arch, String>,
    shut_down: AtomicBool,
}

/// Compiles tasks inside Docker containers (see the [module docs](self)).
#[derive(Clone)]
pub struct DockerExecutor {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for DockerExecutor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DockerExecutor")
            .field("available", &self.inner.docker.is_ok())
            .field("images", &self.inner.images)
            .field("compilers", &self.inner.compilers.len())
            .finish()
    }
}

fn docker_err(what: &str, e: impl std::fmt::Display) -> GridError {
    GridError::Internal(format!("docker: {what}: {e}"))
}

fn is_gone(e: &bollard::errors::Error) -> bool {
    matches!(
        e,
        bollard::errors::Error::DockerResponseServerError {
            status_code: 404 | 409,
            ..
        }
    )
}

/// What one `exec` produced.
struct ExecResult {
    exit_code: i64,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
}

fn connect(opts: &DockerOptions) -> Result<Docker, String> {
    let r = match &opts.docker_host {
        Some(h) => Docker::connect_with_unix(h, 120, bollard::API_DEFAULT_VERSION),
        None => Docker::connect_with_unix_defaults(),
    };
    r.map_err(|e| e.to_string())
}

fn container_name(worker: &str, arch: &str) -> String {
    let clean: String = format!("hybridgrid-{worker}-{arch}")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "_.-".contains(c) {
                c
            } else {
                '-'
            }
        })
        .collect();
    format!("{clean}-{:08x}", rand_u32())
}

fn rand_u32() -> u32 {
    let n = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    n ^ std::process::id().rotate_left(16)
}

impl hybridgrid_core::can_run::CanRun for DockerExecutor {
    /// A compiler in one of its images, or a target architecture
    /// configured for Docker: without a usable daemon such a task is
    /// admitted and answered `Docker not available: <reason>`.
    fn can_run(&self, task: &CompileTask) -> Result<(), GridError> {
        if self.handles(task) || self.configured_for(&task.compiler.target_arch()) {
            Ok(())
        } else {
            Err(hybridgrid_core::can_run::unknown_compiler(
                task,
                &self.compilers(),
            ))
        }
    }
}

impl DockerExecutor {
    /// Connects to the daemon and starts one container per image. Never
    /// fails: without a usable daemon the executor answers every task with
    /// `Docker not available: <reason>` (and says why in the log).
    pub async fn start(opts: DockerOptions) -> DockerExecutor {
        let work_root = opts.work_root.clone().unwrap_or_else(|| {
            std::env::temp_dir().join(format!("hybridgrid-docker-{}", opts.worker_id))
        });
        let mut inner = Inner {
            docker: Err(String::new()),
            done_fifo: work_root.join(".hg-done"),
            work_root,
            user: String::new(),
            containers: tokio::sync::Mutex::new(HashMap::new()),
            pending: Arc::new(std::sync::Mutex::new(HashMap::new())),
            done_reader: None,
            compilers: Vec::new(),
            images: Vec::new(),
            unusable: BTreeMap::new(),
            shut_down: AtomicBool::new(false),
            opts,
        };
        match inner.connect().await {
            Ok(docker) => {
                inner.docker = Ok(docker);
                inner.start_images().await;
                tracing::info!(
                    images = ?inner.images.iter().map(|i| &i.image).collect::<Vec<_>>(),
                    compilers = ?inner.compilers.iter().map(|c| c.info.identity.to_string()).collect::<Vec<_>>(),
                    "Docker executor ready"
                );
            }
            Err(reason) => {
                tracing::warn!(reason = %reason, "Docker not available: {reason}; no Docker capability advertised");
                inner.docker = Err(reason);
            }
        }
        DockerExecutor {
            inner: Arc::new(inner),
        }
    }

    /// Why Docker cannot be used, if it cannot.
    pub fn unavailable_reason(&self) -> Option<&str> {
        self.inner.docker.as_ref().err().map(String::as_str)
    }

    /// The images compiles can run in (empty without a daemon).
    pub fn images(&self) -> &[DockerImage] {
        &self.inner.images
    }

    /// The compilers found in the images (their `path` is inside the image).
    pub fn compilers(&self) -> Vec<CompilerInfo> {
        self.inner
            .compilers
            .iter()
            .map(|p| p.info.clone())
            .collect()
    }

    /// True if one of its images has the task's compiler.
    pub fn handles(&self, task: &CompileTask) -> bool {
        self.inner
            .compilers
            .iter()
            .any(|p| p.info.identity == task.compiler)
    }

    /// True if `arch` is configured for Docker (usable or not).
    pub fn configured_for(&self, arch: &Arch) -> bool {
        self.inner
            .opts
            .images
            .keys()
            .any(|a| &Arch::parse(a) == arch)
    }

    /// Compiles one task.
    pub async fn run(&self, task: CompileTask) -> Result<CompileOutput, GridError> {
        self.inner.run(task).await
    }

    /// Stops and removes every container (and the default work root). Later tasks
    /// fail with `Docker not available`.
    pub async fn shutdown(&self) {
        self.inner.shutdown().await;
    }
}

impl tower::Service<CompileTask> for DockerExecutor {
    type Response = CompileOutput;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<CompileOutput, BoxError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, task: CompileTask) -> Self::Future {
        let inner = self.inner.clone();
        Box::pin(async move { inner.run(task).await.map_err(BoxError::from) })
    }
}

mod containers;
mod tasks;

pub use containers::count_containers;

impl Inner {
    fn docker(&self) -> Result<&Docker, GridError> {
        if self.shut_down.load(Ordering::SeqCst) {
            return Err(GridError::DockerUnavailable(
                "the Docker executor was shut down".into(),
            ));
        }
        self.docker
            .as_ref()
            .map_err(|r| GridError::DockerUnavailable(r.clone()))
    }

    async fn connect(&self) -> Result<Docker, String> {
        let docker = connect(&self.opts)?;
        let docker = tokio::time::timeout(self.opts.connect_timeout, docker.negotiate_version())
            .await
            .map_err(|_| {
                format!(
                    "the daemon did not answer within {:?}",
                    self.opts.connect_timeout
                )
            })?
            .map_err(|e| e.to_string())?;
        containers::remove_labelled(&docker, &self.opts.worker_id).await?;
        Ok(docker)
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(h) = &self.done_reader {
            h.abort();
        }
        if self.shut_down.load(Ordering::SeqCst) || self.docker.is_err() {
            return;
        }
        let slots: Vec<Slot> = self.containers.get_mut().drain().map(|(_, v)| v).collect();
        for s in &slots {
            let _ = std::fs::remove_file(&s.requests);
        }
        let _ = std::fs::remove_file(&self.done_fifo);
        let ids: Vec<String> = slots.into_iter().map(|s| s.id).collect();
        let opts = self.opts.clone();
        let root = self
            .opts
            .work_root
            .is_none()
            .then(|| self.work_root.clone());
        // Best effort, on a thread of its own: the caller's runtime may be
        // shutting down. Bounded by the removal timeout below.
        let t = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async {
                let Ok(docker) = connect(&opts) else { return };
                let _ = tokio::time::timeout(Duration::from_secs(20), async {
                    for id in ids {
                        let _ = docker
                            .remove_container(
                                &id,
                                Some(RemoveContainerOptionsBuilder::new().force(true).build()),
                            )
                            .await;
                    }
                })
                .await;
            });
            if let Some(root) = root {
                let _ = std::fs::remove_dir_all(&root);
            }
        });
        let _ = t.join();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hybridgrid_core::task::{CompilerFamily, CompilerIdentity, DriverKind, Language};

    fn alive_with(marker: &str) -> usize {
        std::fs::read_dir("/proc")
            .map(|d| {
                d.flatten()
                    .filter(|e| {
                        let p = e.path();
                        let cmd = std::fs::read(p.join("cmdline")).unwrap_or_default();
                        let stat = std::fs::read_to_string(p.join("stat")).unwrap_or_default();
                        String::from_utf8_lossy(&cmd).contains(marker) && !stat.contains(") Z ")
                    })
                    .count()
            })
            .unwrap_or(0)
    }

    #[tokio::test]
    async fn timeout_kills_the_exec_and_the_container_survives() {
        let image = "hybridgrid-test/gcc:1";
        if count_containers(None, "probe").await.is_none()
            || !std::process::Command::new("docker")
                .args(["image", "inspect", image])
                .output()
                .map(|o| o.status.success())
                .unwrap_or(false)
        {
            assert_ne!(
                std::env::var("HG_TEST_REQUIRE_ALL").as_deref(),
                Ok("1"),
                "no Docker daemon or no {image}"
            );
            eprintln!("skipping: no Docker daemon or no {image}");
            return;
        }
        let id = format!("hgtest-timeout-{}", std::process::id());
        let root = tempfile::tempdir().expect("tempdir");
        let mut ex = DockerExecutor::start(
            DockerOptions::new(&id, BTreeMap::from([("amd64".into(), image.into())]))
                .with_work_root(root.path())
                .with_timeout(Duration::from_millis(1500)),
        )
        .await;
        assert_eq!(ex.unavailable_reason(), None);
        // A hanging "compiler" with a child, visible in the container
        // through the shared work root.
        let marker = format!("3{}.5", std::process::id() % 1000);
        let script = root.path().join("slowcc");
        std::fs::write(
            &script,
            format!("#!/bin/sh\nsleep {marker} &\nsleep {marker}\n"),
        )
        .expect("script");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let fake = CompilerIdentity {
            family: CompilerFamily::Gcc,
            driver: DriverKind::C,
            version: "0-slow".into(),
            target: "x86_64-linux-gnu".into(),
        };
        let real = ex.compilers().first().cloned().expect("gcc in the image");
        Arc::get_mut(&mut ex.inner)
            .expect("sole owner")
            .compilers
            .push(Placed {
                info: CompilerInfo {
                    name: "gcc".into(),
                    path: script.display().to_string(),
                    identity: fake.clone(),
                },
                image: image.into(),
            });
        let task = |identity: &CompilerIdentity| {
            CompileTask::new(
                identity.clone(),
                Language::C,
                vec![],
                "t.c",
                Payload::compress(b"int x;\n".to_vec()),
            )
        };
        let t0 = Instant::now();
        let e = ex.run(task(&fake)).await.expect_err("must time out");
        assert!(e.to_string().contains("deadline exceeded"), "{e}");
        assert!(t0.elapsed() < Duration::from_secs(15));
        let mut left = alive_with(&marker);
        for _ in 0..30 {
            if left == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            left = alive_with(&marker);
        }
        assert_eq!(left, 0, "the timed-out compile survived");
        // No task directory is left in the work root.
        let tasks = std::fs::read_dir(root.path())
            .expect("root")
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with("hg-task-"))
            .count();
        assert_eq!(tasks, 0);
        // The container still compiles, and is still the only one.
        let out = ex.run(task(&real.identity)).await.expect("compile");
        assert_eq!(out.exit_code, 0, "{}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(count_containers(None, &id).await, Some(1));
        ex.shutdown().await;
        assert_eq!(count_containers(None, &id).await, Some(0));
    }
}
