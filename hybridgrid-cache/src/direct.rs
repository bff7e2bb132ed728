//! Direct mode: finding a result without running the preprocessor.
//!
//! Like ccache's direct mode, a *manifest* keyed by what is known before
//! preprocessing (compiler identity, arguments, source path, source content,
//! working directory: [`DirectParams::manifest_key`]) lists, for each result
//! recorded under it, every file the preprocessor read with its content
//! hash, and the result's [`CacheKey`]. A lookup re-hashes the listed files
//! (hashes are remembered per process by path, size and modification time)
//! and answers the result key only if every one still matches.
//!
//! # Never a stale result
//!
//! * **Edited headers** change a content hash: no hit.
//! * **Changed defines or include paths** are arguments, so a different
//!   manifest.
//! * **A new header shadowing an old one.** We record, for every included
//!   file `D/name` found under an include search directory `D` (the caller
//!   passes the ordered search list, spelled as on the command line and as
//!   the preprocessor prints it), the paths `E/name` for every directory `E`
//!   searched before `D`, and for every directory holding a file of the
//!   translation unit (where a quoted `#include` looks first), that did
//!   **not** exist when the result was recorded. A lookup refuses a hit if
//!   any of them exists now. This is a superset of the places that could
//!   shadow (we do not know whether an include was quoted or angled), so it
//!   may refuse a hit that would have been valid, never the reverse.
//! * **`__DATE__`, `__TIME__`, `__TIMESTAMP__`** make the output depend on
//!   the clock: a source or header containing any of these tokens is never
//!   recorded, and a source containing them is never looked up.
//! * **`__has_include(<x.h>)`** (and `__has_include_next`) depends on files
//!   that need not exist. Every name tested in the source or a header is
//!   resolved against every search directory and every includer's
//!   directory: the candidates that exist are recorded with their content
//!   hashes like included files, the others as paths that must not appear.
//!   A test through a macro (`__has_include(HEADER)`) cannot be resolved
//!   without preprocessing: such a translation unit is never recorded.
//! * **Files modified during the compile** (modification or status change
//!   time within [`TOO_NEW`] of recording) are not recorded: the hash might
//!   not match what the preprocessor read. The per-process hash memo skips
//!   such files too, so a second edit within the file system's timestamp
//!   granularity cannot be missed.
//!
//! # Use (hgbuild)
//!
//! ```no_run
//! use hybridgrid_cache::direct::{included_files, DirectMode, DirectParams};
//! use hybridgrid_cache::DiskStore;
//! # fn demo(gcc: hybridgrid_core::task::CompilerIdentity, args: Vec<String>,
//! #         source: Vec<u8>, preprocessed: Vec<u8>,
//! #         result_key: hybridgrid_cache::CacheKey) {
//! let store = DiskStore::new("/home/me/.hybridgrid/cache", 10_000_000_000);
//! let direct = DirectMode::new(store.clone());
//! let params = DirectParams::new(&gcc, &args, "src/foo.c", &source, "/home/me/proj");
//! if let Some(key) = direct.lookup(&params) {
//!     // store.get_blocking(&key) and replay it (object, .d file, stderr).
//! } else {
//!     // preprocess, compute the result key, compile or hit, then:
//!     let includes = included_files(&preprocessed);
//!     let search = vec!["include".into(), "/usr/include".into()];
//!     let _ = direct.record(&params, &includes, &search, result_key);
//! }
//! # }
//! ```

use std::collections::{BTreeSet, HashMap};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use hybridgrid_core::task::CompilerIdentity;

use crate::key::{self, CacheKey, FORMAT_VERSION, Hasher};
use crate::store::DiskStore;

/// Files changed this recently are neither recorded nor memoized.
pub const TOO_NEW: Duration = Duration::from_secs(2);

/// Results kept per manifest (newest first).
pub const MAX_RESULTS: usize = 8;

/// Tokens that make a translation unit unfit for direct mode.
pub const VOLATILE_TOKENS: [&str; 3] = ["__DATE__", "__TIME__", "__TIMESTAMP__"];

/// The token whose answers depend on files that may not exist.
const HAS_INCLUDE: &str = "__has_include";

const MAGIC: [u8; 4] = *b"HGDM";
const MANIFEST_VERSION: u16 = 2;

/// What identifies a compile before preprocessing.
#[derive(Clone, Debug)]
pub struct DirectParams<'a> {
    /// The compiler.
    pub compiler: &'a CompilerIdentity,
    /// A hash of the compiler binary, if known.
    pub compiler_hash: Option<[u8; 32]>,
    /// The full command line except the compiler (defines, include paths,
    /// `-o` and dependency options: the replayed `.d` file names the target).
    pub args: &'a [String],
    /// The source path as given on the command line.
    pub source_path: &'a str,
    /// The source content.
    pub source: &'a [u8],
    /// The working directory; relative paths are resolved against it.
    pub cwd: &'a str,
}

impl<'a> DirectParams<'a> {
    /// The parameters of one compile.
    pub fn new(
        compiler: &'a CompilerIdentity,
        args: &'a [String],
        source_path: &'a str,
        source: &'a [u8],
        cwd: &'a str,
    ) -> Self {
        DirectParams {
            compiler,
            compiler_hash: None,
            args,
            source_path,
            source,
            cwd,
        }
    }

    /// The key the manifest is stored under.
    pub fn manifest_key(&self) -> CacheKey {
        let mut h = Hasher::new(b"hybridgrid-manifest");
        h.u64(u64::from(FORMAT_VERSION));
        key::hash_compiler(&mut h, self.compiler, self.compiler_hash);
        h.u64(self.args.len() as u64);
        for a in self.args {
            h.bytes(a.as_bytes());
        }
        h.bytes(self.source_path.as_bytes());
        h.bytes(blake3::hash(self.source).as_bytes());
        h.bytes(self.cwd.as_bytes());
        h.finish()
    }

    fn resolve(&self, p: &str) -> PathBuf {
        let path = Path::new(p);
        if path.is_absolute() || self.cwd.is_empty() {
            path.to_path_buf()
        } else {
            Path::new(self.cwd).join(path)
        }
    }
}

/// Why a compile was not recorded for direct mode.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DirectSkip {
    /// The source or a header uses `__DATE__`, `__TIME__`, `__TIMESTAMP__`,
    /// or `__has_include` through a macro.
    #[error("{path} uses {token}; direct mode disabled")]
    Volatile {
        /// The file.
        path: String,
        /// The token found.
        token: &'static str,
    },
    /// A file changed moments ago and may have changed during the compile.
    #[error("{0} was modified too recently for direct mode")]
    TooNew(String),
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Unreadable {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The manifest could not be written.
    #[error("cannot write the direct-mode manifest")]
    Store,
}

