//! Compiles from source on a worker: the client's files laid out under a
//! task root at their client paths.
//!
//! A compile with debug info records paths (the working directory, every
//! file's name) and the line table's columns, which only come out
//! byte-identical when the compiler reads the original source and headers
//! at the client's paths. The worker writes every file the client's
//! preprocessor read to `<root>/<client path>`, runs the compiler in
//! `<root>/<client working directory>` with the absolute paths of include
//! options moved under `<root>`, and maps `<root>` away with
//! `-ffile-prefix-map=<root>=`, which neither gcc nor clang records in the
//! object. System headers the worker has itself must be the client's.
//!
//! ```
//! use hybridgrid_exec::source_tree::literal_dirs;
//!
//! // `..` only resolves through directories that exist: both are created.
//! assert_eq!(
//!     literal_dirs("/p/inc/../src/a.h"),
//!     vec!["p/inc".to_string()]
//! );
//! ```

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use bytes::Bytes;
use hybridgrid_core::GridError;
use hybridgrid_core::task::{CompileTask, SourceFile, SourceMode};

use crate::input_store::InputStore;

/// The directories (relative to the root, normalised) that must exist for
/// the literal client path `path` to resolve: each prefix that a `..`
/// follows. `/a/b/../c.h` needs `a/b`.
pub fn literal_dirs(path: &str) -> Vec<String> {
    let mut out = Vec::new();
    let parts: Vec<&str> = path.split('/').collect();
    for (i, p) in parts.iter().enumerate() {
        if *p == ".." && i > 0 {
            let prefix = parts[..i].join("/");
            if let Some(rel) = SourceMode::relative_path(&format!("/{prefix}")) {
                if !out.contains(&rel) {
                    out.push(rel);
                }
            }
        }
    }
    out
}

/// What a worker's copy of a client file is, remembered by path, size,
/// modification time and inode so each is hashed once.
#[derive(Default)]
pub(crate) struct LocalHashes {
    known: Mutex<HashMap<PathBuf, (Stamp, [u8; 32])>>,
}

/// Size, modification time and inode of a file.
type Stamp = (u64, Option<SystemTime>, u64);

impl LocalHashes {
    /// The digest ([`SourceFile::digest_of`]) of the regular file at
    /// `path` on this machine, or `None` if there is none.
    fn hash(&self, path: &Path) -> Option<[u8; 32]> {
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::metadata(path).ok().filter(|m| m.is_file())?;
        let stamp = (meta.len(), meta.modified().ok(), meta.ino());
        if let Ok(known) = self.known.lock()
            && let Some((s, h)) = known.get(path)
            && *s == stamp
        {
            return Some(*h);
        }
        let data = std::fs::read(path).ok()?;
        let h = SourceFile::digest_of(&data);
        if let Ok(mut known) = self.known.lock() {
            if known.len() > 100_000 {
                known.clear();
            }
            known.insert(path.to_path_buf(), (stamp, h));
        }
        Some(h)
    }
}

/// A compile from source laid out in a task directory.
#[derive(Debug)]
pub(crate) struct Layout {
    /// The root the client's paths are placed under (physical path).
    pub root: PathBuf,
    /// The compile's working directory (`<root>/<client cwd>`).
    pub work: PathBuf,
    /// The compiler's arguments after the program name.
    pub args: Vec<String>,
    /// Where each output appears, in the order of the task's outputs.
    pub outputs: Vec<PathBuf>,
}

fn invalid(msg: impl Into<String>) -> GridError {
    GridError::InvalidTask(msg.into())
}

fn io(what: &str, e: std::io::Error) -> GridError {
    GridError::Internal(format!("{what}: {e}"))
}

/// The client path `p` (absolute, or relative to the client's `cwd`) as it
/// is spelled under `root`, and its normalised place there (`None` when it
/// climbs above the root).
fn under_root(root: &str, cwd: &str, p: &str) -> (String, Option<String>) {
    if p.starts_with('/') {
        (format!("{root}{p}"), SourceMode::relative_path(p))
    } else {
        (
            p.to_owned(),
            SourceMode::relative_path(&format!("{cwd}/{p}")),
        )
    }
}

