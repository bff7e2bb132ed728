//! The native executor: runs a detected compiler in a fresh private
//! directory per task.
//!
//! A task's arguments are checked first
//! ([`validate_remote_args`](crate::args::validate_remote_args)): anything
//! that would read or write files, load code or is unknown is refused.
//! Each task gets its own temporary directory holding only its input; the
//! compiler runs there with a cleaned environment in its own process group,
//! writes its outputs there, and the directory is removed afterwards,
//! whatever happened. A compile that outlives the task timeout is killed
//! with its whole process tree and reported as `deadline exceeded`.
//!
//! On Linux the compiler is also isolated when the machine allows it
//! without root ([`Isolation`]): with bubblewrap it has no network, sees
//! the system read-only and can write only its task directory; with
//! `unshare` it has no network. `worker.isolation: off` turns this off.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::Stdio;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hybridgrid_core::config::IsolationMode;
use hybridgrid_core::payload::Payload;
use hybridgrid_core::task::{
    CompileOutput, CompileTask, ContextFile, OutputFile, OutputKind, Timings,
};
use hybridgrid_core::worker::CompilerInfo;
use hybridgrid_core::{BoxError, GridError};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::Command;

/// Environment variables passed through to the compiler; everything else
/// (`CPATH`, `DEPENDENCIES_OUTPUT`, `GCC_EXEC_PREFIX`...) is dropped.
const PASS_ENV: &[&str] = &["PATH", "LANG", "LC_ALL", "LC_MESSAGES", "LC_CTYPE"];

/// Settings of the native executor.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct NativeOptions {
    /// A compile running longer is killed.
    pub task_timeout: Duration,
    /// Largest decoded input accepted, in bytes.
    pub max_input_bytes: u64,
    /// Largest output (object plus diagnostics) returned, in bytes.
    pub max_output_bytes: u64,
    /// Where task directories are created (default: the system temp dir).
    pub work_root: Option<PathBuf>,
    /// The claimed directory `work_root` points into, kept for as long as
    /// the executor runs (see [`crate::work_dir`]); only set with
    /// [`NativeOptions::with_work_dir`], which sets `work_root` with it.
    work_dir: Option<Arc<crate::work_dir::WorkDir>>,
    /// How compilers are isolated (default: the best available).
    pub isolation: IsolationMode,
    /// Where the files of compiles from source are kept by digest (none by
    /// default: every file is written per compile, and a file sent by
    /// digest only must be this machine's own); set with
    /// [`NativeOptions::with_input_store`].
    input_store: Option<Arc<crate::input_store::InputStore>>,
}

impl Default for NativeOptions {
    fn default() -> Self {
        NativeOptions {
            task_timeout: Duration::from_secs(300),
            max_input_bytes: 1024 * 1024 * 1024,
            max_output_bytes: 256 * 1024 * 1024,
            work_root: None,
            work_dir: None,
            isolation: IsolationMode::Auto,
            input_store: None,
        }
    }
}

task_bound_builders!(NativeOptions);

impl NativeOptions {
    /// Options whose task directories go in `dir`, a worker's claimed
    /// directory, which the executor keeps until it is dropped.
    pub fn with_work_dir(mut self, dir: Arc<crate::work_dir::WorkDir>) -> Self {
        self.work_root = Some(dir.path().to_path_buf());
        self.work_dir = Some(dir);
        self
    }

    /// Options whose compiles from source keep their files in `store`
    /// (see [`crate::input_store`]), so that later compiles may send them
    /// by digest only.
    pub fn with_input_store(mut self, store: Arc<crate::input_store::InputStore>) -> Self {
        self.input_store = Some(store);
        self
    }

    /// Options with this isolation mode.
    pub fn with_isolation(mut self, mode: IsolationMode) -> Self {
        self.isolation = mode;
        self
    }
}

