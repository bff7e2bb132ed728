//! Fault tests with the real binaries on loopback: a coordinator killed
//! and restarted, overload, hung compilers and silent workers, storage
//! faults, hostile input and graceful shutdown. Every build must finish
//! with objects identical to a plain compile.
//!
//! Tests that need root (mount namespaces for full or read-only disks)
//! skip with a printed reason when not root, and fail instead when
//! `HG_TEST_REQUIRE_ALL=1`.

mod support;

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::*;

/// A C file that takes gcc a noticeable moment at -O2.
fn heavy_source(i: usize) -> String {
    let mut s = String::from("#include <string.h>\n");
    for f in 0..60 {
        s.push_str(&format!(
            "int f{i}_{f}(const char *p, int n) {{ int acc = {f}; for (int k = 0; k < n; k++) {{ acc = acc * 31 + p[k] + (int)strlen(p + k); if (acc % 7 == {m}) acc ^= k << 3; }} return acc; }}\n",
            m = f % 7
        ));
    }
    s
}

/// Writes `n` heavy sources and a Makefile that builds them.
fn project(dir: &Path, n: usize) {
    let mut makefile = String::from("OBJS =");
    for i in 0..n {
        write(dir, &format!("u{i}.c"), &heavy_source(i));
        makefile.push_str(&format!(" u{i}.o"));
    }
    makefile.push_str("\nall: $(OBJS)\n%.o: %.c\n\t$(CC) -O2 -c $< -o $@\n");
    write(dir, "Makefile", &makefile);
}

