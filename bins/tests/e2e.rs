//! Black-box tests: the real hg-coord, hg-worker and hgbuild binaries on
//! ephemeral loopback ports, compiling real C and C++ files with the real
//! compilers.

mod support;

use std::time::Duration;

use support::*;

const C_SRC: &str = r#"#include <stdio.h>
#include "util.h"
#define SQUARE(x) ((x) * (x))
int main(void) {
    int v = SQUARE(add(2, 5));
    printf("%d %s\n", v, GREETING);
    return 0;
}
"#;
const UTIL_H: &str =
    "#define GREETING \"hello\"\nstatic inline int add(int a, int b) { return a + b; }\n";

const CXX_SRC: &str = r#"#include <vector>
#include <string>
#include <numeric>
template <typename T> T total(const std::vector<T>& v) { return std::accumulate(v.begin(), v.end(), T{}); }
std::string name() { return std::string("grid") + std::to_string(total(std::vector<int>{1, 2, 3})); }
"#;

fn gcc(dir: &std::path::Path, prog: &str, args: &[&str]) -> Output {
    run_in(dir, prog, args, &[])
}

#[test]
fn c_file_compiles_remotely_byte_identical() {
    let (coord, _workers) = grid(2);
    let dir = tempdir();
    write(dir.path(), "main.c", C_SRC);
    write(dir.path(), "util.h", UTIL_H);
    let out = hgbuild(
        dir.path(),
        &coord.grpc,
        &[
            "-v", "cc", "-c", "main.c", "-o", "main.o", "-O2", "-Wall", "-MD",
        ],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stderr.contains("[remote w"),
        "not compiled remotely: {}",
        out.stderr
    );
    let plain = gcc(
        dir.path(),
        "cc",
        &[
            "-c", "main.c", "-o", "ref.o", "-O2", "-Wall", "-MD", "-MF", "ref.d", "-MQ", "main.o",
        ],
    );
    assert_eq!(plain.code, 0, "{}", plain.stderr);
    assert_eq!(
        read(dir.path(), "main.o"),
        read(dir.path(), "ref.o"),
        "objects differ"
    );
    assert_eq!(
        read(dir.path(), "main.d"),
        read(dir.path(), "ref.d"),
        "dependency files differ"
    );
    // The coordinator logged the task with the contract's messages.
    assert!(
        coord
            .proc
            .wait_log("msg=\"task started\"", Duration::from_secs(5))
    );
    assert!(
        coord
            .proc
            .wait_log("msg=\"task completed\"", Duration::from_secs(5))
    );
    let log = coord.proc.log_text();
    assert!(
        log.contains("msg=\"worker registered\" worker_id=w1 arch="),
        "{log}"
    );
    assert!(log.contains("source=handshake"), "{log}");
}

#[test]
fn cxx_file_compiles_remotely_byte_identical() {
    let (coord, _workers) = grid(1);
    let dir = tempdir();
    write(dir.path(), "name.cpp", CXX_SRC);
    let out = hgbuild(
        dir.path(),
        &coord.grpc,
        &[
            "-v",
            "c++",
            "-c",
            "name.cpp",
            "-o",
            "name.o",
            "-O1",
            "-std=c++17",
        ],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stderr.contains("[remote w1]"), "{}", out.stderr);
    let plain = gcc(
        dir.path(),
        "c++",
        &["-c", "name.cpp", "-o", "ref.o", "-O1", "-std=c++17"],
    );
    assert_eq!(plain.code, 0);
    assert_eq!(read(dir.path(), "name.o"), read(dir.path(), "ref.o"));
}

#[test]
fn clang_compiles_remotely_when_present() {
    if support_missing("clang") {
        return;
    }
    let (coord, _workers) = grid(1);
    let dir = tempdir();
    write(dir.path(), "main.c", C_SRC);
    write(dir.path(), "util.h", UTIL_H);
    let out = run_in(
        dir.path(),
        HGBUILD,
        &[
            "--coordinator",
            &coord.grpc,
            "-v",
            "cc",
            "-c",
            "main.c",
            "-O2",
        ],
        &[("HG_CC", "clang")],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stderr.contains("[remote w1]"), "{}", out.stderr);
    let obj = read(dir.path(), "main.o");
    let plain = gcc(dir.path(), "clang", &["-c", "main.c", "-O2", "-o", "ref.o"]);
    assert_eq!(plain.code, 0);
    assert_eq!(obj, read(dir.path(), "ref.o"));
}

fn support_missing(prog: &str) -> bool {
    let found = std::process::Command::new(prog)
        .arg("--version")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !found {
        if std::env::var_os("HG_TEST_REQUIRE_ALL").is_some_and(|v| v == "1") {
            panic!("{prog} is required (HG_TEST_REQUIRE_ALL=1) but not installed");
        }
        eprintln!("SKIP: {prog} not installed");
    }
    !found
}

