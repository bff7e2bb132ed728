//! One compiler command as hgbuild runs it: the real compiler behind a name or
//! link, the compile through the grid with fallback, and the event a wrapped
//! build counts.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use crate as client;
use hybridgrid_cache::DiskStore;
use hybridgrid_core::config::Config;
use hybridgrid_core::worker::CompilerInfo;
use hybridgrid_exec::detect;

use crate::masquerade;
use crate::{ClientOptions, Outcome};

use super::*;

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

pub(super) fn path_dirs() -> Vec<PathBuf> {
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
    let copts = ClientOptions {
        fallback: cfg.resilience.fallback.enabled && !opts.no_fallback,
        verbose: opts.verbose,
        remote_debug_info: cfg.client.remote_debug_info,
        color: std::io::IsTerminal::is_terminal(&std::io::stderr()),
        ..ClientOptions::default()
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
