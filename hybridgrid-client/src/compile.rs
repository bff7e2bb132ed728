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
use std::time::{Duration, Instant, SystemTime};

use hybridgrid_core::payload::Payload;
use hybridgrid_core::task::{CompileOutput, CompileTask, ContextFile, OutputKind, Timings};
use hybridgrid_core::worker::CompilerInfo;
use hybridgrid_core::{BoxError, GridError};
use tokio::process::Command;
use tower::{Service, ServiceExt};

use hybridgrid_cache::{CacheEntry, CacheKey};

pub use crate::local_cache::LocalCache;
use crate::local_cache::{DirectProbe, RecordInput};
use hybridgrid_exec::args::{self, Classification, CompilePlan, DiagnosticsColor};

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
    /// Send `-g` compiles to the grid, compiled from source (the source and
    /// every header it read travel; the worker lays them out at this
    /// machine's paths and maps its directory away), so their objects are
    /// byte-identical to a local build's. Off: they compile locally.
    pub remote_debug_info: bool,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            fallback: true,
            verbose: false,
            color: false,
            remote_debug_info: true,
        }
    }
}

/// Where a compile ran.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Route {
    /// Served from a cache.
    Cache,
    /// Served from the local cache in direct mode: the preprocessor did
    /// not run.
    DirectCache,
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
            Route::DirectCache => f.write_str("[cache direct]"),
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
    // Objects get the usual mode (0666 & ~umask), as the compiler's would:
    // the kernel applies the umask to the mode given at creation.
    use std::os::unix::fs::PermissionsExt;
    let mut tmp = tempfile::Builder::new()
        .prefix(".hg-out-")
        .permissions(std::fs::Permissions::from_mode(0o666))
        .tempfile_in(&dir)?;
    tmp.write_all(data)?;
    // Renaming over an existing file makes ext4 flush the new one first
    // (auto_da_alloc); an old object goes first. A reader still sees no
    // file or a whole one.
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

/// What the local half of a distributable compile produced.
#[derive(Debug)]
pub struct Prepared {
    /// The task to send.
    pub task: CompileTask,
    /// The plan it came from.
    pub plan: CompilePlan,
    /// What the preprocessor printed on standard error (not yet shown).
    pub preprocessor_stderr: Vec<u8>,
    /// The files the preprocessor read, from its line markers.
    pub includes: Vec<String>,
    /// Whether `-fdiagnostics-color=always` was added to the task.
    pub color_added: bool,
}

/// Whether the remote compile of `plan` gets `-fdiagnostics-color=always`
/// (standard error is a terminal and the command leaves colors to it).
pub fn adds_color(plan: &CompilePlan, opts: &ClientOptions) -> bool {
    opts.color
        && matches!(
            plan.diagnostics_color(),
            DiagnosticsColor::Unspecified | DiagnosticsColor::Auto
        )
}

/// Preprocesses the plan's source here and builds the task. `Err(code)`
/// means preprocessing failed (its diagnostics were printed): the compile
/// fails with that exit code, as the plain compiler's would. On success the
/// preprocessor's diagnostics are in [`Prepared::preprocessor_stderr`], for
/// the caller to show.
pub async fn prepare(
    compiler: &CompilerInfo,
    plan: CompilePlan,
    opts: &ClientOptions,
) -> Result<Prepared, PrepareError> {
    let mut preprocessor_stderr = Vec::new();
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
            if !out.status.success() {
                let _ = std::io::stderr().write_all(&out.stderr);
                return Err(PrepareError::Failed(exit_code_of(out.status)));
            }
            preprocessor_stderr = out.stderr;
            out.stdout
        }
        None => tokio::fs::read(plan.source()).await.map_err(|e| {
            PrepareError::Io(format!("cannot read {}: {e}", plan.source().display()))
        })?,
    };
    if plan.debug_info() && source_mode_refusal(&plan, opts).is_none() {
        let color = adds_color(&plan, opts);
        return prepare_from_source(compiler, plan, input, preprocessor_stderr, color).await;
    }
    let mut remote_args = plan.remote_args();
    let color_added = adds_color(&plan, opts);
    if color_added {
        remote_args.push("-fdiagnostics-color=always".into());
    }
    // Read from the preprocessed text before it is compressed.
    let (context, includes) = if plan.needs_preprocessing() {
        (
            context_files(&input),
            hybridgrid_core::preprocessed::included_files(&input),
        )
    } else {
        (Vec::new(), Vec::new())
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
    Ok(Prepared {
        task,
        plan,
        preprocessor_stderr,
        includes,
        color_added,
    })
}

