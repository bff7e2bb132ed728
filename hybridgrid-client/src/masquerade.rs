//! How a wrapped build finds hgbuild: the compiler links that `hgbuild
//! make`/`ninja`/`cmake` put first in PATH and in `CC`/`CXX`, what a
//! configure step records, and what becomes of a build directory that an
//! older hgbuild configured.
//!
//! Build systems record the compiler's path when they are configured (CMake
//! in `CMakeCache.txt`, autotools in its Makefiles, Meson in its build
//! directory) and call it by that path in every later command, wrapped by
//! hgbuild or not. So the links live in one directory that stays:
//! `~/.hybridgrid/bin` ([`stable_dir`]), created on first use and pointed
//! at the running hgbuild on every wrapped build. A link called as `c++`
//! finds the real `c++` on PATH, skipping hgbuild itself, like the links
//! of ccache's and distcc's masquerade directories.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// The names under which hgbuild acts as a compiler (masquerade).
pub const MASQUERADE_NAMES: &[&str] = &["gcc", "cc", "g++", "c++", "clang", "clang++"];

/// Prefix of the temporary link directories of hgbuild versions before
/// the stable directory; a build directory that recorded one cannot build
/// once that command has ended.
pub const OLD_TEMP_PREFIX: &str = "hgbuild-masq-";

/// `~/.hybridgrid/bin`, where the compiler links live (`None` without a
/// home directory).
pub fn stable_dir() -> Option<PathBuf> {
    let home = std::env::var_os("HOME").filter(|h| !h.is_empty())?;
    Some(Path::new(&home).join(".hybridgrid").join("bin"))
}

/// A directory of links named like compilers that point at hgbuild.
#[derive(Debug)]
pub enum MasqueradeDir {
    /// `~/.hybridgrid/bin`: outlives the command, so configured build
    /// directories keep working.
    Stable(PathBuf),
    /// A temporary directory (no usable home directory), removed when
    /// dropped; a build configured through it will not build later.
    Temporary(tempfile::TempDir),
}

impl MasqueradeDir {
    /// The stable directory with its links pointing at `exe`, created if
    /// needed; a temporary one (with a warning on stderr) if it cannot be.
    pub fn create(exe: &Path) -> std::io::Result<Self> {
        match stable_dir() {
            Some(dir) => match link_all(&dir, exe) {
                Ok(()) => return Ok(MasqueradeDir::Stable(dir)),
                Err(e) => eprintln!(
                    "hgbuild: warning: cannot set up the compiler links in {}: {e}; using a temporary directory, so a build directory configured by this command will not build after it",
                    dir.display()
                ),
            },
            None => eprintln!(
                "hgbuild: warning: HOME is not set; the compiler links go to a temporary directory, so a build directory configured by this command will not build after it"
            ),
        }
        let dir = tempfile::Builder::new().prefix(OLD_TEMP_PREFIX).tempdir()?;
        link_all(dir.path(), exe)?;
        Ok(MasqueradeDir::Temporary(dir))
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        match self {
            MasqueradeDir::Stable(p) => p,
            MasqueradeDir::Temporary(t) => t.path(),
        }
    }
}

/// Makes `dir/NAME` a link to `exe` for every masquerade name. A link that
/// already points there is left alone; one that points elsewhere (an
/// hgbuild since moved or reinstalled) is replaced atomically, so compiles
/// of another build running at the same moment never miss it.
fn link_all(dir: &Path, exe: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    for name in MASQUERADE_NAMES {
        let link = dir.join(name);
        if std::fs::read_link(&link).is_ok_and(|t| t == exe) {
            continue;
        }
        let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
        let _ = std::fs::remove_file(&tmp);
        std::os::unix::fs::symlink(exe, &tmp)?;
        if let Err(e) = std::fs::rename(&tmp, &link) {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
    }
    Ok(())
}

/// What a wrapped build's `CC` (or `CXX`) becomes, from the user's value
/// `current` and the masquerade name `default` (`cc`, `c++`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CompilerVar {
    /// The link in the masquerade directory: the variable was unset, or a
    /// plain masquerade name (`clang`) that PATH resolves.
    Link(PathBuf),
    /// The user's compiler is kept as it is (a path such as
    /// `/opt/gcc/bin/gcc`, or a name such as `gcc-12`): the build reaches
    /// hgbuild through a launcher instead.
    Keep(OsString),
}

