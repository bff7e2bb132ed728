//! Running the compiler: its environment, process group, bounded output
//! and timeout.

use super::*;

impl Inner {
    pub(super) async fn spawn_and_wait(
        &self,
        isolation: &Isolation,
        program: &str,
        args: &[String],
        task_dir: &Path,
        cwd: &Path,
    ) -> Result<(i32, Vec<u8>, Vec<u8>, Duration), GridError> {
        let mut cmd = match isolation {
            Isolation::None => Command::new(program),
            Isolation::Bubblewrap(bwrap) => {
                let mut c = Command::new(bwrap);
                c.args(bwrap_args(task_dir, cwd, task_dir.parent()))
                    .arg("--")
                    .arg(program);
                c
            }
            Isolation::Unshare(unshare) => {
                let mut c = Command::new(unshare);
                c.args(["--net", "--map-root-user", "--", program]);
                c
            }
        };
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
