//! Cache keys: one blake3 hash over everything that determines a compile's
//! output.
//!
//! [`KeyParams`] lists the inputs (like sccache's `HashKeyParams`);
//! [`CacheKey::for_task`] fills it from a [`CompileTask`]. Every field is
//! hashed with a tag and a length prefix, so no two different inputs can be
//! spelled into the same byte stream (`["-DA", "B"]` and `["-DAB"]` differ).
//!
//! ```
//! use hybridgrid_cache::key::{CacheKey, KeyParams};
//! use hybridgrid_core::task::{CompilerFamily, CompilerIdentity, DriverKind, Language};
//! use hybridgrid_core::worker::Arch;
//!
//! let gcc = CompilerIdentity {
//!     family: CompilerFamily::Gcc,
//!     driver: DriverKind::C,
//!     version: "12.2.0".into(),
//!     target: "x86_64-linux-gnu".into(),
//! };
//! let args = vec!["-O2".to_string()];
//! let key = KeyParams::new(&gcc, &args, &Arch::Amd64, Language::PreprocessedC, b"int x;\n").key();
//! assert_eq!(key.to_string().len(), 64);
//! ```

use std::fmt;
use std::str::FromStr;

use hybridgrid_core::payload::PayloadError;
use hybridgrid_core::task::{CompileTask, CompilerIdentity, Language, OutputKind, SourceMode};
use hybridgrid_core::worker::Arch;

/// The version of the key format and of what a cached entry means. Bump it
/// whenever the hashed inputs, their encoding or the entry semantics change:
/// every old key then misses.
pub const FORMAT_VERSION: u32 = 1;

/// A 32-byte content-addressed cache key, shown as 64 lowercase hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CacheKey([u8; 32]);

impl CacheKey {
    /// A key from its raw bytes.
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        CacheKey(bytes)
    }

    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The 64-digit lowercase hex form.
    pub fn to_hex(&self) -> String {
        self.to_string()
    }

    /// The key of a task: its compiler, arguments, target, language, the
    /// outputs it asks for, its working directory when debug information
    /// is requested (it ends up in the object), and its decoded input.
    ///
    /// Fails only if the input payload cannot be decoded.
    pub fn for_task(task: &CompileTask) -> Result<CacheKey, KeyError> {
        let input = task.input.decode()?;
        let mut params = KeyParams::new(
            &task.compiler,
            &task.args,
            &task.target_arch,
            task.language,
            &input,
        )
        .extra_outputs(&task.extra_outputs);
        if wants_debug_info(&task.args) || task.source_mode.is_some() {
            params = params.cwd(&task.cwd);
        }
        if let Some(m) = &task.source_mode {
            params.source_tree = Some(source_tree_digest(m));
        }
        Ok(params.key())
    }
}

/// True when the arguments ask for debug information (`-g`, `-ggdb3`, ...
/// but not `-g0`), in which case the working directory is part of the key.
pub fn wants_debug_info(args: &[String]) -> bool {
    let mut debug = false;
    for a in args {
        if a == "-g0" {
            debug = false;
        } else if a.starts_with("-g") && !a.starts_with("-gsplit-dwarf") {
            debug = true;
        }
    }
    debug
}

impl fmt::Display for CacheKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hybridgrid_core::hex::encode(&self.0))
    }
}

impl fmt::Debug for CacheKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CacheKey({self})")
    }
}

/// A string that is not 64 hex digits.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid cache key {0:?}: expected 64 hex digits")]
pub struct ParseKeyError(String);

impl FromStr for CacheKey {
    type Err = ParseKeyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        hybridgrid_core::hex::decode(s)
            .map(CacheKey)
            .ok_or_else(|| ParseKeyError(s.chars().take(80).collect()))
    }
}

/// Why a key could not be computed.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The task's input payload is corrupt.
    #[error("cannot hash task input: {0}")]
    Input(#[from] PayloadError),
}

