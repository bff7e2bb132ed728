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

mod isolation;
mod process;

pub use isolation::Isolation;
use isolation::bwrap_args;

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
}

/// The name a worker gives a task's input inside the task's working
/// directory: the client's source name when it is a plain relative path
/// (the compiler records the input's name in the object when the input
/// has no line markers), else its last component, else `input.EXT`.
/// Always relative, without `.`, `..` or a root, and never one of the
/// compile's outputs.
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
mod tests;
