//! Observability of the real binaries: the shapes of the HTTP APIs, the
//! metrics after real work, the event stream, the log level at runtime,
//! heap profiles, the standard gRPC health probe, and hgbuild's traces.

mod support;

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::*;

const SRC: &str = "int twice(int x) { return 2 * x; }\n";

/// One HTTP/1.1 request on loopback; returns (status, headers, raw body).
fn http(addr: &str, method: &str, path: &str, body: &str) -> (u16, String, Vec<u8>) {
    let mut s = std::net::TcpStream::connect(addr).expect("connect http");
    s.set_read_timeout(Some(Duration::from_secs(30))).ok();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .expect("send");
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).expect("read http");
    let split = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("http header end");
    let head = String::from_utf8_lossy(&buf[..split]).into_owned();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, head, buf[split + 4..].to_vec())
}

fn get_json(addr: &str, path: &str) -> Value {
    let (code, _, body) = http(addr, "GET", path, "");
    assert_eq!(code, 200, "GET {path}: {}", String::from_utf8_lossy(&body));
    serde_json::from_slice(&body).unwrap_or_else(|e| panic!("GET {path}: {e}"))
}

fn keys(v: &Value) -> Vec<String> {
    let mut k: Vec<String> = v
        .as_object()
        .map(|o| o.keys().cloned().collect())
        .unwrap_or_default();
    k.sort();
    k
}

/// The value of the first sample line of `metric` (name plus labels as
/// written, e.g. `hybridgrid_tasks_total{outcome="success"}`).
fn sample(text: &str, metric: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| l.strip_prefix(metric).and_then(|r| r.strip_prefix(' ')))
        .and_then(|v| v.trim().parse().ok())
}

fn compile_one(coord: &Coord) -> tempfile::TempDir {
    let dir = tempdir();
    write(dir.path(), "twice.c", SRC);
    let out = hgbuild(
        dir.path(),
        &coord.grpc,
        &["-v", "cc", "-c", "twice.c", "-o", "twice.o", "-O2"],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stderr.contains("[remote w"), "{}", out.stderr);
    dir
}

