//! Meson and autotools builds through a real loopback grid (a coordinator
//! and two workers, hgbuild's cache off), configured and built in separate
//! commands as a user runs them, on real projects from Debian's upstream
//! tarballs (fetched by `scripts/setup.d/real-projects.sh`):
//!
//! - fribidi 1.0.8 with Meson: `CC="hgbuild cc" meson setup`, then plain
//!   `meson compile` and `meson test`, at Meson's default buildtype
//!   (`-O0 -g`) and at `--buildtype=release`;
//! - gzip 1.12 with autotools: `./configure CC="hgbuild cc"` (autoconf's
//!   default `-g -O2`), then `make -j2` and `make check`.
//!
//! Each build's objects and configuration header must be byte-identical to
//! a plain build in the same directory, most compiles must be counted
//! remote by the coordinator's `/api/stats`, the project's tests must pass,
//! and a re-configure (a touched `meson.build`; `./config.status --recheck`)
//! must keep building through the grid.

mod support;

use std::path::{Path, PathBuf};

use support::*;

/// A project unpacked at a fixed path (so that debug information of every
/// build names the same directories), a HOME for hgbuild, and the grid.
struct Bench {
    _tmp: tempfile::TempDir,
    tarball: PathBuf,
    home: PathBuf,
    unpack: PathBuf,
    coord: Coord,
    _workers: Vec<Worker>,
}

impl Bench {
    /// Skips (or fails under `HG_TEST_REQUIRE_ALL=1`) without the project's
    /// tarball or the tools.
    fn new(project: &str, tools: &[&str]) -> Option<Bench> {
        let tarball = require(project)?;
        if !require_tools(tools) {
            return None;
        }
        let tmp = tempdir();
        let home = tmp.path().join("home");
        std::fs::create_dir_all(&home).expect("home");
        let unpack = tmp.path().join("src");
        let (coord, workers) = grid(2);
        Some(Bench {
            _tmp: tmp,
            tarball,
            home,
            unpack,
            coord,
            _workers: workers,
        })
    }

    /// A fresh copy of the project, always at the same path.
    fn fresh(&self) -> PathBuf {
        if self.unpack.exists() {
            std::fs::remove_dir_all(&self.unpack).expect("remove the old tree");
        }
        std::fs::create_dir_all(&self.unpack).expect("mkdir");
        extract(&self.tarball, &self.unpack)
    }

    /// Runs `script` with sh in `dir`, as in a new shell of the user's
    /// ([`user_sh`], without CFLAGS). Fails the test unless it succeeds.
    fn ok(&self, dir: &Path, script: &str) -> Output {
        let out: Output = user_sh(dir, &self.home, &self.coord, script, 900)
            .env_remove("CFLAGS")
            .output()
            .expect("run sh")
            .into();
        assert_eq!(
            out.code, 0,
            "`{script}` failed:\n{}\n{}",
            out.stdout, out.stderr
        );
        out
    }

    fn remote_tasks(&self) -> u64 {
        successful_tasks(&self.coord.http)
    }

    /// Checks a grid build against the plain one: the same objects and
    /// configuration header, and at least 90% of the objects compiled
    /// remotely (`remote` tasks).
    fn compare(&self, what: &str, plain: &Built, ours: &Built, remote: u64) {
        assert_same_objects(what, &plain.objects, &ours.objects);
        assert!(
            plain.config_h == ours.config_h,
            "{what}: the configuration header differs from the plain configure's"
        );
        assert!(
            remote as f64 >= 0.9 * plain.objects.len() as f64,
            "{what}: only {remote} of {} compiles ran on the grid",
            plain.objects.len()
        );
        eprintln!(
            "{what}: {} objects and the configuration header identical, {remote} remote",
            plain.objects.len()
        );
    }
}

/// What a build left: its objects and its configuration header.
struct Built {
    objects: std::collections::BTreeMap<String, Vec<u8>>,
    config_h: Vec<u8>,
}

