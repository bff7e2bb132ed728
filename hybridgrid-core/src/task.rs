//! The compile task model shared by clients, the coordinator and workers.
//!
//! A [`CompileTask`] is one translation unit to compile: which compiler (by
//! identity, never by path), the language of the input, the arguments that
//! affect code generation, and the input itself. A [`CompileOutput`] is what
//! the compiler produced: the exit code, its diagnostics and the output files.

use std::fmt;
use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::identity::{Arch, WorkerId};
pub use crate::identity::{CompilerFamily, CompilerIdentity, DriverKind};
use crate::payload::Payload;

/// The language of a task's input, as passed to the compiler with `-x`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum Language {
    /// C source (`-x c`).
    C,
    /// C++ source (`-x c++`).
    Cxx,
    /// Preprocessed C (`-x cpp-output`).
    PreprocessedC,
    /// Preprocessed C++ (`-x c++-cpp-output`).
    PreprocessedCxx,
    /// Assembler that needs no preprocessing (`-x assembler`).
    Assembler,
}

impl Language {
    /// The argument of `-x` for this language.
    pub fn as_x_arg(self) -> &'static str {
        match self {
            Language::C => "c",
            Language::Cxx => "c++",
            Language::PreprocessedC => "cpp-output",
            Language::PreprocessedCxx => "c++-cpp-output",
            Language::Assembler => "assembler",
        }
    }

    /// Parses the argument of `-x`.
    pub fn from_x_arg(arg: &str) -> Option<Self> {
        Some(match arg {
            "c" => Language::C,
            "c++" => Language::Cxx,
            "cpp-output" => Language::PreprocessedC,
            "c++-cpp-output" => Language::PreprocessedCxx,
            "assembler" => Language::Assembler,
            _ => return None,
        })
    }

    /// The language that preprocessing this language yields.
    pub fn preprocessed(self) -> Self {
        match self {
            Language::C | Language::PreprocessedC => Language::PreprocessedC,
            Language::Cxx | Language::PreprocessedCxx => Language::PreprocessedCxx,
            Language::Assembler => Language::Assembler,
        }
    }

    /// The file extension the worker gives an input in this language.
    pub fn extension(self) -> &'static str {
        match self {
            Language::C => "c",
            Language::Cxx => "cpp",
            Language::PreprocessedC => "i",
            Language::PreprocessedCxx => "ii",
            Language::Assembler => "s",
        }
    }
}

/// A unique id of one task, chosen by whoever creates it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct TaskId(pub String);

impl TaskId {
    /// A fresh random id (`task-` followed by 16 hex digits).
    pub fn random() -> Self {
        TaskId(format!("task-{:016x}", rand::random::<u64>()))
    }
}

impl fmt::Display for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The kind of an output file a task must return.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum OutputKind {
    /// The object file (`-o`).
    Object,
    /// The split DWARF file (`-gsplit-dwarf`).
    SplitDwarf,
}

/// One translation unit to compile remotely.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct CompileTask {
    /// Unique id of the task.
    pub id: TaskId,
    /// The compiler that must compile it.
    pub compiler: CompilerIdentity,
    /// The language of [`CompileTask::input`].
    pub language: Language,
    /// Arguments that affect compilation, in order, without the input file,
    /// `-c` and `-o` (the executor adds those).
    pub args: Vec<String>,
    /// The name the input had on the client, for diagnostics (e.g. `src/foo.c`).
    pub source_name: String,
    /// The input to compile (preprocessed source, usually).
    pub input: Payload,
    /// The architecture to produce code for.
    pub target_arch: Arch,
    /// The outputs to return besides the object.
    pub extra_outputs: Vec<OutputKind>,
    /// The working directory of the client, for debug info.
    pub cwd: String,
    /// Source files the compiler may read for diagnostics (the excerpts
    /// under each error), by their relative paths as the line markers name
    /// them. They do not change the object.
    pub context_files: Vec<ContextFile>,
    /// Set for a compile from source instead of preprocessed text (used for
    /// debug info, whose line tables only come out byte-identical that
    /// way): `input` is then the original source, `args` hold its
    /// preprocessor options, and the worker lays out every file the
    /// preprocessor read at the client's paths under its task directory.
    pub source_mode: Option<SourceMode>,
}

