//! The client side of a compile, as `hgbuild cc ARGS` runs it: classify the
//! command line, preprocess here, compile through a remote service, write
//! the outputs; or run the compiler locally when the command is not
//! distributable or the grid cannot help.
//!
//! The remote side is any `tower::Service<CompileTask>`: the coordinator's
//! gRPC client, a `CacheLayer` around it, or an embedding tool's own service.
//!
//! # Parts
//!
//! | file | what |
//! |---|---|
//! | `mod.rs` | the options, the outcome, running a compiler locally |
//! | `prepare.rs` | preparing a remote task: preprocessed, or from source with its files; writing the outputs back |
//! | `flow.rs` | one compile: the local tier, the remote service, fallback and replay |

mod flow;
mod prepare;

pub use flow::{compile, compile_with};
pub use prepare::{
    PrepareError, Prepared, adds_color, apply_output, context_files, prepare, source_mode_refusal,
};

use std::ffi::OsString;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use hybridgrid_core::task::Timings;
use tokio::process::Command;

pub use crate::local_cache::LocalCache;

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
    /// A command that runs here as it is (not distributable, or not a
    /// compile) replaces this process with the compiler (`exec`) instead of
    /// running as its child, as ccache does: for a process that runs one
    /// compiler command and has nothing to do after it (hgbuild). Never set
    /// it in a program that must go on.
    pub replace_process: bool,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            fallback: true,
            verbose: false,
            color: false,
            remote_debug_info: true,
            replace_process: false,
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

/// Runs `compiler args` here: in this process's place when `replace`
/// ([`ClientOptions::replace_process`]), else as [`run_local`] does.
/// Returns the exit code (when replacing, only if the compiler could not be
/// started).
pub(crate) async fn run_here(compiler: &Path, args: &[OsString], replace: bool) -> i32 {
    if !replace {
        return run_local(compiler, args).await;
    }
    use std::os::unix::process::CommandExt as _;
    hybridgrid_core::logging::flush();
    let e = std::process::Command::new(compiler).args(args).exec();
    eprintln!("hgbuild: cannot run {}: {e}", compiler.display());
    127
}

/// A process's exit code, or 128 plus the signal that ended it, as a
/// shell reports it.
pub(crate) fn exit_code_of(s: std::process::ExitStatus) -> i32 {
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
