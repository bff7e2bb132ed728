//! Detecting the compilers a machine has.
//!
//! Each compiler is identified by what it reports of itself (family,
//! version, target triple), never by its name alone: `cc` may be gcc or
//! clang, `gcc` may be any version.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use hybridgrid_core::task::{CompilerFamily, CompilerIdentity, DriverKind};
use hybridgrid_core::worker::CompilerInfo;
use tokio::process::Command;

/// This machine's memory in bytes (`MemTotal` of `/proc/meminfo`), or 0
/// when it cannot be read.
pub fn total_memory() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map(|kb| kb * 1024)
        .unwrap_or(0)
}

/// The native compiler names looked for on `PATH`.
pub const NATIVE_NAMES: &[&str] = &["gcc", "g++", "cc", "c++", "clang", "clang++"];

/// Where and what to look for.
#[derive(Clone, Debug)]
pub struct DetectOptions {
    /// Directories to search; default: `PATH`.
    pub path_dirs: Vec<PathBuf>,
    /// Also look for cross compilers named `<triple>-gcc`, `<triple>-g++`...
    pub cross: bool,
}

impl Default for DetectOptions {
    fn default() -> Self {
        DetectOptions {
            path_dirs: std::env::var_os("PATH")
                .map(|p| std::env::split_paths(&p).collect())
                .unwrap_or_default(),
            cross: true,
        }
    }
}

/// Why a compiler could not be identified.
#[derive(Debug, thiserror::Error)]
pub enum DetectError {
    /// Not found on PATH.
    #[error("compiler `{0}` not found on PATH")]
    NotFound(String),
    /// It ran but its answers were not understood.
    #[error("cannot identify compiler {path}: {reason}")]
    Unrecognised {
        /// The binary.
        path: String,
        /// Why.
        reason: String,
    },
}

