//! What `hgbuild` does: compile as a drop-in compiler, wrap a build tool
//! so every compile goes through the grid, and show the grid's state.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use hybridgrid_cache::{CacheLayer, DiskStore};
use hybridgrid_core::config::Config;
use hybridgrid_core::task::{CompileOutput, CompileTask};
use hybridgrid_core::worker::CompilerInfo;
use hybridgrid_core::{BoxError, GridError};
use hybridgrid_exec::client::{self, ClientOptions, Outcome};
use hybridgrid_exec::detect;
use hybridgrid_net::client::{ChannelOptions, CoordinatorClient};
use tower::Layer;
use tower::util::BoxCloneSyncService;

/// The names under which hgbuild acts as a compiler (masquerade).
pub const MASQUERADE_NAMES: &[&str] = &["gcc", "cc", "g++", "c++", "clang", "clang++"];

/// Environment variable that turns on per-file lines in wrapped builds.
pub const ENV_VERBOSE: &str = "HG_VERBOSE";
/// Environment variable that disables local fallback in wrapped builds.
pub const ENV_NO_FALLBACK: &str = "HG_NO_FALLBACK";

/// Options of one hgbuild run.
#[derive(Clone, Debug, Default)]
pub struct RunOptions {
    /// Per-file lines.
    pub verbose: bool,
    /// Fail instead of compiling locally.
    pub no_fallback: bool,
    /// Write a Chrome/Perfetto trace of the build here (`--trace`,
    /// `HG_TRACE`); see [`crate::trace`].
    pub trace: Option<PathBuf>,
}

