//! Tests of the whole configuration: defaults, the loader, validation.

use super::*;
use std::io::Write;
use std::time::Duration;

fn load_yaml(yaml: &str) -> Result<Config, ConfigError> {
    let mut f = tempfile::NamedTempFile::new().unwrap();
    f.write_all(yaml.as_bytes()).unwrap();
    ConfigLoader::new().no_search().file(f.path()).load()
}

#[test]
fn defaults_match_the_design() {
    let c = ConfigLoader::new().no_search().load().unwrap();
    assert_eq!(c.coordinator.grpc_port, 9000);
    assert_eq!(c.coordinator.http_port, 8080);
    assert_eq!(c.coordinator.heartbeat_ttl, Duration::from_secs(30));
    assert_eq!(c.coordinator.max_concurrent_tasks, 500);
    assert_eq!(c.worker.grpc_port, 50052);
    assert_eq!(c.worker.http_port, 9090);
    assert_eq!(c.worker.max_concurrent_tasks, 4);
    assert_eq!(c.worker.task_timeout, Duration::from_secs(300));
    assert_eq!(c.worker.docker.images["arm64"], "dockcross/linux-arm64");
    assert!(c.cache.enabled);
    assert_eq!(c.cache.max_size_gb, 10.0);
    assert!(c.discovery.mdns.enabled);
    assert_eq!(c.discovery.mdns.service_name, "_hybridgrid._tcp");
    assert_eq!(c.scheduler.algorithm, Algorithm::P2c);
    assert_eq!(c.resilience.circuit_breaker.request_threshold, 10);
    assert_eq!(c.resilience.circuit_breaker.failure_rate_threshold, 0.6);
    assert_eq!(
        c.resilience.circuit_breaker.open_timeout,
        Duration::from_secs(30)
    );
    assert_eq!(c.resilience.retry.max_retries, 3);
    assert_eq!(
        c.resilience.retry.initial_interval,
        Duration::from_millis(100)
    );
    assert!(c.resilience.fallback.enabled);
    assert!(!c.tls.enabled);
    assert!(!c.auth.enabled);
    assert_eq!(c.logging.level, "info");
    assert_eq!(c.logging.format, LogFormat::Console);
    assert_eq!(c.metrics.path, "/metrics");
}

#[test]
fn file_values_and_durations() {
    let c = load_yaml(
        "worker:\n  task_timeout: 10m\n  max_concurrent_tasks: 2\ncoordinator:\n  static_workers: [\"192.168.2.10:50052\", \"b:1\"]\nscheduler:\n  algorithm: least-loaded\n",
    )
    .unwrap();
    assert_eq!(c.worker.task_timeout, Duration::from_secs(600));
    assert_eq!(c.worker.max_concurrent_tasks, 2);
    assert_eq!(c.coordinator.static_workers.len(), 2);
    assert_eq!(c.scheduler.algorithm, Algorithm::LeastLoaded);
}

#[test]
fn isolation_mode() {
    assert_eq!(load_yaml("").unwrap().worker.isolation, IsolationMode::Auto);
    let c = load_yaml("worker:\n  isolation: off\n").unwrap();
    assert_eq!(c.worker.isolation, IsolationMode::Off);
    let c = load_yaml("worker:\n  isolation: bubblewrap\n").unwrap();
    assert_eq!(c.worker.isolation, IsolationMode::Bubblewrap);
    let e = load_yaml("worker:\n  isolation: jail\n")
        .unwrap_err()
        .to_string();
    assert!(e.contains("worker.isolation"), "{e}");
}

#[test]
fn unknown_key_is_named() {
    let e = load_yaml("worker:\n  max_task: 3\n")
        .unwrap_err()
        .to_string();
    assert!(e.contains("worker.max_task"), "{e}");
    assert!(e.contains("unknown field"), "{e}");
}

#[test]
fn unknown_section_is_named() {
    let e = load_yaml("wokrer:\n  grpc_port: 3\n")
        .unwrap_err()
        .to_string();
    assert!(e.contains("wokrer"), "{e}");
}