/// The first volatile token in `data`, if any.
pub fn volatile_token(data: &[u8]) -> Option<&'static str> {
    let mut i = 0;
    while let Some(off) = data[i..].windows(2).position(|w| w == b"__") {
        let at = i + off;
        for t in VOLATILE_TOKENS {
            if data[at..].starts_with(t.as_bytes()) {
                return Some(t);
            }
        }
        i = at + 1;
    }
    None
}

/// The header names that `data` tests with `__has_include` or
/// `__has_include_next` (`<x.h>` and `"x.h"` both give `x.h`). Mentions
/// that are not tests (`defined __has_include`, `#ifdef __has_include`)
/// are skipped. `Err(())` when a test's operand is not a literal header
/// name (a macro): what it tests is unknown without preprocessing.
#[allow(clippy::result_unit_err)]
pub fn has_include_names(data: &[u8]) -> Result<Vec<String>, ()> {
    let mut out = Vec::new();
    let tok = HAS_INCLUDE.as_bytes();
    let mut i = 0;
    while let Some(off) = data[i..].windows(tok.len()).position(|w| w == tok) {
        let mut j = i + off + tok.len();
        i = j;
        if data[j..].starts_with(b"_next") {
            j += 5;
        }
        // Part of a longer identifier?
        if data
            .get(j)
            .is_some_and(|c| c.is_ascii_alphanumeric() || *c == b'_')
        {
            continue;
        }
        let skip_ws = |mut k: usize| {
            while data
                .get(k)
                .is_some_and(|c| matches!(c, b' ' | b'\t' | b'\\' | b'\n' | b'\r'))
            {
                k += 1;
            }
            k
        };
        j = skip_ws(j);
        if data.get(j) != Some(&b'(') {
            continue;
        }
        j = skip_ws(j + 1);
        let close = match data.get(j) {
            Some(b'<') => b'>',
            Some(b'"') => b'"',
            _ => return Err(()),
        };
        let start = j + 1;
        let Some(len) = data[start..]
            .iter()
            .position(|c| *c == close || *c == b'\n')
        else {
            return Err(());
        };
        if data[start + len] != close || len == 0 {
            return Err(());
        }
        let name = std::str::from_utf8(&data[start..start + len]).map_err(|_| ())?;
        out.push(name.to_string());
        i = start + len;
    }
    Ok(out)
}

/// One recorded result.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ManifestResult {
    /// Every file the preprocessor read (besides the source), with the
    /// blake3 hash of its content.
    pub files: Vec<(String, [u8; 32])>,
    /// Per file, its status when recorded: a file whose status still
    /// matches is not read again (see [`Stamp`]).
    pub stamps: Vec<Option<Stamp>>,
    /// Paths that did not exist and must still not exist (would shadow),
    /// grouped by their nearest existing directory.
    pub absent: Vec<AbsentGroup>,
    /// The result.
    pub result: CacheKey,
    /// The dependency file the preprocessor wrote, if the command asked
    /// for one (it depends on `-o`/`-MT`, which the result key leaves out).
    pub dep_file: Option<Vec<u8>>,
    /// What the preprocessor printed on standard error (`#warning`...):
    /// the result's stderr is only the compiler's.
    pub preprocessor_stderr: Vec<u8>,
}

/// What `stat` says about a file or directory: device, inode, size,
/// modification and status-change times. Recorded only when both times
/// are older than the compile's start minus [`TOO_NEW`], so any later
/// change (which sets the status-change time to the present) shows. For a
/// directory, an unchanged stamp means no entry was added or removed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Stamp {
    /// `st_dev`.
    pub dev: u64,
    /// `st_ino`.
    pub ino: u64,
    /// `st_size`.
    pub size: u64,
    /// `st_mtime` in nanoseconds.
    pub mtime_ns: i64,
    /// `st_ctime` in nanoseconds.
    pub ctime_ns: i64,
}

impl Stamp {
    /// The stamp of `meta`.
    pub fn of(meta: &fs::Metadata) -> Stamp {
        use std::os::unix::fs::MetadataExt;
        Stamp {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.size(),
            mtime_ns: meta.mtime().saturating_mul(1_000_000_000) + meta.mtime_nsec(),
            ctime_ns: meta.ctime().saturating_mul(1_000_000_000) + meta.ctime_nsec(),
        }
    }

    /// The stamp of `meta` if nothing changed it after `recent`.
    fn trusted(meta: &fs::Metadata, recent: SystemTime) -> Option<Stamp> {
        (!changed_since(meta, recent)).then(|| Stamp::of(meta))
    }

    const LEN: usize = 8 * 5;

    fn encode(&self, out: &mut Vec<u8>) {
        for v in [self.dev, self.ino, self.size] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        for v in [self.mtime_ns, self.ctime_ns] {
            out.extend_from_slice(&v.to_le_bytes());
        }
    }
}

/// Absent paths under one existing directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AbsentGroup {
    /// The nearest existing ancestor of every path (as spelled, relative
    /// paths against the working directory).
    pub dir: String,
    /// Its stamp when recorded, if trusted: while it matches, no entry was
    /// added to it, so none of the paths can exist.
    pub stamp: Option<Stamp>,
    /// The paths that must not exist.
    pub paths: Vec<String>,
}

/// A direct-mode hit: the result key and what the skipped preprocessor
/// would have produced besides its output.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirectHit {
    /// The result to replay.
    pub result: CacheKey,
    /// The dependency file to write, if the command writes one.
    pub dep_file: Option<Vec<u8>>,
    /// The preprocessor's diagnostics, printed before the result's.
    pub preprocessor_stderr: Vec<u8>,
}

/// What a compile read and produced besides its result, for
/// [`DirectMode::record_compile`].
#[derive(Clone, Copy, Debug, Default)]
pub struct Recording<'a> {
    /// Every file the preprocessor read ([`included_files`]), as spelled.
    pub includes: &'a [String],
    /// The include search directories in search order (quote directories,
    /// then the others, system ones included).
    pub search_dirs: &'a [String],
    /// Search directories that did not exist (the preprocessor skipped
    /// them): a lookup misses once any of them exists.
    pub missing_dirs: &'a [String],
    /// When the compile started (before preprocessing): a file changed
    /// after `started` minus [`TOO_NEW`] is not recorded, since the
    /// preprocessor may have read another version. `None`: now.
    pub started: Option<SystemTime>,
    /// The dependency file written, if any.
    pub dep_file: Option<&'a [u8]>,
    /// The preprocessor's standard error.
    pub preprocessor_stderr: &'a [u8],
}