#[test]
fn api_shapes_metrics_and_recent_tasks_after_a_real_compile() {
    let (coord, workers) = grid(1);

    // Before any task every custom metric is already there.
    let (code, head, body) = http(&coord.http, "GET", "/metrics", "");
    assert_eq!(code, 200);
    assert!(head.to_ascii_lowercase().contains("text/plain"), "{head}");
    let text = String::from_utf8_lossy(&body).into_owned();
    for name in [
        "hybridgrid_tasks_total{outcome=\"success\"}",
        "hybridgrid_tasks_active",
        "hybridgrid_tasks_queued",
        "hybridgrid_workers{state=\"healthy\"}",
        "hybridgrid_circuit_state{worker=\"w1\"}",
        "hybridgrid_retries_total",
        "hybridgrid_fallbacks_total{reason=\"no_worker\"}",
        "hybridgrid_cache_hits_total",
        "hybridgrid_cache_misses_total",
        "hybridgrid_cache_evictions_total",
        "hybridgrid_bytes_received_total",
        "hybridgrid_bytes_sent_total",
    ] {
        assert!(sample(&text, name).is_some(), "{name} missing:\n{text}");
    }
    assert_eq!(
        sample(&text, "hybridgrid_circuit_state{worker=\"w1\"}"),
        Some(0.0)
    );
    assert_eq!(
        sample(&text, "hybridgrid_workers{state=\"healthy\"}"),
        Some(1.0)
    );

    let _dir = compile_one(&coord);

    let (_, _, body) = http(&coord.http, "GET", "/metrics", "");
    let text = String::from_utf8_lossy(&body).into_owned();
    assert_eq!(
        sample(&text, "hybridgrid_tasks_total{outcome=\"success\"}"),
        Some(1.0),
        "{text}"
    );
    for name in [
        "hybridgrid_task_duration_seconds_count",
        "hybridgrid_task_queue_seconds_count",
        "hybridgrid_worker_latency_seconds_count{worker=\"w1\"}",
        "hybridgrid_cache_misses_total",
    ] {
        assert_eq!(sample(&text, name), Some(1.0), "{name}:\n{text}");
    }
    assert!(
        text.contains("hybridgrid_task_duration_seconds_bucket{le=\"0.005\"}"),
        "histogram buckets expected, not a summary:\n{text}"
    );
    for name in [
        "hybridgrid_bytes_received_total",
        "hybridgrid_bytes_sent_total",
    ] {
        assert!(
            sample(&text, name).unwrap_or(0.0) > 100.0,
            "{name}:\n{text}"
        );
    }
    // The coordinator's tier stores the result from a background writer
    // (write-behind): its size shows once that write is done.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let mut size = sample(&text, "hybridgrid_cache_size_bytes").unwrap_or(0.0);
    while size <= 0.0 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(50));
        let (_, _, body) = http(&coord.http, "GET", "/metrics", "");
        size = sample(
            &String::from_utf8_lossy(&body),
            "hybridgrid_cache_size_bytes",
        )
        .unwrap_or(0.0);
    }
    assert!(
        size > 0.0,
        "the coordinator's cache tier holds nothing:\n{text}"
    );
    let custom: Vec<&str> = text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter(|l| !l.starts_with("hybridgrid_"))
        .collect();
    assert!(
        custom.is_empty(),
        "metrics outside hybridgrid_*: {custom:?}"
    );

    // The worker's own metrics.
    let (_, _, body) = http(&workers[0].http, "GET", "/metrics", "");
    let wtext = String::from_utf8_lossy(&body).into_owned();
    assert_eq!(
        sample(&wtext, "hybridgrid_worker_tasks_total{result=\"success\"}"),
        Some(1.0),
        "{wtext}"
    );
    assert_eq!(
        sample(&wtext, "hybridgrid_worker_compile_duration_seconds_count"),
        Some(1.0)
    );
    assert!(sample(&wtext, "hybridgrid_worker_slots").unwrap_or(0.0) >= 1.0);
    assert!(sample(&wtext, "hybridgrid_bytes_received_total").unwrap_or(0.0) > 100.0);

    // /api/stats: exactly the contract's fields.
    let stats = get_json(&coord.http, "/api/stats");
    assert_eq!(
        keys(&stats),
        ["cache", "tasks", "uptime_seconds", "workers"]
    );
    assert_eq!(keys(&stats["workers"]), ["healthy", "total", "unhealthy"]);
    assert_eq!(
        keys(&stats["tasks"]),
        ["active", "failed", "queued", "successful", "total"]
    );
    assert_eq!(keys(&stats["cache"]), ["hit_rate", "hits", "misses"]);
    assert_eq!(stats["tasks"]["total"], 1);
    assert_eq!(stats["tasks"]["successful"], 1);
    assert_eq!(stats["workers"]["total"], 1);
    assert_eq!(stats["cache"]["misses"], 1);
    assert!(stats["uptime_seconds"].is_u64());

    // /api/v1/workers: every field of the contract.
    let ws = get_json(&coord.http, "/api/v1/workers");
    let w = &ws["workers"][0];
    for f in [
        "id",
        "address",
        "arch",
        "os",
        "cores",
        "memory",
        "compilers",
        "docker_images",
        "source",
        "circuit_state",
        "active_tasks",
        "completed",
        "average_latency_ms",
    ] {
        assert!(w.get(f).is_some(), "worker field {f} missing: {w}");
    }
    assert_eq!(w["id"], "w1");
    assert_eq!(w["circuit_state"], "closed");
    assert_eq!(w["completed"], 1);
    assert_eq!(w["source"], "handshake");

    // /api/v1/tasks: the compile, with its timings.
    let tasks = get_json(&coord.http, "/api/v1/tasks");
    assert_eq!(tasks["capacity"], 200);
    let t = &tasks["tasks"][0];
    assert!(
        t["task_id"].as_str().unwrap_or("").starts_with("task-"),
        "{t}"
    );
    assert_eq!(t["source"], "twice.c");
    assert_eq!(t["worker"], "w1");
    assert_eq!(t["result"], "success");
    assert_eq!(t["from_cache"], false);
    assert!(t["duration_ms"].as_f64().unwrap_or(0.0) > 0.0, "{t}");
    assert!(t["queue_ms"].is_number() && t["compile_ms"].as_f64().unwrap_or(0.0) > 0.0);
    assert!(t["timestamp"].as_str().unwrap_or("").ends_with('Z'), "{t}");
    let limited = get_json(&coord.http, "/api/v1/tasks?limit=0");
    assert_eq!(limited["tasks"].as_array().map(Vec::len), Some(0));

    // The event stream starts with a snapshot at once.
    let mut s = std::net::TcpStream::connect(&coord.http).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).ok();
    write!(
        s,
        "GET /api/v1/events HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n"
    )
    .expect("send");
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut buf = [0u8; 8192];
    while Instant::now() < deadline {
        let n = s.read(&mut buf).unwrap_or(0);
        if n == 0 {
            break;
        }
        got.extend_from_slice(&buf[..n]);
        if String::from_utf8_lossy(&got).contains("\n\n") && got.windows(6).any(|w| w == b"data: ")
        {
            break;
        }
    }
    let text = String::from_utf8_lossy(&got).into_owned();
    assert!(text.contains("text/event-stream"), "{text}");
    assert!(text.contains("event: snapshot"), "{text}");
    let data = text
        .lines()
        .find_map(|l| l.strip_prefix("data: "))
        .expect("data line");
    let snap: Value = serde_json::from_str(data).expect("snapshot json");
    assert_eq!(snap["workers"][0]["id"], "w1");
    assert_eq!(snap["stats"]["tasks"]["total"], 1);
    assert_eq!(snap["tasks"][0]["source"], "twice.c");

    // The dashboard and its assets are served from the binary.
    let (code, _, body) = http(&coord.http, "GET", "/", "");
    assert_eq!(code, 200);
    let html = String::from_utf8_lossy(&body);
    assert!(
        html.contains("<title>hybridgrid dashboard</title>"),
        "{html}"
    );
    assert!(
        !html.contains("http://") && !html.contains("https://"),
        "external resources in the page"
    );
    for p in ["/assets/dashboard.js", "/assets/dashboard.css"] {
        let (code, _, body) = http(&coord.http, "GET", p, "");
        assert_eq!(code, 200, "{p}");
        assert!(body.len() > 500, "{p}");
    }
}

