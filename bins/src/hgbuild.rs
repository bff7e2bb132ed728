//! What `hgbuild` does: compile as a drop-in compiler, wrap a build tool
//! so every compile goes through the grid, and show the grid's state.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use hybridgrid_core::GridError;
use hybridgrid_core::config::Config;
use hybridgrid_core::worker::CompilerInfo;
use hybridgrid_exec::client::{self, ClientOptions, Outcome};
use hybridgrid_exec::detect;
use hybridgrid_net::client::{ChannelOptions, CoordinatorClient};
use hybridgrid_net::discovery;

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
    detect::identify(name, &path)
        .await
        .map_err(|e| e.to_string())
}

async fn connect(cfg: &Config) -> Option<Result<CoordinatorClient, GridError>> {
    // client.coordinator, else one found by mDNS (cached briefly), else none.
    let addr = discovery::coordinator_for_client(cfg).await?;
    let opts = ChannelOptions::new(cfg.client.connect_timeout, cfg.client.request_timeout);
    Some(CoordinatorClient::connect(&addr, &opts).await.map_err(|e| {
        discovery::forget_discovered_coordinator(cfg);
        match e {
            GridError::WorkerUnavailable { reason, .. } => {
                GridError::CoordinatorUnavailable(reason)
            }
            other => other,
        }
    }))
}

/// Compiles as `name ARGS` would, through the grid when it can. Returns the
/// exit code.
pub async fn compile(cfg: &Config, name: &str, args: &[OsString], opts: &RunOptions) -> i32 {
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
    let remote = connect(cfg).await;
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
    // Resolve the coordinator once (mDNS at most once) for every compile.
    if let Some(c) = discovery::coordinator_for_client(cfg).await {
        cmd.env("HG_COORDINATOR", c);
    }
    if opts.verbose {
        cmd.env(ENV_VERBOSE, "1");
    }
    if opts.no_fallback {
        cmd.env(ENV_NO_FALLBACK, "1");
    }
    let status = match cmd.status().await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("hgbuild: cannot run {tool}: {e}");
            return 127;
        }
    };
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
