//! Unit tests of the classification and the plans.

use std::ffi::OsString;
use std::path::Path;

use hybridgrid_core::task::{CompilerFamily, DriverKind, Language, OutputKind};

use super::*;

fn argv(args: &[&str]) -> Vec<OsString> {
    args.iter().map(OsString::from).collect()
}

fn gcc(args: &[&str]) -> Classification {
    classify(CompilerFamily::Gcc, DriverKind::C, &argv(args))
}

#[track_caller]
fn plan(args: &[&str]) -> CompilePlan {
    match gcc(args) {
        Classification::Distributable(p) => p,
        other => panic!("{args:?} should be distributable, got {other:?}"),
    }
}

#[track_caller]
fn local(args: &[&str]) -> LocalReason {
    match gcc(args) {
        Classification::Local(r) => r,
        other => panic!("{args:?} should be local, got {other:?}"),
    }
}

fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

#[test]
fn simple_compile() {
    let p = plan(&["-c", "foo.c"]);
    assert_eq!(p.source(), Path::new("foo.c"));
    assert_eq!(p.source_language(), SourceLanguage::C);
    assert_eq!(p.remote_language(), Language::PreprocessedC);
    assert_eq!(p.object_path(), Path::new("foo.o"));
    assert_eq!(p.output_mode(), OutputMode::Object);
    assert_eq!(p.preprocess_args(), Some(s(&["foo.c", "-E"])));
    assert_eq!(p.remote_args(), Vec::<String>::new());
    assert_eq!(p.dependency_file(), None);
    assert!(!p.debug_info());
    assert_eq!(p.diagnostics_color(), DiagnosticsColor::Unspecified);
    assert_eq!(p.extra_output_kinds(), vec![]);
}

#[test]
fn default_output_is_the_basename_in_the_cwd() {
    assert_eq!(
        plan(&["-c", "src/dir/a.b.cpp"]).object_path(),
        Path::new("a.b.o")
    );
    assert_eq!(plan(&["-S", "src/x.c"]).object_path(), Path::new("x.s"));
    assert_eq!(
        plan(&["-c", "x.c", "-oout/y.o"]).object_path(),
        Path::new("out/y.o")
    );
    assert_eq!(plan(&["-S", "x.c"]).output_mode(), OutputMode::Assembly);
    assert_eq!(plan(&["-S", "x.c"]).remote_args(), s(&["-S"]));
}

#[test]
fn preprocessor_and_compiler_args_are_split() {
    let p = plan(&[
        "-O2",
        "-I",
        "inc",
        "-Iinc2",
        "-isystem",
        "sys",
        "-iquote",
        "q",
        "-idirafter",
        "a",
        "-include",
        "pre.h",
        "-imacros",
        "m.h",
        "-DX=1",
        "-D",
        "Y",
        "-UZ",
        "-Wall",
        "-fPIC",
        "-std=c11",
        "-march=native",
        "-c",
        "-x",
        "c",
        "foo.inc",
        "-o",
        "foo.o",
        "-g",
    ]);
    assert_eq!(p.source_language(), SourceLanguage::C);
    assert_eq!(
        p.remote_args(),
        s(&["-O2", "-Wall", "-fPIC", "-std=c11", "-march=native", "-g"])
    );
    assert_eq!(
        p.preprocess_args(),
        Some(s(&[
            "-O2",
            "-I",
            "inc",
            "-Iinc2",
            "-isystem",
            "sys",
            "-iquote",
            "q",
            "-idirafter",
            "a",
            "-include",
            "pre.h",
            "-imacros",
            "m.h",
            "-DX=1",
            "-D",
            "Y",
            "-UZ",
            "-Wall",
            "-fPIC",
            "-std=c11",
            "-march=native",
            "-x",
            "c",
            "foo.inc",
            "-g",
            "-E",
        ]))
    );
    assert!(p.debug_info());
}

