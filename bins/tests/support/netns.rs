//! A lab of network namespaces joined by bridges (in a namespace of their
//! own), for tests that cross a network. Dropping the lab kills every
//! process in it and deletes every namespace; the machine's own namespace
//! is never touched.

use std::fs::File;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub fn run<C: std::borrow::BorrowMut<Command>>(mut cmd: C) -> Output {
    let cmd = cmd.borrow_mut();
    match cmd.output() {
        Ok(o) => o,
        Err(e) => panic!("cannot run {cmd:?}: {e}"),
    }
}

pub fn sh(args: &[&str]) {
    let o = run(Command::new(args[0]).args(&args[1..]));
    assert!(
        o.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

pub fn preconditions() -> Result<(), String> {
    let uid = Command::new("id")
        .arg("-u")
        .output()
        .map_err(|e| format!("cannot run id: {e}"))?;
    if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
        return Err("not root".into());
    }
    for tool in ["ip", "unshare", "curl", "cc", "timeout"] {
        let ok = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .stdout(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if !ok {
            return Err(format!("`{tool}` is not installed"));
        }
    }
    let probe = format!("hgdprobe{}", std::process::id());
    let ok = Command::new("ip")
        .args(["netns", "add", &probe])
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    let _ = Command::new("ip").args(["netns", "del", &probe]).status();
    if !ok {
        return Err("`ip netns add` does not work here".into());
    }
    Ok(())
}

/// Prints why a network-namespace test is skipped, or panics when
/// `HG_TEST_REQUIRE_ALL=1`.
pub fn skip(test: &str, reason: &str) {
    if std::env::var("HG_TEST_REQUIRE_ALL").as_deref() == Ok("1") {
        panic!("HG_TEST_REQUIRE_ALL=1 but {test} cannot run: {reason}");
    }
    eprintln!("skipping {test}: {reason}");
}

pub struct Proc {
    name: String,
    short: String,
    child: Child,
    log: PathBuf,
}

/// Namespaces, bridges and processes of one run; dropping it kills every
/// process and deletes every namespace.
pub struct Lab {
    tag: String,
    namespaces: Vec<String>,
    procs: Vec<Proc>,
    pub dir: tempfile::TempDir,
}

impl Drop for Lab {
    fn drop(&mut self) {
        let names: Vec<String> = self.procs.iter().map(|p| p.name.clone()).collect();
        for n in names {
            self.stop(&n, false);
        }
        if std::thread::panicking() {
            self.dump_logs();
        }
        for ns in self.namespaces.iter().rev() {
            // Anything still inside (it should not be) dies with it.
            if let Ok(o) = Command::new("ip").args(["netns", "pids", ns]).output() {
                for pid in String::from_utf8_lossy(&o.stdout).split_whitespace() {
                    let _ = Command::new("kill").args(["-9", pid]).status();
                }
            }
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

impl Lab {
    /// An empty lab: a namespace `<tag>br` holding the given bridges.
    /// `prefix` keeps labs of different tests apart (namespace names are
    /// `<prefix><pid><short>`).
    pub fn new(prefix: &str, bridges: &[&str]) -> Lab {
        let tag = format!("{prefix}{}", std::process::id());
        let dir = match tempfile::Builder::new().prefix("hg-netns-").tempdir() {
            Ok(d) => d,
            Err(e) => panic!("tempdir: {e}"),
        };
        let mut lab = Lab {
            tag,
            namespaces: Vec::new(),
            procs: Vec::new(),
            dir,
        };
        let br = lab.ns("br");
        lab.namespaces.push(br.clone());
        sh(&["ip", "netns", "add", &br]);
        for b in bridges {
            sh(&["ip", "-n", &br, "link", "add", b, "type", "bridge"]);
            sh(&["ip", "-n", &br, "link", "set", b, "up"]);
        }
        lab
    }

    pub fn ns(&self, short: &str) -> String {
        format!("{}{short}", self.tag)
    }

    /// A namespace `short` with one interface per `(bridge, ifname, cidr)`.
    pub fn host(&mut self, short: &str, links: &[(&str, &str, &str)], gw: Option<&str>) {
        let ns = self.ns(short);
        let br = self.ns("br");
        sh(&["ip", "netns", "add", &ns]);
        self.namespaces.push(ns.clone());
        sh(&["ip", "-n", &ns, "link", "set", "lo", "up"]);
        for (bridge, ifname, cidr) in links {
            let v = format!("v{short}{ifname}");
            sh(&[
                "ip", "-n", &br, "link", "add", &v, "type", "veth", "peer", "name", ifname,
                "netns", &ns,
            ]);
            sh(&["ip", "-n", &br, "link", "set", &v, "master", bridge]);
            sh(&["ip", "-n", &br, "link", "set", &v, "up"]);
            sh(&["ip", "-n", &ns, "addr", "add", cidr, "dev", ifname]);
            sh(&["ip", "-n", &ns, "link", "set", ifname, "up"]);
        }
        if let Some(gw) = gw {
            sh(&["ip", "-n", &ns, "route", "add", "default", "via", gw]);
        }
    }

    pub fn command(&self, short: &str, prog: &str, args: &[&str], env: &[(&str, &str)]) -> Command {
        let mut cmd = Command::new("timeout");
        // Bounded even if this test dies: the programs go within 5 minutes.
        cmd.args(["-s", "KILL", "300", "ip", "netns", "exec"])
            .arg(self.ns(short))
            .args([
                "unshare",
                "--uts",
                "sh",
                "-c",
                "hostname \"$0\" && exec \"$@\"",
            ])
            .arg(short)
            .arg(prog)
            .args(args)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", self.dir.path())
            // A worker's task directories and input store stay in the
            // lab's directory (removed with it), not in /dev/shm.
            .env(
                "HG_WORKER__WORK_DIR",
                self.dir.path().join(format!("work-{short}")),
            )
            .current_dir(self.dir.path());
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd
    }

    /// Starts `prog` in namespace `short` (host name `short`); its output
    /// goes to a log file.
    pub fn spawn(
        &mut self,
        name: &str,
        short: &str,
        prog: &str,
        args: &[&str],
        env: &[(&str, &str)],
    ) {
        let log = self
            .dir
            .path()
            .join(format!("{name}.{}.log", self.procs.len()));
        let f = match File::create(&log) {
            Ok(f) => f,
            Err(e) => panic!("log file: {e}"),
        };
        let f2 = match f.try_clone() {
            Ok(f) => f,
            Err(e) => panic!("log file: {e}"),
        };
        let child = match self
            .command(short, prog, args, env)
            .stdout(f)
            .stderr(f2)
            .spawn()
        {
            Ok(c) => c,
            Err(e) => panic!("cannot start {prog}: {e}"),
        };
        self.procs.push(Proc {
            name: name.to_owned(),
            short: short.to_owned(),
            child,
            log,
        });
    }

    /// Stops the program `name` (the only long-running one in its
    /// namespace): SIGTERM and a wait when `graceful`, else SIGKILL.
    pub fn stop(&mut self, name: &str, graceful: bool) {
        let Some(i) = self.procs.iter().position(|p| p.name == name) else {
            panic!("no process {name}");
        };
        let mut p = self.procs.remove(i);
        let ns = self.ns(&p.short);
        let signal = if graceful { "-TERM" } else { "-KILL" };
        if let Ok(o) = Command::new("ip").args(["netns", "pids", &ns]).output() {
            for pid in String::from_utf8_lossy(&o.stdout).split_whitespace() {
                let _ = Command::new("kill").args([signal, pid]).status();
            }
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = p.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = p.child.kill();
        let _ = p.child.wait();
    }

    pub fn log(&self, name: &str) -> String {
        self.procs
            .iter()
            .filter(|p| p.name == name)
            .map(|p| std::fs::read_to_string(&p.log).unwrap_or_default())
            .collect()
    }

    pub fn dump_logs(&self) {
        if let Ok(rd) = std::fs::read_dir(self.dir.path()) {
            for e in rd.flatten() {
                if e.path().extension().is_some_and(|x| x == "log") {
                    let text = std::fs::read_to_string(e.path()).unwrap_or_default();
                    eprintln!("===== {} =====\n{text}", e.path().display());
                }
            }
        }
    }

    /// `(id, source, address)` of the coordinator's workers, or `None` if it
    /// does not answer.
    pub fn workers(&self) -> Option<Vec<(String, String, String)>> {
        let o = self
            .command(
                "c",
                "curl",
                &[
                    "-s",
                    "--max-time",
                    "2",
                    "http://127.0.0.1:8080/api/v1/workers",
                ],
                &[],
            )
            .output()
            .ok()?;
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).ok()?;
        let mut out: Vec<(String, String, String)> = v["workers"]
            .as_array()?
            .iter()
            .map(|w| {
                let s = |k: &str| w[k].as_str().unwrap_or_default().to_owned();
                (s("id"), s("source"), s("address"))
            })
            .collect();
        out.sort();
        Some(out)
    }

    pub fn ids(&self) -> Vec<String> {
        self.workers()
            .unwrap_or_default()
            .into_iter()
            .map(|w| w.0)
            .collect()
    }

    /// Polls until `cond` holds; the time it took, or a panic after `limit`.
    pub fn wait_for(&self, what: &str, limit: Duration, cond: impl Fn(&Lab) -> bool) -> Duration {
        let start = Instant::now();
        while start.elapsed() < limit {
            if cond(self) {
                return start.elapsed();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "timed out after {limit:?} waiting for {what}; workers: {:?}",
            self.workers()
        );
    }

    pub fn path(&self, f: &str) -> PathBuf {
        self.dir.path().join(f)
    }
}
