//! Manifests: the results recorded under one key, each with the files it read
//! (content hashes) and the paths that must stay absent; and their binary
//! format.

use std::fs;
use std::time::SystemTime;

use crate::key::CacheKey;

use super::mode::changed_since;

/// The first bytes of a manifest file.
const MAGIC: [u8; 4] = *b"HGDM";
/// The manifest format; older ones are not read.
const MANIFEST_VERSION: u16 = 2;

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
/// are older than the compile's start minus [`TOO_NEW`](super::TOO_NEW), so any later
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
    pub(super) fn trusted(meta: &fs::Metadata, recent: SystemTime) -> Option<Stamp> {
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