/// Everything that goes into a [`CacheKey`], built with [`KeyParams::new`]
/// and the optional setters, then hashed with [`KeyParams::key`].
#[derive(Clone, Debug)]
pub struct KeyParams<'a> {
    /// The key format version; [`FORMAT_VERSION`] unless a test changes it.
    pub format_version: u32,
    /// Family, driver, version and target of the compiler.
    pub compiler: &'a CompilerIdentity,
    /// A hash of the compiler binary's content, if the caller has one
    /// (catches a compiler rebuilt without a version change).
    pub compiler_hash: Option<[u8; 32]>,
    /// Every argument that affects the output, in order, without `-o` and
    /// the input path.
    pub args: &'a [String],
    /// The architecture to produce code for.
    pub target_arch: &'a Arch,
    /// The language of `input`.
    pub language: Language,
    /// Output files requested besides the object.
    pub extra_outputs: &'a [OutputKind],
    /// The working directory, when it affects the output (debug info).
    pub cwd: Option<&'a str>,
    /// The (preprocessed) input bytes.
    pub input: &'a [u8],
    /// For a compile from source ([`CompileTask::source_mode`]): a digest
    /// of every file it reads (path and content) and of its output paths.
    pub source_tree: Option<[u8; 32]>,
}

impl<'a> KeyParams<'a> {
    /// The parameters of a compile with no extra outputs, no compiler hash
    /// and no working directory.
    pub fn new(
        compiler: &'a CompilerIdentity,
        args: &'a [String],
        target_arch: &'a Arch,
        language: Language,
        input: &'a [u8],
    ) -> Self {
        KeyParams {
            format_version: FORMAT_VERSION,
            compiler,
            compiler_hash: None,
            args,
            target_arch,
            language,
            extra_outputs: &[],
            cwd: None,
            input,
            source_tree: None,
        }
    }

    /// Adds a hash of the compiler binary.
    pub fn compiler_hash(mut self, hash: [u8; 32]) -> Self {
        self.compiler_hash = Some(hash);
        self
    }

    /// Sets the extra outputs requested.
    pub fn extra_outputs(mut self, kinds: &'a [OutputKind]) -> Self {
        self.extra_outputs = kinds;
        self
    }

    /// Adds the working directory.
    pub fn cwd(mut self, cwd: &'a str) -> Self {
        self.cwd = Some(cwd);
        self
    }

    /// Hashes the parameters.
    pub fn key(&self) -> CacheKey {
        let mut h = Hasher::new(b"hybridgrid-result");
        h.u64(u64::from(self.format_version));
        hash_compiler(&mut h, self.compiler, self.compiler_hash);
        h.u64(self.args.len() as u64);
        for a in self.args {
            h.bytes(a.as_bytes());
        }
        h.bytes(self.target_arch.as_str().as_bytes());
        h.bytes(self.language.as_x_arg().as_bytes());
        let mut kinds: Vec<&'static str> =
            self.extra_outputs.iter().map(|k| kind_name(*k)).collect();
        kinds.sort_unstable();
        kinds.dedup();
        h.u64(kinds.len() as u64);
        for k in kinds {
            h.bytes(k.as_bytes());
        }
        match self.cwd {
            Some(c) => {
                h.u64(1);
                h.bytes(c.as_bytes());
            }
            None => h.u64(0),
        }
        h.bytes(self.input);
        // Absent for preprocessed compiles, so their keys stay as they were.
        if let Some(t) = self.source_tree {
            h.bytes(b"source-tree");
            h.bytes(&t);
        }
        h.finish()
    }
}

/// The digest of a source-mode compile's files and output paths.
fn source_tree_digest(m: &SourceMode) -> [u8; 32] {
    let mut h = Hasher::new(b"hybridgrid-source-tree");
    h.u64(m.output_paths.len() as u64);
    for p in &m.output_paths {
        h.bytes(p.as_bytes());
    }
    // The digest stands for the content (a worker refuses a file whose
    // content does not match it, so no result is stored for one).
    let mut files: Vec<(&str, [u8; 32])> = m
        .files
        .iter()
        .map(|f| (f.path.as_str(), f.digest))
        .collect();
    // The order the preprocessor met them in does not change the output.
    files.sort_unstable();
    h.u64(files.len() as u64);
    for (path, content) in files {
        h.bytes(path.as_bytes());
        h.bytes(&content);
    }
    h.finish().0
}

