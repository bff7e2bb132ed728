//! One compile from end to end: the local tier (direct mode first), the remote
//! service, fallback to a local compile, and replaying cached results.

use std::ffi::OsString;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant, SystemTime};

use hybridgrid_cache::{CacheEntry, CacheKey};
use hybridgrid_core::payload::Payload;
use hybridgrid_core::task::{CompileOutput, CompileTask, Timings};
use hybridgrid_core::worker::CompilerInfo;
use hybridgrid_core::{BoxError, GridError};
use hybridgrid_exec::args::{self, Classification, CompilePlan};
use tokio::process::Command;
use tower::{Service, ServiceExt};

use crate::local_cache::{DirectProbe, RecordInput};

use super::*;

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
            let code = run_here(&path, args, opts.replace_process).await;
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
            let code = run_here(&path, args, opts.replace_process).await;
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
    let mut remote = remote;
    let (result, search) = tokio::join!(send(&mut remote, task), search);
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

/// Sends `task` through `remote`. When the worker lacked files that went by
/// digest only, sends it again with their content; when the worker that
/// answers that one (another, maybe) lacks others, a third time with the
/// content of every file.
async fn send<R>(remote: &mut R, task: CompileTask) -> Result<CompileOutput, BoxError>
where
    R: Service<CompileTask, Response = CompileOutput, Error = BoxError>,
{
    let mut task = task;
    let mut attempt = 0;
    loop {
        let result = remote.ready().await?.call(task.clone()).await;
        let missing = match &result {
            Err(e) if attempt < 2 => match GridError::find(e.as_ref()) {
                Some(GridError::MissingInputs(paths)) => paths.clone(),
                _ => return result,
            },
            _ => return result,
        };
        tracing::debug!(
            files = missing.len(),
            attempt,
            "sending files the worker lacked"
        );
        let named = (attempt == 0).then_some(missing.as_slice());
        if let Err(m) = super::prepare::fill_missing(&mut task, named) {
            return Err(Box::new(GridError::InvalidTask(m)));
        }
        attempt += 1;
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
