//! Checks the argument model against the real gcc and clang on this machine:
//! the dependency file the local preprocess step writes is byte-identical to
//! the one of the original command, and compiling the preprocessed output
//! with `remote_args()` elsewhere gives a byte-identical object (without -g).
//!
//! A compiler that is not installed makes its tests skip with a message,
//! unless `HG_TEST_REQUIRE_ALL=1`, which makes them fail.

use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use hybridgrid_core::task::{CompilerFamily, DriverKind};
use hybridgrid_exec::args::{Classification, CompilePlan, classify, validate_remote_args};

type TestResult = Result<(), Box<dyn std::error::Error>>;

#[derive(Clone, Copy, Debug)]
struct Cc {
    c: &'static str,
    cxx: &'static str,
    family: CompilerFamily,
}

const GCC: Cc = Cc {
    c: "gcc",
    cxx: "g++",
    family: CompilerFamily::Gcc,
};
const CLANG: Cc = Cc {
    c: "clang",
    cxx: "clang++",
    family: CompilerFamily::Clang,
};

impl Cc {
    fn program(&self, driver: DriverKind) -> &'static str {
        match driver {
            DriverKind::C => self.c,
            DriverKind::Cxx => self.cxx,
        }
    }
}

/// Whether the compiler can be used; prints why not, or panics when every
/// test is required to run.
fn available(cc: Cc) -> bool {
    let ok = [cc.c, cc.cxx].iter().all(|p| {
        Command::new(p)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    });
    if !ok {
        if std::env::var("HG_TEST_REQUIRE_ALL").as_deref() == Ok("1") {
            panic!("{} is not installed and HG_TEST_REQUIRE_ALL=1", cc.c);
        }
        eprintln!("skipping {} tests: {} or {} not found", cc.c, cc.c, cc.cxx);
    }
    ok
}

const HEADER: &str = "#ifndef H_H\n#define H_H\n#define X 3\n#define SQ(v) ((v) * (v))\nstatic inline int twice(int v) { return 2 * v; }\n#endif\n";
const PRE: &str = "#define PRE_VALUE 17\n";
const A_C: &str = r#"#include "h.h"
#include <stdio.h>
#include <string.h>

static int table[16];

int compute(int n) {
    int acc = 0;
    for (int i = 0; i < n; i++) acc += SQ(i) + twice(X);
    return acc;
}

const char *where(void) { return __FILE__; }

int main(int argc, char **argv) {
    memset(table, 0, sizeof table);
#ifdef PRE_VALUE
    table[0] = PRE_VALUE;
#endif
    printf("%d %s %d\n", compute(argc), where(), table[0]);
    return argv[0][0] == 'x';
}
"#;
const B_CPP: &str = r#"#include "h.h"
#include <string>
#include <vector>
#include <map>

namespace {
struct Registry {
    std::map<std::string, int> entries;
    Registry() { entries["x"] = X; }
};
Registry registry;
}

template <typename T> T sum(const std::vector<T> &v) {
    T acc{};
    for (const auto &x : v) acc += x;
    return acc;
}

int use() {
    std::vector<int> v{1, 2, SQ(3)};
    return sum(v) + registry.entries.size() + twice(4);
}
"#;
const S_UPPER: &str = "#define VALUE 42\n\t.text\n\t.globl f\n\t.type f, @function\nf:\n\tmovl $VALUE, %eax\n\tret\n\t.section .note.GNU-stack,\"\",@progbits\n";
const S_LOWER: &str = "\t.text\n\t.globl g\n\t.type g, @function\ng:\n\tmovl $7, %eax\n\tret\n\t.section .note.GNU-stack,\"\",@progbits\n";

/// A fresh directory with the test sources.
fn fixture() -> Result<tempfile::TempDir, Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let p = dir.path();
    fs::create_dir_all(p.join("inc"))?;
    fs::create_dir_all(p.join("sub"))?;
    fs::create_dir_all(p.join("obj.x"))?;
    fs::write(p.join("inc/h.h"), HEADER)?;
    fs::write(p.join("inc/pre.h"), PRE)?;
    fs::write(p.join("a.c"), A_C)?;
    fs::write(p.join("b.cpp"), B_CPP)?;
    fs::write(p.join("s.S"), S_UPPER)?;
    fs::write(p.join("t.s"), S_LOWER)?;
    Ok(dir)
}

