//! A worker's network cut and restored, across network namespaces this
//! test creates:
//!
//! ```text
//!   br0 (bridge, own namespace) 10.215.0.0/24
//!    |- c   coordinator and hgbuild 10.215.0.1
//!    |- w1  worker                  10.215.0.2   <- link cut, then restored
//!    '- w2  worker                  10.215.0.3
//! ```
//!
//! The circuit of w1 opens after the threshold, compiles go to w2 or fall
//! back locally, the half-open probe after `open_timeout` closes it again
//! once w1 answers; `/metrics` and `/api/v1/workers` (the dashboard's data)
//! show each state. Every object is compared with a plain compile.
//!
//! Needs root, `ip`, `unshare`, `curl` and `cc`; skipped with a reason
//! otherwise, unless `HG_TEST_REQUIRE_ALL=1`.

mod support;

use std::time::{Duration, Instant};

use support::netns::{Lab, preconditions, run, sh, skip};

const COORD: &str = env!("CARGO_BIN_EXE_hg-coord");
const WORKER: &str = env!("CARGO_BIN_EXE_hg-worker");
const HGBUILD: &str = env!("CARGO_BIN_EXE_hgbuild");

fn lab() -> Lab {
    let mut lab = Lab::new("hgf", &["br0"]);
    for (h, ip) in [("c", "1"), ("w1", "2"), ("w2", "3")] {
        let cidr = format!("10.215.0.{ip}/24");
        lab.host(h, &[("br0", "eth0", &cidr)], None);
    }
    lab
}

