//! The include search list a compiler prints for `cc -E -v` (what direct
//! mode records beside a manifest), remembered between compiles.
//!
//! Asking the compiler costs a process per compile (~5 ms of CPU with gcc),
//! though its answer depends only on:
//! - the compiler binary (its resolved path, size, modification time and
//!   inode),
//! - the arguments that reach the preprocessor, the working directory
//!   (relative `-I` directories), and the environment variables that add
//!   directories or change the language of the messages;
//! - which of the directories it names exist.
//!
//! The first three make the file name of a memo (and are kept in it whole,
//! so a hash collision is a miss). The last is checked on every use: each
//! directory of the list must still be a directory and each one the
//! compiler skipped as missing must still be missing, or the compiler is
//! asked again. An answer in which the compiler dropped a duplicate
//! directory is never remembered: whether two spellings name one directory
//! can change without any of them appearing or disappearing.

use std::path::{Path, PathBuf};

use hybridgrid_cache::direct::SearchList;

use hybridgrid_exec::detect::{binary_stamp, remember};

/// Environment variables that change what the preprocessor reads or
/// writes; part of the direct-mode manifest key.
pub const PREPROCESSOR_ENV: &[&str] = &[
    "CPATH",
    "C_INCLUDE_PATH",
    "CPLUS_INCLUDE_PATH",
    "OBJC_INCLUDE_PATH",
    "OBJCPLUS_INCLUDE_PATH",
    "GCC_EXEC_PREFIX",
    "COMPILER_PATH",
    "DEPENDENCIES_OUTPUT",
    "SUNPRO_DEPENDENCIES",
    "SOURCE_DATE_EPOCH",
];

/// Environment variables that change the text of the compiler's messages
/// (which the parser reads) or, on macOS, its system directories; with
/// [`PREPROCESSOR_ENV`] they are part of a memo's key.
const MESSAGE_ENV: &[&str] = &["SDKROOT", "LANG", "LC_ALL", "LC_MESSAGES", "LANGUAGE"];

/// One memo file: the search list of one compiler and command.
#[derive(Debug)]
pub(crate) struct SearchMemo {
    file: PathBuf,
    key: String,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Stored {
    key: String,
    dirs: Vec<String>,
    missing: Vec<String>,
}

impl SearchMemo {
    /// The memo in `dir` for `compiler` run with `probe_args` here; `None`
    /// if the compiler binary or the working directory cannot be read.
    pub(crate) fn new(dir: &Path, compiler: &Path, probe_args: &[String]) -> Option<SearchMemo> {
        let stamp = binary_stamp(compiler)?;
        let cwd = std::env::current_dir().ok()?;
        let mut key = format!("{stamp}\ncwd={}\n", cwd.display());
        for a in probe_args {
            key.push_str("arg=");
            key.push_str(a);
            key.push('\n');
        }
        for v in PREPROCESSOR_ENV.iter().chain(MESSAGE_ENV) {
            if let Some(val) = std::env::var_os(v) {
                key.push_str(&format!("env {v}={}\n", val.to_string_lossy()));
            }
        }
        let name = blake3::hash(key.as_bytes()).to_hex();
        Some(SearchMemo {
            file: dir.join(format!("{}.json", &name[..32])),
            key,
        })
    }

    /// The remembered list, if it is there and still true of the file
    /// system.
    pub(crate) fn load(&self) -> Option<SearchList> {
        let text = std::fs::read(&self.file).ok()?;
        let s: Stored = serde_json::from_slice(&text).ok()?;
        if s.key != self.key {
            return None;
        }
        let is_dir = |d: &String| std::fs::metadata(d).map(|m| m.is_dir()).unwrap_or(false);
        let absent = |d: &String| {
            matches!(std::fs::symlink_metadata(d),
                     Err(e) if e.kind() == std::io::ErrorKind::NotFound)
        };
        (s.dirs.iter().all(is_dir) && s.missing.iter().all(absent)).then_some(SearchList {
            dirs: s.dirs,
            missing: s.missing,
        })
    }

    /// Remembers `list`, parsed from the compiler's standard error
    /// `stderr`, unless the compiler dropped a duplicate directory. Any
    /// failure only means asking the compiler next time.
    pub(crate) fn store(&self, list: &SearchList, stderr: &[u8]) {
        if String::from_utf8_lossy(stderr).contains("ignoring duplicate directory") {
            return;
        }
        let stored = Stored {
            key: self.key.clone(),
            dirs: list.dirs.clone(),
            missing: list.missing.clone(),
        };
        remember(&self.file, &stored);
    }
}

#[cfg(test)]
mod tests {
    use std::ffi::OsString;
    use std::path::{Path, PathBuf};

    use hybridgrid_core::task::{CompilerFamily, DriverKind};

