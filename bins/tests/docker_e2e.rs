//! Cross-compiling through the grid with the Docker executor, black box:
//! the real hg-coord, hg-worker and hgbuild binaries, a real Docker daemon
//! and the local test image `hybridgrid-test/cross-arm64:1`.
//!
//! The worker runs with a PATH that has no aarch64 cross compiler, so arm64
//! compiles can only run in the image; the client preprocesses with the
//! host's `aarch64-linux-gnu-gcc` (the same Debian package as in the image).
//! Containers are counted after start, after compiles, after a timeout,
//! after the worker stops and after a worker is SIGKILLed and restarted.
//!
//! Needs `scripts/setup.d/docker.sh` (dockerd, the image, the host cross
//! compiler); without them the tests print why and pass, unless
//! `HG_TEST_REQUIRE_ALL=1` (then they fail).

mod support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use hybridgrid_core::payload::Payload;
use hybridgrid_core::task::{CompileTask, Language};
use hybridgrid_core::worker::WorkerId;
use hybridgrid_exec::docker::count_containers;
use hybridgrid_net::client::{ChannelOptions, WorkerClient};
use support::*;

const CROSS_IMAGE: &str = "hybridgrid-test/cross-arm64:1";
const CROSS_CC: &str = "aarch64-linux-gnu-gcc";

const SRC: &str = r#"#include <stdint.h>
#include "scale.h"
uint64_t mix(uint64_t x) { return SCALE(x) ^ (x >> 7); }
int table[4] = {1, 2, 3, 4};
"#;
const HDR: &str = "#define SCALE(x) ((x) * 2654435761u + 11)\n";

/// A small file gcc takes minutes to compile (a 60000-fold unrolled loop).
const SLOW_SRC: &str = "int a[200000];\nvoid f(void) {\n#pragma GCC unroll 65534\n    for (int i = 0; i < 60000; i++) a[i] = a[i] * 3 + i;\n}\n";

fn skip_or_fail(reason: &str) {
    if std::env::var("HG_TEST_REQUIRE_ALL").as_deref() == Ok("1") {
        panic!("required test cannot run: {reason} (run scripts/setup.d/docker.sh)");
    }
    eprintln!("skipping: {reason} (run scripts/setup.d/docker.sh)");
}

fn on_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// Why the test cannot run here, if it cannot.
async fn missing_prerequisite() -> Option<String> {
    if count_containers(None, "probe").await.is_none() {
        return Some("no Docker daemon".into());
    }
    let image = std::process::Command::new("docker")
        .args(["image", "inspect", CROSS_IMAGE])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !image {
        return Some(format!("image {CROSS_IMAGE} missing"));
    }
    if on_path(CROSS_CC).is_none() {
        return Some(format!("{CROSS_CC} not on PATH (client side)"));
    }
    None
}

/// A PATH for the worker with the host's native gcc and nothing else (in
/// particular no aarch64 cross compiler).
fn native_only_path() -> tempfile::TempDir {
    let dir = tempdir();
    for name in ["gcc", "cc", "as", "ld", "bwrap", "unshare"] {
        if let Some(p) = on_path(name) {
            let real = std::fs::canonicalize(&p).unwrap_or(p);
            std::os::unix::fs::symlink(real, dir.path().join(name)).expect("symlink");
        }
    }
    dir
}

fn start_docker_worker(
    coord: &str,
    id: &str,
    path: &Path,
    extra_env: &[(&str, &str)],
) -> (Proc, String, String) {
    let path_s = path.display().to_string();
    let mut env = vec![
        ("PATH", path_s.as_str()),
        ("HG_WORKER__DOCKER__IMAGES__ARM64", CROSS_IMAGE),
    ];
    env.extend_from_slice(extra_env);
    let w = start_worker_env(coord, id, &[], &env);
    (w.proc, w.grpc, w.http)
}