#[test]
fn bad_value_is_named() {
    let e = load_yaml("worker:\n  task_timeout: soon\n")
        .unwrap_err()
        .to_string();
    assert!(e.contains("worker.task_timeout"), "{e}");
    let e = load_yaml("coordinator:\n  grpc_port: 70000\n")
        .unwrap_err()
        .to_string();
    assert!(e.contains("coordinator.grpc_port"), "{e}");
    let e = load_yaml("resilience:\n  circuit_breaker:\n    failure_rate_threshold: 1.5\n")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("resilience.circuit_breaker.failure_rate_threshold"),
        "{e}"
    );
    let e = load_yaml("logging:\n  format: xml\n")
        .unwrap_err()
        .to_string();
    assert!(e.contains("logging.format"), "{e}");
    let e = load_yaml("coordinator:\n  static_workers: [\"nohostport\"]\n")
        .unwrap_err()
        .to_string();
    assert!(e.contains("coordinator.static_workers[0]"), "{e}");
}

#[test]
fn unknown_enum_values_list_the_allowed_ones() {
    let e = ConfigLoader::new()
        .no_search()
        .set("worker.isolation", "none")
        .load()
        .expect_err("none is not an isolation mode");
    let text = e.to_string();
    assert!(text.contains("`worker.isolation`"), "{text}");
    assert!(
        text.contains("`none` is not a valid value; use one of: auto, off, bubblewrap, unshare"),
        "{text}"
    );
    let e = ConfigLoader::new()
        .no_search()
        .set("scheduler.algorithm", "fastest")
        .load()
        .expect_err("no such algorithm");
    assert!(
        e.to_string().contains("p2c, least-loaded, cost-aware"),
        "{e}"
    );
}

#[test]
fn scheduler_weights_and_hedge_keys() {
    let c = load_yaml(
        "scheduler:\n  algorithm: cost-aware\n  weights: { load: 2.5, lan: 0 }\n  hedge: { enabled: false, p90_multiplier: 4, min_delay: 5s, min_samples: 3 }\n",
    )
    .unwrap();
    assert_eq!(c.scheduler.algorithm, Algorithm::CostAware);
    assert_eq!(c.scheduler.weights.load, 2.5);
    assert_eq!(c.scheduler.weights.lan, 0.0);
    assert_eq!(c.scheduler.weights.native_arch, 1.0);
    assert!(!c.scheduler.hedge.enabled);
    assert_eq!(c.scheduler.hedge.p90_multiplier, 4.0);
    assert_eq!(c.scheduler.hedge.min_delay, Duration::from_secs(5));
    assert_eq!(c.scheduler.hedge.min_samples, 3);
    let e = load_yaml("scheduler:\n  weights: { speed: 1 }\n")
        .unwrap_err()
        .to_string();
    assert!(e.contains("speed"), "{e}");
    let e = load_yaml("scheduler:\n  hedge: { min_delay: later }\n")
        .unwrap_err()
        .to_string();
    assert!(e.contains("scheduler.hedge.min_delay"), "{e}");
}

#[test]
fn unreadable_file_is_named() {
    let e = ConfigLoader::new()
        .file("/nonexistent/hg.yaml")
        .load()
        .unwrap_err()
        .to_string();
    assert!(e.contains("/nonexistent/hg.yaml"), "{e}");
}

#[test]
fn syntax_error_names_file() {
    let e = load_yaml("worker: [unclosed\n").unwrap_err().to_string();
    assert!(e.contains("invalid config file"), "{e}");
}

#[test]
fn precedence_defaults_file_env_flags() {
    let mut f = tempfile::NamedTempFile::new().unwrap();
    f.write_all(
        b"worker:\n  max_concurrent_tasks: 2\n  grpc_port: 1111\nlogging:\n  level: warn\n",
    )
    .unwrap();
    let base = ConfigLoader::new().no_search().file(f.path());
    let c = base.clone().load().unwrap();
    assert_eq!(c.worker.max_concurrent_tasks, 2);
    let c = base
        .clone()
        .env_vars([
            ("HG_WORKER__MAX_CONCURRENT_TASKS", "8"),
            ("HG_LOG_LEVEL", "debug"),
            ("HG_COORDINATOR", "coord:9000"),
            ("HG_TEST_REQUIRE_ALL", "1"),
            ("HG_CC", "gcc-12"),
        ])
        .load()
        .unwrap();
    assert_eq!(c.worker.max_concurrent_tasks, 8);
    assert_eq!(c.worker.grpc_port, 1111);
    assert_eq!(c.logging.level, "debug");
    assert_eq!(c.client.coordinator, "coord:9000");
    assert_eq!(c.worker.coordinator, "coord:9000");
    assert_eq!(c.client.cc, "gcc-12");
    let c = base
        .env_vars([("HG_WORKER__MAX_CONCURRENT_TASKS", "8")])
        .set("worker.max_concurrent_tasks", 16)
        .load()
        .unwrap();
    assert_eq!(c.worker.max_concurrent_tasks, 16);
}

