//! One compile in a container: handed to the container's runner (or
//! `docker exec`), waited for, killed at the timeout.

use super::*;

impl Inner {
    /// Runs `cmd` in `container` and collects its output (bounded).
    pub(super) async fn exec(
        &self,
        container: &str,
        cmd: Vec<String>,
        workdir: Option<&str>,
        env: Vec<String>,
        limit: u64,
    ) -> Result<ExecResult, bollard::errors::Error> {
        let docker = match self.docker.as_ref() {
            Ok(d) => d,
            Err(r) => {
                return Err(bollard::errors::Error::IOError {
                    err: std::io::Error::other(r.clone()),
                });
            }
        };
        let created = docker
            .create_exec(
                container,
                CreateExecOptions {
                    attach_stdout: Some(true),
                    attach_stderr: Some(true),
                    cmd: Some(cmd),
                    env: Some(env),
                    working_dir: workdir.map(str::to_owned),
                    user: Some(self.user.clone()),
                    ..Default::default()
                },
            )
            .await?;
        let mut stdout = Vec::new();
        let mut stderr = Vec::new();
        if let StartExecResults::Attached { mut output, .. } = docker
            .start_exec(&created.id, Some(StartExecOptions::default()))
            .await?
        {
            while let Some(item) = output.next().await {
                match item? {
                    LogOutput::StdOut { message } => stdout.extend_from_slice(&message),
                    LogOutput::StdErr { message } => stderr.extend_from_slice(&message),
                    _ => {}
                }
                if (stdout.len() + stderr.len()) as u64 > limit {
                    return Err(bollard::errors::Error::IOError {
                        err: std::io::Error::other(format!(
                            "compiler output exceeds the limit of {limit} bytes"
                        )),
                    });
                }
            }
        }
        let inspected = docker.inspect_exec(&created.id).await?;
        let exit_code = inspected
            .exit_code
            .ok_or_else(|| bollard::errors::Error::IOError {
                err: std::io::Error::other("the exec ended without an exit code"),
            })?;
        Ok(ExecResult {
            exit_code,
            stdout,
            stderr,
        })
    }

    pub(super) async fn run(&self, task: CompileTask) -> Result<CompileOutput, GridError> {
        self.docker()?;
        if task.source_mode.is_some() {
            return Err(GridError::InvalidTask(
                "compiles from source (debug info) do not run in Docker images; the client \
                 compiles them itself"
                    .into(),
            ));
        }
        crate::args::validate_remote_args(&task.args)
            .map_err(|e| GridError::InvalidTask(e.to_string()))?;
        let Some(placed) = self
            .compilers
            .iter()
            .find(|p| p.info.identity == task.compiler)
        else {
            if let Some(why) = self.unusable.get(&task.compiler.target_arch()) {
                return Err(GridError::DockerUnavailable(why.clone()));
            }
            return Err(GridError::InvalidTask(format!(
                "compiler {} is not available in any Docker image of this worker",
                task.compiler
            )));
        };
        let input = task
            .input
            .decode_limited(self.opts.max_input_bytes)
            .map_err(|e| GridError::InvalidTask(e.to_string()))?;
        let dir = tempfile::Builder::new()
            .prefix("hg-task-")
            .tempdir_in(&self.work_root)
            .map_err(|e| GridError::Internal(format!("cannot create task directory: {e}")))?;
        let dir_s = dir.path().display().to_string();
        let input_name = format!("input.{}", task.language.extension());
        tokio::fs::write(dir.path().join(&input_name), &input)
            .await
            .map_err(|e| GridError::Internal(format!("cannot write task input: {e}")))?;
        let mut cmd: Vec<String> = vec![
            placed.info.path.clone(),
            "-x".into(),
            task.language.as_x_arg().into(),
        ];
        cmd.extend(task.args.iter().cloned());
        cmd.extend(["-c".into(), input_name, "-o".into(), "output.o".into()]);

        let start = Instant::now();
        let timeout = self.opts.task_timeout;
        let limit = self.opts.max_output_bytes;
        let attempt = tokio::time::timeout(timeout, async {
            match self.opts.dispatch {
                Dispatch::Runner => self.run_by_runner(&placed.image, &dir_s, &cmd, limit).await,
                Dispatch::Exec => self.run_by_exec(&placed.image, &dir_s, cmd, limit).await,
            }
        })
        .await;
        let result = match attempt {
            Ok(r) => r?,
            Err(_) => {
                self.kill_task(&placed.image, &dir_s).await;
                return Err(GridError::DeadlineExceeded(timeout));
            }
        };
        let elapsed = start.elapsed();
        let exit_code = i32::try_from(result.exit_code).unwrap_or(i32::MAX);
        let mut outputs = Vec::new();
        let mut total = (result.stdout.len() + result.stderr.len()) as u64;
        if exit_code == 0 {
            let mut wanted = vec![(OutputKind::Object, "output.o")];
            if task.extra_outputs.contains(&OutputKind::SplitDwarf) {
                wanted.push((OutputKind::SplitDwarf, "output.dwo"));
            }
            for (kind, name) in wanted {
                let data = read_output(&dir.path().join(name), limit.saturating_sub(total)).await?;
                total += data.len() as u64;
                outputs.push(OutputFile {
                    kind,
                    data: Payload::compress(data),
                });
            }
        }
        drop(dir);
        let mut out = CompileOutput::default();
        out.exit_code = exit_code;
        out.stdout = Bytes::from(result.stdout);
        out.stderr = Bytes::from(result.stderr);
        out.outputs = outputs;
        out.timings = Timings {
            queue: Duration::ZERO,
            compile: elapsed,
        };
        Ok(out)
    }