#[test]
fn x_applies_to_following_inputs_only() {
    assert_eq!(
        plan(&["-c", "-x", "c++", "a.c"]).source_language(),
        SourceLanguage::Cxx
    );
    assert_eq!(
        plan(&["-c", "-xc", "a.txt"]).source_language(),
        SourceLanguage::C
    );
    assert_eq!(
        local(&["-c", "a.txt", "-x", "c"]),
        LocalReason::NonSourceInput("a.txt".into())
    );
    assert_eq!(
        plan(&["-x", "c++", "-x", "none", "-c", "a.c"]).source_language(),
        SourceLanguage::C
    );
    assert!(matches!(
        local(&["-c", "-x", "objective-c", "a.c"]),
        LocalReason::UnsupportedLanguage(_)
    ));
}

#[test]
fn languages_from_extensions() {
    let lang = |f: &str| plan(&["-c", f]).source_language();
    assert_eq!(lang("a.c"), SourceLanguage::C);
    for f in ["a.cc", "a.cpp", "a.cxx", "a.C", "a.c++", "a.cp", "a.CPP"] {
        assert_eq!(lang(f), SourceLanguage::Cxx, "{f}");
    }
    assert_eq!(lang("a.i"), SourceLanguage::PreprocessedC);
    assert_eq!(lang("a.ii"), SourceLanguage::PreprocessedCxx);
    assert_eq!(lang("a.s"), SourceLanguage::Assembler);
    assert_eq!(lang("a.S"), SourceLanguage::AssemblerWithCpp);
    assert!(matches!(
        local(&["-c", "a.m"]),
        LocalReason::UnsupportedLanguage(_)
    ));
    assert!(matches!(
        local(&["-c", "a.o"]),
        LocalReason::NonSourceInput(_)
    ));
    // The C++ driver compiles .c and .i as C++.
    let gxx = |f: &str| match classify(CompilerFamily::Gcc, DriverKind::Cxx, &argv(&["-c", f])) {
        Classification::Distributable(p) => p.source_language(),
        other => panic!("{other:?}"),
    };
    assert_eq!(gxx("a.c"), SourceLanguage::Cxx);
    assert_eq!(gxx("a.i"), SourceLanguage::PreprocessedCxx);
}

#[test]
fn preprocessed_and_assembler_inputs() {
    let p = plan(&["-c", "a.s", "-o", "a.o", "-Wa,--noexecstack"]);
    assert!(!p.needs_preprocessing());
    assert_eq!(p.preprocess_args(), None);
    assert_eq!(p.remote_language(), Language::Assembler);
    assert_eq!(p.remote_args(), s(&["-Wa,--noexecstack"]));
    let p = plan(&["-c", "a.S", "-DX"]);
    assert!(p.needs_preprocessing());
    assert_eq!(p.remote_language(), Language::Assembler);
    assert_eq!(p.preprocess_args(), Some(s(&["a.S", "-DX", "-E"])));
    assert_eq!(
        plan(&["-c", "a.ii"]).remote_language(),
        Language::PreprocessedCxx
    );
    assert_eq!(
        local(&["-c", "a.s", "-MD"]),
        LocalReason::DependenciesWithoutPreprocessing
    );
    assert!(matches!(
        local(&["-c", "a.s", "-Wa,-adhln=list.txt"]),
        LocalReason::UnsupportedOption(_)
    ));
}

