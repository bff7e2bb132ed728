//! [`Client`]: the grid as a build tool sees it, built from configuration.
//! It compiles one command at a time with local fallback (many at once,
//! from as many tasks as you like), keeps the build's event stream, and
//! writes its trace; `Client::run_build` (in `build.rs`) runs a whole
//! build tool with every compile going through hgbuild.

use std::collections::HashMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Instant, SystemTime};

use hybridgrid_cache::DiskStore;
use hybridgrid_core::GridError;
use hybridgrid_core::config::Config;
use hybridgrid_core::task::Timings;
use hybridgrid_core::worker::CompilerInfo;
use hybridgrid_exec::detect;

use crate::dial::{BoxCompile, remote_stack};
use crate::events::{self, BuildSummary, CompileEvent};
use crate::{ClientOptions, LocalCache, Outcome, Route, masquerade};

/// Environment variable that turns on per-file lines in wrapped builds.
pub const ENV_VERBOSE: &str = "HG_VERBOSE";
/// Environment variable that disables local fallback in wrapped builds.
pub const ENV_NO_FALLBACK: &str = "HG_NO_FALLBACK";

/// How a [`Client`] runs compiles and builds.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct RunOptions {
    /// Print a line per file saying where it was compiled.
    pub verbose: bool,
    /// Fail instead of compiling locally when the grid cannot compile a
    /// file.
    pub no_fallback: bool,
    /// Write a Chrome/Perfetto trace of a wrapped build here (`--trace`,
    /// `HG_TRACE`); see [`crate::trace`].
    pub trace: Option<PathBuf>,
    /// The configuration file this process read (`--config`, `HG_CONFIG`
    /// or the first file found); a wrapped build's compiles read it too.
    pub config_file: Option<PathBuf>,
    /// Also append each compile's event to this file: the stream of the
    /// wrapped build this process runs under ([`events::ENV_EVENTS`]).
    pub events_file: Option<PathBuf>,
    /// The hgbuild program a wrapped build's compiler links run; by
    /// default this program (an embedding tool names the installed
    /// `hgbuild`).
    pub program: Option<PathBuf>,
    /// This process runs one compiler command: one that runs here as it is
    /// (a link, `-E`, a configure probe, `--version`) replaces the process
    /// ([`ClientOptions::replace_process`]), unless a line, an event or a
    /// trace is to be written after it (`verbose`, `events_file`, `trace`).
    /// hgbuild sets it; a long-lived program must not.
    pub replace_process: bool,
}

fn env_flag(name: &str) -> bool {
    std::env::var_os(name).is_some_and(|v| !v.is_empty() && v != "0")
}

impl RunOptions {
    /// The options a compile under a wrapped build inherits from its
    /// environment: `HG_VERBOSE`, `HG_NO_FALLBACK`, `HG_TRACE` and
    /// `HG_EVENTS_FILE`.
    pub fn from_env() -> Self {
        RunOptions {
            verbose: env_flag(ENV_VERBOSE),
            no_fallback: env_flag(ENV_NO_FALLBACK),
            trace: crate::trace::requested(None),
            events_file: std::env::var_os(events::ENV_EVENTS)
                .filter(|s| !s.is_empty())
                .map(PathBuf::from),
            ..RunOptions::default()
        }
    }
}

/// The grid's client: compiles through the coordinator named by the
/// configuration (`client.coordinator`, else one found by mDNS), with the
/// local cache in front and local fallback behind.
///
/// One client dials the coordinator once, on its first compile that needs
/// the grid, and every later compile shares that HTTP/2 connection.
/// Compilers are identified once per name. Every compile adds one
/// [`CompileEvent`] to the client's stream, from which [`Client::summary`]
/// and [`Client::write_trace`] are derived.
///
/// Relative paths in compile commands are resolved against the process's
/// current directory, as a compiler would.
pub struct Client {
    cfg: Config,
    opts: RunOptions,
    remote: tokio::sync::OnceCell<Option<Result<BoxCompile, GridError>>>,
    /// The local tier (`cache.enabled`), one for every compile.
    cache: Option<LocalCache>,
    compilers: Mutex<HashMap<String, CompilerInfo>>,
    events: Mutex<Vec<CompileEvent>>,
    created: (SystemTime, Instant),
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("coordinator", &self.cfg.client.coordinator)
            .field("opts", &self.opts)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// A client of the grid that `cfg` names, with default options.
    pub fn new(cfg: Config) -> Self {
        let cache = cfg
            .cache
            .enabled
            .then(|| LocalCache::new(DiskStore::from_config(&cfg.cache), cfg.cache.direct_mode));
        Client {
            cfg,
            opts: RunOptions::default(),
            remote: tokio::sync::OnceCell::new(),
            cache,
            compilers: Mutex::new(HashMap::new()),
            events: Mutex::new(Vec::new()),
            created: (SystemTime::now(), Instant::now()),
        }
    }

