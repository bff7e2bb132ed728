//! CMake and Ninja builds configured through `hgbuild cmake`, built in
//! later commands (`hgbuild ninja`, plain `ninja`, `cmake --build`, a
//! re-configure CMake starts by itself), and ccache in front of hgbuild.
//!
//! The project is double-conversion (Debian's upstream tarball, fetched by
//! `scripts/setup.d/real-projects.sh`): a C++ library and its test program,
//! 23 compiles. Every build goes through a real loopback grid (a
//! coordinator and two workers) with hgbuild's local cache off; its objects
//! must be byte-identical to a plain build in the same directory, its own
//! tests must pass, and most compiles must be counted remote by the
//! coordinator's `/api/stats`.

mod support;

use std::collections::BTreeMap;
use std::path::PathBuf;

use support::*;

/// The project, a build directory beside it and a HOME that every command
/// shares (hgbuild's compiler links live there, as they would for a user).
struct Project {
    _tmp: tempfile::TempDir,
    home: PathBuf,
    src: PathBuf,
    build: PathBuf,
    coord: Coord,
    _workers: Vec<Worker>,
}

/// Skips (or fails under `HG_TEST_REQUIRE_ALL=1`) without the sources or
/// the tools.
fn project(tools: &[&str]) -> Option<Project> {
    let tarball = require("double-conversion_")?;
    if !require_tools(tools) {
        return None;
    }
    let tmp = tempdir();
    let src = extract(&tarball, tmp.path());
    let home = tmp.path().join("home");
    std::fs::create_dir_all(&home).expect("home");
    let build = tmp.path().join("build");
    let (coord, workers) = grid(2);
    Some(Project {
        home,
        src,
        build,
        coord,
        _workers: workers,
        _tmp: tmp,
    })
}

impl Project {
    /// Runs `script` with sh in the project's source directory, as the
    /// user would in a new shell: HOME shared, hgbuild's cache off, mDNS
    /// off, the grid known only to hgbuild's own commands (`--coordinator`
    /// is in the scripts) and to the compiles through `HG_COORDINATOR`.
    fn sh(&self, script: &str, env: &[(&str, &str)]) -> Output {
        let mut cmd = user_sh(&self.src, &self.home, &self.coord, script, 600);
        cmd.env("CCACHE_DIR", self.home.join("ccache"))
            .env("B", &self.build)
            .env_remove("CCACHE_PREFIX");
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.output().expect("run sh").into()
    }

    fn ok(&self, script: &str, env: &[(&str, &str)]) -> Output {
        let o = self.sh(script, env);
        assert_eq!(o.code, 0, "`{script}` failed:\n{}\n{}", o.stdout, o.stderr);
        o
    }

    /// Tasks the coordinator has completed so far.
    fn remote_tasks(&self) -> u64 {
        successful_tasks(&self.coord.http)
    }

    /// Builds with `script`, then checks the objects against `reference`
    /// and that at least 90% of them were compiled by the grid (at most
    /// `max_remote` tasks when given: a cache in front answers the rest).
    fn build_and_compare(
        &self,
        what: &str,
        script: &str,
        env: &[(&str, &str)],
        reference: &BTreeMap<String, Vec<u8>>,
        expect_remote: Remote,
    ) {
        let before = self.remote_tasks();
        let out = self.ok(script, env);
        let remote = self.remote_tasks() - before;
        assert_same_objects(what, reference, &objects(&self.build));
        match expect_remote {
            Remote::Most => assert!(
                remote as f64 >= 0.9 * reference.len() as f64,
                "{what}: only {remote} of {} compiles ran on the grid:\n{}",
                reference.len(),
                out.stderr
            ),
            Remote::None => assert_eq!(remote, 0, "{what}: the grid was used:\n{}", out.stderr),
        }
        eprintln!(
            "{what}: {} objects identical, {remote} remote",
            reference.len()
        );
    }
}

#[derive(Clone, Copy)]
enum Remote {
    Most,
    None,
}

const CONFIGURE: &str = "-G Ninja -S . -B \"$B\" -DBUILD_TESTING=ON";

