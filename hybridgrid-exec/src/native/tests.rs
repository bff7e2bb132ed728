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

/// A source named like an output used to keep its name, so that gcc
/// was run as `-c output.o -o output.o` (found writing the property of
/// the `compile_request` fuzz target, fuzz/FINDINGS.md).
#[test]
fn input_names_are_never_an_output() {
    for name in ["output.o", "output.dwo", "./output.o", "/tmp/output.dwo"] {
        assert_eq!(input_file_name(name, "i"), "input.i", "{name}");
    }
    assert_eq!(input_file_name(".hg-input.i", "i"), "input.i");
    assert_eq!(input_file_name("obj/output.o", "c"), "obj/output.o");
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
async fn admission_asks_for_a_detected_compiler() {
    use hybridgrid_core::can_run::CanRun;
    let c = gcc().await;
    let t = task(&c, "int f(void){return 1;}", &[]);
    assert!(
        NativeExecutor::new(vec![c], NativeOptions::default())
            .can_run(&t)
            .is_ok()
    );
    let e = NativeExecutor::new(vec![], NativeOptions::default())
        .can_run(&t)
        .expect_err("no compilers");
    assert!(
        e.to_string().contains("not one this worker detected"),
        "{e}"
    );
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
async fn refused_args_name_the_argument() {
    let c = gcc().await;
    let ex = NativeExecutor::new(vec![c.clone()], NativeOptions::default());
    let e = ex
        .run(task(&c, "int x;\n", &["-O2", "-fplugin=/tmp/evil.so"]))
        .await
        .unwrap_err();
    assert!(matches!(e, GridError::InvalidTask(_)), "{e}");
    assert!(e.to_string().contains("-fplugin=/tmp/evil.so"), "{e}");
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
        NativeOptions::default()
            .with_timeout(Duration::from_millis(500))
            .with_isolation(IsolationMode::Off),
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

#[test]
fn storage_faults_in_diagnostics_are_the_workers() {
    let full = b"cc1: fatal error: cannot write output.o: No space left on device\n";
    assert_eq!(worker_storage_fault(full), Some("No space left on device"));
    assert_eq!(
        worker_storage_fault(b"x.c:1:1: error: expected ';' before '}' token\n"),
        None
    );
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