/// Every `u{i}.o` equals what plain `cc -O2 -c` writes.
fn assert_objects_exact(dir: &Path, n: usize) {
    for i in 0..n {
        let plain = run_in(
            dir,
            "cc",
            &["-O2", "-c", &format!("u{i}.c"), "-o", "ref.o"],
            &[],
        );
        assert_eq!(plain.code, 0, "{}", plain.stderr);
        assert_eq!(
            read(dir, &format!("u{i}.o")),
            read(dir, "ref.o"),
            "u{i}.o differs from a plain compile"
        );
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

fn require_all() -> bool {
    std::env::var("HG_TEST_REQUIRE_ALL").is_ok_and(|v| v == "1")
}

/// Whether mount namespaces are usable (root, `unshare` present); prints
/// why not, or panics under `HG_TEST_REQUIRE_ALL=1`.
fn can_mount(test: &str) -> bool {
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
    let ok = root
        && Command::new("unshare")
            .args(["--mount", "true"])
            .status()
            .is_ok_and(|s| s.success());
    if !ok {
        let why = format!("{test}: skipped: needs root and `unshare --mount` for tmpfs/ro mounts");
        if require_all() {
            panic!("{why} (HG_TEST_REQUIRE_ALL=1)");
        }
        eprintln!("{why}");
    }
    ok
}

/// A shell prefix that runs the rest of the command in a private mount
/// namespace with `dir` replaced by a tmpfs of `size` (e.g. "64k"), or a
/// read-only bind of itself when `size` is "ro".
fn mount_prefix(dir: &Path, size: &str) -> Vec<String> {
    let d = dir.display();
    let setup = if size == "ro" {
        format!("mount --bind '{d}' '{d}' && mount -o remount,bind,ro '{d}'")
    } else {
        format!("mount -t tmpfs -o size={size} tmpfs '{d}'")
    };
    vec![
        "unshare".into(),
        "--mount".into(),
        "--propagation".into(),
        "private".into(),
        "sh".into(),
        "-c".into(),
        format!("{setup} && exec \"$@\""),
        "sh".into(),
    ]
}

/// Starts `bin args` (see [`spawn`]) in a private mount namespace where
/// `dir` is replaced as [`mount_prefix`] says.
fn spawn_mounted(
    dir: &Path,
    size: &str,
    bin: &str,
    args: &[&str],
    env: &[(&str, &str)],
    ready: &str,
) -> (Proc, Vec<String>) {
    let prefix = mount_prefix(dir, size);
    let mut all: Vec<&str> = prefix[1..].iter().map(String::as_str).collect();
    all.push(bin);
    all.extend_from_slice(args);
    spawn(&prefix[0], &all, env, ready)
}

/// Runs hgbuild in `dir` under a mount prefix.
fn hgbuild_mounted(dir: &Path, prefix: &[String], args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut all: Vec<&str> = prefix[1..].iter().map(String::as_str).collect();
    all.push(HGBUILD);
    all.extend_from_slice(args);
    run_in(dir, &prefix[0], &all, env)
}

fn hgbuild_make(dir: &Path, coord: &str, jobs: &str, env: &[(&str, &str)]) -> std::process::Child {
    let mut cmd = Command::new(HGBUILD);
    cmd.args(["--coordinator", coord, "-v", "make", jobs])
        .current_dir(dir)
        .env_remove("HG_COORDINATOR")
        .env("HG_DISCOVERY__MDNS__ENABLED", "false")
        .env("HG_CACHE__ENABLED", "false")
        .env("HOME", dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.spawn().expect("start build")
}

fn wait_build(child: std::process::Child, within: Duration) -> (bool, String) {
    let pid = child.id() as i32;
    let start = Instant::now();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(within) {
        Ok(Ok(out)) => (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        ),
        _ => {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
            panic!("build did not finish within {:?}", start.elapsed());
        }
    }
}

#[test]
fn coordinator_killed_and_restarted_mid_build() {
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let coord_args = [
        "serve",
        "--grpc-port",
        &port.to_string(),
        "--http-port",
        "0",
        "--bind",
        "127.0.0.1",
    ];
    let (mut coord, _) = spawn(COORD, &coord_args, &[], "coordinator listening");
    let w1 = start_worker(&addr, "w1", &[]);
    let w2 = start_worker(&addr, "w2", &[]);
    let dir = tempdir();
    let n = 24;
    project(dir.path(), n);
    let build = hgbuild_make(dir.path(), &addr, "-j4", &[]);
    assert!(
        coord.wait_log("task started", Duration::from_secs(60)),
        "no task reached the coordinator:\n{}",
        coord.log_text()
    );
    coord.kill();
    std::thread::sleep(Duration::from_millis(1500));
    let (coord2, _) = spawn(COORD, &coord_args, &[], "coordinator listening");
    let (ok, stderr) = wait_build(build, Duration::from_secs(240));
    assert!(ok, "build failed:\n{stderr}");
    assert_objects_exact(dir.path(), n);
    // Some compiles ran while the coordinator was away: those fell back
    // with a warning that names the address.
    assert!(
        stderr.contains("compiling locally"),
        "no fallback while the coordinator was down:\n{stderr}"
    );
    // Both workers find the new coordinator by themselves.
    for w in ["w1", "w2"] {
        assert!(
            coord2.wait_log(&format!("worker_id={w}"), Duration::from_secs(30)),
            "{w} did not re-register:\n{}",
            coord2.log_text()
        );
    }
    // And the new coordinator compiles remotely again.
    let d2 = tempdir();
    write(d2.path(), "a.c", "int a(void) { return 1; }\n");
    let out = run_in(
        d2.path(),
        HGBUILD,
        &["--coordinator", &addr, "-v", "cc", "-c", "a.c"],
        &[("HG_CACHE__ENABLED", "false")],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stderr.contains("[remote w"), "{}", out.stderr);
    drop((w1, w2));
}

#[test]
fn overload_is_refused_quickly_and_compiled_locally() {
    // One slot and one queue place: of 12 concurrent compiles most are
    // refused at once.
    let c = start_coordinator_env(
        &[],
        &[
            ("HG_COORDINATOR__MAX_CONCURRENT_TASKS", "1"),
            ("HG_COORDINATOR__MAX_QUEUED_TASKS", "1"),
        ],
    );
    let w = start_worker(&c.grpc, "w1", &[]);
    let dir = tempdir();
    let n = 12;
    project(dir.path(), n);
    let build = hgbuild_make(dir.path(), &c.grpc, &format!("-j{n}"), &[]);
    let (ok, stderr) = wait_build(build, Duration::from_secs(240));
    assert!(ok, "build failed:\n{stderr}");
    assert_objects_exact(dir.path(), n);
    assert!(
        stderr.contains("resource exhausted"),
        "no compile was refused for overload:\n{stderr}"
    );
    assert!(stderr.contains("compiling locally"), "{stderr}");
    // Refusals are quick: the coordinator logs none as a slow task, and it
    // still serves.
    let (status, _) = http_get(&c.http, "/health");
    assert_eq!(status, 200);
    let (_, metrics) = http_get(&c.http, "/metrics");
    assert!(metrics.contains("hybridgrid_"), "{metrics}");
    let rss = rss_kb(c.proc.child.id(), "VmHWM:");
    assert!(rss > 0 && rss < 200 * 1024, "coordinator peak RSS {rss} kB");
    drop(w);
}

/// A fake `gcc` that identifies as the real one but hangs when the source
/// contains `HANG_HERE`.
fn hanging_gcc(bin: &Path) {
    std::fs::create_dir_all(bin).expect("mkdir");
    let script = "#!/bin/sh\n\
        for a in \"$@\"; do case \"$a\" in *.i|*.c) if grep -q HANG_HERE \"$a\" 2>/dev/null; then sleep 600; fi;; esac; done\n\
        exec /usr/bin/gcc \"$@\"\n";
    for name in ["gcc", "cc"] {
        let p = bin.join(name);
        std::fs::write(&p, script).expect("write fake gcc");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
}

#[test]
fn a_hung_compiler_is_killed_at_task_timeout_and_the_task_runs_elsewhere() {
    let c = start_coordinator(&[]);
    let fake = tempdir();
    hanging_gcc(fake.path());
    let path = format!(
        "{}:{}",
        fake.path().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let hung = start_worker_env(
        &c.grpc,
        "hung",
        &[],
        &[
            ("PATH", path.as_str()),
            ("HG_WORKER__TASK_TIMEOUT", "3s"),
            ("HG_WORKER__ISOLATION", "off"),
        ],
    )
    .proc;
    let dir = tempdir();
    write(
        dir.path(),
        "h.c",
        "const char *h_marker = \"HANG_HERE\";\nint h(void) { return 42; }\n",
    );
    // With only the hanging worker, the compile is killed at the timeout and
    // the client compiles locally, saying why.
    let t0 = Instant::now();
    let out = run_in(
        dir.path(),
        HGBUILD,
        &["--coordinator", &c.grpc, "-v", "cc", "-c", "h.c"],
        &[("HG_CACHE__ENABLED", "false")],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        t0.elapsed() < Duration::from_secs(60),
        "took {:?}",
        t0.elapsed()
    );
    assert!(
        out.stderr.contains("deadline exceeded"),
        "no deadline in:\n{}",
        out.stderr
    );
    let obj = read(dir.path(), "h.o");
    let plain = run_in(dir.path(), "cc", &["-c", "h.c", "-o", "ref.o"], &[]);
    assert_eq!(plain.code, 0);
    assert_eq!(obj, read(dir.path(), "ref.o"));
    // No compiler process is left behind on the worker.
    std::thread::sleep(Duration::from_millis(500));
    let ps = Command::new("pgrep")
        .args(["-f", &format!("{}/gcc", fake.path().display())])
        .output()
        .expect("pgrep");
    assert!(
        ps.stdout.is_empty(),
        "hung compiler still running: {}",
        String::from_utf8_lossy(&ps.stdout)
    );

    // With a healthy worker too, the task is retried there.
    let good = start_worker(&c.grpc, "good", &[]);
    std::fs::remove_file(dir.path().join("h.o")).ok();
    let out = run_in(
        dir.path(),
        HGBUILD,
        &["--coordinator", &c.grpc, "-v", "cc", "-c", "h.c"],
        &[("HG_CACHE__ENABLED", "false")],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stderr.contains("[remote good]"),
        "not retried on the good worker:\n{}",
        out.stderr
    );
    assert_eq!(read(dir.path(), "h.o"), read(dir.path(), "ref.o"));
    drop((hung, good));
}

/// Accepts TCP connections and never answers; returns its address.
fn black_hole() -> (String, std::sync::Arc<std::sync::atomic::AtomicBool>) {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = l.local_addr().expect("addr").to_string();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let s = stop.clone();
    l.set_nonblocking(true).expect("nonblocking");
    std::thread::spawn(move || {
        let mut held = Vec::new();
        while !s.load(std::sync::atomic::Ordering::Relaxed) {
            match l.accept() {
                Ok((sock, _)) => held.push(sock),
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    });
    (addr, stop)
}

#[test]
fn a_worker_that_never_answers_is_detected_and_avoided() {
    // Hedging learns from a few samples here so the test stays short.
    let c = start_coordinator_env(
        &[],
        &[
            ("HG_SCHEDULER__HEDGE__MIN_SAMPLES", "3"),
            ("HG_SCHEDULER__HEDGE__MIN_DELAY", "300ms"),
        ],
    );
    let good = start_worker(&c.grpc, "good", &[]);
    let dir = tempdir();
    let compile = |name: &str| -> Duration {
        write(
            dir.path(),
            &format!("{name}.c"),
            &format!("int {name}(void) {{ return 7; }}\n"),
        );
        let src = format!("{name}.c");
        let t0 = Instant::now();
        let out = run_in(
            dir.path(),
            HGBUILD,
            &["--coordinator", &c.grpc, "-v", "cc", "-c", &src],
            &[("HG_CACHE__ENABLED", "false")],
        );
        let took = t0.elapsed();
        assert_eq!(out.code, 0, "{}", out.stderr);
        let plain = run_in(dir.path(), "cc", &["-c", &src, "-o", "ref.o"], &[]);
        assert_eq!(plain.code, 0);
        assert_eq!(
            read(dir.path(), &format!("{name}.o")),
            read(dir.path(), "ref.o")
        );
        took
    };
    // Teach the coordinator how long these compiles take.
    for i in 0..5 {
        compile(&format!("warm{i}"));
    }
    // Register a silent "worker" with the good worker's capabilities.
    let (hole, stop) = black_hole();
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let opts = hybridgrid_net::client::ChannelOptions::new(
            Duration::from_secs(3),
            Duration::from_secs(10),
        );
        let mut wc = hybridgrid_net::client::WorkerClient::new(
            hybridgrid_core::worker::WorkerId("good".into()),
            &good.grpc,
            &opts,
        )
        .expect("client");
        let mut info = wc.capabilities().await.expect("capabilities");
        info.id = hybridgrid_core::worker::WorkerId("silent".into());
        info.address = hole.clone();
        let mut cc = hybridgrid_net::client::CoordinatorClient::connect(&c.grpc, &opts)
            .await
            .expect("coordinator");
        let r = cc.register(&info).await.expect("register");
        assert!(r.accepted, "{}", r.message);
    });
    // Until the silent worker has been tried, every compile is quick: a task
    // placed there is hedged onto the good worker well before the keepalive
    // (about 10 s) or the request deadline would notice.
    let mut slowest = Duration::ZERO;
    for i in 0..12 {
        slowest = slowest.max(compile(&format!("s{i}")));
        if c.proc.log_text().contains("worker=silent") && i >= 3 {
            break;
        }
    }
    let log = c.proc.log_text();
    assert!(
        log.contains("worker=silent"),
        "the silent worker was never tried:\n{log}"
    );
    assert!(
        log.contains("hedging on a second worker"),
        "no hedge:\n{log}"
    );
    // Far below the request deadline (task_timeout + 30 s = 330 s) a
    // silent worker would otherwise hold a call for. Not tighter: on a
    // loaded 2-core machine one compile took 8+ s with the hedge logged.
    assert!(
        slowest < Duration::from_secs(30),
        "a compile took {slowest:?}: the silent worker held it"
    );
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    drop(good);
}

#[test]
fn client_cache_on_a_full_or_read_only_disk_only_warns() {
    if !can_mount("client_cache_on_a_full_or_read_only_disk_only_warns") {
        return;
    }
    let (c, ws) = grid(1);
    for mode in ["16k", "ro"] {
        let dir = tempdir();
        let cache = dir.path().join("cache");
        std::fs::create_dir_all(&cache).expect("mkdir");
        project(dir.path(), 3);
        let prefix = mount_prefix(&cache, mode);
        let cache_s = cache.display().to_string();
        for round in 0..2 {
            let out = hgbuild_mounted(
                dir.path(),
                &prefix,
                &["--coordinator", &c.grpc, "make", "-j3", "-B"],
                &[("HG_CACHE__DIR", cache_s.as_str())],
            );
            assert_eq!(out.code, 0, "{mode} round {round}:\n{}", out.stderr);
            assert_objects_exact(dir.path(), 3);
            assert!(
                out.stderr.contains("level=warn") && out.stderr.contains("cache unavailable"),
                "{mode}: no cache warning:\n{}",
                out.stderr
            );
        }
    }
    drop(ws);
}

#[test]
fn coordinator_and_worker_on_a_full_disk_still_build_correctly() {
    if !can_mount("coordinator_and_worker_on_a_full_disk_still_build_correctly") {
        return;
    }
    // Coordinator: its shared cache tier on a full (tiny) tmpfs.
    let cdir = tempdir();
    let cache = cdir.path().join("cache");
    std::fs::create_dir_all(&cache).expect("mkdir");
    let cache_s = cache.display().to_string();
    let coord = {
        let (proc, addrs) = spawn_mounted(
            &cache,
            "16k",
            COORD,
            &coord_args(),
            &[("HG_CACHE__DIR", cache_s.as_str())],
            "coordinator listening",
        );
        Coord {
            proc,
            grpc: addrs[0].clone(),
            http: addrs[1].clone(),
        }
    };
    // Worker: its temporary directory (task directories) on a full tmpfs.
    let wdir = tempdir();
    let tmp = wdir.path().join("tmp");
    std::fs::create_dir_all(&tmp).expect("mkdir");
    let tmp_s = tmp.display().to_string();
    let (full, _) = spawn_mounted(
        &tmp,
        "8k",
        WORKER,
        &worker_args(&coord.grpc, "full"),
        &[
            ("TMPDIR", tmp_s.as_str()),
            ("HG_WORKER__WORK_DIR", tmp_s.as_str()),
        ],
        "worker listening",
    );
    assert!(full.wait_log("registered with coordinator", Duration::from_secs(20)));

    let dir = tempdir();
    project(dir.path(), 4);
    // Only the full worker: every compile falls back locally, correctly.
    let out = run_in(
        dir.path(),
        HGBUILD,
        &["--coordinator", &coord.grpc, "-v", "make", "-j2"],
        &[("HG_CACHE__ENABLED", "false")],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_objects_exact(dir.path(), 4);
    assert!(out.stderr.contains("compiling locally"), "{}", out.stderr);

    // With a healthy worker as well, compiles end up there, and the
    // coordinator's full cache does not matter.
    let good = start_worker(&coord.grpc, "good", &[]);
    let out = run_in(
        dir.path(),
        HGBUILD,
        &["--coordinator", &coord.grpc, "-v", "make", "-B", "-j2"],
        &[("HG_CACHE__ENABLED", "false")],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_objects_exact(dir.path(), 4);
    assert!(out.stderr.contains("[remote good]"), "{}", out.stderr);
    assert!(
        coord.proc.log_text().contains("cache"),
        "coordinator did not warn about its cache:\n{}",
        coord.proc.log_text()
    );
    drop((full, good));
}

#[test]
fn a_corrupted_cache_entry_is_a_miss_with_a_warning() {
    let (c, ws) = grid(1);
    let dir = tempdir();
    write(dir.path(), "k.c", "int k(int x) { return x * 7; }\n");
    let cache = dir.path().join("cache");
    let cache_s = cache.display().to_string();
    let env = [("HG_CACHE__DIR", cache_s.as_str())];
    let out = run_in(
        dir.path(),
        HGBUILD,
        &["--coordinator", &c.grpc, "cc", "-c", "k.c"],
        &env,
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    let good = read(dir.path(), "k.o");
    // Corrupt every entry file of the local cache (flip bytes mid-file).
    let mut n = 0;
    for e in walk(&cache) {
        let mut bytes = std::fs::read(&e).expect("read entry");
        if bytes.len() > 8 {
            let mid = bytes.len() / 2;
            for b in &mut bytes[mid..mid + 4] {
                *b ^= 0x5a;
            }
            std::fs::write(&e, bytes).expect("write entry");
            n += 1;
        }
    }
    assert!(n > 0, "no cache entry found under {}", cache.display());
    std::fs::remove_file(dir.path().join("k.o")).ok();
    let out = run_in(
        dir.path(),
        HGBUILD,
        &["--coordinator", &c.grpc, "-v", "cc", "-c", "k.c"],
        &env,
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(read(dir.path(), "k.o"), good);
    assert!(
        out.stderr.contains("corrupt"),
        "no warning about the corrupted entry:\n{}",
        out.stderr
    );
    drop(ws);
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else if !p
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with('.'))
        {
            out.push(p);
        }
    }
    out
}

/// Sends raw bytes to `addr`, reads whatever comes back (bounded).
fn poke(addr: &str, bytes: &[u8]) {
    if let Ok(mut s) = std::net::TcpStream::connect(addr) {
        s.set_read_timeout(Some(Duration::from_secs(2))).ok();
        s.set_write_timeout(Some(Duration::from_secs(2))).ok();
        let _ = s.write_all(bytes);
        let mut buf = [0u8; 4096];
        let _ = s.read(&mut buf);
    }
}

#[test]
fn garbage_and_truncated_frames_do_not_hurt_the_servers() {
    let (c, ws) = grid(1);
    let preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    let mut hostile: Vec<Vec<u8>> = vec![
        b"\x00\x01\x02garbage that is not http/2 at all\r\n\r\n".to_vec(),
        preface[..10].to_vec(),
        [preface.as_slice(), b"\x00\x00\x12\x04\x00\x00\x00\x00"].concat(),
        // A HEADERS frame that claims 16 MB.
        [preface.as_slice(), b"\xff\xff\xff\x01\x04\x00\x00\x00\x01"].concat(),
        vec![0xffu8; 70_000],
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
    ];
    // Random bytes from a fixed seed.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for _ in 0..20 {
        let mut v = preface.to_vec();
        for _ in 0..512 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            v.push(x as u8);
        }
        hostile.push(v);
    }
    for target in [&c.grpc, &ws[0].grpc] {
        for h in &hostile {
            poke(target, h);
        }
    }
    // Both still serve: a real compile goes through.
    let dir = tempdir();
    write(dir.path(), "g.c", "int g(void) { return 3; }\n");
    let out = run_in(
        dir.path(),
        HGBUILD,
        &["--coordinator", &c.grpc, "-v", "cc", "-c", "g.c"],
        &[("HG_CACHE__ENABLED", "false")],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stderr.contains("[remote w1]"), "{}", out.stderr);
    assert!(c.proc.child.id() > 0);
    let (status, _) = http_get(&c.http, "/health");
    assert_eq!(status, 200);
}

#[test]
fn invalid_utf8_arguments_compile_locally_or_remotely_but_correctly() {
    use std::os::unix::ffi::OsStrExt;
    let (c, ws) = grid(1);
    let dir = tempdir();
    write(dir.path(), "u.c", "int u(void) { return NAME; }\n");
    let define = std::ffi::OsStr::from_bytes(b"-DNAME=1 /* \xff\xfe */");
    let out = Command::new("timeout")
        .arg("120")
        .arg(HGBUILD)
        .args(["--coordinator", &c.grpc, "-v", "cc", "-c", "u.c"])
        .arg(define)
        .current_dir(dir.path())
        .env_remove("HG_COORDINATOR")
        .env("HG_DISCOVERY__MDNS__ENABLED", "false")
        .env("HG_CACHE__ENABLED", "false")
        .env("HOME", dir.path())
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let plain = Command::new("cc")
        .args(["-c", "u.c", "-o", "ref.o"])
        .arg(define)
        .current_dir(dir.path())
        .status()
        .expect("cc");
    assert!(plain.success());
    assert_eq!(read(dir.path(), "u.o"), read(dir.path(), "ref.o"));
    drop(ws);
}

#[test]
fn absurd_configuration_values_are_refused_naming_the_key() {
    let cases: &[(&str, &str, &str)] = &[
        (
            "HG_COORDINATOR__MAX_CONCURRENT_TASKS",
            "0",
            "max_concurrent_tasks",
        ),
        (
            "HG_COORDINATOR__MAX_CONCURRENT_TASKS",
            "-5",
            "max_concurrent_tasks",
        ),
        ("HG_COORDINATOR__HEARTBEAT_TTL", "0s", "heartbeat_ttl"),
        ("HG_COORDINATOR__HEARTBEAT_TTL", "forever", "heartbeat_ttl"),
        ("HG_COORDINATOR__HTTP_PORT", "70000", "http_port"),
        ("HG_WORKER__ISOLATION", "none", "bubblewrap"),
        ("HG_SCHEDULER__ALGORITHM", "fastest", "least-loaded"),
        (
            "HG_RESILIENCE__CIRCUIT_BREAKER__FAILURE_RATE_THRESHOLD",
            "7",
            "failure_rate_threshold",
        ),
        ("HG_CACHE__MAX_SIZE_GB", "-1", "max_size_gb"),
        ("HG_RESILIENCE__RETRY__MULTIPLIER", "0.1", "multiplier"),
        (
            "HG_WORKER__MAX_CONCURRENT_TASKS",
            "0",
            "max_concurrent_tasks",
        ),
    ];
    for (key, value, name) in cases {
        let mut args = vec![
            "20",
            COORD,
            "serve",
            "--bind",
            "127.0.0.1",
            "--grpc-port",
            "0",
        ];
        if !key.ends_with("HTTP_PORT") {
            args.extend(["--http-port", "0"]);
        }
        let out = Command::new("timeout")
            .args(&args)
            .env("HG_DISCOVERY__MDNS__ENABLED", "false")
            .env(key, value)
            .output()
            .expect("run hg-coord");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{key}={value} was accepted:\n{stderr}"
        );
        assert!(stderr.contains(name), "{key}={value}: {stderr}");
    }
}

#[test]
fn sigterm_on_a_worker_finishes_running_compiles_and_deregisters() {
    let c = start_coordinator(&[]);
    let mut w = start_worker(&c.grpc, "w1", &[]);
    let dir = tempdir();
    project(dir.path(), 4);
    let build = hgbuild_make(dir.path(), &c.grpc, "-j4", &[]);
    assert!(
        w.proc.wait_log("task started", Duration::from_secs(60))
            || c.proc.wait_log("task started", Duration::from_secs(1)),
        "no task started:\n{}",
        c.proc.log_text()
    );
    let status = w.proc.terminate(Duration::from_secs(60));
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(0),
        "worker did not exit 0:\n{}",
        w.proc.log_text()
    );
    assert!(
        w.proc.log_text().contains("deregistered from coordinator"),
        "{}",
        w.proc.log_text()
    );
    assert!(c.proc.wait_log("worker left", Duration::from_secs(5)));
    let (ok, stderr) = wait_build(build, Duration::from_secs(240));
    assert!(ok, "build failed:\n{stderr}");
    assert_objects_exact(dir.path(), 4);
    // The compiles that were running when SIGTERM came finished remotely.
    assert!(stderr.contains("[remote w1]"), "{stderr}");
}

#[test]
fn sigterm_on_the_coordinator_drains_running_compiles() {
    let mut c = start_coordinator(&[]);
    let w = start_worker(&c.grpc, "w1", &[]);
    let dir = tempdir();
    write(dir.path(), "u0.c", &heavy_source(0));
    let child = Command::new(HGBUILD)
        .args([
            "--coordinator",
            &c.grpc,
            "-v",
            "--no-fallback",
            "cc",
            "-O2",
            "-c",
            "u0.c",
        ])
        .current_dir(dir.path())
        .env_remove("HG_COORDINATOR")
        .env("HG_DISCOVERY__MDNS__ENABLED", "false")
        .env("HG_CACHE__ENABLED", "false")
        .env("HOME", dir.path())
        .stderr(Stdio::piped())
        .spawn()
        .expect("hgbuild");
    assert!(c.proc.wait_log("task started", Duration::from_secs(60)));
    let status = c.proc.terminate(Duration::from_secs(60));
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(0),
        "{}",
        c.proc.log_text()
    );
    let (ok, stderr) = wait_build(child, Duration::from_secs(120));
    assert!(ok, "{stderr}");
    assert!(stderr.contains("[remote w1]"), "{stderr}");
    assert_objects_exact(dir.path(), 1);
    drop(w);
}

/// Two hg-coord on one cache directory: the second serves without its
/// shared tier (one warning naming the directory) and every compile still
/// succeeds; the first keeps its tier.
#[test]
fn a_second_coordinator_on_the_same_cache_dir_serves_without_its_tier() {
    let cdir = tempdir();
    let cache = cdir.path().join("cache");
    let cache_s = cache.display().to_string();
    let env = [("HG_CACHE__DIR", cache_s.as_str())];
    let a = start_coordinator_env(&[], &env);
    let b = start_coordinator_env(&[], &env);
    let warning = "cache directory is in use by another process";
    assert!(
        b.proc.wait_log(warning, Duration::from_secs(10)),
        "no warning from the second coordinator:\n{}",
        b.proc.log_text()
    );
    let log = b.proc.log_text();
    assert!(
        log.contains(&cache.join("coordinator").display().to_string()) && log.contains("cache.dir"),
        "the warning names neither the directory nor the fix:\n{log}"
    );
    assert_eq!(log.matches(warning).count(), 1, "{log}");
    assert!(!a.proc.log_text().contains(warning));

    let w = start_worker(&b.grpc, "wb", &[]);
    let dir = tempdir();
    write(dir.path(), "t.c", "int t(int x) { return x + 3; }\n");
    // No client cache: both compiles reach the coordinator, and with its
    // tier off the second is not a hit there either.
    for round in 0..2 {
        let out = run_in(
            dir.path(),
            HGBUILD,
            &["--coordinator", &b.grpc, "-v", "cc", "-c", "t.c"],
            &[("HG_CACHE__ENABLED", "false")],
        );
        assert_eq!(out.code, 0, "round {round}: {}", out.stderr);
        assert!(
            out.stderr.contains("[remote wb]"),
            "round {round}: {}",
            out.stderr
        );
    }
    assert!(!read(dir.path(), "t.o").is_empty());
    drop((w, b, a));
}

/// The coordinator's `hybridgrid_tasks_total{outcome=...}`.
fn tasks_by_outcome(http: &str, outcome: &str) -> u64 {
    let (status, body) = http_get(http, "/metrics");
    assert_eq!(status, 200, "{body}");
    let needle = format!("hybridgrid_tasks_total{{outcome=\"{outcome}\"}} ");
    body.lines()
        .find_map(|l| l.strip_prefix(&needle))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map(|v| v as u64)
        .unwrap_or_else(|| panic!("no {needle} in /metrics:\n{body}"))
}

/// A worker that cannot see the client's project (it runs where the
/// project's directory is an empty tmpfs) is asked for the project's header
/// of a `-g` compile by digest, names it, gets it, keeps it in its input
/// store, and still has it after a restart: the same compile then takes
/// one round trip. Objects equal a plain compile's.
#[test]
fn a_worker_keeps_the_headers_it_was_sent_across_a_restart() {
    if !can_mount("a_worker_keeps_the_headers_it_was_sent_across_a_restart") {
        return;
    }
    let c = start_coordinator(&[]);
    let dir = tempdir();
    write(
        dir.path(),
        "util.h",
        "static inline int twice(int x) { return 2 * x; }\n",
    );
    write(
        dir.path(),
        "main.c",
        "#include <stdio.h>\n#include \"util.h\"\nint main(void) { printf(\"%d\\n\", twice(21)); return 0; }\n",
    );
    let plain = run_in(
        dir.path(),
        "cc",
        &["-g", "-O2", "-c", "main.c", "-o", "ref.o"],
        &[],
    );
    assert_eq!(plain.code, 0, "{}", plain.stderr);
    let store_parent = tempdir();
    let wd = store_parent.path().join("work").display().to_string();
    let hidden_worker = |id: &str| {
        let (proc, _) = spawn_mounted(
            dir.path(),
            "1m",
            WORKER,
            &worker_args(&c.grpc, id),
            &[("HG_WORKER__WORK_DIR", wd.as_str())],
            "worker listening",
        );
        assert!(proc.wait_log("registered with coordinator", Duration::from_secs(20)));
        proc
    };
    let mut first = hidden_worker("hidden1");
    let out = hgbuild(
        dir.path(),
        &c.grpc,
        &["-v", "cc", "-g", "-O2", "-c", "main.c", "-o", "a.o"],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stderr.contains("[remote hidden1]"), "{}", out.stderr);
    assert_eq!(
        read(dir.path(), "a.o"),
        read(dir.path(), "ref.o"),
        "a.o differs"
    );
    assert_eq!(
        tasks_by_outcome(&c.http, "missing_inputs"),
        1,
        "util.h was asked for"
    );
    let st = first
        .terminate(Duration::from_secs(20))
        .expect("worker exits");
    assert!(st.success());

    let _second = hidden_worker("hidden2");
    let out = hgbuild(
        dir.path(),
        &c.grpc,
        &["-v", "cc", "-g", "-O2", "-c", "main.c", "-o", "b.o"],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stderr.contains("[remote hidden2]"), "{}", out.stderr);
    assert_eq!(
        read(dir.path(), "b.o"),
        read(dir.path(), "ref.o"),
        "b.o differs"
    );
    assert_eq!(
        tasks_by_outcome(&c.http, "missing_inputs"),
        1,
        "the restarted worker had util.h in its store"
    );
}
