//! Compiles from source (debug info) through the native executor with real
//! gcc and clang: the object and split DWARF file are byte-identical to a
//! local compile of the same tree, also when the client's paths do not
//! exist on the worker; files the worker has in another version, headers it
//! lacks, paths that climb out and forbidden options are refused as the
//! task's problem (the client then compiles locally).
#![allow(clippy::unwrap_used)] // test helpers

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use hybridgrid_core::GridError;
use hybridgrid_core::config::IsolationMode;
use hybridgrid_core::payload::Payload;
use hybridgrid_core::task::{
    CompileOutput, CompileTask, Language, OutputKind, SourceFile, SourceMode,
};
use hybridgrid_core::worker::CompilerInfo;
use hybridgrid_exec::detect;
use hybridgrid_exec::input_store::InputStore;
use hybridgrid_exec::native::{NativeExecutor, NativeOptions};

const HEADER: &str = "#define SQ(x) ((x) * (x))\n#define TWICE(x) ((x) + (x))\n\
static inline int f(int a) { return SQ(a) + TWICE(a); }\n";
const SOURCE: &str = "#include <stdio.h>\n#include <assert.h>\n#include \"h.h\"\n\
int main(void) { int v = SQ(3); assert(v == 9); printf(\"%d %s\\n\", f(v), __FILE__); return 0; }\n";

async fn compiler(name: &str) -> Option<CompilerInfo> {
    match detect::find_and_identify(name, &detect::DetectOptions::default().path_dirs).await {
        Ok(c) => Some(c),
        Err(e) => {
            if std::env::var("HG_TEST_REQUIRE_ALL").as_deref() == Ok("1") {
                panic!("required compiler {name} missing: {e}");
            }
            eprintln!("skipping {name}: {e}");
            None
        }
    }
}

/// A project: `<dir>/proj/{src/a.c, include/h.h}`.
fn project(dir: &Path, ext: &str) -> PathBuf {
    let p = dir.join("proj");
    std::fs::create_dir_all(p.join("src")).unwrap();
    std::fs::create_dir_all(p.join("include")).unwrap();
    std::fs::create_dir_all(p.join("out/sub")).unwrap();
    std::fs::create_dir_all(p.join("empty")).unwrap();
    std::fs::write(p.join("include/h.h"), HEADER).unwrap();
    std::fs::write(p.join(format!("src/a.{ext}")), SOURCE).unwrap();
    p
}