/// The results recorded for one manifest key, newest first.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Manifest {
    /// The results.
    pub results: Vec<ManifestResult>,
}

/// Why bytes are not a manifest.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed direct-mode manifest: {0}")]
pub struct ManifestError(&'static str);

impl Manifest {
    /// The binary encoding: magic, version, results, blake3 checksum.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&MANIFEST_VERSION.to_le_bytes());
        out.extend_from_slice(&(self.results.len() as u32).to_le_bytes());
        let put_bytes = |out: &mut Vec<u8>, b: &[u8]| {
            out.extend_from_slice(&(b.len() as u32).to_le_bytes());
            out.extend_from_slice(b);
        };
        let put_str = |out: &mut Vec<u8>, s: &str| put_bytes(out, s.as_bytes());
        for r in &self.results {
            out.extend_from_slice(r.result.as_bytes());
            let put_stamp = |out: &mut Vec<u8>, s: &Option<Stamp>| match s {
                Some(s) => {
                    out.push(1);
                    s.encode(out);
                }
                None => out.push(0),
            };
            out.extend_from_slice(&(r.files.len() as u32).to_le_bytes());
            for (i, (p, h)) in r.files.iter().enumerate() {
                put_str(&mut out, p);
                out.extend_from_slice(h);
                put_stamp(&mut out, r.stamps.get(i).unwrap_or(&None));
            }
            out.extend_from_slice(&(r.absent.len() as u32).to_le_bytes());
            for g in &r.absent {
                put_str(&mut out, &g.dir);
                put_stamp(&mut out, &g.stamp);
                out.extend_from_slice(&(g.paths.len() as u32).to_le_bytes());
                for p in &g.paths {
                    put_str(&mut out, p);
                }
            }
            match &r.dep_file {
                Some(d) => {
                    out.push(1);
                    put_bytes(&mut out, d);
                }
                None => out.push(0),
            }
            put_bytes(&mut out, &r.preprocessor_stderr);
        }
        let sum = blake3::hash(&out);
        out.extend_from_slice(sum.as_bytes());
        out
    }

    /// Decodes and validates a manifest.
    pub fn decode(data: &[u8]) -> Result<Manifest, ManifestError> {
        if data.len() < 4 + 2 + 4 + 32 {
            return Err(ManifestError("truncated"));
        }
        let body = &data[..data.len() - 32];
        if blake3::hash(body).as_bytes()[..] != data[data.len() - 32..] {
            return Err(ManifestError("checksum mismatch"));
        }
        let mut r = Cursor { data: body, pos: 0 };
        if r.take(4)? != MAGIC {
            return Err(ManifestError("bad magic"));
        }
        if r.u16()? != MANIFEST_VERSION {
            return Err(ManifestError("unsupported version"));
        }
        let n = r.u32()?;
        let mut results = Vec::new();
        for _ in 0..n {
            let result = CacheKey::from_bytes(r.array()?);
            let nf = r.u32()?;
            let mut files = Vec::new();
            let mut stamps = Vec::new();
            for _ in 0..nf {
                let p = r.string()?;
                files.push((p, r.array()?));
                stamps.push(r.stamp()?);
            }
            let na = r.u32()?;
            let mut absent = Vec::new();
            for _ in 0..na {
                let dir = r.string()?;
                let stamp = r.stamp()?;
                let np = r.u32()?;
                let mut paths = Vec::new();
                for _ in 0..np {
                    paths.push(r.string()?);
                }
                absent.push(AbsentGroup { dir, stamp, paths });
            }
            let dep_file = match r.take(1)?[0] {
                0 => None,
                1 => Some(r.blob()?.to_vec()),
                _ => return Err(ManifestError("bad dependency file flag")),
            };
            let preprocessor_stderr = r.blob()?.to_vec();
            results.push(ManifestResult {
                files,
                stamps,
                absent,
                result,
                dep_file,
                preprocessor_stderr,
            });
        }
        if r.pos != body.len() {
            return Err(ManifestError("trailing bytes"));
        }
        Ok(Manifest { results })
    }
}

struct Cursor<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], ManifestError> {
        if n > self.data.len() - self.pos {
            return Err(ManifestError("truncated"));
        }
        let s = &self.data[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N], ManifestError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }
    fn u16(&mut self) -> Result<u16, ManifestError> {
        Ok(u16::from_le_bytes(self.array()?))
    }
    fn u32(&mut self) -> Result<u32, ManifestError> {
        Ok(u32::from_le_bytes(self.array()?))
    }
    fn stamp(&mut self) -> Result<Option<Stamp>, ManifestError> {
        match self.take(1)?[0] {
            0 => Ok(None),
            1 => {
                let b = self.take(Stamp::LEN)?;
                let u = |i: usize| {
                    let mut a = [0u8; 8];
                    a.copy_from_slice(&b[i * 8..i * 8 + 8]);
                    a
                };
                Ok(Some(Stamp {
                    dev: u64::from_le_bytes(u(0)),
                    ino: u64::from_le_bytes(u(1)),
                    size: u64::from_le_bytes(u(2)),
                    mtime_ns: i64::from_le_bytes(u(3)),
                    ctime_ns: i64::from_le_bytes(u(4)),
                }))
            }
            _ => Err(ManifestError("bad stamp flag")),
        }
    }
    fn blob(&mut self) -> Result<&'a [u8], ManifestError> {
        let n = self.u32()? as usize;
        self.take(n)
    }
    fn string(&mut self) -> Result<String, ManifestError> {
        let b = self.blob()?;
        String::from_utf8(b.to_vec()).map_err(|_| ManifestError("path not UTF-8"))
    }
}

/// A remembered file hash: size, modification time, hash.
type HashMemo = (u64, SystemTime, [u8; 32]);

/// Direct-mode lookups and recording over a [`DiskStore`]. Blocking I/O:
/// meant for `hgbuild`, one process per compile.
#[derive(Debug)]
pub struct DirectMode {
    store: DiskStore,
    too_new: Duration,
    hashes: Mutex<HashMap<PathBuf, HashMemo>>,
}

impl DirectMode {
    /// Direct mode storing manifests in `store`'s directory.
    pub fn new(store: DiskStore) -> Self {
        DirectMode {
            store,
            too_new: TOO_NEW,
            hashes: Mutex::new(HashMap::new()),
        }
    }

    /// Changes the [`TOO_NEW`] window (tests use zero: their files are
    /// always brand new).
    pub fn with_too_new(mut self, window: Duration) -> Self {
        self.too_new = window;
        self
    }

