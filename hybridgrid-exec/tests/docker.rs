//! The Docker executor end to end: a real arm64 cross-compile checked
//! against the same compiler run directly in the image, parallel calls,
//! routing, errors and container cleanup; and the answer without a daemon.
//!
//! Needs `scripts/start-dockerd.sh` and `scripts/build-test-images.sh`;
//! without them the tests print why and pass, unless
//! `HG_TEST_REQUIRE_ALL=1` (then they fail).

use std::collections::BTreeMap;
use std::path::Path;

use hybridgrid_core::GridError;
use hybridgrid_core::payload::Payload;
use hybridgrid_core::task::{
    CompileTask, CompilerFamily, CompilerIdentity, DriverKind, Language, OutputKind,
};
use hybridgrid_core::worker::Arch;
use hybridgrid_exec::docker::{Dispatch, DockerExecutor, DockerOptions, count_containers};
use hybridgrid_exec::native::{NativeExecutor, NativeOptions};
use hybridgrid_exec::routing::RoutingExecutor;
use tower::ServiceExt;

const CROSS: &str = "hybridgrid-test/cross-arm64:1";

fn skip_or_fail(reason: &str) {
    if std::env::var("HG_TEST_REQUIRE_ALL").as_deref() == Ok("1") {
        panic!("required test cannot run: {reason}");
    }
    eprintln!("skipping: {reason}");
}

async fn docker_ready(image: &str) -> Result<(), String> {
    count_containers(None, "probe")
        .await
        .ok_or("no Docker daemon (run scripts/start-dockerd.sh)")?;
    let ok = std::process::Command::new("docker")
        .args(["image", "inspect", image])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if ok {
        Ok(())
    } else {
        Err(format!(
            "image {image} missing (run scripts/build-test-images.sh)"
        ))
    }
}

fn worker_id(test: &str) -> String {
    format!("hgtest-{test}-{}", std::process::id())
}

fn images(arch: &str, image: &str) -> BTreeMap<String, String> {
    BTreeMap::from([(arch.to_owned(), image.to_owned())])
}

const SRC: &str = "int scale(int x) { return x * 7 + 3; }\nint table[4] = {1, 2, 3, 4};\n";

fn c_task(identity: &CompilerIdentity, src: &str) -> CompileTask {
    CompileTask::new(
        identity.clone(),
        Language::C,
        vec!["-O2".into()],
        "scale.c",
        Payload::compress(src.as_bytes().to_vec()),
    )
}

/// `e_machine` of a 64-bit little-endian relocatable ELF object.
fn elf_rel_machine(obj: &[u8]) -> u16 {
    assert!(obj.len() > 20 && &obj[..4] == b"\x7fELF", "not ELF");
    assert_eq!(obj[4], 2, "not 64-bit");
    assert_eq!(obj[5], 1, "not little-endian");
    assert_eq!(u16::from_le_bytes([obj[16], obj[17]]), 1, "not relocatable");
    u16::from_le_bytes([obj[18], obj[19]])
}

/// What the image's compiler writes when run directly (`docker run`).
fn direct_compile(image: &str, compiler: &str, src: &str) -> Vec<u8> {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("input.c"), src).expect("write input");
    let d = dir.path().display().to_string();
    let uid = {
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::metadata(dir.path()).expect("stat");
        format!("{}:{}", m.uid(), m.gid())
    };
    let out = std::process::Command::new("docker")
        .args(["run", "--rm", "--network", "none", "-u", &uid, "-v"])
        .arg(format!("{d}:{d}"))
        .args(["-w", &d, image, compiler])
        .args(["-x", "c", "-O2", "-c", "input.c", "-o", "output.o"])
        .output()
        .expect("docker run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::read(dir.path().join("output.o")).expect("output.o")
}

/// Task directories left in a work root.
fn entries(p: &Path) -> usize {
    std::fs::read_dir(p)
        .map(|d| {
            d.flatten()
                .filter(|e| e.file_name().to_string_lossy().starts_with("hg-task-"))
                .count()
        })
        .unwrap_or(0)
}

#[tokio::test]
async fn without_a_daemon_tasks_get_docker_not_available() {
    let ex = DockerExecutor::start(
        DockerOptions::new(worker_id("nodaemon"), images("arm64", CROSS))
            .with_docker_host("unix:///nonexistent/hg-docker.sock"),
    )
    .await;
    let reason = ex.unavailable_reason().expect("must be unavailable");
    assert!(!reason.is_empty());
    assert!(ex.images().is_empty() && ex.compilers().is_empty());
    let identity = CompilerIdentity {
        family: CompilerFamily::Gcc,
        driver: DriverKind::C,
        version: "12".into(),
        target: "aarch64-linux-gnu".into(),
    };
    let e = ex.run(c_task(&identity, SRC)).await.unwrap_err();
    assert!(matches!(e, GridError::DockerUnavailable(_)), "{e}");
    assert!(e.to_string().starts_with("Docker not available: "), "{e}");
    // Routed from a worker without a native arm64 compiler, the same answer.
    let native = NativeExecutor::new(vec![], NativeOptions::default());
    let r = RoutingExecutor::docker_or_native(native, ex.clone());
    let e = r.oneshot(c_task(&identity, SRC)).await.unwrap_err();
    assert!(e.to_string().starts_with("Docker not available: "), "{e}");
    ex.shutdown().await;
}