fn kind_name(k: OutputKind) -> &'static str {
    match k {
        OutputKind::Object => "object",
        OutputKind::SplitDwarf => "split-dwarf",
        _ => "other",
    }
}

/// Hashes a compiler identity into `h` (shared with direct mode).
pub(crate) fn hash_compiler(h: &mut Hasher, c: &CompilerIdentity, binary: Option<[u8; 32]>) {
    h.bytes(c.family.as_str().as_bytes());
    h.bytes(c.driver.as_str().as_bytes());
    h.bytes(c.version.as_bytes());
    h.bytes(c.target.as_bytes());
    match binary {
        Some(b) => {
            h.u64(1);
            h.bytes(&b);
        }
        None => h.u64(0),
    }
}

/// A blake3 hasher that writes every field with a length prefix.
pub(crate) struct Hasher(blake3::Hasher);

impl Hasher {
    pub(crate) fn new(domain: &[u8]) -> Self {
        let mut h = Hasher(blake3::Hasher::new());
        h.bytes(domain);
        h
    }

    pub(crate) fn u64(&mut self, v: u64) {
        self.0.update(&v.to_le_bytes());
    }

    pub(crate) fn bytes(&mut self, b: &[u8]) {
        self.u64(b.len() as u64);
        self.0.update(b);
    }