    /// The result key recorded for this compile, if every file it read is
    /// unchanged and nothing new would shadow one of them.
    pub fn lookup(&self, params: &DirectParams<'_>) -> Option<CacheKey> {
        self.lookup_hit(params).map(|h| h.result)
    }

    /// Like [`DirectMode::lookup`], with the dependency file and the
    /// preprocessor's diagnostics recorded with the result.
    pub fn lookup_hit(&self, params: &DirectParams<'_>) -> Option<DirectHit> {
        if volatile_token(params.source).is_some() {
            return None;
        }
        let key = params.manifest_key();
        let data = self.store.read_manifest_bytes(&key)?;
        let manifest = match Manifest::decode(&data) {
            Ok(m) => m,
            Err(err) => {
                tracing::warn!(key = %key, error = %err, "corrupt direct-mode manifest removed");
                self.store.remove_manifest(&key, data.len());
                return None;
            }
        };
        manifest
            .results
            .into_iter()
            .find(|r| self.still_valid(params, r))
            .map(|r| DirectHit {
                result: r.result,
                dep_file: r.dep_file,
                preprocessor_stderr: r.preprocessor_stderr,
            })
    }

    fn still_valid(&self, params: &DirectParams<'_>, r: &ManifestResult) -> bool {
        let absent = |p: &String| {
            matches!(fs::symlink_metadata(params.resolve(p)),
                     Err(e) if e.kind() == io::ErrorKind::NotFound)
        };
        let nothing_shadows = r.absent.iter().all(|g| {
            let unchanged = g.stamp.is_some_and(|st| {
                matches!(fs::symlink_metadata(params.resolve(&g.dir)),
                         Ok(m) if m.is_dir() && Stamp::of(&m) == st)
            });
            unchanged || g.paths.iter().all(absent)
        });
        nothing_shadows
            && r.files.iter().enumerate().all(|(i, (p, h))| {
                let path = params.resolve(p);
                if let Some(Some(st)) = r.stamps.get(i)
                    && matches!(fs::metadata(&path), Ok(m) if Stamp::of(&m) == *st)
                {
                    return true;
                }
                matches!(self.hash_file(&path), Ok(got) if got == *h)
            })
    }

    /// Records that the compile described by `params`, which read
    /// `includes` (from [`included_files`], as the preprocessor spelled
    /// them) with include search directories `search_dirs` (in search
    /// order, spelled as on the command line, system directories
    /// included), produced `result`.
    pub fn record(
        &self,
        params: &DirectParams<'_>,
        includes: &[String],
        search_dirs: &[String],
        result: CacheKey,
    ) -> Result<(), DirectSkip> {
        let rec = Recording {
            includes,
            search_dirs,
            ..Recording::default()
        };
        self.record_compile(params, &rec, result)
    }

    /// Records a compile (see [`Recording`]) that produced `result`.
    pub fn record_compile(
        &self,
        params: &DirectParams<'_>,
        rec: &Recording<'_>,
        result: CacheKey,
    ) -> Result<(), DirectSkip> {
        let (includes, search_dirs) = (rec.includes, rec.search_dirs);
        if let Some(token) = volatile_token(params.source) {
            return Err(DirectSkip::Volatile {
                path: params.source_path.to_string(),
                token,
            });
        }
        let recent = rec.started.unwrap_or_else(SystemTime::now) - self.too_new;
        if rec.started.is_some() {
            // The source was read before the compile; it must not have
            // changed since.
            let path = params.resolve(params.source_path);
            let meta = fs::metadata(&path).map_err(|source| DirectSkip::Unreadable {
                path: params.source_path.to_string(),
                source,
            })?;
            if changed_since(&meta, recent) {
                return Err(DirectSkip::TooNew(params.source_path.to_string()));
            }
        }
        let mut files = Vec::with_capacity(includes.len());
        let mut stamps = Vec::with_capacity(includes.len());
        let mut tested = BTreeSet::new();
        let mut scan_has_include = |path: &str, data: &[u8]| match has_include_names(data) {
            Ok(names) => {
                tested.extend(names);
                Ok(())
            }
            Err(()) => Err(DirectSkip::Volatile {
                path: path.to_string(),
                token: HAS_INCLUDE,
            }),
        };
        scan_has_include(params.source_path, params.source)?;
        for p in includes {
            let path = params.resolve(p);
            let unreadable = |source| DirectSkip::Unreadable {
                path: p.clone(),
                source,
            };
            let meta = fs::metadata(&path).map_err(unreadable)?;
            if changed_since(&meta, recent) {
                return Err(DirectSkip::TooNew(p.clone()));
            }
            let data = fs::read(&path).map_err(unreadable)?;
            if let Some(token) = volatile_token(&data) {
                return Err(DirectSkip::Volatile {
                    path: p.clone(),
                    token,
                });
            }
            scan_has_include(p, &data)?;
            files.push((p.clone(), *blake3::hash(&data).as_bytes()));
            stamps.push(Stamp::trusted(&meta, recent));
        }
        let mut absent: Vec<String> = shadow_candidates(params.source_path, includes, search_dirs)
            .into_iter()
            .filter(|c| {
                matches!(fs::symlink_metadata(params.resolve(c)),
                         Err(e) if e.kind() == io::ErrorKind::NotFound)
            })
            .collect();
        // Every place a tested name could be found: present ones must stay
        // as they are, absent ones absent.
        if !tested.is_empty() {
            let includer_dirs: BTreeSet<String> = std::iter::once(params.source_path)
                .chain(includes.iter().map(String::as_str))
                .map(parent_dir)
                .collect();
            let mut seen = BTreeSet::new();
            for name in &tested {
                let candidates: Vec<String> = if name.starts_with('/') {
                    vec![name.clone()]
                } else {
                    search_dirs
                        .iter()
                        .chain(includer_dirs.iter())
                        .map(|d| join(d, name))
                        .collect()
                };
                for c in candidates {
                    if !seen.insert(c.clone()) {
                        continue;
                    }
                    let path = params.resolve(&c);
                    match fs::metadata(&path) {
                        Ok(meta) if meta.is_file() => {
                            if changed_since(&meta, recent) {
                                return Err(DirectSkip::TooNew(c));
                            }
                            let data =
                                fs::read(&path).map_err(|source| DirectSkip::Unreadable {
                                    path: c.clone(),
                                    source,
                                })?;
                            files.push((c, *blake3::hash(&data).as_bytes()));
                            stamps.push(Stamp::trusted(&meta, recent));
                        }
                        Ok(_) => {
                            return Err(DirectSkip::Unreadable {
                                path: c,
                                source: io::Error::other("not a regular file"),
                            });
                        }
                        Err(e)
                            if matches!(
                                e.kind(),
                                io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
                            ) =>
                        {
                            absent.push(c)
                        }
                        Err(source) => return Err(DirectSkip::Unreadable { path: c, source }),
                    }
                }
            }
        }
        for d in rec.missing_dirs {
            match fs::symlink_metadata(params.resolve(d)) {
                Err(e) if e.kind() == io::ErrorKind::NotFound => absent.push(d.clone()),
                // Created meanwhile: it may hold a header the preprocessor
                // did not see.
                _ => return Err(DirectSkip::TooNew(d.clone())),
            }
        }
        let absent = group_absent(params, absent, recent);
        let new = ManifestResult {
            files,
            stamps,
            absent,
            result,
            dep_file: rec.dep_file.map(<[u8]>::to_vec),
            preprocessor_stderr: rec.preprocessor_stderr.to_vec(),
        };
        let key = params.manifest_key();
        let mut manifest = self
            .store
            .read_manifest_bytes(&key)
            .and_then(|d| Manifest::decode(&d).ok())
            .unwrap_or_default();
        manifest.results.retain(|r| r.files != new.files);
        manifest.results.insert(0, new);
        manifest.results.truncate(MAX_RESULTS);
        if self.store.write_manifest_bytes(&key, &manifest.encode()) {
            Ok(())
        } else {
            Err(DirectSkip::Store)
        }
    }

