//! Real open-source projects built with `hgbuild make` through a real grid
//! (a coordinator and two workers on loopback): every object must be
//! byte-identical to a plain build, the projects' own tests must pass, and
//! more than 90% of the compiles must run remotely.
//!
//! The sources are Debian's upstream tarballs of Lua 5.4 and zlib, fetched
//! by `scripts/setup.d/real-projects.sh` into `HG_SOURCES_DIR` (default
//! `/var/cache/hybridgrid-test-sources`).

mod support;

use std::path::Path;
use std::process::Command;

use support::*;

fn sh(dir: &Path, script: &str) -> Output {
    let out = Command::new("timeout")
        .args(["600", "sh", "-c", script])
        .current_dir(dir)
        .env_remove("HG_COORDINATOR")
        .env("HG_DISCOVERY__MDNS__ENABLED", "false")
        .env("HOME", dir)
        .output()
        .expect("run sh");
    out.into()
}

struct Built {
    remote: usize,
    compiles: usize,
    log: String,
}

/// Builds plainly, keeps the objects, cleans, builds with hgbuild, and
/// compares every object.
fn build_both(dir: &Path, coord: &str, configure: &str, make_args: &str, clean: &str) -> Built {
    if !configure.is_empty() {
        let c = sh(dir, configure);
        assert_eq!(c.code, 0, "configure failed: {}{}", c.stdout, c.stderr);
    }
    let plain = sh(dir, &format!("make -j4 {make_args}"));
    assert_eq!(plain.code, 0, "plain build failed: {}", plain.stderr);
    let reference = objects(dir);
    assert!(
        reference.len() >= 10,
        "too few objects: {}",
        reference.len()
    );
    let c = sh(dir, clean);
    assert_eq!(c.code, 0, "clean failed: {}", c.stderr);
    assert!(objects(dir).is_empty(), "clean left objects behind");

    let built = sh(
        dir,
        &format!("{HGBUILD} --coordinator {coord} -v make -j4 {make_args}"),
    );
    assert_eq!(built.code, 0, "hgbuild make failed:\n{}", built.stderr);
    assert_same_objects("hgbuild make", &reference, &objects(dir));
    let lines: Vec<&str> = built
        .stderr
        .lines()
        .filter(|l| l.starts_with("hgbuild: ["))
        .collect();
    let compiles: Vec<&&str> = lines
        .iter()
        .filter(|l| !l.contains("[local linking"))
        .collect();
    let remote = compiles.iter().filter(|l| l.contains("[remote ")).count();
    Built {
        remote,
        compiles: compiles.len(),
        log: built.stderr,
    }
}

fn assert_mostly_remote(name: &str, b: &Built) {
    assert!(
        b.compiles >= 10,
        "{name}: only {} compiles seen:\n{}",
        b.compiles,
        b.log
    );
    let share = b.remote as f64 / b.compiles as f64;
    eprintln!(
        "{name}: {}/{} compiles remote ({:.0}%)",
        b.remote,
        b.compiles,
        share * 100.0
    );
    assert!(
        share > 0.9,
        "{name}: only {:.0}% remote:\n{}",
        share * 100.0,
        b.log
    );
}

#[test]
fn lua_builds_identically_through_the_grid() {
    let Some(tarball) = require("lua5.4_") else {
        return;
    };
    let (coord, _workers) = grid(2);
    let tmp = tempdir();
    let dir = extract(&tarball, tmp.path());
    let built = build_both(&dir, &coord.grpc, "", "linux", "make clean");
    assert_mostly_remote("lua", &built);
    // The result works: run a Lua program that exercises the VM and libraries.
    let script = r#"
        local t = {}
        for i = 1, 1000 do t[i] = i * i end
        assert(#t == 1000 and t[1000] == 1000000)
        assert(string.format("%5.2f", math.pi) == " 3.14")
        assert(("hybridgrid"):upper() == "HYBRIDGRID")
        local co = coroutine.wrap(function(a) local b = coroutine.yield(a + 1); return b * 2 end)
        assert(co(1) == 2 and co(21) == 42)
        assert(select('#', table.unpack({1, 2, 3})) == 3)
        print("lua ok")
    "#;
    std::fs::write(dir.join("check.lua"), script).expect("write script");
    let run = sh(&dir, "src/lua check.lua");
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.stdout.contains("lua ok"));
}

/// zlib configured with `configure`, built plainly and through the grid,
/// then its own tests.
fn zlib_through_the_grid(name: &str, configure: &str) {
    let Some(tarball) = require("zlib_") else {
        return;
    };
    let (coord, _workers) = grid(2);
    let tmp = tempdir();
    let dir = extract(&tarball, tmp.path());
    let built = build_both(&dir, &coord.grpc, configure, "", "make clean");
    assert_mostly_remote(name, &built);
    let t = sh(&dir, "make test");
    assert_eq!(t.code, 0, "{}{}", t.stdout, t.stderr);
    assert!(t.stdout.contains("zlib test OK"), "{}", t.stdout);
}

#[test]
fn zlib_builds_identically_through_the_grid_and_passes_its_tests() {
    zlib_through_the_grid("zlib", "./configure");
}

/// With debug info (`-g`), compiled from source on the workers: objects
/// identical to the plain build's, line tables and paths included.
#[test]
fn zlib_with_debug_info_builds_identically_through_the_grid() {
    zlib_through_the_grid("zlib -g", "CFLAGS='-O2 -g' ./configure");
}
