//! A wrapped build (`hgbuild make`, `ninja`, `cmake`): the compiler links and
//! environment it runs the tool with, and its event stream, from which the
//! progress line, the summary and the trace are drawn.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use hybridgrid_core::config::Config;
use hybridgrid_net::discovery;

use crate::client::{ENV_NO_FALLBACK, ENV_VERBOSE, path_dirs};
use crate::dial::{connect, security_env};
use crate::events::{self, BuildSummary, CompileEvent};
use crate::{Client, RunOptions, masquerade};

/// Follows the build's events file while the build runs (a live progress
/// line on a terminal), reading only what was appended since the last
/// look; returns every event once `done` turns true.
async fn follow_events(
    path: PathBuf,
    tty: bool,
    mut done: tokio::sync::watch::Receiver<bool>,
) -> Vec<CompileEvent> {
    use tokio::io::AsyncReadExt as _;
    let mut seen = Vec::new();
    let mut summary = BuildSummary::default();
    // Bytes read but not yet a whole line.
    let mut pending = Vec::new();
    let mut file = None;
    loop {
        let finished = *done.borrow();
        if file.is_none() {
            file = tokio::fs::File::open(&path).await.ok();
        }
        if let Some(f) = file.as_mut()
            && f.read_to_end(&mut pending).await.is_ok()
            && let Some(end) = pending.iter().rposition(|b| *b == b'\n')
        {
            let lines: Vec<u8> = pending.drain(..=end).collect();
            for ev in events::parse(&String::from_utf8_lossy(&lines)) {
                summary.add(&ev);
                seen.push(ev);
            }
            if tty {
                eprint!("\r\x1b[Khgbuild: {}", summary.line());
            }
        }
        if finished {
            if tty && summary.total > 0 {
                eprint!("\r\x1b[K");
            }
            return seen;
        }
        tokio::select! {
            _ = tokio::time::sleep(std::time::Duration::from_millis(250)) => {}
            _ = done.changed() => {}
        }
    }
}

impl Client {
    /// Runs a build tool (`make`, `ninja`, `cmake`...) with every compile
    /// going through hgbuild (the program of [`RunOptions::program`]):
    /// compiler links first in PATH and in CC/CXX, a job count from the
    /// grid's capacity when none is given, and the build's event stream
    /// for the progress line, the summary and the trace. Returns the
    /// tool's exit code.
    pub async fn run_build(&self, tool: &str, args: &[OsString]) -> i32 {
        wrap(self.config(), tool, args, self.options()).await
    }
}

/// Runs a build tool (`make`, `ninja`, `cmake`...) with every compile
/// routed through hgbuild: [`Client::run_build`]. Returns the tool's exit
/// code.
pub async fn wrap(cfg: &Config, tool: &str, args: &[OsString], opts: &RunOptions) -> i32 {
    let exe = match opts.program.clone().map_or_else(std::env::current_exe, Ok) {
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
    let fresh = configuring && args.iter().any(|a| a == "--fresh");
    // A build directory an older hgbuild configured through a temporary
    // link: say so once, before the build fails on every compile.
    if !fresh && let Some(msg) = masquerade::stale_build_dir(&build_dir) {
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
    let events_path = events_file.path().to_path_buf();
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
    let build_start = std::time::SystemTime::now();
    // Compiles append to the events file; the trace is drawn from it at
    // the end, so the compiles do not write one of their own.
    cmd.env(events::ENV_EVENTS, &events_path)
        .env_remove(crate::trace::ENV_TRACE);
    let started = std::time::Instant::now();
    let tty = std::io::IsTerminal::is_terminal(&std::io::stderr()) && !opts.verbose;
    let (done_tx, done_rx) = tokio::sync::watch::channel(false);
    let follower = tokio::spawn(follow_events(events_path, tty, done_rx));
    let status = cmd.status().await;
    let _ = done_tx.send(true);
    let seen = follower.await.unwrap_or_default();
    let summary = BuildSummary::of(&seen);
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
    if let Some(path) = &opts.trace {
        let label = std::iter::once(tool.to_owned())
            .chain(args.iter().map(|a| a.to_string_lossy().into_owned()))
            .collect::<Vec<_>>()
            .join(" ");
        let build = (label.as_str(), build_start, started.elapsed());
        match crate::trace::write_build_trace(path, &seen, Some(build)) {
            Ok(()) => eprintln!(
                "hgbuild: trace of {} compiler runs written to {}",
                seen.len(),
                path.display()
            ),
            Err(e) => eprintln!(
                "hgbuild: warning: cannot write the trace {}: {e}",
                path.display()
            ),
        }
    }
    drop(events_file);
    drop(masq);
    crate::compile::exit_code_of(status)
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
