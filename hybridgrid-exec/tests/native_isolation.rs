//! The native executor's hardening, through its public API: refused
//! arguments, no network, no writes outside the task directory, timeouts
//! that kill the whole tree, parallel calls and task-directory cleanup.
//!
//! Tests that need an isolation this machine lacks print why and pass,
//! unless `HG_TEST_REQUIRE_ALL=1` (then they fail).
#![allow(clippy::unwrap_used)] // test helpers

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use hybridgrid_core::GridError;
use hybridgrid_core::config::IsolationMode;
use hybridgrid_core::payload::Payload;
use hybridgrid_core::task::{
    CompileTask, CompilerFamily, CompilerIdentity, DriverKind, Language, OutputKind,
};
use hybridgrid_core::worker::CompilerInfo;
use hybridgrid_exec::native::{Isolation, NativeExecutor, NativeOptions};
use tower::ServiceExt;

fn skip_or_fail(reason: &str) {
    if std::env::var("HG_TEST_REQUIRE_ALL").as_deref() == Ok("1") {
        panic!("required test cannot run: {reason}");
    }
    eprintln!("skipping: {reason}");
}

fn fake_identity() -> CompilerIdentity {
    CompilerIdentity {
        family: CompilerFamily::Gcc,
        driver: DriverKind::C,
        version: "0.0-fake".into(),
        target: "x86_64-linux-gnu".into(),
    }
}

/// A "compiler" that is this shell script, kept outside any work root.
fn fake_compiler(dir: &Path, script: &str) -> CompilerInfo {
    let path = dir.join("fakecc");
    std::fs::write(&path, format!("#!/bin/bash\n{script}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    CompilerInfo {
        name: "gcc".into(),
        path: path.display().to_string(),
        identity: fake_identity(),
    }
}

fn fake_task(args: &[&str]) -> CompileTask {
    CompileTask::new(
        fake_identity(),
        Language::PreprocessedC,
        args.iter().map(|s| s.to_string()).collect(),
        "t.c",
        Payload::compress(b"int x;\n".to_vec()),
    )
}

fn executor(c: &CompilerInfo, root: &Path, mode: IsolationMode) -> NativeExecutor {
    NativeExecutor::new(
        vec![c.clone()],
        NativeOptions::default()
            .with_work_root(root)
            .with_isolation(mode)
            .with_timeout(Duration::from_secs(20)),
    )
}

fn entries(p: &Path) -> usize {
    std::fs::read_dir(p).unwrap().count()
}

/// The isolations that work here, besides `off`.
fn isolations() -> Vec<IsolationMode> {
    let mut v = Vec::new();
    for m in [IsolationMode::Bubblewrap, IsolationMode::Unshare] {
        match Isolation::resolve(m) {
            Ok(_) => v.push(m),
            Err(e) => skip_or_fail(&format!("isolation {}: {e}", m.as_str())),
        }
    }
    v
}

#[tokio::test]
async fn every_refusal_is_an_invalid_task_naming_the_argument() {
    let tools = tempfile::tempdir().unwrap();
    let root = tempfile::tempdir().unwrap();
    let marker = tools.path().join("ran");
    let c = fake_compiler(
        tools.path(),
        &format!("touch {} output.o", marker.display()),
    );
    let ex = executor(&c, root.path(), IsolationMode::Off);
    let refused: &[&[&str]] = &[
        &["-fplugin=/tmp/evil.so"],
        &["-I/etc"],
        &["-include", "/etc/passwd"],
        &["@/etc/args.rsp"],
        &["-o", "/tmp/out.o"],
        &["-fdump-tree-all"],
        &["-save-temps"],
        &["-specs=/tmp/x.specs"],
        &["-B/tmp/bin"],
        &["-wrapper", "/bin/sh"],
        &["-Wl,-rpath,/x"],
        &["--version"],
        &["/etc/passwd"],
        &["-fprofile-use=/tmp/p"],
        &["--no-such-option"],
    ];
    for args in refused {
        let e = ex.run(fake_task(args)).await.unwrap_err();
        assert!(matches!(e, GridError::InvalidTask(_)), "{args:?}: {e}");
        assert!(e.to_string().contains(args[0]), "{args:?}: {e}");
    }
    assert!(!marker.exists(), "the compiler ran for a refused task");
    assert_eq!(entries(root.path()), 0);
    // Allowed arguments do run.
    let out = ex.run(fake_task(&["-O2", "-g", "-Wall"])).await.unwrap();
    assert_eq!(out.exit_code, 0);
    assert!(marker.exists());
}

#[tokio::test]
async fn source_name_is_only_a_label() {
    let tools = tempfile::tempdir().unwrap();
    let root = tempfile::tempdir().unwrap();
    let c = fake_compiler(tools.path(), "files=$(ls); echo \"$files\" > output.o");
    let ex = executor(&c, root.path(), IsolationMode::Off);
    let mut t = fake_task(&[]);
    t.source_name = "../../../../etc/evil.c".into();
    let out = ex.run(t).await.unwrap();
    assert_eq!(out.exit_code, 0);
    let listing = out
        .output(OutputKind::Object)
        .unwrap()
        .data
        .decode()
        .unwrap();
    // The compiler only ever sees the input's base name in its own directory.
    assert_eq!(String::from_utf8_lossy(&listing).trim(), "evil.c");
    assert_eq!(entries(root.path()), 0);
}

#[tokio::test]
async fn the_compiler_has_no_network() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let tools = tempfile::tempdir().unwrap();
    let root = tempfile::tempdir().unwrap();
    let c = fake_compiler(
        tools.path(),
        &format!("if echo hello > /dev/tcp/127.0.0.1/{port}; then touch output.o; else exit 7; fi"),
    );
    // Control: without isolation the connection is made, so the test can see it.
    let out = executor(&c, root.path(), IsolationMode::Off)
        .run(fake_task(&[]))
        .await
        .unwrap();
    assert_eq!(out.exit_code, 0, "{}", String::from_utf8_lossy(&out.stderr));
    assert!(listener.accept().is_ok(), "control connection not seen");
    for mode in isolations() {
        let out = executor(&c, root.path(), mode)
            .run(fake_task(&[]))
            .await
            .unwrap();
        assert_eq!(out.exit_code, 7, "{}: connected", mode.as_str());
        assert!(
            listener.accept().is_err(),
            "{}: a connection reached the listener",
            mode.as_str()
        );
        assert_eq!(entries(root.path()), 0);
    }
}