/// What a worker needs to compile a translation unit from its source, as
/// the client would: every file the client's preprocessor read, at the
/// client's absolute paths, and where the outputs go.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct SourceMode {
    /// Every file the preprocessor read (the source and all headers), by
    /// absolute path on the client.
    pub files: Vec<SourceFile>,
    /// The paths the command line gave the outputs, relative to the
    /// client's working directory or absolute: the object first, then one
    /// per [`CompileTask::extra_outputs`] entry, in that order. The compiler
    /// records some of them (the split DWARF file's name).
    pub output_paths: Vec<String>,
}

/// One file of a [`SourceMode`] compile.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct SourceFile {
    /// Its absolute path on the client.
    pub path: String,
    /// The BLAKE3 hash of its content.
    pub digest: [u8; 32],
    /// Its content, or `None` when it is sent by digest only: a worker then
    /// uses its own file at [`SourceFile::path`] if that has the same
    /// digest, and otherwise refuses the task with
    /// [`GridError::MissingInputs`](crate::GridError::MissingInputs) naming
    /// it, for the client to send it again with its content.
    pub data: Option<Payload>,
}

impl SourceFile {
    /// A file sent with its content (compressed when that pays).
    pub fn with_data(path: impl Into<String>, data: impl Into<bytes::Bytes>) -> Self {
        let data = data.into();
        SourceFile {
            path: path.into(),
            digest: Self::digest_of(&data),
            data: Some(Payload::compress(data)),
        }
    }

    /// The digest of a file's content: its BLAKE3 hash.
    pub fn digest_of(content: &[u8]) -> [u8; 32] {
        *blake3::hash(content).as_bytes()
    }

    /// A file sent by digest only (see [`SourceFile::data`]).
    pub fn by_digest(path: impl Into<String>, digest: [u8; 32]) -> Self {
        SourceFile {
            path: path.into(),
            digest,
            data: None,
        }
    }

    /// A file whose content and digest arrived separately (from the
    /// network): the digest is not checked here; a worker checks it
    /// before it uses the content.
    pub fn from_parts(path: String, digest: [u8; 32], data: Option<Payload>) -> Self {
        SourceFile { path, digest, data }
    }
}

impl SourceMode {
    /// The normal form of an absolute client path as a relative path
    /// (`/a/./b/../c` -> `a/c`), or `None` when it is not absolute, climbs
    /// above the root, or holds an empty or NUL component. A worker places
    /// the file at its task root joined with this, so it cannot leave it.
    pub fn relative_path(path: &str) -> Option<String> {
        if !path.starts_with('/') || path.len() > 4096 || path.contains('\0') {
            return None;
        }
        let mut parts: Vec<&str> = Vec::new();
        for p in path.split('/') {
            match p {
                "" | "." => {}
                ".." => {
                    parts.pop()?;
                }
                p => parts.push(p),
            }
        }
        if parts.is_empty() {
            return None;
        }
        Some(parts.join("/"))
    }
}

/// A file placed in the compile's working directory so diagnostics can
/// quote it.
#[derive(Clone, Debug, PartialEq)]
pub struct ContextFile {
    /// Path relative to the working directory (may start with `../`).
    pub path: String,
    /// Its content.
    pub data: Payload,
}

impl ContextFile {
    /// How many leading `..` components the path has, or `None` if it is
    /// not a plain relative path (absolute, `.`/`..` inside, empty parts).
    pub fn parent_depth(path: &str) -> Option<usize> {
        if path.is_empty() || path.starts_with('/') || path.len() > 4096 {
            return None;
        }
        let parts: Vec<&str> = path.split('/').collect();
        let depth = parts.iter().take_while(|p| **p == "..").count();
        let rest = &parts[depth..];
        if rest.is_empty() || rest.iter().any(|p| p.is_empty() || *p == "." || *p == "..") {
            return None;
        }
        Some(depth)
    }
}

