//! Discovery with the real binaries, across network namespaces this test
//! creates (the machine's own namespace never sees mDNS):
//!
//! ```text
//!   br0 (bridge, own namespace) 10.213.0.0/24        br1 10.214.0.0/24
//!    |- c   coordinator 10.213.0.1                     |- w3 worker 10.214.0.3
//!    |- w1  worker      10.213.0.2                     |
//!    |- w2  worker      10.213.0.3                     |
//!    |- cl  hgbuild     10.213.0.9                     |
//!    '- rt  router      10.213.0.254 ------------------'  10.214.0.254
//! ```
//!
//! The router forwards unicast only, so w3 is reachable but not visible to
//! mDNS. Each program runs with its own host name (`unshare --uts`) and no
//! coordinator address: discovery does the rest.
//!
//! Needs root, `ip` (iproute2), `unshare`, `curl` and `cc`; skipped with a
//! reason otherwise, unless `HG_TEST_REQUIRE_ALL=1`.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

const COORD: &str = env!("CARGO_BIN_EXE_hg-coord");
const WORKER: &str = env!("CARGO_BIN_EXE_hg-worker");
const HGBUILD: &str = env!("CARGO_BIN_EXE_hgbuild");

/// Heartbeat TTL given to the coordinator (the default 30 s would make the
/// test slow); workers beat every second.
const TTL: Duration = Duration::from_secs(6);

mod support;

use support::netns::{Lab, preconditions, run, sh, skip};

/// The topology in the module docs.
fn lab() -> Lab {
    let mut lab = Lab::new("hgd", &["br0", "br1"]);
    lab.host(
        "c",
        &[("br0", "eth0", "10.213.0.1/24")],
        Some("10.213.0.254"),
    );
    lab.host(
        "w1",
        &[("br0", "eth0", "10.213.0.2/24")],
        Some("10.213.0.254"),
    );
    lab.host(
        "w2",
        &[("br0", "eth0", "10.213.0.3/24")],
        Some("10.213.0.254"),
    );
    lab.host(
        "cl",
        &[("br0", "eth0", "10.213.0.9/24")],
        Some("10.213.0.254"),
    );
    lab.host(
        "w3",
        &[("br1", "eth0", "10.214.0.3/24")],
        Some("10.214.0.254"),
    );
    lab.host(
        "rt",
        &[
            ("br0", "eth0", "10.213.0.254/24"),
            ("br1", "eth1", "10.214.0.254/24"),
        ],
        None,
    );
    let rt = lab.ns("rt");
    sh(&[
        "ip",
        "netns",
        "exec",
        &rt,
        "sh",
        "-c",
        "echo 1 > /proc/sys/net/ipv4/ip_forward",
    ]);
    lab
}

fn has(ids: &[String], id: &str) -> bool {
    ids.iter().any(|i| i == id)
}

fn write(p: &Path, text: &str) {
    if let Err(e) = std::fs::write(p, text) {
        panic!("write {}: {e}", p.display());
    }
}