    /// One compile by `docker exec`.
    pub(super) async fn run_by_exec(
        &self,
        image: &str,
        dir: &str,
        cmd: Vec<String>,
        limit: u64,
    ) -> Result<ExecResult, GridError> {
        let env = vec![format!("TMPDIR={dir}")];
        let container = self.container_of(image).await?;
        match self
            .exec(&container.id, cmd.clone(), Some(dir), env.clone(), limit)
            .await
        {
            Err(e) if is_gone(&e) => {
                // The container died: replace it and try once more.
                let container = self.restart(image, Some(&container.id)).await?;
                self.exec(&container.id, cmd, Some(dir), env, limit)
                    .await
                    .map_err(|e| docker_err("exec", e))
            }
            other => other.map_err(|e| docker_err("exec", e)),
        }
    }

    /// One compile by the container's runner: the command file goes into
    /// the task directory, the directory's name into the runner's FIFO; the
    /// exit code comes back on the report FIFO, the output in files.
    pub(super) async fn run_by_runner(
        &self,
        image: &str,
        dir: &str,
        cmd: &[String],
        limit: u64,
    ) -> Result<ExecResult, GridError> {
        let dir_path = std::path::Path::new(dir);
        // `ulimit -f` (512-byte blocks) bounds every file the compiler writes.
        let mut script = format!(
            "ulimit -f {} 2>/dev/null\nTMPDIR={}; export TMPDIR\nexec",
            limit.div_ceil(512).max(1),
            sh_quote(dir)
        );
        for a in cmd {
            script.push(' ');
            script.push_str(&sh_quote(a));
        }
        script.push('\n');
        tokio::fs::write(dir_path.join(".hg-cmd"), script)
            .await
            .map_err(|e| GridError::Internal(format!("cannot write the task command: {e}")))?;

        let (tx, mut rx) = tokio::sync::oneshot::channel();
        let _waiting = Waiting::new(&self.pending, dir, tx);
        let mut slot = self.container_of(image).await?;
        if submit(&slot.requests, dir).await.is_err() {
            // No runner: the container died. Replace it and try once more.
            slot = self.restart(image, Some(&slot.id)).await?;
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                match submit(&slot.requests, dir).await {
                    Ok(()) => break,
                    Err(e) if Instant::now() > deadline => {
                        return Err(GridError::Internal(format!(
                            "the Docker container of {image} does not take compiles: {e}"
                        )));
                    }
                    Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
                }
            }
        }
        let exit_code = loop {
            tokio::select! {
                code = &mut rx => {
                    break code.map_err(|_| GridError::Internal("the compile's report was lost".into()))?;
                }
                _ = tokio::time::sleep(Duration::from_secs(1)) => {
                    // Still there? (A container that died reports nothing.)
                    if runner_gone(&slot.requests) {
                        return Err(GridError::Internal(format!(
                            "the Docker container of {image} stopped during the compile"
                        )));
                    }
                }
            }
        };
        let stdout = read_output(&dir_path.join(".hg-stdout"), limit).await?;
        let stderr = read_output(
            &dir_path.join(".hg-stderr"),
            limit.saturating_sub(stdout.len() as u64),
        )
        .await?;
        Ok(ExecResult {
            exit_code,
            stdout,
            stderr,
        })
    }

    /// Kills every process in the container whose working directory is the
    /// task directory (the compiler and all it started); restarts the
    /// container if that cannot be done.
    pub(super) async fn kill_task(&self, image: &str, dir: &str) {
        const KILL: &str = r#"for i in 1 2 3; do for p in /proc/[0-9]*; do [ "$(readlink "$p/cwd" 2>/dev/null)" = "$1" ] && kill -9 "${p#/proc/}" 2>/dev/null; done; sleep 0.1; done; exit 0"#;
        let ok = match self
            .containers
            .lock()
            .await
            .get(image)
            .map(|s| s.id.clone())
        {
            Some(c) => {
                let cmd = vec![
                    "sh".into(),
                    "-c".into(),
                    KILL.into(),
                    "sh".into(),
                    dir.into(),
                ];
                matches!(
                    tokio::time::timeout(
                        Duration::from_secs(10),
                        self.exec(&c, cmd, None, vec![], 64 * 1024)
                    )
                    .await,
                    Ok(Ok(ExecResult { exit_code: 0, .. }))
                )
            }
            None => false,
        };
        if !ok && let Err(e) = self.restart(image, None).await {
            tracing::error!(image = %image, error = %e, "cannot restart the Docker container");
        }
    }
}