impl CompilerVar {
    /// Decides for the value `current` of the variable. A value that
    /// already starts with hgbuild (`CC="hgbuild cc"`, as for a configure
    /// script) counts as the rest of it.
    pub fn choose(current: Option<&std::ffi::OsStr>, default: &str, dir: &Path) -> Self {
        let Some(value) = current else {
            return CompilerVar::Link(dir.join(default));
        };
        let Some(text) = value.to_str() else {
            return CompilerVar::Keep(value.to_owned());
        };
        let text = text.trim();
        let (first, rest) = text.split_once(' ').unwrap_or((text, ""));
        let text = if Path::new(first).file_name() == Some("hgbuild".as_ref()) {
            rest.trim_start()
        } else {
            text
        };
        if text.is_empty() {
            CompilerVar::Link(dir.join(default))
        } else if MASQUERADE_NAMES.contains(&text) {
            CompilerVar::Link(dir.join(text))
        } else {
            CompilerVar::Keep(text.into())
        }
    }
}

/// The build directory a CMake command line works on: `-B DIR`,
/// `--build DIR`, else a positional argument that is an existing build
/// directory, else `cwd`.
pub fn cmake_build_dir(args: &[OsString], cwd: &Path) -> PathBuf {
    let mut it = args.iter();
    let mut positional = None;
    while let Some(a) = it.next() {
        let s = a.to_string_lossy();
        if s == "-B" || s == "--build" {
            if let Some(d) = it.next() {
                return cwd.join(d);
            }
        } else if let Some(d) = s.strip_prefix("-B").filter(|d| !d.is_empty()) {
            return cwd.join(d);
        } else if !s.starts_with('-') && positional.is_none() {
            positional = Some(cwd.join(a));
        }
    }
    positional
        .filter(|p| p.join("CMakeCache.txt").is_file())
        .unwrap_or_else(|| cwd.to_path_buf())
}

/// The build directory of a make or ninja command line: `-C DIR` (or
/// `-CDIR`, make's `--directory=DIR`), else `cwd`.
pub fn tool_build_dir(args: &[OsString], cwd: &Path) -> PathBuf {
    let mut dir = cwd.to_path_buf();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let s = a.to_string_lossy();
        if s == "-C" || s == "--directory" {
            if let Some(d) = it.next() {
                dir = dir.join(d);
            }
        } else if let Some(d) = s
            .strip_prefix("--directory=")
            .or_else(|| s.strip_prefix("-C").filter(|d| !d.is_empty()))
        {
            dir = dir.join(d);
        }
    }
    dir
}

/// The entries of `build_dir/CMakeCache.txt` (`NAME:TYPE=VALUE`): (name,
/// value); empty if there is none.
fn cmake_cache(build_dir: &Path) -> Vec<(String, String)> {
    let Ok(text) = std::fs::read_to_string(build_dir.join("CMakeCache.txt")) else {
        return Vec::new();
    };
    text.lines()
        .filter(|l| !l.starts_with("//") && !l.starts_with('#'))
        .filter_map(|l| {
            let (key, value) = l.split_once('=')?;
            let name = key.split(':').next()?;
            Some((name.to_owned(), value.to_owned()))
        })
        .collect()
}

/// The C and C++ compilers recorded in `build_dir/CMakeCache.txt`:
/// (language, path).
pub fn cmake_compilers(build_dir: &Path) -> Vec<(String, PathBuf)> {
    compilers_in(&cmake_cache(build_dir))
}

