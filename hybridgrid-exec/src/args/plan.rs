//! [`CompilePlan`]: how to run one distributable compile.

use std::path::{Path, PathBuf};

use hybridgrid_core::task::{CompilerFamily, DriverKind, Language, OutputKind};

/// The language of the source as the driver sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SourceLanguage {
    /// C (`.c`, `-x c`).
    C,
    /// C++ (`.cc`, `.cpp`, `.cxx`, `.C`, `.c++`, `-x c++`; `.c` with a C++ driver).
    Cxx,
    /// Preprocessed C (`.i`, `-x cpp-output`).
    PreprocessedC,
    /// Preprocessed C++ (`.ii`, `-x c++-cpp-output`).
    PreprocessedCxx,
    /// Assembler (`.s`, `-x assembler`).
    Assembler,
    /// Assembler that needs the preprocessor (`.S`, `.sx`, `-x assembler-with-cpp`).
    AssemblerWithCpp,
}

impl SourceLanguage {
    /// Whether the source is preprocessed before it is compiled.
    pub fn needs_preprocessing(self) -> bool {
        matches!(
            self,
            SourceLanguage::C | SourceLanguage::Cxx | SourceLanguage::AssemblerWithCpp
        )
    }

    /// The language of what the remote compiler receives (the preprocessed form).
    pub fn remote_language(self) -> Language {
        match self {
            SourceLanguage::C | SourceLanguage::PreprocessedC => Language::PreprocessedC,
            SourceLanguage::Cxx | SourceLanguage::PreprocessedCxx => Language::PreprocessedCxx,
            SourceLanguage::Assembler | SourceLanguage::AssemblerWithCpp => Language::Assembler,
        }
    }
}

/// What the compile produces in the place of the object.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum OutputMode {
    /// `-c`: an object file.
    Object,
    /// `-S`: assembly text. The remote arguments then contain `-S`, so the
    /// file the worker returns as [`OutputKind::Object`] is assembly.
    Assembly,
}

/// Whether colored diagnostics were asked for on the command line (the last
/// of `-fdiagnostics-color[=WHEN]`, `-fno-diagnostics-color`,
/// `-f[no-]color-diagnostics` wins).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum DiagnosticsColor {
    /// Nothing on the command line: the compiler's default (`auto` for gcc,
    /// which colors only when stderr is a terminal).
    #[default]
    Unspecified,
    /// `=auto`: color when stderr is a terminal. A remote compiler's stderr
    /// never is; the caller decides whether to add `-fdiagnostics-color=always`.
    Auto,
    /// Always color.
    Always,
    /// Never color.
    Never,
}

/// An output file of the remote compile and where it goes on this machine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlannedOutput {
    /// Which output.
    pub kind: OutputKind,
    /// Where to write it, as the compiler would (relative to the compiler's
    /// working directory when relative).
    pub path: PathBuf,
}

/// Where an original argument goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Dest {
    /// Only to the local preprocessor.
    Preproc,
    /// To the preprocessor and the remote compiler.
    Both,
    /// Only to the remote compiler.
    Remote,
    /// To neither (`-c`, `-o`, linker options).
    Neither,
}

/// One original option (with its separate value, if any) and where it goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Item {
    pub(crate) words: Vec<String>,
    pub(crate) dest: Dest,
}

/// Everything needed to preprocess one source here and compile it remotely.
#[derive(Clone, Debug, PartialEq)]
pub struct CompilePlan {
    pub(crate) family: CompilerFamily,
    pub(crate) driver: DriverKind,
    pub(crate) items: Vec<Item>,
    pub(crate) source: PathBuf,
    pub(crate) language: SourceLanguage,
    pub(crate) mode: OutputMode,
    pub(crate) outputs: Vec<PlannedOutput>,
    pub(crate) dependency_file: Option<PathBuf>,
    pub(crate) extra_preprocess: Vec<String>,
    pub(crate) debug_info: bool,
    pub(crate) color: DiagnosticsColor,
}

impl CompilePlan {
    /// The compiler family the plan was made for.
    pub fn family(&self) -> CompilerFamily {
        self.family
    }

    /// The driver kind the plan was made for.
    pub fn driver(&self) -> DriverKind {
        self.driver
    }

    /// The source file, as written on the command line.
    pub fn source(&self) -> &Path {
        &self.source
    }

    /// The source's language (from `-x` or its extension).
    pub fn source_language(&self) -> SourceLanguage {
        self.language
    }

    /// The language of the input the remote compiler gets (the executor
    /// passes it with `-x`).
    pub fn remote_language(&self) -> Language {
        self.language.remote_language()
    }

    /// Whether the source must be preprocessed locally first; when false the
    /// source file itself is the remote input (`.i`, `.ii`, `.s`).
    pub fn needs_preprocessing(&self) -> bool {
        self.language.needs_preprocessing()
    }

    /// `-c` (object) or `-S` (assembly).
    pub fn output_mode(&self) -> OutputMode {
        self.mode
    }

    /// Where the object (or, with `-S`, the assembly) goes: the `-o` value,
    /// else the source's base name with `.o` (`.s`) in the working directory.
    pub fn object_path(&self) -> &Path {
        // The object is always the first planned output.
        self.outputs
            .first()
            .map(|o| o.path.as_path())
            .unwrap_or(Path::new(""))
    }

