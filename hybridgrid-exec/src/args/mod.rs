//! The gcc/clang command-line model used by the client and by workers.
//!
//! [`classify`] reads a compiler command line against sorted static option
//! tables and answers one of three things ([`Classification`]):
//!
//! - [`Classification::Distributable`]: one source compiled with `-c` (or
//!   `-S`) that can be preprocessed here and compiled elsewhere; the
//!   [`CompilePlan`] says how (preprocessor arguments, remote arguments,
//!   output paths, dependency file);
//! - [`Classification::Local`]: a compilation that must run on this machine,
//!   with the reason ([`LocalReason`], shown under `-v`);
//! - [`Classification::NotCompile`]: not a compilation at all (`--version`,
//!   `-dumpmachine`, no input files...): run the real compiler as is.
//!
//! An option the tables do not know always gives a local compile, never a
//! wrong remote one. Workers check the arguments they are sent with
//! [`validate_remote_args`], an allow list over the same tables.
//!
//! ```
//! use std::ffi::OsString;
//! use hybridgrid_core::task::{CompilerFamily, DriverKind, Language};
//! use hybridgrid_exec::args::{classify, Classification};
//!
//! let argv: Vec<OsString> = ["-O2", "-Iinc", "-MD", "-c", "src/foo.c", "-o", "obj/foo.o"]
//!     .iter()
//!     .map(OsString::from)
//!     .collect();
//! let Classification::Distributable(plan) = classify(CompilerFamily::Gcc, DriverKind::C, &argv)
//! else {
//!     panic!("a plain -c compile is distributable");
//! };
//! assert_eq!(plan.remote_language(), Language::PreprocessedC);
//! assert_eq!(plan.remote_args(), vec!["-O2"]);
//! assert_eq!(
//!     plan.preprocess_args(),
//!     Some(vec!["-O2", "-Iinc", "-MD", "src/foo.c", "-MF", "obj/foo.d", "-MQ", "obj/foo.o", "-E"]
//!         .into_iter().map(String::from).collect())
//! );
//! assert_eq!(plan.object_path(), std::path::Path::new("obj/foo.o"));
//! assert_eq!(plan.dependency_file(), Some(std::path::Path::new("obj/foo.d")));
//! ```

use std::ffi::OsString;
use std::fmt;
use std::path::Path;

use hybridgrid_core::task::{CompilerFamily, DriverKind};

mod parse;
mod plan;
mod rsp;
mod table;
mod validate;

pub use plan::{CompilePlan, DiagnosticsColor, OutputMode, PlannedOutput, SourceLanguage};
pub use rsp::{ResponseFileError, expand_response_files, split_response_file};
pub use validate::{
    RefusalReason, RefusedArg, check_task, map_source_paths, validate_remote_args,
    validate_source_args, validate_task_args,
};

/// What a compiler command line is, for the grid.
#[derive(Clone, Debug, PartialEq)]
#[allow(clippy::large_enum_variant)]
pub enum Classification {
    /// A single-source compile that can be preprocessed locally and compiled remotely.
    Distributable(CompilePlan),
    /// A compilation that must run on this machine.
    Local(LocalReason),
    /// Not a compilation (a query such as `--version`, or no input files):
    /// run the compiler as is.
    NotCompile,
}

/// Why a compilation must run on this machine. `Display` gives the text shown
/// to users under `-v`.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum LocalReason {
    /// More than one input file.
    MultipleInputs(usize),
    /// No `-c` or `-S`: the driver links.
    Linking,
    /// `-E`, `-M` or `-MM`: the command only preprocesses.
    PreprocessOnly(String),
    /// `-save-temps` writes intermediate files next to the output.
    SaveTemps(String),
    /// The input is a header: this builds a precompiled header.
    PrecompiledHeader(String),
    /// The option reads or writes profile data on this machine.
    Profile(String),
    /// The option writes coverage notes (`.gcno`) next to the object.
    Coverage(String),
    /// The option loads code, specs or programs from this machine.
    LoadsCode(String),
    /// The option makes the compiler write another file besides the object.
    WritesFile(String),
    /// The option makes the compiler read a local file while compiling.
    ReadsFile(String),
    /// The option is not in the tables (or not supported remotely).
    UnsupportedOption(String),
    /// The input's language is not one the grid compiles (Objective-C, Fortran...).
    UnsupportedLanguage(String),
    /// The input is not a source file (an object, a library...).
    NonSourceInput(String),
    /// The source is read from standard input (`-`).
    StdinInput,
    /// The output goes to standard output (`-o -`).
    StdoutOutput,
    /// A response file could not be read.
    ResponseFile(String),
    /// An option at the end of the command line lacks its argument.
    MissingArgument(String),
    /// An argument is not valid UTF-8.
    NotUtf8(String),
    /// `-v`: the user wants to see the driver's own commands.
    Verbose,
    /// Options that the model does not combine (e.g. two `-o`).
    Conflicting(String),
    /// Dependency output was asked for an input that is not preprocessed.
    DependenciesWithoutPreprocessing,
    /// `-gsplit-dwarf` with `-S`.
    SplitDwarfWithAssembly,
    /// A configure step's probe (autoconf, Meson or CMake, named): tiny and
    /// run once, it compiles here faster than a round trip to the grid.
    ConfigureProbe(String),
}