#[test]
fn local_reasons() {
    assert_eq!(local(&["-c", "a.c", "b.c"]), LocalReason::MultipleInputs(2));
    assert_eq!(local(&["a.c", "-o", "a"]), LocalReason::Linking);
    assert_eq!(
        local(&["-E", "a.c"]),
        LocalReason::PreprocessOnly("-E".into())
    );
    assert_eq!(
        local(&["-M", "a.c"]),
        LocalReason::PreprocessOnly("-M".into())
    );
    assert_eq!(
        local(&["-MM", "-c", "a.c"]),
        LocalReason::PreprocessOnly("-MM".into())
    );
    assert!(matches!(
        local(&["-c", "a.c", "-save-temps"]),
        LocalReason::SaveTemps(_)
    ));
    assert!(matches!(
        local(&["-c", "a.h"]),
        LocalReason::PrecompiledHeader(_)
    ));
    assert!(matches!(
        local(&["-c", "-x", "c-header", "a"]),
        LocalReason::PrecompiledHeader(_)
    ));
    assert!(matches!(
        local(&["-c", "a.c", "--coverage"]),
        LocalReason::Coverage(_)
    ));
    assert!(matches!(
        local(&["-c", "a.c", "-fprofile-arcs"]),
        LocalReason::Profile(_)
    ));
    assert!(matches!(
        local(&["-c", "a.c", "-ftest-coverage"]),
        LocalReason::Coverage(_)
    ));
    assert!(matches!(
        local(&["-c", "a.c", "-fprofile-use"]),
        LocalReason::Profile(_)
    ));
    assert!(matches!(
        local(&["-c", "a.c", "-fprofile-generate=d"]),
        LocalReason::Profile(_)
    ));
    assert!(matches!(
        local(&["-c", "a.c", "-fplugin=p.so"]),
        LocalReason::LoadsCode(_)
    ));
    assert!(matches!(
        local(&["-c", "a.c", "-specs=x"]),
        LocalReason::LoadsCode(_)
    ));
    assert!(matches!(
        local(&["-c", "a.c", "-B", "dir"]),
        LocalReason::LoadsCode(_)
    ));
    assert!(matches!(
        local(&["-c", "a.c", "-wrapper", "w"]),
        LocalReason::LoadsCode(_)
    ));
    assert!(matches!(
        local(&["-c", "a.c", "-fdump-tree-all"]),
        LocalReason::WritesFile(_)
    ));
    assert!(matches!(
        local(&["-c", "a.c", "-aux-info", "x"]),
        LocalReason::WritesFile(_)
    ));
    assert_eq!(
        local(&["-c", "a.c", "-frobnicate"]),
        LocalReason::UnsupportedOption("-frobnicate".into())
    );
    // `-z` is a linker option: ignored with -c, not sent anywhere.
    assert_eq!(
        plan(&["-c", "a.c", "-zz-top"]).remote_args(),
        Vec::<String>::new()
    );
    assert!(matches!(
        local(&["-c", "a.c", "-dD"]),
        LocalReason::UnsupportedOption(_)
    ));
    assert_eq!(
        local(&["-c", "a.c", "-o"]),
        LocalReason::MissingArgument("-o".into())
    );
    assert_eq!(local(&["-c", "-"]), LocalReason::StdinInput);
    assert_eq!(local(&["-c", "a.c", "-o", "-"]), LocalReason::StdoutOutput);
    assert_eq!(local(&["-v", "-c", "a.c"]), LocalReason::Verbose);
    assert!(matches!(
        local(&["-c", "a.c", "-o", "x", "-o", "y"]),
        LocalReason::Conflicting(_)
    ));
    assert_eq!(
        local(&["-S", "-g", "-gsplit-dwarf", "a.c"]),
        LocalReason::SplitDwarfWithAssembly
    );
    assert!(matches!(
        local(&["-c", "a.c", "-mllvm", "-x"]),
        LocalReason::UnsupportedOption(_)
    ));
    assert!(matches!(
        local(&["-c", "a.c", "-Xclang", "-load"]),
        LocalReason::UnsupportedOption(_)
    ));
    assert!(matches!(
        local(&["-c", "a.c", "-fdirectives-only"]),
        LocalReason::UnsupportedOption(_)
    ));
    // Every reason reads as a sentence.
    assert_eq!(
        local(&["-c", "a.c", "-frobnicate"]).to_string(),
        "unsupported option -frobnicate"
    );
    assert_eq!(local(&["a.c"]).to_string(), "linking (no -c or -S)");
}

