//! The client side of a compile, as `hgbuild cc ARGS` runs it: classify the
//! command line, preprocess here, compile through a remote service, write
//! the outputs; or run the compiler locally when the command is not
//! distributable or the grid cannot help.
//!
//! The remote side is any `tower::Service<CompileTask>`: the coordinator's
//! gRPC client, a `CacheLayer` around it, or an embedding tool's own service.

use std::ffi::OsString;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use hybridgrid_core::payload::Payload;
use hybridgrid_core::task::{CompileOutput, CompileTask, ContextFile, OutputKind, Timings};
use hybridgrid_core::worker::CompilerInfo;
use hybridgrid_core::{BoxError, GridError};
use tokio::process::Command;
use tower::{Service, ServiceExt};

use crate::args::{self, Classification, CompilePlan, DiagnosticsColor};

/// How the client behaves.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ClientOptions {
    /// Compile locally when the grid fails (else fail with its error).
    pub fallback: bool,
    /// Print a line per file saying where it was compiled.
    pub verbose: bool,
    /// Standard error is a terminal (ask remote compilers for colors).
    pub color: bool,
    /// Send `-g` compiles to the grid too. Their objects then differ from a
    /// local build in the line table's column numbers (macros expand
    /// before the remote compile sees them), so this is off by default.
    pub remote_debug_info: bool,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            fallback: true,
            verbose: false,
            color: false,
            remote_debug_info: false,
        }
    }
}

/// Where a compile ran.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Route {
    /// Served from a cache.
    Cache,
    /// Compiled by this worker.
    Remote(String),
    /// Compiled here, for this reason.
    Local(String),
    /// Not a compile; the command ran here as is.
    Passthrough,
}

impl std::fmt::Display for Route {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Route::Cache => f.write_str("[cache]"),
            Route::Remote(w) => write!(f, "[remote {w}]"),
            Route::Local(r) => write!(f, "[local {r}]"),
            Route::Passthrough => f.write_str("[local not a compile]"),
        }
    }
}

/// The result of one compiler invocation.
#[derive(Clone, Debug)]
pub struct Outcome {
    /// The exit code to exit with.
    pub exit_code: i32,
    /// Where it ran.
    pub route: Route,
    /// The source, for distributable compiles.
    pub source: Option<PathBuf>,
    /// How long it took.
    pub elapsed: Duration,
    /// Why the grid was not used, when a remote compile failed over to
    /// local (the warning that was printed).
    pub fallback_reason: Option<String>,
    /// Where the grid spent the time of a remote compile (queue on the
    /// worker, compiler run); zero for local compiles and cache hits.
    pub timings: Timings,
}

/// Runs `compiler args` locally, inheriting standard streams; returns its
/// exit code.
pub async fn run_local(compiler: &Path, args: &[OsString]) -> i32 {
    match Command::new(compiler).args(args).status().await {
        Ok(s) => exit_code_of(s),
        Err(e) => {
            eprintln!("hgbuild: cannot run {}: {e}", compiler.display());
            127
        }
    }
}

fn exit_code_of(s: std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    s.code().unwrap_or_else(|| 128 + s.signal().unwrap_or(0))
}

/// Writes `data` to `path` atomically (temporary file in the same directory,
/// then rename), so a reader never sees a partial file.
pub fn write_atomic(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let mut tmp = tempfile::Builder::new()
        .prefix(".hg-out-")
        .tempfile_in(&dir)?;
    tmp.write_all(data)?;
    tmp.as_file().sync_data().ok();
    // Objects get the usual mode (0666 & ~umask), as the compiler's would.
    let mode = 0o666 & !current_umask();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(mode))?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

fn current_umask() -> u32 {
    // Read it without changing it: /proc/self/status has `Umask:`.
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Umask:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| u32::from_str_radix(v, 8).ok())
        })
        .unwrap_or(0o022)
}

/// What the local half of a distributable compile produced.
#[derive(Debug)]
pub struct Prepared {
    /// The task to send.
    pub task: CompileTask,
    /// The plan it came from.
    pub plan: CompilePlan,
}