#[tokio::test]
async fn arm64_cross_compile_is_identical_to_a_direct_run() {
    if let Err(why) = docker_ready(CROSS).await {
        return skip_or_fail(&why);
    }
    let id = worker_id("cross");
    let root = tempfile::tempdir().unwrap();
    let ex = DockerExecutor::start(
        DockerOptions::new(&id, images("arm64", CROSS)).with_work_root(root.path()),
    )
    .await;
    assert_eq!(ex.unavailable_reason(), None);
    assert_eq!(count_containers(None, &id).await, Some(1));
    assert_eq!(ex.images().len(), 1);
    assert_eq!(ex.images()[0].arch, Arch::Arm64);
    let cc = ex
        .compilers()
        .into_iter()
        .find(|c| c.name == "aarch64-linux-gnu-gcc")
        .expect("aarch64-linux-gnu-gcc detected in the image");
    assert_eq!(cc.identity.target, "aarch64-linux-gnu");
    assert_eq!(cc.identity.family, CompilerFamily::Gcc);

    let out = ex.run(c_task(&cc.identity, SRC)).await.unwrap();
    assert_eq!(out.exit_code, 0, "{}", String::from_utf8_lossy(&out.stderr));
    let obj = out
        .output(OutputKind::Object)
        .unwrap()
        .data
        .decode()
        .unwrap();
    assert_eq!(elf_rel_machine(&obj), 183, "not ARM aarch64");
    let direct = direct_compile(CROSS, &cc.path, SRC);
    assert!(
        obj[..] == direct[..],
        "object differs from a direct run in the image"
    );

    // A compile error is an output, not an error.
    let bad = ex
        .run(c_task(&cc.identity, "int f(void) { return nope; }\n"))
        .await
        .unwrap();
    assert_ne!(bad.exit_code, 0);
    assert!(String::from_utf8_lossy(&bad.stderr).contains("nope"));
    // Refused arguments never reach the container.
    let mut t = c_task(&cc.identity, SRC);
    t.args.push("-fplugin=/x.so".into());
    let e = ex.run(t).await.unwrap_err();
    assert!(e.to_string().contains("-fplugin=/x.so"), "{e}");

    // Parallel calls share the one container.
    let calls = (0..6).map(|i| {
        ex.clone().oneshot(c_task(
            &cc.identity,
            &format!("int f{i}(int x) {{ return x + {i}; }}\n"),
        ))
    });
    for out in futures::future::join_all(calls).await {
        let out = out.unwrap();
        assert_eq!(out.exit_code, 0);
        let obj = out
            .output(OutputKind::Object)
            .unwrap()
            .data
            .decode()
            .unwrap();
        assert_eq!(elf_rel_machine(&obj), 183);
    }
    assert_eq!(count_containers(None, &id).await, Some(1));
    assert_eq!(entries(root.path()), 0, "task directories left behind");

    // Routing: the image's compiler goes to Docker, the native one stays here.
    let dirs = hybridgrid_exec::detect::DetectOptions::default().path_dirs;
    if let Ok(gcc) = hybridgrid_exec::detect::find_and_identify("gcc", &dirs).await {
        let native = NativeExecutor::new(vec![gcc.clone()], NativeOptions::default());
        let r = RoutingExecutor::docker_or_native(native, ex.clone());
        let a = r.clone().oneshot(c_task(&cc.identity, SRC)).await.unwrap();
        let n = r.oneshot(c_task(&gcc.identity, SRC)).await.unwrap();
        let a = a.output(OutputKind::Object).unwrap().data.decode().unwrap();
        let n = n.output(OutputKind::Object).unwrap().data.decode().unwrap();
        assert_eq!(elf_rel_machine(&a), 183);
        assert_eq!(elf_rel_machine(&n), 62, "native x86-64 expected");
    }

    ex.shutdown().await;
    assert_eq!(count_containers(None, &id).await, Some(0));
    let e = ex.run(c_task(&cc.identity, SRC)).await.unwrap_err();
    assert!(matches!(e, GridError::DockerUnavailable(_)), "{e}");
}

