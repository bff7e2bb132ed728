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
        remove_labelled(&docker, &self.opts.worker_id).await?;
        Ok(docker)
    }

    /// Starts a container per configured image and identifies its compilers.
    async fn start_images(&mut self) {
        if let Err(e) = create_work_root(&self.work_root) {
            let reason = format!("cannot create {}: {e}", self.work_root.display());
            self.docker = Err(reason);
            return;
        }
        // FIFOs of containers a previous run of this worker left behind.
        if let Ok(entries) = std::fs::read_dir(&self.work_root) {
            for e in entries.flatten() {
                if e.file_name().to_string_lossy().starts_with(".hg-req-") {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
        match self.start_done_reader() {
            Ok(h) => self.done_reader = Some(h),
            Err(e) => {
                self.docker = Err(format!("{}: {e}", self.done_fifo.display()));
                return;
            }
        }
        {
            use std::os::unix::fs::MetadataExt;
            match std::fs::metadata(&self.work_root) {
                Ok(m) => self.user = format!("{}:{}", m.uid(), m.gid()),
                Err(e) => {
                    self.docker = Err(format!("{}: {e}", self.work_root.display()));
                    return;
                }
            }
        }
        let images: Vec<(String, String)> = self
            .opts
            .images
            .iter()
            .map(|(a, i)| (a.clone(), i.clone()))
            .collect();
        for (arch_name, image) in images {
            let arch = Arch::parse(&arch_name);
            match self.start_image(&arch, &image).await {
                Ok(found) if !found.is_empty() => {
                    self.images.push(DockerImage {
                        arch: arch.clone(),
                        image: image.clone(),
                    });
                    self.compilers.extend(found.into_iter().map(|info| Placed {
                        info,
                        image: image.clone(),
                    }));
                }
                Ok(_) => {
                    let why = format!("image {image} has no compiler for {arch}");
                    tracing::warn!(image = %image, arch = %arch, "Docker image unusable: {why}");
                    self.remove_container_of(&image).await;
                    self.unusable.insert(arch, why);
                }
                Err(why) => {
                    tracing::warn!(image = %image, arch = %arch, "Docker image unusable: {why}");
                    self.remove_container_of(&image).await;
                    self.unusable.insert(arch, why);
                }
            }
        }
    }

    /// Makes the FIFO runners report on and the task reading it.
    fn start_done_reader(&self) -> std::io::Result<tokio::task::AbortHandle> {
        let _ = std::fs::remove_file(&self.done_fifo);
        nix::unistd::mkfifo(&self.done_fifo, nix::sys::stat::Mode::S_IRWXU)?;
        // Read-write: never EOF while runners come and go, and a runner's
        // open never blocks.
        let rx = pipe::OpenOptions::new()
            .read_write(true)
            .open_receiver(&self.done_fifo)?;
        let pending = self.pending.clone();
        let task = tokio::spawn(async move {
            let mut r = tokio::io::BufReader::new(rx);
            let mut line = Vec::new();
            loop {
                line.clear();
                match r.read_until(b'\n', &mut line).await {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
                let text = String::from_utf8_lossy(&line);
                let Some((dir, code)) = text.trim_end().rsplit_once(' ') else {
                    continue;
                };
                let code = code.parse::<i64>().unwrap_or(-1);
                let waiter = pending.lock().ok().and_then(|mut p| p.remove(dir));
                if let Some(tx) = waiter {
                    let _ = tx.send(code);
                }
            }
        });
        Ok(task.abort_handle())
    }

    async fn start_image(&self, arch: &Arch, image: &str) -> Result<Vec<CompilerInfo>, String> {
        let docker = self.docker.as_ref().map_err(Clone::clone)?;
        docker.inspect_image(image).await.map_err(|e| {
            format!("image {image} is not present ({e}); build or `docker pull {image}` it")
        })?;
        let slot = self
            .create_container(arch, image)
            .await
            .map_err(|e| e.to_string())?;
        self.containers.lock().await.insert(image.to_owned(), slot);
        self.identify_compilers(arch, image)
            .await
            .map_err(|e| e.to_string())
    }

    async fn create_container(&self, arch: &Arch, image: &str) -> Result<Slot, GridError> {
        let docker = self.docker()?;
        let name = container_name(&self.opts.worker_id, arch.as_str());
        // The runner's request FIFO must exist before it starts (`<>` would
        // create a plain file).
        let requests = self.work_root.join(format!(".hg-req-{name}"));
        let _ = std::fs::remove_file(&requests);
        nix::unistd::mkfifo(&requests, nix::sys::stat::Mode::S_IRWXU).map_err(|e| {
            GridError::Internal(format!("cannot create {}: {e}", requests.display()))
        })?;
        let root = self.work_root.display().to_string();
        let mut labels = HashMap::new();
        labels.insert(WORKER_LABEL.to_owned(), self.opts.worker_id.clone());
        labels.insert("hybridgrid.image".to_owned(), image.to_owned());
        let mut tmpfs = HashMap::new();
        tmpfs.insert("/tmp".to_owned(), "rw,nosuid,nodev,size=256m".to_owned());
        let body = ContainerCreateBody {
            image: Some(image.to_owned()),
            entrypoint: Some(vec!["sh".into(), "-c".into()]),
            cmd: Some(vec![
                RUNNER.into(),
                "hg-runner".into(),
                requests.display().to_string(),
                self.done_fifo.display().to_string(),
            ]),
            user: Some(self.user.clone()),
            network_disabled: Some(true),
            labels: Some(labels),
            host_config: Some(HostConfig {
                network_mode: Some("none".into()),
                // docker-init as PID 1 reaps the runner's finished compiles.
                init: Some(true),
                binds: Some(vec![format!("{root}:{root}:rw")]),
                memory: Some(self.opts.memory_bytes),
                nano_cpus: (self.opts.cpus > 0.0).then_some((self.opts.cpus * 1e9) as i64),
                pids_limit: Some(self.opts.pids_limit),
                readonly_rootfs: Some(true),
                tmpfs: Some(tmpfs),
                cap_drop: Some(vec!["ALL".into()]),
                security_opt: Some(vec!["no-new-privileges".into()]),
                ..Default::default()
            }),
            ..Default::default()
        };
        let created = docker
            .create_container(
                Some(CreateContainerOptionsBuilder::new().name(&name).build()),
                body,
            )
            .await
            .map_err(|e| docker_err(&format!("creating a container of {image}"), e))?;
        if let Err(e) = docker.start_container(&created.id, None).await {
            let _ = docker
                .remove_container(
                    &created.id,
                    Some(RemoveContainerOptionsBuilder::new().force(true).build()),
                )
                .await;
            let _ = std::fs::remove_file(&requests);
            return Err(docker_err(&format!("starting a container of {image}"), e));
        }
        tracing::info!(container = %name, image = %image, "Docker container started");
        Ok(Slot {
            id: created.id,
            requests,
        })
    }

    async fn remove_container_of(&self, image: &str) {
        let slot = self.containers.lock().await.remove(image);
        if let Some(slot) = slot {
            self.remove_slot(slot).await;
        }
    }

    async fn remove_slot(&self, slot: Slot) {
        if let Ok(docker) = self.docker.as_ref() {
            let _ = docker
                .remove_container(
                    &slot.id,
                    Some(RemoveContainerOptionsBuilder::new().force(true).build()),
                )
                .await;
        }
        let _ = std::fs::remove_file(&slot.requests);
    }

    /// Replaces the container of `image` (after it died or a kill failed),
    /// unless it was replaced already since `stale` was seen.
    async fn restart(&self, image: &str, stale: Option<&str>) -> Result<Slot, GridError> {
        let mut containers = self.containers.lock().await;
        if let Some(current) = containers.get(image)
            && stale.is_some_and(|s| s != current.id)
        {
            return Ok(current.clone());
        }
        let arch = self
            .images
            .iter()
            .find(|i| i.image == image)
            .map(|i| i.arch.clone())
            .unwrap_or_else(|| Arch::Other("unknown".into()));
        tracing::warn!(image = %image, "restarting the Docker container");
        if let Some(old) = containers.remove(image) {
            self.remove_slot(old).await;
        }
        let slot = self.create_container(&arch, image).await?;
        containers.insert(image.to_owned(), slot.clone());
        Ok(slot)
    }

    async fn container_of(&self, image: &str) -> Result<Slot, GridError> {
        if let Some(slot) = self.containers.lock().await.get(image) {
            return Ok(slot.clone());
        }
        self.restart(image, None).await
    }

    /// Runs `cmd` in `container` and collects its output (bounded).
    async fn exec(
        &self,
        container: &str,
        cmd: Vec<String>,
        workdir: Option<&str>,
        env: Vec<String>,
        limit: u64,
    ) -> Result<ExecResult, bollard::errors::Error> {
        let docker = match self.docker.as_ref() {
            Ok(d) => d,
            Err(r) => {
                return Err(bollard::errors::Error::IOError {
                    err: std::io::Error::other(r.clone()),
                });
            }
        };
        let created = docker
            .create_exec(
                container,
                CreateExecOptions {
                    attach_stdout: Some(true),
                    attach_stderr: Some(true),
                    cmd: Some(cmd),
                    env: Some(env),
                    working_dir: workdir.map(str::to_owned),
                    user: Some(self.user.clone()),
                    ..Default::default()
                },
            )
            .await?;
        let mut stdout = Vec::new();
        let mut stderr = Vec::new();
        if let StartExecResults::Attached { mut output, .. } = docker
            .start_exec(&created.id, Some(StartExecOptions::default()))
            .await?
        {
            while let Some(item) = output.next().await {
                match item? {
                    LogOutput::StdOut { message } => stdout.extend_from_slice(&message),
                    LogOutput::StdErr { message } => stderr.extend_from_slice(&message),
                    _ => {}
                }
                if (stdout.len() + stderr.len()) as u64 > limit {
                    return Err(bollard::errors::Error::IOError {
                        err: std::io::Error::other(format!(
                            "compiler output exceeds the limit of {limit} bytes"
                        )),
                    });
                }
            }
        }
        let inspected = docker.inspect_exec(&created.id).await?;
        let exit_code = inspected
            .exit_code
            .ok_or_else(|| bollard::errors::Error::IOError {
                err: std::io::Error::other("the exec ended without an exit code"),
            })?;
        Ok(ExecResult {
            exit_code,
            stdout,
            stderr,
        })
    }

    /// Lists compiler-like names in the image and identifies those that
    /// target `arch`.
    async fn identify_compilers(
        &self,
        arch: &Arch,
        image: &str,
    ) -> Result<Vec<CompilerInfo>, GridError> {
        let container = self.container_of(image).await?.id;
        let list = self
            .exec(
                &container,
                vec![
                    "sh".into(),
                    "-c".into(),
                    r#"printf '%s\n' "$CC" "$CXX"; IFS=:; for d in $PATH; do ls "$d" 2>/dev/null; done"#
                        .into(),
                ],
                None,
                vec![],
                1024 * 1024,
            )
            .await
            .map_err(|e| docker_err(&format!("listing compilers in {image}"), e))?;
        let text = String::from_utf8_lossy(&list.stdout).into_owned();
        let mut lines = text.lines();
        let mut candidates: Vec<String> = Vec::new();
        for cc in [lines.next(), lines.next()].into_iter().flatten() {
            if !cc.trim().is_empty() {
                candidates.push(cc.trim().to_owned());
            }
        }
        let mut names: Vec<String> = lines
            .map(str::trim)
            .filter(|n| detect::is_compiler_name(n))
            .map(str::to_owned)
            .collect();
        names.sort();
        names.dedup();
        candidates.extend(names);
        let mut found: Vec<CompilerInfo> = Vec::new();
        for cand in candidates {
            let name = cand.rsplit('/').next().unwrap_or(&cand).to_owned();
            let c = container.clone();
            let info = detect::identify_with(&name, &cand, |args| {
                let c = c.clone();
                let cand = cand.clone();
                async move {
                    let mut cmd = vec![cand];
                    cmd.extend(args);
                    let fut = self.exec(&c, cmd, None, vec!["LC_ALL=C".into()], 1024 * 1024);
                    match tokio::time::timeout(Duration::from_secs(20), fut).await {
                        Ok(Ok(r)) if r.exit_code == 0 => {
                            Some(String::from_utf8_lossy(&r.stdout).trim().to_owned())
                        }
                        _ => None,
                    }
                }
            })
            .await;
            match info {
                Ok(info) if &info.identity.target_arch() == arch => {
                    if !found.iter().any(|f| f.identity == info.identity) {
                        found.push(info);
                    }
                }
                Ok(info) => tracing::debug!(image, compiler = %info.identity, "not for {arch}"),
                Err(e) => tracing::debug!(image, error = %e, "not a usable compiler"),
            }
        }
        Ok(found)
    }

    async fn run(&self, task: CompileTask) -> Result<CompileOutput, GridError> {
        self.docker()?;
        if task.source_mode.is_some() {
            return Err(GridError::InvalidTask(
                "compiles from source (debug info) do not run in Docker images; the client \
                 compiles them itself"
                    .into(),
            ));
        }
        crate::args::validate_remote_args(&task.args)
            .map_err(|e| GridError::InvalidTask(e.to_string()))?;
        let Some(placed) = self
            .compilers
            .iter()
            .find(|p| p.info.identity == task.compiler)
        else {
            if let Some(why) = self.unusable.get(&task.compiler.target_arch()) {
                return Err(GridError::DockerUnavailable(why.clone()));
            }
            return Err(GridError::InvalidTask(format!(
                "compiler {} is not available in any Docker image of this worker",
                task.compiler
            )));
        };
        let input = task
            .input
            .decode_limited(self.opts.max_input_bytes)
            .map_err(|e| GridError::InvalidTask(e.to_string()))?;
        let dir = tempfile::Builder::new()
            .prefix("hg-task-")
            .tempdir_in(&self.work_root)
            .map_err(|e| GridError::Internal(format!("cannot create task directory: {e}")))?;
        let dir_s = dir.path().display().to_string();
        let input_name = format!("input.{}", task.language.extension());
        tokio::fs::write(dir.path().join(&input_name), &input)
            .await
            .map_err(|e| GridError::Internal(format!("cannot write task input: {e}")))?;
        let mut cmd: Vec<String> = vec![
            placed.info.path.clone(),
            "-x".into(),
            task.language.as_x_arg().into(),
        ];
        cmd.extend(task.args.iter().cloned());
        cmd.extend(["-c".into(), input_name, "-o".into(), "output.o".into()]);

        let start = Instant::now();
        let timeout = self.opts.task_timeout;
        let limit = self.opts.max_output_bytes;
        let attempt = tokio::time::timeout(timeout, async {
            match self.opts.dispatch {
                Dispatch::Runner => self.run_by_runner(&placed.image, &dir_s, &cmd, limit).await,
                Dispatch::Exec => self.run_by_exec(&placed.image, &dir_s, cmd, limit).await,
            }
        })
        .await;
        let result = match attempt {
            Ok(r) => r?,
            Err(_) => {
                self.kill_task(&placed.image, &dir_s).await;
                return Err(GridError::DeadlineExceeded(timeout));
            }
        };
        let elapsed = start.elapsed();
        let exit_code = i32::try_from(result.exit_code).unwrap_or(i32::MAX);
        let mut outputs = Vec::new();
        let mut total = (result.stdout.len() + result.stderr.len()) as u64;
        if exit_code == 0 {
            let mut wanted = vec![(OutputKind::Object, "output.o")];
            if task.extra_outputs.contains(&OutputKind::SplitDwarf) {
                wanted.push((OutputKind::SplitDwarf, "output.dwo"));
            }
            for (kind, name) in wanted {
                let data = read_output(&dir.path().join(name), limit.saturating_sub(total)).await?;
                total += data.len() as u64;
                outputs.push(OutputFile {
                    kind,
                    data: Payload::compress(data),
                });
            }
        }
        drop(dir);
        let mut out = CompileOutput::default();
        out.exit_code = exit_code;
        out.stdout = Bytes::from(result.stdout);
        out.stderr = Bytes::from(result.stderr);
        out.outputs = outputs;
        out.timings = Timings {
            queue: Duration::ZERO,
            compile: elapsed,
        };
        Ok(out)
    }

    /// One compile by `docker exec`.
    async fn run_by_exec(
        &self,
        image: &str,
        dir: &str,
        cmd: Vec<String>,
        limit: u64,
    ) -> Result<ExecResult, GridError> {
        let env = vec![format!("TMPDIR={dir}")];
        let container = self.container_of(image).await?;
        match self
            .exec(&container.id, cmd.clone(), Some(dir), env.clone(), limit)
            .await
        {
            Err(e) if is_gone(&e) => {
                // The container died: replace it and try once more.
                let container = self.restart(image, Some(&container.id)).await?;
                self.exec(&container.id, cmd, Some(dir), env, limit)
                    .await
                    .map_err(|e| docker_err("exec", e))
            }
            other => other.map_err(|e| docker_err("exec", e)),
        }
    }

    /// One compile by the container's runner: the command file goes into
    /// the task directory, the directory's name into the runner's FIFO; the
    /// exit code comes back on the report FIFO, the output in files.
    async fn run_by_runner(
        &self,
        image: &str,
        dir: &str,
        cmd: &[String],
        limit: u64,
    ) -> Result<ExecResult, GridError> {
        let dir_path = std::path::Path::new(dir);
        // `ulimit -f` (512-byte blocks) bounds every file the compiler writes.
        let mut script = format!(
            "ulimit -f {} 2>/dev/null\nTMPDIR={}; export TMPDIR\nexec",
            limit.div_ceil(512).max(1),
            sh_quote(dir)
        );
        for a in cmd {
            script.push(' ');
            script.push_str(&sh_quote(a));
        }
        script.push('\n');
        tokio::fs::write(dir_path.join(".hg-cmd"), script)
            .await
            .map_err(|e| GridError::Internal(format!("cannot write the task command: {e}")))?;

        let (tx, mut rx) = tokio::sync::oneshot::channel();
        let _waiting = Waiting::new(&self.pending, dir, tx);
        let mut slot = self.container_of(image).await?;
        if submit(&slot.requests, dir).await.is_err() {
            // No runner: the container died. Replace it and try once more.
            slot = self.restart(image, Some(&slot.id)).await?;
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                match submit(&slot.requests, dir).await {
                    Ok(()) => break,
                    Err(e) if Instant::now() > deadline => {
                        return Err(GridError::Internal(format!(
                            "the Docker container of {image} does not take compiles: {e}"
                        )));
                    }
                    Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
                }
            }
        }
        let exit_code = loop {
            tokio::select! {
                code = &mut rx => {
                    break code.map_err(|_| GridError::Internal("the compile's report was lost".into()))?;
                }
                _ = tokio::time::sleep(Duration::from_secs(1)) => {
                    // Still there? (A container that died reports nothing.)
                    if runner_gone(&slot.requests) {
                        return Err(GridError::Internal(format!(
                            "the Docker container of {image} stopped during the compile"
                        )));
                    }
                }
            }
        };
        let stdout = read_output(&dir_path.join(".hg-stdout"), limit).await?;
        let stderr = read_output(
            &dir_path.join(".hg-stderr"),
            limit.saturating_sub(stdout.len() as u64),
        )
        .await?;
        Ok(ExecResult {
            exit_code,
            stdout,
            stderr,
        })
    }

    /// Kills every process in the container whose working directory is the
    /// task directory (the compiler and all it started); restarts the
    /// container if that cannot be done.
    async fn kill_task(&self, image: &str, dir: &str) {
        const KILL: &str = r#"for i in 1 2 3; do for p in /proc/[0-9]*; do [ "$(readlink "$p/cwd" 2>/dev/null)" = "$1" ] && kill -9 "${p#/proc/}" 2>/dev/null; done; sleep 0.1; done; exit 0"#;
        let ok = match self
            .containers
            .lock()
            .await
            .get(image)
            .map(|s| s.id.clone())
        {
            Some(c) => {
                let cmd = vec![
                    "sh".into(),
                    "-c".into(),
                    KILL.into(),
                    "sh".into(),
                    dir.into(),
                ];
                matches!(
                    tokio::time::timeout(
                        Duration::from_secs(10),
                        self.exec(&c, cmd, None, vec![], 64 * 1024)
                    )
                    .await,
                    Ok(Ok(ExecResult { exit_code: 0, .. }))
                )
            }
            None => false,
        };
        if !ok && let Err(e) = self.restart(image, None).await {
            tracing::error!(image = %image, error = %e, "cannot restart the Docker container");
        }
    }

    async fn shutdown(&self) {
        if self.shut_down.swap(true, Ordering::SeqCst) {
            return;
        }
        let slots: Vec<Slot> = self
            .containers
            .lock()
            .await
            .drain()
            .map(|(_, v)| v)
            .collect();
        if let Some(h) = &self.done_reader {
            h.abort();
        }
        if let Ok(docker) = self.docker.as_ref() {
            for slot in slots {
                if let Err(e) = docker
                    .remove_container(
                        &slot.id,
                        Some(RemoveContainerOptionsBuilder::new().force(true).build()),
                    )
                    .await
                {
                    tracing::warn!(container = %slot.id, error = %e, "cannot remove Docker container");
                }
                let _ = std::fs::remove_file(&slot.requests);
            }
            let _ = std::fs::remove_file(&self.done_fifo);
            if self.opts.work_root.is_none() {
                let _ = std::fs::remove_dir_all(&self.work_root);
            }
            tracing::info!("Docker executor shut down");
        }
    }
}

/// Creates the work root (owner-only when new: the runners' FIFOs live there).
fn create_work_root(root: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    if root.is_dir() {
        return Ok(());
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(root)
}

/// Hands the task directory `dir` to the runner reading `requests`. Fails
/// at once when no runner reads it (a write end of a FIFO without readers
/// cannot be opened without blocking).
async fn submit(requests: &std::path::Path, dir: &str) -> std::io::Result<()> {
    let mut tx = pipe::OpenOptions::new().open_sender(requests)?;
    // One line, shorter than PIPE_BUF: written at once, never interleaved
    // with another compile's.
    tx.write_all(format!("{dir}\n").as_bytes()).await
}

/// True when no runner reads `requests` any more (its container is gone).
fn runner_gone(requests: &std::path::Path) -> bool {
    matches!(
        pipe::OpenOptions::new().open_sender(requests),
        Err(e) if e.raw_os_error() == Some(libc_enxio())
    ) || !requests.exists()
}

const fn libc_enxio() -> i32 {
    nix::errno::Errno::ENXIO as i32
}

/// A compile waiting for its runner's report; forgotten when dropped (done,
/// timed out or cancelled).
struct Waiting<'a> {
    pending: &'a Pending,
    dir: String,
}

impl<'a> Waiting<'a> {
    fn new(pending: &'a Pending, dir: &str, tx: tokio::sync::oneshot::Sender<i64>) -> Self {
        if let Ok(mut p) = pending.lock() {
            p.insert(dir.to_owned(), tx);
        }
        Waiting {
            pending,
            dir: dir.to_owned(),
        }
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        if let Ok(mut p) = self.pending.lock() {
            p.remove(&self.dir);
        }
    }
}

/// Force-removes every container labelled `hybridgrid.worker=<worker>`.
async fn remove_labelled(docker: &Docker, worker: &str) -> Result<usize, String> {
    let ids = labelled(docker, worker).await?;
    for id in &ids {
        let _ = docker
            .remove_container(
                id,
                Some(RemoveContainerOptionsBuilder::new().force(true).build()),
            )
            .await;
    }
    if !ids.is_empty() {
        tracing::info!(
            count = ids.len(),
            "removed Docker containers left by a previous run"
        );
    }
    Ok(ids.len())
}

/// The ids of all containers (running or not) of `worker`.
async fn labelled(docker: &Docker, worker: &str) -> Result<Vec<String>, String> {
    let mut filters = HashMap::new();
    filters.insert("label", vec![format!("{WORKER_LABEL}={worker}")]);
    let list = docker
        .list_containers(Some(
            ListContainersOptionsBuilder::new()
                .all(true)
                .filters(&filters)
                .build(),
        ))
        .await
        .map_err(|e| e.to_string())?;
    Ok(list.into_iter().filter_map(|c| c.id).collect())
}

/// The number of containers (running or not) labelled for `worker`, for
/// checks and tests; `None` without a usable daemon.
pub async fn count_containers(docker_host: Option<&str>, worker: &str) -> Option<usize> {
    let mut opts = DockerOptions::new(worker, BTreeMap::new());
    opts.docker_host = docker_host.map(str::to_owned);
    let docker = connect(&opts).ok()?;
    labelled(&docker, worker).await.ok().map(|v| v.len())
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