fn path_dirs() -> Vec<PathBuf> {
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
        return Some(PathBuf::from(name));
    }
    path_dirs().into_iter().map(|d| d.join(name)).find(|p| {
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

async fn identify(name: &str) -> Result<CompilerInfo, String> {
    let path =
        find_real_compiler(name).ok_or_else(|| format!("compiler `{name}` not found on PATH"))?;
    let mut info = detect::identify(name, &path)
        .await
        .map_err(|e| e.to_string())?;
    // Run it as found (gcc names itself after argv[0] in its messages).
    info.path = path.display().to_string();
    Ok(info)
}

async fn connect(cfg: &Config) -> Option<Result<CoordinatorClient, GridError>> {
    let addr = cfg.client.coordinator.trim();
    if addr.is_empty() {
        return None;
    }
    let opts = ChannelOptions::new(cfg.client.connect_timeout, cfg.client.request_timeout);
    Some(
        CoordinatorClient::connect(addr, &opts)
            .await
            .map_err(coordinator_error),
    )
}

/// The coordinator, connected on the first call (so a local cache hit
/// needs no connection at all).
#[derive(Clone, Debug)]
pub struct LazyCoordinator {
    address: String,
    opts: ChannelOptions,
}

impl tower::Service<CompileTask> for LazyCoordinator {
    type Response = CompileOutput;
    type Error = BoxError;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<CompileOutput, BoxError>> + Send>,
    >;

    fn poll_ready(
        &mut self,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), BoxError>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, task: CompileTask) -> Self::Future {
        let (address, opts) = (self.address.clone(), self.opts.clone());
        Box::pin(async move {
            let mut c = CoordinatorClient::connect(&address, &opts)
                .await
                .map_err(coordinator_error)?;
            Ok(c.compile(&task).await?)
        })
    }
}

fn coordinator_error(e: GridError) -> GridError {
    match e {
        GridError::WorkerUnavailable { reason, .. } => GridError::CoordinatorUnavailable(reason),
        other => other,
    }
}

/// The client's compile stack: the local cache tier in front of the
/// coordinator; `None` when no coordinator is configured.
pub fn remote_stack(cfg: &Config) -> Option<Result<BoxCompile, GridError>> {
    let addr = cfg.client.coordinator.trim();
    if addr.is_empty() {
        return None;
    }
    let coord = LazyCoordinator {
        address: addr.to_owned(),
        opts: ChannelOptions::new(cfg.client.connect_timeout, cfg.client.request_timeout),
    };
    Some(Ok(if cfg.cache.enabled {
        BoxCloneSyncService::new(CacheLayer::new(DiskStore::from_config(&cfg.cache)).layer(coord))
    } else {
        BoxCloneSyncService::new(coord)
    }))
}

/// A boxed compile service.
pub type BoxCompile = BoxCloneSyncService<CompileTask, CompileOutput, BoxError>;

/// Compiles as `name ARGS` would, through the grid when it can. Returns the
/// exit code.
pub async fn compile(cfg: &Config, name: &str, args: &[OsString], opts: &RunOptions) -> i32 {
    let started = std::time::SystemTime::now();
    let compiler = match identify(name).await {
        Ok(c) => c,
        Err(e) => {
            // Not a compiler we know: run it as it is.
            tracing::debug!(error = %e, "cannot identify compiler");
            let Some(path) = find_real_compiler(name) else {
                eprintln!("hgbuild: {e}");
                return 127;
            };
            return client::run_local(&path, args).await;
        }
    };
    let copts = {
        let mut o = ClientOptions::default();
        o.fallback = cfg.resilience.fallback.enabled && !opts.no_fallback;
        o.verbose = opts.verbose;
        o.color = std::io::IsTerminal::is_terminal(&std::io::stderr());
        o
    };
    let remote = remote_stack(cfg);
    let outcome: Outcome = client::compile(&compiler, args, remote, &copts).await;
    if opts.verbose {
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
    crate::trace::record(opts.trace.as_deref(), &outcome, started, name);
    outcome.exit_code
}

/// A directory of links named like compilers that point at hgbuild.
#[derive(Debug)]
pub struct MasqueradeDir {
    dir: tempfile::TempDir,
}

impl MasqueradeDir {
    /// Creates the links.
    pub fn create() -> std::io::Result<Self> {
        let exe = std::env::current_exe()?;
        let dir = tempfile::Builder::new().prefix("hgbuild-masq-").tempdir()?;
        for n in MASQUERADE_NAMES {
            std::os::unix::fs::symlink(&exe, dir.path().join(n))?;
        }
        Ok(MasqueradeDir { dir })
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

/// Runs a build tool (`make`, `ninja`, `cmake`...) with every compile
/// routed through hgbuild. Returns the tool's exit code.
pub async fn wrap(cfg: &Config, tool: &str, args: &[OsString], opts: &RunOptions) -> i32 {
    let masq = match MasqueradeDir::create() {
        Ok(m) => m,
        Err(e) => {
            eprintln!("hgbuild: cannot create the compiler link directory: {e}");
            return 1;
        }
    };
    let mut path = vec![masq.path().to_path_buf()];
    path.extend(path_dirs());
    let path = match std::env::join_paths(path) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("hgbuild: bad PATH: {e}");
            return 1;
        }
    };
    let mut args: Vec<OsString> = args.to_vec();
    if (tool == "make" || tool == "gmake")
        && !args.iter().any(|a| {
            let s = a.to_string_lossy();
            s.starts_with("-j") || s == "--jobs" || s.starts_with("--jobs=")
        })
    {
        let jobs = default_jobs(cfg).await;
        args.insert(0, OsString::from(format!("-j{jobs}")));
    }
    let mut cmd = tokio::process::Command::new(tool);
    cmd.args(&args)
        .env("PATH", path)
        .env("CC", masq.path().join("cc"))
        .env("CXX", masq.path().join("c++"));
    if !cfg.client.coordinator.is_empty() {
        cmd.env("HG_COORDINATOR", &cfg.client.coordinator);
    }
    if opts.verbose {
        cmd.env(ENV_VERBOSE, "1");
    }
    if opts.no_fallback {
        cmd.env(ENV_NO_FALLBACK, "1");
    }
    // Compiles append to a side file; it becomes the trace at the end.
    let sink = match &opts.trace {
        Some(_) => match tempfile::Builder::new()
            .prefix("hgbuild-trace-")
            .suffix(".jsonl")
            .tempfile()
        {
            Ok(f) => {
                cmd.env(crate::trace::ENV_TRACE_SINK, f.path())
                    .env_remove(crate::trace::ENV_TRACE);
                Some(f)
            }
            Err(e) => {
                eprintln!("hgbuild: warning: cannot create the trace side file: {e}");
                None
            }
        },
        None => None,
    };
    let build_start = std::time::SystemTime::now();
    let build_clock = std::time::Instant::now();
    let status = match cmd.status().await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("hgbuild: cannot run {tool}: {e}");
            return 127;
        }
    };
    if let (Some(path), Some(sink)) = (&opts.trace, &sink) {
        let label = std::iter::once(tool.to_owned())
            .chain(args.iter().map(|a| a.to_string_lossy().into_owned()))
            .collect::<Vec<_>>()
            .join(" ");
        let events = crate::trace::read_events(sink.path()).unwrap_or_default();
        let trace = crate::trace::chrome_trace(
            &events,
            Some((label.as_str(), build_start, build_clock.elapsed())),
        );
        match crate::trace::write_trace(path, &trace) {
            Ok(()) => eprintln!(
                "hgbuild: trace of {} compiler runs written to {}",
                events.len(),
                path.display()
            ),
            Err(e) => eprintln!(
                "hgbuild: warning: cannot write the trace {}: {e}",
                path.display()
            ),
        }
    }
    drop(sink);
    drop(masq);
    use std::os::unix::process::ExitStatusExt;
    status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0))
}

