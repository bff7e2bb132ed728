//! Discovery with the real binaries, across network namespaces this test
//! creates (the machine's own namespace never sees mDNS):
//!
//! ```text
//!   br0 (bridge, own namespace) 10.213.0.0/24        br1 10.214.0.0/24
//!    |- c   coordinator 10.213.0.1                     |- w3 worker 10.214.0.3
//!    |- w1  worker      10.213.0.2                     |
//!    |- w2  worker      10.213.0.3                     |
//!    |- cl  hgbuild     10.213.0.9                     |
//!    '- rt  router      10.213.0.254 ------------------'  10.214.0.254
//! ```
//!
//! The router forwards unicast only, so w3 is reachable but not visible to
//! mDNS. Each program runs with its own host name (`unshare --uts`) and no
//! coordinator address: discovery does the rest.
//!
//! Needs root, `ip` (iproute2), `unshare`, `curl` and `cc`; skipped with a
//! reason otherwise, unless `HG_TEST_REQUIRE_ALL=1`.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const COORD: &str = env!("CARGO_BIN_EXE_hg-coord");
const WORKER: &str = env!("CARGO_BIN_EXE_hg-worker");
const HGBUILD: &str = env!("CARGO_BIN_EXE_hgbuild");

/// Heartbeat TTL given to the coordinator (the default 30 s would make the
/// test slow); workers beat every second.
const TTL: Duration = Duration::from_secs(6);

fn run<C: std::borrow::BorrowMut<Command>>(mut cmd: C) -> Output {
    let cmd = cmd.borrow_mut();
    match cmd.output() {
        Ok(o) => o,
        Err(e) => panic!("cannot run {cmd:?}: {e}"),
    }
}