impl fmt::Display for LocalReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LocalReason::MultipleInputs(n) => write!(f, "multiple input files ({n})"),
            LocalReason::Linking => f.write_str("linking (no -c or -S)"),
            LocalReason::PreprocessOnly(opt) => write!(f, "{opt}: preprocess only"),
            LocalReason::SaveTemps(opt) => write!(f, "{opt} writes intermediate files"),
            LocalReason::PrecompiledHeader(input) => {
                write!(f, "precompiled header output (input {input})")
            }
            LocalReason::Profile(opt) => write!(f, "{opt} uses local profile data"),
            LocalReason::Coverage(opt) => {
                write!(f, "{opt} writes coverage notes next to the object")
            }
            LocalReason::LoadsCode(opt) => write!(f, "{opt} loads local code or specs"),
            LocalReason::WritesFile(opt) => write!(f, "{opt} writes an extra output file"),
            LocalReason::ReadsFile(opt) => write!(f, "{opt} reads a local file while compiling"),
            LocalReason::UnsupportedOption(opt) => write!(f, "unsupported option {opt}"),
            LocalReason::UnsupportedLanguage(lang) => write!(f, "unsupported language {lang}"),
            LocalReason::NonSourceInput(input) => write!(f, "input {input} is not a source file"),
            LocalReason::StdinInput => f.write_str("source read from standard input"),
            LocalReason::StdoutOutput => f.write_str("output written to standard output"),
            LocalReason::ResponseFile(err) => write!(f, "response file: {err}"),
            LocalReason::MissingArgument(opt) => write!(f, "missing argument to {opt}"),
            LocalReason::NotUtf8(arg) => write!(f, "argument {arg} is not valid UTF-8"),
            LocalReason::Verbose => f.write_str("-v shows the driver's commands"),
            LocalReason::Conflicting(what) => write!(f, "conflicting options: {what}"),
            LocalReason::DependenciesWithoutPreprocessing => {
                f.write_str("dependency output for an input that is not preprocessed")
            }
            LocalReason::SplitDwarfWithAssembly => f.write_str("-gsplit-dwarf with -S"),
            LocalReason::ConfigureProbe(tool) => write!(f, "{tool} configure probe"),
        }
    }
}

/// Classifies a compiler command line (the arguments after the compiler's
/// name). `@file` arguments are expanded relative to the current directory;
/// output paths in the plan are as written (relative to the current directory).
pub fn classify(family: CompilerFamily, driver: DriverKind, args: &[OsString]) -> Classification {
    classify_in(family, driver, args, Path::new(""))
}

/// Like [`classify`], with relative `@file` names resolved against `cwd`.
pub fn classify_in(
    family: CompilerFamily,
    driver: DriverKind,
    args: &[OsString],
    cwd: &Path,
) -> Classification {
    let mut words = Vec::with_capacity(args.len());
    for arg in args {
        match arg.to_str() {
            Some(s) => words.push(s.to_owned()),
            None => {
                return Classification::Local(LocalReason::NotUtf8(
                    arg.to_string_lossy().into_owned(),
                ));
            }
        }
    }
    let words = match expand_response_files(words, cwd) {
        Ok(words) => words,
        Err(err) => return Classification::Local(LocalReason::ResponseFile(err.to_string())),
    };
    match parse::parse(family, driver, words) {
        Classification::Distributable(plan) => match configure_probe(plan.source(), cwd) {
            Some(tool) => Classification::Local(LocalReason::ConfigureProbe(tool.to_owned())),
            None => Classification::Distributable(plan),
        },
        other => other,
    }
}

/// The configure step a compile of `source` (relative to `cwd`) is a probe
/// of, told by where its source is: autoconf's `conftest.c` (any
/// extension; `conftest1.c`, `conftest2.c`), Meson's `meson-private/tmp*/testfile.c`, CMake's
/// `try_compile` projects under `CMakeFiles/CMakeScratch/` or
/// `CMakeFiles/CMakeTmp/`.
pub fn configure_probe(source: &Path, cwd: &Path) -> Option<&'static str> {
    let name = source.file_name()?.to_str()?;
    // `conftest1.c` and `conftest2.c` too (a check that links two units).
    if let Some(rest) = name.strip_prefix("conftest")
        && rest
            .trim_start_matches(|c: char| c.is_ascii_digit())
            .starts_with('.')
    {
        return Some("autoconf");
    }
    let full = cwd.join(source);
    if name.starts_with("testfile.") && full.parent()?.parent()?.file_name()? == "meson-private" {
        return Some("Meson");
    }
    let path = full.to_str()?;
    if path.contains("/CMakeFiles/CMakeScratch/") || path.contains("/CMakeFiles/CMakeTmp/") {
        return Some("CMake");
    }
    None
}

#[cfg(test)]
mod tests;
