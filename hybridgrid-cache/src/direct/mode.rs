//! [`DirectMode`]: looks results up by re-hashing the files a manifest lists,
//! and records new ones.

use std::collections::{BTreeSet, HashMap};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use crate::key::CacheKey;
use crate::store::DiskStore;

use super::search::{join, parent_dir};
use super::*;

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

pub(super) fn changed_since(meta: &fs::Metadata, t: SystemTime) -> bool {
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
