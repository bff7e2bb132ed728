//! The client's local cache tier as one compile uses it: direct-mode
//! lookups before preprocessing, replays, results of local compiles, and
//! direct-mode manifests recorded after a compile.
//!
//! # What is cached, and why it is sound
//!
//! * **Remote results** are stored by the `CacheLayer` around the remote
//!   service, under the key of the preprocessed task.
//! * **Local compiles of distributable commands** (no grid configured, the
//!   grid failed and the compile fell back, `-g` compiles kept local) are
//!   stored under the key of the task the grid would have been sent (the
//!   client preprocesses first to compute it). Without `-g` the object of
//!   the original command is byte-identical to a compile of the
//!   preprocessed text, which is what the grid caches under that key; with
//!   `-g` the key holds the working directory, and every path that ends up
//!   in the debug information is in the preprocessed text's line markers.
//!   Not stored: failed compiles, `-g3`/`-fdebug-macro` (macro definitions
//!   are not in the preprocessed text), compiles next to a precompiled
//!   header (`X.gch` beside an included `X`: `gcc -c` uses it, `gcc -E`
//!   does not, so the key would not describe the object), and compiles whose preprocessing
//!   printed diagnostics (a compile from source prints those again, so the
//!   entry's stderr would not mean what a remote entry's means: only the
//!   compiler's own diagnostics).
//! * **Direct mode** (`cache.direct_mode`): see [`hybridgrid_cache::direct`].
//!   The manifest key holds the compiler (path, binary size and time,
//!   identity), every argument, whether colors were asked for, the
//!   environment variables that steer the preprocessor, the source path and
//!   content (`@file` arguments expanded), and the working directory. Besides
//!   the checks of [`hybridgrid_cache::direct`], the include directories the
//!   compiler skipped because they did not exist, and `X.gch` beside every
//!   included `X`, must still not exist. A manifest is recorded only after
//!   a successful compile whose result is in the store, with the result key
//!   computed by the same builder the `CacheLayer` uses.

use std::ffi::OsString;
use std::path::Path;
use std::process::Stdio;
use std::time::SystemTime;

use hybridgrid_cache::direct::{self, DirectHit, DirectMode, DirectParams, Recording};
use hybridgrid_cache::{CacheEntry, CacheKey, DiskStore, Lookup};
use hybridgrid_core::task::CompilerIdentity;
use hybridgrid_core::worker::CompilerInfo;
use tokio::process::Command;

pub use crate::search_memo::PREPROCESSOR_ENV;
use crate::search_memo::SearchMemo;
use hybridgrid_exec::args::CompilePlan;

/// The local cache: a [`DiskStore`] and, if enabled, direct mode over it.
#[derive(Debug)]
pub struct LocalCache {
    store: DiskStore,
    direct: Option<DirectMode>,
}

impl LocalCache {
    /// A local tier over `store`; `direct_mode` turns on direct-mode
    /// lookups and recording.
    pub fn new(store: DiskStore, direct_mode: bool) -> Self {
        LocalCache {
            direct: direct_mode.then(|| DirectMode::new(store.clone())),
            store,
        }
    }

    /// The store.
    pub fn store(&self) -> &DiskStore {
        &self.store
    }

    /// Where include search lists are remembered: `search/` in the
    /// store's directory (beside `compilers/`; the store's scans and
    /// evictions read only its two-hex shard directories).
    pub fn search_memo_dir(&self) -> std::path::PathBuf {
        self.store.dir().join("search")
    }

    /// Whether direct mode is on.
    pub fn direct_mode(&self) -> bool {
        self.direct.is_some()
    }

    /// What direct mode needs, read before preprocessing; `None` when
    /// direct mode is off or cannot serve this command (no preprocessing,
    /// arguments or paths that are not UTF-8, an unreadable source).
    pub(crate) fn probe(
        &self,
        compiler: &CompilerInfo,
        args: &[OsString],
        plan: &CompilePlan,
        color_added: bool,
        cwd: &Path,
        started: SystemTime,
    ) -> Option<DirectProbe> {
        self.direct.as_ref()?;
        if !plan.needs_preprocessing() {
            return None;
        }
        let mut key_args = Vec::with_capacity(args.len() + 8);
        for a in args {
            key_args.push(a.to_str()?.to_owned());
        }
        // What `@file` holds is what counts.
        let mut key_args = hybridgrid_exec::args::expand_response_files(key_args, cwd).ok()?;
        // Separated from the command line by a word no argument can be.
        key_args.push("\0hybridgrid".into());
        key_args.push(format!("compiler={}", compiler.path));
        if let Ok(m) = std::fs::metadata(&compiler.path) {
            use std::os::unix::fs::MetadataExt;
            key_args.push(format!(
                "binary={} {}.{} {}",
                m.len(),
                m.mtime(),
                m.mtime_nsec(),
                m.ino()
            ));
        }
        key_args.push(format!("color={}", u8::from(color_added)));
        for name in PREPROCESSOR_ENV {
            if let Some(v) = std::env::var_os(name) {
                key_args.push(format!("env {name}={}", v.to_str()?));
            }
        }
        let source_path = plan.source().to_str()?.to_owned();
        let source = std::fs::read(cwd.join(plan.source())).ok()?;
        Some(DirectProbe {
            identity: compiler.identity.clone(),
            args: key_args,
            source_path,
            source,
            cwd: cwd.to_str()?.to_owned(),
            started,
        })
    }