#[tokio::test]
async fn the_compiler_cannot_write_outside_its_task_dir() {
    if let Err(e) = Isolation::resolve(IsolationMode::Bubblewrap) {
        return skip_or_fail(&format!("bubblewrap: {e}"));
    }
    let tools = tempfile::tempdir().unwrap();
    let root = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    let victim = outside.path().join("pwned");
    let sibling = root.path().join("other-task");
    std::fs::create_dir(&sibling).unwrap();
    let c = fake_compiler(
        tools.path(),
        &format!(
            "echo x > {v} 2>/dev/null && exit 9\n\
             echo x > {s}/x 2>/dev/null && exit 10\n\
             ls {s} 2>/dev/null && exit 11\n\
             echo x > $HOME/.hg-pwned 2>/dev/null && exit 12\n\
             echo obj > output.o",
            v = victim.display(),
            s = sibling.display()
        ),
    );
    let ex = executor(&c, root.path(), IsolationMode::Bubblewrap);
    let out = ex.run(fake_task(&[])).await.unwrap();
    assert_eq!(out.exit_code, 0, "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(
        out.output(OutputKind::Object)
            .unwrap()
            .data
            .decode()
            .unwrap(),
        &b"obj\n"[..]
    );
    assert!(!victim.exists());
    assert_eq!(entries(&sibling), 0);
    std::fs::remove_dir(&sibling).unwrap();
    assert_eq!(entries(root.path()), 0);
}

fn alive_with_marker(marker: &str) -> Vec<i32> {
    let mut v = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        if String::from_utf8_lossy(&cmd).contains(marker) && !stat.contains(") Z ") {
            v.push(pid);
        }
    }
    v
}

#[tokio::test]
async fn timeout_kills_the_whole_tree_under_every_isolation() {
    let mut modes = vec![IsolationMode::Off];
    modes.extend(isolations());
    for mode in modes {
        let tools = tempfile::tempdir().unwrap();
        let root = tempfile::tempdir().unwrap();
        // A unique sleep length marks the grandchild in /proc.
        let marker = format!("{}.{}", 30 + rand_digit(), std::process::id());
        let c = fake_compiler(tools.path(), &format!("sleep {marker} &\nsleep {marker}\n"));
        let ex = NativeExecutor::new(
            vec![c.clone()],
            NativeOptions::default()
                .with_work_root(root.path())
                .with_isolation(mode)
                .with_timeout(Duration::from_millis(700)),
        );
        let t0 = Instant::now();
        let e = ex.run(fake_task(&[])).await.unwrap_err();
        assert!(e.to_string().contains("deadline exceeded"), "{e}");
        assert!(t0.elapsed() < Duration::from_secs(10));
        let mut left = alive_with_marker(&marker);
        for _ in 0..50 {
            if left.is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            left = alive_with_marker(&marker);
        }
        assert!(left.is_empty(), "{}: survivors {left:?}", mode.as_str());
        assert_eq!(entries(root.path()), 0, "{}", mode.as_str());
    }
}

fn rand_digit() -> u32 {
    (std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0)
        % 9)
        + 1
}

async fn real_gcc() -> Option<CompilerInfo> {
    let dirs = hybridgrid_exec::detect::DetectOptions::default().path_dirs;
    hybridgrid_exec::detect::find_and_identify("gcc", &dirs)
        .await
        .ok()
}

#[tokio::test]
async fn parallel_real_compiles_under_the_default_isolation() {
    let Some(gcc) = real_gcc().await else {
        return skip_or_fail("gcc not installed");
    };
    let root = tempfile::tempdir().unwrap();
    let ex = NativeExecutor::new(
        vec![gcc.clone()],
        NativeOptions::default().with_work_root(root.path()),
    );
    eprintln!("isolation: {:?}", ex.isolation());
    let calls = (0..8).map(|i| {
        let t = CompileTask::new(
            gcc.identity.clone(),
            Language::C,
            vec!["-O2".into()],
            format!("f{i}.c"),
            Payload::compress(format!("int f{i}(int x) {{ return x * {i}; }}\n").into_bytes()),
        );
        ex.clone().oneshot(t)
    });
    let outs = futures::future::join_all(calls).await;
    let mut objects: Vec<Vec<u8>> = Vec::new();
    for (i, out) in outs.into_iter().enumerate() {
        let out = out.unwrap();
        assert_eq!(out.exit_code, 0, "{}", String::from_utf8_lossy(&out.stderr));
        let obj = out
            .output(OutputKind::Object)
            .unwrap()
            .data
            .decode()
            .unwrap();
        assert_eq!(&obj[..4], b"\x7fELF");
        let name = format!("f{i}");
        assert!(obj.windows(name.len()).any(|w| w == name.as_bytes()));
        objects.push(obj.to_vec());
    }
    objects.dedup();
    assert_eq!(objects.len(), 8);
    assert_eq!(entries(root.path()), 0);
}