/// A plain configure and build of `build_type` in the build directory:
/// the reference objects. The directory is removed afterwards.
fn plain_build(p: &Project, build_type: &str, extra: &str) -> BTreeMap<String, Vec<u8>> {
    p.ok(
        &format!(
            "cmake {CONFIGURE} -DCMAKE_BUILD_TYPE={build_type} {extra} >/dev/null && ninja -C \"$B\" >/dev/null"
        ),
        &[],
    );
    let reference = objects(&p.build);
    assert!(
        reference.len() >= 20,
        "too few objects: {}",
        reference.len()
    );
    std::fs::remove_dir_all(&p.build).expect("remove build dir");
    reference
}

fn run_project_tests(p: &Project) {
    let t = p.ok("cd \"$B\" && ctest --output-on-failure", &[]);
    assert!(t.stdout.contains("100% tests passed"), "{}", t.stdout);
}

/// `hgbuild cmake` once, then every later way of building that directory.
#[test]
fn cmake_configured_through_hgbuild_builds_in_later_commands() {
    let Some(p) = project(&["cmake", "ninja"]) else {
        return;
    };
    let reference = plain_build(&p, "RelWithDebInfo", "");
    p.ok(
        &format!(
            "\"$HGBUILD\" --coordinator \"$HG_COORDINATOR\" cmake {CONFIGURE} -DCMAKE_BUILD_TYPE=RelWithDebInfo"
        ),
        &[],
    );
    // What the build directory records stays after hgbuild has ended.
    let cache = std::fs::read_to_string(p.build.join("CMakeCache.txt")).expect("cache");
    let links = p.home.join(".hybridgrid/bin");
    for lang in ["C", "CXX"] {
        let line = cache
            .lines()
            .find(|l| l.starts_with(&format!("CMAKE_{lang}_COMPILER:")))
            .expect("compiler recorded");
        let path = PathBuf::from(line.split_once('=').expect("value").1);
        assert!(path.starts_with(&links), "{line}");
        assert!(path.exists(), "{line}");
    }
    let clean = "ninja -C \"$B\" -t clean >/dev/null && ";
    p.build_and_compare(
        "hgbuild ninja",
        "\"$HGBUILD\" --coordinator \"$HG_COORDINATOR\" ninja -C \"$B\"",
        &[],
        &reference,
        Remote::Most,
    );
    run_project_tests(&p);
    p.build_and_compare(
        "plain ninja",
        &format!("{clean} ninja -C \"$B\""),
        &[],
        &reference,
        Remote::Most,
    );
    p.build_and_compare(
        "cmake --build",
        &format!("{clean} cmake --build \"$B\""),
        &[],
        &reference,
        Remote::Most,
    );
    // A changed CMakeLists.txt: CMake re-configures itself in the build.
    let lists = p.src.join("CMakeLists.txt");
    let mut text = std::fs::read_to_string(&lists).expect("read CMakeLists.txt");
    text.push_str("\n# touched\n");
    std::fs::write(&lists, text).expect("write CMakeLists.txt");
    p.build_and_compare(
        "re-configured by ninja",
        &format!("{clean} ninja -C \"$B\""),
        &[],
        &reference,
        Remote::Most,
    );
    assert!(
        std::fs::read_to_string(p.build.join("CMakeCache.txt"))
            .expect("cache")
            .contains(links.to_str().expect("utf-8 path")),
        "the re-configure lost the compiler links"
    );
    run_project_tests(&p);
}

/// Debug and Release (and, above, RelWithDebInfo): `-g` or not, the same
/// objects as the plain build.
#[test]
fn every_cmake_build_type_is_identical_through_hgbuild() {
    let Some(p) = project(&["cmake", "ninja"]) else {
        return;
    };
    for build_type in ["Debug", "Release"] {
        let reference = plain_build(&p, build_type, "");
        p.ok(
            &format!(
                "\"$HGBUILD\" --coordinator \"$HG_COORDINATOR\" cmake {CONFIGURE} -DCMAKE_BUILD_TYPE={build_type}"
            ),
            &[],
        );
        p.build_and_compare(
            build_type,
            "\"$HGBUILD\" --coordinator \"$HG_COORDINATOR\" ninja -C \"$B\"",
            &[],
            &reference,
            Remote::Most,
        );
        run_project_tests(&p);
        std::fs::remove_dir_all(&p.build).expect("remove build dir");
        // hgbuild as CMake's launcher, without hgbuild cmake, as before.
        p.ok(
            &format!(
                "cmake {CONFIGURE} -DCMAKE_BUILD_TYPE={build_type} -DCMAKE_C_COMPILER_LAUNCHER=\"$HGBUILD\" -DCMAKE_CXX_COMPILER_LAUNCHER=\"$HGBUILD\" >/dev/null"
            ),
            &[],
        );
        p.build_and_compare(
            &format!("{build_type}, hgbuild as launcher"),
            "ninja -C \"$B\"",
            &[],
            &reference,
            Remote::Most,
        );
        run_project_tests(&p);
        std::fs::remove_dir_all(&p.build).expect("remove build dir");
    }
}