#[test]
fn not_compiles() {
    for args in [
        &["--version"][..],
        &["-v"],
        &["-dumpmachine"],
        &["-dumpfullversion"],
        &["-print-file-name=libc.so"],
        &["--help"],
        &["-###", "-c", "a.c"],
        &[],
        &["-c"],
        &["-O2", "-o", "x"],
    ] {
        assert_eq!(gcc(args), Classification::NotCompile, "{args:?}");
    }
}

#[test]
fn separate_arguments_are_consumed() {
    // The values look like inputs or options; they must not be taken as such.
    let p = plan(&[
        "-c",
        "-o",
        "x.o",
        "-MF",
        "dep.c",
        "-MD",
        "-MT",
        "t.c",
        "-include",
        "h.c",
        "--param",
        "ssp-buffer-size=4",
        "-Xlinker",
        "b.c",
        "-Xpreprocessor",
        "-DQ",
        "-imacros",
        "m.c",
        "-iprefix",
        "p.c",
        "-target",
        "x86_64-linux-gnu",
        "a.c",
    ]);
    assert_eq!(p.source(), Path::new("a.c"));
    assert_eq!(
        p.remote_args(),
        s(&[
            "--param",
            "ssp-buffer-size=4",
            "-target",
            "x86_64-linux-gnu"
        ])
    );
    let p = plan(&[
        "-c",
        "-arch",
        "x86_64",
        "a.c",
        "-Xassembler",
        "--noexecstack",
    ]);
    assert_eq!(
        p.remote_args(),
        s(&["-arch", "x86_64", "-Xassembler", "--noexecstack"])
    );
    assert!(matches!(
        local(&["-c", "a.c", "-aux-info", "b.c"]),
        LocalReason::WritesFile(_)
    ));
}

#[test]
fn dependency_rewriting() {
    let pp = |args: &[&str]| plan(args).preprocess_args().unwrap_or_default();
    assert_eq!(
        pp(&["-c", "a.c", "-MD"]),
        s(&["a.c", "-MD", "-MF", "a.d", "-E"])
    );
    assert_eq!(
        pp(&["-c", "a.c", "-MMD", "-o", "o/b.o"]),
        s(&["a.c", "-MMD", "-MF", "o/b.d", "-MQ", "o/b.o", "-E"])
    );
    assert_eq!(
        pp(&["-c", "a.c", "-MD", "-MF", "x.d", "-o", "b.o"]),
        s(&["a.c", "-MD", "-MF", "x.d", "-MQ", "b.o", "-E"])
    );
    assert_eq!(
        pp(&["-c", "a.c", "-MD", "-MT", "t", "-o", "b.o"]),
        s(&["a.c", "-MD", "-MT", "t", "-MF", "b.d", "-E"])
    );
    assert_eq!(
        pp(&["-c", "a.c", "-MD", "-o", "noext"]),
        s(&["a.c", "-MD", "-MF", "noext.d", "-MQ", "noext", "-E"])
    );
    assert_eq!(
        pp(&["-c", "a.c", "-Wp,-MD,dep.d", "-o", "b.o"]),
        s(&["a.c", "-Wp,-MD,dep.d", "-E"])
    );
    let clang = classify(
        CompilerFamily::Clang,
        DriverKind::C,
        &argv(&["-c", "a.c", "-Wp,-MMD,dep.d", "-o", "b.o"]),
    );
    let Classification::Distributable(p) = clang else {
        panic!("{clang:?}")
    };
    assert_eq!(
        p.preprocess_args(),
        Some(s(&["a.c", "-Wp,-MMD,dep.d", "-MQ", "b.o", "-E"]))
    );
    assert_eq!(p.dependency_file(), Some(Path::new("dep.d")));
    assert_eq!(
        plan(&["-c", "a.c", "-MD"]).dependency_file(),
        Some(Path::new("a.d"))
    );
    assert_eq!(plan(&["-c", "a.c"]).dependency_file(), None);
    assert!(matches!(
        local(&["-c", "a.c", "-MD", "-Wp,-MD,x.d"]),
        LocalReason::Conflicting(_)
    ));
    assert!(matches!(
        local(&["-c", "a.c", "-Wp,-M"]),
        LocalReason::UnsupportedOption(_)
    ));
}