/// Most bytes of source files sent with one compile from source.
const SOURCE_BUDGET: u64 = 128 * 1024 * 1024;

/// Why a compile with debug info cannot go to the grid (it then compiles
/// locally), or `None` when it can, compiled from source.
pub fn source_mode_refusal(plan: &CompilePlan, opts: &ClientOptions) -> Option<String> {
    if !opts.remote_debug_info {
        return Some(
            "debug info (-g) is compiled locally (client.remote_debug_info: false)".into(),
        );
    }
    if !matches!(
        plan.source_language(),
        args::SourceLanguage::C | args::SourceLanguage::Cxx
    ) {
        return Some("debug info (-g) for assembler is compiled locally".into());
    }
    if let Err(e) = args::validate_source_args(&plan.source_args()) {
        return Some(format!("debug info (-g) with {e}"));
    }
    let split = plan
        .outputs()
        .iter()
        .any(|o| o.kind == OutputKind::SplitDwarf);
    if split && plan.object_path().is_absolute() {
        // gcc records the .dwo's absolute name without mapping it.
        return Some("split DWARF with an absolute output path is compiled locally".into());
    }
    if split && plan.records_macros() {
        // gcc leaves the macro section's file names in the .dwo unmapped.
        return Some("split DWARF with macro information (-g3) is compiled locally".into());
    }
    None
}

/// The task for a compile with debug info: the original source, compiled
/// on the worker with every file the preprocessor read (`preprocessed`
/// names them) laid out at this machine's paths. A compile of the
/// preprocessed text would differ in the line table's columns.
async fn prepare_from_source(
    compiler: &CompilerInfo,
    plan: CompilePlan,
    preprocessed: Vec<u8>,
    preprocessor_stderr: Vec<u8>,
    color: bool,
) -> Result<Prepared, PrepareError> {
    let cwd = std::env::current_dir()
        .map_err(|e| PrepareError::Io(format!("cannot read the working directory: {e}")))?;
    let includes = hybridgrid_core::preprocessed::included_files(&preprocessed);
    let source = plan.source().to_path_buf();
    let names = hybridgrid_core::preprocessed::line_marker_files(&preprocessed);
    let task_cwd = cwd.display().to_string();
    let files = tokio::task::spawn_blocking(move || read_tree(&cwd, &names, &source))
        .await
        .map_err(|e| PrepareError::Io(format!("cannot read the sources: {e}")))??;
    let language = match plan.source_language() {
        args::SourceLanguage::Cxx => hybridgrid_core::task::Language::Cxx,
        _ => hybridgrid_core::task::Language::C,
    };
    let mut args = plan.source_args();
    if color {
        // Colors do not change the object.
        args.push("-fdiagnostics-color=always".into());
    }
    let mut task = CompileTask::new(
        compiler.identity.clone(),
        language,
        args,
        plan.source().display().to_string(),
        // The source is the first file: compressed once, shared.
        files[0].data.clone(),
    );
    task.extra_outputs = plan.extra_output_kinds();
    task.cwd = task_cwd;
    task.source_mode = Some(hybridgrid_core::task::SourceMode {
        files,
        output_paths: plan
            .outputs()
            .iter()
            .map(|o| o.path.display().to_string())
            .collect(),
    });
    Ok(Prepared {
        task,
        plan,
        preprocessor_stderr,
        includes,
        color_added: color,
    })
}

