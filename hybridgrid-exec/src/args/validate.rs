//! The worker's check of the arguments it is asked to run.
//!
//! A worker compiles other people's preprocessed input with other people's
//! arguments. Only options that change code generation or diagnostics pass:
//! the same tables as the client's, taken as an allow list. Anything that
//! names a file, loads code, controls the output or the input, or is simply
//! unknown is refused.

use std::fmt;

use super::parse::{FDest, GEffect, f_dest, g_effect};
use super::plan::Dest;
use super::table::{self, ArgKind, LocalKind, Role, Special};

/// Why an argument was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RefusalReason {
    /// Not an option: an input file (the worker supplies the input).
    NotAnOption,
    /// A response file (`@file`) would be read on the worker.
    ResponseFile,
    /// An option no table knows.
    Unknown,
    /// A preprocessor option (include paths, macros, sysroots...): the input
    /// is already preprocessed, and these name files on the client.
    Preprocessor,
    /// A linker option.
    Linker,
    /// Controls the input, the output or the driver's mode, which the worker decides.
    DriverControl,
    /// Loads code, specs or programs (`-fplugin=`, `-specs=`, `-B`, `-wrapper`).
    LoadsCode,
    /// Makes the compiler write another file (`-fdump-*`, `-save-temps`, coverage...).
    WritesFile,
    /// Makes the compiler read a file (profiles, ignore lists, `-frandom-seed=@`).
    ReadsFile,
    /// Not a compilation (`--version`, `-print-*`).
    NotACompile,
    /// An option at the end lacks its value.
    MissingValue,
}

impl fmt::Display for RefusalReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RefusalReason::NotAnOption => "input files are supplied by the worker",
            RefusalReason::ResponseFile => "response files are not read on workers",
            RefusalReason::Unknown => "unknown option",
            RefusalReason::Preprocessor => "preprocessor option, not needed for preprocessed input",
            RefusalReason::Linker => "linker option",
            RefusalReason::DriverControl => "input, output and mode are chosen by the worker",
            RefusalReason::LoadsCode => "would load code or specs on the worker",
            RefusalReason::WritesFile => "would write files outside the task's outputs",
            RefusalReason::ReadsFile => "would read files on the worker",
            RefusalReason::NotACompile => "not a compilation",
            RefusalReason::MissingValue => "missing value",
        })
    }
}

/// An argument a worker will not run, and why.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("refused compiler argument `{arg}`: {reason}")]
pub struct RefusedArg {
    /// The refused argument (with its separate value, if any).
    pub arg: String,
    /// Why.
    pub reason: RefusalReason,
}

/// Checks arguments a worker is asked to compile with (the `args` of a
/// `CompileTask`, which exclude the input, `-c`, `-o` and `-x`). Only known
/// code-generation and diagnostic options pass.
pub fn validate_remote_args(args: &[String]) -> Result<(), RefusedArg> {
    let mut i = 0;
    while i < args.len() {
        i += check(args, i, false)?;
    }
    Ok(())
}

/// Checks a task's arguments with the allow list for its kind:
/// [`validate_source_args`] for a compile from source, else
/// [`validate_remote_args`].
pub fn validate_task_args(task: &hybridgrid_core::task::CompileTask) -> Result<(), RefusedArg> {
    if task.source_mode.is_some() {
        validate_source_args(&task.args)
    } else {
        validate_remote_args(&task.args)
    }
}

/// [`validate_task_args`] as a server's request check: a task with a
/// refused argument is [`GridError::InvalidTask`](hybridgrid_core::GridError::InvalidTask),
/// refused before anything runs. Workers apply it, and the coordinator too,
/// so such a task never reaches a worker.
pub fn check_task(
    task: &hybridgrid_core::task::CompileTask,
) -> Result<(), hybridgrid_core::GridError> {
    validate_task_args(task).map_err(|e| hybridgrid_core::GridError::InvalidTask(e.to_string()))
}

/// Preprocessor options a compile from source may carry: macros and the
/// include search (whose paths the worker maps into its task directory).
const SOURCE_PREPROC: &[&str] = &[
    "-D",
    "-I",
    "-U",
    "-idirafter",
    "-imacros",
    "-include",
    "-iquote",
    "-isystem",
    "-nostdinc",
    "-nostdinc++",
    "-trigraphs",
    "-undef",
];

/// The options among [`SOURCE_PREPROC`] whose value is a path.
const SOURCE_PATH_OPTIONS: &[&str] = &[
    "-I",
    "-idirafter",
    "-imacros",
    "-include",
    "-iquote",
    "-isystem",
];

