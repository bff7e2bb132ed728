//! The parser behind [`classify`](super::classify).

use std::path::{Path, PathBuf};

use hybridgrid_core::task::{CompilerFamily, DriverKind, OutputKind};

use super::plan::{
    CompilePlan, Dest, DiagnosticsColor, Item, OutputMode, PlannedOutput, SourceLanguage,
};
use super::table::{self, ArgKind, LocalKind, Role, Special};
use super::{Classification, LocalReason};

/// What `-x` (or an extension) says an input is.
#[derive(Clone, Debug, PartialEq, Eq)]
enum InputKind {
    Source(SourceLanguage),
    Header,
    Other(String),
    NotSource,
}

fn x_language(value: &str) -> InputKind {
    match value {
        "c" => InputKind::Source(SourceLanguage::C),
        "c++" => InputKind::Source(SourceLanguage::Cxx),
        "cpp-output" => InputKind::Source(SourceLanguage::PreprocessedC),
        "c++-cpp-output" => InputKind::Source(SourceLanguage::PreprocessedCxx),
        "assembler" => InputKind::Source(SourceLanguage::Assembler),
        "assembler-with-cpp" => InputKind::Source(SourceLanguage::AssemblerWithCpp),
        "c-header" | "c++-header" | "cpp-header" | "c++-system-header" | "c++-user-header" => {
            InputKind::Header
        }
        other => InputKind::Other(format!("-x {other}")),
    }
}

fn extension_language(driver: DriverKind, path: &str) -> InputKind {
    let ext = Path::new(path)
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("");
    let cxx = driver == DriverKind::Cxx;
    match ext {
        "c" if cxx => InputKind::Source(SourceLanguage::Cxx),
        "c" => InputKind::Source(SourceLanguage::C),
        "i" if cxx => InputKind::Source(SourceLanguage::PreprocessedCxx),
        "i" => InputKind::Source(SourceLanguage::PreprocessedC),
        "ii" => InputKind::Source(SourceLanguage::PreprocessedCxx),
        "cc" | "cp" | "cxx" | "cpp" | "CPP" | "c++" | "C" => InputKind::Source(SourceLanguage::Cxx),
        "s" => InputKind::Source(SourceLanguage::Assembler),
        "S" | "sx" => InputKind::Source(SourceLanguage::AssemblerWithCpp),
        "h" | "hh" | "H" | "hp" | "hxx" | "hpp" | "HPP" | "h++" | "tcc" => InputKind::Header,
        "m" | "mi" | "mm" | "M" | "mii" => InputKind::Other(format!("Objective-C (.{ext})")),
        "f" | "for" | "ftn" | "F" | "FOR" | "fpp" | "FPP" | "FTN" | "f90" | "f95" | "f03"
        | "f08" | "F90" | "F95" | "F03" | "F08" => InputKind::Other(format!("Fortran (.{ext})")),
        "ads" | "adb" | "d" | "di" | "dd" | "go" | "cu" | "cl" | "rs" | "mod" | "cppm" | "ixx" => {
            InputKind::Other(format!(".{ext}"))
        }
        _ => InputKind::NotSource,
    }
}

/// The state of one parse.
struct Parser {
    family: CompilerFamily,
    driver: DriverKind,
    items: Vec<Item>,
    inputs: Vec<(String, InputKind)>,
    stdin_input: bool,
    local: Option<LocalReason>,
    query: bool,
    compile: bool,
    assemble_only: bool,
    preprocess_only: Option<String>,
    verbose: bool,
    outputs: Vec<String>,
    md: bool,
    mmd: bool,
    mf: Option<String>,
    mt_or_mq: bool,
    wp_dep: Option<String>,
    wp_dep_count: usize,
    x: Option<InputKind>,
    debug: bool,
    split_dwarf: Option<bool>,
    color: DiagnosticsColor,
}