/// Reads the source and every other regular file among `names`
/// (line-marker paths, relative to `cwd` or absolute; the source first, each
/// file once), within [`SOURCE_BUDGET`]. Names that are not regular files
/// (gcc's `"/dir//"` marker of the working directory) are skipped; a file
/// that cannot be read fails the preparation.
fn read_tree(
    cwd: &Path,
    names: &[String],
    source: &Path,
) -> Result<Vec<hybridgrid_core::task::SourceFile>, PrepareError> {
    let mut files = Vec::with_capacity(names.len() + 1);
    let mut seen = std::collections::HashSet::new();
    let mut total = 0u64;
    let source = cwd.join(source);
    let others = names
        .iter()
        .map(|n| cwd.join(n))
        .filter(|p| std::fs::metadata(p).is_ok_and(|m| m.is_file()));
    for abs in std::iter::once(source).chain(others) {
        let path = abs.display().to_string();
        if !seen.insert(path.clone()) {
            continue;
        }
        if hybridgrid_core::task::SourceMode::relative_path(&path).is_none() {
            return Err(PrepareError::Io(format!(
                "cannot send {path}: not a plain absolute path"
            )));
        }
        let data = std::fs::read(&abs)
            .map_err(|e| PrepareError::Io(format!("cannot read {path}: {e}")))?;
        total += data.len() as u64;
        if total > SOURCE_BUDGET {
            return Err(PrepareError::Io(format!(
                "the sources and headers exceed {} MiB",
                SOURCE_BUDGET >> 20
            )));
        }
        files.push(hybridgrid_core::task::SourceFile {
            path,
            data: Payload::compress(data),
        });
    }
    Ok(files)
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
    compile_with(compiler, args, move || async move { remote }, opts, None).await
}

/// [`compile`] with a local cache tier (see [`crate::local_cache`]): a
/// direct-mode hit replays the result without preprocessing and without
/// asking for the remote service (`remote` is only called when needed);
/// local compiles are stored; direct-mode manifests are recorded.
pub async fn compile_with<R, F, Fut>(
    compiler: &CompilerInfo,
    args: &[OsString],
    remote: F,
    opts: &ClientOptions,
    cache: Option<&LocalCache>,
) -> Outcome
where
    R: Service<CompileTask, Response = CompileOutput, Error = BoxError>,
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = Option<Result<R, GridError>>>,
{
    let start = Instant::now();
    let started = SystemTime::now();
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
    let done = |exit_code: i32, route: Route, fallback_reason: Option<String>| Outcome {
        exit_code,
        route,
        source: source.clone(),
        elapsed: start.elapsed(),
        fallback_reason,
        timings: Timings::default(),
    };

    // Direct mode: before the preprocessor.
    let probe = cache.and_then(|c| {
        c.probe(
            compiler,
            args,
            &plan,
            adds_color(&plan, opts),
            &cwd,
            started,
        )
    });
    if let (Some(c), Some(p)) = (cache, &probe)
        && let Some((hit, entry)) = c.lookup(p)
    {
        match replay(
            &plan,
            &entry.to_output(),
            &hit.preprocessor_stderr,
            hit.dep_file.as_deref(),
        ) {
            Ok(code) => return done(code, Route::DirectCache, None),
            Err(e) => tracing::debug!(error = %e, "direct-mode hit not replayable"),
        }
    }
    let ctx = Ctx {
        compiler,
        args,
        cache,
        probe: probe.as_ref(),
        opts,
    };

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

    if let Some(reason) = plan
        .debug_info()
        .then(|| source_mode_refusal(&plan, opts))
        .flatten()
    {
        // A remote compile of preprocessed source would record different
        // column numbers in the line table: such a -g compile stays here.
        if cache.is_some() && !plan.records_macros() {
            let (code, route) = ctx.local_cached(plan, true).await;
            return done(code, route.unwrap_or(Route::Local(reason)), None);
        }
        return local(reason, false).await;
    }
    let remote = match remote().await {
        Some(Ok(r)) => r,
        None if cache.is_some() => {
            let (code, route) = ctx.local_cached(plan, true).await;
            let reason = "no coordinator configured".to_owned();
            return done(code, route.unwrap_or(Route::Local(reason)), None);
        }
        None => return local("no coordinator configured".into(), false).await,
        Some(Err(e)) => return grid_failure(e, opts, local).await,
    };
    let prepared = match prepare(compiler, plan, opts).await {
        Ok(p) => p,
        Err(PrepareError::Failed(code)) => {
            return done(code, Route::Local("preprocessing failed".into()), None);
        }
        Err(PrepareError::Io(m)) => return local(m, true).await,
    };
    // The key the cache layer stores the result under: the same builder.
    let key = cache.and_then(|_| CacheKey::for_task(&prepared.task).ok());
    let task = prepared.task.clone();
    let search = ctx.search_list(&prepared.plan);
    let (result, search) = tokio::join!(remote.oneshot(task), search);
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
            if !prepared.preprocessor_stderr.is_empty() {
                let _ = std::io::stderr().write_all(&prepared.preprocessor_stderr);
            }
            match apply_output(&prepared.plan, &out) {
                Ok(code) => {
                    if let Some(key) = key
                        && (out.from_cache || CacheEntry::is_cacheable(&out))
                    {
                        ctx.record(&prepared, search.as_ref(), key);
                    }
                    Outcome {
                        exit_code: code,
                        route,
                        source,
                        elapsed: start.elapsed(),
                        fallback_reason: None,
                        timings: out.timings,
                    }
                }
                Err(e) => local(format!("cannot write the remote result: {e}"), true).await,
            }
        }
        Err(e) => {
            let g = GridError::find(e.as_ref())
                .cloned()
                .unwrap_or_else(|| GridError::Internal(e.to_string()));
            if opts.fallback && cache.is_some() {
                // The cache layer already missed: compile here and store
                // the result under the task's key.
                let reason = g.to_string();
                eprintln!(
                    "hgbuild: warning: {}: {reason}; compiling locally",
                    prepared.plan.source().display()
                );
                let (code, _) = ctx.local_prepared(prepared, key, search, false).await;
                return done(code, Route::Local(reason.clone()), Some(reason));
            }
            grid_failure(g, opts, local).await
        }
    }
}

