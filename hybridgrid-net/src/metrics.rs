//! The catalogue of `hybridgrid_*` metrics: names, help texts, the
//! process's Prometheus recorder, and the counters recorded where the work
//! happens (the coordinator's and the worker's compile paths, the cache
//! layer, the dispatcher). Every metric is registered at start with a zero
//! value, so a dashboard or alert sees it before the first task. The gauges
//! that mirror live state are set by [`crate::obs`] just before `/metrics`
//! renders.
//!
//! It sits below the servers and the HTTP endpoints and knows neither.

use std::sync::OnceLock;

use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Duration buckets (seconds) for task histograms: 1 ms to 10 min.
pub const DURATION_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    120.0, 300.0, 600.0,
];

/// The process's Prometheus recorder, installed on first use.
pub fn metrics_handle() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), DURATION_BUCKETS)
                .unwrap_or_else(|_| PrometheusBuilder::new());
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            // Another recorder may be installed already (an embedding
            // program's); then this handle renders only what it records.
            let _ = metrics::set_global_recorder(recorder);
            let upkeep = handle.clone();
            std::thread::Builder::new()
                .name("metrics-upkeep".into())
                .spawn(move || {
                    loop {
                        std::thread::sleep(std::time::Duration::from_secs(5));
                        upkeep.run_upkeep();
                    }
                })
                .ok();
            handle
        })
        .clone()
}

/// Counter: tasks the coordinator answered, by `outcome`
/// (`success`, `compile_error`, `error`).
pub const M_TASKS: &str = "hybridgrid_tasks_total";
/// Histogram: seconds from receipt to answer of a task on the coordinator.
pub const M_TASK_DURATION: &str = "hybridgrid_task_duration_seconds";
/// Histogram: seconds a task waited for a compile slot on its worker.
pub const M_TASK_QUEUE: &str = "hybridgrid_task_queue_seconds";
/// Gauge: tasks being compiled now (coordinator).
pub const M_TASKS_ACTIVE: &str = "hybridgrid_tasks_active";
/// Gauge: tasks waiting for admission (coordinator).
pub const M_TASKS_QUEUED: &str = "hybridgrid_tasks_queued";
/// Gauge: registered workers by `state` (`healthy`, `unhealthy`).
pub const M_WORKERS: &str = "hybridgrid_workers";
/// Gauge: circuit breaker state per `worker`: 0 closed, 1 half-open, 2 open.
pub const M_CIRCUIT: &str = "hybridgrid_circuit_state";
/// Gauge: tasks running on each `worker`, as the coordinator sees them.
pub const M_WORKER_ACTIVE: &str = "hybridgrid_worker_active_tasks";
/// Histogram: seconds per remote task, by `worker` (coordinator view).
pub const M_WORKER_LATENCY: &str = "hybridgrid_worker_latency_seconds";
/// Counter: tasks the grid could not compile, by `reason`; the client
/// compiles them locally unless run with `--no-fallback`.
pub const M_FALLBACKS: &str = "hybridgrid_fallbacks_total";
/// Counter: attempts of a task on another worker after a retryable failure.
pub const M_RETRIES: &str = "hybridgrid_retries_total";
/// Counter: protobuf bytes of compile requests received (before gRPC
/// compression is undone they were smaller on the wire).
pub const M_BYTES_RECEIVED: &str = "hybridgrid_bytes_received_total";
/// Counter: protobuf bytes of compile responses sent.
pub const M_BYTES_SENT: &str = "hybridgrid_bytes_sent_total";
/// Gauge: seconds since the process started.
pub const M_UPTIME: &str = "hybridgrid_uptime_seconds";
/// Gauge: 1, labelled with `version` and `role` (`coordinator`, `worker`).
pub const M_BUILD_INFO: &str = "hybridgrid_build_info";
/// Counter: compiles a worker finished, by `result`.
pub const M_WORKER_TASKS: &str = "hybridgrid_worker_tasks_total";
/// Histogram: seconds the compiler ran on a worker.
pub const M_WORKER_COMPILE: &str = "hybridgrid_worker_compile_duration_seconds";
/// Gauge: compiles running on this worker.
pub const M_WORKER_RUNNING: &str = "hybridgrid_worker_tasks_running";
/// Gauge: compiles waiting for a slot on this worker.
pub const M_WORKER_WAITING: &str = "hybridgrid_worker_tasks_waiting";
/// Gauge: compile slots of this worker (`max_concurrent_tasks`).
pub const M_WORKER_SLOTS: &str = "hybridgrid_worker_slots";
/// Counter: cache hits (the coordinator's shared tier).
pub const M_CACHE_HITS: &str = "hybridgrid_cache_hits_total";
/// Counter: cache misses.
pub const M_CACHE_MISSES: &str = "hybridgrid_cache_misses_total";
/// Counter: cache entries evicted to stay under the size limit.
pub const M_CACHE_EVICTIONS: &str = "hybridgrid_cache_evictions_total";
/// Counter: cache reads or writes that failed (treated as misses).
pub const M_CACHE_ERRORS: &str = "hybridgrid_cache_errors_total";
/// Gauge: bytes the cache holds.
pub const M_CACHE_SIZE: &str = "hybridgrid_cache_size_bytes";
/// Counter: entries of a cache tier that failed verification (`tier`).
pub const M_CACHE_CORRUPT: &str = "hybridgrid_cache_corrupt_total";
/// Counter: background writes of a cache tier (`tier`, `result`).
pub const M_CACHE_WRITES: &str = "hybridgrid_cache_writes_total";
/// Gauge: 1 while a cache tier is used, 0 while skipped after a failure
/// (`tier`).
pub const M_CACHE_AVAILABLE: &str = "hybridgrid_cache_available";