    /// The content hash of a file, memoized by (path, size, mtime) unless
    /// the file changed within [`TOO_NEW`].
    fn hash_file(&self, path: &Path) -> io::Result<[u8; 32]> {
        let meta = fs::metadata(path)?;
        let mtime = meta.modified()?;
        let size = meta.len();
        {
            let memo = self.hashes.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((s, m, h)) = memo.get(path) {
                if *s == size && *m == mtime {
                    return Ok(*h);
                }
            }
        }
        let data = fs::read(path)?;
        let hash = *blake3::hash(&data).as_bytes();
        if !changed_since(&meta, SystemTime::now() - self.too_new) && data.len() as u64 == size {
            let mut memo = self.hashes.lock().unwrap_or_else(|p| p.into_inner());
            memo.insert(path.to_path_buf(), (size, mtime, hash));
        }
        Ok(hash)
    }
}

/// Groups absent paths by their nearest existing directory, stamped when
/// trusted.
fn group_absent(
    params: &DirectParams<'_>,
    absent: Vec<String>,
    recent: SystemTime,
) -> Vec<AbsentGroup> {
    let mut groups: Vec<AbsentGroup> = Vec::new();
    let mut index: HashMap<String, usize> = HashMap::new();
    for p in absent {
        // The nearest existing ancestor, as spelled.
        let mut dir = parent_dir(&p);
        let meta = loop {
            match fs::symlink_metadata(params.resolve(&dir)) {
                Ok(m) => break Some(m),
                Err(_) if dir != "/" && dir != "." => dir = parent_dir(&dir),
                Err(_) => break None,
            }
        };
        let i = *index.entry(dir.clone()).or_insert_with(|| {
            groups.push(AbsentGroup {
                stamp: meta
                    .as_ref()
                    .filter(|m| m.is_dir())
                    .and_then(|m| Stamp::trusted(m, recent)),
                dir,
                paths: Vec::new(),
            });
            groups.len() - 1
        });
        groups[i].paths.push(p);
    }
    groups
}

fn changed_since(meta: &fs::Metadata, t: SystemTime) -> bool {
    let newer = |x: io::Result<SystemTime>| x.map(|x| x > t).unwrap_or(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        let ctime = SystemTime::UNIX_EPOCH
            + Duration::new(
                u64::try_from(meta.ctime()).unwrap_or(0),
                u32::try_from(meta.ctime_nsec()).unwrap_or(0),
            );
        if ctime > t {
            return true;
        }
    }
    newer(meta.modified())
}

/// The name an include was looked up by, if `path` lies under `dir`.
fn name_under<'p>(path: &'p str, dir: &str) -> Option<&'p str> {
    let dir = dir.trim_end_matches('/');
    let rest = if dir.is_empty() {
        path.strip_prefix('/')?
    } else {
        path.strip_prefix(dir)?.strip_prefix('/')?
    };
    let rest = rest.trim_start_matches('/');
    (!rest.is_empty()).then_some(rest)
}

fn parent_dir(p: &str) -> String {
    match p.rfind('/') {
        Some(0) => "/".to_string(),
        Some(i) => p[..i].to_string(),
        None => ".".to_string(),
    }
}

fn join(dir: &str, name: &str) -> String {
    if dir == "." {
        name.to_string()
    } else {
        format!("{}/{}", dir.trim_end_matches('/'), name)
    }
}

/// The paths where a new file would shadow one of `includes` (see the
/// module docs); the caller keeps those that do not exist.
pub fn shadow_candidates(
    source: &str,
    includes: &[String],
    search_dirs: &[String],
) -> BTreeSet<String> {
    let includer_dirs: BTreeSet<String> = std::iter::once(source)
        .chain(includes.iter().map(String::as_str))
        .map(parent_dir)
        .collect();
    let mut out = BTreeSet::new();
    for p in includes {
        for (i, d) in search_dirs.iter().enumerate() {
            let Some(name) = name_under(p, d) else {
                continue;
            };
            let earlier = search_dirs[..i].iter().chain(includer_dirs.iter());
            for e in earlier {
                let c = join(e, name);
                if c != *p {
                    out.insert(c);
                }
            }
        }
    }
    out
}

/// The include search list as a compiler's `-v` prints it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SearchList {
    /// The directories searched, in order (the quote list, then the
    /// angle-bracket list).
    pub dirs: Vec<String>,
    /// Directories named by options or built in that did not exist (gcc
    /// and clang say `ignoring nonexistent directory "..."`).
    pub missing: Vec<String>,
}

/// Parses the standard error of `cc -E -v ...` (gcc and clang print the
/// same text). `None` if it holds no complete search list.
pub fn parse_search_list(stderr: &[u8]) -> Option<SearchList> {
    let text = String::from_utf8_lossy(stderr);
    let mut out = SearchList::default();
    let mut in_list = false;
    let mut complete = false;
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("ignoring nonexistent directory ") {
            let d = rest.trim().trim_matches('"');
            if !d.is_empty() {
                out.missing.push(d.to_string());
            }
            continue;
        }
        if line.starts_with("#include \"...\" search starts here:")
            || line.starts_with("#include <...> search starts here:")
        {
            in_list = true;
            continue;
        }
        if line.starts_with("End of search list.") {
            complete = in_list;
            in_list = false;
            continue;
        }
        if in_list {
            // A leading space; clang marks macOS frameworks.
            let d = line.trim().trim_end_matches(" (framework directory)");
            if !d.is_empty() {
                out.dirs.push(d.to_string());
            }
        }
    }
    complete.then_some(out)
}