    /// A direct-mode hit: the manifest's answer and the stored entry.
    /// Counts a direct-mode hit or miss.
    pub(crate) fn lookup(&self, probe: &DirectProbe) -> Option<(DirectHit, CacheEntry)> {
        let dm = self.direct.as_ref()?;
        let Some(hit) = dm.lookup_hit(&probe.params()) else {
            self.store.count_direct_miss();
            return None;
        };
        match self.store.get_direct_blocking(&hit.result) {
            Lookup::Hit(entry) => Some((hit, entry)),
            Lookup::Miss | Lookup::Failed => None,
        }
    }

    /// Stores a successful local compile's result under `key`.
    pub(crate) fn put(&self, key: &CacheKey, entry: &CacheEntry) -> bool {
        self.store.put_blocking(key, entry).stored
    }

    /// Records a direct-mode manifest for a compile whose result is stored
    /// under `key`. Problems only mean no manifest (logged at debug level).
    pub(crate) fn record(&self, probe: &DirectProbe, rec: &RecordInput<'_>, key: CacheKey) {
        let Some(dm) = &self.direct else { return };
        let Some(search) = rec.search else {
            tracing::debug!("no include search list; direct mode not recorded");
            return;
        };
        let dep_file = match rec.dep_file_path {
            Some(p) => match std::fs::read(Path::new(&probe.cwd).join(p)) {
                Ok(d) => Some(d),
                Err(e) => {
                    tracing::debug!(error = %e, "dependency file unreadable; direct mode not recorded");
                    return;
                }
            },
            None => None,
        };
        // gcc -c uses `X.gch` in place of a header X, gcc -E never does:
        // the preprocessed text would not describe the object. No manifest
        // when one exists, and a miss once one appears.
        let gch = precompiled_headers(&probe.cwd, rec.includes);
        if gch.existing {
            tracing::debug!("a precompiled header exists; direct mode not recorded");
            return;
        }
        let mut must_not_exist = search.missing.clone();
        must_not_exist.extend(gch.candidates);
        let recording = Recording {
            includes: rec.includes,
            search_dirs: &search.dirs,
            missing_dirs: &must_not_exist,
            started: Some(probe.started),
            dep_file: dep_file.as_deref(),
            preprocessor_stderr: rec.preprocessor_stderr,
        };
        match dm.record_compile(&probe.params(), &recording, key) {
            Ok(()) => tracing::debug!(key = %key, "direct-mode manifest recorded"),
            Err(e) => tracing::debug!(error = %e, "direct mode not recorded"),
        }
    }
}

/// The `.gch` paths next to the included files.
pub(crate) struct Gch {
    /// One of them exists.
    pub(crate) existing: bool,
    /// All of them.
    pub(crate) candidates: Vec<String>,
}

/// The precompiled headers gcc would use instead of `includes`.
pub(crate) fn precompiled_headers(cwd: &str, includes: &[String]) -> Gch {
    let mut out = Gch {
        existing: false,
        candidates: Vec::with_capacity(includes.len()),
    };
    for inc in includes {
        let c = format!("{inc}.gch");
        if std::fs::symlink_metadata(Path::new(cwd).join(&c)).is_ok() {
            out.existing = true;
        }
        out.candidates.push(c);
    }
    out
}

/// What a compile read and wrote, for [`LocalCache::record`].
#[derive(Debug)]
pub(crate) struct RecordInput<'a> {
    pub(crate) includes: &'a [String],
    pub(crate) search: Option<&'a direct::SearchList>,
    pub(crate) dep_file_path: Option<&'a Path>,
    pub(crate) preprocessor_stderr: &'a [u8],
}

/// What direct mode knows about a compile before preprocessing.
#[derive(Debug)]
pub struct DirectProbe {
    identity: CompilerIdentity,
    args: Vec<String>,
    source_path: String,
    source: Vec<u8>,
    cwd: String,
    started: SystemTime,
}

impl DirectProbe {
    fn params(&self) -> DirectParams<'_> {
        DirectParams::new(
            &self.identity,
            &self.args,
            &self.source_path,
            &self.source,
            &self.cwd,
        )
    }
}

/// The include search list of `plan`'s command: remembered in `memo_dir`
/// (see [`crate::search_memo`]) or asked of the compiler.
pub(crate) async fn search_list(
    compiler: &Path,
    plan: &CompilePlan,
    memo_dir: Option<&Path>,
) -> Option<direct::SearchList> {
    let args = plan.search_probe_args()?;
    let memo = memo_dir.and_then(|d| SearchMemo::new(d, compiler, &args));
    if let Some(list) = memo.as_ref().and_then(SearchMemo::load) {
        return Some(list);
    }
    let out = Command::new(compiler)
        .args(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .await
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let list = direct::parse_search_list(&out.stderr)?;
    if let Some(m) = &memo {
        m.store(&list, &out.stderr);
    }
    Some(list)
}