#[test]
fn split_dwarf_outputs() {
    let p = plan(&["-c", "a.c", "-g", "-gsplit-dwarf", "-o", "o/a.obj"]);
    assert_eq!(
        p.outputs(),
        &[
            PlannedOutput {
                kind: OutputKind::Object,
                path: "o/a.obj".into()
            },
            PlannedOutput {
                kind: OutputKind::SplitDwarf,
                path: "o/a.dwo".into()
            },
        ]
    );
    assert_eq!(p.extra_output_kinds(), vec![OutputKind::SplitDwarf]);
    // gcc 12 writes a .dwo for -gsplit-dwarf even without -g; clang does not.
    assert_eq!(plan(&["-c", "a.c", "-gsplit-dwarf"]).outputs().len(), 2);
    let clang = |args: &[&str]| match classify(CompilerFamily::Clang, DriverKind::C, &argv(args)) {
        Classification::Distributable(p) => p.outputs().len(),
        other => panic!("{other:?}"),
    };
    assert_eq!(clang(&["-c", "a.c", "-gsplit-dwarf"]), 1);
    assert_eq!(clang(&["-c", "a.c", "-g", "-gsplit-dwarf"]), 2);
    assert_eq!(clang(&["-c", "a.c", "-g", "-gsplit-dwarf", "-g0"]), 1);
    assert_eq!(clang(&["-c", "a.c", "-g", "-gsplit-dwarf=single"]), 1);
    assert_eq!(
        plan(&["-c", "x/a.c", "-g", "-gsplit-dwarf"]).outputs()[1].path,
        Path::new("a.dwo")
    );
}

#[test]
fn debug_info_and_color() {
    assert!(plan(&["-c", "a.c", "-g"]).debug_info());
    assert!(plan(&["-c", "a.c", "-ggdb3"]).debug_info());
    assert!(plan(&["-c", "a.c", "-gdwarf-4"]).debug_info());
    assert!(!plan(&["-c", "a.c", "-g", "-g0"]).debug_info());
    assert!(!plan(&["-c", "a.c", "-gno-record-gcc-switches"]).debug_info());
    let color = |a: &[&str]| plan(a).diagnostics_color();
    assert_eq!(
        color(&["-c", "a.c", "-fdiagnostics-color"]),
        DiagnosticsColor::Always
    );
    assert_eq!(
        color(&["-c", "a.c", "-fdiagnostics-color=auto"]),
        DiagnosticsColor::Auto
    );
    assert_eq!(
        color(&[
            "-c",
            "a.c",
            "-fdiagnostics-color=always",
            "-fno-diagnostics-color"
        ]),
        DiagnosticsColor::Never
    );
    assert_eq!(
        color(&["-c", "a.c", "-fcolor-diagnostics"]),
        DiagnosticsColor::Always
    );
    assert_eq!(
        plan(&["-c", "a.c", "-fdiagnostics-color=always"]).remote_args(),
        s(&["-fdiagnostics-color=always"])
    );
}

#[test]
fn prefix_maps_and_linker_options() {
    let p = plan(&[
        "-c",
        "a.c",
        "-fdebug-prefix-map=/a=b",
        "-ffile-prefix-map=/c=d",
        "-fmacro-prefix-map=/e=f",
        "-Wl,-z,now",
        "-lm",
        "-L",
        "lib",
        "-static",
        "-pthread",
    ]);
    assert_eq!(
        p.remote_args(),
        s(&[
            "-fdebug-prefix-map=/a=b",
            "-ffile-prefix-map=/c=d",
            "-pthread"
        ])
    );
    assert_eq!(
        p.preprocess_args(),
        Some(s(&[
            "a.c",
            "-fdebug-prefix-map=/a=b",
            "-ffile-prefix-map=/c=d",
            "-fmacro-prefix-map=/e=f",
            "-pthread",
            "-E",
        ]))
    );
}