/// Finds `name` on the search path (or takes it as a path if it has a `/`).
pub fn which(name: &str, dirs: &[PathBuf]) -> Option<PathBuf> {
    if name.contains('/') {
        let p = PathBuf::from(name);
        return is_executable(&p).then_some(p);
    }
    dirs.iter().map(|d| d.join(name)).find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

async fn run_capture(path: &Path, args: &[&str]) -> Option<String> {
    let fut = Command::new(path)
        .args(args)
        .env("LC_ALL", "C")
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(10), fut)
        .await
        .ok()?
        .ok()?;
    if !out.status.success() {
        return None;
    }
    Some(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// The driver kind implied by a compiler's name (`g++`, `clang++`, `c++`
/// and `*-g++` are C++ drivers).
pub fn driver_kind_of(name: &str) -> DriverKind {
    let base = name.rsplit('/').next().unwrap_or(name);
    // Strip a version suffix such as `g++-12`.
    let stem = base.trim_end_matches(|c: char| c.is_ascii_digit() || c == '.' || c == '-');
    if stem.ends_with("++") {
        DriverKind::Cxx
    } else {
        DriverKind::C
    }
}

/// Identifies the compiler at `path` (invoked as `name`).
pub async fn identify(name: &str, path: &Path) -> Result<CompilerInfo, DetectError> {
    let resolved = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    identify_with(name, &resolved.display().to_string(), |args| async move {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        run_capture(path, &args).await
    })
    .await
}

/// Identifies a compiler by asking it through `run`, which runs the
/// compiler with the given arguments and returns its trimmed standard
/// output if it succeeded. This is how compilers inside containers are
/// identified; `path` is recorded as is.
pub async fn identify_with<F, Fut>(
    name: &str,
    path: &str,
    run: F,
) -> Result<CompilerInfo, DetectError>
where
    F: Fn(Vec<String>) -> Fut,
    Fut: std::future::Future<Output = Option<String>>,
{
    let unrec = |reason: &str| DetectError::Unrecognised {
        path: path.to_owned(),
        reason: reason.to_owned(),
    };
    let ask = |a: &str| run(vec![a.to_owned()]);
    let version_text = ask("--version")
        .await
        .ok_or_else(|| unrec("`--version` failed"))?;
    let family = if version_text.contains("clang version") {
        CompilerFamily::Clang
    } else if version_text.contains("Free Software Foundation") || version_text.contains("GCC") {
        CompilerFamily::Gcc
    } else {
        return Err(unrec("neither gcc nor clang"));
    };
    let version = match family {
        CompilerFamily::Gcc => ask("-dumpfullversion").await,
        _ => clang_version(&version_text),
    }
    .filter(|v| !v.is_empty())
    .ok_or_else(|| unrec("no version"))?;
    let target = ask("-dumpmachine")
        .await
        .filter(|t| !t.is_empty())
        .ok_or_else(|| unrec("`-dumpmachine` failed"))?;
    Ok(CompilerInfo {
        name: name.to_owned(),
        path: path.to_owned(),
        identity: CompilerIdentity {
            family,
            driver: driver_kind_of(name),
            version,
            target,
        },
    })
}

/// Like [`identify`], remembering the answer in `cache_dir` keyed by the
/// binary's resolved path, size and modification time, so that a build of
/// a thousand files does not run `cc --version` a thousand times. Any
/// problem with the cache only means identifying again.
pub async fn identify_cached(
    name: &str,
    path: &Path,
    cache_dir: Option<&Path>,
) -> Result<CompilerInfo, DetectError> {
    let Some(dir) = cache_dir else {
        return identify(name, path).await;
    };
    let Some(key) = binary_stamp(path).map(|stamp| format!("{name}|{stamp}")) else {
        return identify(name, path).await;
    };
    let file = dir.join(format!("{:016x}.json", fnv1a(key.as_bytes())));
    if let Ok(text) = std::fs::read_to_string(&file)
        && let Ok(cached) = serde_json::from_str::<CachedCompiler>(&text)
        && cached.key == key
    {
        return Ok(cached.info);
    }
    let info = identify(name, path).await?;
    let entry = CachedCompiler {
        key,
        info: info.clone(),
    };
    remember(&file, &entry);
    Ok(info)
}

/// What identifies the binary at `path` between runs: its resolved path,
/// size, modification time and inode (`None` if it cannot be read).
pub fn binary_stamp(path: &Path) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let real = std::fs::canonicalize(path).ok()?;
    let m = std::fs::metadata(&real).ok()?;
    Some(format!(
        "{}|{}|{}.{}|{}",
        real.display(),
        m.len(),
        m.mtime(),
        m.mtime_nsec(),
        m.ino()
    ))
}

/// Writes `value` as JSON to `file` (a temporary file in its directory,
/// created if need be, renamed into place). A memo that cannot be written
/// only means asking again next time, so failures are ignored.
pub fn remember(file: &Path, value: &impl serde::Serialize) {
    use std::io::Write as _;
    let Some(dir) = file.parent() else {
        return;
    };
    if std::fs::create_dir_all(dir).is_ok()
        && let Ok(text) = serde_json::to_vec(value)
        && let Ok(mut tmp) = tempfile::NamedTempFile::new_in(dir)
        && tmp.write_all(&text).is_ok()
    {
        let _ = tmp.persist(file);
    }
}

#[derive(serde::Serialize, serde::Deserialize)]
struct CachedCompiler {
    key: String,
    info: CompilerInfo,
}

/// A stable 64-bit FNV-1a hash (file names of the identity cache).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// True for names that look like a compiler driver: the native names and
/// `<triple>-gcc` / `<triple>-g++` cross compilers.
pub fn is_compiler_name(n: &str) -> bool {
    if NATIVE_NAMES.contains(&n) {
        return true;
    }
    let parts: Vec<&str> = n.split('-').collect();
    // <arch>-<...>-<os/abi>-gcc|g++, at least a triple.
    parts.len() >= 3 && matches!(parts.last(), Some(&"gcc") | Some(&"g++"))
}

fn clang_version(text: &str) -> Option<String> {
    let line = text.lines().find(|l| l.contains("clang version"))?;
    let rest = line.split("clang version").nth(1)?.trim();
    Some(rest.split_whitespace().next()?.to_owned())
}

/// Finds `name` and identifies it.
pub async fn find_and_identify(name: &str, dirs: &[PathBuf]) -> Result<CompilerInfo, DetectError> {
    let path = which(name, dirs).ok_or_else(|| DetectError::NotFound(name.to_owned()))?;
    identify(name, &path).await
}

fn cross_candidates(dirs: &[PathBuf]) -> Vec<String> {
    let mut names = Vec::new();
    for d in dirs {
        let Ok(rd) = std::fs::read_dir(d) else {
            continue;
        };
        for e in rd.flatten() {
            let n = e.file_name().to_string_lossy().into_owned();
            if !NATIVE_NAMES.contains(&n.as_str()) && is_compiler_name(&n) {
                names.push(n);
            }
        }
    }
    names.sort();
    names.dedup();
    names
}

/// Detects every compiler available: the native names and, optionally,
/// cross compilers. Compilers that fail to identify are skipped (and
/// logged at debug level).
pub async fn detect_compilers(opts: &DetectOptions) -> Vec<CompilerInfo> {
    let mut names: Vec<String> = NATIVE_NAMES.iter().map(|s| s.to_string()).collect();
    if opts.cross {
        names.extend(cross_candidates(&opts.path_dirs));
    }
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    for name in names {
        if !seen.insert(name.clone()) {
            continue;
        }
        match find_and_identify(&name, &opts.path_dirs).await {
            Ok(info) => out.push(info),
            Err(e) => tracing::debug!(compiler = %name, error = %e, "compiler not usable"),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn driver_kinds() {
        assert_eq!(driver_kind_of("g++"), DriverKind::Cxx);
        assert_eq!(driver_kind_of("/usr/bin/clang++"), DriverKind::Cxx);
        assert_eq!(driver_kind_of("g++-12"), DriverKind::Cxx);
        assert_eq!(driver_kind_of("aarch64-linux-gnu-g++"), DriverKind::Cxx);
        assert_eq!(driver_kind_of("c++"), DriverKind::Cxx);
        assert_eq!(driver_kind_of("gcc"), DriverKind::C);
        assert_eq!(driver_kind_of("cc"), DriverKind::C);
        assert_eq!(driver_kind_of("gcc-12"), DriverKind::C);
    }

    #[test]
    fn clang_versions() {
        assert_eq!(
            clang_version("Debian clang version 14.0.6\nTarget: x86_64-pc-linux-gnu").as_deref(),
            Some("14.0.6")
        );
    }

    #[tokio::test]
    async fn finds_the_real_gcc() {
        let dirs = DetectOptions::default().path_dirs;
        let Ok(info) = find_and_identify("gcc", &dirs).await else {
            panic!("gcc must be installed for the tests");
        };
        assert_eq!(info.identity.family, CompilerFamily::Gcc);
        assert_eq!(info.identity.driver, DriverKind::C);
        assert!(
            info.identity
                .version
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_digit())
        );
        assert!(!info.identity.target.is_empty());
        let gxx = find_and_identify("g++", &dirs).await.expect("g++");
        assert_eq!(gxx.identity.driver, DriverKind::Cxx);
        assert_eq!(gxx.identity.version, info.identity.version);
    }

    #[tokio::test]
    async fn identities_are_cached_per_binary() {
        let dirs = DetectOptions::default().path_dirs;
        let gcc = which("gcc", &dirs).expect("gcc");
        let cache = tempfile::tempdir().expect("tempdir");
        let a = identify_cached("gcc", &gcc, Some(cache.path()))
            .await
            .expect("first");
        assert_eq!(std::fs::read_dir(cache.path()).expect("dir").count(), 1);
        let b = identify_cached("gcc", &gcc, Some(cache.path()))
            .await
            .expect("second");
        assert_eq!(a, b);
        // A cached answer is used: tamper with it and see it come back.
        let file = std::fs::read_dir(cache.path())
            .expect("dir")
            .next()
            .expect("entry")
            .expect("entry")
            .path();
        let text = std::fs::read_to_string(&file)
            .expect("read")
            .replace(&a.identity.version, "99.9.9");
        std::fs::write(&file, text).expect("write");
        let c = identify_cached("gcc", &gcc, Some(cache.path()))
            .await
            .expect("third");
        assert_eq!(c.identity.version, "99.9.9");
        // Garbage is ignored.
        std::fs::write(&file, "{not json").expect("write");
        let d = identify_cached("gcc", &gcc, Some(cache.path()))
            .await
            .expect("fourth");
        assert_eq!(d, a);
    }

    #[tokio::test]
    async fn missing_compiler_is_not_found() {
        let e = find_and_identify("no-such-compiler-xyz", &DetectOptions::default().path_dirs)
            .await
            .unwrap_err();
        assert!(matches!(e, DetectError::NotFound(_)));
    }
}
