//! Direct mode and the local cache tier with the real hgbuild binary and
//! the real gcc: repeat compiles are answered without running the
//! preprocessor, and no edit (header, shadowing header, define, clock
//! macros) ever gets a stale object. The compiler is a wrapper script that
//! logs every invocation, so a test can see whether the preprocessor ran.

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use support::*;

/// Files younger than this are not recorded in a manifest (direct.rs
/// TOO_NEW is 2 s): tests wait this long after writing a file they want
/// recorded.
const SETTLE: Duration = Duration::from_millis(2300);

struct Project {
    dir: tempfile::TempDir,
    gcc: String,
    log: PathBuf,
}

impl Project {
    fn new() -> Option<Project> {
        let real = which("gcc")?;
        let dir = tempdir();
        let log = dir.path().join("compiler.log");
        let wrapper = write(
            dir.path(),
            "bin/gcc",
            &format!(
                "#!/bin/sh\necho \"$*\" >> '{}'\nexec '{}' \"$@\"\n",
                log.display(),
                real.display()
            ),
        );
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        Some(Project {
            gcc: wrapper.display().to_string(),
            dir,
            log,
        })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// `hgbuild <wrapper> args` (the launcher form) with per-file lines,
    /// no grid unless `env` names one.
    fn hg(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut a = vec![self.gcc.as_str()];
        a.extend_from_slice(args);
        let mut e = vec![("HG_VERBOSE", "1")];
        e.extend_from_slice(env);
        run_in(self.path(), HGBUILD, &a, &e)
    }

    /// Real preprocessor runs so far (not the search-list probe `-E -v`).
    fn preprocessor_runs(&self) -> usize {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter(|l| {
                let w: Vec<&str> = l.split_whitespace().collect();
                w.contains(&"-E") && !w.contains(&"-v")
            })
            .count()
    }

    /// The object plain gcc makes from the current files.
    fn reference(&self, args: &[&str]) -> Vec<u8> {
        let mut a: Vec<&str> = args.to_vec();
        a.extend_from_slice(&["-c", "main.c", "-o", "ref.o"]);
        let out = run_in(self.path(), "gcc", &a, &[]);
        assert_eq!(out.code, 0, "{}", out.stderr);
        read(self.path(), "ref.o")
    }

    /// Compiles main.c to main.o through hgbuild; checks it succeeded and
    /// the object equals plain gcc's; returns hgbuild's stderr.
    fn compile_checked(&self, args: &[&str], env: &[(&str, &str)]) -> String {
        let _ = std::fs::remove_file(self.path().join("main.o"));
        let mut a: Vec<&str> = args.to_vec();
        a.extend_from_slice(&["-c", "main.c", "-o", "main.o"]);
        let out = self.hg(&a, env);
        assert_eq!(out.code, 0, "{}", out.stderr);
        let want = self.reference(args);
        assert!(
            read(self.path(), "main.o") == want,
            "hgbuild's object differs from gcc's (stale?): {}",
            out.stderr
        );
        out.stderr
    }
}

fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    let found = std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file());
    if found.is_none() {
        assert!(
            std::env::var("HG_TEST_REQUIRE_ALL").as_deref() != Ok("1"),
            "{name} is required (HG_TEST_REQUIRE_ALL=1)"
        );
        eprintln!("{name} not found; skipping");
    }
    found
}

const MAIN_C: &str = "#include \"foo.h\"\n#include <stdio.h>\nint main(void) { int unused; printf(\"%d\\n\", FOO + VAL); return 0; }\n";