fn http(lab: &Lab, path: &str) -> String {
    let url = format!("http://127.0.0.1:8080{path}");
    let o = run(lab.command("c", "curl", &["-s", "--max-time", "3", &url], &[]));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// w1's circuit gauge from `/metrics` (0 closed, 1 half-open, 2 open).
fn circuit_metric(lab: &Lab) -> Option<f64> {
    http(lab, "/metrics")
        .lines()
        .find(|l| l.starts_with("hybridgrid_circuit_state{") && l.contains("worker=\"w1\""))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// w1's circuit state as `/api/v1/workers` reports it.
fn circuit_api(lab: &Lab) -> String {
    let v: serde_json::Value =
        serde_json::from_str(&http(lab, "/api/v1/workers")).unwrap_or_default();
    v["workers"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|w| w["id"] == "w1")
        .and_then(|w| w["circuit_state"].as_str())
        .unwrap_or_default()
        .to_owned()
}

/// Builds `round`'s sources through hgbuild in namespace c and checks the
/// objects against plain compiles; returns hgbuild's stderr.
fn build_round(lab: &Lab, round: usize, files: usize) -> String {
    let dir = lab.path(&format!("r{round}"));
    std::fs::create_dir_all(&dir).expect("mkdir");
    let mut mk = String::from("all:");
    for i in 0..files {
        std::fs::write(
            dir.join(format!("f{i}.c")),
            format!("int f{round}_{i}(int x) {{ return x * {i} + {round}; }}\n"),
        )
        .expect("write source");
        mk.push_str(&format!(" f{i}.o"));
    }
    mk.push_str("\n%.o: %.c\n\t$(CC) -O2 -c $< -o $@\n");
    std::fs::write(dir.join("Makefile"), mk).expect("write Makefile");
    let sub = format!("r{round}");
    let o = run(lab.command(
        "c",
        "sh",
        &["-c", &format!("cd {sub} && exec {HGBUILD} -v make -j4")],
        &[
            ("HG_COORDINATOR", "127.0.0.1:9000"),
            ("HG_CACHE__ENABLED", "false"),
            ("HG_DISCOVERY__MDNS__ENABLED", "false"),
        ],
    ));
    let stderr = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(o.status.success(), "round {round} failed:\n{stderr}");
    for i in 0..files {
        let r = run(lab.command(
            "c",
            "sh",
            &[
                "-c",
                &format!("cd {sub} && cc -O2 -c f{i}.c -o ref.o && cmp f{i}.o ref.o"),
            ],
            &[],
        ));
        assert!(
            r.status.success(),
            "round {round}: f{i}.o differs from a plain compile: {}",
            String::from_utf8_lossy(&r.stdout)
        );
    }
    stderr
}

#[test]
fn a_cut_network_opens_the_circuit_and_a_restored_one_closes_it() {
    if let Err(reason) = preconditions() {
        skip("faults_netns", &reason);
        return;
    }
    let mut lab = lab();
    let coord_env = [
        ("HG_DISCOVERY__MDNS__ENABLED", "false"),
        ("HG_COORDINATOR__HEARTBEAT_TTL", "120s"),
        ("HG_RESILIENCE__CIRCUIT_BREAKER__REQUEST_THRESHOLD", "2"),
        (
            "HG_RESILIENCE__CIRCUIT_BREAKER__FAILURE_RATE_THRESHOLD",
            "0.5",
        ),
        ("HG_RESILIENCE__CIRCUIT_BREAKER__OPEN_TIMEOUT", "4s"),
        ("HG_LOG_LEVEL", "debug"),
    ];
    lab.spawn("coord", "c", COORD, &["serve"], &coord_env);
    let worker_env = [
        ("HG_DISCOVERY__MDNS__ENABLED", "false"),
        ("HG_WORKER__HEARTBEAT_INTERVAL", "1s"),
    ];
    for w in ["w1", "w2"] {
        lab.spawn(
            w,
            w,
            WORKER,
            &["serve", "--coordinator", "10.215.0.1:9000", "--id", w],
            &worker_env,
        );
    }
    lab.wait_for("both workers in the pool", Duration::from_secs(30), |l| {
        let ids = l.ids();
        ids.contains(&"w1".to_owned()) && ids.contains(&"w2".to_owned())
    });
    let before = build_round(&lab, 0, 8);
    assert!(before.contains("[remote w"), "{before}");
    assert_eq!(
        circuit_metric(&lab),
        Some(0.0),
        "{}",
        http(&lab, "/metrics")
    );

    // Cut w1 off: its end of the link goes down.
    let w1 = lab.ns("w1");
    sh(&["ip", "-n", &w1, "link", "set", "eth0", "down"]);
    let cut = Instant::now();
    let mut round = 1;
    while circuit_api(&lab) != "open" {
        assert!(
            cut.elapsed() < Duration::from_secs(150),
            "w1's circuit did not open; coordinator log:\n{}",
            lab.log("coord")
        );
        let err = build_round(&lab, round, 8);
        assert!(!err.contains("[remote w1]") || round == 1, "{err}");
        round += 1;
    }
    let opened_after = cut.elapsed();
    assert_eq!(circuit_metric(&lab), Some(2.0));
    assert!(lab.log("coord").contains("circuit opened"));
    // While it is open, builds succeed without w1.
    let during = build_round(&lab, round, 8);
    round += 1;
    assert!(!during.contains("[remote w1]"), "{during}");
    assert!(during.contains("[remote w2]"), "{during}");

    // Restore the link: after open_timeout a probe goes to w1 and closes
    // the circuit.
    sh(&["ip", "-n", &w1, "link", "set", "eth0", "up"]);
    let restored = Instant::now();
    let mut saw_w1 = false;
    while circuit_api(&lab) != "closed" || !saw_w1 {
        assert!(
            restored.elapsed() < Duration::from_secs(90),
            "w1's circuit did not close (state {}); coordinator log:\n{}",
            circuit_api(&lab),
            lab.log("coord")
        );
        let out = build_round(&lab, round, 8);
        saw_w1 |= out.contains("[remote w1]");
        round += 1;
        std::thread::sleep(Duration::from_millis(500));
    }
    let closed_after = restored.elapsed();
    assert_eq!(circuit_metric(&lab), Some(0.0));
    let log = lab.log("coord");
    for m in ["circuit opened", "circuit half-open", "circuit closed"] {
        assert!(log.contains(m), "no `{m}` in the coordinator log:\n{log}");
    }
    eprintln!(
        "circuit opened {opened_after:?} after the cut, closed {closed_after:?} after the restore, {round} rounds"
    );
}