fn os(args: &[String]) -> Vec<OsString> {
    args.iter().map(OsString::from).collect()
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| s.to_string()).collect()
}

/// Runs a compiler in `dir`; returns its stdout; panics with its stderr on failure.
fn run(dir: &Path, program: &str, args: &[String]) -> Result<Vec<u8>, Box<dyn std::error::Error>> {
    let out = Command::new(program).args(args).current_dir(dir).output()?;
    if !out.status.success() {
        return Err(format!(
            "`{program} {}` failed in {}:\n{}",
            args.join(" "),
            dir.display(),
            String::from_utf8_lossy(&out.stderr)
        )
        .into());
    }
    Ok(out.stdout)
}

fn plan_of(cc: Cc, driver: DriverKind, args: &[String]) -> Result<CompilePlan, String> {
    match classify(cc.family, driver, &os(args)) {
        Classification::Distributable(plan) => Ok(plan),
        other => Err(format!("{} {args:?} is not distributable: {other:?}", cc.c)),
    }
}

/// Every file under `dir`, relative, sorted.
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let path = e.path();
            if path.is_dir() {
                stack.push(path);
            } else if let Ok(rel) = path.strip_prefix(dir) {
                out.push(rel.to_path_buf());
            }
        }
    }
    out.sort();
    out
}

const DEP_FLAGS: &[&[&str]] = &[
    &["-MD"],
    &["-MMD"],
    &["-MD", "-MF", "x.d"],
    &["-MMD", "-MFsub/joined.d"],
    &["-MD", "-MT", "t"],
    &["-MD", "-MQ", "q$x"],
    &["-MMD", "-MP"],
    &["-MD", "-MP", "-MT", "first", "-MQ", "second"],
    &["-Wp,-MD,f.d"],
    &["-Wp,-MMD,sub/f.d"],
    &["-Wp,-MMD,f.d", "-MP"],
];

const OUTPUTS: &[Option<&str>] = &[None, Some("a.o"), Some("sub/o.o"), Some("obj.x/named")];

/// Runs the original command and the plan's preprocess step for one command
/// line and compares the dependency files byte for byte.
fn check_deps(cc: Cc, args: &[String]) -> TestResult {
    let plan = plan_of(cc, DriverKind::C, args)?;
    let dep = plan
        .dependency_file()
        .ok_or_else(|| format!("{args:?}: the plan has no dependency file"))?
        .to_path_buf();

    let original = fixture()?;
    let before = files(original.path());
    run(original.path(), cc.c, args)?;
    let expected = fs::read(original.path().join(&dep)).map_err(|e| {
        format!(
            "{} {args:?}: no dependency file at {} ({e}); files: {:?}",
            cc.c,
            dep.display(),
            files(original.path())
        )
    })?;

    let local = fixture()?;
    let pp = plan.preprocess_args().ok_or("no preprocess step")?;
    let stdout = run(local.path(), cc.c, &pp)?;
    assert!(!stdout.is_empty(), "preprocessed output on stdout");
    let got = fs::read(local.path().join(&dep))
        .map_err(|e| format!("{} {pp:?}: no {} ({e})", cc.c, dep.display()))?;
    assert_eq!(
        String::from_utf8_lossy(&got),
        String::from_utf8_lossy(&expected),
        "{}: dependency file of {args:?} differs from the one of {pp:?}",
        cc.c
    );
    // The preprocess step writes the .d file and nothing else.
    let mut written: Vec<PathBuf> = files(local.path())
        .into_iter()
        .filter(|f| !before.contains(f))
        .collect();
    written.sort();
    assert_eq!(
        written,
        vec![dep.clone()],
        "{}: {pp:?} wrote other files",
        cc.c
    );
    Ok(())
}