#[test]
fn env_lists_and_durations() {
    let c = ConfigLoader::new()
        .no_search()
        .env_vars([
            ("HG_COORDINATOR__STATIC_WORKERS", "a:1, b:2"),
            ("HG_WORKER__TASK_TIMEOUT", "90s"),
            ("HG_DISCOVERY__MDNS__ENABLED", "false"),
        ])
        .load()
        .unwrap();
    assert_eq!(c.coordinator.static_workers, vec!["a:1", "b:2"]);
    assert_eq!(c.worker.task_timeout, Duration::from_secs(90));
    assert!(!c.discovery.mdns.enabled);
}

#[test]
fn bad_env_value_names_variable() {
    let e = ConfigLoader::new()
        .no_search()
        .env_vars([("HG_WORKER__MAX_CONCURRENT_TASKS", "lots")])
        .load()
        .unwrap_err()
        .to_string();
    assert!(e.contains("worker.max_concurrent_tasks"), "{e}");
    assert!(e.contains("HG_WORKER__MAX_CONCURRENT_TASKS"), "{e}");
    let e = ConfigLoader::new()
        .no_search()
        .env_vars([("HG_WROKER__GRPC_PORT", "1")])
        .load()
        .unwrap_err()
        .to_string();
    assert!(e.contains("HG_WROKER__GRPC_PORT"), "{e}");
}

#[test]
fn token_is_not_in_debug_output() {
    let mut c = Config::default();
    c.auth.token = "s3cret-token".into();
    assert!(!format!("{c:?}").contains("s3cret-token"));
}

#[test]
fn config_file_from_the_environment_beats_the_search_but_not_the_flag() {
    let dir = tempfile::tempdir().unwrap();
    let searched = dir.path().join("searched.yaml");
    let from_env = dir.path().join("env.yaml");
    let flag = dir.path().join("flag.yaml");
    std::fs::write(&searched, "worker:\n  grpc_port: 1111\n").unwrap();
    std::fs::write(&from_env, "worker:\n  grpc_port: 2222\n").unwrap();
    std::fs::write(&flag, "worker:\n  grpc_port: 3333\n").unwrap();
    let env = [(ENV_CONFIG_FILE, from_env.to_str().unwrap())];
    let base = ConfigLoader::new().search_paths(vec![searched.clone()]);
    assert_eq!(base.clone().load().unwrap().worker.grpc_port, 1111);
    let c = base.clone().env_vars(env).load().unwrap();
    assert_eq!(c.worker.grpc_port, 2222);
    let c = base.clone().env_vars(env).file(&flag).load().unwrap();
    assert_eq!(c.worker.grpc_port, 3333);
    // A file named there that cannot be read is an error, not a search.
    let e = base
        .env_vars([(ENV_CONFIG_FILE, "/nonexistent/hg.yaml")])
        .load()
        .unwrap_err()
        .to_string();
    assert!(e.contains("/nonexistent/hg.yaml"), "{e}");
}

#[test]
fn search_takes_first_existing_file() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a.yaml");
    let b = dir.path().join("b.yaml");
    std::fs::write(&b, "worker:\n  grpc_port: 2222\n").unwrap();
    let c = ConfigLoader::new()
        .search_paths(vec![a.clone(), b.clone()])
        .load()
        .unwrap();
    assert_eq!(c.worker.grpc_port, 2222);
    std::fs::write(&a, "worker:\n  grpc_port: 1111\n").unwrap();
    let c = ConfigLoader::new().search_paths(vec![a, b]).load().unwrap();
    assert_eq!(c.worker.grpc_port, 1111);
}