/// Preprocesses the plan's source here and builds the task. `Err(code)`
/// means preprocessing failed (its diagnostics were printed): the compile
/// fails with that exit code, as the plain compiler's would.
pub async fn prepare(
    compiler: &CompilerInfo,
    plan: CompilePlan,
    opts: &ClientOptions,
) -> Result<Prepared, PrepareError> {
    let input = match plan.preprocess_args() {
        Some(pp_args) => {
            let out = Command::new(&compiler.path)
                .args(&pp_args)
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .output()
                .await
                .map_err(|e| PrepareError::Io(format!("cannot run the preprocessor: {e}")))?;
            if !out.stderr.is_empty() {
                let _ = std::io::stderr().write_all(&out.stderr);
            }
            if !out.status.success() {
                return Err(PrepareError::Failed(exit_code_of(out.status)));
            }
            out.stdout
        }
        None => tokio::fs::read(plan.source()).await.map_err(|e| {
            PrepareError::Io(format!("cannot read {}: {e}", plan.source().display()))
        })?,
    };
    let mut remote_args = plan.remote_args();
    if opts.color
        && !plan.debug_info()
        && matches!(
            plan.diagnostics_color(),
            DiagnosticsColor::Unspecified | DiagnosticsColor::Auto
        )
    {
        remote_args.push("-fdiagnostics-color=always".into());
    }
    // Read from the preprocessed text before it is compressed.
    let context = if plan.needs_preprocessing() {
        context_files(&input)
    } else {
        Vec::new()
    };
    let mut task = CompileTask::new(
        compiler.identity.clone(),
        plan.remote_language(),
        remote_args,
        plan.source().display().to_string(),
        Payload::compress(input),
    );
    task.extra_outputs = plan.extra_output_kinds();
    task.context_files = context;
    task.cwd = std::env::current_dir()
        .map(|d| d.display().to_string())
        .unwrap_or_default();
    Ok(Prepared { task, plan })
}

/// Most bytes of context files sent with one task.
const CONTEXT_BUDGET: u64 = 8 * 1024 * 1024;
/// Largest single context file.
const CONTEXT_FILE_MAX: u64 = 1024 * 1024;

/// The source files of a translation unit that the remote compiler may
/// quote in diagnostics: those named by relative paths in the line markers
/// (the project's own files), within a size budget.
pub fn context_files(preprocessed: &[u8]) -> Vec<ContextFile> {
    let mut out = Vec::new();
    let mut budget = CONTEXT_BUDGET;
    for path in hybridgrid_core::preprocessed::line_marker_files(preprocessed) {
        if ContextFile::parent_depth(&path).is_none_or(|d| d > 16) {
            continue;
        }
        let Ok(meta) = std::fs::metadata(&path) else {
            continue;
        };
        if !meta.is_file() || meta.len() > CONTEXT_FILE_MAX || meta.len() > budget {
            continue;
        }
        let Ok(data) = std::fs::read(&path) else {
            continue;
        };
        budget -= data.len() as u64;
        out.push(ContextFile {
            path,
            data: Payload::compress(data),
        });
    }
    out
}

/// Why a task could not be prepared.
#[derive(Debug)]
pub enum PrepareError {
    /// The preprocessor failed with this exit code (diagnostics printed).
    Failed(i32),
    /// Something else failed (the compile can still run locally).
    Io(String),
}

/// Writes a remote result: diagnostics, then (on success) every output
/// file atomically; on failure removes stale outputs, as the compiler does.
pub fn apply_output(plan: &CompilePlan, out: &CompileOutput) -> std::io::Result<i32> {
    if !out.stdout.is_empty() {
        std::io::stdout().write_all(&out.stdout)?;
        std::io::stdout().flush()?;
    }
    if !out.stderr.is_empty() {
        std::io::stderr().write_all(&out.stderr)?;
    }
    if out.exit_code != 0 {
        for o in plan.outputs() {
            let _ = std::fs::remove_file(&o.path);
        }
        return Ok(out.exit_code);
    }
    // Decode everything first: nothing is written unless all of it is good.
    let mut files = Vec::new();
    for o in plan.outputs() {
        let f = out.output(o.kind).ok_or_else(|| {
            std::io::Error::other(format!(
                "the worker returned no {} file",
                match o.kind {
                    OutputKind::SplitDwarf => "split DWARF",
                    _ => "object",
                }
            ))
        })?;
        let data = f.data.decode().map_err(std::io::Error::other)?;
        files.push((o.path.clone(), data));
    }
    for (path, data) in files {
        write_atomic(&path, &data)?;
    }
    Ok(0)
}