/// A job count from the grid's free capacity (local cores when there is
/// no grid).
pub async fn default_jobs(cfg: &Config) -> usize {
    let local = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2);
    let Some(Ok(mut c)) = connect(cfg).await else {
        return local;
    };
    match tokio::time::timeout(Duration::from_secs(3), c.workers()).await {
        Ok(Ok(ws)) => {
            let slots: usize = ws
                .iter()
                .map(|w| {
                    w.info
                        .as_ref()
                        .and_then(|i| i.capabilities.as_ref())
                        .map(|c| c.max_parallel_tasks as usize)
                        .unwrap_or(0)
                })
                .sum();
            (slots + local).max(local)
        }
        _ => local,
    }
}

/// Prints the grid's workers as a table; returns the exit code.
pub async fn status(cfg: &Config) -> i32 {
    let mut c = match connect(cfg).await {
        None => {
            eprintln!(
                "hgbuild: no coordinator configured: pass --coordinator HOST:PORT or set HG_COORDINATOR"
            );
            return 2;
        }
        Some(Err(e)) => {
            eprintln!("hgbuild: {e}");
            return 1;
        }
        Some(Ok(c)) => c,
    };
    let ws = match c.workers().await {
        Ok(w) => w,
        Err(e) => {
            eprintln!("hgbuild: {e}");
            return 1;
        }
    };
    println!("coordinator {}: {} worker(s)", c.address(), ws.len());
    println!(
        "{:<24} {:<22} {:<7} {:>5} {:>7} {:>9} {:>10} {:<9} {:<9} compilers",
        "WORKER", "ADDRESS", "ARCH", "CORES", "ACTIVE", "COMPLETED", "LATENCY", "CIRCUIT", "SOURCE"
    );
    for w in ws {
        let info = w.info.unwrap_or_default();
        let caps = info.capabilities.unwrap_or_default();
        let mut compilers: Vec<String> = caps
            .compilers
            .iter()
            .map(|c| {
                format!(
                    "{} {}",
                    c.name,
                    c.identity
                        .as_ref()
                        .map(|i| i.version.as_str())
                        .unwrap_or("")
                )
            })
            .collect();
        compilers.sort();
        compilers.dedup();
        let source = match hybridgrid_net::proto::WorkerSource::try_from(info.source) {
            Ok(hybridgrid_net::proto::WorkerSource::Static) => "static",
            Ok(hybridgrid_net::proto::WorkerSource::Mdns) => "mdns",
            _ => "handshake",
        };
        println!(
            "{:<24} {:<22} {:<7} {:>5} {:>7} {:>9} {:>8.1}ms {:<9} {:<9} {}",
            info.id,
            info.address,
            caps.arch,
            caps.cores,
            w.active_tasks,
            w.completed_tasks,
            w.avg_latency_ms,
            w.circuit_state,
            source,
            compilers.join(", ")
        );
    }
    0
}