#[test]
fn log_level_changes_at_runtime() {
    let (coord, workers) = grid(1);
    for (who, addr, proc_) in [
        ("coordinator", &coord.http, &coord.proc),
        ("worker", &workers[0].http, &workers[0].proc),
    ] {
        let (code, _, body) = http(addr, "GET", "/api/v1/log-level", "");
        assert_eq!(code, 200, "{who}");
        assert_eq!(String::from_utf8_lossy(&body).trim(), "info", "{who}");
        assert!(!proc_.log_text().contains("level=debug"), "{who}");

        let (code, _, body) = http(addr, "PUT", "/api/v1/log-level", "info,x=bogus");
        assert_eq!(code, 400, "{who}: {}", String::from_utf8_lossy(&body));

        let (code, _, _) = http(addr, "PUT", "/api/v1/log-level", "debug");
        assert_eq!(code, 200, "{who}");
        assert!(
            proc_.wait_log("msg=\"log level changed\"", Duration::from_secs(5)),
            "{who}"
        );
        // Any traffic now logs at debug level (hyper, h2, tonic...).
        let _ = http(addr, "GET", "/health", "");
        let _ = hgbuild(std::path::Path::new("/tmp"), &coord.grpc, &["status"]);
        assert!(
            proc_.wait_log("level=debug", Duration::from_secs(10)),
            "{who} logs no debug lines after the change:\n{}",
            proc_.log_text()
        );
        let (code, _, body) = http(addr, "GET", "/api/v1/log-level", "");
        assert_eq!(code, 200);
        assert_eq!(String::from_utf8_lossy(&body).trim(), "debug");
        let (code, _, _) = http(addr, "PUT", "/api/v1/log-level", "info");
        assert_eq!(code, 200);
    }
}

#[test]
fn heap_profile_is_gzipped_pprof() {
    let (coord, workers) = grid(1);
    let _dir = compile_one(&coord);
    for addr in [&coord.http, &workers[0].http] {
        let (code, head, body) = http(addr, "GET", "/debug/pprof/heap", "");
        if hybridgrid::heap::ENABLED {
            assert_eq!(code, 200, "{head}\n{}", String::from_utf8_lossy(&body));
            assert!(body.len() > 100, "profile of {} bytes", body.len());
            assert_eq!(&body[..2], &[0x1f, 0x8b], "not gzip");
        } else {
            assert_eq!(code, 501);
            assert!(String::from_utf8_lossy(&body).contains("heap-profile"));
        }
    }
}