/// Parses expanded, UTF-8 arguments.
pub(crate) fn parse(
    family: CompilerFamily,
    driver: DriverKind,
    words: Vec<String>,
) -> Classification {
    let mut p = Parser {
        family,
        driver,
        items: Vec::new(),
        inputs: Vec::new(),
        stdin_input: false,
        local: None,
        query: false,
        compile: false,
        assemble_only: false,
        preprocess_only: None,
        verbose: false,
        outputs: Vec::new(),
        md: false,
        mmd: false,
        mf: None,
        mt_or_mq: false,
        wp_dep: None,
        wp_dep_count: 0,
        x: None,
        debug: false,
        split_dwarf: None,
        color: DiagnosticsColor::Unspecified,
    };
    let mut i = 0;
    while i < words.len() {
        i += p.word(&words, i);
    }
    p.finish()
}

impl Parser {
    fn note_local(&mut self, reason: LocalReason) {
        if self.local.is_none() {
            self.local = Some(reason);
        }
    }

    fn push(&mut self, words: Vec<String>, dest: Dest) {
        self.items.push(Item { words, dest });
    }

    /// Handles the word at `i`; returns how many words it consumed.
    fn word(&mut self, words: &[String], i: usize) -> usize {
        let w = &words[i];
        if w == "-" {
            self.stdin_input = true;
            self.inputs.push((w.clone(), InputKind::NotSource));
            return 1;
        }
        if !w.starts_with('-') {
            let kind = match &self.x {
                Some(k) => k.clone(),
                None => extension_language(self.driver, w),
            };
            self.inputs.push((w.clone(), kind));
            self.push(vec![w.clone()], Dest::Preproc);
            return 1;
        }
        let Some(spec) = table::lookup(table::ARGS, w) else {
            self.note_local(LocalReason::UnsupportedOption(w.clone()));
            return 1;
        };
        // Split off the value.
        let separate = match spec.kind {
            ArgKind::Flag | ArgKind::Joined => false,
            ArgKind::Separate => true,
            ArgKind::JoinedOrSeparate => w.len() == spec.name.len(),
        };
        let (value, used) = if separate {
            match words.get(i + 1) {
                Some(v) => (v.as_str(), vec![w.clone(), v.clone()]),
                None => {
                    self.note_local(LocalReason::MissingArgument(w.clone()));
                    return 1;
                }
            }
        } else {
            (w.get(spec.name.len()..).unwrap_or(""), vec![w.clone()])
        };
        let consumed = used.len();
        let value = value.to_owned();
        match spec.role {
            Role::Preproc => self.push(used, Dest::Preproc),
            Role::Common => self.push(used, Dest::Both),
            Role::Ignored => self.push(used, Dest::Neither),
            Role::Query => self.query = true,
            Role::Local(kind) => self.note_local(local_reason(kind, &used.join(" "))),
            Role::Color | Role::DiagFormat | Role::RandomSeed => {
                // Only in the -f table.
                self.note_local(LocalReason::UnsupportedOption(w.clone()));
            }
            Role::Special(s) => self.special(s, used, &value),
        }
        consumed
    }

