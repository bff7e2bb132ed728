//! A deterministic simulator of a build on a grid.
//!
//! It runs the real [registry](crate::registry),
//! [scheduler](crate::scheduler), [breakers](crate::breaker) and
//! [retry](crate::retry) under tokio's paused clock against simulated
//! workers of different speeds (which may fail, join late or leave), and
//! replays a [trace](parse_trace) of compile jobs through them with a
//! fixed client parallelism (like `make -jN`). The same inputs always give
//! the same report. Needs the `sim` feature (tokio's `test-util`).
//!
//! ```
//! use hybridgrid_core::config::Algorithm;
//! use hybridgrid_core::sim::{self, SimConfig, SimWorker};
//!
//! let jobs = sim::parse_trace(sim::ZSTD_TRACE).expect("trace");
//! let workers = [1.0, 4.0].map(SimWorker::with_speed).to_vec();
//! let report = sim::simulate(&SimConfig::new(Algorithm::CostAware, workers, jobs));
//! assert!(report.failed == 0 && report.makespan.as_secs_f64() > 0.0);
//! ```

mod trace;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tower::ServiceExt;
use tower::util::BoxCloneService;

pub use self::trace::{TraceError, TraceJob, ZSTD_TRACE, parse_trace, stretch};
use crate::config::{Algorithm, CircuitBreakerConfig, RetryConfig, SchedulerConfig};
use crate::error::{BoxError, GridError};
use crate::payload::{Encoding, Payload};
use crate::registry::Registry;
use crate::retry::Retry;
use crate::scheduler::{Endpoint, Endpoints, Scheduler};
use crate::task::{
    CompileOutput, CompileTask, CompilerFamily, CompilerIdentity, DriverKind, Language, Timings,
};
use crate::worker::{Arch, Capabilities, CompilerInfo, WorkerId, WorkerInfo, WorkerSource};

/// A small deterministic random number generator (splitmix64).
#[derive(Clone, Debug)]
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub(crate) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub(crate) fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// A simulated worker.
#[derive(Clone, Debug, PartialEq)]
pub struct SimWorker {
    /// Relative speed: a job of cost `c` takes `c / speed`.
    pub speed: f64,
    /// Compiles it runs at once.
    pub slots: u32,
    /// Share of tasks that fail with a worker fault (0..1).
    pub failure_rate: f64,
    /// When it registers (from the start of the build).
    pub join_at: Duration,
    /// When it leaves, if it does; tasks running on it then fail.
    pub leave_at: Option<Duration>,
}

impl SimWorker {
    /// A reliable worker with 4 slots, present from the start.
    pub fn with_speed(speed: f64) -> Self {
        SimWorker {
            speed,
            slots: 4,
            failure_rate: 0.0,
            join_at: Duration::ZERO,
            leave_at: None,
        }
    }
}

/// What to simulate.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// The placement algorithm.
    pub algorithm: Algorithm,
    /// The workers.
    pub workers: Vec<SimWorker>,
    /// The compile jobs, submitted in order.
    pub jobs: Vec<TraceJob>,
    /// Jobs in flight at once (`make -jN`); 0 = twice the total slots.
    pub parallelism: usize,
    /// Seed for P2C and failures.
    pub seed: u64,
}

impl SimConfig {
    /// A simulation with default parallelism and seed.
    pub fn new(algorithm: Algorithm, workers: Vec<SimWorker>, jobs: Vec<TraceJob>) -> Self {
        SimConfig {
            algorithm,
            workers,
            jobs,
            parallelism: 0,
            seed: 42,
        }
    }
}

/// What a simulation measured.
#[derive(Clone, Debug, PartialEq)]
pub struct SimReport {
    /// Time from the first submission to the last completion.
    pub makespan: Duration,
    /// Median time from submission to result.
    pub p50: Duration,
    /// 99th percentile of the same.
    pub p99: Duration,
    /// Busy slot time over available slot time.
    pub utilisation: f64,
    /// Jobs that succeeded.
    pub completed: usize,
    /// Jobs that failed after retries.
    pub failed: usize,
}

fn compiler() -> CompilerIdentity {
    CompilerIdentity {
        family: CompilerFamily::Gcc,
        driver: DriverKind::C,
        version: "12.2.0".into(),
        target: "x86_64-linux-gnu".into(),
    }
}

type SimService = BoxCloneService<CompileTask, CompileOutput, BoxError>;
type MakeEndpoint =
    Box<dyn FnMut(crate::registry::RegisteredWorker) -> Endpoint<SimService> + Send>;

struct WorkerState {
    spec: SimWorker,
    gone: AtomicBool,
    /// Busy slot time in microseconds.
    busy_us: AtomicU64,
}

fn worker_service(state: Arc<WorkerState>, id: WorkerId, seed: u64) -> SimService {
    let slots = Arc::new(Semaphore::new(state.spec.slots.max(1) as usize));
    BoxCloneService::new(tower::service_fn(move |t: CompileTask| {
        let state = state.clone();
        let slots = slots.clone();
        let id = id.clone();
        async move {
            let unavailable = |reason: &str| GridError::WorkerUnavailable {
                worker: id.0.clone(),
                reason: reason.to_owned(),
            };
            if state.gone.load(Ordering::Relaxed) {
                return Err(unavailable("connection refused").into());
            }
            let _slot = slots.acquire().await.map_err(|_| unavailable("closed"))?;
            // The trace's cost travels in the task's arguments.
            let cost_us: u64 = t.args.first().and_then(|a| a.parse().ok()).unwrap_or(1000);
            let run = Duration::from_micros((cost_us as f64 / state.spec.speed) as u64);
            // Failures are a deterministic function of the task id and seed.
            let mut rng = Rng::new(seed ^ t.id.0.len() as u64 ^ cost_us.rotate_left(17));
            let fails = rng.unit() < state.spec.failure_rate;
            let started = Instant::now();
            tokio::time::sleep(if fails { run / 10 } else { run }).await;
            state
                .busy_us
                .fetch_add(started.elapsed().as_micros() as u64, Ordering::Relaxed);
            if fails || state.gone.load(Ordering::Relaxed) {
                return Err(unavailable("connection reset").into());
            }
            Ok(CompileOutput {
                timings: Timings {
                    queue: Duration::ZERO,
                    compile: run,
                },
                ..Default::default()
            })
        }
    }))
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let k = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[k]
}