pub use hybridgrid_core::preprocessed::included_files;
#[cfg(test)]
use hybridgrid_core::preprocessed::parse_line_marker;

#[cfg(test)]
mod tests {
    use super::*;
    use hybridgrid_core::task::{CompilerFamily, DriverKind};

    fn gcc(version: &str) -> CompilerIdentity {
        CompilerIdentity {
            family: CompilerFamily::Gcc,
            driver: DriverKind::C,
            version: version.into(),
            target: "x86_64-linux-gnu".into(),
        }
    }

    /// A project: `src/a.c` including `foo.h` found in `inc2` (search
    /// path `inc1`, `inc2`), which includes `bar.h` next to it.
    struct Project {
        _tmp: tempfile::TempDir,
        root: String,
        store: DiskStore,
    }

    impl Project {
        fn new() -> Self {
            let tmp = tempfile::tempdir().unwrap();
            let root = tmp.path().to_str().unwrap().to_string();
            for d in ["src", "inc1", "inc2"] {
                fs::create_dir_all(tmp.path().join(d)).unwrap();
            }
            fs::write(
                tmp.path().join("src/a.c"),
                "#include \"foo.h\"\nint a = FOO;\n",
            )
            .unwrap();
            fs::write(
                tmp.path().join("inc2/foo.h"),
                "#include \"bar.h\"\n#define FOO 1\n",
            )
            .unwrap();
            fs::write(tmp.path().join("inc2/bar.h"), "int bar;\n").unwrap();
            let store = DiskStore::new(tmp.path().join("cache"), 1 << 30);
            Project {
                _tmp: tmp,
                root,
                store,
            }
        }

        fn path(&self, rel: &str) -> String {
            format!("{}/{}", self.root, rel)
        }

        fn write(&self, rel: &str, text: &str) {
            fs::write(self.path(rel), text).unwrap();
        }

        fn source(&self) -> Vec<u8> {
            fs::read(self.path("src/a.c")).unwrap()
        }

        /// A fresh process's view.
        fn direct(&self) -> DirectMode {
            DirectMode::new(self.store.clone()).with_too_new(Duration::ZERO)
        }

        fn search(&self) -> Vec<String> {
            vec![self.path("inc1"), self.path("inc2")]
        }

        fn includes(&self) -> Vec<String> {
            vec![self.path("inc2/foo.h"), self.path("inc2/bar.h")]
        }

        fn args(&self, define: &str) -> Vec<String> {
            vec![
                format!("-D{define}"),
                format!("-I{}", self.path("inc1")),
                format!("-I{}", self.path("inc2")),
            ]
        }

        fn record(
            &self,
            dm: &DirectMode,
            args: &[String],
            result: CacheKey,
        ) -> Result<(), DirectSkip> {
            let src = self.source();
            let c = gcc("12.2.0");
            let p = DirectParams::new(&c, args, "src/a.c", &src, &self.root);
            dm.record(&p, &self.includes(), &self.search(), result)
        }

        fn lookup(&self, dm: &DirectMode, args: &[String]) -> Option<CacheKey> {
            let src = self.source();
            let c = gcc("12.2.0");
            let p = DirectParams::new(&c, args, "src/a.c", &src, &self.root);
            dm.lookup(&p)
        }
    }

    const R1: CacheKey = CacheKey::from_bytes([1; 32]);
    const R2: CacheKey = CacheKey::from_bytes([2; 32]);

    #[test]
    fn hit_when_nothing_changed() {
        let p = Project::new();
        let args = p.args("X=1");
        assert_eq!(p.lookup(&p.direct(), &args), None);
        p.record(&p.direct(), &args, R1).unwrap();
        assert_eq!(p.lookup(&p.direct(), &args), Some(R1));
        // Same process twice (memoized hashes).
        let dm = p.direct();
        assert_eq!(p.lookup(&dm, &args), Some(R1));
        assert_eq!(p.lookup(&dm, &args), Some(R1));
    }

    #[test]
    fn header_edit_is_a_miss() {
        let p = Project::new();
        let args = p.args("X=1");
        let dm = p.direct();
        p.record(&dm, &args, R1).unwrap();
        assert_eq!(p.lookup(&dm, &args), Some(R1));
        // Same size, different content, in the same process.
        p.write("inc2/bar.h", "int baz;\n");
        assert_eq!(p.lookup(&dm, &args), None);
        assert_eq!(p.lookup(&p.direct(), &args), None);
        // Recording the new state keeps both results.
        p.record(&dm, &args, R2).unwrap();
        assert_eq!(p.lookup(&p.direct(), &args), Some(R2));
        p.write("inc2/bar.h", "int bar;\n");
        assert_eq!(p.lookup(&p.direct(), &args), Some(R1));
    }

    #[test]
    fn source_edit_is_a_miss() {
        let p = Project::new();
        let args = p.args("X=1");
        p.record(&p.direct(), &args, R1).unwrap();
        p.write("src/a.c", "#include \"foo.h\"\nint a = FOO + 1;\n");
        assert_eq!(p.lookup(&p.direct(), &args), None);
    }

    #[test]
    fn removed_header_is_a_miss() {
        let p = Project::new();
        let args = p.args("X=1");
        p.record(&p.direct(), &args, R1).unwrap();
        fs::remove_file(p.path("inc2/bar.h")).unwrap();
        assert_eq!(p.lookup(&p.direct(), &args), None);
    }

    #[test]
    fn define_change_is_a_miss() {
        let p = Project::new();
        p.record(&p.direct(), &p.args("X=1"), R1).unwrap();
        assert_eq!(p.lookup(&p.direct(), &p.args("X=2")), None);
        let c = gcc("12.3.0");
        let src = p.source();
        let args = p.args("X=1");
        let params = DirectParams::new(&c, &args, "src/a.c", &src, &p.root);
        assert_eq!(p.direct().lookup(&params), None);
    }

    #[test]
    fn new_header_earlier_on_the_search_path_is_a_miss() {
        let p = Project::new();
        let args = p.args("X=1");
        p.record(&p.direct(), &args, R1).unwrap();
        p.write("inc1/foo.h", "#define FOO 2\n");
        assert_eq!(p.lookup(&p.direct(), &args), None);
        fs::remove_file(p.path("inc1/foo.h")).unwrap();
        assert_eq!(p.lookup(&p.direct(), &args), Some(R1));
    }