    /// The same client with these options.
    pub fn with_options(mut self, opts: RunOptions) -> Self {
        self.opts = opts;
        self
    }

    /// Its configuration.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// Its options.
    pub fn options(&self) -> &RunOptions {
        &self.opts
    }

    /// Compiles as `compiler ARGS` would (a name found on PATH, or a
    /// path): through the grid when the command is distributable, from
    /// the local cache when it can, else here. Diagnostics go to this
    /// process's standard error; the outcome holds the exit code.
    pub async fn compile(&self, compiler: &str, args: &[OsString]) -> Outcome {
        let started = SystemTime::now();
        let outcome = self.run(compiler, args).await;
        if self.opts.verbose {
            let src = outcome
                .source
                .as_ref()
                .map(|s| s.display().to_string())
                .unwrap_or_else(|| "-".into());
            eprintln!(
                "hgbuild: {} {src} {}ms",
                outcome.route,
                outcome.elapsed.as_millis()
            );
        }
        let ev = CompileEvent::from_outcome(&outcome, started, compiler);
        if let Some(path) = &self.opts.events_file
            && let Err(e) = events::append(path, &ev)
        {
            eprintln!(
                "hgbuild: warning: cannot add to the build's events file {}: {e}",
                path.display()
            );
        }
        lock(&self.events).push(ev);
        outcome
    }

    async fn run(&self, name: &str, args: &[OsString]) -> Outcome {
        let start = Instant::now();
        let named = Path::new(name);
        let not_run = |code: i32, reason: &str| Outcome {
            exit_code: code,
            route: Route::Local(reason.to_owned()),
            source: None,
            elapsed: start.elapsed(),
            fallback_reason: None,
            timings: Timings::default(),
        };
        if masquerade::is_old_temp_link(named) && !named.exists() {
            let cwd = std::env::current_dir().unwrap_or_default();
            let build_dir = cwd.ancestors().find(|d| d.join("CMakeCache.txt").is_file());
            eprintln!("{}", masquerade::old_temp_link_message(named, build_dir));
            return not_run(1, "compiler link of an older hgbuild");
        }
        let compiler = match self.identify(name).await {
            Ok(c) => c,
            Err(Unidentified::NotFound) => {
                eprintln!("hgbuild: compiler `{name}` not found on PATH");
                return not_run(127, "compiler not found");
            }
            Err(Unidentified::Unknown(path, e)) => {
                // Not a compiler we know: run it as it is.
                tracing::debug!(error = %e, "cannot identify compiler");
                let code = crate::compile::run_here(&path, args, self.replaces_process()).await;
                return Outcome {
                    route: Route::Passthrough,
                    ..not_run(code, "")
                };
            }
        };
        let copts = ClientOptions {
            fallback: self.cfg.resilience.fallback.enabled && !self.opts.no_fallback,
            verbose: self.opts.verbose,
            remote_debug_info: self.cfg.client.remote_debug_info,
            color: std::io::IsTerminal::is_terminal(&std::io::stderr()),
            replace_process: self.replaces_process(),
        };
        let cfg = &self.cfg;
        // The local tier (direct mode first); the grid is resolved only if needed.
        let remote_tier = std::sync::OnceLock::new();
        let outcome = crate::compile_with(
            &compiler,
            args,
            || async {
                let store = self.cache.as_ref().map(LocalCache::store);
                match self.remote.get_or_init(|| remote_stack(cfg, store)).await {
                    Some(r) => Some(r.clone()),
                    // No coordinator: a `cache.remote` tier still serves (CI machines).
                    None => store
                        .and_then(|s| crate::remote_cache::local_stack(cfg, &compiler, s))
                        .map(|(svc, tier)| {
                            let _ = remote_tier.set(tier);
                            Ok(svc)
                        }),
                }
            },
            &copts,
            self.cache.as_ref(),
        )
        .await;
        if let Some(tier) = remote_tier.get() {
            crate::remote_cache::flush(tier, &cfg.cache).await;
        }
        outcome
    }