/// A build directory that an older hgbuild configured through a temporary
/// link directory, since removed: one line that says how to re-configure,
/// then `cmake --fresh` through hgbuild makes it build again.
#[test]
fn a_build_directory_of_an_older_hgbuild_says_how_to_reconfigure() {
    let Some(p) = project(&["cmake", "ninja"]) else {
        return;
    };
    // What older versions did: links in a temporary directory, CC and CXX
    // naming them, hgbuild as the launcher too.
    let old = tempfile::Builder::new()
        .prefix("hgbuild-masq-")
        .tempdir()
        .expect("tempdir");
    for n in ["cc", "c++"] {
        std::os::unix::fs::symlink(HGBUILD, old.path().join(n)).expect("link");
    }
    let cc = old.path().join("cc");
    let cxx = old.path().join("c++");
    p.ok(
        &format!(
            "cmake {CONFIGURE} -DCMAKE_C_COMPILER_LAUNCHER=\"$HGBUILD\" -DCMAKE_CXX_COMPILER_LAUNCHER=\"$HGBUILD\" >/dev/null"
        ),
        &[
            ("CC", cc.to_str().expect("utf-8")),
            ("CXX", cxx.to_str().expect("utf-8")),
        ],
    );
    let old_path = old.path().to_path_buf();
    drop(old);
    assert!(!old_path.exists());

    let o = p.sh(
        "\"$HGBUILD\" --coordinator \"$HG_COORDINATOR\" ninja -C \"$B\"",
        &[],
    );
    assert_eq!(o.code, 2, "{}{}", o.stdout, o.stderr);
    let lines: Vec<&str> = o.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{}", o.stderr);
    assert!(
        lines[0].contains("older hgbuild") && lines[0].contains("--fresh"),
        "{}",
        lines[0]
    );
    assert!(objects(&p.build).is_empty(), "it built anyway");
    // Plain ninja gets the same explanation from each compile.
    let o = p.sh("ninja -C \"$B\"", &[]);
    assert_ne!(o.code, 0);
    assert!(
        o.stdout.contains("older hgbuild"),
        "{}{}",
        o.stdout,
        o.stderr
    );

    let before = p.remote_tasks();
    p.ok(
        &format!(
            "\"$HGBUILD\" --coordinator \"$HG_COORDINATOR\" cmake --fresh {CONFIGURE} >/dev/null && \"$HGBUILD\" --coordinator \"$HG_COORDINATOR\" ninja -C \"$B\""
        ),
        &[],
    );
    assert!(p.remote_tasks() - before >= 20);
    run_project_tests(&p);
}

/// Builds with ccache in front, configured by `configure`: ccache's misses
/// are compiled by the grid and, after a clean, its hits never reach it.
fn ccache_case(
    p: &Project,
    what: &str,
    configure: &str,
    env: &[(&str, &str)],
    reference: &BTreeMap<String, Vec<u8>>,
) {
    // A cache of its own per case.
    let name: String = what
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    let ccache_dir = p.home.join(format!("ccache-{name}"));
    let mut env = env.to_vec();
    env.push(("CCACHE_DIR", ccache_dir.to_str().expect("utf-8")));
    p.ok(configure, &env);
    p.build_and_compare(
        &format!("{what}, cold"),
        "ninja -C \"$B\"",
        &env,
        reference,
        Remote::Most,
    );
    p.build_and_compare(
        &format!("{what}, warm"),
        "ninja -C \"$B\" -t clean >/dev/null && ninja -C \"$B\"",
        &env,
        reference,
        Remote::None,
    );
    let stats = p.ok("ccache --print-stats", &env);
    let hits: u64 = stats
        .stdout
        .lines()
        .filter(|l| l.starts_with("direct_cache_hit") || l.starts_with("preprocessed_cache_hit"))
        .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        .sum();
    assert!(
        hits >= reference.len() as u64,
        "{what}: ccache did not answer the warm build:\n{}",
        stats.stdout
    );
    run_project_tests(p);
    std::fs::remove_dir_all(&p.build).expect("remove build dir");
}

