//! `cache.remote` with the real binaries and real servers: coordinators
//! sharing one Redis, a store that dies mid-build, and hgbuild on its own
//! (a CI machine without a coordinator) sharing through a WebDAV/HTTP
//! server. The servers are started here (scripts/setup.d/remote.sh
//! installs them); a missing one skips with a message, or fails under
//! `HG_TEST_REQUIRE_ALL=1`.

mod support;

#[path = "../../hybridgrid-cache/tests/servers/mod.rs"]
mod servers;

use std::path::Path;
use std::time::{Duration, Instant};

use servers::{Kind, Server};
use support::*;

const MAIN_C: &str = "#include \"util.h\"\nint main(void) { return twice(21) - 42; }\n";
const UTIL_H: &str = "static inline int twice(int x) { return 2 * x; }\n";

fn remote_env(server: &Server) -> Vec<(String, String)> {
    vec![
        (
            "HG_CACHE__REMOTE__BACKEND".into(),
            server.kind.backend().into(),
        ),
        ("HG_CACHE__REMOTE__URL".into(), server.url.clone()),
        ("HG_CACHE__REMOTE__TIMEOUT".into(), "2s".into()),
        ("HG_CACHE__REMOTE__WRITE_TIMEOUT".into(), "5s".into()),
    ]
}

fn as_refs(v: &[(String, String)]) -> Vec<(&str, &str)> {
    v.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect()
}

/// A coordinator with the remote tier of `env`.
fn coordinator(env: &[(String, String)]) -> Coord {
    let coord = start_coordinator_env(&[], &as_refs(env));
    assert!(
        coord
            .proc
            .wait_log("remote cache tier enabled", Duration::from_secs(10)),
        "{}",
        coord.proc.log_text()
    );
    coord
}

fn stats(coord: &Coord) -> serde_json::Value {
    let (status, body) = http_get(&coord.http, "/api/stats");
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).expect("json")
}