/// The C and C++ compilers among CMake cache entries.
fn compilers_in(cache: &[(String, String)]) -> Vec<(String, PathBuf)> {
    cache
        .iter()
        .filter_map(|(name, value)| {
            let lang = name
                .strip_prefix("CMAKE_")?
                .strip_suffix("_COMPILER")
                .filter(|l| matches!(*l, "C" | "CXX"))?
                .to_owned();
            (!value.is_empty()).then(|| (lang, PathBuf::from(value)))
        })
        .collect()
}

/// True for a compiler path in a temporary link directory of an older
/// hgbuild (`/tmp/hgbuild-masq-XXXXXX/c++`).
pub fn is_old_temp_link(path: &Path) -> bool {
    path.parent()
        .and_then(|d| d.file_name())
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with(OLD_TEMP_PREFIX))
}

/// The one-line explanation for a compile whose compiler is `path`, a
/// link of an older hgbuild that is gone.
pub fn old_temp_link_message(path: &Path, build_dir: Option<&Path>) -> String {
    let dir = build_dir
        .map(|d| d.display().to_string())
        .unwrap_or_else(|| "BUILD_DIR".into());
    format!(
        "hgbuild: this build directory was configured by an older hgbuild, which recorded the compiler {} (a temporary link, removed when that command ended); re-configure it once: hgbuild cmake --fresh -B {dir} [your options] (or delete {dir}/CMakeCache.txt and run hgbuild cmake again)",
        path.display()
    )
}

/// The explanation if `build_dir` is a CMake build directory whose
/// recorded compiler is a vanished link of an older hgbuild.
pub fn stale_build_dir(build_dir: &Path) -> Option<String> {
    cmake_compilers(build_dir)
        .into_iter()
        .find(|(_, p)| is_old_temp_link(p) && !p.exists())
        .map(|(_, p)| old_temp_link_message(&p, Some(build_dir)))
}

/// The CMake options a configure run through hgbuild adds: a compiler
/// launcher for each language whose compiler does not reach hgbuild by
/// itself. That is a language whose compiler the user chose by a path or
/// a name that is not a masquerade name (`CC=gcc-12`), or one that the
/// build directory already records outside `masq_dir` (CMake reads `CC`
/// only on the first configure). A language that the command line sets
/// (`-DCMAKE_C_COMPILER=...`, `-DCMAKE_C_COMPILER_LAUNCHER=...`) is left
/// to it, and so is a launcher the build directory already records
/// (`build_dir`: `None` for a fresh configure, `cmake --fresh`).
pub fn cmake_launcher_args(
    args: &[OsString],
    build_dir: Option<&Path>,
    vars: &[(&str, &CompilerVar)],
    masq_dir: &Path,
    exe: &Path,
) -> Vec<OsString> {
    let cache = build_dir.map(cmake_cache).unwrap_or_default();
    let recorded = compilers_in(&cache);
    let mut out = Vec::new();
    for (lang, var) in vars {
        let given = |suffix: &str| {
            let key = format!("-DCMAKE_{lang}_{suffix}");
            args.iter().any(|a| {
                let s = a.to_string_lossy();
                s.starts_with(&format!("{key}=")) || s.starts_with(&format!("{key}:"))
            })
        };
        let launcher = format!("CMAKE_{lang}_COMPILER_LAUNCHER");
        if given("COMPILER_LAUNCHER") || cache.iter().any(|(k, v)| *k == launcher && !v.is_empty())
        {
            continue;
        }
        let recorded_elsewhere = recorded
            .iter()
            .any(|(l, p)| l == lang && !p.starts_with(masq_dir));
        let needs = given("COMPILER")
            || recorded_elsewhere
            || matches!(var, CompilerVar::Keep(_)) && !recorded.iter().any(|(l, _)| l == lang);
        if needs {
            out.push(OsString::from(format!(
                "-DCMAKE_{lang}_COMPILER_LAUNCHER={}",
                exe.display()
            )));
        }
    }
    out
}

/// Name of ccache's program.
const CCACHE: &str = "ccache";

/// True for `ccache` or a path to it: `hgbuild ccache gcc ...`.
pub fn is_ccache(arg: &str) -> bool {
    Path::new(arg).file_name().and_then(|n| n.to_str()) == Some(CCACHE)
}