fn sh(args: &[&str]) {
    let o = run(Command::new(args[0]).args(&args[1..]));
    assert!(
        o.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

fn preconditions() -> Result<(), String> {
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

fn skip(reason: &str) {
    if std::env::var("HG_TEST_REQUIRE_ALL").as_deref() == Ok("1") {
        panic!("HG_TEST_REQUIRE_ALL=1 but: {reason}");
    }
    eprintln!("skipping discovery_netns: {reason}");
}

struct Proc {
    name: String,
    short: String,
    child: Child,
    log: PathBuf,
}

/// Namespaces, bridges and processes of one run; dropping it kills every
/// process and deletes every namespace.
struct Lab {
    tag: String,
    namespaces: Vec<String>,
    procs: Vec<Proc>,
    dir: tempfile::TempDir,
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
    fn new() -> Lab {
        let tag = format!("hgd{}", std::process::id());
        let dir = match tempfile::Builder::new().prefix("hg-disco-").tempdir() {
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
        for b in ["br0", "br1"] {
            sh(&["ip", "-n", &br, "link", "add", b, "type", "bridge"]);
            sh(&["ip", "-n", &br, "link", "set", b, "up"]);
        }
        lab.host(
            "c",
            &[("br0", "eth0", "10.213.0.1/24")],
            Some("10.213.0.254"),
        );
        lab.host(
            "w1",
            &[("br0", "eth0", "10.213.0.2/24")],
            Some("10.213.0.254"),
        );
        lab.host(
            "w2",
            &[("br0", "eth0", "10.213.0.3/24")],
            Some("10.213.0.254"),
        );
        lab.host(
            "cl",
            &[("br0", "eth0", "10.213.0.9/24")],
            Some("10.213.0.254"),
        );
        lab.host(
            "w3",
            &[("br1", "eth0", "10.214.0.3/24")],
            Some("10.214.0.254"),
        );
        lab.host(
            "rt",
            &[
                ("br0", "eth0", "10.213.0.254/24"),
                ("br1", "eth1", "10.214.0.254/24"),
            ],
            None,
        );
        let rt = lab.ns("rt");
        sh(&[
            "ip",
            "netns",
            "exec",
            &rt,
            "sh",
            "-c",
            "echo 1 > /proc/sys/net/ipv4/ip_forward",
        ]);
        lab
    }

    fn ns(&self, short: &str) -> String {
        format!("{}{short}", self.tag)
    }

    /// A namespace `short` with one interface per `(bridge, ifname, cidr)`.
    fn host(&mut self, short: &str, links: &[(&str, &str, &str)], gw: Option<&str>) {
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

    fn command(&self, short: &str, prog: &str, args: &[&str], env: &[(&str, &str)]) -> Command {
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
            .current_dir(self.dir.path());
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd
    }

    /// Starts `prog` in namespace `short` (host name `short`); its output
    /// goes to a log file.
    fn spawn(&mut self, name: &str, short: &str, prog: &str, args: &[&str], env: &[(&str, &str)]) {
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
    fn stop(&mut self, name: &str, graceful: bool) {
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

    fn log(&self, name: &str) -> String {
        self.procs
            .iter()
            .filter(|p| p.name == name)
            .map(|p| std::fs::read_to_string(&p.log).unwrap_or_default())
            .collect()
    }

    fn dump_logs(&self) {
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
    fn workers(&self) -> Option<Vec<(String, String, String)>> {
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

    fn ids(&self) -> Vec<String> {
        self.workers()
            .unwrap_or_default()
            .into_iter()
            .map(|w| w.0)
            .collect()
    }

    /// Polls until `cond` holds; the time it took, or a panic after `limit`.
    fn wait_for(&self, what: &str, limit: Duration, cond: impl Fn(&Lab) -> bool) -> Duration {
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

    fn path(&self, f: &str) -> PathBuf {
        self.dir.path().join(f)
    }
}

fn has(ids: &[String], id: &str) -> bool {
    ids.iter().any(|i| i == id)
}

fn write(p: &Path, text: &str) {
    if let Err(e) = std::fs::write(p, text) {
        panic!("write {}: {e}", p.display());
    }
}

#[test]
fn discovery_across_namespaces() {
    if let Err(reason) = preconditions() {
        skip(&reason);
        return;
    }
    let mut lab = Lab::new();
    let ttl = format!("{}s", TTL.as_secs());
    let coord_env = [("HG_COORDINATOR__HEARTBEAT_TTL", ttl.as_str())];
    let worker_env = [("HG_WORKER__HEARTBEAT_INTERVAL", "1s")];

    // 1. Coordinator and two workers, no addresses anywhere.
    lab.spawn("coord", "c", COORD, &["serve"], &coord_env);
    lab.wait_for("the coordinator", Duration::from_secs(20), |l| {
        l.workers().is_some()
    });
    let mut latency = Vec::new();
    for w in ["w1", "w2"] {
        let t = Instant::now();
        lab.spawn(w, w, WORKER, &["serve"], &worker_env);
        lab.wait_for(&format!("{w} in the pool"), Duration::from_secs(15), |l| {
            has(&l.ids(), w)
        });
        latency.push((w, t.elapsed()));
    }
    for (w, d) in &latency {
        eprintln!(
            "DISCOVERY latency {w}: worker start -> in the pool: {} ms",
            d.as_millis()
        );
    }
    // Found by mDNS (and registered by handshake after finding the
    // coordinator by mDNS): one entry each, never two.
    let ws = lab.workers().unwrap_or_default();
    eprintln!("DISCOVERY workers after start: {ws:?}");
    assert_eq!(ws.len(), 2, "{ws:?}");
    for (id, source, address) in &ws {
        assert!(source == "mdns" || source == "handshake", "{id}: {source}");
        assert!(address.starts_with("10.213.0."), "{id}: {address}");
    }
    assert!(lab.log("coord").contains("worker registered"));
    for (w, d) in &latency {
        assert!(
            *d < Duration::from_secs(5),
            "{w} took {d:?} to be discovered"
        );
    }

    // 2. hgbuild with no coordinator configured finds it and compiles remotely.
    write(
        &lab.path("hello.c"),
        "#include <stdio.h>\nint twice(int x) { return 2 * x; }\nint main(void) { printf(\"%d\\n\", twice(21)); return 0; }\n",
    );
    let t = Instant::now();
    let o = run(lab.command(
        "cl",
        HGBUILD,
        &["-v", "cc", "-O2", "-c", "hello.c", "-o", "hello.o"],
        &[],
    ));
    let first = t.elapsed();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "hgbuild failed: {err}");
    assert!(err.contains("[remote "), "not compiled remotely: {err}");
    let o = run(Command::new("cc")
        .args(["-O2", "-c", "hello.c", "-o", "local.o"])
        .current_dir(lab.dir.path()));
    assert!(o.status.success());
    assert_eq!(
        std::fs::read(lab.path("hello.o")).ok(),
        std::fs::read(lab.path("local.o")).ok(),
        "remote object differs from a local cc -c"
    );
    let cached =
        std::fs::read_to_string(lab.path(".hybridgrid/cache/mdns-coordinator")).unwrap_or_default();
    assert_eq!(cached.trim(), "10.213.0.1:9000");
    write(&lab.path("two.c"), "int two(void) { return 2; }\n");
    let t = Instant::now();
    let o = run(lab.command("cl", HGBUILD, &["-v", "cc", "-c", "two.c"], &[]));
    let second = t.elapsed();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("[remote "), "not compiled remotely: {err}");
    eprintln!(
        "DISCOVERY hgbuild first compile (browses) {} ms, second (cache file) {} ms",
        first.as_millis(),
        second.as_millis()
    );

    // 3. w3 sits behind a router: no multicast path, never discovered.
    lab.spawn("w3", "w3", WORKER, &["serve"], &worker_env);
    std::thread::sleep(Duration::from_secs(3));
    assert!(!has(&lab.ids(), "w3"), "w3 must not be found by mDNS");
    let o = run(lab.command(
        "c",
        "curl",
        &["-s", "--max-time", "2", "http://10.214.0.3:9090/health"],
        &[],
    ));
    assert_eq!(
        String::from_utf8_lossy(&o.stdout).trim(),
        "OK",
        "w3 reachable by unicast"
    );

    // 4. Killing w2 removes it within the TTL.
    lab.stop("w2", false);
    let gone = lab.wait_for("w2 to leave within the TTL", TTL, |l| !has(&l.ids(), "w2"));
    eprintln!(
        "DISCOVERY killed worker left the pool after {} ms",
        gone.as_millis()
    );

    // 5. Restart the coordinator with w3 (and a closed port) listed as
    // static workers: every live worker is back, without restarting any.
    lab.stop("coord", true);
    let statics = "10.214.0.3:50052,10.214.0.3:50053";
    let env = [
        ("HG_COORDINATOR__HEARTBEAT_TTL", ttl.as_str()),
        ("HG_COORDINATOR__STATIC_WORKERS", statics),
    ];
    let t = Instant::now();
    lab.spawn("coord", "c", COORD, &["serve"], &env);
    lab.wait_for("w1 and w3 back", Duration::from_secs(15), |l| {
        let ids = l.ids();
        has(&ids, "w1") && has(&ids, "w3")
    });
    eprintln!(
        "DISCOVERY after a coordinator restart all workers were back in {} ms",
        t.elapsed().as_millis()
    );
    let ws = lab.workers().unwrap_or_default();
    let w3 = ws.iter().find(|w| w.0 == "w3").cloned().unwrap_or_default();
    assert_eq!(
        (w3.1.as_str(), w3.2.as_str()),
        ("static", "10.214.0.3:50052")
    );
    lab.wait_for(
        "the unreachable static worker logged",
        Duration::from_secs(5),
        |l| {
            let log = l.log("coord");
            log.lines().any(|line| {
                line.contains("worker unreachable")
                    && line.contains("10.214.0.3:50053")
                    && line.contains("connection refused")
            })
        },
    );
    // A compile lands on w3 too once w1 is gone.
    lab.stop("w1", true);
    lab.wait_for("w1 to leave", Duration::from_secs(10), |l| {
        !has(&l.ids(), "w1")
    });
    let _ = std::fs::remove_file(lab.path(".hybridgrid/cache/mdns-coordinator"));
    let o = run(lab.command(
        "cl",
        HGBUILD,
        // -O1: another cache key, so the coordinator's shared tier cannot answer.
        &["-v", "cc", "-O1", "-c", "two.c", "-o", "three.o"],
        &[("HG_CACHE__ENABLED", "false")],
    ));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("[remote w3]"), "not compiled on w3: {err}");

    // 6. A static worker that stops answering leaves, and comes back.
    lab.stop("w3", false);
    lab.wait_for("w3 to leave", TTL + Duration::from_secs(3), |l| {
        !has(&l.ids(), "w3")
    });
    lab.spawn("w3", "w3", WORKER, &["serve"], &worker_env);
    let back = lab.wait_for("w3 back", Duration::from_secs(40), |l| has(&l.ids(), "w3"));
    eprintln!(
        "DISCOVERY static worker back {} ms after restart",
        back.as_millis()
    );

    // 7. discovery.mdns.enabled=false: no mDNS socket, never found.
    lab.spawn(
        "w2",
        "w2",
        WORKER,
        &["serve"],
        &[
            ("HG_WORKER__HEARTBEAT_INTERVAL", "1s"),
            ("HG_DISCOVERY__MDNS__ENABLED", "false"),
        ],
    );
    lab.wait_for("w2 to listen", Duration::from_secs(10), |l| {
        let o = run(l.command(
            "w2",
            "curl",
            &["-s", "--max-time", "1", "http://127.0.0.1:9090/health"],
            &[],
        ));
        String::from_utf8_lossy(&o.stdout).trim() == "OK"
    });
    std::thread::sleep(Duration::from_secs(2));
    assert!(!has(&lab.ids(), "w2"), "w2 has mDNS off and no coordinator");
    let o = run(lab.command("w2", "ss", &["-uan"], &[]));
    let sockets = String::from_utf8_lossy(&o.stdout);
    assert!(
        !sockets.contains(":5353"),
        "mDNS socket open with mDNS off:\n{sockets}"
    );

    // 8. A worker that cannot register itself (its configured coordinator
    // is wrong) is still found by the coordinator's mDNS browse.
    lab.stop("w2", false);
    let t = Instant::now();
    lab.spawn(
        "w2",
        "w2",
        WORKER,
        &["serve", "--coordinator", "10.213.0.250:9000"],
        &worker_env,
    );
    lab.wait_for("w2 found by mDNS", Duration::from_secs(10), |l| {
        l.workers()
            .unwrap_or_default()
            .iter()
            .any(|w| w.0 == "w2" && w.1 == "mdns" && w.2 == "10.213.0.3:50052")
    });
    eprintln!(
        "DISCOVERY latency by mDNS alone: worker start -> in the pool: {} ms",
        t.elapsed().as_millis()
    );
}