#[test]
fn standard_grpc_health_probe_and_health_check() {
    use hybridgrid_net::proto::HealthCheckRequest;
    use hybridgrid_net::proto::build_service_client::BuildServiceClient;
    use tonic_health::pb::HealthCheckRequest as ProbeRequest;
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;

    let (coord, workers) = grid(1);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let probes = [
            (coord.grpc.clone(), "hybridgrid.v1.BuildService"),
            (workers[0].grpc.clone(), "hybridgrid.v1.WorkerService"),
        ];
        for (addr, service) in probes {
            let ch = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
                .expect("endpoint")
                .connect_timeout(Duration::from_secs(5))
                .timeout(Duration::from_secs(10))
                .connect()
                .await
                .expect("connect");
            let mut h = HealthClient::new(ch.clone());
            for name in ["", service] {
                let r = h
                    .check(ProbeRequest {
                        service: name.into(),
                    })
                    .await
                    .unwrap_or_else(|e| panic!("{addr} {name:?}: {e}"))
                    .into_inner();
                assert_eq!(r.status(), ServingStatus::Serving, "{addr} {name:?}");
            }
            let unknown = h
                .check(ProbeRequest {
                    service: "no.such.Service".into(),
                })
                .await;
            assert_eq!(
                unknown.expect_err("unknown service").code(),
                tonic::Code::NotFound
            );
            if service == "hybridgrid.v1.BuildService" {
                let r = BuildServiceClient::new(ch)
                    .health_check(HealthCheckRequest {})
                    .await
                    .expect("HealthCheck")
                    .into_inner();
                assert!(r.healthy);
                assert!(!r.version.is_empty());
            }
        }
    });
}

#[test]
fn trace_of_a_wrapped_make_build() {
    let (coord, _workers) = grid(1);
    let dir = tempdir();
    write(dir.path(), "a.c", "int a(void) { return 1; }\n");
    write(dir.path(), "b.c", "int b(void) { return 2; }\n");
    write(
        dir.path(),
        "c.c",
        "#include <stdio.h>\nint c(void) { return 3; }\n",
    );
    write(
        dir.path(),
        "Makefile",
        "all: a.o b.o c.o\n%.o: %.c\n\t$(CC) -O2 -c $< -o $@\n",
    );
    let out = hgbuild(
        dir.path(),
        &coord.grpc,
        &["--trace", "trace.json", "make", "-j2"],
    );
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert!(
        out.stderr.contains("trace of 3 compiler runs written"),
        "{}",
        out.stderr
    );
    let trace: Value =
        serde_json::from_slice(&read(dir.path(), "trace.json")).expect("trace is JSON");
    let slices: Vec<&Value> = trace["traceEvents"]
        .as_array()
        .expect("traceEvents")
        .iter()
        .filter(|e| e["ph"] == "X")
        .collect();
    let build = slices
        .iter()
        .find(|e| e["cat"] == "build")
        .expect("build slice");
    assert!(
        build["name"].as_str().unwrap_or("").starts_with("make"),
        "{build}"
    );
    for src in ["a.c", "b.c", "c.c"] {
        let s = slices
            .iter()
            .find(|e| e["name"] == src)
            .unwrap_or_else(|| panic!("no slice for {src}: {trace}"));
        assert_eq!(s["cat"], "remote", "{s}");
        assert_eq!(s["args"]["where"], "remote w1", "{s}");
        assert!(s["args"]["compile_ms"].as_f64().unwrap_or(0.0) > 0.0, "{s}");
        assert!(s["dur"].as_u64().unwrap_or(0) > 0, "{s}");
        assert!(s["tid"].as_u64().unwrap_or(0) >= 1);
    }

    // A single compile with HG_TRACE writes a trace of its own; a local
    // compile says why it ran locally.
    let out = run_in(
        dir.path(),
        HGBUILD,
        &["cc", "-g", "-c", "a.c", "-o", "a2.o"],
        &[
            ("HG_COORDINATOR", &coord.grpc),
            ("HG_TRACE", "one.json"),
            ("HG_CLIENT__REMOTE_DEBUG_INFO", "false"),
        ],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    let one: Value = serde_json::from_slice(&read(dir.path(), "one.json")).expect("json");
    let s = one["traceEvents"]
        .as_array()
        .expect("events")
        .iter()
        .find(|e| e["ph"] == "X")
        .expect("slice")
        .clone();
    assert_eq!(s["name"], "a.c");
    assert_eq!(s["cat"], "local");
    assert!(
        s["args"]["where"]
            .as_str()
            .unwrap_or("")
            .contains("debug info"),
        "{s}"
    );
}