#[tokio::test]
async fn leftovers_are_removed_at_start_and_drop_cleans_up() {
    if let Err(why) = docker_ready("hybridgrid-test/gcc:1").await {
        return skip_or_fail(&why);
    }
    let id = worker_id("leftover");
    let opts = DockerOptions::new(&id, images("amd64", "hybridgrid-test/gcc:1"));
    let first = DockerExecutor::start(opts.clone()).await;
    assert_eq!(first.unavailable_reason(), None);
    assert_eq!(count_containers(None, &id).await, Some(1));
    // A second start with the same id (a restarted worker) removes the first's.
    std::mem::forget(first);
    let second = DockerExecutor::start(opts.clone()).await;
    assert_eq!(count_containers(None, &id).await, Some(1));
    assert!(!second.compilers().is_empty());
    // Dropped without shutdown: removed as a best effort.
    drop(second);
    assert_eq!(count_containers(None, &id).await, Some(0));
    // A missing image: started, but that architecture is unusable.
    let ex = DockerExecutor::start(DockerOptions::new(
        &id,
        images("arm64", "hybridgrid-test/no-such-image:0"),
    ))
    .await;
    assert!(ex.images().is_empty());
    let identity = CompilerIdentity {
        family: CompilerFamily::Gcc,
        driver: DriverKind::C,
        version: "12".into(),
        target: "aarch64-linux-gnu".into(),
    };
    let e = ex.run(c_task(&identity, SRC)).await.unwrap_err();
    assert!(e.to_string().contains("no-such-image"), "{e}");
    ex.shutdown().await;
    assert_eq!(count_containers(None, &id).await, Some(0));
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Per-compile overhead of the Docker executor against native compiles of
/// the same file (`scripts/bench-docker-overhead.sh`). The executors take
/// turns, one compile each per round, so a change in the machine's load
/// hits them alike; medians of `HG_BENCH_N` rounds (default 50).
#[tokio::test]
#[ignore = "benchmark; run with scripts/bench-docker-overhead.sh"]
async fn bench_docker_exec_overhead() {
    use hybridgrid_core::config::IsolationMode;
    use hybridgrid_exec::Executor;
    let image = "hybridgrid-test/gcc:1";
    if let Err(why) = docker_ready(image).await {
        return skip_or_fail(&why);
    }
    let n: usize = std::env::var("HG_BENCH_N")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(50);
    let dirs = hybridgrid_exec::detect::DetectOptions::default().path_dirs;
    let gcc = hybridgrid_exec::detect::find_and_identify("gcc", &dirs)
        .await
        .expect("gcc");
    let runner = DockerExecutor::start(DockerOptions::new(
        worker_id("bench"),
        images("amd64", image),
    ))
    .await;
    let exec = DockerExecutor::start(
        DockerOptions::new(worker_id("bench-exec"), images("amd64", image))
            .with_dispatch(Dispatch::Exec),
    )
    .await;
    let dcc = runner
        .compilers()
        .into_iter()
        .find(|c| c.identity.driver == DriverKind::C)
        .expect("gcc in the image");
    let src = "#include <stdio.h>\nint main(void) { printf(\"%d\\n\", 42); return 0; }\n";

    type Run = Box<dyn Fn(CompileTask) -> futures::future::BoxFuture<'static, ()>>;
    fn boxed<E: Executor>(ex: E) -> Run
    where
        E::Future: Send,
    {
        Box::new(move |t| {
            let ex = ex.clone();
            Box::pin(async move {
                let out = ex.oneshot(t).await.expect("compile");
                assert_eq!(out.exit_code, 0, "{}", String::from_utf8_lossy(&out.stderr));
            })
        })
    }
    let mut rows: Vec<(String, CompilerIdentity, Run)> = Vec::new();
    for mode in [IsolationMode::Off, IsolationMode::Auto] {
        let native = NativeExecutor::new(
            vec![gcc.clone()],
            NativeOptions::default().with_isolation(mode),
        );
        let label = format!(
            "native, isolation {}",
            native.isolation().map(|i| i.describe()).unwrap_or("off")
        );
        rows.push((label, gcc.identity.clone(), boxed(native)));
    }
    rows.push((
        "docker, runner in the container (default)".into(),
        dcc.identity.clone(),
        boxed(runner.clone()),
    ));
    rows.push((
        "docker, one `docker exec` per compile".into(),
        dcc.identity.clone(),
        boxed(exec.clone()),
    ));
    let mut times: Vec<Vec<f64>> = vec![Vec::new(); rows.len()];
    for round in 0..n + 3 {
        for (k, (_, identity, run)) in rows.iter().enumerate() {
            let t0 = std::time::Instant::now();
            run(c_task(identity, src)).await;
            if round >= 3 {
                times[k].push(t0.elapsed().as_secs_f64() * 1000.0);
            }
        }
    }
    runner.shutdown().await;
    exec.shutdown().await;
    let med: Vec<f64> = times.into_iter().map(median).collect();
    println!(
        "median of {n} rounds, one compile of a 3-line C file each (gcc {}, -O2 -c, image {image}):",
        gcc.identity.version
    );
    for ((label, _, _), ms) in rows.iter().zip(&med) {
        println!("  {ms:7.1} ms  {label}");
    }
    for (i, what) in [(2, "runner"), (3, "docker exec")] {
        println!(
            "  overhead of the {what}: {:+.1} ms vs native (isolation off), {:+.1} ms vs native (default isolation)",
            med[i] - med[0],
            med[i] - med[1]
        );
    }
}