/// `hgbuild cache stats|clear|evict`: the local cache.
pub fn cache_command(cfg: &Config, action: CacheAction) -> i32 {
    let store = DiskStore::from_config(&cfg.cache);
    match action {
        CacheAction::Stats => {
            store.rescan();
            let s = store.stats_blocking();
            println!("cache directory   {}", store.dir().display());
            println!("enabled           {}", cfg.cache.enabled);
            println!("entries           {}", s.entries);
            println!(
                "size              {:.1} MB of {:.1} MB",
                s.size_bytes as f64 / 1e6,
                store.max_bytes() as f64 / 1e6
            );
            println!("hits              {}", s.hits);
            println!("misses            {}", s.misses);
            println!("hit rate          {:.1}%", s.hit_rate() * 100.0);
            println!("evictions         {}", s.evictions);
            println!("errors            {}", s.errors);
        }
        CacheAction::Clear => {
            let out = store.clear();
            println!(
                "removed {} entries ({:.1} MB) from {}",
                out.evicted,
                out.freed_bytes as f64 / 1e6,
                store.dir().display()
            );
        }
        CacheAction::Evict { max_size_gb } => {
            if !(max_size_gb.is_finite() && max_size_gb >= 0.0) {
                eprintln!("hgbuild: --max-size must be a number of GB >= 0, got {max_size_gb}");
                return 2;
            }
            let out = store.evict_to((max_size_gb * 1e9) as u64);
            println!(
                "evicted {} entries ({:.1} MB)",
                out.evicted,
                out.freed_bytes as f64 / 1e6
            );
        }
    }
    0
}

/// What `hgbuild cache` does.
#[derive(Clone, Copy, Debug)]
pub enum CacheAction {
    /// Print statistics.
    Stats,
    /// Remove every entry.
    Clear,
    /// Evict least recently used entries down to a size.
    Evict {
        /// The size to evict to, in GB.
        max_size_gb: f64,
    },
}

/// `hgbuild stats`: the local cache and the coordinator's counters.
pub async fn stats(cfg: &Config) -> i32 {
    let code = cache_command(cfg, CacheAction::Stats);
    match connect(cfg).await {
        None => println!("coordinator       not configured"),
        Some(Err(e)) => println!("coordinator       {e}"),
        Some(Ok(mut c)) => match c.stats().await {
            Ok(s) => {
                let lookups = s.cache_hits + s.cache_misses;
                println!("coordinator       {}", c.address());
                println!(
                    "workers           {} ({} healthy)",
                    s.workers_total, s.workers_healthy
                );
                println!(
                    "tasks             {} total, {} ok, {} failed, {} active, {} queued",
                    s.tasks_total,
                    s.tasks_successful,
                    s.tasks_failed,
                    s.tasks_active,
                    s.tasks_queued
                );
                println!(
                    "shared cache      {} hits, {} misses ({:.1}%)",
                    s.cache_hits,
                    s.cache_misses,
                    if lookups == 0 {
                        0.0
                    } else {
                        s.cache_hits as f64 * 100.0 / lookups as f64
                    }
                );
            }
            Err(e) => println!("coordinator       {e}"),
        },
    }
    code
}