/// Checks the arguments of a compile from source
/// ([`CompileTask::source_mode`](hybridgrid_core::task::CompileTask)):
/// what [`validate_remote_args`] allows, plus macros, include paths and
/// path mappings; still no dependency output, sysroot or response file.
pub fn validate_source_args(args: &[String]) -> Result<(), RefusedArg> {
    let mut i = 0;
    while i < args.len() {
        i += check(args, i, true)?;
    }
    Ok(())
}

/// The arguments of a compile from source with every path value of an
/// include option (`-I`, `-iquote`, `-isystem`, `-idirafter`, `-include`,
/// `-imacros`) passed through `map`, in either spelling (`-Idir`, `-I dir`),
/// and the mapped values of the directory options, in order. Arguments
/// must have passed [`validate_source_args`].
pub fn map_source_paths(
    args: &[String],
    map: &dyn Fn(&str) -> String,
) -> (Vec<String>, Vec<String>) {
    let mut out = Vec::with_capacity(args.len());
    let mut dirs = Vec::new();
    let mut i = 0;
    while i < args.len() {
        let w = &args[i];
        let spec = table::lookup(table::ARGS, w).filter(|s| SOURCE_PATH_OPTIONS.contains(&s.name));
        let Some(spec) = spec else {
            out.push(w.clone());
            i += 1;
            continue;
        };
        let is_dir = !matches!(spec.name, "-include" | "-imacros");
        if w.len() == spec.name.len() && i + 1 < args.len() {
            let v = map(&args[i + 1]);
            if is_dir {
                dirs.push(v.clone());
            }
            out.push(w.clone());
            out.push(v);
            i += 2;
        } else {
            let v = map(&w[spec.name.len()..]);
            if is_dir {
                dirs.push(v.clone());
            }
            out.push(format!("{}{v}", spec.name));
            i += 1;
        }
    }
    (out, dirs)
}

fn refuse(arg: impl Into<String>, reason: RefusalReason) -> RefusedArg {
    RefusedArg {
        arg: arg.into(),
        reason,
    }
}

/// Checks the word at `i`; returns how many words it used.
fn check(args: &[String], i: usize, source: bool) -> Result<usize, RefusedArg> {
    let w = &args[i];
    if w.starts_with('@') {
        return Err(refuse(w, RefusalReason::ResponseFile));
    }
    if !w.starts_with('-') || w == "-" {
        return Err(refuse(w, RefusalReason::NotAnOption));
    }
    let spec = table::lookup(table::ARGS, w).ok_or_else(|| refuse(w, RefusalReason::Unknown))?;
    let separate = match spec.kind {
        ArgKind::Flag | ArgKind::Joined => false,
        ArgKind::Separate => true,
        ArgKind::JoinedOrSeparate => w.len() == spec.name.len(),
    };
    let (value, used) = if separate {
        match args.get(i + 1) {
            Some(v) => (v.as_str(), 2),
            None => return Err(refuse(w, RefusalReason::MissingValue)),
        }
    } else {
        (w.get(spec.name.len()..).unwrap_or(""), 1)
    };
    let whole = || args[i..i + used].join(" ");
    match spec.role {
        Role::Common => Ok(used),
        Role::Preproc if source && SOURCE_PREPROC.contains(&spec.name) => {
            if value.is_empty() && spec.kind != ArgKind::Flag {
                return Err(refuse(whole(), RefusalReason::MissingValue));
            }
            Ok(used)
        }
        Role::Preproc => Err(refuse(whole(), RefusalReason::Preprocessor)),
        Role::Ignored => Err(refuse(whole(), RefusalReason::Linker)),
        Role::Query => Err(refuse(whole(), RefusalReason::NotACompile)),
        Role::Local(kind) => Err(refuse(whole(), local_refusal(kind))),
        Role::Color | Role::DiagFormat | Role::RandomSeed => {
            Err(refuse(whole(), RefusalReason::Unknown))
        }
        Role::Special(s) => match s {
            Special::S => Ok(used),
            Special::G => match g_effect(value) {
                GEffect::Local => Err(refuse(whole(), RefusalReason::ReadsFile)),
                _ => Ok(used),
            },
            Special::F => {
                let (fspec, negated) = table::lookup_f(value)
                    .ok_or_else(|| refuse(whole(), RefusalReason::Unknown))?;
                match f_dest(fspec.role, negated, value) {
                    FDest::Go(Dest::Both | Dest::Remote) => Ok(used),
                    FDest::Go(Dest::Preproc) if source => Ok(used),
                    FDest::Go(Dest::Preproc | Dest::Neither) => {
                        Err(refuse(whole(), RefusalReason::Preprocessor))
                    }
                    FDest::Local(kind) => Err(refuse(whole(), local_refusal(kind))),
                }
            }
            Special::Wa => {
                if value.split(',').all(table::assembler_arg_allowed) {
                    Ok(used)
                } else {
                    Err(refuse(whole(), RefusalReason::Unknown))
                }
            }
            Special::Xassembler => {
                if table::assembler_arg_allowed(value) {
                    Ok(used)
                } else {
                    Err(refuse(whole(), RefusalReason::Unknown))
                }
            }
            Special::Xclang => {
                if table::xclang_arg_allowed(value) {
                    Ok(used)
                } else {
                    Err(refuse(whole(), RefusalReason::Unknown))
                }
            }
            Special::Md
            | Special::Mmd
            | Special::Mf
            | Special::Mt
            | Special::Mq
            | Special::M
            | Special::Wp => Err(refuse(whole(), RefusalReason::Preprocessor)),
            Special::C | Special::E | Special::O | Special::X | Special::V => {
                Err(refuse(whole(), RefusalReason::DriverControl))
            }
        },
    }
}