    /// Whether a command that runs here as it is replaces this process:
    /// asked for, and nothing to write after the compile.
    fn replaces_process(&self) -> bool {
        let o = &self.opts;
        o.replace_process && !o.verbose && o.events_file.is_none() && o.trace.is_none()
    }

    /// The compiler `name` as found and identified (once per name).
    async fn identify(&self, name: &str) -> Result<CompilerInfo, Unidentified> {
        if let Some(c) = lock(&self.compilers).get(name) {
            return Ok(c.clone());
        }
        let path = find_real_compiler(name).ok_or(Unidentified::NotFound)?;
        // Remembered whether results are cached or not: asking the compiler
        // (three runs of it) would otherwise cost every compile ~4 ms.
        let cache = self.cfg.cache.dir_path().join("compilers");
        let mut info = match detect::identify_cached(name, &path, Some(cache.as_path())).await {
            Ok(info) => info,
            Err(e) => return Err(Unidentified::Unknown(path, e.to_string())),
        };
        // Run it as found (gcc names itself after argv[0] in its messages).
        info.path = path.display().to_string();
        lock(&self.compilers).insert(name.to_owned(), info.clone());
        Ok(info)
    }

    /// The events of every compile this client ran, in the order they
    /// ended.
    pub fn events(&self) -> Vec<CompileEvent> {
        lock(&self.events).clone()
    }

    /// The counts of this client's compiles.
    pub fn summary(&self) -> BuildSummary {
        BuildSummary::of(lock(&self.events).iter())
    }

    /// Writes the Chrome/Perfetto trace of this client's compiles to
    /// `path`, with one slice named `label` from the client's creation
    /// until now.
    pub fn write_trace(&self, path: &Path, label: &str) -> std::io::Result<()> {
        let (start, clock) = self.created;
        let build = (label, start, clock.elapsed());
        crate::trace::write_build_trace(path, &lock(&self.events), Some(build))
    }
}

/// Why a compiler name could not be identified.
enum Unidentified {
    /// Nothing of that name on PATH.
    NotFound,
    /// Found here, but not a compiler this model knows.
    Unknown(PathBuf, String),
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The directories of PATH.
pub(crate) fn path_dirs() -> Vec<PathBuf> {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default()
}

/// Finds the real compiler `name` on PATH, skipping hgbuild itself (so a
/// masquerade directory first in PATH does not find itself).
pub fn find_real_compiler(name: &str) -> Option<PathBuf> {
    let me = std::env::current_exe()
        .ok()
        .and_then(|p| std::fs::canonicalize(p).ok());
    if name.contains('/') {
        let path = PathBuf::from(name);
        // A link to hgbuild itself (`~/.hybridgrid/bin/c++` as recorded by a
        // configure step, with hgbuild as launcher too) stands for its name.
        let is_me = me.is_some() && std::fs::canonicalize(&path).ok() == me;
        match path.file_name().and_then(|n| n.to_str()) {
            Some(base) if is_me => return find_real_compiler(base),
            _ => return Some(path),
        }
    }
    path_dirs().into_iter().map(|d| d.join(name)).find(|p| {
        // One stat for the usual miss, before resolving every component.
        if std::fs::metadata(p).is_err() {
            return false;
        }
        let Ok(canon) = std::fs::canonicalize(p) else {
            return false;
        };
        let is_exec = std::fs::metadata(&canon)
            .map(|m| {
                use std::os::unix::fs::PermissionsExt;
                m.is_file() && m.permissions().mode() & 0o111 != 0
            })
            .unwrap_or(false);
        is_exec && Some(&canon) != me.as_ref()
    })
}