/// Hands the task directory `dir` to the runner reading `requests`. Fails
/// at once when no runner reads it (a write end of a FIFO without readers
/// cannot be opened without blocking).
pub(super) async fn submit(requests: &std::path::Path, dir: &str) -> std::io::Result<()> {
    let mut tx = pipe::OpenOptions::new().open_sender(requests)?;
    // One line, shorter than PIPE_BUF: written at once, never interleaved
    // with another compile's.
    tx.write_all(format!("{dir}\n").as_bytes()).await
}

/// True when no runner reads `requests` any more (its container is gone).
pub(super) fn runner_gone(requests: &std::path::Path) -> bool {
    matches!(
        pipe::OpenOptions::new().open_sender(requests),
        Err(e) if e.raw_os_error() == Some(libc_enxio())
    ) || !requests.exists()
}

pub(super) const fn libc_enxio() -> i32 {
    nix::errno::Errno::ENXIO as i32
}

/// A compile waiting for its runner's report; forgotten when dropped (done,
/// timed out or cancelled).
pub(super) struct Waiting<'a> {
    pending: &'a Pending,
    dir: String,
}

impl<'a> Waiting<'a> {
    pub(super) fn new(
        pending: &'a Pending,
        dir: &str,
        tx: tokio::sync::oneshot::Sender<i64>,
    ) -> Self {
        if let Ok(mut p) = pending.lock() {
            p.insert(dir.to_owned(), tx);
        }
        Waiting {
            pending,
            dir: dir.to_owned(),
        }
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        if let Ok(mut p) = self.pending.lock() {
            p.remove(&self.dir);
        }
    }
}