fn dependency_files_match(cc: Cc) -> TestResult {
    for flags in DEP_FLAGS {
        for out in OUTPUTS {
            for mode in ["-c", "-S"] {
                let mut args = strings(&[mode, "a.c", "-Iinc", "-O1"]);
                args.extend(strings(flags));
                if let Some(o) = out {
                    let o = if mode == "-S" {
                        o.replace(".o", ".s")
                    } else {
                        o.to_string()
                    };
                    args.extend(["-o".to_string(), o]);
                }
                check_deps(cc, &args)?;
            }
        }
    }
    Ok(())
}

#[test]
fn gcc_dependency_files_are_byte_identical() -> TestResult {
    if !available(GCC) {
        return Ok(());
    }
    dependency_files_match(GCC)
}

#[test]
fn clang_dependency_files_are_byte_identical() -> TestResult {
    if !available(CLANG) {
        return Ok(());
    }
    dependency_files_match(CLANG)
}

/// Compiles `args` as is, then through the plan (preprocess here, compile
/// the preprocessed input in another directory under another name), and
/// compares the outputs byte for byte.
fn check_object(cc: Cc, driver: DriverKind, src_dir: &Path, args: &[String]) -> TestResult {
    let program = cc.program(driver);
    let plan = plan_of(cc, driver, args)?;
    let remote = plan.remote_args();
    validate_remote_args(&remote)?;
    assert!(!plan.debug_info(), "these checks are for builds without -g");

    let object = src_dir.join(plan.object_path());
    let _ = fs::remove_file(&object);
    run(src_dir, program, args)?;
    let expected = fs::read(&object)?;
    fs::remove_file(&object)?;

    let input = match plan.preprocess_args() {
        Some(pp) => run(src_dir, program, &pp)?,
        None => fs::read(src_dir.join(plan.source()))?,
    };
    let worker = tempfile::tempdir()?;
    let lang = plan.remote_language();
    let input_name = format!("input.{}", lang.extension());
    fs::write(worker.path().join(&input_name), input)?;
    let mut remote_cmd = strings(&["-x", lang.as_x_arg(), "-c", &input_name]);
    remote_cmd.extend(remote.iter().cloned());
    remote_cmd.extend(strings(&["-o", "out.o"]));
    run(worker.path(), program, &remote_cmd)?;
    let got = fs::read(worker.path().join("out.o"))?;
    assert!(
        got == expected,
        "{program}: output of {args:?} differs when compiled as `{program} {}`",
        remote_cmd.join(" ")
    );
    Ok(())
}

const C_FLAGS: &[&[&str]] = &[
    &["-O2"],
    &["-O0", "-Wall", "-Wextra"],
    &["-O2", "-fPIC", "-DNDEBUG", "-std=c11", "-pedantic"],
    &[
        "-Os",
        "-ffunction-sections",
        "-fdata-sections",
        "-fno-common",
        "-include",
        "inc/pre.h",
    ],
    &[
        "-O3",
        "-march=x86-64-v2",
        "-fstack-protector-strong",
        "-D_FORTIFY_SOURCE=2",
    ],
    &[
        "-O2",
        "-fno-omit-frame-pointer",
        "-MD",
        "-MP",
        "-fvisibility=hidden",
        "-w",
    ],
    &[
        "-O1",
        "-fdebug-prefix-map=/x=/y",
        "-fdiagnostics-color=always",
        "-Wl,-z,now",
        "-lm",
    ],
    &[
        "-O2",
        "-x",
        "c",
        "-fno-strict-aliasing",
        "-fwrapv",
        "-pthread",
    ],
];

const CXX_FLAGS: &[&[&str]] = &[
    &["-O2", "-std=c++17"],
    &["-O1", "-fno-rtti", "-Wall", "-Wno-unused"],
    &[
        "-O2",
        "-fPIC",
        "-fvisibility=hidden",
        "-fvisibility-inlines-hidden",
        "-DNDEBUG",
    ],
    &["-O0", "-std=gnu++20", "-include", "inc/pre.h"],
];

