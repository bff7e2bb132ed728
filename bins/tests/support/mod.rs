//! Test support: start the real binaries on ephemeral loopback ports and
//! stop them when the test ends.
#![allow(dead_code, unreachable_pub, missing_docs)]

pub mod netns;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub const COORD: &str = env!("CARGO_BIN_EXE_hg-coord");
pub const WORKER: &str = env!("CARGO_BIN_EXE_hg-worker");
pub const HGBUILD: &str = env!("CARGO_BIN_EXE_hgbuild");

/// A running process, killed (SIGTERM, then SIGKILL) when dropped.
pub struct Proc {
    pub child: Child,
    pub name: String,
    pub log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    /// The process's own HOME (its caches live there).
    pub home: tempfile::TempDir,
}

impl Proc {
    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Sends SIGTERM and waits for the exit status (bounded).
    pub fn terminate(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.pid()),
            nix::sys::signal::Signal::SIGTERM,
        );
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Ok(Some(s)) = self.child.try_wait() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn log_text(&self) -> String {
        self.log.lock().map(|l| l.join("\n")).unwrap_or_default()
    }

    /// Waits until a log line contains `needle`.
    pub fn wait_log(&self, needle: &str, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if self.log_text().contains(needle) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            if self.terminate(Duration::from_secs(5)).is_none() {
                self.kill();
            }
        }
    }
}

/// Starts `bin args`, capturing stderr lines, and waits for a line with
/// `ready` whose `key=ADDR` fields are returned.
pub fn spawn(bin: &str, args: &[&str], env: &[(&str, &str)], ready: &str) -> (Proc, Vec<String>) {
    let home = tempdir();
    let mut cmd = Command::new(bin);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .env_remove("HG_COORDINATOR")
        .env("HG_DISCOVERY__MDNS__ENABLED", "false")
        .env("HOME", home.path())
        // A worker's task directories and input store go in the test's own
        // directory (removed with it), not in /dev/shm.
        .env("HG_WORKER__WORK_DIR", home.path().join("work"));
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("spawn binary");
    let stderr = child.stderr.take().expect("stderr");
    let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let (tx, rx) = mpsc::channel();
    let log2 = log.clone();
    let ready_s = ready.to_owned();
    std::thread::spawn(move || {
        let mut sent = false;
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if std::env::var_os("HG_TEST_SHOW_LOGS").is_some() {
                eprintln!("{line}");
            }
            if !sent && line.contains(&ready_s) {
                let _ = tx.send(line.clone());
                sent = true;
            }
            if let Ok(mut l) = log2.lock() {
                l.push(line);
            }
        }
    });
    let name = Path::new(bin)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut p = Proc {
        child,
        name,
        log,
        home,
    };
    let line = match rx.recv_timeout(Duration::from_secs(30)) {
        Ok(l) => l,
        Err(_) => {
            let text = p.log_text();
            p.kill();
            panic!("{bin} did not become ready ({ready}); log:\n{text}");
        }
    };
    let addrs = if line.starts_with('{') {
        let v: serde_json::Value = serde_json::from_str(&line).expect("json log line");
        ["grpc", "http"]
            .iter()
            .map(|k| v[k].as_str().unwrap_or_default().to_owned())
            .collect()
    } else {
        line.split_whitespace()
            .filter_map(|f| f.split_once('='))
            .filter(|(k, _)| *k == "grpc" || *k == "http")
            .map(|(_, v)| v.to_owned())
            .collect()
    };
    (p, addrs)
}

/// A coordinator and its addresses.
pub struct Coord {
    pub proc: Proc,
    pub grpc: String,
    pub http: String,
}

pub fn start_coordinator(extra: &[&str]) -> Coord {
    start_coordinator_env(extra, &[])
}

/// A coordinator on free loopback ports with `env` set (e.g.
/// `HG_COORDINATOR__MAX_CONCURRENT_TASKS`).
pub fn start_coordinator_env(extra: &[&str], env: &[(&str, &str)]) -> Coord {
    let mut args = coord_args();
    args.extend_from_slice(extra);
    let (proc, addrs) = spawn(COORD, &args, env, "coordinator listening");
    Coord {
        proc,
        grpc: addrs[0].clone(),
        http: addrs[1].clone(),
    }
}

