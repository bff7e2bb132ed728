//! What `hgbuild` does: compile as a drop-in compiler, wrap a build tool
//! so every compile goes through the grid, and show the grid's state.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use futures::FutureExt;
use futures::future::{BoxFuture, Shared};

use hybridgrid_cache::{CacheLayer, DiskStore};
use hybridgrid_client::{self as client, ClientOptions, Outcome};
use hybridgrid_core::config::Config;
use hybridgrid_core::task::{CompileOutput, CompileTask};
use hybridgrid_core::worker::CompilerInfo;
use hybridgrid_core::{BoxError, GridError};
use hybridgrid_exec::detect;
use hybridgrid_net::client::{ChannelOptions, CoordinatorClient};
use hybridgrid_net::discovery;
use tower::Layer;

use crate::masquerade;
use tower::util::BoxCloneSyncService;

pub use crate::masquerade::MASQUERADE_NAMES;

/// True for a first argument that names a compiler (`/usr/bin/cc`,
/// `gcc-12`, `aarch64-linux-gnu-g++`) rather than an hgbuild command.
pub fn looks_like_compiler(arg: &str) -> bool {
    // `hgbuild cc ...` and `hgbuild c++ ...` are commands (they honour HG_CC/HG_CXX).
    if matches!(arg, "cc" | "gcc" | "c++" | "g++" | "cxx") {
        return false;
    }
    let base = arg.rsplit('/').next().unwrap_or(arg);
    let stem = base.trim_end_matches(|c: char| c.is_ascii_digit() || c == '.' || c == '-');
    let named = MASQUERADE_NAMES.contains(&stem)
        || stem.ends_with("-gcc")
        || stem.ends_with("-g++")
        || stem.ends_with("-clang")
        || stem.ends_with("-clang++");
    named && (arg.contains('/') || find_real_compiler(arg).is_some())
}

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
    /// The configuration file this process read (`--config`, `HG_CONFIG`
    /// or the first file found); a wrapped build's compiles read it too.
    pub config_file: Option<PathBuf>,
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

async fn identify(cfg: &Config, name: &str) -> Result<CompilerInfo, String> {
    let path =
        find_real_compiler(name).ok_or_else(|| format!("compiler `{name}` not found on PATH"))?;
    // Remembered whether results are cached or not: asking the compiler
    // (three runs of it) would otherwise cost every compile ~4 ms.
    let cache = cfg.cache.dir_path().join("compilers");
    let mut info = detect::identify_cached(name, &path, Some(cache.as_path()))
        .await
        .map_err(|e| e.to_string())?;
    // Run it as found (gcc names itself after argv[0] in its messages).
    info.path = path.display().to_string();
    Ok(info)
}

/// How hgbuild dials the coordinator: its timeouts, TLS and token. A
/// TLS or token file that cannot be loaded is a grid failure (the compile
/// falls back locally with the message, which names the key and file).
fn channel_options(cfg: &Config) -> Result<ChannelOptions, GridError> {
    let security = hybridgrid_net::security::Security::for_client(cfg)
        .map_err(|e| GridError::CoordinatorUnavailable(e.to_string()))?;
    Ok(
        ChannelOptions::new(cfg.client.connect_timeout, cfg.client.request_timeout)
            .with_security(&security),
    )
}

async fn connect(cfg: &Config) -> Option<Result<CoordinatorClient, GridError>> {
    // client.coordinator, else one found by mDNS (cached briefly), else none.
    let addr = discovery::coordinator_for_client(cfg).await?;
    let opts = match channel_options(cfg) {
        Ok(o) => o,
        Err(e) => return Some(Err(e)),
    };
    Some(CoordinatorClient::connect(&addr, &opts).await.map_err(|e| {
        discovery::forget_discovered_coordinator(cfg);
        coordinator_error(e)
    }))
}

/// The coordinator, dialled in the background as soon as the compile stack
/// is built, so that the TCP (and TLS) handshake runs while the
/// preprocessor does; the first call waits for it. A direct-mode cache hit
/// never builds the stack, so it opens no connection.
#[derive(Clone)]
pub struct LazyCoordinator {
    address: String,
    client: Shared<BoxFuture<'static, Result<CoordinatorClient, GridError>>>,
}