/// Runs `cc args` in `cwd`; panics on failure.
fn run(cc: &CompilerInfo, cwd: &Path, args: &[String]) {
    let out = Command::new(&cc.path)
        .args(args)
        .current_dir(cwd)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{} {args:?}: {}",
        cc.path,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The files `cc -E` reads for `args` in `cwd`, as absolute paths.
fn read_files(cc: &CompilerInfo, cwd: &Path, args: &[String]) -> Vec<SourceFile> {
    let mut pp_args: Vec<String> = args.to_vec();
    pp_args.push("-E".into());
    let out = Command::new(&cc.path)
        .args(&pp_args)
        .current_dir(cwd)
        .output()
        .unwrap();
    assert!(out.status.success());
    hybridgrid_core::preprocessed::line_marker_files(&out.stdout)
        .into_iter()
        .map(|n| cwd.join(n))
        .filter(|p| p.is_file())
        .map(|p| SourceFile::with_data(p.display().to_string(), std::fs::read(&p).unwrap()))
        .collect()
}

#[derive(Clone)]
struct Case {
    /// Arguments without the source, -c and -o.
    args: Vec<String>,
    source: String,
    outputs: Vec<String>,
    split: bool,
}

fn task(cc: &CompilerInfo, cwd: &Path, case: &Case, files: Vec<SourceFile>) -> CompileTask {
    let lang = if cc.identity.driver == hybridgrid_core::task::DriverKind::Cxx {
        Language::Cxx
    } else {
        Language::C
    };
    let src = if case.source.starts_with('/') {
        PathBuf::from(&case.source)
    } else {
        cwd.join(&case.source)
    };
    let mut t = CompileTask::new(
        cc.identity.clone(),
        lang,
        case.args.clone(),
        case.source.clone(),
        Payload::compress(std::fs::read(src).unwrap()),
    );
    t.cwd = cwd.display().to_string();
    if case.split {
        t.extra_outputs = vec![OutputKind::SplitDwarf];
    }
    t.source_mode = Some(SourceMode {
        files,
        output_paths: case.outputs.clone(),
    });
    t
}

fn executor(cc: &CompilerInfo, work_root: &Path) -> NativeExecutor {
    NativeExecutor::new(
        vec![cc.clone()],
        NativeOptions::default()
            .with_work_root(work_root)
            .with_isolation(IsolationMode::Auto)
            .with_timeout(Duration::from_secs(60)),
    )
}

fn output(out: &CompileOutput, kind: OutputKind) -> Vec<u8> {
    out.output(kind).unwrap().data.decode().unwrap().to_vec()
}

/// Compiles `case` locally in a fresh project, builds the task, moves the
/// project away (the worker then has none of its paths) and compiles the
/// task; the outputs must equal the local ones.
async fn identical(cc: &CompilerInfo, case_of: impl Fn(&Path) -> Case, ext: &str) {
    identical_with(cc, case_of, ext, false).await
}

/// [`identical`], with the system headers (those under `/usr/`, which this
/// machine as the worker has) sent by digest only when `by_digest`.
async fn identical_with(
    cc: &CompilerInfo,
    case_of: impl Fn(&Path) -> Case,
    ext: &str,
    by_digest: bool,
) {
    let tmp = tempfile::tempdir().unwrap();
    let proj = project(tmp.path(), ext);
    let case = case_of(&proj);
    let mut local_args = case.args.clone();
    local_args.extend(["-c".into(), case.source.clone(), "-o".into()]);
    local_args.push(case.outputs[0].clone());
    run(cc, &proj, &local_args);
    let obj = std::fs::read(proj.join("out/a.o")).unwrap();
    let dwo = case
        .split
        .then(|| std::fs::read(proj.join("out/a.dwo")).unwrap());
    let mut pp = case.args.clone();
    pp.push(case.source.clone());
    let mut files = read_files(cc, &proj, &pp);
    assert!(
        files.iter().any(|f| f.path.ends_with("include/h.h")),
        "the header travels"
    );
    if by_digest {
        let mut n = 0;
        for f in files.iter_mut().filter(|f| f.path.starts_with("/usr/")) {
            *f = SourceFile::by_digest(f.path.clone(), f.digest);
            n += 1;
        }
        assert!(n > 0, "no system header to send by digest");
    }
    let t = task(cc, &proj, &case, files);
    std::fs::rename(&proj, tmp.path().join("moved")).unwrap();

    let work = tempfile::tempdir().unwrap();
    let out = executor(cc, work.path()).run(t).await.unwrap();
    assert_eq!(out.exit_code, 0, "{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        output(&out, OutputKind::Object) == obj,
        "{} {:?}: the object differs from the local one",
        cc.path,
        case.args
    );
    if let Some(dwo) = dwo {
        assert!(
            output(&out, OutputKind::SplitDwarf) == dwo,
            "the .dwo differs"
        );
    }
    assert_eq!(
        std::fs::read_dir(work.path()).unwrap().count(),
        0,
        "task directory removed"
    );
}

/// `src/a.c` compiled to `out/a.o` with `args`.
fn a_c(args: &[&str]) -> Case {
    Case {
        args: strings(args),
        source: "src/a.c".into(),
        outputs: strings(&["out/a.o"]),
        split: false,
    }
}

fn strings(a: &[&str]) -> Vec<String> {
    a.iter().map(|s| s.to_string()).collect()
}

#[tokio::test]
async fn debug_objects_equal_local_ones() {
    for (name, ext) in [
        ("gcc", "c"),
        ("clang", "c"),
        ("g++", "cc"),
        ("clang++", "cc"),
    ] {
        let Some(cc) = compiler(name).await else {
            continue;
        };
        // Relative paths, macros on the lines, -O1 -g; then with the
        // system headers sent by digest only.
        for by_digest in [false, true] {
            identical_with(
                &cc,
                |_| Case {
                    args: strings(&["-g", "-O1", "-Iinclude", "-DX=1"]),
                    source: format!("src/a.{ext}"),
                    outputs: strings(&["out/a.o"]),
                    split: false,
                },
                ext,
                by_digest,
            )
            .await;
        }
        // Absolute source and include directory (as CMake writes them),
        // with -g3 (macros recorded) or split DWARF (the .dwo's name is
        // recorded in the object).
        for (g, split) in [("-g3", false), ("-g", true)] {
            identical(
                &cc,
                |p| Case {
                    args: vec![
                        g.into(),
                        if split { "-gsplit-dwarf" } else { "-O1" }.into(),
                        format!("-I{}", p.join("include").display()),
                    ],
                    source: p.join(format!("src/a.{ext}")).display().to_string(),
                    outputs: if split {
                        strings(&["out/a.o", "out/a.dwo"])
                    } else {
                        strings(&["out/a.o"])
                    },
                    split,
                },
                ext,
            )
            .await;
        }
        // The build's own path mapping (as Debian package builds have).
        identical(
            &cc,
            |p| Case {
                args: vec![
                    "-g".into(),
                    format!("-ffile-prefix-map={}=.", p.display()),
                    format!(
                        "-fdebug-prefix-map={}=/usr/src/x",
                        p.join("include").display()
                    ),
                    format!("-I{}", p.join("include").display()),
                ],
                source: p.join(format!("src/a.{ext}")).display().to_string(),
                outputs: strings(&["out/a.o"]),
                split: false,
            },
            ext,
        )
        .await;
        // `..` through directories nothing was read from.
        identical(
            &cc,
            |_| Case {
                args: strings(&["-g", "-Iempty/../include"]),
                source: format!("src/a.{ext}"),
                outputs: strings(&["out/sub/../a.o"]),
                split: false,
            },
            ext,
        )
        .await;
        // An absolute output path.
        identical(
            &cc,
            |p| Case {
                args: strings(&["-g", "-O2", "-Iinclude"]),
                source: format!("src/a.{ext}"),
                outputs: vec![p.join("out/a.o").display().to_string()],
                split: false,
            },
            ext,
        )
        .await;
    }
}

async fn refused(t: CompileTask, cc: &CompilerInfo, needle: &str) {
    let work = tempfile::tempdir().unwrap();
    match executor(cc, work.path()).run(t).await {
        Err(GridError::InvalidTask(m)) => assert!(m.contains(needle), "{m}"),
        other => panic!("expected a refusal naming {needle:?}, got {other:?}"),
    }
    assert_eq!(std::fs::read_dir(work.path()).unwrap().count(), 0);
}

#[tokio::test]
async fn a_worker_copy_that_differs_is_refused() {
    let Some(cc) = compiler("gcc").await else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let proj = project(tmp.path(), "c");
    let case = a_c(&["-g", "-Iinclude"]);
    let files = read_files(&cc, &proj, &strings(&["-Iinclude", "src/a.c"]));
    let t = task(&cc, &proj, &case, files);
    // The worker (this machine) now has another version at that path: its
    // copy could be read instead of the client's.
    std::fs::write(proj.join("include/h.h"), "#define SQ(x) 0\n").unwrap();
    refused(t, &cc, "differs between the client and this worker").await;
}

#[tokio::test]
async fn a_header_the_worker_lacks_is_not_a_compile_error() {
    let Some(cc) = compiler("gcc").await else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let proj = project(tmp.path(), "c");
    // Included by its absolute path: the compiler looks there, not under
    // the task root.
    let abs = tmp.path().join("elsewhere/abs.h");
    std::fs::create_dir_all(abs.parent().unwrap()).unwrap();
    std::fs::write(&abs, "int from_abs;\n").unwrap();
    std::fs::write(
        proj.join("src/a.c"),
        format!(
            "#include \"{}\"\nint main(void) {{ return 0; }}\n",
            abs.display()
        ),
    )
    .unwrap();
    let case = a_c(&["-g"]);
    let files = read_files(&cc, &proj, &strings(&["src/a.c"]));
    let t = task(&cc, &proj, &case, files);
    std::fs::remove_file(&abs).unwrap();
    refused(t, &cc, "missing on this worker").await;
}

#[tokio::test]
async fn hostile_source_mode_tasks_are_refused() {
    let Some(cc) = compiler("gcc").await else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let proj = project(tmp.path(), "c");
    let base = Case {
        args: strings(&["-g"]),
        source: "src/a.c".into(),
        outputs: strings(&["out/a.o"]),
        split: false,
    };
    // A file placed above the task root.
    let mut t = task(&cc, &proj, &base, Vec::new());
    t.source_mode
        .as_mut()
        .unwrap()
        .files
        .push(SourceFile::with_data("/a/../../etc/evil.h", &b"x"[..]));
    refused(t, &cc, "not plain").await;
    // Content that does not match its digest.
    let mut t = task(&cc, &proj, &base, Vec::new());
    let mut f = SourceFile::with_data(proj.join("include/h.h").display().to_string(), &b"x"[..]);
    f.digest = SourceFile::digest_of(b"y");
    t.source_mode.as_mut().unwrap().files.push(f);
    refused(t, &cc, "does not match its digest").await;
    // A file sent by digest (this worker's own) that is also an output: the
    // compiler would write through the link.
    let mut t = task(&cc, &proj, &base, Vec::new());
    let sys = "/usr/include/stdio.h";
    let digest = SourceFile::digest_of(&std::fs::read(sys).unwrap());
    let m = t.source_mode.as_mut().unwrap();
    m.files.push(SourceFile::by_digest(sys, digest));
    m.output_paths = strings(&[sys]);
    refused(t, &cc, "also an output").await;
    // An output above the task root.
    let mut t = task(&cc, &proj, &base, Vec::new());
    t.source_mode.as_mut().unwrap().output_paths = strings(&["../../../../../../../../x.o"]);
    refused(t, &cc, "climbs above the root").await;
    // Options that write or read other files, or map paths themselves.
    for bad in ["-MD", "--sysroot=/x", "-fplugin=/x.so", "@args.rsp"] {
        let case = Case {
            args: strings(&["-g", bad]),
            ..base.clone()
        };
        let t = task(&cc, &proj, &case, Vec::new());
        refused(t, &cc, "refused compiler argument").await;
    }
    // A relative working directory.
    let mut t = task(&cc, &proj, &base, Vec::new());
    t.cwd = "relative/dir".into();
    refused(t, &cc, "absolute working directory").await;
}

#[tokio::test]
async fn files_sent_by_digest_that_the_worker_lacks_are_named() {
    let Some(cc) = compiler("gcc").await else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let proj = project(tmp.path(), "c");
    let case = a_c(&["-g", "-Iinclude"]);
    let mut files = read_files(&cc, &proj, &strings(&["-Iinclude", "src/a.c"]));
    let header = proj.join("include/h.h").display().to_string();
    let lacking = "/nonexistent/hg-test/lib.h".to_string();
    for f in files.iter_mut().filter(|f| f.path == header) {
        *f = SourceFile::by_digest(f.path.clone(), f.digest);
    }
    files.push(SourceFile::by_digest(
        lacking.clone(),
        SourceFile::digest_of(b"int l;"),
    ));
    let t = task(&cc, &proj, &case, files);
    // The worker (this machine) has the project's header, so only the
    // file it has nowhere is named; nothing is left behind.
    let work = tempfile::tempdir().unwrap();
    match executor(&cc, work.path()).run(t).await {
        Err(GridError::MissingInputs(paths)) => assert_eq!(paths, vec![lacking]),
        other => panic!("expected the missing file to be named, got {other:?}"),
    }
    assert_eq!(std::fs::read_dir(work.path()).unwrap().count(), 0);
}

#[tokio::test]
async fn project_headers_are_kept_by_digest_for_the_next_compile() {
    let Some(cc) = compiler("gcc").await else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let proj = project(tmp.path(), "c");
    let case = a_c(&["-g", "-O1", "-Iinclude"]);
    let mut local_args = case.args.clone();
    local_args.extend(strings(&["-c", "src/a.c", "-o", "out/a.o"]));
    run(&cc, &proj, &local_args);
    let obj = std::fs::read(proj.join("out/a.o")).unwrap();
    let files = read_files(&cc, &proj, &strings(&["-Iinclude", "src/a.c"]));
    let header = proj.join("include/h.h").display().to_string();
    let with_content = task(&cc, &proj, &case, files.clone());
    let mut by_digest = files;
    for f in by_digest.iter_mut().skip(1) {
        *f = SourceFile::by_digest(f.path.clone(), f.digest);
    }
    let by_digest = task(&cc, &proj, &case, by_digest);
    // The worker has none of the project's paths.
    std::fs::rename(&proj, tmp.path().join("moved")).unwrap();

    let work = tempfile::tempdir().unwrap();
    let store = Arc::new(InputStore::claim(work.path(), 1 << 20).unwrap());
    let exec = NativeExecutor::new(
        vec![cc.clone()],
        NativeOptions::default()
            .with_work_root(work.path())
            .with_timeout(Duration::from_secs(60))
            .with_input_store(store.clone()),
    );
    // Before any compile sent it, the header is named as missing.
    match exec.run(by_digest.clone()).await {
        Err(GridError::MissingInputs(paths)) => assert_eq!(paths, vec![header.clone()]),
        other => panic!("expected the header to be named, got {other:?}"),
    }
    // Sent with its content once, it is kept; the same compile by digest
    // then gives the same object as the local one.
    for t in [with_content, by_digest.clone()] {
        let out = exec.run(t).await.unwrap();
        assert_eq!(out.exit_code, 0, "{}", String::from_utf8_lossy(&out.stderr));
        assert!(
            output(&out, OutputKind::Object) == obj,
            "the object differs"
        );
    }
    assert_eq!(
        store.usage().0,
        2,
        "the source and the project's header, once"
    );
    // A stored file changed behind the store's back is not served.
    let stored: Vec<PathBuf> = walk_files(store.dir())
        .into_iter()
        .filter(|p| std::fs::read(p).unwrap() == HEADER.as_bytes())
        .collect();
    assert_eq!(stored.len(), 1);
    std::fs::set_permissions(&stored[0], std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::write(&stored[0], "#define SQ(x) 0\n").unwrap();
    match exec.run(by_digest).await {
        Err(GridError::MissingInputs(paths)) => assert_eq!(paths, vec![header]),
        other => panic!("expected the changed header to be named, got {other:?}"),
    }
    let tasks = std::fs::read_dir(work.path())
        .unwrap()
        .filter(|e| {
            !e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with("hg-inputs-")
        })
        .count();
    assert_eq!(tasks, 0, "task directories removed");
}

/// The regular files under `dir` (not its lock file).
fn walk_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk_files(&p));
        } else if !p.ends_with(".lock") {
            out.push(p);
        }
    }
    out
}