/// The isolation a native compile runs under.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Isolation {
    /// None: the compiler has the worker's network and file access.
    None,
    /// Through `bwrap` (this binary): new network, PID and IPC namespaces
    /// (no network), the file system read-only, the work root hidden and
    /// only the task's own directory writable.
    Bubblewrap(PathBuf),
    /// Through `unshare --net --map-root-user` (this binary): no network;
    /// files are not protected.
    Unshare(PathBuf),
}

impl Isolation {
    /// A short description for logs and docs.
    pub fn describe(&self) -> &'static str {
        match self {
            Isolation::None => "none (compilers have the worker's network and file access)",
            Isolation::Bubblewrap(_) => {
                "bubblewrap (no network, read-only file system, only the task directory writable)"
            }
            Isolation::Unshare(_) => "unshare (no network; the file system is not protected)",
        }
    }

    /// The isolation `mode` asks for on this machine: for `auto` the best
    /// one that works, for a named one that one or why it cannot be used.
    /// Probing runs `bwrap`/`unshare` once per process (tens of
    /// milliseconds), and not at all for `off`: hgbuild compiling on its
    /// own machine must not pay for it on every call.
    pub fn resolve(mode: IsolationMode) -> Result<Isolation, String> {
        if mode == IsolationMode::Off {
            return Ok(Isolation::None);
        }
        let probed = probed();
        match mode {
            IsolationMode::Off => Ok(Isolation::None),
            IsolationMode::Bubblewrap => probed.0.clone().map(Isolation::Bubblewrap),
            IsolationMode::Unshare => probed.1.clone().map(Isolation::Unshare),
            _ => Ok(match probed {
                (Ok(b), _) => Isolation::Bubblewrap(b.clone()),
                (_, Ok(u)) => Isolation::Unshare(u.clone()),
                _ => Isolation::None,
            }),
        }
    }
}

type Probe = Result<PathBuf, String>;

fn probed() -> &'static (Probe, Probe) {
    static PROBED: std::sync::OnceLock<(Probe, Probe)> = std::sync::OnceLock::new();
    PROBED.get_or_init(|| {
        let dirs = crate::detect::DetectOptions::default().path_dirs;
        let probe = |name: &str, args: &[&str]| -> Probe {
            let path = crate::detect::which(name, &dirs)
                .ok_or_else(|| format!("`{name}` not found on PATH"))?;
            let out = std::process::Command::new(&path)
                .args(args)
                .arg("true")
                .stdin(Stdio::null())
                .output()
                .map_err(|e| format!("cannot run {}: {e}", path.display()))?;
            if out.status.success() {
                Ok(path)
            } else {
                Err(format!(
                    "{} does not work here: {}",
                    path.display(),
                    String::from_utf8_lossy(&out.stderr).trim()
                ))
            }
        };
        let mut bwrap_args = bwrap_args(Path::new("/"), Path::new("/"), None);
        bwrap_args.push("--".into());
        let bwrap_args: Vec<&str> = bwrap_args.iter().map(String::as_str).collect();
        (
            probe("bwrap", &bwrap_args),
            probe("unshare", &["--net", "--map-root-user", "--"]),
        )
    })
}

