//! Property tests of the argument model: `classify` never panics, and what it
//! plans to send to a worker always passes the worker's check.

use std::ffi::OsString;

use hybridgrid_core::task::{CompilerFamily, DriverKind};
use hybridgrid_exec::args::{Classification, classify, validate_remote_args};
use proptest::prelude::*;

/// Words real command lines are made of, including every special case.
const VOCABULARY: &[&str] = &[
    "-c",
    "-S",
    "-E",
    "-M",
    "-MM",
    "-MD",
    "-MMD",
    "-MF",
    "-MFx.d",
    "-MT",
    "-MQ",
    "-MP",
    "-MG",
    "-o",
    "-oout.o",
    "-x",
    "c",
    "c++",
    "none",
    "assembler",
    "assembler-with-cpp",
    "c-header",
    "-xc",
    "-I",
    "-Iinc",
    "-isystem",
    "-iquote",
    "-idirafter",
    "-include",
    "-imacros",
    "-D",
    "-DX=1",
    "-U",
    "-UX",
    "-O",
    "-O2",
    "-Os",
    "-g",
    "-g0",
    "-ggdb3",
    "-gsplit-dwarf",
    "-gsplit-dwarf=single",
    "-gembed-source",
    "-Wall",
    "-Werror",
    "-Wp,-MD,f.d",
    "-Wp,-MMD",
    "-Wp,-DX",
    "-Wa,--noexecstack",
    "-Wa,-adhln",
    "-Wl,-z,now",
    "-Xlinker",
    "-Xclang",
    "-Xassembler",
    "-Xpreprocessor",
    "--param",
    "--param=x=1",
    "-target",
    "-arch",
    "-mllvm",
    "-fPIC",
    "-fno-common",
    "-fplugin=x.so",
    "-fprofile-use",
    "-fno-profile-arcs",
    "-fdiagnostics-color",
    "-fdiagnostics-color=always",
    "-fdiagnostics-format=json",
    "-fdiagnostics-format=sarif-file",
    "-frandom-seed=@x",
    "-frandom-seed=1",
    "-fdump-tree-all",
    "-fdebug-prefix-map=/a=/b",
    "-ffile-prefix-map=/a=/b",
    "-fmacro-prefix-map=/a=/b",
    "--coverage",
    "-save-temps",
    "-specs=x",
    "-B",
    "-Bdir",
    "-wrapper",
    "-aux-info",
    "-v",
    "--version",
    "-dumpmachine",
    "-std=c11",
    "-pedantic",
    "-w",
    "-pthread",
    "-march=native",
    "-fcolor-diagnostics",
    "-disable-O0-optnone",
    "-load",
    "-",
    "@",
    "@missing.rsp",
    "a.c",
    "b.c",
    "a.cpp",
    "a.i",
    "a.ii",
    "a.s",
    "a.S",
    "a.h",
    "a.o",
    "a.m",
    "sub/x.c",
    "x.o",
    "sub/o.o",
    "--sysroot=/x",
    "-L.",
    "-lm",
    "-static",
    "-shared",
    "-pie",
];

fn word() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => proptest::sample::select(VOCABULARY).prop_map(str::to_owned),
        1 => "-[a-zA-Z=,@./+-]{0,12}",
        1 => "[a-z./]{0,8}\\.[cSsio]{1,2}",
        1 => any::<String>(),
    ]
}

fn family() -> impl Strategy<Value = CompilerFamily> {
    prop_oneof![Just(CompilerFamily::Gcc), Just(CompilerFamily::Clang)]
}

fn driver() -> impl Strategy<Value = DriverKind> {
    prop_oneof![Just(DriverKind::C), Just(DriverKind::Cxx)]
}

/// Options whose value is the next word (so `-isystem -c` names a directory `-c`).
const SEPARATE_VALUE: &[&str] = &[
    "-D",
    "-I",
    "-MF",
    "-MQ",
    "-MT",
    "-U",
    "-Xassembler",
    "-Xclang",
    "-Xpreprocessor",
    "-idirafter",
    "-imacros",
    "-include",
    "-iprefix",
    "-iquote",
    "-isysroot",
    "-isystem",
    "-iwithprefix",
    "-iwithprefixbefore",
    "--param",
    "-target",
    "-arch",
    "-x",
];

/// True if `words` has `bad` as an option of its own (not as an option's value).
fn has_standalone(words: &[String], bad: &[&str]) -> bool {
    words.iter().enumerate().any(|(i, w)| {
        bad.contains(&w.as_str()) && !(i > 0 && SEPARATE_VALUE.contains(&words[i - 1].as_str()))
    })
}

fn check(
    family: CompilerFamily,
    driver: DriverKind,
    words: &[String],
) -> Result<(), TestCaseError> {
    let args: Vec<OsString> = words.iter().map(OsString::from).collect();
    if let Classification::Distributable(plan) = classify(family, driver, &args) {
        let remote = plan.remote_args();
        prop_assert_eq!(validate_remote_args(&remote), Ok(()), "args {:?}", words);
        let source = plan.source().to_string_lossy().into_owned();
        prop_assert!(!remote.contains(&source), "the source is not a remote arg");
        prop_assert!(!has_standalone(&remote, &["-c", "-o", "-E"]));
        if let Some(pp) = plan.preprocess_args() {
            prop_assert!(pp.contains(&source));
            prop_assert_eq!(pp.last().map(String::as_str), Some("-E"));
            prop_assert!(!has_standalone(&pp, &["-c", "-o", "-S"]), "pp {:?}", pp);
        }
        prop_assert!(!plan.object_path().as_os_str().is_empty());
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn classify_never_panics_and_plans_pass_the_worker_check(
        family in family(),
        driver in driver(),
        words in proptest::collection::vec(word(), 0..16),
    ) {
        check(family, driver, &words)?;
    }

    /// Command lines that start as a compile, so that many are distributable.
    #[test]
    fn compiles_with_random_options_stay_safe(
        family in family(),
        driver in driver(),
        mode in prop_oneof![Just("-c"), Just("-S")],
        source in prop_oneof![Just("a.c"), Just("sub/b.cpp"), Just("c.S"), Just("d.s"), Just("e.i")],
        words in proptest::collection::vec(word(), 0..10),
    ) {
        let mut all = vec![mode.to_owned(), source.to_owned()];
        all.extend(words);
        check(family, driver, &all)?;
    }

    #[test]
    fn validate_never_panics(words in proptest::collection::vec(word(), 0..16)) {
        let _ = validate_remote_args(&words);
    }
}

#[test]
fn the_generators_reach_distributable_plans() {
    // Guards the properties above against vacuity: a typical generated
    // command line is distributable.
    let words: Vec<OsString> = ["-c", "a.c", "-O2", "-fPIC", "-Wa,--noexecstack", "-g"]
        .iter()
        .map(OsString::from)
        .collect();
    assert!(matches!(
        classify(CompilerFamily::Gcc, DriverKind::C, &words),
        Classification::Distributable(_)
    ));
}
