//! The native executor: runs a detected compiler in a fresh private
//! directory per task.
//!
//! Each task gets its own temporary directory holding only its input; the
//! compiler runs there with a cleaned environment in its own process group,
//! writes its outputs there, and the directory is removed afterwards,
//! whatever happened. A compile that outlives the task timeout is killed
//! with its whole process tree and reported as `deadline exceeded`.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::Stdio;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hybridgrid_core::payload::Payload;
use hybridgrid_core::task::{
    CompileOutput, CompileTask, ContextFile, OutputFile, OutputKind, Timings,
};
use hybridgrid_core::worker::CompilerInfo;
use hybridgrid_core::{BoxError, GridError};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::Command;

/// Environment variables passed through to the compiler; everything else
/// (`CPATH`, `DEPENDENCIES_OUTPUT`, `GCC_EXEC_PREFIX`...) is dropped.
const PASS_ENV: &[&str] = &["PATH", "LANG", "LC_ALL", "LC_MESSAGES", "LC_CTYPE"];

/// Settings of the native executor.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct NativeOptions {
    /// A compile running longer is killed.
    pub task_timeout: Duration,
    /// Largest decoded input accepted, in bytes.
    pub max_input_bytes: u64,
    /// Largest output (object plus diagnostics) returned, in bytes.
    pub max_output_bytes: u64,
    /// Where task directories are created (default: the system temp dir).
    pub work_root: Option<PathBuf>,
}

impl Default for NativeOptions {
    fn default() -> Self {
        NativeOptions {
            task_timeout: Duration::from_secs(300),
            max_input_bytes: 1024 * 1024 * 1024,
            max_output_bytes: 256 * 1024 * 1024,
            work_root: None,
        }
    }
}

impl NativeOptions {
    /// Options with this timeout.
    pub fn with_timeout(mut self, t: Duration) -> Self {
        self.task_timeout = t;
        self
    }

    /// Options with this output bound.
    pub fn with_max_output_bytes(mut self, n: u64) -> Self {
        self.max_output_bytes = n;
        self
    }

    /// Options with this work root.
    pub fn with_work_root(mut self, p: impl Into<PathBuf>) -> Self {
        self.work_root = Some(p.into());
        self
    }
}

struct Inner {
    compilers: Vec<CompilerInfo>,
    opts: NativeOptions,
}

/// Runs compiles with the compilers detected on this machine.
#[derive(Clone)]
pub struct NativeExecutor {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for NativeExecutor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NativeExecutor")
            .field("compilers", &self.inner.compilers.len())
            .field("opts", &self.inner.opts)
            .finish()
    }
}

impl NativeExecutor {
    /// An executor that may run exactly these compilers.
    pub fn new(compilers: Vec<CompilerInfo>, opts: NativeOptions) -> Self {
        NativeExecutor {
            inner: Arc::new(Inner { compilers, opts }),
        }
    }

    /// The compilers it may run.
    pub fn compilers(&self) -> &[CompilerInfo] {
        &self.inner.compilers
    }

    /// Compiles one task.
    pub async fn run(&self, task: CompileTask) -> Result<CompileOutput, GridError> {
        self.inner.run(task).await
    }
}

impl tower::Service<CompileTask> for NativeExecutor {
    type Response = CompileOutput;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<CompileOutput, BoxError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, task: CompileTask) -> Self::Future {
        let inner = self.inner.clone();
        Box::pin(async move { inner.run(task).await.map_err(BoxError::from) })
    }
}

fn internal(what: &str, e: impl std::fmt::Display) -> GridError {
    GridError::Internal(format!("{what}: {e}"))
}

/// Reads at most `limit` bytes; more is an error.
async fn read_limited<R: AsyncRead + Unpin>(mut r: R, limit: u64) -> std::io::Result<Vec<u8>> {
    let mut buf = Vec::new();
    let mut take = (&mut r).take(limit + 1);
    take.read_to_end(&mut buf).await?;
    if buf.len() as u64 > limit {
        return Err(std::io::Error::other(format!(
            "compiler output exceeds the limit of {limit} bytes"
        )));
    }
    Ok(buf)
}