    use crate::local_cache::search_list;
    use hybridgrid_exec::args::{Classification, CompilePlan, classify_in};

    /// A `cc` that counts its runs in `<dir>/runs` and runs the real one.
    fn counting_cc(dir: &Path) -> PathBuf {
        let cc = dir.join("cc");
        let script = format!(
            "#!/bin/sh\necho run >> '{}'\nexec /usr/bin/cc \"$@\"\n",
            dir.join("runs").display()
        );
        std::fs::write(&cc, script).expect("write cc");
        std::fs::set_permissions(&cc, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .expect("chmod");
        cc
    }

    fn runs(dir: &Path) -> usize {
        std::fs::read_to_string(dir.join("runs"))
            .map(|t| t.lines().count())
            .unwrap_or(0)
    }

    fn plan(dir: &Path, extra: &[&str]) -> CompilePlan {
        let src = dir.join("a.c");
        std::fs::write(&src, "int a;\n").expect("source");
        let mut args: Vec<OsString> = vec!["-c".into(), src.into()];
        args.extend(extra.iter().map(OsString::from));
        match classify_in(CompilerFamily::Gcc, DriverKind::C, &args, dir) {
            Classification::Distributable(p) => p,
            _ => panic!("not distributable"),
        }
    }

    #[tokio::test]
    async fn remembered_until_a_missing_directory_appears() {
        let t = tempfile::tempdir().expect("dir");
        let cc = counting_cc(t.path());
        let memo = t.path().join("memo");
        let inc = t.path().join("inc");
        let inc_s = inc.display().to_string();
        let p = plan(t.path(), &["-I", &inc_s]);

        let first = search_list(&cc, &p, Some(&memo)).await.expect("list");
        assert!(first.missing.contains(&inc_s), "{first:?}");
        assert!(first.dirs.iter().any(|d| d == "/usr/include"), "{first:?}");
        let again = search_list(&cc, &p, Some(&memo)).await.expect("list");
        assert_eq!(again, first);
        assert_eq!(runs(t.path()), 1, "the second answer is remembered");

        // The missing directory appears: the compiler is asked again.
        std::fs::create_dir(&inc).expect("mkdir");
        let now = search_list(&cc, &p, Some(&memo)).await.expect("list");
        assert_eq!(now.dirs.first(), Some(&inc_s), "{now:?}");
        assert_eq!(runs(t.path()), 2);
        search_list(&cc, &p, Some(&memo)).await.expect("list");
        assert_eq!(runs(t.path()), 2);

        // It disappears again: asked again.
        std::fs::remove_dir(&inc).expect("rmdir");
        let gone = search_list(&cc, &p, Some(&memo)).await.expect("list");
        assert_eq!(gone, first);
        assert_eq!(runs(t.path()), 3);

        // Other arguments are another memo; no memo directory, no memo.
        let other = plan(t.path(), &["-I", &inc_s, "-nostdinc"]);
        let l = search_list(&cc, &other, Some(&memo)).await.expect("list");
        assert!(!l.dirs.iter().any(|d| d == "/usr/include"), "{l:?}");
        assert_eq!(runs(t.path()), 4);
        search_list(&cc, &p, None).await.expect("list");
        search_list(&cc, &p, None).await.expect("list");
        assert_eq!(runs(t.path()), 6);
    }

    #[tokio::test]
    async fn a_list_with_a_dropped_duplicate_is_never_remembered() {
        let t = tempfile::tempdir().expect("dir");
        let cc = counting_cc(t.path());
        let memo = t.path().join("memo");
        // gcc drops a non-system -I that duplicates a system directory.
        let p = plan(t.path(), &["-I/usr/include"]);
        for _ in 0..2 {
            search_list(&cc, &p, Some(&memo)).await.expect("list");
        }
        assert_eq!(runs(t.path()), 2);
    }

    #[tokio::test]
    async fn a_garbled_or_foreign_memo_is_a_miss() {
        let t = tempfile::tempdir().expect("dir");
        let cc = counting_cc(t.path());
        let memo = t.path().join("memo");
        let p = plan(t.path(), &[]);
        let first = search_list(&cc, &p, Some(&memo)).await.expect("list");
        let file = std::fs::read_dir(&memo)
            .expect("memo dir")
            .flatten()
            .next()
            .expect("a memo")
            .path();
        std::fs::write(&file, b"{not json").expect("garble");
        assert_eq!(search_list(&cc, &p, Some(&memo)).await, Some(first.clone()));
        assert_eq!(runs(t.path()), 2);
        // A memo whose key is another command's.
        let text = std::fs::read_to_string(&file).expect("rewritten");
        std::fs::write(&file, text.replace("arg=", "arg=x")).expect("edit");
        assert_eq!(search_list(&cc, &p, Some(&memo)).await, Some(first));
        assert_eq!(runs(t.path()), 3);
    }
}