    /// The files the remote compile must return and where each goes locally:
    /// the object first, then the `.dwo` with `-gsplit-dwarf` (gcc and clang
    /// write `<object minus its extension>.dwo`).
    pub fn outputs(&self) -> &[PlannedOutput] {
        &self.outputs
    }

    /// The output kinds besides the object (for `CompileTask::extra_outputs`).
    pub fn extra_output_kinds(&self) -> Vec<OutputKind> {
        self.outputs.iter().skip(1).map(|o| o.kind).collect()
    }

    /// The dependency file (`.d`) the command writes, if any. The local
    /// preprocess step ([`CompilePlan::preprocess_args`]) writes it, with the
    /// same content the original command would.
    pub fn dependency_file(&self) -> Option<&Path> {
        self.dependency_file.as_deref()
    }

    /// Whether the compile produces debug information (`-g` and friends;
    /// gcc also with `-gsplit-dwarf`). Objects compiled remotely from
    /// preprocessed output are byte-identical to local ones only without it.
    pub fn debug_info(&self) -> bool {
        self.debug_info
    }

    /// Whether colored diagnostics were asked for.
    pub fn diagnostics_color(&self) -> DiagnosticsColor {
        self.color
    }

    /// The arguments (without the compiler's name) that run the preprocessor
    /// on this machine and write the preprocessed source to standard output,
    /// in the same working directory as the original command. They write the
    /// dependency file, if any, byte-identical to the original command's.
    ///
    /// `None` when the source needs no preprocessing
    /// ([`CompilePlan::needs_preprocessing`]).
    pub fn preprocess_args(&self) -> Option<Vec<String>> {
        if !self.needs_preprocessing() {
            return None;
        }
        let mut args: Vec<String> = self
            .items
            .iter()
            .filter(|i| matches!(i.dest, Dest::Preproc | Dest::Both))
            .flat_map(|i| i.words.iter().cloned())
            .collect();
        args.extend(self.extra_preprocess.iter().cloned());
        args.push("-E".to_owned());
        Some(args)
    }

    /// Arguments that make the compiler print this command's include search
    /// list without touching its outputs: the preprocessor arguments minus
    /// the source and every dependency-file option, then `-E -v` on an
    /// empty input of the same language. Run in the same working directory
    /// and environment; parse standard error.
    pub fn search_probe_args(&self) -> Option<Vec<String>> {
        let lang = match self.language {
            SourceLanguage::C => "c",
            SourceLanguage::Cxx => "c++",
            SourceLanguage::AssemblerWithCpp => "assembler-with-cpp",
            _ => return None,
        };
        let source = self.source.to_string_lossy();
        let mut args: Vec<String> = self
            .items
            .iter()
            .filter(|i| matches!(i.dest, Dest::Preproc | Dest::Both))
            .filter(|i| {
                let first = i.words.first().map(String::as_str).unwrap_or("");
                let is_source = i.words.len() == 1 && first == source;
                let is_dep =
                    first.starts_with("-M") || (first.starts_with("-Wp,") && first.contains(",-M"));
                !is_source && !is_dep
            })
            .flat_map(|i| i.words.iter().cloned())
            .collect();
        args.extend(
            ["-E", "-v", "-x", lang, "/dev/null", "-o", "/dev/null"]
                .iter()
                .map(|s| s.to_string()),
        );
        Some(args)
    }

    /// Whether the object records macro definitions (`-g3`, `-ggdb3`,
    /// clang's `-fdebug-macro`), which the preprocessed text does not hold.
    pub fn records_macros(&self) -> bool {
        self.items.iter().flat_map(|i| i.words.iter()).any(|w| {
            w == "-fdebug-macro"
                || (w.starts_with("-g")
                    && w.ends_with('3')
                    && !w.starts_with("-gdwarf")
                    && !w.starts_with("-gstrict"))
        })
    }

    /// The arguments for compiling the original source remotely (a compile
    /// from source, for debug info), in their original order: those of
    /// [`CompilePlan::remote_args`] plus the preprocessor's macros and
    /// include options, without the source, `-x`, `-c`, `-o` and any
    /// dependency-file option (the local preprocessor writes that file).
    pub fn source_args(&self) -> Vec<String> {
        let source = self.source.to_string_lossy();
        self.items
            .iter()
            .filter(|i| i.dest != Dest::Neither)
            .filter(|i| {
                let first = i.words.first().map(String::as_str).unwrap_or("");
                let is_source = i.words.len() == 1 && first == source;
                let is_dep =
                    first.starts_with("-M") || (first.starts_with("-Wp,") && first.contains(",-M"));
                let is_x = first.starts_with("-x");
                !is_source && !is_dep && !is_x
            })
            .flat_map(|i| i.words.iter().cloned())
            .collect()
    }

    /// The arguments for compiling the preprocessed input remotely, in their
    /// original order: everything that affects code generation and
    /// diagnostics, without the input, `-c`, `-o`, `-x` and preprocessor-only
    /// options. With `-S` they contain `-S`. They always pass
    /// [`validate_remote_args`](super::validate_remote_args).
    pub fn remote_args(&self) -> Vec<String> {
        self.items
            .iter()
            .filter(|i| matches!(i.dest, Dest::Remote | Dest::Both))
            .flat_map(|i| i.words.iter().cloned())
            .collect()
    }
}