/// Writes the task's files under `<task_dir>/root` and builds the command:
/// `-x LANG ARGS -ffile-prefix-map=<root>= -c SOURCE -o OUTPUT`.
///
/// Refuses (as the client's problem, so it compiles locally) a file that
/// this worker has at the same path with other content: the compiler could
/// read the worker's copy (system headers are found that way).
pub(crate) async fn lay_out(
    task: &CompileTask,
    mode: &SourceMode,
    task_dir: &Path,
    max_input_bytes: u64,
    hashes: &Arc<LocalHashes>,
    store: Option<&Arc<InputStore>>,
) -> Result<Layout, GridError> {
    crate::args::validate_source_args(&task.args).map_err(|e| invalid(e.to_string()))?;
    let cwd_rel = SourceMode::relative_path(&task.cwd).ok_or_else(|| {
        invalid(format!(
            "a compile from source needs the client's absolute working directory (got `{}`)",
            task.cwd
        ))
    })?;
    if mode.output_paths.len() != 1 + task.extra_outputs.len() {
        return Err(invalid("a compile from source names one path per output"));
    }
    let base = task_dir
        .canonicalize()
        .map_err(|e| io("cannot resolve the task directory", e))?;
    // The compiler reports its working directory as getcwd() does, so the
    // root must be spelled physically for the prefix map to match.
    let root = base.join("root");
    let root_s = root.display().to_string();
    let work = root.join(&cwd_rel);
    let client_cwd = format!("/{cwd_rel}");

    let mut decoded: Vec<JobFile> = Vec::with_capacity(mode.files.len());
    let mut total = 0u64;
    for f in &mode.files {
        let rel = SourceMode::relative_path(&f.path)
            .ok_or_else(|| invalid(format!("source file path `{}` is not plain", f.path)))?;
        let data = match &f.data {
            Some(d) => {
                let data = d
                    .decode_limited(max_input_bytes.saturating_sub(total))
                    .map_err(|e| invalid(format!("source file {}: {e}", f.path)))?;
                total += data.len() as u64;
                Some(data)
            }
            None => None,
        };
        decoded.push(JobFile {
            client: f.path.clone(),
            rel,
            digest: f.digest,
            data,
            local: false,
        });
    }

    let (args, dirs) =
        crate::args::map_source_paths(&task.args, &|v| under_root(&root_s, &client_cwd, v).0);
    let mut outputs = Vec::with_capacity(mode.output_paths.len());
    let mut output_args = Vec::new();
    for p in &mode.output_paths {
        let (spelled, rel) = under_root(&root_s, &client_cwd, p);
        let rel = rel.ok_or_else(|| invalid(format!("output path `{p}` climbs above the root")))?;
        outputs.push(root.join(rel));
        output_args.push(spelled);
    }
    let source = under_root(&root_s, &client_cwd, &task.source_name).0;
    // Include directories exist (gcc warns about missing ones on
    // request), and so does every directory a `..` in a path the compiler
    // is given walks through (`-Ifoo/../inc`, `-o out/x/../a.o`).
    let absolute = |p: &str| {
        if p.starts_with('/') {
            p.to_owned()
        } else {
            format!("{client_cwd}/{p}")
        }
    };
    let mut task_dirs: Vec<String> = Vec::new();
    for d in &dirs {
        let client = d.strip_prefix(&root_s).unwrap_or(d);
        task_dirs.extend(under_root("", &client_cwd, client).1);
        task_dirs.extend(literal_dirs(&absolute(client)));
    }
    for p in mode.output_paths.iter().chain([&task.source_name]) {
        task_dirs.extend(literal_dirs(&absolute(p)));
    }

    let job = Job {
        root: root.clone(),
        work: work.clone(),
        dirs: task_dirs,
        outputs: outputs.clone(),
        files: decoded,
        hashes: hashes.clone(),
        store: store.cloned(),
    };
    tokio::task::spawn_blocking(move || job.run())
        .await
        .map_err(|e| GridError::Internal(format!("laying out the sources: {e}")))??;

    let mut cmd = vec!["-x".to_owned(), task.language.as_x_arg().to_owned()];
    let user_maps = translated_prefix_maps(&args, &root_s);
    cmd.extend(args);
    cmd.push(format!("-ffile-prefix-map={root_s}="));
    // gcc tries the last mapping given first: the user's own, moved under
    // the root, come after ours so they win where they match.
    cmd.extend(user_maps);
    cmd.extend(["-c".to_owned(), source, "-o".to_owned()]);
    cmd.push(output_args.swap_remove(0));
    Ok(Layout {
        root,
        work,
        args: cmd,
        outputs,
    })
}