fn local_refusal(kind: LocalKind) -> RefusalReason {
    match kind {
        LocalKind::SaveTemps | LocalKind::Coverage | LocalKind::WritesFile => {
            RefusalReason::WritesFile
        }
        LocalKind::Profile | LocalKind::ReadsFile => RefusalReason::ReadsFile,
        LocalKind::LoadsCode => RefusalReason::LoadsCode,
        LocalKind::Unsupported => RefusalReason::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(args: &[&str]) -> Vec<String> {
        args.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn typical_flag_sets_pass() {
        let sets: &[&[&str]] = &[
            &[],
            &[
                "-O2",
                "-g",
                "-Wall",
                "-Wextra",
                "-Werror=format-security",
                "-std=gnu11",
            ],
            &[
                "-O3",
                "-fPIC",
                "-fno-strict-aliasing",
                "-fvisibility=hidden",
                "-march=x86-64-v2",
            ],
            &[
                "-Os",
                "-ffunction-sections",
                "-fdata-sections",
                "-fstack-protector-strong",
            ],
            &[
                "-std=c++17",
                "-fno-exceptions",
                "-fno-rtti",
                "-pedantic",
                "-w",
                "-pthread",
            ],
            &[
                "-g",
                "-gsplit-dwarf",
                "-gdwarf-4",
                "-fdebug-prefix-map=/home/u/src=.",
                "-S",
            ],
            &[
                "-ffile-prefix-map=/a=/b",
                "-fdiagnostics-color=always",
                "-fcolor-diagnostics",
            ],
            &[
                "--param",
                "max-inline-insns-single=100",
                "--param=l1-cache-size=32",
            ],
            &[
                "-target",
                "aarch64-linux-gnu",
                "--target=x86_64-linux-gnu",
                "-arch",
                "x86_64",
            ],
            &[
                "-Wa,--noexecstack",
                "-Xassembler",
                "--64",
                "-fsanitize=address,undefined",
            ],
            &[
                "-Xclang",
                "-fcolor-diagnostics",
                "-fno-profile-arcs",
                "-flto",
                "-fopenmp",
            ],
            &[
                "-fdiagnostics-format=json",
                "-frandom-seed=abc",
                "-fcf-protection=full",
            ],
        ];
        for set in sets {
            let args = strings(set);
            assert_eq!(validate_remote_args(&args), Ok(()), "{set:?}");
        }
    }

    #[track_caller]
    fn refused(args: &[&str], bad: &str, reason: RefusalReason) {
        let err = validate_remote_args(&strings(args)).expect_err("must be refused");
        assert_eq!(err.arg, bad, "{args:?}");
        assert_eq!(err.reason, reason, "{args:?}");
        assert!(err.to_string().contains(bad));
    }

    #[test]
    fn each_dangerous_family_is_refused() {
        use RefusalReason as R;
        refused(
            &["-O2", "-fplugin=/tmp/evil.so"],
            "-fplugin=/tmp/evil.so",
            R::LoadsCode,
        );
        refused(
            &["-fplugin-arg-evil-x=y"],
            "-fplugin-arg-evil-x=y",
            R::LoadsCode,
        );
        refused(&["-specs=/tmp/s"], "-specs=/tmp/s", R::LoadsCode);
        refused(&["--specs=/tmp/s"], "--specs=/tmp/s", R::LoadsCode);
        refused(&["--specs", "/tmp/s"], "--specs /tmp/s", R::LoadsCode);
        refused(&["-B/tmp/bin"], "-B/tmp/bin", R::LoadsCode);
        refused(&["-B", "/tmp/bin"], "-B /tmp/bin", R::LoadsCode);
        refused(
            &["-wrapper", "gdb,--args"],
            "-wrapper gdb,--args",
            R::LoadsCode,
        );
        refused(&["@/etc/passwd"], "@/etc/passwd", R::ResponseFile);
        refused(&["-o", "/etc/passwd"], "-o /etc/passwd", R::DriverControl);
        refused(&["-o/etc/passwd"], "-o/etc/passwd", R::DriverControl);
        refused(&["-c"], "-c", R::DriverControl);
        refused(&["-E"], "-E", R::DriverControl);
        refused(&["-x", "c"], "-x c", R::DriverControl);
        refused(&["-v"], "-v", R::DriverControl);
        refused(
            &["-include", "/etc/shadow"],
            "-include /etc/shadow",
            R::Preprocessor,
        );
        refused(
            &["-imacros/etc/shadow"],
            "-imacros/etc/shadow",
            R::Preprocessor,
        );
        refused(&["-I/usr/include"], "-I/usr/include", R::Preprocessor);
        refused(&["-isystem", "/x"], "-isystem /x", R::Preprocessor);
        refused(&["-iquote", "/x"], "-iquote /x", R::Preprocessor);
        refused(&["-idirafter", "/x"], "-idirafter /x", R::Preprocessor);
        refused(&["--sysroot=/x"], "--sysroot=/x", R::Preprocessor);
        refused(&["-isysroot", "/x"], "-isysroot /x", R::Preprocessor);
        refused(&["-iprefix", "/x"], "-iprefix /x", R::Preprocessor);
        refused(&["-DX=1"], "-DX=1", R::Preprocessor);
        refused(&["-MD"], "-MD", R::Preprocessor);
        refused(&["-MMD"], "-MMD", R::Preprocessor);
        refused(&["-MF", "/etc/x"], "-MF /etc/x", R::Preprocessor);
        refused(&["-MT", "x"], "-MT x", R::Preprocessor);
        refused(&["-M"], "-M", R::Preprocessor);
        refused(&["-Wp,-MD,/etc/x"], "-Wp,-MD,/etc/x", R::Preprocessor);
        refused(&["-fprofile-use=/x"], "-fprofile-use=/x", R::ReadsFile);
        refused(&["-fprofile-generate"], "-fprofile-generate", R::ReadsFile);
        refused(&["-fprofile-arcs"], "-fprofile-arcs", R::ReadsFile);
        refused(&["-fauto-profile=/x"], "-fauto-profile=/x", R::ReadsFile);
        refused(&["--coverage"], "--coverage", R::WritesFile);
        refused(&["-ftest-coverage"], "-ftest-coverage", R::WritesFile);
        refused(&["-save-temps"], "-save-temps", R::WritesFile);
        refused(&["-save-temps=obj"], "-save-temps=obj", R::WritesFile);
        refused(&["-Xlinker", "-T/x"], "-Xlinker -T/x", R::Linker);
        refused(&["-Wl,-rpath,/x"], "-Wl,-rpath,/x", R::Linker);
        refused(&["-L/x"], "-L/x", R::Linker);
        refused(&["-fdump-tree-all"], "-fdump-tree-all", R::WritesFile);
        refused(
            &["-fdump-rtl-expand=/x"],
            "-fdump-rtl-expand=/x",
            R::WritesFile,
        );
        refused(&["-fstack-usage"], "-fstack-usage", R::WritesFile);
        refused(&["-fcallgraph-info"], "-fcallgraph-info", R::WritesFile);
        refused(&["-fopt-info-all=/x"], "-fopt-info-all=/x", R::WritesFile);
        refused(
            &["-fdiagnostics-format=sarif-file"],
            "-fdiagnostics-format=sarif-file",
            R::WritesFile,
        );
        refused(&["-aux-info", "/x"], "-aux-info /x", R::WritesFile);
        refused(&["-frandom-seed=@/x"], "-frandom-seed=@/x", R::ReadsFile);
        refused(
            &["-fsanitize-ignorelist=/x"],
            "-fsanitize-ignorelist=/x",
            R::ReadsFile,
        );
        refused(&["-gembed-source"], "-gembed-source", R::ReadsFile);
        refused(&["foo.c"], "foo.c", R::NotAnOption);
        refused(&["/etc/passwd"], "/etc/passwd", R::NotAnOption);
        refused(&["-"], "-", R::NotAnOption);
        refused(&["-mllvm", "-x"], "-mllvm -x", R::Unknown);
        refused(&["-Xclang", "-load"], "-Xclang -load", R::Unknown);
        refused(&["-Wa,-adhln=/x"], "-Wa,-adhln=/x", R::Unknown);
        refused(
            &["-Xassembler", "-adhln=/x"],
            "-Xassembler -adhln=/x",
            R::Unknown,
        );
        refused(&["-fsome-new-flag"], "-fsome-new-flag", R::Unknown);
        refused(&["--version"], "--version", R::NotACompile);
        refused(
            &["-print-prog-name=cc1"],
            "-print-prog-name=cc1",
            R::NotACompile,
        );
        refused(&["--param"], "--param", R::MissingValue);
        refused(&["-dumpdir", "/x"], "-dumpdir", R::Unknown);
    }
}