impl Built {
    fn of(tree: &Path, config_h: &str) -> Built {
        let objects = objects(tree);
        assert!(!objects.is_empty(), "no objects under {}", tree.display());
        Built {
            objects,
            config_h: std::fs::read(tree.join(config_h))
                .unwrap_or_else(|e| panic!("{config_h}: {e}")),
        }
    }
}

#[test]
fn meson_configures_and_builds_through_the_grid() {
    let Some(bench) = Bench::new("fribidi_", &["meson", "ninja"]) else {
        return;
    };
    for (what, options) in [
        ("meson default buildtype", ""),
        ("meson release", "--buildtype=release"),
    ] {
        let src = bench.fresh();
        // The plain build names `cc`: Meson would otherwise put a ccache or
        // sccache it finds in front, and a running sccache server answers
        // objects compiled at another path (another DW_AT_comp_dir).
        bench.ok(
            &src,
            &format!("CC=cc meson setup build -Ddocs=false {options} && meson compile -C build"),
        );
        let plain = Built::of(&src.join("build"), "config.h");

        let src = bench.fresh();
        let before = bench.remote_tasks();
        bench.ok(
            &src,
            &format!("CC=\"$HGBUILD cc\" meson setup build -Ddocs=false {options}"),
        );
        bench.ok(&src, "meson compile -C build");
        let ours = Built::of(&src.join("build"), "config.h");
        bench.compare(what, &plain, &ours, bench.remote_tasks() - before);
        bench.ok(&src, "meson test -C build --print-errorlogs");

        // A changed meson.build re-runs the configure step inside the
        // build; the compiler it records is still hgbuild, so a changed
        // source compiles on the grid again.
        let build_ninja = std::fs::read_to_string(src.join("build/build.ninja")).expect("ninja");
        assert!(
            build_ninja.contains(HGBUILD),
            "{what}: hgbuild is not recorded"
        );
        bench.ok(&src, "touch meson.build lib/fribidi.c");
        let before = bench.remote_tasks();
        let out = bench.ok(&src, "meson compile -C build");
        assert!(
            bench.remote_tasks() > before,
            "{what}: after a re-configure nothing compiled on the grid:\n{}",
            out.stdout
        );
        let build_ninja = std::fs::read_to_string(src.join("build/build.ninja")).expect("ninja");
        assert!(
            build_ninja.contains(HGBUILD),
            "{what}: the re-configure dropped hgbuild"
        );
    }
}

#[test]
fn autotools_configures_and_builds_through_the_grid() {
    let Some(bench) = Bench::new("gzip_", &["make"]) else {
        return;
    };
    let src = bench.fresh();
    bench.ok(&src, "./configure && make -j2");
    let plain = Built::of(&src, "lib/config.h");

    let src = bench.fresh();
    let before = bench.remote_tasks();
    bench.ok(&src, "./configure CC=\"$HGBUILD cc\"");
    // The configure step's probes compiled here, not on the grid.
    assert_eq!(
        bench.remote_tasks(),
        before,
        "configure probes went to the grid"
    );
    bench.ok(&src, "make -j2");
    let ours = Built::of(&src, "lib/config.h");
    bench.compare("autotools", &plain, &ours, bench.remote_tasks() - before);
    bench.ok(&src, "make -j2 check");

    // A re-configure from the recorded options keeps the compiler, and the
    // same decisions.
    bench.ok(&src, "./config.status --recheck && ./config.status");
    assert!(
        std::fs::read(src.join("lib/config.h")).expect("config.h") == plain.config_h,
        "the re-configured config.h differs"
    );
    let makefile = std::fs::read_to_string(src.join("Makefile")).expect("Makefile");
    assert!(
        makefile.contains(&format!("CC = {HGBUILD} cc")),
        "the re-configure dropped hgbuild"
    );
    bench.ok(&src, "touch gzip.c");
    let before = bench.remote_tasks();
    bench.ok(&src, "make -j2");
    assert!(
        bench.remote_tasks() > before,
        "after a re-configure nothing compiled on the grid"
    );
}