/// For each path mapping of the user's (`-fdebug-prefix-map=OLD=NEW`,
/// `-ffile-prefix-map=`, `-fmacro-prefix-map=`) with an absolute `OLD`, the
/// same mapping of `<root>OLD`, so paths under the root map as the client's
/// did. The originals stay too, for the worker's own system headers.
pub fn translated_prefix_maps(args: &[String], root: &str) -> Vec<String> {
    let mut out = Vec::new();
    for a in args {
        for opt in [
            "-fdebug-prefix-map=",
            "-ffile-prefix-map=",
            "-fmacro-prefix-map=",
        ] {
            if let Some(map) = a.strip_prefix(opt)
                && map.starts_with('/')
            {
                out.push(format!("{opt}{root}{map}"));
            }
        }
    }
    out
}

/// The file system work of [`lay_out`], run on the blocking pool.
struct Job {
    root: PathBuf,
    work: PathBuf,
    dirs: Vec<String>,
    outputs: Vec<PathBuf>,
    files: Vec<JobFile>,
    hashes: Arc<LocalHashes>,
    store: Option<Arc<InputStore>>,
}

/// One file of a [`Job`].
struct JobFile {
    /// The client's path, as sent.
    client: String,
    /// Its place under the root.
    rel: String,
    /// The digest the client gave.
    digest: [u8; 32],
    /// The decoded content, or `None` when sent by digest only.
    data: Option<Bytes>,
    /// Whether this worker has the same file at the client's path (found
    /// by the checks of [`Job::run`]).
    local: bool,
}

impl Job {
    fn run(mut self) -> Result<(), GridError> {
        let mkdir = |d: &Path| {
            std::fs::create_dir_all(d).map_err(|e| io("cannot create task directory", e))
        };
        mkdir(&self.work)?;
        for d in &self.dirs {
            let _ = std::fs::create_dir_all(self.root.join(d));
        }
        for o in &self.outputs {
            if let Some(parent) = o.parent() {
                mkdir(parent)?;
            }
        }
        // Check every file before writing any: a content that does not
        // match its digest is refused, and the files sent by digest only
        // must be this worker's own, unchanged.
        let mut missing = Vec::new();
        for f in &mut self.files {
            let local = self.hashes.hash(Path::new(&f.client));
            if let Some(data) = &f.data
                && SourceFile::digest_of(data) != f.digest
            {
                return Err(invalid(format!(
                    "source file {} does not match its digest",
                    f.client
                )));
            }
            match local {
                Some(local) if local != f.digest => {
                    return Err(invalid(format!(
                        "{} differs between the client and this worker; a compile from \
                         source (debug info) needs the worker's copy to be the same (install \
                         the same packages), so it compiles on the client",
                        f.client
                    )));
                }
                None if f.data.is_none()
                    && !self.store.as_ref().is_some_and(|s| s.contains(&f.digest)) =>
                {
                    missing.push(f.client.clone())
                }
                _ => {}
            }
            f.local = local.is_some();
        }
        if !missing.is_empty() {
            return Err(GridError::MissingInputs(missing));
        }
        for f in &self.files {
            for d in literal_dirs(&f.client) {
                mkdir(&self.root.join(d))?;
            }
            let dest = self.root.join(&f.rel);
            if self.outputs.contains(&dest) {
                return Err(invalid(format!(
                    "source file {} is also an output of the compile",
                    f.client
                )));
            }
            if let Some(parent) = dest.parent() {
                std::fs::create_dir_all(parent).map_err(|_| {
                    invalid(format!(
                        "source file {} conflicts with another's directory",
                        f.client
                    ))
                })?;
            }
            match (&f.data, &self.store) {
                // A file of this worker's own (checked above) is linked
                // where it is (the compiler reads it read-only through the
                // sandbox); a project's file is kept in the store for the
                // next compile that sends it by digest only.
                (Some(data), Some(store)) if !f.local => store
                    .put(f.digest, data, &dest)
                    .map_err(|e| io("cannot write task input", e))?,
                (Some(data), _) => {
                    std::fs::write(&dest, data).map_err(|e| io("cannot write task input", e))?
                }
                (None, _) if f.local => std::os::unix::fs::symlink(&f.client, &dest)
                    .map_err(|e| io("cannot link task input", e))?,
                (None, store) => {
                    let linked = match store {
                        Some(s) => s
                            .link_to(&f.digest, &dest)
                            .map_err(|e| io("cannot link task input from the store", e))?,
                        None => false,
                    };
                    if !linked {
                        // Gone from the store since the check above.
                        return Err(GridError::MissingInputs(vec![f.client.clone()]));
                    }
                }
            }
        }
        Ok(())
    }
}