    fn special(&mut self, s: Special, used: Vec<String>, value: &str) {
        let word = used.join(" ");
        match s {
            Special::C => {
                self.compile = true;
                self.push(used, Dest::Neither);
            }
            Special::S => {
                self.assemble_only = true;
                self.push(used, Dest::Remote);
            }
            Special::E => self.preprocess_only = Some(word),
            Special::M => self.preprocess_only = Some(word),
            Special::Md => {
                self.md = true;
                self.push(used, Dest::Preproc);
            }
            Special::Mmd => {
                self.mmd = true;
                self.push(used, Dest::Preproc);
            }
            Special::Mf => {
                self.mf = Some(value.to_owned());
                self.push(used, Dest::Preproc);
            }
            Special::Mt | Special::Mq => {
                self.mt_or_mq = true;
                self.push(used, Dest::Preproc);
            }
            Special::O => {
                self.outputs.push(value.to_owned());
                self.push(used, Dest::Neither);
            }
            Special::X => {
                self.x = match value {
                    "none" => None,
                    v => Some(x_language(v)),
                };
                self.push(used, Dest::Preproc);
            }
            Special::V => self.verbose = true,
            Special::Wp => {
                let parts: Vec<&str> = value.split(',').collect();
                match parts.as_slice() {
                    ["-MD" | "-MMD", file] if !file.is_empty() => {
                        self.wp_dep = Some((*file).to_owned());
                        self.wp_dep_count += 1;
                    }
                    _ if parts.iter().any(|p| p.starts_with("-M")) => {
                        self.note_local(LocalReason::UnsupportedOption(word.clone()));
                    }
                    _ => {}
                }
                self.push(used, Dest::Preproc);
            }
            Special::Wa => {
                if value.split(',').all(table::assembler_arg_allowed) {
                    self.push(used, Dest::Remote);
                } else {
                    self.note_local(LocalReason::UnsupportedOption(word));
                }
            }
            Special::Xassembler => {
                if table::assembler_arg_allowed(value) {
                    self.push(used, Dest::Remote);
                } else {
                    self.note_local(LocalReason::UnsupportedOption(word));
                }
            }
            Special::Xclang => {
                if self.family == CompilerFamily::Clang && table::xclang_arg_allowed(value) {
                    self.push(used, Dest::Both);
                } else {
                    self.note_local(LocalReason::UnsupportedOption(word));
                }
            }
            Special::G => self.g(used, value),
            Special::F => self.f(used, value),
        }
    }

    fn g(&mut self, used: Vec<String>, value: &str) {
        match g_effect(value) {
            GEffect::Level(on) => self.debug = on,
            GEffect::SplitDwarf(split) => self.split_dwarf = split,
            GEffect::Local => {
                let word = used.join(" ");
                self.note_local(LocalReason::ReadsFile(word));
                return;
            }
            GEffect::Other => {}
        }
        self.push(used, Dest::Both);
    }

    fn f(&mut self, used: Vec<String>, value: &str) {
        let word = used.join(" ");
        let Some((spec, negated)) = table::lookup_f(value) else {
            self.note_local(LocalReason::UnsupportedOption(word));
            return;
        };
        match f_dest(spec.role, negated, value) {
            FDest::Go(dest) => {
                if spec.role == Role::Color {
                    self.color = color_choice(spec.name, negated, value);
                }
                self.push(used, dest);
            }
            FDest::Local(kind) => self.note_local(local_reason(kind, &word)),
        }
    }