    pub(crate) fn finish(&self) -> CacheKey {
        CacheKey(*self.0.finalize().as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hybridgrid_core::payload::Payload;
    use hybridgrid_core::task::{CompilerFamily, DriverKind};

    fn gcc(version: &str) -> CompilerIdentity {
        CompilerIdentity {
            family: CompilerFamily::Gcc,
            driver: DriverKind::C,
            version: version.into(),
            target: "x86_64-linux-gnu".into(),
        }
    }

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    const INPUT: &[u8] = b"# 1 \"x.c\"\nint x = 1;\n";

    fn base_key() -> CacheKey {
        let c = gcc("12.2.0");
        let a = args(&["-O2", "-DFOO=1"]);
        KeyParams::new(&c, &a, &Arch::Amd64, Language::PreprocessedC, INPUT).key()
    }

    #[test]
    fn a_source_tree_is_part_of_the_key() {
        use hybridgrid_core::task::SourceFile;
        let tree = |header: &'static [u8], out: &str| {
            let mut t = CompileTask::new(
                gcc("12.2.0"),
                Language::C,
                args(&["-g", "-Iinc"]),
                "a.c",
                Payload::raw(&b"#include \"h.h\"\n"[..]),
            );
            t.cwd = "/p".into();
            t.source_mode = Some(SourceMode {
                files: vec![SourceFile::with_data("/p/inc/h.h", header)],
                output_paths: vec![out.into()],
            });
            t
        };
        let k = |t: &CompileTask| CacheKey::for_task(t).unwrap();
        let base = tree(b"int a;", "a.o");
        assert_eq!(k(&base), k(&tree(b"int a;", "a.o")));
        assert_ne!(k(&base), k(&tree(b"int b;", "a.o")), "header content");
        assert_ne!(k(&base), k(&tree(b"int a;", "b.o")), "output path");
        let mut moved = base.clone();
        moved.source_mode.as_mut().unwrap().files[0].path = "/p/inc2/h.h".into();
        assert_ne!(k(&base), k(&moved), "header path");
        let mut elsewhere = base.clone();
        elsewhere.cwd = "/q".into();
        assert_ne!(k(&base), k(&elsewhere), "working directory");
        let mut plain = base.clone();
        plain.source_mode = None;
        assert_ne!(k(&base), k(&plain), "preprocessed vs from source");
        // A file sent by digest only keys as the same file with its content.
        let mut by_digest = base.clone();
        let f = &mut by_digest.source_mode.as_mut().unwrap().files[0];
        *f = SourceFile::by_digest(f.path.clone(), SourceFile::digest_of(b"int a;"));
        assert_eq!(k(&base), k(&by_digest), "sent by digest");
    }

    #[test]
    fn equal_inputs_give_equal_keys() {
        assert_eq!(base_key(), base_key());
        let c = gcc("12.2.0");
        let t1 = CompileTask::new(
            c.clone(),
            Language::PreprocessedC,
            args(&["-O2"]),
            "x.c",
            Payload::raw(INPUT),
        );
        // A different id, source name and payload encoding do not matter.
        let big = INPUT.repeat(100);
        let mut t2 = CompileTask::new(
            c.clone(),
            Language::PreprocessedC,
            args(&["-O2"]),
            "y.c",
            Payload::compress(big.clone()),
        );
        let t3 = CompileTask::new(
            c,
            Language::PreprocessedC,
            args(&["-O2"]),
            "x.c",
            Payload::raw(big),
        );
        assert_ne!(
            CacheKey::for_task(&t1).unwrap(),
            CacheKey::for_task(&t3).unwrap()
        );
        assert_eq!(
            CacheKey::for_task(&t2).unwrap(),
            CacheKey::for_task(&t3).unwrap()
        );
        t2.cwd = "/elsewhere".into(); // no -g: cwd ignored
        assert_eq!(
            CacheKey::for_task(&t2).unwrap(),
            CacheKey::for_task(&t3).unwrap()
        );
    }

    #[test]
    fn header_edit_changes_key() {
        // A header edit shows up as a different preprocessed input.
        let c = gcc("12.2.0");
        let a = args(&["-O2", "-DFOO=1"]);
        let edited = b"# 1 \"x.c\"\nint x = 2;\n";
        let k = KeyParams::new(&c, &a, &Arch::Amd64, Language::PreprocessedC, edited).key();
        assert_ne!(k, base_key());
    }

    #[test]
    fn define_change_changes_key() {
        let c = gcc("12.2.0");
        let a = args(&["-O2", "-DFOO=2"]);
        let k = KeyParams::new(&c, &a, &Arch::Amd64, Language::PreprocessedC, INPUT).key();
        assert_ne!(k, base_key());
    }

    #[test]
    fn compiler_version_changes_key() {
        let c = gcc("12.3.0");
        let a = args(&["-O2", "-DFOO=1"]);
        let k = KeyParams::new(&c, &a, &Arch::Amd64, Language::PreprocessedC, INPUT).key();
        assert_ne!(k, base_key());
    }

    #[test]
    fn compiler_binary_hash_changes_key() {
        let c = gcc("12.2.0");
        let a = args(&["-O2", "-DFOO=1"]);
        let p = KeyParams::new(&c, &a, &Arch::Amd64, Language::PreprocessedC, INPUT);
        let k1 = p.clone().compiler_hash([1; 32]).key();
        let k2 = p.clone().compiler_hash([2; 32]).key();
        assert_ne!(k1, k2);
        assert_ne!(k1, base_key());
    }

    #[test]
    fn compiler_family_driver_and_target_change_key() {
        let a = args(&["-O2", "-DFOO=1"]);
        let mut c = gcc("12.2.0");
        c.family = CompilerFamily::Clang;
        let k1 = KeyParams::new(&c, &a, &Arch::Amd64, Language::PreprocessedC, INPUT).key();
        let mut c = gcc("12.2.0");
        c.driver = DriverKind::Cxx;
        let k2 = KeyParams::new(&c, &a, &Arch::Amd64, Language::PreprocessedC, INPUT).key();
        let mut c = gcc("12.2.0");
        c.target = "x86_64-pc-linux-gnu".into();
        let k3 = KeyParams::new(&c, &a, &Arch::Amd64, Language::PreprocessedC, INPUT).key();
        for k in [k1, k2, k3] {
            assert_ne!(k, base_key());
        }
        assert_ne!(k1, k2);
        assert_ne!(k2, k3);
    }

    #[test]
    fn argument_order_changes_key() {
        let c = gcc("12.2.0");
        let a = args(&["-DFOO=1", "-O2"]);
        let k = KeyParams::new(&c, &a, &Arch::Amd64, Language::PreprocessedC, INPUT).key();
        assert_ne!(k, base_key());
    }

    #[test]
    fn argument_boundaries_matter() {
        let c = gcc("12.2.0");
        let a1 = args(&["-D", "A"]);
        let a2 = args(&["-DA"]);
        let k1 = KeyParams::new(&c, &a1, &Arch::Amd64, Language::PreprocessedC, INPUT).key();
        let k2 = KeyParams::new(&c, &a2, &Arch::Amd64, Language::PreprocessedC, INPUT).key();
        assert_ne!(k1, k2);
    }

    #[test]
    fn target_arch_changes_key() {
        let c = gcc("12.2.0");
        let a = args(&["-O2", "-DFOO=1"]);
        let k = KeyParams::new(&c, &a, &Arch::Arm64, Language::PreprocessedC, INPUT).key();
        assert_ne!(k, base_key());
    }

    #[test]
    fn language_changes_key() {
        let c = gcc("12.2.0");
        let a = args(&["-O2", "-DFOO=1"]);
        let k = KeyParams::new(&c, &a, &Arch::Amd64, Language::PreprocessedCxx, INPUT).key();
        assert_ne!(k, base_key());
    }

    #[test]
    fn format_version_changes_key() {
        let c = gcc("12.2.0");
        let a = args(&["-O2", "-DFOO=1"]);
        let mut p = KeyParams::new(&c, &a, &Arch::Amd64, Language::PreprocessedC, INPUT);
        p.format_version = FORMAT_VERSION + 1;
        assert_ne!(p.key(), base_key());
    }

    #[test]
    fn extra_outputs_change_key() {
        let c = gcc("12.2.0");
        let a = args(&["-O2", "-DFOO=1"]);
        let p = KeyParams::new(&c, &a, &Arch::Amd64, Language::PreprocessedC, INPUT);
        assert_ne!(
            p.clone().extra_outputs(&[OutputKind::SplitDwarf]).key(),
            base_key()
        );
    }

    #[test]
    fn cwd_counts_only_with_debug_info() {
        let c = gcc("12.2.0");
        let mk = |a: &[&str], cwd: &str| {
            let mut t = CompileTask::new(
                c.clone(),
                Language::PreprocessedC,
                args(a),
                "x.c",
                Payload::raw(INPUT),
            );
            t.cwd = cwd.into();
            CacheKey::for_task(&t).unwrap()
        };
        assert_eq!(mk(&["-O2"], "/a"), mk(&["-O2"], "/b"));
        assert_ne!(mk(&["-g"], "/a"), mk(&["-g"], "/b"));
        assert_eq!(mk(&["-g", "-g0"], "/a"), mk(&["-g", "-g0"], "/b"));
    }

    #[test]
    fn hex_roundtrip() {
        let k = base_key();
        let s = k.to_string();
        assert_eq!(s.len(), 64);
        assert!(
            s.bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        );
        assert_eq!(s.parse::<CacheKey>().unwrap(), k);
        assert!("xyz".parse::<CacheKey>().is_err());
        assert!("g".repeat(64).parse::<CacheKey>().is_err());
    }

    #[test]
    fn corrupt_input_is_an_error() {
        use bytes::Bytes;
        use hybridgrid_core::payload::Encoding;
        let t = CompileTask::new(
            gcc("12.2.0"),
            Language::PreprocessedC,
            vec![],
            "x.c",
            Payload::from_parts(Encoding::Zstd, Bytes::from_static(b"junk"), 100),
        );
        assert!(CacheKey::for_task(&t).is_err());
    }
}