fn kill_group(pid: Option<u32>) {
    if let Some(pid) = pid.and_then(|p| i32::try_from(p).ok()) {
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}

impl Inner {
    async fn run(&self, task: CompileTask) -> Result<CompileOutput, GridError> {
        let compiler = self
            .compilers
            .iter()
            .find(|c| c.identity == task.compiler)
            .ok_or_else(|| {
                let have: Vec<String> = self
                    .compilers
                    .iter()
                    .map(|c| c.identity.to_string())
                    .collect();
                GridError::InvalidTask(format!(
                    "compiler {} is not available on this worker (it has: {})",
                    task.compiler,
                    if have.is_empty() {
                        "none".into()
                    } else {
                        have.join(", ")
                    }
                ))
            })?;
        let input = task
            .input
            .decode_limited(self.opts.max_input_bytes)
            .map_err(|e| GridError::InvalidTask(e.to_string()))?;

        let dir = match &self.opts.work_root {
            Some(root) => tempfile::Builder::new().prefix("hg-task-").tempdir_in(root),
            None => tempfile::Builder::new().prefix("hg-task-").tempdir(),
        }
        .map_err(|e| internal("cannot create task directory", e))?;
        // The compile's working directory sits deep enough that context
        // files named `../x.h` stay inside the task directory.
        let depth = task
            .context_files
            .iter()
            .filter_map(|f| ContextFile::parent_depth(&f.path))
            .max()
            .unwrap_or(0)
            .min(16);
        let mut work = dir.path().join("w");
        for i in 0..depth {
            work.push(format!("d{i}"));
        }
        let mut input_name = input_file_name(&task.source_name, task.language.extension());
        if task.context_files.iter().any(|f| f.path == input_name) {
            input_name = format!(".hg-input.{}", task.language.extension());
        }
        let mut files: Vec<(String, Bytes)> = Vec::with_capacity(task.context_files.len() + 1);
        for f in &task.context_files {
            if ContextFile::parent_depth(&f.path).is_none_or(|d| d > depth) {
                continue;
            }
            let data = f
                .data
                .decode_limited(self.opts.max_input_bytes)
                .map_err(|e| GridError::InvalidTask(format!("context file {}: {e}", f.path)))?;
            files.push((f.path.clone(), data));
        }
        files.push((input_name.clone(), input));
        for (rel, data) in &files {
            let path = work.join(rel);
            if let Some(parent) = path.parent() {
                tokio::fs::create_dir_all(parent)
                    .await
                    .map_err(|e| internal("cannot create task directory", e))?;
            }
            tokio::fs::write(&path, data)
                .await
                .map_err(|e| internal("cannot write task input", e))?;
        }

        let mut args: Vec<String> = vec!["-x".into(), task.language.as_x_arg().into()];
        args.extend(task.args.iter().cloned());
        args.extend(["-c".into(), input_name, "-o".into(), "output.o".into()]);
        let result = self.spawn_and_wait(&compiler.path, &args, &work).await;
        let (exit_code, stdout, stderr, elapsed) = result?;

        let mut outputs = Vec::new();
        let mut total = (stdout.len() + stderr.len()) as u64;
        if exit_code == 0 {
            let mut wanted = vec![(OutputKind::Object, "output.o")];
            if task.extra_outputs.contains(&OutputKind::SplitDwarf) {
                wanted.push((OutputKind::SplitDwarf, "output.dwo"));
            }
            for (kind, name) in wanted {
                let path = work.join(name);
                let data =
                    read_output(&path, self.opts.max_output_bytes.saturating_sub(total)).await?;
                total += data.len() as u64;
                outputs.push(OutputFile {
                    kind,
                    data: Payload::compress(data),
                });
            }
        }
        // `dir` is dropped here: the task directory is removed.
        drop(dir);
        let mut out = CompileOutput::default();
        out.exit_code = exit_code;
        out.stdout = Bytes::from(stdout);
        out.stderr = Bytes::from(stderr);
        out.outputs = outputs;
        out.timings = Timings {
            queue: Duration::ZERO,
            compile: elapsed,
        };
        Ok(out)
    }

    async fn spawn_and_wait(
        &self,
        program: &str,
        args: &[String],
        cwd: &Path,
    ) -> Result<(i32, Vec<u8>, Vec<u8>, Duration), GridError> {
        let mut cmd = Command::new(program);
        cmd.args(args)
            .current_dir(cwd)
            .env_clear()
            .env("TMPDIR", cwd)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        for k in PASS_ENV {
            if let Some(v) = std::env::var_os(k) {
                cmd.env(k, v);
            }
        }
        let start = Instant::now();
        let mut child = cmd
            .spawn()
            .map_err(|e| internal(&format!("cannot start {program}"), e))?;
        let pid = child.id();
        let limit = self.opts.max_output_bytes;
        let stdout = child.stdout.take();
        let stderr = child.stderr.take();
        let work = async {
            let out_f = async {
                match stdout {
                    Some(s) => read_limited(s, limit).await,
                    None => Ok(Vec::new()),
                }
            };
            let err_f = async {
                match stderr {
                    Some(s) => read_limited(s, limit).await,
                    None => Ok(Vec::new()),
                }
            };
            let (o, e) = tokio::join!(out_f, err_f);
            let status = child.wait().await;
            (o, e, status)
        };
        let timeout = self.opts.task_timeout;
        match tokio::time::timeout(timeout, work).await {
            Ok((o, e, status)) => {
                let (o, e) = match (o, e) {
                    (Ok(o), Ok(e)) => (o, e),
                    (Err(err), _) | (_, Err(err)) => {
                        kill_group(pid);
                        return Err(internal("compiler output", err));
                    }
                };
                let status = status.map_err(|e| internal("waiting for the compiler", e))?;
                // The compiler is done; make sure nothing it started lingers.
                kill_group(pid);
                let code = match status.code() {
                    Some(c) => c,
                    None => {
                        use std::os::unix::process::ExitStatusExt;
                        128 + status.signal().unwrap_or(0)
                    }
                };
                Ok((code, o, e, start.elapsed()))
            }
            Err(_) => {
                kill_group(pid);
                Err(GridError::DeadlineExceeded(timeout))
            }
        }
    }
}

/// The name the input gets in the task directory: the client's own
/// relative path when it is a plain one (the compiler records the input's
/// name in the object when the input has no line markers), else its base
/// name, else `input.EXT`. Never anything that leaves the task directory.
fn input_file_name(source_name: &str, ext: &str) -> String {
    use std::path::Component;
    let p = Path::new(source_name);
    let plain = !source_name.is_empty()
        && source_name.len() < 1024
        && p.components().count() <= 16
        && p.components().all(|c| matches!(c, Component::Normal(_)));
    if plain {
        return source_name.to_owned();
    }
    match p.file_name().and_then(|n| n.to_str()) {
        Some(n) if !n.starts_with('.') && n != "output.o" && n != "output.dwo" => n.to_owned(),
        _ => format!("input.{ext}"),
    }
}

async fn read_output(path: &Path, limit: u64) -> Result<Vec<u8>, GridError> {
    let meta = tokio::fs::metadata(path)
        .await
        .map_err(|e| internal(&format!("compiler wrote no {}", path.display()), e))?;
    if meta.len() > limit {
        return Err(GridError::InvalidTask(format!(
            "output {} of {} bytes exceeds the limit of {limit} bytes",
            path.file_name()
                .map(|n| n.to_string_lossy())
                .unwrap_or_default(),
            meta.len()
        )));
    }
    tokio::fs::read(path)
        .await
        .map_err(|e| internal("cannot read compiler output", e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect;
    use hybridgrid_core::task::Language;

    async fn gcc() -> CompilerInfo {
        detect::find_and_identify("gcc", &detect::DetectOptions::default().path_dirs)
            .await
            .expect("gcc must be installed for the tests")
    }

    fn preprocess(src: &str) -> Vec<u8> {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t.c");
        std::fs::write(&p, src).unwrap();
        let out = std::process::Command::new("gcc")
            .arg("-E")
            .arg(&p)
            .output()
            .unwrap();
        assert!(out.status.success());
        out.stdout
    }

    fn task(c: &CompilerInfo, src: &str, args: &[&str]) -> CompileTask {
        CompileTask::new(
            c.identity.clone(),
            Language::PreprocessedC,
            args.iter().map(|s| s.to_string()).collect(),
            "t.c",
            Payload::compress(preprocess(src)),
        )
    }

    #[test]
    fn input_names_stay_inside_the_task() {
        assert_eq!(input_file_name("big.i", "i"), "big.i");
        assert_eq!(input_file_name("src/a.i", "i"), "src/a.i");
        assert_eq!(input_file_name("/home/u/a.i", "i"), "a.i");
        assert_eq!(input_file_name("../x/a.i", "i"), "a.i");
        assert_eq!(input_file_name("..", "i"), "input.i");
        assert_eq!(input_file_name("", "i"), "input.i");
        assert_eq!(input_file_name("./a.c", "i"), "a.c");
    }

    #[tokio::test]
    async fn compiles_and_cleans_up() {
        let c = gcc().await;
        let root = tempfile::tempdir().unwrap();
        let ex = NativeExecutor::new(
            vec![c.clone()],
            NativeOptions::default().with_work_root(root.path()),
        );
        let out = ex
            .run(task(&c, "int twice(int x) { return 2 * x; }\n", &["-O2"]))
            .await
            .unwrap();
        assert_eq!(out.exit_code, 0, "{}", String::from_utf8_lossy(&out.stderr));
        let obj = out
            .output(OutputKind::Object)
            .unwrap()
            .data
            .decode()
            .unwrap();
        assert_eq!(&obj[..4], b"\x7fELF");
        assert_eq!(std::fs::read_dir(root.path()).unwrap().count(), 0);
    }

    #[tokio::test]
    async fn compile_errors_are_outputs_not_errors() {
        let c = gcc().await;
        let root = tempfile::tempdir().unwrap();
        let ex = NativeExecutor::new(
            vec![c.clone()],
            NativeOptions::default().with_work_root(root.path()),
        );
        let out = ex
            .run(task(&c, "int f(void) { return nope; }\n", &[]))
            .await
            .unwrap();
        assert_ne!(out.exit_code, 0);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("t.c:1:"), "{err}");
        assert!(err.contains("nope"), "{err}");
        assert!(out.outputs.is_empty());
        assert_eq!(std::fs::read_dir(root.path()).unwrap().count(), 0);
    }

    #[tokio::test]
    async fn unknown_compiler_is_refused() {
        let c = gcc().await;
        let ex = NativeExecutor::new(vec![c.clone()], NativeOptions::default());
        let mut t = task(&c, "int x;\n", &[]);
        t.compiler.version = "0.0.1".into();
        let e = ex.run(t).await.unwrap_err();
        assert!(matches!(e, GridError::InvalidTask(_)), "{e}");
        assert!(e.to_string().contains("not available on this worker"));
    }

    #[tokio::test]
    async fn timeout_kills_and_reports_deadline_exceeded() {
        // A "compiler" that hangs: a shell script posing as gcc, with a
        // child process, so the whole group must be killed.
        let dir = tempfile::tempdir().unwrap();
        let fake = dir.path().join("slowcc");
        let pidfile = dir.path().join("child.pid");
        std::fs::write(
            &fake,
            format!(
                "#!/bin/sh\nsleep 30 &\necho $! > {}\nwait\n",
                pidfile.display()
            ),
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
        let mut c = gcc().await;
        c.path = fake.display().to_string();
        let ex = NativeExecutor::new(
            vec![c.clone()],
            NativeOptions::default().with_timeout(Duration::from_millis(500)),
        );
        let t0 = Instant::now();
        let e = ex.run(task(&c, "int x;\n", &[])).await.unwrap_err();
        assert!(e.to_string().contains("deadline exceeded"), "{e}");
        assert!(t0.elapsed() < Duration::from_secs(10));
        // The grandchild is gone too.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let pid: i32 = std::fs::read_to_string(&pidfile)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let alive = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok()
            && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .map(|s| s.contains(") Z "))
                .unwrap_or(true);
        assert!(!alive, "child process {pid} survived the timeout");
    }

    #[tokio::test]
    async fn output_is_bounded() {
        let c = gcc().await;
        let ex = NativeExecutor::new(
            vec![c.clone()],
            NativeOptions::default().with_max_output_bytes(64),
        );
        let e = ex
            .run(task(&c, "int big[4096] = {1};\n", &[]))
            .await
            .unwrap_err();
        assert!(e.to_string().contains("exceeds the limit"), "{e}");
    }
}