/// Runs one compiler invocation: `compiler args`, through `remote` when the
/// command is distributable. `remote` is `None` when no grid is configured
/// (compile locally, silently) and `Some(Err(..))` when it could not be
/// reached (fall back locally with a warning, or fail without fallback).
///
/// Diagnostics go to this process's standard error; the returned exit code
/// is the compiler's.
pub async fn compile<R>(
    compiler: &CompilerInfo,
    args: &[OsString],
    remote: Option<Result<R, GridError>>,
    opts: &ClientOptions,
) -> Outcome
where
    R: Service<CompileTask, Response = CompileOutput, Error = BoxError>,
{
    let start = Instant::now();
    let path = PathBuf::from(&compiler.path);
    let cwd = std::env::current_dir().unwrap_or_default();
    let plan = match args::classify_in(
        compiler.identity.family,
        compiler.identity.driver,
        args,
        &cwd,
    ) {
        Classification::Distributable(plan) => plan,
        Classification::Local(reason) => {
            let code = run_local(&path, args).await;
            return Outcome {
                exit_code: code,
                route: Route::Local(reason.to_string()),
                source: None,
                elapsed: start.elapsed(),
                fallback_reason: None,
                timings: Timings::default(),
            };
        }
        Classification::NotCompile => {
            let code = run_local(&path, args).await;
            return Outcome {
                exit_code: code,
                route: Route::Passthrough,
                source: None,
                elapsed: start.elapsed(),
                fallback_reason: None,
                timings: Timings::default(),
            };
        }
    };
    let source = Some(plan.source().to_path_buf());
    if plan.debug_info() && !opts.remote_debug_info {
        // A remote compile of preprocessed source records different column
        // numbers in the line table (see RECIPES): keep -g objects exact.
        let code = run_local(&path, args).await;
        return Outcome {
            exit_code: code,
            route: Route::Local(
                "debug info (-g) is compiled locally to stay byte-identical".into(),
            ),
            source,
            elapsed: start.elapsed(),
            fallback_reason: None,
            timings: Timings::default(),
        };
    }
    let local = |reason: String, warn: bool| {
        let path = path.clone();
        let source = source.clone();
        async move {
            if warn {
                eprintln!(
                    "hgbuild: warning: {}: {reason}; compiling locally",
                    source
                        .as_ref()
                        .map(|s| s.display().to_string())
                        .unwrap_or_default()
                );
            }
            let code = run_local(&path, args).await;
            Outcome {
                exit_code: code,
                route: Route::Local(reason.clone()),
                source,
                elapsed: start.elapsed(),
                fallback_reason: warn.then_some(reason),
                timings: Timings::default(),
            }
        }
    };
    let remote = match remote {
        Some(Ok(r)) => r,
        None => return local("no coordinator configured".into(), false).await,
        Some(Err(e)) => return grid_failure(e, opts, local).await,
    };
    let prepared = match prepare(compiler, plan, opts).await {
        Ok(p) => p,
        Err(PrepareError::Failed(code)) => {
            return Outcome {
                exit_code: code,
                route: Route::Local("preprocessing failed".into()),
                source,
                elapsed: start.elapsed(),
                fallback_reason: None,
                timings: Timings::default(),
            };
        }
        Err(PrepareError::Io(m)) => return local(m, true).await,
    };
    let result = remote.oneshot(prepared.task).await;
    match result {
        Ok(out) => {
            let route = if out.from_cache {
                Route::Cache
            } else {
                Route::Remote(
                    out.worker_id
                        .as_ref()
                        .map(|w| w.0.clone())
                        .unwrap_or_else(|| "?".into()),
                )
            };
            match apply_output(&prepared.plan, &out) {
                Ok(code) => Outcome {
                    exit_code: code,
                    route,
                    source,
                    elapsed: start.elapsed(),
                    fallback_reason: None,
                    timings: out.timings,
                },
                Err(e) => local(format!("cannot write the remote result: {e}"), true).await,
            }
        }
        Err(e) => {
            let g = GridError::find(e.as_ref())
                .cloned()
                .unwrap_or_else(|| GridError::Internal(e.to_string()));
            grid_failure(g, opts, local).await
        }
    }
}

async fn grid_failure<F, Fut>(e: GridError, opts: &ClientOptions, local: F) -> Outcome
where
    F: FnOnce(String, bool) -> Fut,
    Fut: std::future::Future<Output = Outcome>,
{
    let reason = e.to_string();
    if opts.fallback {
        return local(reason, true).await;
    }
    eprintln!("hgbuild: error: {reason} (local fallback is disabled)");
    Outcome {
        exit_code: 1,
        route: Route::Local("failed".into()),
        source: None,
        elapsed: Duration::ZERO,
        fallback_reason: Some(reason),
        timings: Timings::default(),
    }
}