#[test]
fn response_files_are_expanded() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    std::fs::write(
        dir.path().join("args.rsp"),
        "-c 'my file.c' -o \"out dir/x.o\" -DX=\\\"y\\\"",
    )?;
    let got = classify_in(
        CompilerFamily::Gcc,
        DriverKind::C,
        &argv(&["-O1", "@args.rsp"]),
        dir.path(),
    );
    let Classification::Distributable(p) = got else {
        panic!("{got:?}")
    };
    assert_eq!(p.source(), Path::new("my file.c"));
    assert_eq!(p.object_path(), Path::new("out dir/x.o"));
    assert_eq!(
        p.preprocess_args(),
        Some(s(&["-O1", "my file.c", "-DX=\"y\"", "-E"]))
    );
    let missing = classify_in(
        CompilerFamily::Gcc,
        DriverKind::C,
        &argv(&["@nope"]),
        dir.path(),
    );
    assert!(matches!(
        missing,
        Classification::Local(LocalReason::ResponseFile(_))
    ));
    Ok(())
}

#[cfg(unix)]
#[test]
fn non_utf8_arguments_are_local() {
    use std::os::unix::ffi::OsStringExt;
    let args = vec![
        OsString::from("-c"),
        OsString::from_vec(vec![b'a', 0xff, b'.', b'c']),
    ];
    assert!(matches!(
        classify(CompilerFamily::Gcc, DriverKind::C, &args),
        Classification::Local(LocalReason::NotUtf8(_))
    ));
}

#[test]
fn remote_args_of_plans_pass_the_worker_check() {
    let p = plan(&[
        "-c",
        "a.c",
        "-O2",
        "-g",
        "-gsplit-dwarf",
        "-Wall",
        "-fno-common",
        "-fPIC",
        "-MD",
        "-Iinc",
        "-DX",
        "--param",
        "a=1",
        "-Wa,--noexecstack",
        "-fno-profile-arcs",
    ]);
    assert_eq!(validate_remote_args(&p.remote_args()), Ok(()));
}

#[test]
fn source_args_keep_the_preprocessor_options_but_not_dependencies() {
    let p = plan(&[
        "-g", "-O2", "-Iinc", "-I", "/abs/inc", "-DX=1", "-include", "cfg.h", "-MD", "-MF", "a.d",
        "-x", "c", "-c", "src/a.c", "-o", "out/a.o",
    ]);
    assert_eq!(
        p.source_args(),
        s(&[
            "-g", "-O2", "-Iinc", "-I", "/abs/inc", "-DX=1", "-include", "cfg.h"
        ])
    );
    assert_eq!(validate_source_args(&p.source_args()), Ok(()));
    // The preprocessed path keeps refusing them.
    assert!(validate_remote_args(&p.source_args()).is_err());
    for bad in [
        &["-MD"][..],
        &["--sysroot=/x"],
        &["-isysroot", "/x"],
        &["-Wp,-DX"],
        &["-iprefix", "/x"],
    ] {
        assert!(validate_source_args(&s(bad)).is_err(), "{bad:?}");
    }
}