#[test]
fn a_repeat_compile_skips_the_preprocessor_and_replays_everything() {
    let Some(p) = Project::new() else { return };
    // Through a grid: a local compile whose preprocessing printed something
    // (the #warning here) is not cached.
    let (coord, _workers) = grid(1);
    let grid_env = [("HG_COORDINATOR", coord.grpc.as_str())];
    write(p.path(), "main.c", MAIN_C);
    write(
        p.path(),
        "inc/foo.h",
        "#warning \"foo.h is old\"\n#define FOO 1\n",
    );
    std::thread::sleep(SETTLE);
    let args = [
        "-O2", "-Wall", "-DVAL=3", "-Iinc", "-MD", "-c", "main.c", "-o", "main.o",
    ];
    let first = p.hg(&args, &grid_env);
    assert_eq!(first.code, 0, "{}", first.stderr);
    assert!(first.stderr.contains("[remote w1]"), "{}", first.stderr);
    assert!(first.stderr.contains("unused variable"), "{}", first.stderr);
    assert!(first.stderr.contains("foo.h is old"), "{}", first.stderr);
    let obj = read(p.path(), "main.o");
    let dep = read(p.path(), "main.d");
    let runs = p.preprocessor_runs();
    assert!(runs >= 1);

    // Outputs removed: the hit writes them all again, shows both the
    // preprocessor's and the compiler's warnings, and runs no preprocessor.
    std::fs::remove_file(p.path().join("main.o")).expect("rm");
    std::fs::remove_file(p.path().join("main.d")).expect("rm");
    let hit = p.hg(&args, &grid_env);
    assert_eq!(hit.code, 0, "{}", hit.stderr);
    assert!(hit.stderr.contains("[cache direct]"), "{}", hit.stderr);
    assert!(hit.stderr.contains("unused variable"), "{}", hit.stderr);
    assert!(hit.stderr.contains("foo.h is old"), "{}", hit.stderr);
    assert_eq!(p.preprocessor_runs(), runs, "the preprocessor ran on a hit");
    assert_eq!(read(p.path(), "main.o"), obj);
    assert_eq!(read(p.path(), "main.d"), dep);

    let st = run_in(p.path(), HGBUILD, &["cache", "stats"], &[]);
    assert_eq!(st.code, 0, "{}", st.stderr);
    assert!(
        st.stdout
            .contains("direct mode       on (1 hits, 1 misses)"),
        "{}",
        st.stdout
    );

    // With direct mode off the preprocessor runs, and the result still
    // comes from the cache.
    let off = p.hg(
        &args,
        &[
            ("HG_CACHE__DIRECT_MODE", "false"),
            ("HG_COORDINATOR", coord.grpc.as_str()),
        ],
    );
    assert_eq!(off.code, 0, "{}", off.stderr);
    assert!(off.stderr.contains("[cache]"), "{}", off.stderr);
    assert_eq!(p.preprocessor_runs(), runs + 1);
    assert_eq!(read(p.path(), "main.o"), obj);
}

#[test]
fn split_dwarf_debug_compiles_are_cached_and_replayed() {
    let Some(p) = Project::new() else { return };
    write(p.path(), "main.c", MAIN_C);
    write(p.path(), "inc/foo.h", "#define FOO 1\n");
    std::thread::sleep(SETTLE);
    let flags = ["-g", "-gsplit-dwarf", "-O1", "-DVAL=1", "-Iinc"];
    let mut args = flags.to_vec();
    args.extend_from_slice(&["-c", "main.c", "-o", "main.o"]);
    let first = p.hg(&args, &[]);
    assert_eq!(first.code, 0, "{}", first.stderr);
    let (obj, dwo) = (read(p.path(), "main.o"), read(p.path(), "main.dwo"));
    std::fs::remove_file(p.path().join("main.o")).expect("rm");
    std::fs::remove_file(p.path().join("main.dwo")).expect("rm");
    let hit = p.hg(&args, &[]);
    assert_eq!(hit.code, 0, "{}", hit.stderr);
    assert!(hit.stderr.contains("[cache direct]"), "{}", hit.stderr);
    assert_eq!(read(p.path(), "main.o"), obj);
    assert_eq!(read(p.path(), "main.dwo"), dwo);
    // Byte-identical to plain gcc's.
    let mut a = flags.to_vec();
    a.extend_from_slice(&["-c", "main.c", "-o", "main.o"]);
    let plain = run_in(p.path(), "gcc", &a, &[]);
    assert_eq!(plain.code, 0, "{}", plain.stderr);
    assert_eq!(read(p.path(), "main.o"), obj);
    assert_eq!(read(p.path(), "main.dwo"), dwo);
}