pub struct Worker {
    pub proc: Proc,
    pub id: String,
    pub grpc: String,
    pub http: String,
}

/// `hg-coord serve` on free loopback ports.
pub fn coord_args() -> Vec<&'static str> {
    vec![
        "serve",
        "--grpc-port",
        "0",
        "--http-port",
        "0",
        "--bind",
        "127.0.0.1",
    ]
}

/// `hg-worker serve` on free loopback ports, registering with `coord` as `id`.
pub fn worker_args<'a>(coord: &'a str, id: &'a str) -> Vec<&'a str> {
    let mut a = coord_args();
    a.extend(["--coordinator", coord, "--id", id]);
    a
}

pub fn start_worker(coord: &str, id: &str, extra: &[&str]) -> Worker {
    start_worker_env(coord, id, extra, &[])
}

/// A worker registered with `coord`, with `env` set (e.g. a `PATH` with a
/// fake compiler first).
pub fn start_worker_env(coord: &str, id: &str, extra: &[&str], env: &[(&str, &str)]) -> Worker {
    let mut args = worker_args(coord, id);
    args.extend_from_slice(extra);
    let (proc, addrs) = spawn(WORKER, &args, env, "worker listening");
    assert!(
        proc.wait_log("registered with coordinator", Duration::from_secs(30)),
        "worker {id} did not register:\n{}",
        proc.log_text()
    );
    Worker {
        proc,
        id: id.to_owned(),
        grpc: addrs[0].clone(),
        http: addrs[1].clone(),
    }
}

/// A coordinator with `n` workers, all registered.
pub fn grid(n: usize) -> (Coord, Vec<Worker>) {
    let c = start_coordinator(&[]);
    let ws = (1..=n)
        .map(|i| start_worker(&c.grpc, &format!("w{i}"), &[]))
        .collect();
    (c, ws)
}

pub struct Output {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl From<std::process::Output> for Output {
    fn from(out: std::process::Output) -> Self {
        Output {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

/// `sh -c SCRIPT` in `dir` (bounded by `limit_secs`) as in a new shell of
/// a user's: HOME `home`, the grid in `HG_COORDINATOR`, hgbuild's cache
/// and mDNS off, `$HGBUILD` naming hgbuild, no CC or CXX of this
/// process's. Callers add what else their builds need.
pub fn user_sh(dir: &Path, home: &Path, coord: &Coord, script: &str, limit_secs: u32) -> Command {
    let mut cmd = Command::new("timeout");
    cmd.arg(limit_secs.to_string())
        .args(["sh", "-c", script])
        .current_dir(dir)
        .env("HOME", home)
        .env("HG_COORDINATOR", &coord.grpc)
        .env("HG_DISCOVERY__MDNS__ENABLED", "false")
        .env("HG_CACHE__ENABLED", "false")
        .env("HGBUILD", HGBUILD)
        .env_remove("CC")
        .env_remove("CXX");
    cmd
}

/// Runs a command in `dir` (bounded by a timeout) and captures its output.
pub fn run_in(dir: &Path, prog: &str, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new("timeout");
    cmd.arg("300")
        .arg(prog)
        .args(args)
        .current_dir(dir)
        .env_remove("HG_COORDINATOR")
        .env("HG_DISCOVERY__MDNS__ENABLED", "false")
        .env("HOME", dir);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run command").into()
}

/// Runs `hgbuild --coordinator ADDR args...` in `dir`.
pub fn hgbuild(dir: &Path, coord: &str, args: &[&str]) -> Output {
    let mut a = vec!["--coordinator", coord];
    a.extend_from_slice(args);
    run_in(dir, HGBUILD, &a, &[])
}

pub fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("hg-e2e-")
        .tempdir()
        .expect("tempdir")
}

pub fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    if let Some(parent) = p.parent() {
        std::fs::create_dir_all(parent).expect("mkdir");
    }
    std::fs::write(&p, text).expect("write");
    p
}

pub fn read(dir: &Path, name: &str) -> Vec<u8> {
    std::fs::read(dir.join(name)).unwrap_or_else(|e| panic!("read {name}: {e}"))
}

/// HTTP GET on loopback with a plain TCP request; returns (status, body).
pub fn http_get(addr: &str, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).expect("connect http");
    s.set_read_timeout(Some(Duration::from_secs(10))).ok();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .expect("send");
    let mut buf = String::new();
    s.read_to_string(&mut buf).expect("read http");
    let status = buf
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = buf
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// Where `scripts/setup.d/real-projects.sh` put the projects' tarballs
/// (`HG_SOURCES_DIR`, default `/var/cache/hybridgrid-test-sources`).
pub fn sources_dir() -> PathBuf {
    std::env::var_os("HG_SOURCES_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/cache/hybridgrid-test-sources"))
}

pub fn find_tarball(prefix: &str) -> Option<PathBuf> {
    let dir = sources_dir();
    let mut found: Vec<PathBuf> = std::fs::read_dir(&dir)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name().and_then(|n| n.to_str()).is_some_and(|n| {
                // Not a detached signature (`.orig.tar.xz.asc`).
                n.starts_with(prefix) && n.contains(".orig.tar.") && !n.ends_with(".asc")
            })
        })
        .collect();
    found.sort();
    found.pop()
}