    #[test]
    fn new_header_next_to_the_includer_is_a_miss() {
        let p = Project::new();
        let args = p.args("X=1");
        p.record(&p.direct(), &args, R1).unwrap();
        // `#include "foo.h"` in src/a.c looks in src/ first.
        p.write("src/foo.h", "#define FOO 3\n");
        assert_eq!(p.lookup(&p.direct(), &args), None);
    }

    #[test]
    fn existing_unused_candidates_do_not_block_hits() {
        let p = Project::new();
        // A bar.h in inc1 exists at record time (not the one used, e.g. via
        // #include_next); it must not make every lookup miss.
        p.write("inc1/bar.h", "int other;\n");
        let args = p.args("X=1");
        p.record(&p.direct(), &args, R1).unwrap();
        assert_eq!(p.lookup(&p.direct(), &args), Some(R1));
    }

    #[test]
    fn date_and_time_disable_direct_mode() {
        let p = Project::new();
        let args = p.args("X=1");
        p.write("src/a.c", "const char *d = __DATE__;\n");
        assert!(matches!(
            p.record(&p.direct(), &args, R1),
            Err(DirectSkip::Volatile {
                token: "__DATE__",
                ..
            })
        ));
        assert_eq!(p.lookup(&p.direct(), &args), None);

        let p = Project::new();
        p.write("inc2/bar.h", "const char *t = __TIME__;\n");
        assert!(matches!(
            p.record(&p.direct(), &args, R1),
            Err(DirectSkip::Volatile {
                token: "__TIME__",
                ..
            })
        ));
        assert_eq!(p.lookup(&p.direct(), &args), None);

        let p = Project::new();
        p.write("inc2/bar.h", "#if __has_include(HEADER)\n#endif\n");
        assert!(matches!(
            p.record(&p.direct(), &args, R1),
            Err(DirectSkip::Volatile {
                token: "__has_include",
                ..
            })
        ));
    }

    #[test]
    fn too_new_files_are_not_recorded() {
        let p = Project::new();
        let args = p.args("X=1");
        let dm = DirectMode::new(p.store.clone());
        assert!(matches!(
            p.record(&dm, &args, R1),
            Err(DirectSkip::TooNew(_))
        ));
        assert_eq!(p.lookup(&p.direct(), &args), None);
    }

    #[test]
    fn corrupt_manifest_is_a_miss_and_removed() {
        let p = Project::new();
        let args = p.args("X=1");
        p.record(&p.direct(), &args, R1).unwrap();
        let src = p.source();
        let c = gcc("12.2.0");
        let params = DirectParams::new(&c, &args, "src/a.c", &src, &p.root);
        let path = p.store.manifest_path(&params.manifest_key());
        let mut data = fs::read(&path).unwrap();
        let mid = data.len() / 2;
        data[mid] ^= 1;
        fs::write(&path, &data).unwrap();
        assert_eq!(p.direct().lookup(&params), None);
        assert!(!path.exists());
    }

    #[test]
    fn relative_paths_resolve_against_cwd() {
        let p = Project::new();
        let args = p.args("X=1");
        let src = p.source();
        let c = gcc("12.2.0");
        let params = DirectParams::new(&c, &args, "src/a.c", &src, &p.root);
        let includes = vec!["inc2/foo.h".to_string(), "inc2/bar.h".to_string()];
        let search = vec!["inc1".to_string(), "inc2".to_string()];
        p.direct().record(&params, &includes, &search, R1).unwrap();
        assert_eq!(p.direct().lookup(&params), Some(R1));
        p.write("inc1/foo.h", "x");
        assert_eq!(p.direct().lookup(&params), None);
    }

    #[test]
    fn manifest_roundtrip_and_garbage() {
        let m = Manifest {
            results: vec![ManifestResult {
                files: vec![("/a/b.h".into(), [3; 32])],
                stamps: vec![Some(Stamp {
                    dev: 1,
                    ino: 2,
                    size: 3,
                    mtime_ns: 4,
                    ctime_ns: -5,
                })],
                absent: vec![AbsentGroup {
                    dir: "/x".into(),
                    stamp: None,
                    paths: vec!["/x/b.h".into()],
                }],
                result: R1,
                dep_file: Some(b"a.o: a.c /a/b.h\n".to_vec()),
                preprocessor_stderr: b"warning: w\n".to_vec(),
            }],
        };
        let enc = m.encode();
        assert_eq!(Manifest::decode(&enc), Ok(m));
        for n in 0..enc.len() {
            assert!(Manifest::decode(&enc[..n]).is_err());
        }
        assert!(Manifest::decode(b"garbage garbage garbage garbage garbage garbage").is_err());
    }

    #[test]
    fn shadow_candidates_cover_earlier_dirs_and_includer_dirs() {
        let c = shadow_candidates(
            "src/a.c",
            &[
                "inc2/sub/foo.h".to_string(),
                "/usr/include/stdio.h".to_string(),
            ],
            &[
                "inc1".into(),
                "inc2".into(),
                "/usr/local/include".into(),
                "/usr/include".into(),
            ],
        );
        for want in [
            "inc1/sub/foo.h",
            "src/sub/foo.h",
            "inc1/stdio.h",
            "inc2/stdio.h",
            "/usr/local/include/stdio.h",
            "src/stdio.h",
        ] {
            assert!(c.contains(want), "{want} missing from {c:?}");
        }
        assert!(!c.contains("inc2/sub/foo.h"));
        assert!(!c.contains("/usr/include/stdio.h"));
    }

    #[test]
    fn line_markers() {
        let pre = b"# 0 \"src/a.c\"\n# 1 \"/home/me/proj//\"\n# 0 \"<built-in>\"\n# 0 \"<command-line>\"\n\
# 1 \"/usr/include/stdc-predef.h\" 1 3 4\n# 0 \"<command-line>\" 2\n# 1 \"src/a.c\"\n\
# 1 \"inc/we\\\\ird \\\"q\\\".h\" 1\nint x;\n#line 7 \"inc/b.h\"\n# 2 \"src/a.c\" 2\n\
#pragma once\n# 1 \"/usr/include/stdc-predef.h\" 1 3 4\nint a;\n";
        assert_eq!(
            included_files(pre),
            vec![
                "/usr/include/stdc-predef.h".to_string(),
                "inc/we\\ird \"q\".h".to_string(),
                "inc/b.h".to_string(),
            ]
        );
        assert_eq!(
            parse_line_marker(b"# 1 \"a\\303\\251.h\""),
            Some("a\u{e9}.h".into())
        );
        assert_eq!(parse_line_marker(b"#pragma x"), None);
        assert_eq!(parse_line_marker(b"# 1 \"unterminated"), None);
    }