const ASM_FLAGS: &[&[&str]] = &[&[], &["-Wa,--noexecstack"], &["-DVALUE2=1", "-O2"]];

fn objects_match(cc: Cc) -> TestResult {
    let dir = fixture()?;
    for (driver, source, sets) in [
        (DriverKind::C, "a.c", C_FLAGS),
        (DriverKind::Cxx, "b.cpp", CXX_FLAGS),
        (DriverKind::C, "s.S", ASM_FLAGS),
        (DriverKind::C, "t.s", ASM_FLAGS),
    ] {
        for flags in sets {
            for mode in ["-c", "-S"] {
                let mut args = strings(&[mode, "-Iinc"]);
                args.extend(strings(flags));
                args.push(source.to_string());
                if mode == "-c" {
                    args.extend(strings(&["-o", "sub/out.o"]));
                }
                if mode == "-S" && source.ends_with(['s', 'S']) {
                    continue;
                }
                check_object(cc, driver, dir.path(), &args)?;
            }
        }
    }
    Ok(())
}

#[test]
fn gcc_remote_objects_are_byte_identical() -> TestResult {
    if !available(GCC) {
        return Ok(());
    }
    objects_match(GCC)
}

#[test]
fn clang_remote_objects_are_byte_identical() -> TestResult {
    if !available(CLANG) {
        return Ok(());
    }
    objects_match(CLANG)
}

/// The C files of a real project: `HG_TEST_REAL_C_DIR`, else zstd's sources
/// vendored by the zstd-sys crate in the cargo registry, if present.
fn real_c_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("HG_TEST_REAL_C_DIR") {
        return Some(PathBuf::from(dir));
    }
    let home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))?;
    for index in fs::read_dir(home.join("registry/src")).ok()?.flatten() {
        for krate in fs::read_dir(index.path()).ok()?.flatten() {
            let name = krate.file_name();
            if name.to_string_lossy().starts_with("zstd-sys-") {
                let lib = krate.path().join("zstd/lib");
                if lib.is_dir() {
                    return Some(lib);
                }
            }
        }
    }
    None
}

#[test]
fn real_project_sources_compile_identically() -> TestResult {
    let Some(dir) = real_c_dir() else {
        if std::env::var("HG_TEST_REQUIRE_ALL").as_deref() == Ok("1") {
            return Err("no real C sources: set HG_TEST_REAL_C_DIR".into());
        }
        eprintln!("skipping: no real C sources (set HG_TEST_REAL_C_DIR)");
        return Ok(());
    };
    // Copy a few sources with their directory so the originals stay untouched.
    let work = tempfile::tempdir()?;
    let mut sources = Vec::new();
    for sub in ["common", "compress", "decompress"] {
        let Ok(entries) = fs::read_dir(dir.join(sub)) else {
            continue;
        };
        fs::create_dir_all(work.path().join(sub))?;
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.ends_with(".c") || name.ends_with(".h") || name.ends_with(".S") {
                fs::copy(e.path(), work.path().join(sub).join(&name))?;
            }
            if name.ends_with(".c") && sources.len() < 8 {
                sources.push(format!("{sub}/{name}"));
            }
        }
    }
    if let Ok(entries) = fs::read_dir(&dir) {
        for e in entries.flatten() {
            let name = e.file_name();
            if name.to_string_lossy().ends_with(".h") {
                fs::copy(e.path(), work.path().join(&name))?;
            }
        }
    }
    if sources.is_empty() {
        return Err(format!("no .c files under {}", dir.display()).into());
    }
    for cc in [GCC, CLANG] {
        if !available(cc) {
            continue;
        }
        for src in &sources {
            let args = strings(&[
                "-c",
                "-O2",
                "-fPIC",
                "-I.",
                "-Icommon",
                "-DXXH_NAMESPACE=ZSTD_",
                "-MMD",
                "-MP",
                src,
                "-o",
                "build/x.o",
            ]);
            fs::create_dir_all(work.path().join("build"))?;
            check_object(cc, DriverKind::C, work.path(), &args)?;
        }
    }
    Ok(())
}
