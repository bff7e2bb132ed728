//! Tests of direct mode: lookups and records against real files, and gcc's own
//! output.

use std::fs;
use std::time::{Duration, SystemTime};

use hybridgrid_core::preprocessed::parse_line_marker;
use hybridgrid_core::task::CompilerIdentity;
use hybridgrid_core::task::{CompilerFamily, DriverKind};

use crate::key::CacheKey;
use crate::store::DiskStore;

use super::*;

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

    fn record(&self, dm: &DirectMode, args: &[String], result: CacheKey) -> Result<(), DirectSkip> {
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
    let pre =
        b"# 0 \"src/a.c\"\n# 1 \"/home/me/proj//\"\n# 0 \"<built-in>\"\n# 0 \"<command-line>\"\n\
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