/// `hgbuild ccache CC ARGS`: ccache belongs in front (it answers its hits
/// without hgbuild starting at all, and calls hgbuild for its misses), so
/// this runs `ccache CC ARGS` with `CCACHE_PREFIX` naming hgbuild, which is
/// the same as `CCACHE_PREFIX=hgbuild ccache CC ARGS`. Refused, with the
/// order to use, when `CCACHE_PREFIX` already names another program.
/// Returns the exit code.
pub fn run_behind_ccache(ccache: &str, args: &[OsString], exe: &Path) -> i32 {
    let prefix = match std::env::var_os("CCACHE_PREFIX").filter(|p| !p.is_empty()) {
        None => exe.as_os_str().to_owned(),
        Some(p) if p.to_string_lossy().contains("hgbuild") => p,
        Some(p) => {
            eprintln!(
                "hgbuild: cannot run in front of ccache while CCACHE_PREFIX is {}; put ccache first and hgbuild in its prefix: CCACHE_PREFIX=hgbuild ccache CC ARGS",
                p.to_string_lossy()
            );
            return 2;
        }
    };
    let status = std::process::Command::new(ccache)
        .args(args)
        .env("CCACHE_PREFIX", prefix)
        .status();
    match status {
        Ok(s) => crate::compile::exit_code_of(s),
        Err(e) => {
            eprintln!("hgbuild: cannot run {ccache}: {e}");
            127
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(v: &[&str]) -> Vec<OsString> {
        v.iter().map(OsString::from).collect()
    }

    #[test]
    fn links_are_made_once_and_repointed_when_hgbuild_moves() {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().join("bin");
        link_all(&dir, Path::new("/opt/a/hgbuild")).unwrap();
        for n in MASQUERADE_NAMES {
            assert_eq!(
                std::fs::read_link(dir.join(n)).unwrap(),
                Path::new("/opt/a/hgbuild")
            );
        }
        link_all(&dir, Path::new("/opt/b/hgbuild")).unwrap();
        assert_eq!(
            std::fs::read_link(dir.join("c++")).unwrap(),
            Path::new("/opt/b/hgbuild")
        );
        // No temporary links left behind.
        let names: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names.len(), MASQUERADE_NAMES.len(), "{names:?}");
    }

    #[test]
    fn compiler_variables_keep_what_the_link_cannot_stand_for() {
        let d = Path::new("/m");
        let link = |n: &str| CompilerVar::Link(d.join(n));
        let keep = |v: &str| CompilerVar::Keep(v.into());
        let cases = [
            (None, "cc", link("cc")),
            (Some(""), "c++", link("c++")),
            (Some("clang"), "cc", link("clang")),
            // Already through hgbuild, as for a configure script.
            (Some("hgbuild cc"), "cc", link("cc")),
            (Some("/usr/bin/hgbuild  clang"), "cc", link("clang")),
            (Some("/x/hgbuild gcc-12"), "cc", keep("gcc-12")),
            (Some("hgbuild"), "c++", link("c++")),
            (Some("/opt/gcc/bin/gcc"), "cc", keep("/opt/gcc/bin/gcc")),
            (Some("gcc-12"), "cc", keep("gcc-12")),
            (Some("ccache gcc"), "cc", keep("ccache gcc")),
        ];
        for (value, default, expected) in cases {
            let value = value.map(std::ffi::OsStr::new);
            assert_eq!(
                CompilerVar::choose(value, default, d),
                expected,
                "{value:?}"
            );
        }
    }

    #[test]
    fn build_directories_are_found_on_command_lines() {
        let cwd = Path::new("/w");
        assert_eq!(
            cmake_build_dir(&os(&["-S", ".", "-B", "b"]), cwd),
            cwd.join("b")
        );
        assert_eq!(
            cmake_build_dir(&os(&["-Bout", "-S."]), cwd),
            cwd.join("out")
        );
        assert_eq!(
            cmake_build_dir(&os(&["--build", "/abs/b", "-j4"]), cwd),
            Path::new("/abs/b")
        );
        // `cmake ../src` configures in the current directory.
        assert_eq!(cmake_build_dir(&os(&["../src"]), cwd), cwd);
        assert_eq!(tool_build_dir(&os(&["-C", "b", "-j4"]), cwd), cwd.join("b"));
        assert_eq!(tool_build_dir(&os(&["-Cb"]), cwd), cwd.join("b"));
        assert_eq!(
            tool_build_dir(&os(&["--directory=x", "all"]), cwd),
            cwd.join("x")
        );
        assert_eq!(tool_build_dir(&os(&["all"]), cwd), cwd);
    }

    fn cache_with(dir: &Path, c: &str, cxx: &str) {
        std::fs::write(
            dir.join("CMakeCache.txt"),
            format!(
                "//C compiler\nCMAKE_C_COMPILER:FILEPATH={c}\nCMAKE_CXX_COMPILER:STRING={cxx}\nCMAKE_C_COMPILER_AR:FILEPATH=/usr/bin/gcc-ar\nCMAKE_CXX_COMPILER_LAUNCHER:UNINITIALIZED=/x/hgbuild\n"
            ),
        )
        .unwrap();
    }

    #[test]
    fn recorded_compilers_and_stale_links_are_recognised() {
        let t = tempfile::tempdir().unwrap();
        let gone = "/tmp/hgbuild-masq-AbC123/c++";
        cache_with(t.path(), "/usr/bin/cc", gone);
        assert_eq!(
            cmake_compilers(t.path()),
            vec![
                ("C".to_owned(), PathBuf::from("/usr/bin/cc")),
                ("CXX".to_owned(), PathBuf::from(gone))
            ]
        );
        let msg = stale_build_dir(t.path()).expect("stale");
        assert!(msg.contains(gone) && msg.contains("--fresh"), "{msg}");
        assert_eq!(msg.lines().count(), 1);
        cache_with(t.path(), "/usr/bin/cc", "/usr/bin/c++");
        assert_eq!(stale_build_dir(t.path()), None);
        assert_eq!(stale_build_dir(&t.path().join("nothing")), None);
    }

    #[test]
    fn launchers_only_where_the_compiler_does_not_reach_hgbuild() {
        let t = tempfile::tempdir().unwrap();
        let masq = Path::new("/home/u/.hybridgrid/bin");
        let exe = Path::new("/usr/bin/hgbuild");
        let link = CompilerVar::Link(masq.join("cc"));
        let keep = CompilerVar::Keep("gcc-12".into());
        let none: Vec<OsString> = Vec::new();
        let launchers = |args: &[&str], c: &CompilerVar| {
            cmake_launcher_args(
                &os(args),
                Some(t.path()),
                &[("C", c), ("CXX", &link)],
                masq,
                exe,
            )
        };
        let c_launcher = os(&["-DCMAKE_C_COMPILER_LAUNCHER=/usr/bin/hgbuild"]);
        // Fresh directory, masquerade links: nothing to add.
        assert_eq!(launchers(&[], &link), none);
        // The user's own compiler: a launcher for that language.
        assert_eq!(launchers(&[], &keep), c_launcher);
        // A compiler on the command line, or one recorded before.
        assert_eq!(
            launchers(&["-DCMAKE_CXX_COMPILER=/usr/bin/clang++"], &link),
            os(&["-DCMAKE_CXX_COMPILER_LAUNCHER=/usr/bin/hgbuild"])
        );
        cache_with(t.path(), "/usr/bin/cc", "/home/u/.hybridgrid/bin/c++");
        assert_eq!(launchers(&[], &link), c_launcher);
        // The user's own launcher wins.
        assert_eq!(
            launchers(&["-DCMAKE_C_COMPILER_LAUNCHER=ccache"], &link),
            none
        );
    }

    #[test]
    fn ccache_is_recognised_by_name() {
        assert!(is_ccache("ccache"));
        assert!(is_ccache("/usr/bin/ccache"));
        assert!(!is_ccache("ccache-swig"));
        assert!(!is_ccache("gcc"));
    }
}