/// Writes a cached result: the preprocessor's diagnostics, the dependency
/// file, then the result as [`apply_output`] does. Nothing is written or
/// printed unless every file decodes.
fn replay(
    plan: &CompilePlan,
    out: &CompileOutput,
    preprocessor_stderr: &[u8],
    dep_file: Option<&[u8]>,
) -> std::io::Result<i32> {
    if out.exit_code != 0 {
        return Err(std::io::Error::other("not a successful result"));
    }
    let dep = match (plan.dependency_file(), dep_file) {
        (Some(p), Some(d)) => Some((p, d)),
        (None, _) => None,
        (Some(_), None) => return Err(std::io::Error::other("no dependency file recorded")),
    };
    for o in plan.outputs() {
        out.output(o.kind)
            .ok_or_else(|| std::io::Error::other("an output is missing"))?
            .data
            .decode()
            .map_err(std::io::Error::other)?;
    }
    if !preprocessor_stderr.is_empty() {
        std::io::stderr().write_all(preprocessor_stderr)?;
    }
    if let Some((p, d)) = dep {
        write_atomic(p, d)?;
    }
    apply_output(plan, out)
}

/// One compile's context for the cached local paths.
struct Ctx<'a> {
    compiler: &'a CompilerInfo,
    args: &'a [OsString],
    cache: Option<&'a LocalCache>,
    probe: Option<&'a DirectProbe>,
    opts: &'a ClientOptions,
}