    fn finish(self) -> Classification {
        if self.query {
            return Classification::NotCompile;
        }
        if self.inputs.is_empty() {
            return Classification::NotCompile;
        }
        if let Some(opt) = self.preprocess_only {
            return Classification::Local(LocalReason::PreprocessOnly(opt));
        }
        if let Some(reason) = self.local {
            return Classification::Local(reason);
        }
        if self.verbose {
            return Classification::Local(LocalReason::Verbose);
        }
        if !self.compile && !self.assemble_only {
            return Classification::Local(LocalReason::Linking);
        }
        if self.inputs.len() > 1 {
            return Classification::Local(LocalReason::MultipleInputs(self.inputs.len()));
        }
        if self.stdin_input {
            return Classification::Local(LocalReason::StdinInput);
        }
        let Some((source, kind)) = self.inputs.into_iter().next() else {
            return Classification::NotCompile;
        };
        let language = match kind {
            InputKind::Source(l) => l,
            InputKind::Header => {
                return Classification::Local(LocalReason::PrecompiledHeader(source));
            }
            InputKind::Other(lang) => {
                return Classification::Local(LocalReason::UnsupportedLanguage(lang));
            }
            InputKind::NotSource => {
                return Classification::Local(LocalReason::NonSourceInput(source));
            }
        };
        if !self.compile && !self.assemble_only {
            return Classification::Local(LocalReason::Linking);
        }
        if self.outputs.len() > 1 {
            return Classification::Local(LocalReason::Conflicting("more than one -o".into()));
        }
        let explicit_output = self.outputs.into_iter().next();
        if explicit_output.as_deref() == Some("-") {
            return Classification::Local(LocalReason::StdoutOutput);
        }
        let mode = if self.assemble_only {
            OutputMode::Assembly
        } else {
            OutputMode::Object
        };
        let split =
            self.split_dwarf == Some(true) && (self.family == CompilerFamily::Gcc || self.debug);
        if mode == OutputMode::Assembly && self.split_dwarf == Some(true) {
            return Classification::Local(LocalReason::SplitDwarfWithAssembly);
        }
        let driver_deps = self.md || self.mmd;
        if (driver_deps || self.wp_dep.is_some()) && !language.needs_preprocessing() {
            return Classification::Local(LocalReason::DependenciesWithoutPreprocessing);
        }
        if driver_deps && self.wp_dep.is_some() || self.wp_dep_count > 1 {
            return Classification::Local(LocalReason::Conflicting(
                "-MD/-MMD together with -Wp,-MD".into(),
            ));
        }

        let stem = Path::new(&source)
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let object = match &explicit_output {
            Some(o) => PathBuf::from(o),
            None => PathBuf::from(match mode {
                OutputMode::Object => format!("{stem}.o"),
                OutputMode::Assembly => format!("{stem}.s"),
            }),
        };
        let mut outputs = vec![PlannedOutput {
            kind: OutputKind::Object,
            path: object.clone(),
        }];
        if split {
            outputs.push(PlannedOutput {
                kind: OutputKind::SplitDwarf,
                path: object.with_extension("dwo"),
            });
        }

        // Dependency output, rewritten for a preprocess step that writes to
        // stdout: gcc's spec derives the .d name and the target from -o.
        let mut extra_preprocess = Vec::new();
        let mut dependency_file = None;
        if driver_deps {
            match &self.mf {
                Some(mf) => dependency_file = Some(PathBuf::from(mf)),
                None => {
                    let d = match &explicit_output {
                        Some(o) => Path::new(o).with_extension("d"),
                        None => PathBuf::from(format!("{stem}.d")),
                    };
                    extra_preprocess.push("-MF".to_owned());
                    extra_preprocess.push(d.to_string_lossy().into_owned());
                    dependency_file = Some(d);
                }
            }
        } else if let Some(file) = &self.wp_dep {
            dependency_file = Some(PathBuf::from(file));
        }
        // gcc adds the implicit target only for -MD/-MMD given to the driver;
        // clang also for -Wp,-MD. Without -o both default to <stem>.o, which
        // is also what the preprocessor uses.
        let implicit_target =
            driver_deps || (self.wp_dep.is_some() && self.family == CompilerFamily::Clang);
        if implicit_target && !self.mt_or_mq {
            if let Some(o) = &explicit_output {
                extra_preprocess.push("-MQ".to_owned());
                extra_preprocess.push(o.clone());
            }
        }

        Classification::Distributable(CompilePlan {
            family: self.family,
            driver: self.driver,
            items: self.items,
            source: PathBuf::from(source),
            language,
            mode,
            outputs,
            dependency_file,
            extra_preprocess,
            debug_info: self.debug || split,
            color: self.color,
        })
    }
}

fn local_reason(kind: LocalKind, word: &str) -> LocalReason {
    let word = word.to_owned();
    match kind {
        LocalKind::SaveTemps => LocalReason::SaveTemps(word),
        LocalKind::Profile => LocalReason::Profile(word),
        LocalKind::Coverage => LocalReason::Coverage(word),
        LocalKind::LoadsCode => LocalReason::LoadsCode(word),
        LocalKind::WritesFile => LocalReason::WritesFile(word),
        LocalKind::ReadsFile => LocalReason::ReadsFile(word),
        LocalKind::Unsupported => LocalReason::UnsupportedOption(word),
    }
}