    #[test]
    fn search_list_parsing() {
        let gcc = b"ignoring nonexistent directory \"/usr/local/include/x86_64-linux-gnu\"\n\
ignoring nonexistent directory \"nope\"\n\
#include \"...\" search starts here:\n \
q\n\
#include <...> search starts here:\n \
inc1\n \
/usr/include\n\
End of search list.\n";
        let l = parse_search_list(gcc).unwrap();
        assert_eq!(l.dirs, vec!["q", "inc1", "/usr/include"]);
        assert_eq!(
            l.missing,
            vec!["/usr/local/include/x86_64-linux-gnu", "nope"]
        );
        assert_eq!(
            parse_search_list(b"#include <...> search starts here:\n x\n"),
            None
        );
    }

    #[test]
    fn a_missing_search_dir_that_appears_is_a_miss() {
        let p = Project::new();
        let args = p.args("X=1");
        let src = p.source();
        let c = gcc("12.2.0");
        let params = DirectParams::new(&c, &args, "src/a.c", &src, &p.root);
        let (includes, search) = (p.includes(), p.search());
        let missing = vec![p.path("inc0")];
        let rec = Recording {
            includes: &includes,
            search_dirs: &search,
            missing_dirs: &missing,
            dep_file: Some(b"a.o: src/a.c\n"),
            preprocessor_stderr: b"src/a.c:1: warning: w\n",
            ..Recording::default()
        };
        p.direct().record_compile(&params, &rec, R1).unwrap();
        let hit = p.direct().lookup_hit(&params).unwrap();
        assert_eq!(hit.result, R1);
        assert_eq!(hit.dep_file.as_deref(), Some(&b"a.o: src/a.c\n"[..]));
        assert_eq!(hit.preprocessor_stderr, b"src/a.c:1: warning: w\n");
        fs::create_dir(p.path("inc0")).unwrap();
        assert_eq!(p.direct().lookup(&params), None);
    }

    #[test]
    fn files_changed_after_the_compile_started_are_not_recorded() {
        let p = Project::new();
        let args = p.args("X=1");
        let src = p.source();
        let c = gcc("12.2.0");
        let params = DirectParams::new(&c, &args, "src/a.c", &src, &p.root);
        let (includes, search) = (p.includes(), p.search());
        // The compile started an hour ago: every file is newer.
        let dm = DirectMode::new(p.store.clone()).with_too_new(Duration::from_secs(1));
        let rec = Recording {
            includes: &includes,
            search_dirs: &search,
            started: Some(SystemTime::now() - Duration::from_secs(3600)),
            ..Recording::default()
        };
        assert!(matches!(
            dm.record_compile(&params, &rec, R1),
            Err(DirectSkip::TooNew(_))
        ));
        assert_eq!(p.direct().lookup(&params), None);
    }

    #[test]
    fn has_include_tests_are_resolved_both_ways() {
        assert_eq!(
            has_include_names(
                b"#if defined __has_include && __has_include (<linux/x.h>)\n\
                  #ifdef __has_include\n#if __has_include_next(\"y.h\")\n"
            ),
            Ok(vec!["linux/x.h".to_string(), "y.h".to_string()])
        );
        assert_eq!(has_include_names(b"__has_include(FOO)"), Err(()));
        assert_eq!(has_include_names(b"__has_includes(x)"), Ok(vec![]));

        // bar.h asks for opt.h, which does not exist anywhere yet.
        let p = Project::new();
        p.write(
            "inc2/bar.h",
            "#if __has_include(<opt.h>)\n#include <opt.h>\n#endif\nint bar;\n",
        );
        let args = p.args("X=1");
        p.record(&p.direct(), &args, R1).unwrap();
        assert_eq!(p.lookup(&p.direct(), &args), Some(R1));
        // It appears in the last search directory: the answer changes.
        p.write("inc2/opt.h", "int opt;\n");
        assert_eq!(p.lookup(&p.direct(), &args), None);
        // Recorded with opt.h present: removing or editing it is a miss.
        p.record(&p.direct(), &args, R2).unwrap();
        assert_eq!(p.lookup(&p.direct(), &args), Some(R2));
        p.write("inc2/opt.h", "int opt2;\n");
        assert_eq!(p.lookup(&p.direct(), &args), None);
        fs::remove_file(p.path("inc2/opt.h")).unwrap();
        assert_eq!(p.lookup(&p.direct(), &args), Some(R1));
    }

    #[test]
    fn volatile_tokens() {
        assert_eq!(volatile_token(b"x = __DATE__;"), Some("__DATE__"));
        assert_eq!(volatile_token(b"x = __TIMESTAMP__;"), Some("__TIMESTAMP__"));
        assert_eq!(volatile_token(b"___TIME__"), Some("__TIME__"));
        assert_eq!(volatile_token(b"__FILE__ __LINE__ _DATE_"), None);
    }

    /// With a real gcc: the markers of `gcc -E` name the headers, and the
    /// whole flow misses after a header edit.
    #[test]
    fn with_real_gcc() {
        let p = Project::new();
        let out = std::process::Command::new("gcc")
            .current_dir(&p.root)
            .args(["-E", "-Iinc1", "-Iinc2", "src/a.c"])
            .output();
        let Ok(out) = out else {
            eprintln!("gcc not found; skipping");
            return;
        };
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let includes = included_files(&out.stdout);
        assert!(includes.contains(&"inc2/foo.h".to_string()), "{includes:?}");
        assert!(includes.contains(&"inc2/bar.h".to_string()), "{includes:?}");
        let args: Vec<String> = vec!["-Iinc1".into(), "-Iinc2".into()];
        let src = p.source();
        let c = gcc("12.2.0");
        let params = DirectParams::new(&c, &args, "src/a.c", &src, &p.root);
        let search = vec!["inc1".to_string(), "inc2".to_string()];
        p.direct().record(&params, &includes, &search, R1).unwrap();
        assert_eq!(p.direct().lookup(&params), Some(R1));
        // A real shadow: `#include "foo.h"` in src/a.c now finds src/foo.h.
        p.write("src/foo.h", "#define FOO 2\n");
        let again = std::process::Command::new("gcc")
            .current_dir(&p.root)
            .args(["-E", "-Iinc1", "-Iinc2", "src/a.c"])
            .output()
            .unwrap();
        assert!(included_files(&again.stdout).contains(&"src/foo.h".to_string()));
        assert_eq!(p.direct().lookup(&params), None);
    }
}