#[test]
fn compile_errors_and_warnings_are_the_compilers() {
    let (coord, _workers) = grid(1);
    let dir = tempdir();
    write(
        dir.path(),
        "warn.c",
        "int f(void) {\n    int unused;\n    return 1;\n}\n",
    );
    write(
        dir.path(),
        "bad.c",
        "#include \"util.h\"\nint g(void) {\n    return missing_name;\n}\n",
    );
    write(dir.path(), "util.h", UTIL_H);
    std::fs::write(dir.path().join("bad.o"), b"stale").expect("write stale");

    let out = hgbuild(
        dir.path(),
        &coord.grpc,
        &["-v", "cc", "-c", "warn.c", "-Wall"],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stderr.contains("[remote w1]"), "{}", out.stderr);
    assert!(
        out.stderr.contains("warn.c:2:9: warning: unused variable"),
        "{}",
        out.stderr
    );

    let out = hgbuild(dir.path(), &coord.grpc, &["cc", "-c", "bad.c"]);
    let plain = gcc(dir.path(), "cc", &["-c", "bad.c", "-o", "ref-bad.o"]);
    assert_ne!(plain.code, 0);
    assert_eq!(out.code, plain.code, "exit code differs: {}", out.stderr);
    assert!(
        out.stderr
            .contains("bad.c:3:12: error: 'missing_name' undeclared")
            || out
                .stderr
                .contains("bad.c:3:12: error: ‘missing_name’ undeclared"),
        "{}",
        out.stderr
    );
    // Every diagnostic line of the plain compiler that names a file and line
    // is there too (the caret excerpt needs the source on the worker).
    for line in plain.stderr.lines().filter(|l| l.starts_with("bad.c")) {
        assert!(
            out.stderr.contains(line),
            "missing `{line}` in:\n{}",
            out.stderr
        );
    }
    assert!(
        !dir.path().join("bad.o").exists(),
        "a stale object survived a failed compile"
    );
    // Reported once: a compile error is not retried locally.
    assert!(!out.stderr.contains("compiling locally"), "{}", out.stderr);
}

#[test]
fn missing_header_fails_like_the_compiler() {
    let (coord, _workers) = grid(1);
    let dir = tempdir();
    write(dir.path(), "m.c", "#include \"nope.h\"\nint x;\n");
    let out = hgbuild(dir.path(), &coord.grpc, &["cc", "-c", "m.c"]);
    let plain = gcc(dir.path(), "cc", &["-c", "m.c", "-o", "ref.o"]);
    assert_eq!(out.code, plain.code);
    assert!(out.stderr.contains("nope.h"), "{}", out.stderr);
}

#[test]
fn non_distributable_commands_run_locally_with_the_plain_result() {
    let (coord, _workers) = grid(1);
    let dir = tempdir();
    write(dir.path(), "main.c", C_SRC);
    write(dir.path(), "util.h", UTIL_H);
    write(dir.path(), "two.c", "int two(void) { return 2; }\n");

    // Linking.
    let out = hgbuild(
        dir.path(),
        &coord.grpc,
        &["-v", "cc", "main.c", "-o", "prog"],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stderr.contains("[local linking"), "{}", out.stderr);
    let run = run_in(
        dir.path(),
        &dir.path().join("prog").display().to_string(),
        &[],
        &[],
    );
    assert_eq!(run.stdout, "49 hello\n");

    // -E prints to stdout exactly what cc -E prints.
    let out = hgbuild(dir.path(), &coord.grpc, &["cc", "-E", "main.c"]);
    let plain = gcc(dir.path(), "cc", &["-E", "main.c"]);
    assert_eq!(out.code, 0);
    assert_eq!(out.stdout, plain.stdout);

    // Several sources at once.
    let out = hgbuild(
        dir.path(),
        &coord.grpc,
        &["-v", "cc", "-c", "main.c", "two.c"],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stderr.contains("[local multiple input files"),
        "{}",
        out.stderr
    );
    let a = read(dir.path(), "two.o");
    let plain = gcc(dir.path(), "cc", &["-c", "two.c"]);
    assert_eq!(plain.code, 0);
    assert_eq!(a, read(dir.path(), "two.o"));

    // Not a compile at all.
    let out = hgbuild(dir.path(), &coord.grpc, &["cc", "--version"]);
    assert_eq!(out.code, 0);
    assert_eq!(out.stdout, gcc(dir.path(), "cc", &["--version"]).stdout);
}