/// What a `-g` option does.
pub(crate) enum GEffect {
    /// Turns debug information on or off.
    Level(bool),
    /// `-gsplit-dwarf` (`Some(true)`: a .dwo file; `Some(false)`: split
    /// sections kept in the object; `None`: `-gno-split-dwarf`).
    SplitDwarf(Option<bool>),
    /// Needs local files (`-gembed-source`).
    Local,
    /// Changes the kind of debug information only.
    Other,
}

/// The effect of `-g<value>`.
pub(crate) fn g_effect(value: &str) -> GEffect {
    let level = |digits: &str| GEffect::Level(digits != "0");
    match value {
        "" => GEffect::Level(true),
        "split-dwarf" | "split-dwarf=split" => GEffect::SplitDwarf(Some(true)),
        "split-dwarf=single" => GEffect::SplitDwarf(Some(false)),
        "no-split-dwarf" => GEffect::SplitDwarf(None),
        "embed-source" => GEffect::Local,
        "line-tables-only"
        | "line-directives-only"
        | "full"
        | "lldb"
        | "sce"
        | "dbx"
        | "btf"
        | "ctf"
        | "stabs"
        | "stabs+"
        | "xcoff"
        | "xcoff+"
        | "vms"
        | "dwarf" => GEffect::Level(true),
        v if v.bytes().all(|b| b.is_ascii_digit()) => level(v),
        v => {
            if let Some(d) = v.strip_prefix("gdb") {
                if d.bytes().all(|b| b.is_ascii_digit()) {
                    return level(if d.is_empty() { "2" } else { d });
                }
            }
            if let Some(d) = v.strip_prefix("dwarf-") {
                if !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()) {
                    return GEffect::Level(true);
                }
            }
            GEffect::Other
        }
    }
}

/// Where a `-f` option goes, or why it keeps the compile local.
pub(crate) enum FDest {
    Go(Dest),
    Local(LocalKind),
}

/// Decides a `-f` option from its table role. `value` is the word after `-f`.
pub(crate) fn f_dest(role: Role, negated: bool, value: &str) -> FDest {
    match role {
        Role::Common => FDest::Go(Dest::Both),
        Role::Color => match value.split_once('=') {
            None | Some((_, "always" | "never" | "auto")) => FDest::Go(Dest::Both),
            Some(_) => FDest::Local(LocalKind::Unsupported),
        },
        Role::Preproc => FDest::Go(Dest::Preproc),
        Role::DiagFormat => {
            let format = value.split_once('=').map(|(_, f)| f).unwrap_or("");
            if matches!(format, "text" | "json" | "json-stderr" | "sarif-stderr") {
                FDest::Go(Dest::Both)
            } else {
                FDest::Local(LocalKind::WritesFile)
            }
        }
        Role::RandomSeed => {
            if value.contains('@') {
                FDest::Local(LocalKind::ReadsFile)
            } else {
                FDest::Go(Dest::Both)
            }
        }
        // Turning a local-only feature off (`-fno-profile-arcs`) is harmless.
        Role::Local(_) if negated && !value.contains('=') => FDest::Go(Dest::Both),
        Role::Local(kind) => FDest::Local(kind),
        Role::Ignored | Role::Query | Role::Special(_) => FDest::Local(LocalKind::Unsupported),
    }
}

fn color_choice(name: &str, negated: bool, value: &str) -> DiagnosticsColor {
    if negated {
        return DiagnosticsColor::Never;
    }
    if name.ends_with('=') {
        return match value.split_once('=').map(|(_, w)| w) {
            Some("always") => DiagnosticsColor::Always,
            Some("never") => DiagnosticsColor::Never,
            Some("auto") => DiagnosticsColor::Auto,
            _ => DiagnosticsColor::Unspecified,
        };
    }
    DiagnosticsColor::Always
}