/// Whether a failed compile from source failed on a header the client has
/// and this worker lacks (a system header not installed here, or one
/// included by an absolute path): the client's preprocessor found every
/// header, so this is never the user's error.
pub(crate) fn missing_header(stderr: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(stderr);
    text.lines()
        .find(|l| {
            l.contains("fatal error:")
                && (l.ends_with("No such file or directory") || l.ends_with("file not found"))
        })
        .map(|l| l.trim().to_owned())
}

/// `data` with every occurrence of the task root removed, so diagnostics
/// name the client's paths.
pub(crate) fn unmap(data: Vec<u8>, root: &Path) -> Vec<u8> {
    let needle = root.display().to_string();
    let needle = needle.as_bytes();
    if needle.is_empty() || data.len() < needle.len() {
        return data;
    }
    let mut out = Vec::with_capacity(data.len());
    let mut i = 0;
    while i < data.len() {
        if data[i..].starts_with(needle) {
            i += needle.len();
        } else {
            out.push(data[i]);
            i += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literal_dirs_of_dotdot_paths() {
        assert!(literal_dirs("/a/b/c.h").is_empty());
        assert_eq!(literal_dirs("/a/b/../c.h"), vec!["a/b"]);
        assert_eq!(
            literal_dirs("/u/lib/gcc/x/12/include/../../../../include/x.h"),
            vec![
                "u/lib/gcc/x/12/include",
                "u/lib/gcc/x/12",
                "u/lib/gcc/x",
                "u/lib/gcc"
            ]
        );
        assert!(literal_dirs("/../x.h").is_empty());
    }

    #[test]
    fn user_path_mappings_move_under_the_root() {
        let args: Vec<String> = [
            "-g",
            "-ffile-prefix-map=/build/p=.",
            "-fdebug-prefix-map=rel=x",
            "-fmacro-prefix-map=/a=/b",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        assert_eq!(
            translated_prefix_maps(&args, "/w/root"),
            vec![
                "-ffile-prefix-map=/w/root/build/p=.".to_string(),
                "-fmacro-prefix-map=/w/root/a=/b".to_string()
            ]
        );
    }

    #[test]
    fn missing_headers_are_recognised() {
        let gcc = b"a.c:1:10: fatal error: zlib.h: No such file or directory\n";
        let clang = b"a.c:1:10: fatal error: 'zlib.h' file not found\n";
        assert!(missing_header(gcc).is_some());
        assert!(missing_header(clang).is_some());
        assert!(missing_header(b"a.c:2:1: error: expected ';'\n").is_none());
    }

    #[test]
    fn unmap_removes_the_root() {
        let root = Path::new("/w/t1/root");
        let d = b"/w/t1/root/home/u/a.c:3:1: warning: x\nsrc/b.c:1: ok\n".to_vec();
        assert_eq!(
            unmap(d, root),
            b"/home/u/a.c:3:1: warning: x\nsrc/b.c:1: ok\n"
        );
    }
}