impl CompileTask {
    /// The decoded size of what the compiler reads: the input, or for a
    /// compile from source every file that travels with it (the source
    /// and its headers, as preprocessed text would hold them; files sent
    /// by digest only do not travel and count nothing).
    pub fn input_bytes(&self) -> u64 {
        match &self.source_mode {
            Some(m) => m
                .files
                .iter()
                .filter_map(|f| f.data.as_ref())
                .map(Payload::raw_len)
                .sum(),
            None => self.input.raw_len(),
        }
    }

    /// A task with the given compiler, language, arguments and input; the id
    /// is random and the target is the compiler's.
    pub fn new(
        compiler: CompilerIdentity,
        language: Language,
        args: Vec<String>,
        source_name: impl Into<String>,
        input: Payload,
    ) -> Self {
        let target_arch = compiler.target_arch();
        CompileTask {
            id: TaskId::random(),
            compiler,
            language,
            args,
            source_name: source_name.into(),
            input,
            target_arch,
            extra_outputs: Vec::new(),
            cwd: String::new(),
            context_files: Vec::new(),
            source_mode: None,
        }
    }
}

/// How long the parts of a task took.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Timings {
    /// Time waiting for admission or a free slot.
    pub queue: Duration,
    /// Time the compiler ran.
    pub compile: Duration,
}

/// One output file of a compile.
#[derive(Clone, Debug, PartialEq)]
pub struct OutputFile {
    /// What the file is.
    pub kind: OutputKind,
    /// Its content.
    pub data: Payload,
}

/// The result of a compile that ran (successfully or not).
#[derive(Clone, Debug, Default, PartialEq)]
#[non_exhaustive]
pub struct CompileOutput {
    /// The compiler's exit code (0 on success).
    pub exit_code: i32,
    /// The compiler's standard output.
    pub stdout: Bytes,
    /// The compiler's standard error (diagnostics).
    pub stderr: Bytes,
    /// The files it produced; empty when it failed.
    pub outputs: Vec<OutputFile>,
    /// The worker that compiled it, if any.
    pub worker_id: Option<WorkerId>,
    /// Whether this result came from a cache.
    pub from_cache: bool,
    /// How long it took.
    pub timings: Timings,
}

impl CompileOutput {
    /// True when the compiler exited with 0.
    pub fn success(&self) -> bool {
        self.exit_code == 0
    }

    /// The output file of the given kind, if present.
    pub fn output(&self, kind: OutputKind) -> Option<&OutputFile> {
        self.outputs.iter().find(|o| o.kind == kind)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn context_paths() {
        assert_eq!(ContextFile::parent_depth("a.c"), Some(0));
        assert_eq!(ContextFile::parent_depth("src/a.h"), Some(0));
        assert_eq!(ContextFile::parent_depth("../../inc/a.h"), Some(2));
        assert_eq!(ContextFile::parent_depth("/usr/include/stdio.h"), None);
        assert_eq!(ContextFile::parent_depth("a/../../b.h"), None);
        assert_eq!(ContextFile::parent_depth("./a.h"), None);
        assert_eq!(ContextFile::parent_depth("a//b.h"), None);
        assert_eq!(ContextFile::parent_depth(".."), None);
        assert_eq!(ContextFile::parent_depth(""), None);
    }

    #[test]
    fn source_mode_paths_stay_under_the_root() {
        let rel = SourceMode::relative_path;
        assert_eq!(
            rel("/usr/include/stdio.h").as_deref(),
            Some("usr/include/stdio.h")
        );
        assert_eq!(
            rel("/usr/lib/gcc/x86_64-linux-gnu/12/include/../../../../include/x.h").as_deref(),
            Some("usr/lib/include/x.h")
        );
        assert_eq!(rel("/a/./b//c.h").as_deref(), Some("a/b/c.h"));
        assert_eq!(rel("/../etc/passwd"), None);
        assert_eq!(rel("/a/../../etc/passwd"), None);
        assert_eq!(rel("relative/a.h"), None);
        assert_eq!(rel("/"), None);
        assert_eq!(rel("/a/\0b"), None);
    }
}