/// Writes `DIR/bin/cc`, a shell script that appends a line (`echo`'s
/// words: `$*`, `$$`...) to `log` and then runs `/usr/bin/cc`; returns a
/// PATH with it first.
fn logging_cc(dir: &std::path::Path, log: &std::path::Path, echo: &str) -> String {
    let bin = dir.join("bin");
    write(
        &bin,
        "cc",
        &format!(
            "#!/bin/sh\necho \"{echo}\" >> '{}'\nexec /usr/bin/cc \"$@\"\n",
            log.display()
        ),
    );
    std::fs::set_permissions(
        bin.join("cc"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .expect("chmod");
    format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    )
}

/// A command that runs here as it is (`-E`, a link, `--version`) replaces
/// the hgbuild process with the compiler (`exec`): the compiler runs under
/// hgbuild's process id and no hgbuild waits around it. hgbuild stays, and
/// runs the compiler as its child, for a distributable compile, with `-v`
/// (a line follows the compile) and under a wrapped build (an event does).
#[test]
fn local_commands_replace_hgbuild_with_the_compiler() {
    let dir = tempdir();
    let log = dir.path().join("pids.log");
    let events = dir.path().join("events.jsonl");
    let path = logging_cc(dir.path(), &log, "$$ $PPID $*");
    write(dir.path(), "two.c", "int two(void) { return 2; }\n");
    // hgbuild's pid, and the pid of the process that ran `cc ARGS` and its
    // parent's.
    let run = |flags: &[&str], args: &[&str], env: &[(&str, &str)]| -> (u32, u32, u32) {
        let _ = std::fs::remove_file(&log);
        let mut child = std::process::Command::new(HGBUILD)
            .args(flags)
            .arg("cc")
            .args(args)
            .current_dir(dir.path())
            .env("HOME", dir.path())
            .env("PATH", &path)
            .env("HG_DISCOVERY__MDNS__ENABLED", "false")
            .env_remove("HG_COORDINATOR")
            .envs(env.iter().copied())
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("spawn hgbuild");
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        let status = loop {
            if let Some(s) = child.try_wait().expect("wait") {
                break s;
            }
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("hgbuild cc {args:?} did not end within 60 s");
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        assert!(status.success(), "{args:?}: {status:?}");
        let calls = std::fs::read_to_string(&log).expect("the wrapper's log");
        let tail = format!(" {}", args.join(" "));
        let line = calls
            .lines()
            .find(|l| l.ends_with(&tail))
            .unwrap_or_else(|| panic!("no `cc{tail}` call in:\n{calls}"));
        let mut f = line.split(' ').map(|n| n.parse::<u32>().unwrap_or(0));
        (child.id(), f.next().unwrap_or(0), f.next().unwrap_or(0))
    };
    let replaced = |flags: &[&str], args: &[&str], env: &[(&str, &str)]| {
        let (hgbuild, pid, parent) = run(flags, args, env);
        assert!(
            pid == hgbuild || parent == hgbuild,
            "cc {args:?} ran neither in hgbuild's place nor as its child"
        );
        pid == hgbuild
    };
    assert!(
        replaced(&[], &["-E", "two.c"], &[]),
        "-E runs in hgbuild's place"
    );
    assert!(
        replaced(&[], &["-shared", "two.c", "-o", "libtwo.so"], &[]),
        "a link"
    );
    assert!(replaced(&[], &["--version"], &[]), "--version");
    assert!(
        !replaced(&[], &["-O2", "-c", "two.c"], &[]),
        "a distributable compile (here compiled locally: no coordinator)"
    );
    assert!(
        !replaced(&["-v"], &["-E", "two.c"], &[]),
        "with -v hgbuild waits"
    );
    let ev = events.display().to_string();
    assert!(
        !replaced(&[], &["-E", "two.c"], &[("HG_EVENTS_FILE", ev.as_str())]),
        "a wrapped build records every call"
    );
}

/// The compiler is identified (`--version`, `-dumpfullversion`,
/// `-dumpmachine`) once, then remembered, with the result cache off too.
#[test]
fn compiler_identity_is_remembered_with_the_cache_off() {
    let dir = tempdir();
    let log = dir.path().join("calls.log");
    let path = logging_cc(dir.path(), &log, "$*");
    write(dir.path(), "two.c", "int two(void) { return 2; }\n");
    let env = [("PATH", path.as_str()), ("HG_CACHE__ENABLED", "false")];
    for _ in 0..3 {
        let out = run_in(dir.path(), HGBUILD, &["cc", "-c", "two.c"], &env);
        assert_eq!(out.code, 0, "{}", out.stderr);
    }
    let calls = std::fs::read_to_string(&log).expect("calls");
    for query in ["--version", "-dumpfullversion", "-dumpmachine"] {
        assert_eq!(
            calls.lines().filter(|l| *l == query).count(),
            1,
            "`cc {query}` runs once in three compiles:\n{calls}"
        );
    }
    assert_eq!(
        calls.lines().filter(|l| l.contains("two.c")).count(),
        3,
        "{calls}"
    );
}

#[test]
fn large_preprocessed_input_is_not_limited_by_message_size() {
    let (coord, _workers) = grid(1);
    let dir = tempdir();
    // ~20 MB of poorly compressible preprocessed source (and a ~10 MB object).
    let mut text = String::from("const char big[] =\n");
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    while text.len() < 20_000_000 {
        text.push('"');
        for _ in 0..12 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            text.push_str(&format!("{:08x}", x as u32));
        }
        text.push_str("\"\n");
    }
    text.push_str(";\nint get(int i) { return big[i]; }\n");
    write(dir.path(), "big.i", &text);
    let out = hgbuild(
        dir.path(),
        &coord.grpc,
        &["-v", "cc", "-c", "big.i", "-o", "big.o"],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stderr.contains("[remote w1]"), "{}", out.stderr);
    let plain = gcc(dir.path(), "cc", &["-c", "big.i", "-o", "ref.o"]);
    assert_eq!(plain.code, 0);
    assert_eq!(read(dir.path(), "big.o"), read(dir.path(), "ref.o"));
}

#[test]
fn coordinator_down_falls_back_locally_or_fails_with_no_fallback() {
    let dir = tempdir();
    write(dir.path(), "main.c", C_SRC);
    write(dir.path(), "util.h", UTIL_H);
    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("port");
    let addr = format!("127.0.0.1:{port}");
    let out = hgbuild(dir.path(), &addr, &["cc", "-c", "main.c"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stderr.contains("connection refused"), "{}", out.stderr);
    assert!(out.stderr.contains(&addr), "{}", out.stderr);
    assert!(out.stderr.contains("compiling locally"), "{}", out.stderr);
    assert!(dir.path().join("main.o").exists());

    // The local result was cached: the repeat needs no grid at all.
    let obj = read(dir.path(), "main.o");
    std::fs::remove_file(dir.path().join("main.o")).expect("rm");
    let out = hgbuild(
        dir.path(),
        &addr,
        &["-v", "--no-fallback", "cc", "-c", "main.c"],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stderr.contains("[cache"), "{}", out.stderr);
    assert_eq!(read(dir.path(), "main.o"), obj);

    // Without it, --no-fallback fails.
    let cl = run_in(dir.path(), HGBUILD, &["cache", "clear"], &[]);
    assert_eq!(cl.code, 0, "{}", cl.stderr);
    std::fs::remove_file(dir.path().join("main.o")).expect("rm");
    let out = hgbuild(dir.path(), &addr, &["--no-fallback", "cc", "-c", "main.c"]);
    assert_ne!(out.code, 0);
    assert!(out.stderr.contains("connection refused"), "{}", out.stderr);
    assert!(!dir.path().join("main.o").exists());
}

#[test]
fn health_endpoints_and_clean_shutdown() {
    let (mut coord, mut workers) = grid(1);
    let (code, body) = http_get(&coord.http, "/health");
    assert_eq!(code, 200);
    assert_eq!(body.trim(), "OK");
    let (code, _) = http_get(&workers[0].http, "/health");
    assert_eq!(code, 200);
    let (code, body) = http_get(&coord.http, "/api/v1/workers");
    assert_eq!(code, 200);
    assert!(body.contains("\"id\":\"w1\""), "{body}");

    let status = hgbuild(std::path::Path::new("/tmp"), &coord.grpc, &["status"]);
    assert_eq!(status.code, 0, "{}", status.stderr);
    assert!(status.stdout.contains("w1"), "{}", status.stdout);

    let w = workers.remove(0);
    let mut wp = w.proc;
    let st = wp
        .terminate(Duration::from_secs(20))
        .expect("worker exits on SIGTERM");
    assert!(st.success(), "worker exit status {st:?}");
    assert!(
        coord
            .proc
            .wait_log("msg=\"worker left\" worker_id=w1", Duration::from_secs(5))
    );
    let st = coord
        .proc
        .terminate(Duration::from_secs(20))
        .expect("coordinator exits on SIGTERM");
    assert!(st.success(), "coordinator exit status {st:?}");
}

#[test]
fn bad_configuration_stops_with_the_key_or_file_named() {
    let dir = tempdir();
    write(
        dir.path(),
        "bad.yaml",
        "worker:\n  max_concurent_tasks: 3\n",
    );
    let out = run_in(dir.path(), WORKER, &["serve", "--config", "bad.yaml"], &[]);
    assert_eq!(out.code, 2);
    assert!(
        out.stderr.contains("worker.max_concurent_tasks"),
        "{}",
        out.stderr
    );
    let out = run_in(
        dir.path(),
        COORD,
        &["serve", "--config", "missing.yaml"],
        &[],
    );
    assert_eq!(out.code, 2);
    assert!(out.stderr.contains("missing.yaml"), "{}", out.stderr);
    let out = run_in(
        dir.path(),
        COORD,
        &["serve"],
        &[("HG_COORDINATOR__HEARTBEAT_TTL", "forever")],
    );
    assert_eq!(out.code, 2);
    assert!(
        out.stderr.contains("coordinator.heartbeat_ttl"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("HG_COORDINATOR__HEARTBEAT_TTL"),
        "{}",
        out.stderr
    );
}

#[test]
fn json_logs_carry_the_contract_fields() {
    let c = start_coordinator(&["--log-format", "json"]);
    let _w = start_worker(&c.grpc, "wj", &[]);
    assert!(
        c.proc
            .wait_log("worker registered", Duration::from_secs(10))
    );
    let line = c
        .proc
        .log_text()
        .lines()
        .find(|l| l.contains("worker registered"))
        .map(str::to_owned)
        .expect("line");
    let v: serde_json::Value = serde_json::from_str(&line).expect("json line");
    assert_eq!(v["level"], "info");
    assert_eq!(v["msg"], "worker registered");
    assert_eq!(v["worker_id"], "wj");
    assert_eq!(v["source"], "handshake");
}

#[test]
fn debug_info_compiles_run_remotely_and_stay_byte_identical() {
    let (coord, _workers) = grid(1);
    let dir = tempdir();
    write(dir.path(), "src/main.c", C_SRC);
    write(dir.path(), "src/util.h", UTIL_H);
    write(
        dir.path(),
        "include/extra.h",
        "#define EXTRA(x) ((x) + 1)\n",
    );
    let src = dir.path().join("src");
    let abs_inc = format!("-I{}", dir.path().join("include").display());
    let abs_src = src.join("main.c").display().to_string();
    // Relative paths in a subdirectory, absolute ones (as CMake writes
    // them), split DWARF: each compiled on the worker, each identical to
    // plain gcc in the same directory.
    let cases: Vec<Vec<String>> = vec![
        vec![
            "-g".into(),
            "-O2".into(),
            "-I../include".into(),
            "-c".into(),
            "main.c".into(),
        ],
        vec![
            "-g".into(),
            "-O1".into(),
            abs_inc.clone(),
            "-c".into(),
            abs_src.clone(),
        ],
        vec![
            "-g".into(),
            "-gsplit-dwarf".into(),
            "-I../include".into(),
            "-c".into(),
            "main.c".into(),
        ],
    ];
    for case in cases {
        let mut args: Vec<&str> = vec!["-v", "cc"];
        args.extend(case.iter().map(String::as_str));
        args.extend(["-o", "main.o"]);
        let out = hgbuild(&src, &coord.grpc, &args);
        assert_eq!(out.code, 0, "{}", out.stderr);
        assert!(
            out.stderr.contains("[remote w1]"),
            "{case:?}: {}",
            out.stderr
        );
        let obj = read(&src, "main.o");
        let dwo = case
            .iter()
            .any(|a| a == "-gsplit-dwarf")
            .then(|| read(&src, "main.dwo"));
        let mut plain_args: Vec<&str> = case.iter().map(String::as_str).collect();
        plain_args.extend(["-o", "main.o"]);
        let plain = gcc(&src, "cc", &plain_args);
        assert_eq!(plain.code, 0, "{}", plain.stderr);
        assert!(obj == read(&src, "main.o"), "{case:?}: the object differs");
        if let Some(dwo) = dwo {
            assert!(dwo == read(&src, "main.dwo"), "{case:?}: the .dwo differs");
        }
    }
    // The preprocessor's diagnostics appear once: the worker's compile
    // from source prints them, and the client's own preprocessing does not
    // add them again.
    write(dir.path(), "src/warn.c", "#warning look here\nint w;\n");
    let out = hgbuild(
        &src,
        &coord.grpc,
        &["-v", "cc", "-g", "-c", "warn.c", "-o", "warn.o"],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stderr.contains("[remote w1]"), "{}", out.stderr);
    assert_eq!(out.stderr.matches("look here").count(), 2, "{}", out.stderr);
    // Turned off, -g compiles stay local and say why.
    let out = run_in(
        &src,
        HGBUILD,
        &[
            "--coordinator",
            &coord.grpc,
            "-v",
            "cc",
            "-g",
            "-c",
            "main.c",
            "-o",
            "main.o",
        ],
        &[("HG_CLIENT__REMOTE_DEBUG_INFO", "false")],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stderr.contains("[local debug info"), "{}", out.stderr);
}

/// On a terminal, remote compiles' diagnostics keep gcc's colors (with and
/// without debug info); `script` gives hgbuild a pseudo-terminal.
#[test]
fn remote_diagnostics_keep_colors_on_a_terminal() {
    let (coord, _workers) = grid(1);
    let dir = tempdir();
    write(
        dir.path(),
        "warn.c",
        "int f(void) {\n    int unused;\n    return 0;\n}\n",
    );
    for g in ["-O1", "-g"] {
        let cmd = format!(
            "{HGBUILD} --coordinator {} -v cc -Wall {g} -c warn.c -o warn.o",
            coord.grpc
        );
        let out = run_in(dir.path(), "script", &["-qec", &cmd, "/dev/null"], &[]);
        assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
        // script copies the terminal's output to its standard output.
        assert!(out.stdout.contains("[remote w1]"), "{g}: {}", out.stdout);
        assert!(out.stdout.contains("unused"), "{g}: {}", out.stdout);
        assert!(
            out.stdout.contains("\x1b["),
            "{g}: no color codes in {:?}",
            out.stdout
        );
    }
}

#[test]
fn local_and_shared_cache_tiers_serve_repeat_compiles() {
    let (coord, workers) = grid(1);
    let dir = tempdir();
    write(dir.path(), "main.c", C_SRC);
    write(dir.path(), "util.h", UTIL_H);
    // The preprocessed-key tiers only (direct mode: tests/direct_mode.rs).
    write(
        dir.path(),
        "hybridgrid.yaml",
        "cache:\n  direct_mode: false\n",
    );
    let args = ["-v", "cc", "-O2", "-c", "main.c", "-o", "main.o"];
    let first = hgbuild(dir.path(), &coord.grpc, &args);
    assert_eq!(first.code, 0, "{}", first.stderr);
    assert!(first.stderr.contains("[remote w1]"), "{}", first.stderr);
    let obj = read(dir.path(), "main.o");
    std::fs::remove_file(dir.path().join("main.o")).expect("rm");

    // Same client again: the local tier answers.
    let again = hgbuild(dir.path(), &coord.grpc, &args);
    assert_eq!(again.code, 0, "{}", again.stderr);
    assert!(again.stderr.contains("[cache]"), "{}", again.stderr);
    assert_eq!(read(dir.path(), "main.o"), obj);

    // A second client with an empty local cache (another HOME) in the same
    // directory: the coordinator's shared tier answers, no worker compiles.
    let other_home = tempdir();
    std::fs::remove_file(dir.path().join("main.o")).expect("rm");
    let mut a = vec!["--coordinator", coord.grpc.as_str()];
    a.extend_from_slice(&args);
    let shared = run_in(
        dir.path(),
        HGBUILD,
        &a,
        &[("HOME", other_home.path().to_str().expect("utf8"))],
    );
    assert_eq!(shared.code, 0, "{}", shared.stderr);
    assert!(shared.stderr.contains("[cache]"), "{}", shared.stderr);
    assert_eq!(read(dir.path(), "main.o"), obj);
    let (_, body) = http_get(&workers[0].http, "/api/status");
    assert!(
        body.contains("\"completed\":1"),
        "the worker compiled again: {body}"
    );
    let (_, stats) = http_get(&coord.http, "/api/stats");
    let v: serde_json::Value = serde_json::from_str(&stats).expect("json");
    assert_eq!(v["cache"]["hits"], 1, "{stats}");
    assert_eq!(v["cache"]["misses"], 1, "{stats}");

    // hgbuild cache stats / clear.
    let st = run_in(dir.path(), HGBUILD, &["cache", "stats"], &[]);
    assert_eq!(st.code, 0, "{}", st.stderr);
    assert!(st.stdout.contains("entries           1"), "{}", st.stdout);
    let cl = run_in(dir.path(), HGBUILD, &["cache", "clear"], &[]);
    assert_eq!(cl.code, 0, "{}", cl.stderr);
    let st = run_in(dir.path(), HGBUILD, &["cache", "stats"], &[]);
    assert!(st.stdout.contains("entries           0"), "{}", st.stdout);
}

#[test]
fn stats_command_reports_the_coordinator() {
    let (coord, _workers) = grid(1);
    let dir = tempdir();
    let out = hgbuild(dir.path(), &coord.grpc, &["stats"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stdout.contains("workers           1"), "{}", out.stdout);
}

#[test]
fn diagnostics_in_headers_up_the_tree_quote_the_source() {
    let (coord, _workers) = grid(1);
    let dir = tempdir();
    write(
        dir.path(),
        "inc/defs.h",
        "static int unused_fn(void) { int x; return 0; }\n",
    );
    let src = write(
        dir.path(),
        "src/a.c",
        "#include \"defs.h\"\nint main(void) { return 0; }\n",
    );
    let src_dir = src.parent().expect("dir").to_path_buf();
    let args = ["-c", "a.c", "-I../inc", "-Wall", "-Wextra"];
    let mut a = vec!["--coordinator", coord.grpc.as_str(), "-v", "cc"];
    a.extend_from_slice(&args);
    let out = run_in(&src_dir, HGBUILD, &a, &[]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stderr.contains("[remote w1]"), "{}", out.stderr);
    let plain = run_in(&src_dir, "cc", &args, &[]);
    assert!(plain.stderr.contains("../inc/defs.h"), "{}", plain.stderr);
    let ours: String = out
        .stderr
        .lines()
        .filter(|l| !l.starts_with("hgbuild:"))
        .map(|l| format!("{l}\n"))
        .collect();
    assert_eq!(ours, plain.stderr);
}

#[test]
fn wrapped_make_routes_every_compile_and_summarises() {
    let (coord, _workers) = grid(2);
    let dir = tempdir();
    let sample = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/sample-c");
    for e in std::fs::read_dir(&sample).expect("sample") {
        let e = e.expect("entry");
        std::fs::copy(e.path(), dir.path().join(e.file_name())).expect("copy");
    }
    // The Makefile calls `cc` by name; CC on make's command line is honoured too.
    let out = hgbuild(dir.path(), &coord.grpc, &["-v", "make", "CC=gcc"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.stderr.matches("[remote ").count(), 4, "{}", out.stderr);
    assert!(out.stderr.contains("[local linking"), "{}", out.stderr);
    assert!(
        out.stderr
            .contains("hgbuild: 5 compiler calls: 4 remote, 0 cached, 1 local, 0 failed in"),
        "{}",
        out.stderr
    );
    let run = run_in(
        dir.path(),
        &dir.path().join("demo").display().to_string(),
        &[],
        &[],
    );
    assert!(run.stdout.contains("words=5"), "{}", run.stdout);
    // The wrapped tool's exit code comes back.
    let fail = hgbuild(dir.path(), &coord.grpc, &["make", "no-such-target"]);
    assert_eq!(fail.code, 2, "{}", fail.stderr);
}

#[test]
fn wrapped_make_gives_every_compile_the_config_file() {
    // `--config` with a relative path; make compiles in a subdirectory,
    // where the file is not found by the search.
    let dir = tempdir();
    let cache = dir.path().join("team-cache");
    write(
        dir.path(),
        "conf/hg.yaml",
        &format!("cache:\n  dir: {}\n", cache.display()),
    );
    write(dir.path(), "Makefile", "all:\n\t$(MAKE) -C sub\n");
    write(
        dir.path(),
        "sub/Makefile",
        "util.o: util.c util.h\n\tcc -O2 -c util.c -o util.o\n",
    );
    write(dir.path(), "sub/util.c", C_SRC);
    write(dir.path(), "sub/util.h", UTIL_H);
    let out = run_in(
        dir.path(),
        HGBUILD,
        &["--config", "conf/hg.yaml", "-v", "make"],
        &[],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(dir.path().join("sub/util.o").is_file(), "{}", out.stderr);
    // The compile stored its result where the file says, not in the
    // default ~/.hybridgrid/cache.
    let stats = run_in(
        dir.path(),
        HGBUILD,
        &["--config", "conf/hg.yaml", "cache", "stats"],
        &[],
    );
    assert!(
        stats.stdout.contains(&cache.display().to_string()),
        "{}",
        stats.stdout
    );
    assert!(
        stats.stdout.contains("entries           1"),
        "{}",
        stats.stdout
    );
    assert!(
        !dir.path().join(".hybridgrid/cache").exists(),
        "the default cache directory was used"
    );
}

#[test]
fn launcher_form_compiles_like_ccache() {
    let (coord, _workers) = grid(1);
    let dir = tempdir();
    write(dir.path(), "main.c", C_SRC);
    write(dir.path(), "util.h", UTIL_H);
    let out = run_in(
        dir.path(),
        HGBUILD,
        &["/usr/bin/cc", "-O2", "-c", "main.c"],
        &[("HG_COORDINATOR", coord.grpc.as_str()), ("HG_VERBOSE", "1")],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stderr.contains("[remote w1]"), "{}", out.stderr);
}

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

#[test]
fn a_worker_killed_mid_build_does_not_break_the_build() {
    let (coord, workers) = grid(2);
    killed_worker_build(coord, workers);
}

/// The same with `scheduler.algorithm: cost-aware` (tasks held for a
/// worker that dies go to the other one).
#[test]
fn a_worker_killed_mid_build_with_the_cost_aware_scheduler() {
    let coord = start_coordinator_env(&[], &[("HG_SCHEDULER__ALGORITHM", "cost-aware")]);
    assert!(
        coord
            .proc
            .wait_log("scheduler=CostAware", Duration::from_secs(10)),
        "{}",
        coord.proc.log_text()
    );
    let workers = (1..=2)
        .map(|i| start_worker(&coord.grpc, &format!("w{i}"), &[]))
        .collect();
    killed_worker_build(coord, workers);
}

/// Builds 24 heavy files with `make -j4` through `coord`, kills the first
/// worker (SIGKILL) once it compiles, and checks every object.
fn killed_worker_build(coord: Coord, mut workers: Vec<Worker>) {
    let dir = tempdir();
    let n = 24;
    let mut makefile = String::from("OBJS =");
    for i in 0..n {
        write(dir.path(), &format!("u{i}.c"), &heavy_source(i));
        makefile.push_str(&format!(" u{i}.o"));
    }
    makefile.push_str("\nall: $(OBJS)\n%.o: %.c\n\t$(CC) -O2 -c $< -o $@\n");
    write(dir.path(), "Makefile", &makefile);

    let build = std::process::Command::new(HGBUILD)
        .args(["--coordinator", &coord.grpc, "-v", "make", "-j4"])
        .current_dir(dir.path())
        .env_remove("HG_COORDINATOR")
        .env("HG_DISCOVERY__MDNS__ENABLED", "false")
        .env("HG_CACHE__ENABLED", "false")
        .env("HOME", dir.path())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start build");
    // Kill w1 (SIGKILL) once it has started compiling.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !coord.proc.log_text().contains("worker=w1") && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    workers[0].proc.kill();
    let out = build.wait_with_output().expect("build finishes");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "build failed:\n{stderr}");
    for i in 0..n {
        let plain = run_in(
            dir.path(),
            "cc",
            &["-O2", "-c", &format!("u{i}.c"), "-o", "ref.o"],
            &[],
        );
        assert_eq!(plain.code, 0);
        assert_eq!(
            read(dir.path(), &format!("u{i}.o")),
            read(dir.path(), "ref.o"),
            "u{i}.o differs from a plain compile"
        );
    }
    assert!(stderr.contains("[remote w2]"), "{stderr}");
    drop(workers);
}

#[test]
fn version_lists_features_and_completions_are_generated() {
    let dir = tempdir();
    for bin in [COORD, WORKER, HGBUILD] {
        let v = run_in(dir.path(), bin, &["--version"], &[]);
        assert_eq!(v.code, 0, "{}", v.stderr);
        assert!(
            v.stdout.contains(env!("CARGO_PKG_VERSION")) && v.stdout.contains("(features: "),
            "{bin}: {}",
            v.stdout
        );
        #[cfg(feature = "mdns")]
        assert!(v.stdout.contains("mdns"), "{}", v.stdout);
        let name = std::path::Path::new(bin)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        for (shell, marker) in [
            ("bash", "complete -F"),
            ("zsh", "#compdef"),
            ("fish", "complete -c"),
        ] {
            let c = run_in(dir.path(), bin, &["completions", shell], &[]);
            assert_eq!(c.code, 0, "{bin} completions {shell}: {}", c.stderr);
            assert!(
                c.stdout.contains(marker) && c.stdout.contains(&name),
                "{bin} completions {shell}:\n{}",
                c.stdout
            );
        }
    }
    let bad = run_in(dir.path(), HGBUILD, &["completions", "tcsh"], &[]);
    assert_eq!(bad.code, 2, "{}", bad.stderr);
    assert!(bad.stderr.contains("tcsh"), "{}", bad.stderr);
}

#[test]
fn task_directories_live_in_a_directory_the_worker_claims_and_removes() {
    let dir = tempdir();
    let wd = dir.path().join("work");
    // Left by a worker that was killed: its lock file, held by nobody.
    let dead = wd.join("hg-worker-dead00");
    std::fs::create_dir_all(dead.join("hg-task-abc/root")).expect("mkdir");
    std::fs::write(dead.join(".lock"), "").expect("write");
    let wd_s = wd.display().to_string();
    let c = start_coordinator(&[]);
    let mut w = start_worker_env(&c.grpc, "wd1", &[], &[("HG_WORKER__WORK_DIR", &wd_s)]);
    assert!(
        !dead.exists(),
        "a dead worker's directory is removed at start"
    );
    let names = |d: &std::path::Path| -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(d)
            .expect("work dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };
    // Its task directory, and its input store beside it.
    let claimed = names(&wd);
    assert_eq!(claimed.len(), 2, "{claimed:?}");
    assert_eq!(claimed[0], "hg-inputs-0", "{claimed:?}");
    assert!(claimed[1].starts_with("hg-worker-"), "{claimed:?}");

    write(dir.path(), "main.c", C_SRC);
    write(dir.path(), "util.h", UTIL_H);
    let out = hgbuild(
        dir.path(),
        &c.grpc,
        &["cc", "-g", "-O2", "-c", "main.c", "-o", "main.o"],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    let stats = successful_tasks(&c.http);
    assert_eq!(stats, 1, "the -g compile ran on the worker");
    let st = w
        .proc
        .terminate(Duration::from_secs(20))
        .expect("worker exits on SIGTERM");
    assert!(st.success(), "worker exit status {st:?}");
    assert_eq!(
        names(&wd),
        vec!["hg-inputs-0".to_string()],
        "the worker removes its task directory on exit and keeps its store"
    );

    // A directory that cannot be used stops the worker, naming it.
    write(dir.path(), "a-file", "");
    let bad = dir.path().join("a-file/sub").display().to_string();
    let out = run_in(
        dir.path(),
        WORKER,
        &[
            "serve",
            "--bind",
            "127.0.0.1",
            "--grpc-port",
            "0",
            "--http-port",
            "0",
            "--coordinator",
            &c.grpc,
        ],
        &[("HG_WORKER__WORK_DIR", &bad)],
    );
    assert_ne!(out.code, 0, "{}", out.stderr);
    assert!(out.stderr.contains(&bad), "{}", out.stderr);
    assert!(out.stderr.contains("worker.work_dir"), "{}", out.stderr);
}