/// The `bwrap` options that isolate a compile in `task_dir` (writable),
/// running in `cwd` (inside it); the directory `hide` (the work root) is
/// replaced by an empty tmpfs first.
fn bwrap_args(task_dir: &Path, cwd: &Path, hide: Option<&Path>) -> Vec<String> {
    let mut a: Vec<String> = [
        "--unshare-net",
        "--unshare-pid",
        "--unshare-ipc",
        "--die-with-parent",
        "--new-session",
        "--ro-bind",
        "/",
        "/",
        "--dev",
        "/dev",
        "--proc",
        "/proc",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    if let Some(h) = hide.filter(|h| *h != Path::new("/")) {
        a.extend(["--tmpfs".into(), h.display().to_string()]);
    }
    if task_dir != Path::new("/") {
        let d = task_dir.display().to_string();
        a.extend([
            "--bind".into(),
            d.clone(),
            d,
            "--chdir".into(),
            cwd.display().to_string(),
        ]);
    }
    a
}

struct Inner {
    compilers: Vec<CompilerInfo>,
    opts: NativeOptions,
    /// The isolation in effect, or why the one asked for is unusable.
    isolation: Result<Isolation, String>,
    /// Hashes of this machine's copies of files that compiles from source
    /// brought along.
    hashes: Arc<crate::source_tree::LocalHashes>,
}

/// Runs compiles with the compilers detected on this machine.
#[derive(Clone)]
pub struct NativeExecutor {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for NativeExecutor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NativeExecutor")
            .field("compilers", &self.inner.compilers.len())
            .field("opts", &self.inner.opts)
            .finish()
    }
}

impl NativeExecutor {
    /// An executor that may run exactly these compilers.
    ///
    /// Resolves the isolation asked for in `opts` and logs which one is in
    /// effect. If a named isolation (`bubblewrap`, `unshare`) does not work
    /// here, the reason is logged and every task is refused with it rather
    /// than run unprotected.
    pub fn new(compilers: Vec<CompilerInfo>, opts: NativeOptions) -> Self {
        let isolation = Isolation::resolve(opts.isolation);
        match &isolation {
            Ok(Isolation::None) if opts.isolation == IsolationMode::Auto => tracing::warn!(
                isolation = "none",
                "native executor isolation: {} (install bubblewrap or allow unprivileged user namespaces)",
                Isolation::None.describe()
            ),
            Ok(i) => tracing::info!(
                isolation = i.describe(),
                "native executor isolation: {}",
                i.describe()
            ),
            Err(e) => tracing::error!(
                mode = opts.isolation.as_str(),
                error = %e,
                "native executor isolation unavailable: every task will be refused"
            ),
        }
        NativeExecutor {
            inner: Arc::new(Inner {
                compilers,
                opts,
                isolation,
                hashes: Default::default(),
            }),
        }
    }

    /// The isolation in effect (`None` when the one configured is unusable).
    pub fn isolation(&self) -> Option<&Isolation> {
        self.inner.isolation.as_ref().ok()
    }

    /// The compilers it may run.
    pub fn compilers(&self) -> &[CompilerInfo] {
        &self.inner.compilers
    }

    /// Compiles one task.
    pub async fn run(&self, task: CompileTask) -> Result<CompileOutput, GridError> {
        self.inner.run(task).await
    }
}

impl hybridgrid_core::can_run::CanRun for NativeExecutor {
    /// A compiler it detected.
    fn can_run(&self, task: &CompileTask) -> Result<(), GridError> {
        if self.compilers().iter().any(|c| c.identity == task.compiler) {
            Ok(())
        } else {
            Err(hybridgrid_core::can_run::unknown_compiler(
                task,
                self.compilers(),
            ))
        }
    }
}

impl tower::Service<CompileTask> for NativeExecutor {
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

/// The worker-side storage failure a failed compile's diagnostics show
/// (full disk, read-only or over-quota temporary directory). Such a
/// failure is the worker's, so it must not reach the user as a compile
/// error: the task is retried elsewhere instead.
/// A failed compile whose diagnostics show the worker's own disk failing:
/// not the user's error, so another worker (or the client) gets the task.
fn storage_failure(exit_code: i32, stderr: &[u8], dir: &Path) -> Result<(), GridError> {
    match worker_storage_fault(stderr) {
        Some(why) if exit_code != 0 => Err(GridError::Internal(format!(
            "worker storage failure in {}: {why}",
            dir.display()
        ))),
        _ => Ok(()),
    }
}

fn worker_storage_fault(stderr: &[u8]) -> Option<&'static str> {
    let text = String::from_utf8_lossy(stderr);
    [
        "No space left on device",
        "Read-only file system",
        "Disk quota exceeded",
    ]
    .into_iter()
    .find(|needle| text.contains(needle))
}