/// The `reason` label values of [`M_FALLBACKS`].
pub const FALLBACK_REASONS: &[&str] = &[
    "no_worker",
    "circuit_open",
    "worker_unavailable",
    "timeout",
    "overloaded",
    "other",
];

/// Which process registers its metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// hg-coord.
    Coordinator,
    /// hg-worker.
    Worker,
}

impl Role {
    fn as_str(self) -> &'static str {
        match self {
            Role::Coordinator => "coordinator",
            Role::Worker => "worker",
        }
    }
}

/// Installs the recorder if needed ([`metrics_handle`]), then
/// describes the role's metrics and registers them with zero values.
pub fn register(role: Role) {
    let _ = metrics_handle();
    describe_gauge!(
        M_UPTIME,
        Unit::Seconds,
        "Seconds since the process started."
    );
    describe_gauge!(M_BUILD_INFO, "Always 1; labels carry the version and role.");
    metrics::gauge!(M_BUILD_INFO, "version" => crate::VERSION, "role" => role.as_str()).set(1.0);
    describe_counter!(
        M_BYTES_RECEIVED,
        Unit::Bytes,
        "Protobuf bytes of compile requests received."
    );
    describe_counter!(
        M_BYTES_SENT,
        Unit::Bytes,
        "Protobuf bytes of compile responses sent."
    );
    metrics::counter!(M_BYTES_RECEIVED).increment(0);
    metrics::counter!(M_BYTES_SENT).increment(0);
    match role {
        Role::Coordinator => {
            describe_counter!(
                M_TASKS,
                "Tasks answered, by outcome (success, compile_error, error, missing_inputs)."
            );
            describe_histogram!(
                M_TASK_DURATION,
                Unit::Seconds,
                "Seconds from receipt to answer of a task."
            );
            describe_histogram!(
                M_TASK_QUEUE,
                Unit::Seconds,
                "Seconds a task waited for a compile slot on its worker."
            );
            describe_gauge!(M_TASKS_ACTIVE, "Tasks being compiled now.");
            describe_gauge!(M_TASKS_QUEUED, "Tasks waiting for admission.");
            describe_gauge!(
                M_WORKERS,
                "Registered workers by state (healthy, unhealthy)."
            );
            describe_gauge!(
                M_CIRCUIT,
                "Circuit breaker state per worker: 0 closed, 1 half-open, 2 open."
            );
            describe_gauge!(
                M_WORKER_ACTIVE,
                "Tasks running on each worker, as the coordinator sees them."
            );
            describe_histogram!(
                M_WORKER_LATENCY,
                Unit::Seconds,
                "Seconds per remote task, by worker."
            );
            describe_counter!(
                M_FALLBACKS,
                "Tasks the grid could not compile, by reason; clients compile them locally unless --no-fallback."
            );
            describe_counter!(
                M_RETRIES,
                "Attempts of a task on another worker after a retryable failure."
            );
            describe_counter!(
                M_CACHE_HITS,
                "Shared cache hits; tier=\"remote\": of the cache.remote tier alone."
            );
            describe_counter!(
                M_CACHE_MISSES,
                "Shared cache misses; tier=\"remote\": of the cache.remote tier alone."
            );
            describe_counter!(
                M_CACHE_EVICTIONS,
                "Shared cache entries evicted to stay under the size limit."
            );
            describe_counter!(M_CACHE_ERRORS, "Shared cache reads or writes that failed.");
            describe_gauge!(M_CACHE_SIZE, Unit::Bytes, "Bytes the shared cache holds.");
            describe_counter!(
                M_CACHE_CORRUPT,
                "Cache entries that failed verification (tier=\"remote\": cache.remote)."
            );
            describe_counter!(
                M_CACHE_WRITES,
                "Background writes to a cache tier, by result (stored, failed, dropped)."
            );
            describe_gauge!(
                M_CACHE_AVAILABLE,
                "1 while a cache tier is used, 0 while it is skipped after a failure."
            );
            for outcome in ["success", "compile_error", "error", "missing_inputs"] {
                metrics::counter!(M_TASKS, "outcome" => outcome).increment(0);
            }
            for reason in FALLBACK_REASONS {
                metrics::counter!(M_FALLBACKS, "reason" => *reason).increment(0);
            }
            for c in [
                M_RETRIES,
                M_CACHE_HITS,
                M_CACHE_MISSES,
                M_CACHE_EVICTIONS,
                M_CACHE_ERRORS,
            ] {
                metrics::counter!(c).increment(0);
            }
            for g in [M_TASKS_ACTIVE, M_TASKS_QUEUED] {
                metrics::gauge!(g).set(0.0);
            }
        }
        Role::Worker => {
            describe_counter!(
                M_WORKER_TASKS,
                "Compiles this worker finished, by result (success, compile_error, error, missing_inputs)."
            );
            describe_histogram!(M_WORKER_COMPILE, Unit::Seconds, "Seconds the compiler ran.");
            describe_gauge!(M_WORKER_RUNNING, "Compiles running on this worker.");
            describe_gauge!(
                M_WORKER_WAITING,
                "Compiles waiting for a slot on this worker."
            );
            describe_gauge!(M_WORKER_SLOTS, "Compile slots of this worker.");
            for result in ["success", "compile_error", "error", "missing_inputs"] {
                metrics::counter!(M_WORKER_TASKS, "result" => result).increment(0);
            }
        }
    }
}

/// The numeric value of a circuit state name (0 closed, 1 half-open,
/// 2 open; unknown names count as open).
pub fn circuit_value(state: &str) -> f64 {
    match state.to_ascii_lowercase().replace('_', "-").as_str() {
        "closed" | "" => 0.0,
        "half-open" | "halfopen" => 1.0,
        _ => 2.0,
    }
}

/// Counts the protobuf bytes of one compile request and its response.
pub fn count_bytes(received: usize, sent: usize) {
    metrics::counter!(M_BYTES_RECEIVED).increment(received as u64);
    metrics::counter!(M_BYTES_SENT).increment(sent as u64);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn circuit_values() {
        assert_eq!(circuit_value("closed"), 0.0);
        assert_eq!(circuit_value("half-open"), 1.0);
        assert_eq!(circuit_value("half_open"), 1.0);
        assert_eq!(circuit_value("open"), 2.0);
    }
}