/// A user's ccache in front: `CCACHE_PREFIX=hgbuild` (ccache calls
/// `hgbuild c++ ...` for its misses), and `hgbuild ccache c++` (the launcher
/// list `hgbuild;ccache`), which hgbuild turns round into the same.
#[test]
fn ccache_in_front_distributes_its_misses_and_answers_its_hits() {
    let Some(p) = project(&["cmake", "ninja", "ccache"]) else {
        return;
    };
    let reference = plain_build(&p, "RelWithDebInfo", "");
    ccache_case(
        &p,
        "CCACHE_PREFIX=hgbuild",
        &format!(
            "cmake {CONFIGURE} -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_C_COMPILER_LAUNCHER=ccache -DCMAKE_CXX_COMPILER_LAUNCHER=ccache >/dev/null"
        ),
        &[("CCACHE_PREFIX", HGBUILD)],
        &reference,
    );
    ccache_case(
        &p,
        "hgbuild ccache c++",
        &format!(
            "cmake {CONFIGURE} -DCMAKE_BUILD_TYPE=RelWithDebInfo \"-DCMAKE_C_COMPILER_LAUNCHER=$HGBUILD;ccache\" \"-DCMAKE_CXX_COMPILER_LAUNCHER=$HGBUILD;ccache\" >/dev/null"
        ),
        &[],
        &reference,
    );
}

/// A project whose CMakeLists puts ccache in front of every compile by
/// itself (the global `RULE_LAUNCH_COMPILE`, or `CMAKE_CXX_COMPILER_LAUNCHER`
/// set in the file), configured with `hgbuild cmake`:
/// `ccache <hgbuild's c++>`.
#[test]
fn a_project_that_launches_ccache_itself_keeps_it_in_front_of_hgbuild() {
    let Some(p) = project(&["cmake", "ninja", "ccache"]) else {
        return;
    };
    let lists = p.src.join("CMakeLists.txt");
    let original = std::fs::read_to_string(&lists).expect("read CMakeLists.txt");
    let ways = [
        (
            "RULE_LAUNCH_COMPILE",
            "set_property(GLOBAL PROPERTY RULE_LAUNCH_COMPILE \"${CCACHE_PROGRAM}\")",
        ),
        (
            "CMAKE_<LANG>_COMPILER_LAUNCHER",
            "set(CMAKE_C_COMPILER_LAUNCHER \"${CCACHE_PROGRAM}\")\n  set(CMAKE_CXX_COMPILER_LAUNCHER \"${CCACHE_PROGRAM}\")",
        ),
    ];
    for (way, snippet) in ways {
        let text = original.replacen(
            "project(double-conversion VERSION 3.2.0)",
            &format!(
                "project(double-conversion VERSION 3.2.0)\nfind_program(CCACHE_PROGRAM ccache)\nif(CCACHE_PROGRAM)\n  {snippet}\nendif()"
            ),
            1,
        );
        assert!(text.contains("CCACHE_PROGRAM"), "the project changed");
        std::fs::write(&lists, text).expect("write CMakeLists.txt");
        let reference = plain_build(&p, "RelWithDebInfo", "");
        ccache_case(
            &p,
            &format!("project's ccache ({way}) in front of hgbuild's compiler"),
            &format!(
                "\"$HGBUILD\" --coordinator \"$HG_COORDINATOR\" cmake {CONFIGURE} -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null"
            ),
            &[],
            &reference,
        );
    }
}

/// hgbuild in front of ccache cannot keep a prefix the user gave ccache:
/// refused with the order to use, nothing compiled.
#[test]
fn hgbuild_in_front_of_ccache_with_another_prefix_is_refused() {
    let tmp = tempdir();
    write(tmp.path(), "x.c", "int x(void) { return 1; }\n");
    let o = run_in(
        tmp.path(),
        HGBUILD,
        &["ccache", "cc", "-c", "x.c", "-o", "x.o"],
        &[("CCACHE_PREFIX", "distcc"), ("CCACHE_DIR", "ccache")],
    );
    assert_eq!(o.code, 2, "{}", o.stderr);
    assert!(
        o.stderr.contains("CCACHE_PREFIX=hgbuild ccache"),
        "{}",
        o.stderr
    );
    assert!(!tmp.path().join("x.o").exists());
}
