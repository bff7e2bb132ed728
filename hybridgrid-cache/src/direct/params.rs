//! What direct mode knows before preprocessing: the manifest key's inputs, and
//! the tokens that make a translation unit unfit.

use std::io;
use std::path::{Path, PathBuf};

use hybridgrid_core::task::CompilerIdentity;

use crate::key::{self, CacheKey, FORMAT_VERSION, Hasher};

use super::*;

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

    pub(super) fn resolve(&self, p: &str) -> PathBuf {
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