impl std::fmt::Debug for LazyCoordinator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LazyCoordinator")
            .field("address", &self.address)
            .finish_non_exhaustive()
    }
}

impl LazyCoordinator {
    /// Starts dialling `address` (on the current Tokio runtime).
    pub fn dial(address: String, opts: ChannelOptions) -> Self {
        let dialled = address.clone();
        let handle = tokio::spawn(async move {
            CoordinatorClient::connect(&dialled, &opts)
                .await
                .map_err(coordinator_error)
        });
        let client = async move {
            handle.await.unwrap_or_else(|e| {
                Err(GridError::Internal(format!(
                    "connecting to the coordinator: {e}"
                )))
            })
        }
        .boxed()
        .shared();
        LazyCoordinator { address, client }
    }
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
        let client = self.client.clone();
        Box::pin(async move {
            let mut c = client.await?;
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

/// Environment that gives a child hgbuild this configuration's TLS and
/// auth settings (only those that are set; files as absolute paths, since
/// builds change directory).
pub fn security_env(cfg: &Config) -> Vec<(&'static str, String)> {
    fn abs(f: &str) -> String {
        std::path::absolute(f)
            .map(|p| p.display().to_string())
            .unwrap_or_else(|_| f.to_owned())
    }
    let mut env = Vec::new();
    let t = &cfg.tls;
    if t.enabled {
        env.push(("HG_TLS__ENABLED", "true".to_owned()));
        for (k, v) in [
            ("HG_TLS__CERT_FILE", &t.cert_file),
            ("HG_TLS__KEY_FILE", &t.key_file),
            ("HG_TLS__CA_FILE", &t.ca_file),
        ] {
            if !v.is_empty() {
                env.push((k, abs(v)));
            }
        }
    }
    let a = &cfg.auth;
    if a.enabled {
        env.push(("HG_AUTH__ENABLED", "true".to_owned()));
        if !a.token.is_empty() {
            env.push(("HG_AUTH__TOKEN", a.token.clone()));
        }
        if !a.token_file.is_empty() {
            env.push(("HG_AUTH__TOKEN_FILE", abs(&a.token_file)));
        }
    }
    env
}

/// The client's compile stack: the local cache tier in front of the
/// coordinator; `None` when no coordinator is configured.
pub async fn remote_stack(cfg: &Config) -> Option<Result<BoxCompile, GridError>> {
    // client.coordinator, else one found by mDNS (cached briefly), else none.
    let addr = discovery::coordinator_for_client(cfg).await?;
    let coord = LazyCoordinator::dial(
        addr,
        match channel_options(cfg) {
            Ok(o) => o,
            Err(e) => return Some(Err(e)),
        },
    );
    Some(Ok(if cfg.cache.enabled {
        BoxCloneSyncService::new(CacheLayer::new(DiskStore::from_config(&cfg.cache)).layer(coord))
    } else {
        BoxCloneSyncService::new(coord)
    }))
}

/// A boxed compile service (the one the coordinator's stack uses).
pub use hybridgrid_net::coordinator::BoxCompile;

/// Compiles as `name ARGS` would, through the grid when it can. Returns the
/// exit code.
pub async fn compile(cfg: &Config, name: &str, args: &[OsString], opts: &RunOptions) -> i32 {
    let started = std::time::SystemTime::now();
    let named = Path::new(name);
    if masquerade::is_old_temp_link(named) && !named.exists() {
        let cwd = std::env::current_dir().unwrap_or_default();
        let build_dir = cwd.ancestors().find(|d| d.join("CMakeCache.txt").is_file());
        eprintln!("{}", masquerade::old_temp_link_message(named, build_dir));
        return 1;
    }
    let compiler = match identify(cfg, name).await {
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
        o.remote_debug_info = cfg.client.remote_debug_info;
        o.color = std::io::IsTerminal::is_terminal(&std::io::stderr());
        o
    };
    // The local tier (direct mode first); the grid is resolved only if needed.
    let cache = cfg.cache.enabled.then(|| {
        client::LocalCache::new(DiskStore::from_config(&cfg.cache), cfg.cache.direct_mode)
    });
    let remote_tier = std::sync::OnceLock::new();
    let outcome: Outcome = client::compile_with(
        &compiler,
        args,
        || async {
            match remote_stack(cfg).await {
                Some(r) => Some(r),
                // No coordinator: a `cache.remote` tier still serves (CI machines).
                None => crate::remote_cache::local_stack(cfg, &compiler).map(|(svc, tier)| {
                    let _ = remote_tier.set(tier);
                    Ok(svc)
                }),
            }
        },
        &copts,
        cache.as_ref(),
    )
    .await;
    if let Some(tier) = remote_tier.get() {
        crate::remote_cache::flush(tier, &cfg.cache).await;
    }
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
    record_event(&outcome);
    crate::trace::record(opts.trace.as_deref(), &outcome, started, name);
    outcome.exit_code
}

/// Environment variable naming the file where each compile of a wrapped
/// build appends one JSON line (for the progress line and the summary).
pub const ENV_EVENTS: &str = "HG_EVENTS_FILE";

/// One compile of a wrapped build, as recorded in the events file.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct CompileEvent {
    /// The source, or `-`.
    pub src: String,
    /// `remote`, `cache`, `local` or `passthrough`.
    pub route: String,
    /// The worker (remote) or the reason (local).
    pub detail: String,
    /// Milliseconds from start to end.
    pub ms: u64,
    /// The exit code.
    pub code: i32,
    /// Start, in microseconds since the Unix epoch.
    pub start_us: u64,
    /// Process id of the hgbuild that compiled it.
    pub pid: u32,
}

fn record_event(o: &Outcome) {
    let Some(path) = std::env::var_os(ENV_EVENTS) else {
        return;
    };
    let (route, detail) = match &o.route {
        client::Route::Cache => ("cache", String::new()),
        client::Route::DirectCache => ("cache", "direct".into()),
        client::Route::Remote(w) => ("remote", w.clone()),
        client::Route::Local(r) => ("local", r.clone()),
        client::Route::Passthrough => ("passthrough", String::new()),
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let ev = CompileEvent {
        src: o
            .source
            .as_ref()
            .map(|s| s.display().to_string())
            .unwrap_or_else(|| "-".into()),
        route: route.into(),
        detail,
        ms: o.elapsed.as_millis() as u64,
        code: o.exit_code,
        start_us: now.saturating_sub(o.elapsed).as_micros() as u64,
        pid: std::process::id(),
    };
    let Ok(mut line) = serde_json::to_string(&ev) else {
        return;
    };
    line.push('\n');
    // One write with O_APPEND: lines of concurrent compiles never interleave.
    use std::io::Write as _;
    if let Ok(mut f) = std::fs::OpenOptions::new().append(true).open(path) {
        let _ = f.write_all(line.as_bytes());
    }
}

/// Counts of a wrapped build's compiles.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct BuildSummary {
    /// Compiles (and other compiler calls) seen.
    pub total: usize,
    /// Compiled by a worker.
    pub remote: usize,
    /// Served from a cache.
    pub cached: usize,
    /// Compiled or linked here.
    pub local: usize,
    /// Compiler calls that exited non-zero.
    pub failed: usize,
}

impl BuildSummary {
    /// Adds the events in `text` (JSON lines).
    pub fn add_lines(&mut self, text: &str) {
        for line in text.lines() {
            let Ok(ev) = serde_json::from_str::<CompileEvent>(line) else {
                continue;
            };
            self.total += 1;
            match ev.route.as_str() {
                "remote" => self.remote += 1,
                "cache" => self.cached += 1,
                _ => self.local += 1,
            }
            if ev.code != 0 {
                self.failed += 1;
            }
        }
    }

    /// `34 compiler calls: 30 remote, 2 cached, 2 local, 0 failed`.
    pub fn line(&self) -> String {
        format!(
            "{} compiler calls: {} remote, {} cached, {} local, {} failed",
            self.total, self.remote, self.cached, self.local, self.failed
        )
    }
}

/// Follows the events file while the build runs: a live progress line on a
/// terminal.
async fn follow_events(
    path: PathBuf,
    tty: bool,
    mut done: tokio::sync::watch::Receiver<bool>,
) -> BuildSummary {
    let mut summary = BuildSummary::default();
    let mut offset = 0usize;
    loop {
        let finished = *done.borrow();
        if let Ok(text) = tokio::fs::read_to_string(&path).await
            && text.len() > offset
        {
            // Only whole lines.
            let upto = text[offset..]
                .rfind('\n')
                .map(|i| offset + i + 1)
                .unwrap_or(offset);
            summary.add_lines(&text[offset..upto]);
            offset = upto;
            if tty {
                eprint!("\r\x1b[Khgbuild: {}", summary.line());
            }
        }
        if finished {
            if tty && summary.total > 0 {
                eprint!("\r\x1b[K");
            }
            return summary;
        }
        tokio::select! {
            _ = tokio::time::sleep(std::time::Duration::from_millis(250)) => {}
            _ = done.changed() => {}
        }
    }
}

/// Runs a build tool (`make`, `ninja`, `cmake`...) with every compile
/// routed through hgbuild. Returns the tool's exit code.
pub async fn wrap(cfg: &Config, tool: &str, args: &[OsString], opts: &RunOptions) -> i32 {
    let exe = match std::env::current_exe() {
        Ok(e) => e,
        Err(e) => {
            eprintln!("hgbuild: cannot find its own program file: {e}");
            return 1;
        }
    };
    let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
    let configuring = tool == "cmake"
        && !args
            .iter()
            .any(|a| a == "--build" || a == "--install" || a == "-E" || a == "-P");
    let build_dir = if tool == "cmake" {
        masquerade::cmake_build_dir(args, &cwd)
    } else {
        masquerade::tool_build_dir(args, &cwd)
    };
    // A build directory an older hgbuild configured through a temporary
    // link: say so once, before the build fails on every compile.
    if !(configuring && args.iter().any(|a| a == "--fresh"))
        && let Some(msg) = masquerade::stale_build_dir(&build_dir)
    {
        eprintln!("{msg}");
        return 2;
    }
    let masq = match masquerade::MasqueradeDir::create(&exe) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("hgbuild: cannot create the compiler link directory: {e}");
            return 1;
        }
    };
    let mut path = vec![masq.path().to_path_buf()];
    path.extend(path_dirs().into_iter().filter(|d| d != masq.path()));
    let path = match std::env::join_paths(path) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("hgbuild: bad PATH: {e}");
            return 1;
        }
    };
    let mut args: Vec<OsString> = args.to_vec();
    let has_jobs = args.iter().any(|a| {
        let s = a.to_string_lossy();
        s.starts_with("-j") || s == "--jobs" || s.starts_with("--jobs=") || s == "--parallel"
    });
    if !has_jobs && matches!(tool, "make" | "gmake" | "ninja") {
        let jobs = default_jobs(cfg).await;
        args.insert(0, OsString::from(format!("-j{jobs}")));
    }
    // CC and CXX name the links (which the configure step records, and
    // which stay), unless the user chose a compiler they cannot stand for.
    let cc = masquerade::CompilerVar::choose(std::env::var_os("CC").as_deref(), "cc", masq.path());
    let cxx =
        masquerade::CompilerVar::choose(std::env::var_os("CXX").as_deref(), "c++", masq.path());
    if configuring {
        // The compilers that do not reach hgbuild through CC and CXX get it
        // as their launcher (its own path, which stays too).
        let fresh = args.iter().any(|a| a == "--fresh");
        let extra = masquerade::cmake_launcher_args(
            &args,
            (!fresh).then_some(build_dir.as_path()),
            &[("C", &cc), ("CXX", &cxx)],
            masq.path(),
            &exe,
        );
        args.extend(extra);
    }
    let events_file = match tempfile::Builder::new()
        .prefix("hgbuild-events-")
        .suffix(".jsonl")
        .tempfile()
    {
        Ok(f) => f,
        Err(e) => {
            eprintln!("hgbuild: cannot create the build's events file: {e}");
            return 1;
        }
    };
    let events = events_file.path().to_path_buf();
    let mut cmd = tokio::process::Command::new(tool);
    cmd.args(&args).env("PATH", path);
    for (var, value) in [("CC", &cc), ("CXX", &cxx)] {
        match value {
            masquerade::CompilerVar::Link(l) => cmd.env(var, l),
            // make and configure scripts take `hgbuild CC` as the compiler;
            // CMake reaches hgbuild through its launcher instead.
            masquerade::CompilerVar::Keep(c) if tool != "cmake" => {
                let mut v = exe.clone().into_os_string();
                v.push(" ");
                v.push(c);
                cmd.env(var, v)
            }
            masquerade::CompilerVar::Keep(_) => &mut cmd,
        };
    }
    // Resolve the coordinator once (mDNS at most once) for every compile.
    if let Some(c) = discovery::coordinator_for_client(cfg).await {
        cmd.env("HG_COORDINATOR", c);
    }
    // Every compile reads the file this process read, whatever directory
    // make runs it in (a relative `hybridgrid.yaml` would be looked up in
    // each subdirectory otherwise).
    if let Some(f) = &opts.config_file {
        cmd.env(
            hybridgrid_core::config::ENV_CONFIG_FILE,
            std::path::absolute(f).unwrap_or_else(|_| f.clone()),
        );
    }
    // The compiles under the build dial as this process would (flags such
    // as --tls-cert are not on their command lines).
    for (k, v) in security_env(cfg) {
        cmd.env(k, v);
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
    cmd.env(ENV_EVENTS, &events);
    let started = std::time::Instant::now();
    let tty = std::io::IsTerminal::is_terminal(&std::io::stderr()) && !opts.verbose;
    let (done_tx, done_rx) = tokio::sync::watch::channel(false);
    let follower = tokio::spawn(follow_events(events.clone(), tty, done_rx));
    let status = cmd.status().await;
    let _ = done_tx.send(true);
    let summary = follower.await.unwrap_or_default();
    let status = match status {
        Ok(s) => s,
        Err(e) => {
            eprintln!("hgbuild: cannot run {tool}: {e}");
            return 127;
        }
    };
    if summary.total > 0 {
        eprintln!(
            "hgbuild: {} in {:.1}s",
            summary.line(),
            started.elapsed().as_secs_f64()
        );
    }
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
    drop(events_file);
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
                "hgbuild: no coordinator configured and none found by mDNS: pass --coordinator HOST:PORT or set HG_COORDINATOR"
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
        "{:<24} {:<22} {:<7} {:>5} {:>7} {:>9} {:>10} {:<9} {:<9} compilers; docker images",
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
        let mut images: Vec<String> = caps
            .docker_images
            .iter()
            .map(|d| format!("{}={}", d.arch, d.image))
            .collect();
        images.sort();
        let docker = if images.is_empty() {
            String::new()
        } else {
            format!("; docker {}", images.join(", "))
        };
        let source = match hybridgrid_net::proto::WorkerSource::try_from(info.source) {
            Ok(hybridgrid_net::proto::WorkerSource::Static) => "static",
            Ok(hybridgrid_net::proto::WorkerSource::Mdns) => "mdns",
            _ => "handshake",
        };
        println!(
            "{:<24} {:<22} {:<7} {:>5} {:>7} {:>9} {:>8.1}ms {:<9} {:<9} {}{}",
            info.id,
            info.address,
            caps.arch,
            caps.cores,
            w.active_tasks,
            w.completed_tasks,
            w.avg_latency_ms,
            w.circuit_state,
            source,
            compilers.join(", "),
            docker
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
            let (direct_hits, direct_misses) = store.direct_stats_blocking();
            println!(
                "direct mode       {} ({direct_hits} hits, {direct_misses} misses)",
                if cfg.cache.direct_mode { "on" } else { "off" }
            );
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