#[test]
fn discovery_across_namespaces() {
    if let Err(reason) = preconditions() {
        skip("discovery_netns", &reason);
        return;
    }
    let mut lab = lab();
    let ttl = format!("{}s", TTL.as_secs());
    let coord_env = [("HG_COORDINATOR__HEARTBEAT_TTL", ttl.as_str())];
    let worker_env = [("HG_WORKER__HEARTBEAT_INTERVAL", "1s")];

    // 1. Coordinator and two workers, no addresses anywhere.
    lab.spawn("coord", "c", COORD, &["serve"], &coord_env);
    lab.wait_for("the coordinator", Duration::from_secs(20), |l| {
        l.workers().is_some()
    });
    let mut latency = Vec::new();
    for w in ["w1", "w2"] {
        let t = Instant::now();
        lab.spawn(w, w, WORKER, &["serve"], &worker_env);
        lab.wait_for(&format!("{w} in the pool"), Duration::from_secs(15), |l| {
            has(&l.ids(), w)
        });
        latency.push((w, t.elapsed()));
    }
    for (w, d) in &latency {
        eprintln!(
            "DISCOVERY latency {w}: worker start -> in the pool: {} ms",
            d.as_millis()
        );
    }
    // Found by mDNS (and registered by handshake after finding the
    // coordinator by mDNS): one entry each, never two.
    let ws = lab.workers().unwrap_or_default();
    eprintln!("DISCOVERY workers after start: {ws:?}");
    assert_eq!(ws.len(), 2, "{ws:?}");
    for (id, source, address) in &ws {
        assert!(source == "mdns" || source == "handshake", "{id}: {source}");
        assert!(address.starts_with("10.213.0."), "{id}: {address}");
    }
    assert!(lab.log("coord").contains("worker registered"));
    for (w, d) in &latency {
        assert!(
            *d < Duration::from_secs(5),
            "{w} took {d:?} to be discovered"
        );
    }

    // 2. hgbuild with no coordinator configured finds it and compiles remotely.
    write(
        &lab.path("hello.c"),
        "#include <stdio.h>\nint twice(int x) { return 2 * x; }\nint main(void) { printf(\"%d\\n\", twice(21)); return 0; }\n",
    );
    let t = Instant::now();
    let o = run(lab.command(
        "cl",
        HGBUILD,
        &["-v", "cc", "-O2", "-c", "hello.c", "-o", "hello.o"],
        &[],
    ));
    let first = t.elapsed();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "hgbuild failed: {err}");
    assert!(err.contains("[remote "), "not compiled remotely: {err}");
    let o = run(Command::new("cc")
        .args(["-O2", "-c", "hello.c", "-o", "local.o"])
        .current_dir(lab.dir.path()));
    assert!(o.status.success());
    assert_eq!(
        std::fs::read(lab.path("hello.o")).ok(),
        std::fs::read(lab.path("local.o")).ok(),
        "remote object differs from a local cc -c"
    );
    let cached =
        std::fs::read_to_string(lab.path(".hybridgrid/cache/mdns-coordinator")).unwrap_or_default();
    assert_eq!(cached.trim(), "10.213.0.1:9000");
    write(&lab.path("two.c"), "int two(void) { return 2; }\n");
    let t = Instant::now();
    let o = run(lab.command("cl", HGBUILD, &["-v", "cc", "-c", "two.c"], &[]));
    let second = t.elapsed();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("[remote "), "not compiled remotely: {err}");
    eprintln!(
        "DISCOVERY hgbuild first compile (browses) {} ms, second (cache file) {} ms",
        first.as_millis(),
        second.as_millis()
    );

    // 3. w3 sits behind a router: no multicast path, never discovered.
    lab.spawn("w3", "w3", WORKER, &["serve"], &worker_env);
    std::thread::sleep(Duration::from_secs(3));
    assert!(!has(&lab.ids(), "w3"), "w3 must not be found by mDNS");
    let o = run(lab.command(
        "c",
        "curl",
        &["-s", "--max-time", "2", "http://10.214.0.3:9090/health"],
        &[],
    ));
    assert_eq!(
        String::from_utf8_lossy(&o.stdout).trim(),
        "OK",
        "w3 reachable by unicast"
    );

    // 4. Killing w2 removes it within the TTL.
    lab.stop("w2", false);
    let gone = lab.wait_for("w2 to leave within the TTL", TTL, |l| !has(&l.ids(), "w2"));
    eprintln!(
        "DISCOVERY killed worker left the pool after {} ms",
        gone.as_millis()
    );

    // 5. Restart the coordinator with w3 (and a closed port) listed as
    // static workers: every live worker is back, without restarting any.
    lab.stop("coord", true);
    let statics = "10.214.0.3:50052,10.214.0.3:50053";
    let env = [
        ("HG_COORDINATOR__HEARTBEAT_TTL", ttl.as_str()),
        ("HG_COORDINATOR__STATIC_WORKERS", statics),
    ];
    let t = Instant::now();
    lab.spawn("coord", "c", COORD, &["serve"], &env);
    lab.wait_for("w1 and w3 back", Duration::from_secs(15), |l| {
        let ids = l.ids();
        has(&ids, "w1") && has(&ids, "w3")
    });
    eprintln!(
        "DISCOVERY after a coordinator restart all workers were back in {} ms",
        t.elapsed().as_millis()
    );
    let ws = lab.workers().unwrap_or_default();
    let w3 = ws.iter().find(|w| w.0 == "w3").cloned().unwrap_or_default();
    assert_eq!(
        (w3.1.as_str(), w3.2.as_str()),
        ("static", "10.214.0.3:50052")
    );
    lab.wait_for(
        "the unreachable static worker logged",
        Duration::from_secs(5),
        |l| {
            let log = l.log("coord");
            log.lines().any(|line| {
                line.contains("worker unreachable")
                    && line.contains("10.214.0.3:50053")
                    && line.contains("connection refused")
            })
        },
    );
    // A compile lands on w3 too once w1 is gone.
    lab.stop("w1", true);
    lab.wait_for("w1 to leave", Duration::from_secs(10), |l| {
        !has(&l.ids(), "w1")
    });
    let _ = std::fs::remove_file(lab.path(".hybridgrid/cache/mdns-coordinator"));
    let o = run(lab.command(
        "cl",
        HGBUILD,
        // -O1: another cache key, so the coordinator's shared tier cannot answer.
        &["-v", "cc", "-O1", "-c", "two.c", "-o", "three.o"],
        &[("HG_CACHE__ENABLED", "false")],
    ));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("[remote w3]"), "not compiled on w3: {err}");

    // 6. A static worker that stops answering leaves, and comes back.
    lab.stop("w3", false);
    lab.wait_for("w3 to leave", TTL + Duration::from_secs(3), |l| {
        !has(&l.ids(), "w3")
    });
    lab.spawn("w3", "w3", WORKER, &["serve"], &worker_env);
    let back = lab.wait_for("w3 back", Duration::from_secs(40), |l| has(&l.ids(), "w3"));
    eprintln!(
        "DISCOVERY static worker back {} ms after restart",
        back.as_millis()
    );

    // 7. discovery.mdns.enabled=false: no mDNS socket, never found.
    lab.spawn(
        "w2",
        "w2",
        WORKER,
        &["serve"],
        &[
            ("HG_WORKER__HEARTBEAT_INTERVAL", "1s"),
            ("HG_DISCOVERY__MDNS__ENABLED", "false"),
        ],
    );
    lab.wait_for("w2 to listen", Duration::from_secs(10), |l| {
        let o = run(l.command(
            "w2",
            "curl",
            &["-s", "--max-time", "1", "http://127.0.0.1:9090/health"],
            &[],
        ));
        String::from_utf8_lossy(&o.stdout).trim() == "OK"
    });
    std::thread::sleep(Duration::from_secs(2));
    assert!(!has(&lab.ids(), "w2"), "w2 has mDNS off and no coordinator");
    let o = run(lab.command("w2", "ss", &["-uan"], &[]));
    let sockets = String::from_utf8_lossy(&o.stdout);
    assert!(
        !sockets.contains(":5353"),
        "mDNS socket open with mDNS off:\n{sockets}"
    );

    // 8. A worker that cannot register itself (its configured coordinator
    // is wrong) is still found by the coordinator's mDNS browse.
    lab.stop("w2", false);
    let t = Instant::now();
    lab.spawn(
        "w2",
        "w2",
        WORKER,
        &["serve", "--coordinator", "10.213.0.250:9000"],
        &worker_env,
    );
    lab.wait_for("w2 found by mDNS", Duration::from_secs(10), |l| {
        l.workers()
            .unwrap_or_default()
            .iter()
            .any(|w| w.0 == "w2" && w.1 == "mdns" && w.2 == "10.213.0.3:50052")
    });
    eprintln!(
        "DISCOVERY latency by mDNS alone: worker start -> in the pool: {} ms",
        t.elapsed().as_millis()
    );
}