#[test]
fn an_edited_header_is_never_served_stale() {
    let Some(p) = Project::new() else { return };
    write(p.path(), "main.c", MAIN_C);
    write(p.path(), "inc/foo.h", "#define FOO 1\n");
    std::thread::sleep(SETTLE);
    let args = ["-O2", "-DVAL=0", "-Iinc"];
    p.compile_checked(&args, &[]);
    let e = p.compile_checked(&args, &[]);
    assert!(e.contains("[cache direct]"), "{e}");
    // Same size, other content.
    write(p.path(), "inc/foo.h", "#define FOO 2\n");
    let e = p.compile_checked(&args, &[]);
    assert!(!e.contains("[cache direct]"), "{e}");
    // Back to the old content: the old result is valid again.
    write(p.path(), "inc/foo.h", "#define FOO 1\n");
    p.compile_checked(&args, &[]);
}

#[test]
fn a_new_header_shadowing_an_old_one_is_never_served_stale() {
    let Some(p) = Project::new() else { return };
    write(p.path(), "main.c", MAIN_C);
    write(p.path(), "inc2/foo.h", "#define FOO 1\n");
    std::fs::create_dir_all(p.path().join("inc1")).expect("mkdir");
    std::thread::sleep(SETTLE);
    // inc0 does not exist yet; inc1 exists and is empty; foo.h is in inc2.
    let args = ["-O2", "-DVAL=0", "-Iinc0", "-Iinc1", "-Iinc2"];
    p.compile_checked(&args, &[]);
    let e = p.compile_checked(&args, &[]);
    assert!(e.contains("[cache direct]"), "{e}");

    // A foo.h earlier on the search path.
    write(p.path(), "inc1/foo.h", "#define FOO 5\n");
    let e = p.compile_checked(&args, &[]);
    assert!(!e.contains("[cache direct]"), "{e}");
    std::fs::remove_file(p.path().join("inc1/foo.h")).expect("rm");
    let e = p.compile_checked(&args, &[]);
    assert!(e.contains("[cache direct]"), "{e}");

    // A directory that did not exist appears, with a foo.h.
    write(p.path(), "inc0/foo.h", "#define FOO 7\n");
    let e = p.compile_checked(&args, &[]);
    assert!(!e.contains("[cache direct]"), "{e}");
    std::fs::remove_dir_all(p.path().join("inc0")).expect("rm");

    // A foo.h next to the source (quoted includes look there first).
    write(p.path(), "foo.h", "#define FOO 9\n");
    let e = p.compile_checked(&args, &[]);
    assert!(!e.contains("[cache direct]"), "{e}");
}