impl Ctx<'_> {
    /// The include search list, when a manifest may be recorded.
    async fn search_list(
        &self,
        plan: &CompilePlan,
    ) -> Option<hybridgrid_cache::direct::SearchList> {
        self.probe?;
        let memo = self.cache.map(LocalCache::search_memo_dir);
        crate::local_cache::search_list(Path::new(&self.compiler.path), plan, memo.as_deref()).await
    }

    fn record(
        &self,
        prepared: &Prepared,
        search: Option<&hybridgrid_cache::direct::SearchList>,
        key: CacheKey,
    ) {
        let (Some(cache), Some(probe)) = (self.cache, self.probe) else {
            return;
        };
        cache.record(
            probe,
            &RecordInput {
                includes: &prepared.includes,
                search,
                dep_file_path: prepared.plan.dependency_file(),
                preprocessor_stderr: &prepared.preprocessor_stderr,
            },
            key,
        );
    }

    /// Preprocesses, then answers from the store or compiles here and
    /// stores the result. The route is `None` for a local compile.
    async fn local_cached(&self, plan: CompilePlan, lookup: bool) -> (i32, Option<Route>) {
        let path = PathBuf::from(&self.compiler.path);
        let pre_plan = plan.clone();
        let (prepared, search) = tokio::join!(
            prepare(self.compiler, plan, self.opts),
            self.search_list(&pre_plan)
        );
        let prepared = match prepared {
            Ok(p) => p,
            Err(PrepareError::Failed(code)) => {
                return (code, Some(Route::Local("preprocessing failed".into())));
            }
            Err(PrepareError::Io(m)) => {
                tracing::debug!(error = %m, "cannot preprocess; compiling without the cache");
                return (run_local(&path, self.args).await, None);
            }
        };
        let key = CacheKey::for_task(&prepared.task).ok();
        self.local_prepared(prepared, key, search, lookup).await
    }

    /// Answers a prepared compile from the store (if `lookup`), else
    /// compiles it here from its source and stores a cacheable result.
    async fn local_prepared(
        &self,
        prepared: Prepared,
        key: Option<CacheKey>,
        search: Option<hybridgrid_cache::direct::SearchList>,
        lookup: bool,
    ) -> (i32, Option<Route>) {
        let path = PathBuf::from(&self.compiler.path);
        let (Some(cache), Some(key)) = (self.cache, key) else {
            return (run_local(&path, self.args).await, None);
        };
        if lookup && let hybridgrid_cache::Lookup::Hit(entry) = cache.store().get_blocking(&key) {
            let out = entry.to_output();
            if !prepared.preprocessor_stderr.is_empty() {
                let _ = std::io::stderr().write_all(&prepared.preprocessor_stderr);
            }
            if let Ok(code) = apply_output(&prepared.plan, &out) {
                if code == 0 {
                    self.record(&prepared, search.as_ref(), key);
                }
                return (code, Some(Route::Cache));
            }
        }
        let mut args: Vec<OsString> = self.args.to_vec();
        if prepared.color_added {
            args.push("-fdiagnostics-color=always".into());
        }
        let out = match Command::new(&path)
            .args(&args)
            .stdin(Stdio::null())
            .output()
            .await
        {
            Ok(o) => o,
            Err(e) => {
                eprintln!("hgbuild: cannot run {}: {e}", path.display());
                return (127, None);
            }
        };
        let _ = std::io::stdout().write_all(&out.stdout);
        let _ = std::io::stdout().flush();
        let _ = std::io::stderr().write_all(&out.stderr);
        let code = exit_code_of(out.status);
        // A compile from source prints the preprocessor's diagnostics too;
        // such a result would replay them twice.
        let cwd = std::env::current_dir().unwrap_or_default();
        if code == 0
            && prepared.preprocessor_stderr.is_empty()
            && !prepared.plan.records_macros()
            && !crate::local_cache::precompiled_headers(&cwd.to_string_lossy(), &prepared.includes)
                .existing
        {
            let mut result = CompileOutput::default();
            result.stdout = out.stdout.into();
            result.stderr = out.stderr.into();
            let mut complete = true;
            for o in prepared.plan.outputs() {
                match std::fs::read(&o.path) {
                    Ok(data) => result.outputs.push(hybridgrid_core::task::OutputFile {
                        kind: o.kind,
                        data: Payload::raw(data),
                    }),
                    Err(_) => complete = false,
                }
            }
            if complete
                && CacheEntry::is_cacheable(&result)
                && cache.put(&key, &CacheEntry::from_output(&result))
            {
                self.record(&prepared, search.as_ref(), key);
            }
        }
        (code, None)
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