/// Waits until the coordinator's remote tier has written `n` entries.
fn wait_remote_writes(coord: &Coord, n: u64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let s = stats(coord);
        if s["cache"]["remote"]["writes"].as_u64() >= Some(n) {
            return;
        }
        assert!(Instant::now() < deadline, "remote writes never landed: {s}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// hgbuild through `coord` with its own HOME (an empty local tier).
fn compile_fresh(dir: &Path, coord: &str, src: &str, obj: &str) -> Output {
    let home = tempdir();
    run_in(
        dir,
        HGBUILD,
        &[
            "--coordinator",
            coord,
            "-v",
            "cc",
            "-O2",
            "-c",
            src,
            "-o",
            obj,
        ],
        &[("HOME", home.path().to_str().expect("utf8 path"))],
    )
}

#[test]
fn two_coordinators_share_one_redis() {
    let Some(redis) = servers::start(Kind::Redis) else {
        return;
    };
    let env = remote_env(&redis);
    let a = coordinator(&env);
    let worker = start_worker(&a.grpc, "w1", &[]);
    // Coordinator B has no workers at all: only a cache can answer.
    let b = coordinator(&env);

    let dir = tempdir();
    write(dir.path(), "main.c", MAIN_C);
    write(dir.path(), "util.h", UTIL_H);
    let first = compile_fresh(dir.path(), &a.grpc, "main.c", "main.o");
    assert_eq!(first.code, 0, "{}", first.stderr);
    assert!(first.stderr.contains("[remote w1]"), "{}", first.stderr);
    let obj = read(dir.path(), "main.o");
    wait_remote_writes(&a, 1);

    std::fs::remove_file(dir.path().join("main.o")).expect("rm");
    let via_b = compile_fresh(dir.path(), &b.grpc, "main.c", "main.o");
    assert_eq!(via_b.code, 0, "{}", via_b.stderr);
    assert!(via_b.stderr.contains("[cache]"), "{}", via_b.stderr);
    assert_eq!(read(dir.path(), "main.o"), obj, "the same object");
    let s = stats(&b);
    assert_eq!(s["workers"]["total"], 0, "{s}");
    assert_eq!(s["cache"]["hits"], 1, "{s}");
    assert_eq!(s["cache"]["remote"]["hits"], 1, "{s}");
    assert_eq!(s["cache"]["remote"]["backend"], "redis", "{s}");
    let (_, body) = http_get(&worker.http, "/api/status");
    assert!(
        body.contains("\"completed\":1"),
        "a worker compiled again: {body}"
    );

    // The remote hit filled B's own disk tier: another fresh client is
    // answered there, without asking Redis again.
    std::fs::remove_file(dir.path().join("main.o")).expect("rm");
    let again = compile_fresh(dir.path(), &b.grpc, "main.c", "main.o");
    assert!(again.stderr.contains("[cache]"), "{}", again.stderr);
    let s = stats(&b);
    assert_eq!(s["cache"]["hits"], 2, "{s}");
    assert_eq!(s["cache"]["remote"]["hits"], 1, "{s}");

    let (_, metrics) = http_get(&b.http, "/metrics");
    assert!(
        metrics.contains("hybridgrid_cache_hits_total{tier=\"remote\"} 1"),
        "{metrics}"
    );
}

#[test]
fn a_store_killed_mid_build_costs_one_warning_and_no_failure() {
    let Some(mut redis) = servers::start(Kind::Redis) else {
        return;
    };
    let mut env = remote_env(&redis);
    env.push(("HG_CACHE__REMOTE__RETRY_AFTER".into(), "10m".into()));
    let coord = coordinator(&env);
    let _worker = start_worker(&coord.grpc, "w1", &[]);
    let dir = tempdir();
    write(dir.path(), "util.h", UTIL_H);
    for i in 0..6 {
        write(
            dir.path(),
            &format!("f{i}.c"),
            &format!("#include \"util.h\"\nint f{i}(void) {{ return twice({i}); }}\n"),
        );
    }
    for i in 0..6 {
        if i == 3 {
            wait_remote_writes(&coord, 3);
            redis.kill();
        }
        let out = compile_fresh(
            dir.path(),
            &coord.grpc,
            &format!("f{i}.c"),
            &format!("f{i}.o"),
        );
        assert_eq!(out.code, 0, "f{i}.c: {}", out.stderr);
        assert!(out.stderr.contains("[remote w1]"), "{}", out.stderr);
        assert!(dir.path().join(format!("f{i}.o")).exists());
    }
    let log = coord.proc.log_text();
    assert_eq!(
        log.matches("remote cache unavailable").count(),
        1,
        "one warning per outage:\n{log}"
    );
    let s = stats(&coord);
    assert_eq!(s["cache"]["remote"]["available"], false, "{s}");
    assert_eq!(s["cache"]["remote"]["writes"], 3, "{s}");
    assert_eq!(s["tasks"]["failed"], 0, "{s}");
}

/// hgbuild without a coordinator: `cache.remote` shared by CI machines.
#[test]
fn hgbuild_without_a_coordinator_shares_through_an_http_cache() {
    let Some(mut nginx) = servers::start(Kind::Http) else {
        return;
    };
    let env = remote_env(&nginx);
    let dir = tempdir();
    write(dir.path(), "main.c", MAIN_C);
    write(dir.path(), "util.h", UTIL_H);
    let cc = |home: &Path, extra: &[(&str, &str)], src: &str| {
        let mut e = as_refs(&env);
        e.push(("HOME", home.to_str().expect("utf8 path")));
        e.extend_from_slice(extra);
        run_in(
            dir.path(),
            HGBUILD,
            &["-v", "cc", "-O2", "-c", src, "-o", "out.o"],
            &e,
        )
    };
    // CI machine 1 compiles here and stores its result remotely.
    let ci1 = tempdir();
    let first = cc(ci1.path(), &[], "main.c");
    assert_eq!(first.code, 0, "{}", first.stderr);
    assert!(first.stderr.contains("[remote local]"), "{}", first.stderr);
    let obj = read(dir.path(), "out.o");
    let stored = count_files(&nginx.dir.path().join("data"));
    assert_eq!(stored, 1, "one entry on the server");

    // CI machine 2 (an empty local tier) gets it from the server.
    let ci2 = tempdir();
    std::fs::remove_file(dir.path().join("out.o")).expect("rm");
    let hit = cc(ci2.path(), &[], "main.c");
    assert_eq!(hit.code, 0, "{}", hit.stderr);
    assert!(hit.stderr.contains("[cache]"), "{}", hit.stderr);
    assert_eq!(read(dir.path(), "out.o"), obj);

    // A read-only laptop compiles something new: nothing is written.
    write(dir.path(), "other.c", "int other(void) { return 7; }\n");
    let laptop = tempdir();
    let ro = cc(
        laptop.path(),
        &[("HG_CACHE__REMOTE__READ_ONLY", "true")],
        "other.c",
    );
    assert_eq!(ro.code, 0, "{}", ro.stderr);
    assert_eq!(count_files(&nginx.dir.path().join("data")), 1);

    // The server dies: every compile still works, one warning in all.
    nginx.kill();
    let ci3 = tempdir();
    let mut warnings = 0;
    for i in 0..3 {
        let src = format!("g{i}.c");
        write(
            dir.path(),
            &src,
            &format!("int g{i}(void) {{ return {i}; }}\n"),
        );
        let out = cc(ci3.path(), &[], &src);
        assert_eq!(out.code, 0, "{}", out.stderr);
        warnings += out.stderr.matches("remote cache unavailable").count();
    }
    assert_eq!(warnings, 1, "one warning for the whole build");
}

fn count_files(dir: &Path) -> usize {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return 0;
    };
    rd.flatten()
        .map(|e| {
            let p = e.path();
            if p.is_dir() { count_files(&p) } else { 1 }
        })
        .sum()
}

/// The key of the only entry in `redis` (read while it needs no password).
fn only_redis_key(redis: &Server) -> String {
    let reply = redis.redis(&[b"KEYS", b"*"]);
    let text = String::from_utf8_lossy(&reply).into_owned();
    // `*1\r\n$N\r\n<key>\r\n`
    let lines: Vec<&str> = text.split("\r\n").collect();
    assert_eq!(lines.first(), Some(&"*1"), "one key: {text:?}");
    lines[2].to_owned()
}

/// A corrupt object in the shared store is a miss: the compile runs on a
/// worker and yields the right object, the coordinator logs it and counts
/// it, and the bad object is replaced by a good one.
#[test]
fn a_corrupt_shared_entry_is_a_reported_and_counted_miss() {
    let Some(redis) = servers::start(Kind::Redis) else {
        return;
    };
    let env = remote_env(&redis);
    let a = coordinator(&env);
    let _wa = start_worker(&a.grpc, "wa", &[]);
    let dir = tempdir();
    write(dir.path(), "main.c", MAIN_C);
    write(dir.path(), "util.h", UTIL_H);
    let first = compile_fresh(dir.path(), &a.grpc, "main.c", "main.o");
    assert_eq!(first.code, 0, "{}", first.stderr);
    let obj = read(dir.path(), "main.o");
    wait_remote_writes(&a, 1);
    let key = only_redis_key(&redis);
    let good = redis.read(&key).expect("stored entry");
    let mut bad = good.clone();
    let mid = bad.len() / 2;
    bad[mid] ^= 0x5a;
    redis.overwrite(&key, &bad);

    let b = coordinator(&env);
    let _wb = start_worker(&b.grpc, "wb", &[]);
    std::fs::remove_file(dir.path().join("main.o")).expect("rm");
    let out = compile_fresh(dir.path(), &b.grpc, "main.c", "main.o");
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stderr.contains("[remote wb]"),
        "compiled again: {}",
        out.stderr
    );
    assert_eq!(read(dir.path(), "main.o"), obj, "the right object");
    assert!(
        b.proc
            .wait_log("corrupt remote cache entry ignored", Duration::from_secs(5)),
        "{}",
        b.proc.log_text()
    );
    let s = stats(&b);
    assert_eq!(s["cache"]["remote"]["corrupt"], 1, "{s}");
    assert_eq!(s["cache"]["remote"]["hits"], 0, "{s}");
    assert_eq!(
        s["cache"]["remote"]["available"], true,
        "not an outage: {s}"
    );
    // B stored the fresh result in place of the bad one.
    wait_remote_writes(&b, 1);
    assert_eq!(redis.read(&key), Some(good), "a good entry again");
    let (_, metrics) = http_get(&b.http, "/metrics");
    assert!(
        metrics.contains("hybridgrid_cache_corrupt_total{tier=\"remote\"} 1"),
        "{metrics}"
    );
}