#[test]
fn remote_cache_keys_parse_and_validate() {
    let c = load_yaml(
        "cache:\n  remote:\n    backend: redis\n    url: redis://127.0.0.1:6379/0\n    read_only: true\n    timeout: 500ms\n",
    )
    .unwrap();
    let r = &c.cache.remote;
    assert!(r.is_configured() && r.read_only);
    assert_eq!(r.timeout, Duration::from_millis(500));
    assert_eq!(r.layout, "subdirs");
    assert!(!Config::default().cache.remote.is_configured());

    let err = |yaml: &str| load_yaml(yaml).unwrap_err().to_string();
    let e = err("cache:\n  remote:\n    backend: memcached\n    url: x\n");
    assert!(
        e.contains("cache.remote.backend") && e.contains("memcached"),
        "{e}"
    );
    let e = err("cache:\n  remote:\n    backend: redis\n");
    assert!(e.contains("cache.remote.url"), "{e}");
    let e = err("cache:\n  remote:\n    backend: webdav\n    url: redis://h:1\n");
    assert!(
        e.contains("cache.remote.url") && e.contains("http://"),
        "{e}"
    );
    let e = err("cache:\n  remote:\n    backend: s3\n");
    assert!(e.contains("cache.remote.bucket"), "{e}");
    let e = err("cache:\n  remote:\n    backend: http\n    url: http://h/\n    layout: deep\n");
    assert!(e.contains("cache.remote.layout"), "{e}");
    let e = err(
        "cache:\n  remote:\n    backend: http\n    url: http://h/\n    max_pending_writes: 0\n",
    );
    assert!(e.contains("cache.remote.max_pending_writes"), "{e}");
    let e = err("cache:\n  remote:\n    backend: http\n    url: http://h/\n    passwd: x\n");
    assert!(e.contains("passwd"), "{e}");
    let e = err(
        "cache:\n  remote:\n    backend: redis\n    url: redis://h:1\n    password_file: a\n    password_env: B\n",
    );
    assert!(e.contains("cache.remote.password_env"), "{e}");
}

#[test]
fn remote_cache_secrets_come_from_files_and_are_never_shown() {
    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("pw");
    std::fs::write(&pw, "s3cret\n").unwrap();
    let mut r = RemoteCacheConfig {
        backend: "redis".into(),
        url: "redis://user:hunter2@127.0.0.1:6379/0".into(),
        password_file: pw.display().to_string(),
        ..RemoteCacheConfig::default()
    };
    assert_eq!(r.password().unwrap().as_deref(), Some("s3cret"));
    let shown = format!("{r:?}");
    assert!(
        !shown.contains("hunter2") && !shown.contains("s3cret"),
        "{shown}"
    );
    assert!(
        shown.contains("redis://user:<redacted>@127.0.0.1:6379/0"),
        "{shown}"
    );
    r.password_file = dir.path().join("missing").display().to_string();
    let e = r.password().unwrap_err().to_string();
    assert!(e.contains("cache.remote.password_file"), "{e}");
    r.password_file.clear();
    r.password_env = "HG_TEST_SURELY_UNSET_VARIABLE".into();
    let e = r.password().unwrap_err().to_string();
    assert!(e.contains("cache.remote.password_env"), "{e}");
    assert_eq!(redact_url("http://h:80/x"), "http://h:80/x");
    assert_eq!(redact_url("http://u@h/x@y"), "http://u@h/x@y");
    assert_eq!(redact_url("https://u:p@h/x"), "https://u:<redacted>@h/x");
}

#[test]
fn reapi_settings_load_and_instance_names_are_checked() {
    let c = load_yaml("coordinator:\n  reapi:\n    enabled: true\n    instance_name: team/main\n")
        .unwrap();
    assert!(c.coordinator.reapi.enabled);
    assert_eq!(c.coordinator.reapi.instance_name, "team/main");
    assert!(
        !Config::default().coordinator.reapi.enabled,
        "off by default"
    );
    let c = ConfigLoader::new()
        .no_search()
        .env_vars([("HG_COORDINATOR__REAPI__ENABLED", "true")])
        .load()
        .unwrap();
    assert!(c.coordinator.reapi.enabled);
    for bad in ["/main", "a//b", "team/blobs", "x y", "../up"] {
        let e = load_yaml(&format!(
            "coordinator:\n  reapi:\n    instance_name: \"{bad}\"\n"
        ))
        .unwrap_err()
        .to_string();
        assert!(e.contains("coordinator.reapi.instance_name"), "{bad}: {e}");
    }
}