/// Runs a simulation on a fresh single-threaded runtime with a paused clock.
pub fn simulate(config: &SimConfig) -> SimReport {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build();
    match rt {
        Ok(rt) => rt.block_on(run(config)),
        Err(e) => panic!("cannot build a tokio runtime for the simulation: {e}"),
    }
}

/// Runs a simulation on the current runtime, whose clock must be paused.
pub async fn run(config: &SimConfig) -> SimReport {
    let start = Instant::now();
    let registry = Registry::new();
    let states: Vec<Arc<WorkerState>> = config
        .workers
        .iter()
        .map(|w| {
            Arc::new(WorkerState {
                spec: w.clone(),
                gone: AtomicBool::new(false),
                busy_us: AtomicU64::new(0),
            })
        })
        .collect();
    let by_id = states.clone();
    let seed = config.seed;
    let make: MakeEndpoint = Box::new(move |w| {
        let i: usize = w.info.id.0.trim_start_matches('w').parse().unwrap_or(0);
        let state = by_id[i.min(by_id.len() - 1)].clone();
        let svc = worker_service(state, w.info.id.clone(), seed);
        let ep = Endpoint::with_breaker(w, svc, CircuitBreakerConfig::default());
        Endpoint {
            worker: ep.worker,
            circuit: ep.circuit,
            service: SimService::new(ep.service),
        }
    });
    let endpoints = Endpoints::new(registry.subscribe(), make);
    let sched_cfg = SchedulerConfig {
        algorithm: config.algorithm,
        ..Default::default()
    };
    let scheduler = Scheduler::with_seed(endpoints, &sched_cfg, config.seed);
    let retry = RetryConfig {
        initial_interval: Duration::from_millis(10),
        ..Default::default()
    };
    let service: SimService = BoxCloneService::new(Retry::new(scheduler, retry));

    // Joins and leaves.
    for (i, s) in states.iter().enumerate() {
        let mut caps = Capabilities::new(Arch::Amd64);
        caps.cores = s.spec.slots;
        caps.max_parallel_tasks = s.spec.slots;
        caps.memory_bytes = 16 << 30;
        caps.compilers.push(CompilerInfo {
            name: "gcc".into(),
            path: "/usr/bin/gcc".into(),
            identity: compiler(),
        });
        let id = WorkerId(format!("w{i}"));
        let info = WorkerInfo::new(
            id.clone(),
            format!("{id}:50052"),
            WorkerSource::Static,
            caps,
        );
        let (reg, s) = (registry.clone(), s.clone());
        tokio::spawn(async move {
            tokio::time::sleep(s.spec.join_at).await;
            reg.register(info);
            if let Some(at) = s.spec.leave_at {
                tokio::time::sleep_until(start + at).await;
                s.gone.store(true, Ordering::Relaxed);
                reg.remove(&id, "left the simulation");
            }
        });
    }
    tokio::task::yield_now().await;

    let total_slots: usize = config.workers.iter().map(|w| w.slots as usize).sum();
    let parallelism = match config.parallelism {
        0 => (2 * total_slots).max(1),
        p => p,
    };
    let gate = Arc::new(Semaphore::new(parallelism));
    let mut handles = Vec::with_capacity(config.jobs.len());
    for (n, job) in config.jobs.iter().enumerate() {
        let permit = match gate.clone().acquire_owned().await {
            Ok(p) => p,
            Err(_) => break,
        };
        let mut task = CompileTask::new(
            compiler(),
            Language::PreprocessedC,
            vec![job.cost.as_micros().to_string()],
            job.name.clone(),
            Payload::from_parts(Encoding::Identity, Bytes::new(), job.bytes),
        );
        task.id = crate::task::TaskId(format!("t{n}"));
        let svc = service.clone();
        handles.push(tokio::spawn(async move {
            let submitted = Instant::now();
            let res = svc.oneshot(task).await;
            drop(permit);
            (res.is_ok(), submitted.elapsed(), Instant::now())
        }));
    }
    let mut latencies = Vec::with_capacity(handles.len());
    let (mut completed, mut failed) = (0, 0);
    let mut end = start;
    for h in handles {
        if let Ok((ok, latency, done)) = h.await {
            if ok {
                completed += 1;
            } else {
                failed += 1;
            }
            latencies.push(latency);
            end = end.max(done);
        }
    }
    latencies.sort_unstable();
    let makespan = end - start;
    let mut available = 0.0;
    let mut busy = 0.0;
    for s in &states {
        let from = s.spec.join_at.min(makespan);
        let to = s.spec.leave_at.unwrap_or(makespan).min(makespan);
        available += to.saturating_sub(from).as_secs_f64() * f64::from(s.spec.slots);
        busy += s.busy_us.load(Ordering::Relaxed) as f64 / 1e6;
    }
    SimReport {
        makespan,
        p50: percentile(&latencies, 0.5),
        p99: percentile(&latencies, 0.99),
        utilisation: if available > 0.0 {
            busy / available
        } else {
            0.0
        },
        completed,
        failed,
    }
}

#[cfg(test)]
mod tests;