#[test]
fn source_paths_are_mapped_in_both_spellings() {
    let args = s(&[
        "-g",
        "-I/a/inc",
        "-I",
        "/b/inc",
        "-Irel",
        "-isystem",
        "/sys",
        "-include",
        "/c/cfg.h",
        "-iquote/q",
        "-DPATH=/not/a/path",
    ]);
    let (mapped, dirs) = map_source_paths(&args, &|v| {
        if v.starts_with('/') {
            format!("/root{v}")
        } else {
            v.to_owned()
        }
    });
    assert_eq!(
        mapped,
        s(&[
            "-g",
            "-I/root/a/inc",
            "-I",
            "/root/b/inc",
            "-Irel",
            "-isystem",
            "/root/sys",
            "-include",
            "/root/c/cfg.h",
            "-iquote/root/q",
            "-DPATH=/not/a/path",
        ])
    );
    assert_eq!(
        dirs,
        s(&["/root/a/inc", "/root/b/inc", "rel", "/root/sys", "/root/q"])
    );
}

#[test]
fn configure_probes_compile_here() {
    let probe = |args: &[&str], cwd: &str| match classify_in(
        CompilerFamily::Gcc,
        DriverKind::C,
        &argv(args),
        Path::new(cwd),
    ) {
        Classification::Local(LocalReason::ConfigureProbe(tool)) => Some(tool),
        Classification::Distributable(_) => None,
        other => panic!("{args:?}: {other:?}"),
    };
    // autoconf: conftest.c, and C++'s conftest.cpp.
    assert_eq!(
        probe(&["-c", "-g", "-O2", "conftest.c"], "/b").as_deref(),
        Some("autoconf")
    );
    assert_eq!(
        probe(&["-c", "conftest.cpp", "-o", "conftest.o"], "/b").as_deref(),
        Some("autoconf")
    );
    assert_eq!(
        probe(&["-c", "conftest2.c"], "/b").as_deref(),
        Some("autoconf")
    );
    // Meson: an absolute path in a temporary directory under meson-private.
    let meson = "/p/build/meson-private/tmpeddy9h88";
    let src = format!("{meson}/testfile.c");
    let obj = format!("{meson}/output.obj");
    assert_eq!(
        probe(&[&src, "-o", &obj, "-c", "-O0"], meson).as_deref(),
        Some("Meson")
    );
    // CMake's try_compile projects, old and new, by relative or absolute path.
    assert_eq!(
        probe(
            &["-c", "src.c", "-o", "src.c.o"],
            "/b/CMakeFiles/CMakeScratch/TryCompile-abc"
        )
        .as_deref(),
        Some("CMake")
    );
    assert_eq!(
        probe(
            &["-c", "/b/CMakeFiles/CMakeTmp/CheckIncludeFile.c"],
            "/b/CMakeFiles/CMakeTmp"
        )
        .as_deref(),
        Some("CMake")
    );
    // A project's own files of the same names elsewhere still go to the grid.
    assert_eq!(probe(&["-c", "src/testfile.c"], "/p"), None);
    assert_eq!(
        probe(&["-c", "CMakeFiles/x.dir/conftest_helper.c"], "/p"),
        None
    );
    assert_eq!(probe(&["-c", "main.c"], "/p/CMakeFiles"), None);
}

#[test]
fn check_task_refuses_what_the_allow_list_refuses() {
    use hybridgrid_core::GridError;
    use hybridgrid_core::payload::Payload;
    use hybridgrid_core::task::{CompileTask, CompilerIdentity};
    let task = |args: &[&str]| {
        CompileTask::new(
            CompilerIdentity {
                family: CompilerFamily::Gcc,
                driver: DriverKind::C,
                version: "12.2.0".into(),
                target: "x86_64-linux-gnu".into(),
            },
            Language::PreprocessedC,
            s(args),
            "t.c",
            Payload::compress(b"int x;\n".to_vec()),
        )
    };
    assert_eq!(check_task(&task(&["-O2", "-Wall"])), Ok(()));
    match check_task(&task(&["-O2", "-fplugin=/tmp/evil.so"])) {
        Err(GridError::InvalidTask(m)) => assert!(m.contains("-fplugin"), "{m}"),
        other => panic!("{other:?}"),
    }
}