/// Passwords come from a file, an environment variable or the URL, and
/// none of them ever shows in a log line, an error or an API answer, even
/// at debug level and when the server refuses them.
#[test]
fn remote_credentials_never_appear_in_logs_or_errors() {
    const GOOD: &str = "file-Pw-7f3a9c";
    const IN_URL: &str = "url-Pw-2b8e41";
    const IN_ENV: &str = "env-Pw-d05c66";
    let Some(redis) = servers::start(Kind::Redis) else {
        return;
    };
    let pw_dir = tempdir();
    let pw_file = pw_dir.path().join("redis.password");
    std::fs::write(&pw_file, format!("{GOOD}\n")).expect("password file");
    let reply = redis.redis(&[b"CONFIG", b"SET", b"requirepass", GOOD.as_bytes()]);
    assert!(
        reply.starts_with(b"+OK"),
        "{}",
        String::from_utf8_lossy(&reply)
    );

    let debug = ("HG_LOG_LEVEL".to_owned(), "debug".to_owned());
    // A: the right password, from a file. Its results reach the server.
    let mut env_a = remote_env(&redis);
    env_a.push((
        "HG_CACHE__REMOTE__PASSWORD_FILE".into(),
        pw_file.display().to_string(),
    ));
    env_a.push(debug.clone());
    let a = coordinator(&env_a);
    let _w = start_worker(&a.grpc, "w1", &[]);
    let dir = tempdir();
    write(dir.path(), "main.c", MAIN_C);
    write(dir.path(), "util.h", UTIL_H);
    let out = compile_fresh(dir.path(), &a.grpc, "main.c", "main.o");
    assert_eq!(out.code, 0, "{}", out.stderr);
    wait_remote_writes(&a, 1);

    // B: a wrong password in the URL; refused, warned about, never shown.
    let port = redis.port;
    let mut env_b = remote_env(&redis);
    env_b[1].1 = format!("redis://:{IN_URL}@127.0.0.1:{port}/0");
    env_b.push(debug.clone());
    let b = coordinator(&env_b);
    let _wb = start_worker(&b.grpc, "w2", &[]);
    std::fs::remove_file(dir.path().join("main.o")).expect("rm");
    let out = compile_fresh(dir.path(), &b.grpc, "main.c", "main.o");
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        b.proc
            .wait_log("remote cache unavailable", Duration::from_secs(10)),
        "{}",
        b.proc.log_text()
    );

    // hgbuild on its own: a wrong password from the environment.
    let home = tempdir();
    let mut env_c = remote_env(&redis);
    env_c.push((
        "HG_CACHE__REMOTE__PASSWORD_ENV".into(),
        "HG_TEST_REDIS_PW".into(),
    ));
    env_c.push(("HG_TEST_REDIS_PW".into(), IN_ENV.into()));
    env_c.push(("HOME".into(), home.path().display().to_string()));
    env_c.push(debug);
    let c = run_in(
        dir.path(),
        HGBUILD,
        &["-v", "cc", "-O2", "-c", "main.c", "-o", "c.o"],
        &as_refs(&env_c),
    );
    assert_eq!(c.code, 0, "{}", c.stderr);
    assert!(
        c.stderr.contains("remote cache unavailable"),
        "the refusal is reported: {}",
        c.stderr
    );

    let (_, stats_b) = http_get(&b.http, "/api/stats");
    let (_, metrics_b) = http_get(&b.http, "/metrics");
    let texts = [
        ("coordinator A log", a.proc.log_text()),
        ("coordinator B log", b.proc.log_text()),
        ("hgbuild stderr", c.stderr.clone()),
        ("hgbuild stdout", c.stdout.clone()),
        ("B /api/stats", stats_b),
        ("B /metrics", metrics_b),
    ];
    for (what, text) in &texts {
        for secret in [GOOD, IN_URL, IN_ENV] {
            assert!(!text.contains(secret), "{what} shows a password:\n{text}");
        }
    }
    // The URL is still named, with the password masked.
    let b_log = &texts[1].1;
    assert!(
        b_log.contains(&format!("redis://:<redacted>@127.0.0.1:{port}/0")),
        "the server is named, its password masked: {b_log}"
    );
}