fn internal(what: &str, e: impl std::fmt::Display) -> GridError {
    GridError::Internal(format!("{what}: {e}"))
}

/// Reads at most `limit` bytes; more is an error.
async fn read_limited<R: AsyncRead + Unpin>(mut r: R, limit: u64) -> std::io::Result<Vec<u8>> {
    let mut buf = Vec::new();
    let mut take = (&mut r).take(limit + 1);
    take.read_to_end(&mut buf).await?;
    if buf.len() as u64 > limit {
        return Err(std::io::Error::other(format!(
            "compiler output exceeds the limit of {limit} bytes"
        )));
    }
    Ok(buf)
}

fn kill_group(pid: Option<u32>) {
    if let Some(pid) = pid.and_then(|p| i32::try_from(p).ok()) {
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}

impl Inner {
    async fn run(&self, task: CompileTask) -> Result<CompileOutput, GridError> {
        // Nothing runs before the arguments pass the worker's allow list
        // (a compile from source has its own, wider one).
        crate::args::validate_task_args(&task)
            .map_err(|e| GridError::InvalidTask(e.to_string()))?;
        let isolation = self.isolation.as_ref().map_err(|e| {
            GridError::Internal(format!(
                "isolation `{}` is not usable on this worker: {e}",
                self.opts.isolation.as_str()
            ))
        })?;
        let compiler = self
            .compilers
            .iter()
            .find(|c| c.identity == task.compiler)
            .ok_or_else(|| {
                hybridgrid_core::can_run::missing_compiler(
                    &task,
                    &self.compilers,
                    "is not available on this worker",
                )
            })?;
        let input = task
            .input
            .decode_limited(self.opts.max_input_bytes)
            .map_err(|e| GridError::InvalidTask(e.to_string()))?;

        let dir = match &self.opts.work_root {
            Some(root) => tempfile::Builder::new().prefix("hg-task-").tempdir_in(root),
            None => tempfile::Builder::new().prefix("hg-task-").tempdir(),
        }
        .map_err(|e| internal("cannot create task directory", e))?;
        if let Some(mode) = &task.source_mode {
            return self
                .run_from_source(isolation, &compiler.path, &task, mode, dir)
                .await;
        }
        // The compile's working directory sits deep enough that context
        // files named `../x.h` stay inside the task directory.
        let depth = task
            .context_files
            .iter()
            .filter_map(|f| ContextFile::parent_depth(&f.path))
            .max()
            .unwrap_or(0)
            .min(16);
        let mut work = dir.path().join("w");
        for i in 0..depth {
            work.push(format!("d{i}"));
        }
        let mut input_name = input_file_name(&task.source_name, task.language.extension());
        if task.context_files.iter().any(|f| f.path == input_name) {
            input_name = format!(".hg-input.{}", task.language.extension());
        }
        let mut files: Vec<(String, Bytes)> = Vec::with_capacity(task.context_files.len() + 1);
        for f in &task.context_files {
            if ContextFile::parent_depth(&f.path).is_none_or(|d| d > depth) {
                continue;
            }
            let data = f
                .data
                .decode_limited(self.opts.max_input_bytes)
                .map_err(|e| GridError::InvalidTask(format!("context file {}: {e}", f.path)))?;
            files.push((f.path.clone(), data));
        }
        files.push((input_name.clone(), input));
        for (rel, data) in &files {
            let path = work.join(rel);
            if let Some(parent) = path.parent() {
                tokio::fs::create_dir_all(parent)
                    .await
                    .map_err(|e| internal("cannot create task directory", e))?;
            }
            tokio::fs::write(&path, data)
                .await
                .map_err(|e| internal("cannot write task input", e))?;
        }

        let mut args: Vec<String> = vec!["-x".into(), task.language.as_x_arg().into()];
        args.extend(task.args.iter().cloned());
        args.extend(["-c".into(), input_name, "-o".into(), "output.o".into()]);
        let result = self
            .spawn_and_wait(isolation, &compiler.path, &args, dir.path(), &work)
            .await;
        let (exit_code, stdout, stderr, elapsed) = result?;
        storage_failure(exit_code, &stderr, dir.path())?;
        let mut wanted = vec![(OutputKind::Object, work.join("output.o"))];
        if task.extra_outputs.contains(&OutputKind::SplitDwarf) {
            wanted.push((OutputKind::SplitDwarf, work.join("output.dwo")));
        }
        // `dir` is dropped at the end: the task directory is removed.
        self.collect(exit_code, stdout, stderr, elapsed, wanted)
            .await
    }

    /// A compile from source (see [`crate::source_tree`]).
    async fn run_from_source(
        &self,
        isolation: &Isolation,
        program: &str,
        task: &CompileTask,
        mode: &hybridgrid_core::task::SourceMode,
        dir: tempfile::TempDir,
    ) -> Result<CompileOutput, GridError> {
        let layout = crate::source_tree::lay_out(
            task,
            mode,
            dir.path(),
            self.opts.max_input_bytes,
            &self.hashes,
            self.opts.input_store.as_ref(),
        )
        .await?;
        let base = layout.root.parent().unwrap_or(&layout.root).to_path_buf();
        let (exit_code, stdout, stderr, elapsed) = self
            .spawn_and_wait(isolation, program, &layout.args, &base, &layout.work)
            .await?;
        storage_failure(exit_code, &stderr, dir.path())?;
        if exit_code != 0
            && let Some(line) = crate::source_tree::missing_header(&stderr)
        {
            return Err(GridError::InvalidTask(format!(
                "a header the client has is missing on this worker ({}); a compile \
                 from source (debug info) needs the same headers installed, so it \
                 compiles on the client",
                String::from_utf8_lossy(&crate::source_tree::unmap(
                    line.into_bytes(),
                    &layout.root
                ))
            )));
        }
        let kinds = std::iter::once(OutputKind::Object).chain(task.extra_outputs.iter().copied());
        let wanted = kinds.zip(layout.outputs.iter().cloned());
        let stdout = crate::source_tree::unmap(stdout, &layout.root);
        let stderr = crate::source_tree::unmap(stderr, &layout.root);
        self.collect(exit_code, stdout, stderr, elapsed, wanted)
            .await
    }

    /// The result of a compile that ran: on success its output files
    /// (`wanted`, read within the output limit), and its diagnostics.
    async fn collect(
        &self,
        exit_code: i32,
        stdout: Vec<u8>,
        stderr: Vec<u8>,
        elapsed: Duration,
        wanted: impl IntoIterator<Item = (OutputKind, PathBuf)>,
    ) -> Result<CompileOutput, GridError> {
        let mut outputs = Vec::new();
        let mut total = (stdout.len() + stderr.len()) as u64;
        if exit_code == 0 {
            for (kind, path) in wanted {
                let data =
                    read_output(&path, self.opts.max_output_bytes.saturating_sub(total)).await?;
                total += data.len() as u64;
                outputs.push(OutputFile {
                    kind,
                    data: Payload::compress(data),
                });
            }
        }
        let mut out = CompileOutput::default();
        out.exit_code = exit_code;
        out.stdout = Bytes::from(stdout);
        out.stderr = Bytes::from(stderr);
        out.outputs = outputs;
        out.timings = Timings {
            queue: Duration::ZERO,
            compile: elapsed,
        };
        Ok(out)
    }

    async fn spawn_and_wait(
        &self,
        isolation: &Isolation,
        program: &str,
        args: &[String],
        task_dir: &Path,
        cwd: &Path,
    ) -> Result<(i32, Vec<u8>, Vec<u8>, Duration), GridError> {
        let mut cmd = match isolation {
            Isolation::None => Command::new(program),
            Isolation::Bubblewrap(bwrap) => {
                let mut c = Command::new(bwrap);
                c.args(bwrap_args(task_dir, cwd, task_dir.parent()))
                    .arg("--")
                    .arg(program);
                c
            }
            Isolation::Unshare(unshare) => {
                let mut c = Command::new(unshare);
                c.args(["--net", "--map-root-user", "--", program]);
                c
            }
        };
        cmd.args(args)
            .current_dir(cwd)
            .env_clear()
            .env("TMPDIR", cwd)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        for k in PASS_ENV {
            if let Some(v) = std::env::var_os(k) {
                cmd.env(k, v);
            }
        }
        let start = Instant::now();
        let mut child = cmd
            .spawn()
            .map_err(|e| internal(&format!("cannot start {program}"), e))?;
        let pid = child.id();
        let limit = self.opts.max_output_bytes;
        let stdout = child.stdout.take();
        let stderr = child.stderr.take();
        let work = async {
            let out_f = async {
                match stdout {
                    Some(s) => read_limited(s, limit).await,
                    None => Ok(Vec::new()),
                }
            };
            let err_f = async {
                match stderr {
                    Some(s) => read_limited(s, limit).await,
                    None => Ok(Vec::new()),
                }
            };
            let (o, e) = tokio::join!(out_f, err_f);
            let status = child.wait().await;
            (o, e, status)
        };
        let timeout = self.opts.task_timeout;
        match tokio::time::timeout(timeout, work).await {
            Ok((o, e, status)) => {
                let (o, e) = match (o, e) {
                    (Ok(o), Ok(e)) => (o, e),
                    (Err(err), _) | (_, Err(err)) => {
                        kill_group(pid);
                        return Err(internal("compiler output", err));
                    }
                };
                let status = status.map_err(|e| internal("waiting for the compiler", e))?;
                // The compiler is done; make sure nothing it started lingers.
                kill_group(pid);
                let code = match status.code() {
                    Some(c) => c,
                    None => {
                        use std::os::unix::process::ExitStatusExt;
                        128 + status.signal().unwrap_or(0)
                    }
                };
                Ok((code, o, e, start.elapsed()))
            }
            Err(_) => {
                kill_group(pid);
                Err(GridError::DeadlineExceeded(timeout))
            }
        }
    }
}

/// The name the input gets in the task directory: the client's own
/// relative path when it is a plain one (the compiler records the input's
/// name in the object when the input has no line markers), else its base
/// name, else `input.EXT`. Never anything that leaves the task directory.
/// The name a worker gives a task's input inside the task's working
/// directory: the client's source name when it is a plain relative path,
/// else its last component, else `input.EXT`. Always relative, without
/// `.`, `..` or a root, and never one of the compile's outputs.
pub fn input_file_name(source_name: &str, ext: &str) -> String {
    use std::path::Component;
    let p = Path::new(source_name);
    // The compile's outputs, and the name taken when a context file has
    // the input's name: an input named so would be overwritten or refused
    // ("input file is the same as output file").
    let reserved = |n: &str| n == "output.o" || n == "output.dwo" || n.starts_with(".hg-input.");
    let plain = !source_name.is_empty()
        && source_name.len() < 1024
        && p.components().count() <= 16
        && p.components().all(|c| matches!(c, Component::Normal(_)));
    if plain && !reserved(source_name) {
        return source_name.to_owned();
    }
    match p.file_name().and_then(|n| n.to_str()) {
        Some(n) if !n.starts_with('.') && n != "output.o" && n != "output.dwo" => n.to_owned(),
        _ => format!("input.{ext}"),
    }
}

pub(crate) async fn read_output(path: &Path, limit: u64) -> Result<Vec<u8>, GridError> {
    let meta = tokio::fs::metadata(path)
        .await
        .map_err(|e| internal(&format!("compiler wrote no {}", path.display()), e))?;
    if meta.len() > limit {
        return Err(GridError::InvalidTask(format!(
            "output {} of {} bytes exceeds the limit of {limit} bytes",
            path.file_name()
                .map(|n| n.to_string_lossy())
                .unwrap_or_default(),
            meta.len()
        )));
    }
    tokio::fs::read(path)
        .await
        .map_err(|e| internal("cannot read compiler output", e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect;
    use hybridgrid_core::task::Language;

    async fn gcc() -> CompilerInfo {
        detect::find_and_identify("gcc", &detect::DetectOptions::default().path_dirs)
            .await
            .expect("gcc must be installed for the tests")
    }

    fn preprocess(src: &str) -> Vec<u8> {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t.c");
        std::fs::write(&p, src).unwrap();
        let out = std::process::Command::new("gcc")
            .arg("-E")
            .arg(&p)
            .output()
            .unwrap();
        assert!(out.status.success());
        out.stdout
    }

    fn task(c: &CompilerInfo, src: &str, args: &[&str]) -> CompileTask {
        CompileTask::new(
            c.identity.clone(),
            Language::PreprocessedC,
            args.iter().map(|s| s.to_string()).collect(),
            "t.c",
            Payload::compress(preprocess(src)),
        )
    }

    #[test]
    fn input_names_stay_inside_the_task() {
        assert_eq!(input_file_name("big.i", "i"), "big.i");
        assert_eq!(input_file_name("src/a.i", "i"), "src/a.i");
        assert_eq!(input_file_name("/home/u/a.i", "i"), "a.i");
        assert_eq!(input_file_name("../x/a.i", "i"), "a.i");
        assert_eq!(input_file_name("..", "i"), "input.i");
        assert_eq!(input_file_name("", "i"), "input.i");
        assert_eq!(input_file_name("./a.c", "i"), "a.c");
    }

    /// A source named like an output used to keep its name, so that gcc
    /// was run as `-c output.o -o output.o` (found writing the property of
    /// the `compile_request` fuzz target, fuzz/FINDINGS.md).
    #[test]
    fn input_names_are_never_an_output() {
        for name in ["output.o", "output.dwo", "./output.o", "/tmp/output.dwo"] {
            assert_eq!(input_file_name(name, "i"), "input.i", "{name}");
        }
        assert_eq!(input_file_name(".hg-input.i", "i"), "input.i");
        assert_eq!(input_file_name("obj/output.o", "c"), "obj/output.o");
    }

    #[tokio::test]
    async fn compiles_and_cleans_up() {
        let c = gcc().await;
        let root = tempfile::tempdir().unwrap();
        let ex = NativeExecutor::new(
            vec![c.clone()],
            NativeOptions::default().with_work_root(root.path()),
        );
        let out = ex
            .run(task(&c, "int twice(int x) { return 2 * x; }\n", &["-O2"]))
            .await
            .unwrap();
        assert_eq!(out.exit_code, 0, "{}", String::from_utf8_lossy(&out.stderr));
        let obj = out
            .output(OutputKind::Object)
            .unwrap()
            .data
            .decode()
            .unwrap();
        assert_eq!(&obj[..4], b"\x7fELF");
        assert_eq!(std::fs::read_dir(root.path()).unwrap().count(), 0);
    }

    #[tokio::test]
    async fn compile_errors_are_outputs_not_errors() {
        let c = gcc().await;
        let root = tempfile::tempdir().unwrap();
        let ex = NativeExecutor::new(
            vec![c.clone()],
            NativeOptions::default().with_work_root(root.path()),
        );
        let out = ex
            .run(task(&c, "int f(void) { return nope; }\n", &[]))
            .await
            .unwrap();
        assert_ne!(out.exit_code, 0);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("t.c:1:"), "{err}");
        assert!(err.contains("nope"), "{err}");
        assert!(out.outputs.is_empty());
        assert_eq!(std::fs::read_dir(root.path()).unwrap().count(), 0);
    }

    #[tokio::test]
    async fn admission_asks_for_a_detected_compiler() {
        use hybridgrid_core::can_run::CanRun;
        let c = gcc().await;
        let t = task(&c, "int f(void){return 1;}", &[]);
        assert!(
            NativeExecutor::new(vec![c], NativeOptions::default())
                .can_run(&t)
                .is_ok()
        );
        let e = NativeExecutor::new(vec![], NativeOptions::default())
            .can_run(&t)
            .expect_err("no compilers");
        assert!(
            e.to_string().contains("not one this worker detected"),
            "{e}"
        );
    }

    #[tokio::test]
    async fn unknown_compiler_is_refused() {
        let c = gcc().await;
        let ex = NativeExecutor::new(vec![c.clone()], NativeOptions::default());
        let mut t = task(&c, "int x;\n", &[]);
        t.compiler.version = "0.0.1".into();
        let e = ex.run(t).await.unwrap_err();
        assert!(matches!(e, GridError::InvalidTask(_)), "{e}");
        assert!(e.to_string().contains("not available on this worker"));
    }

    #[tokio::test]
    async fn refused_args_name_the_argument() {
        let c = gcc().await;
        let ex = NativeExecutor::new(vec![c.clone()], NativeOptions::default());
        let e = ex
            .run(task(&c, "int x;\n", &["-O2", "-fplugin=/tmp/evil.so"]))
            .await
            .unwrap_err();
        assert!(matches!(e, GridError::InvalidTask(_)), "{e}");
        assert!(e.to_string().contains("-fplugin=/tmp/evil.so"), "{e}");
    }

    #[tokio::test]
    async fn timeout_kills_and_reports_deadline_exceeded() {
        // A "compiler" that hangs: a shell script posing as gcc, with a
        // child process, so the whole group must be killed.
        let dir = tempfile::tempdir().unwrap();
        let fake = dir.path().join("slowcc");
        let pidfile = dir.path().join("child.pid");
        std::fs::write(
            &fake,
            format!(
                "#!/bin/sh\nsleep 30 &\necho $! > {}\nwait\n",
                pidfile.display()
            ),
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
        let mut c = gcc().await;
        c.path = fake.display().to_string();
        let ex = NativeExecutor::new(
            vec![c.clone()],
            NativeOptions::default()
                .with_timeout(Duration::from_millis(500))
                .with_isolation(IsolationMode::Off),
        );
        let t0 = Instant::now();
        let e = ex.run(task(&c, "int x;\n", &[])).await.unwrap_err();
        assert!(e.to_string().contains("deadline exceeded"), "{e}");
        assert!(t0.elapsed() < Duration::from_secs(10));
        // The grandchild is gone too.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let pid: i32 = std::fs::read_to_string(&pidfile)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let alive = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok()
            && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .map(|s| s.contains(") Z "))
                .unwrap_or(true);
        assert!(!alive, "child process {pid} survived the timeout");
    }

    #[test]
    fn storage_faults_in_diagnostics_are_the_workers() {
        let full = b"cc1: fatal error: cannot write output.o: No space left on device\n";
        assert_eq!(worker_storage_fault(full), Some("No space left on device"));
        assert_eq!(
            worker_storage_fault(b"x.c:1:1: error: expected ';' before '}' token\n"),
            None
        );
    }

    #[tokio::test]
    async fn output_is_bounded() {
        let c = gcc().await;
        let ex = NativeExecutor::new(
            vec![c.clone()],
            NativeOptions::default().with_max_output_bytes(64),
        );
        let e = ex
            .run(task(&c, "int big[4096] = {1};\n", &[]))
            .await
            .unwrap_err();
        assert!(e.to_string().contains("exceeds the limit"), "{e}");
    }
}