#[test]
fn a_changed_define_is_never_served_stale() {
    let Some(p) = Project::new() else { return };
    write(p.path(), "main.c", MAIN_C);
    write(p.path(), "inc/foo.h", "#define FOO 1\n");
    std::thread::sleep(SETTLE);
    p.compile_checked(&["-O2", "-DVAL=1", "-Iinc"], &[]);
    let e = p.compile_checked(&["-O2", "-DVAL=1", "-Iinc"], &[]);
    assert!(e.contains("[cache direct]"), "{e}");
    let e = p.compile_checked(&["-O2", "-DVAL=2", "-Iinc"], &[]);
    assert!(!e.contains("[cache direct]"), "{e}");
    // An include path from the environment changes what foo.h is.
    write(p.path(), "envinc/foo.h", "#define FOO 4\n");
    let out = p.hg(
        &["-O2", "-DVAL=1", "-c", "main.c", "-o", "main.o"],
        &[("CPATH", "envinc")],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(!out.stderr.contains("[cache direct]"), "{}", out.stderr);
}

#[test]
fn date_and_time_users_are_never_direct_hits() {
    let Some(p) = Project::new() else { return };
    write(
        p.path(),
        "main.c",
        "#include \"stamp.h\"\nconst char *when = STAMP;\n",
    );
    write(
        p.path(),
        "stamp.h",
        "#define STAMP __DATE__ \" \" __TIME__\n",
    );
    std::thread::sleep(SETTLE);
    let args = ["-O2", "-c", "main.c", "-o", "main.o"];
    let first = p.hg(&args, &[]);
    assert_eq!(first.code, 0, "{}", first.stderr);
    let before = p.preprocessor_runs();
    std::thread::sleep(Duration::from_millis(1100));
    let second = p.hg(&args, &[]);
    assert_eq!(second.code, 0, "{}", second.stderr);
    assert!(!second.stderr.contains("[cache"), "{}", second.stderr);
    assert_eq!(p.preprocessor_runs(), before + 1);

    // In the source itself.
    write(p.path(), "main.c", "const char *when = __TIME__;\n");
    std::thread::sleep(SETTLE);
    assert_eq!(p.hg(&args, &[]).code, 0);
    std::thread::sleep(Duration::from_millis(1100));
    let again = p.hg(&args, &[]);
    assert_eq!(again.code, 0, "{}", again.stderr);
    assert!(!again.stderr.contains("[cache"), "{}", again.stderr);
}

#[test]
fn a_compile_that_fell_back_locally_is_cached() {
    let Some(p) = Project::new() else { return };
    write(p.path(), "main.c", MAIN_C);
    write(p.path(), "inc/foo.h", "#define FOO 1\n");
    std::thread::sleep(SETTLE);
    // A coordinator address where nothing listens.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").to_string()
    };
    let env = [
        ("HG_COORDINATOR", closed.as_str()),
        ("HG_CACHE__DIRECT_MODE", "false"),
    ];
    let args = ["-O2", "-DVAL=1", "-Iinc"];
    let first = p.compile_checked(&args, &env);
    assert!(first.contains("compiling locally"), "{first}");
    // The next build hits the preprocessed key (direct mode off here).
    let second = p.compile_checked(&args, &env);
    assert!(second.contains("[cache]"), "{second}");
    assert!(!second.contains("compiling locally"), "{second}");
    // And with direct mode on, the manifest recorded now serves the next.
    let env_direct = [("HG_COORDINATOR", closed.as_str())];
    p.compile_checked(&args, &env_direct);
    let third = p.compile_checked(&args, &env_direct);
    assert!(third.contains("[cache direct]"), "{third}");
    // A failing compile is not cached.
    write(p.path(), "bad.c", "int f(void) { return nope; }\n");
    for _ in 0..2 {
        let out = p.hg(&["-c", "bad.c", "-o", "bad.o"], &env_direct);
        assert_ne!(out.code, 0);
        assert!(out.stderr.contains("nope"), "{}", out.stderr);
        assert!(!out.stderr.contains("[cache"), "{}", out.stderr);
    }
}

#[test]
fn remote_results_are_recorded_for_direct_mode() {
    let Some(p) = Project::new() else { return };
    let (coord, workers) = grid(1);
    write(p.path(), "main.c", MAIN_C);
    write(p.path(), "inc/foo.h", "#define FOO 1\n");
    std::thread::sleep(SETTLE);
    let addr = coord.grpc.clone();
    let env = [("HG_COORDINATOR", addr.as_str())];
    let args = ["-O2", "-DVAL=1", "-Iinc"];
    let first = p.compile_checked(&args, &env);
    assert!(first.contains("[remote w1]"), "{first}");
    let runs = p.preprocessor_runs();
    // The coordinator goes away: a direct hit needs neither it nor the
    // preprocessor.
    drop(workers);
    drop(coord);
    let hit = p.compile_checked(&args, &env);
    assert!(hit.contains("[cache direct]"), "{hit}");
    assert!(!hit.contains("warning"), "{hit}");
    assert_eq!(p.preprocessor_runs(), runs);
}