pub fn require(prefix: &str) -> Option<PathBuf> {
    let t = find_tarball(prefix);
    if t.is_none() {
        let msg = format!(
            "no {prefix}*.orig.tar.* in {}: run scripts/setup.d/real-projects.sh",
            sources_dir().display()
        );
        if std::env::var_os("HG_TEST_REQUIRE_ALL").is_some_and(|v| v == "1") {
            panic!("{msg}");
        }
        eprintln!("SKIP: {msg}");
    }
    t
}

/// True when every program in `tools` is on PATH; otherwise skips (false),
/// or fails under `HG_TEST_REQUIRE_ALL=1`, naming the setup script.
pub fn require_tools(tools: &[&str]) -> bool {
    for t in tools {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {t}")])
            .output()
            .is_ok_and(|o| o.status.success());
        if !found {
            let msg = format!("{t} is not installed: run scripts/setup-test-env.sh");
            if std::env::var("HG_TEST_REQUIRE_ALL").as_deref() == Ok("1") {
                panic!("{msg}");
            }
            eprintln!("SKIP: {msg}");
            return false;
        }
    }
    true
}

/// Tasks the coordinator at `http` (its HTTP address) has completed so
/// far, from `/api/stats`.
pub fn successful_tasks(http: &str) -> u64 {
    let (status, body) = http_get(http, "/api/stats");
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).expect("stats json");
    v["tasks"]["successful"].as_u64().expect("tasks.successful")
}

pub fn extract(tarball: &Path, into: &Path) -> PathBuf {
    let out = Command::new("tar")
        .arg("xf")
        .arg(tarball)
        .current_dir(into)
        .status()
        .expect("tar");
    assert!(out.success(), "cannot extract {}", tarball.display());
    std::fs::read_dir(into)
        .expect("read")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.is_dir())
        .expect("extracted directory")
}

/// A memory figure of process `pid` from /proc (`VmRSS:`, `VmHWM:`...), in kB; 0 if unreadable.
pub fn rss_kb(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// Every object file (`.o`, libtool's `.lo`) under `dir`, by relative
/// path; empty if `dir` does not exist.
pub fn objects(dir: &Path) -> std::collections::BTreeMap<String, Vec<u8>> {
    fn walk(base: &Path, dir: &Path, out: &mut std::collections::BTreeMap<String, Vec<u8>>) {
        let Ok(rd) = std::fs::read_dir(dir) else {
            return;
        };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(base, &p, out);
            } else if matches!(p.extension().and_then(|x| x.to_str()), Some("o" | "lo")) {
                let rel = p.strip_prefix(base).expect("prefix").display().to_string();
                out.insert(rel, std::fs::read(&p).expect("read object"));
            }
        }
    }
    let mut out = std::collections::BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

/// The same object files with the same bytes as the plain build's.
pub fn assert_same_objects(
    what: &str,
    reference: &std::collections::BTreeMap<String, Vec<u8>>,
    ours: &std::collections::BTreeMap<String, Vec<u8>>,
) {
    assert_eq!(
        ours.keys().collect::<Vec<_>>(),
        reference.keys().collect::<Vec<_>>(),
        "{what}: different object files"
    );
    for (name, data) in reference {
        assert!(
            ours[name] == *data,
            "{what}: {name} differs from the plain build"
        );
    }
}