fn file_type(p: &Path) -> String {
    let out = std::process::Command::new("file")
        .arg("-b")
        .arg(p)
        .output()
        .expect("run file(1)");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// What the image's cross compiler writes for `src` run directly with
/// `docker run` (same path, same arguments).
fn compile_in_image(dir: &Path, src: &str, out: &str) {
    use std::os::unix::fs::MetadataExt;
    let d = dir.display().to_string();
    let m = std::fs::metadata(dir).expect("stat");
    let o = std::process::Command::new("docker")
        .args(["run", "--rm", "--network", "none", "-u"])
        .arg(format!("{}:{}", m.uid(), m.gid()))
        .arg("-v")
        .arg(format!("{d}:{d}"))
        .args([
            "-w",
            &d,
            CROSS_IMAGE,
            CROSS_CC,
            "-O2",
            "-Wall",
            "-c",
            src,
            "-o",
            out,
        ])
        .output()
        .expect("docker run");
    assert!(
        o.status.success(),
        "docker run failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// `hgbuild aarch64-linux-gnu-gcc ARGS` (the launcher form; its options
/// come from the environment), verbose and without local fallback.
fn launcher(dir: &Path, coord: &str, args: &[&str]) -> Output {
    let mut a = vec![CROSS_CC];
    a.extend_from_slice(args);
    run_in(
        dir,
        HGBUILD,
        &a,
        &[
            ("HG_COORDINATOR", coord),
            ("HG_VERBOSE", "1"),
            ("HG_NO_FALLBACK", "1"),
        ],
    )
}

async fn containers(id: &str) -> usize {
    count_containers(None, id)
        .await
        .expect("the Docker daemon answers")
}

/// Waits (bounded) until the worker's container count is `want`.
async fn expect_containers(id: &str, want: usize, when: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut n = containers(id).await;
    while n != want && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        n = containers(id).await;
    }
    assert_eq!(n, want, "containers of {id} {when}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn arm64_compiles_through_a_docker_worker() {
    if let Some(why) = missing_prerequisite().await {
        return skip_or_fail(&why);
    }
    let coord = start_coordinator(&[]);
    let path = native_only_path();
    let id = format!("hgdock-e2e-{}", std::process::id());
    let (mut worker, _grpc, _http) = start_docker_worker(
        &coord.grpc,
        &id,
        path.path(),
        &[
            ("HG_WORKER__TASK_TIMEOUT", "4s"),
            (
                "HG_WORKER__DOCKER__IMAGES__ARMV7",
                "hybridgrid-test/no-such-image:0",
            ),
        ],
    );
    // The armv7 image is not present: said in the log, not advertised, the
    // worker runs anyway.
    assert!(
        worker
            .log_text()
            .contains("hybridgrid-test/no-such-image:0 is not present"),
        "missing image not reported:\n{}",
        worker.log_text()
    );
    // One long-lived container: the arm64 image's.
    expect_containers(&id, 1, "after start").await;

    // Advertised: /api/v1/workers and hgbuild status.
    let (code, body) = http_get(&coord.http, "/api/v1/workers");
    assert_eq!(code, 200);
    let v: serde_json::Value = serde_json::from_str(&body).expect("json");
    let w = v["workers"]
        .as_array()
        .and_then(|ws| ws.iter().find(|w| w["id"] == id.as_str()))
        .unwrap_or_else(|| panic!("worker {id} not listed: {body}"));
    assert_eq!(
        w["docker_images"],
        serde_json::json!([{ "arch": "arm64", "image": CROSS_IMAGE }]),
        "{body}"
    );
    let compilers = w["compilers"].as_array().expect("compilers");
    assert!(
        compilers
            .iter()
            .any(|c| c["name"] == CROSS_CC && c["target"] == "aarch64-linux-gnu"),
        "{body}"
    );
    let dir = tempdir();
    let status = hgbuild(dir.path(), &coord.grpc, &["status"]);
    assert_eq!(status.code, 0, "{}", status.stderr);
    assert!(
        status
            .stdout
            .contains(&format!("docker arm64={CROSS_IMAGE}")),
        "{}",
        status.stdout
    );

    // `hgbuild cc` with the cross compiler as HG_CC: compiled in the image.
    write(dir.path(), "mix.c", SRC);
    write(dir.path(), "scale.h", HDR);
    let out = run_in(
        dir.path(),
        HGBUILD,
        &[
            "--coordinator",
            &coord.grpc,
            "--no-fallback",
            "-v",
            "cc",
            "-O2",
            "-Wall",
            "-c",
            "mix.c",
            "-o",
            "mix.o",
        ],
        &[("HG_CC", CROSS_CC)],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stderr.contains(&format!("[remote {id}]")),
        "not compiled by the Docker worker: {}",
        out.stderr
    );
    let kind = file_type(&dir.path().join("mix.o"));
    assert!(
        kind.starts_with("ELF 64-bit LSB relocatable, ARM aarch64"),
        "{kind}"
    );
    // Identical to the same cross compiler run here and run in the image.
    let local = run_in(
        dir.path(),
        CROSS_CC,
        &["-O2", "-Wall", "-c", "mix.c", "-o", "local.o"],
        &[],
    );
    assert_eq!(local.code, 0, "{}", local.stderr);
    compile_in_image(dir.path(), "mix.c", "image.o");
    let remote = read(dir.path(), "mix.o");
    assert!(
        remote == read(dir.path(), "local.o"),
        "differs from a local cross compile"
    );
    assert!(
        remote == read(dir.path(), "image.o"),
        "differs from a compile in the image"
    );

    // The compiler named directly (`hgbuild aarch64-linux-gnu-gcc ...`),
    // a compile error (replayed, exit code kept), several in a row: still
    // the one container.
    for i in 0..3 {
        write(
            dir.path(),
            &format!("f{i}.c"),
            &format!("long f{i}(long x) {{ return x * {i} + 1; }}\n"),
        );
        let out = launcher(dir.path(), &coord.grpc, &["-O2", "-c", &format!("f{i}.c")]);
        assert_eq!(out.code, 0, "{}", out.stderr);
        assert!(
            out.stderr.contains(&format!("[remote {id}]")),
            "{}",
            out.stderr
        );
        let kind = file_type(&dir.path().join(format!("f{i}.o")));
        assert!(kind.contains("ARM aarch64"), "{kind}");
    }
    write(
        dir.path(),
        "bad.c",
        "int g(void) { return undeclared_name; }\n",
    );
    let bad = launcher(dir.path(), &coord.grpc, &["-c", "bad.c"]);
    assert_ne!(bad.code, 0);
    assert!(bad.stderr.contains("undeclared_name"), "{}", bad.stderr);
    assert!(
        bad.stderr.contains(&format!("[remote {id}]")),
        "{}",
        bad.stderr
    );
    expect_containers(&id, 1, "after compiles").await;

    // A compile longer than task_timeout (4s): deadline exceeded, the
    // compiler is killed, the container stays the only one and still works.
    write(dir.path(), "slow.c", SLOW_SRC);
    let t0 = Instant::now();
    let slow = launcher(dir.path(), &coord.grpc, &["-O2", "-c", "slow.c"]);
    assert_ne!(slow.code, 0, "the slow compile must not succeed");
    assert!(slow.stderr.contains("deadline exceeded"), "{}", slow.stderr);
    assert!(
        t0.elapsed() < Duration::from_secs(120),
        "timeout not enforced"
    );
    expect_containers(&id, 1, "after a timeout").await;
    write(
        dir.path(),
        "after.c",
        "int after(int x) { return x - 1; }\n",
    );
    let after = launcher(dir.path(), &coord.grpc, &["-c", "after.c"]);
    assert_eq!(after.code, 0, "{}", after.stderr);
    assert!(
        after.stderr.contains(&format!("[remote {id}]")),
        "{}",
        after.stderr
    );

    // SIGTERM: the worker stops and removes its container.
    let status = worker.terminate(Duration::from_secs(60));
    assert!(
        status.is_some_and(|s| s.success()),
        "worker did not stop cleanly: {status:?}\n{}",
        worker.log_text()
    );
    expect_containers(&id, 0, "after the worker stopped").await;

    // SIGKILL leaves the container behind; the next start with the same id
    // removes it, and SIGINT cleans up too.
    let (mut again, _, _) = start_docker_worker(&coord.grpc, &id, path.path(), &[]);
    expect_containers(&id, 1, "after a restart").await;
    again.kill();
    assert_eq!(containers(&id).await, 1, "SIGKILL cannot clean up");
    let (mut third, _, _) = start_docker_worker(&coord.grpc, &id, path.path(), &[]);
    expect_containers(&id, 1, "after a start over leftovers").await;
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(third.pid()),
        nix::sys::signal::Signal::SIGINT,
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    while third.child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    expect_containers(&id, 0, "after SIGINT").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn arm64_tasks_go_to_the_worker_with_the_image() {
    if let Some(why) = missing_prerequisite().await {
        return skip_or_fail(&why);
    }
    let coord = start_coordinator(&[]);
    let path = native_only_path();
    let pid = std::process::id();
    let with = format!("hgdock-with-{pid}");
    let without = format!("hgdock-without-{pid}");
    // A worker whose daemon is unreachable: it starts, says why in one log
    // line, advertises no Docker capability.
    let (nodocker, nogrpc, _) = start_docker_worker(
        &coord.grpc,
        &without,
        path.path(),
        &[("DOCKER_HOST", "unix:///nonexistent/hg-docker.sock")],
    );
    let log = nodocker.log_text();
    assert_eq!(
        log.lines()
            .filter(|l| l.contains("Docker not available:"))
            .count(),
        1,
        "{log}"
    );
    let (_docker, _, _) = start_docker_worker(&coord.grpc, &with, path.path(), &[]);
    let (_, body) = http_get(&coord.http, "/api/v1/workers");
    let v: serde_json::Value = serde_json::from_str(&body).expect("json");
    let ws = v["workers"].as_array().expect("workers");
    let find = |id: &str| {
        ws.iter()
            .find(|w| w["id"] == id)
            .unwrap_or_else(|| panic!("{id} not listed: {body}"))
            .clone()
    };
    assert_eq!(find(&without)["docker_images"], serde_json::json!([]));
    assert!(
        !find(&without)["compilers"]
            .as_array()
            .expect("compilers")
            .iter()
            .any(|c| c["target"] == "aarch64-linux-gnu"),
        "{body}"
    );
    assert_eq!(
        find(&with)["docker_images"].as_array().map(Vec::len),
        Some(1)
    );

    // Every arm64 compile lands on the worker with the image.
    let dir = tempdir();
    for i in 0..4 {
        write(
            dir.path(),
            &format!("p{i}.c"),
            &format!("int p{i}(int x) {{ return x << {i}; }}\n"),
        );
        let out = launcher(dir.path(), &coord.grpc, &["-c", &format!("p{i}.c")]);
        assert_eq!(out.code, 0, "{}", out.stderr);
        assert!(
            out.stderr.contains(&format!("[remote {with}]")),
            "{}",
            out.stderr
        );
    }
    // Native compiles may go to either; both can do them.
    write(dir.path(), "n.c", "int n(int x) { return x; }\n");
    let out = hgbuild(
        dir.path(),
        &coord.grpc,
        &["--no-fallback", "-v", "cc", "-c", "n.c"],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stderr.contains("[remote hgdock-"), "{}", out.stderr);

    // An arm64 task sent to the worker without a daemon anyway (as an
    // outdated coordinator might): `Docker not available: <reason>`.
    let cross = hybridgrid_exec::detect::find_and_identify(
        CROSS_CC,
        &hybridgrid_exec::detect::DetectOptions::default().path_dirs,
    )
    .await
    .expect("host cross compiler");
    let task = CompileTask::new(
        cross.identity.clone(),
        Language::C,
        vec!["-O2".into()],
        "p.c",
        Payload::compress(b"int p(int x) { return x; }\n".to_vec()),
    );
    let mut client = WorkerClient::new(
        WorkerId(without.clone()),
        &nogrpc,
        &ChannelOptions::new(Duration::from_secs(5), Duration::from_secs(30)),
    )
    .expect("client");
    let e = client
        .compile(&task)
        .await
        .expect_err("no Docker on that worker");
    assert!(e.to_string().contains("Docker not available: "), "{e}");
    // The worker with no daemon made no container.
    assert_eq!(containers(&without).await, 0);
}
