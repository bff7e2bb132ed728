//! How a native compile is isolated: bubblewrap, `unshare`, or nothing,
//! probed once per process.

use super::*;

/// The isolation a native compile runs under.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Isolation {
    /// None: the compiler has the worker's network and file access.
    None,
    /// Through `bwrap` (this binary): new network, PID and IPC namespaces
    /// (no network), the file system read-only, the work root hidden and
    /// only the task's own directory writable.
    Bubblewrap(PathBuf),
    /// Through `unshare --net --map-root-user` (this binary): no network;
    /// files are not protected.
    Unshare(PathBuf),
}

impl Isolation {
    /// A short description for logs and docs.
    pub fn describe(&self) -> &'static str {
        match self {
            Isolation::None => "none (compilers have the worker's network and file access)",
            Isolation::Bubblewrap(_) => {
                "bubblewrap (no network, read-only file system, only the task directory writable)"
            }
            Isolation::Unshare(_) => "unshare (no network; the file system is not protected)",
        }
    }

    /// The isolation `mode` asks for on this machine: for `auto` the best
    /// one that works, for a named one that one or why it cannot be used.
    /// Probing runs `bwrap`/`unshare` once per process (tens of
    /// milliseconds), and not at all for `off`: hgbuild compiling on its
    /// own machine must not pay for it on every call.
    pub fn resolve(mode: IsolationMode) -> Result<Isolation, String> {
        if mode == IsolationMode::Off {
            return Ok(Isolation::None);
        }
        let probed = probed();
        match mode {
            IsolationMode::Off => Ok(Isolation::None),
            IsolationMode::Bubblewrap => probed.0.clone().map(Isolation::Bubblewrap),
            IsolationMode::Unshare => probed.1.clone().map(Isolation::Unshare),
            _ => Ok(match probed {
                (Ok(b), _) => Isolation::Bubblewrap(b.clone()),
                (_, Ok(u)) => Isolation::Unshare(u.clone()),
                _ => Isolation::None,
            }),
        }
    }
}

pub(super) type Probe = Result<PathBuf, String>;

pub(super) fn probed() -> &'static (Probe, Probe) {
    static PROBED: std::sync::OnceLock<(Probe, Probe)> = std::sync::OnceLock::new();
    PROBED.get_or_init(|| {
        let dirs = crate::detect::DetectOptions::default().path_dirs;
        let probe = |name: &str, args: &[&str]| -> Probe {
            let path = crate::detect::which(name, &dirs)
                .ok_or_else(|| format!("`{name}` not found on PATH"))?;
            let out = std::process::Command::new(&path)
                .args(args)
                .arg("true")
                .stdin(Stdio::null())
                .output()
                .map_err(|e| format!("cannot run {}: {e}", path.display()))?;
            if out.status.success() {
                Ok(path)
            } else {
                Err(format!(
                    "{} does not work here: {}",
                    path.display(),
                    String::from_utf8_lossy(&out.stderr).trim()
                ))
            }
        };
        let mut bwrap_args = bwrap_args(Path::new("/"), Path::new("/"), None);
        bwrap_args.push("--".into());
        let bwrap_args: Vec<&str> = bwrap_args.iter().map(String::as_str).collect();
        (
            probe("bwrap", &bwrap_args),
            probe("unshare", &["--net", "--map-root-user", "--"]),
        )
    })
}

/// The `bwrap` options that isolate a compile in `task_dir` (writable),
/// running in `cwd` (inside it); the directory `hide` (the work root) is
/// replaced by an empty tmpfs first.
pub(super) fn bwrap_args(task_dir: &Path, cwd: &Path, hide: Option<&Path>) -> Vec<String> {
    let mut a: Vec<String> = [
        "--unshare-net",
        "--unshare-pid",
        "--unshare-ipc",
        "--die-with-parent",
        "--new-session",
        "--ro-bind",
        "/",
        "/",
        "--dev",
        "/dev",
        "--proc",
        "/proc",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    if let Some(h) = hide.filter(|h| *h != Path::new("/")) {
        a.extend(["--tmpfs".into(), h.display().to_string()]);
    }
    if task_dir != Path::new("/") {
        let d = task_dir.display().to_string();
        a.extend([
            "--bind".into(),
            d.clone(),
            d,
            "--chdir".into(),
            cwd.display().to_string(),
        ]);
    }
    a
}
