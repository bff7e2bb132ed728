//! Embedding hybridgrid's scheduler and circuit breaker in another tool's
//! own task runner, without gRPC: the tool has its own "machines" (here
//! three tower services that compile with the local gcc; in a real tool,
//! its own remote-execution clients), registers them in a [`Registry`],
//! and sends every task through `Retry -> Scheduler -> Breaker -> machine`.
//! One machine fails every call: its circuit opens after the threshold,
//! the scheduler routes around it, retries move its tasks elsewhere, and
//! every task completes.
//!
//! Run it (needs gcc): `cargo run -p hybridgrid-examples --example embed_scheduler`

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use hybridgrid_core::config::{CircuitBreakerConfig, RetryConfig, SchedulerConfig};
use hybridgrid_core::payload::Payload;
use hybridgrid_core::registry::Registry;
use hybridgrid_core::retry::Retry;
use hybridgrid_core::scheduler::{Endpoint, Endpoints, Scheduler};
use hybridgrid_core::task::{CompileOutput, CompileTask, Language, OutputKind};
use hybridgrid_core::worker::{Arch, Capabilities, WorkerId, WorkerInfo, WorkerSource};
use hybridgrid_core::{BoxError, GridError};
use hybridgrid_exec::detect::{DetectOptions, find_and_identify};
use hybridgrid_exec::native::{NativeExecutor, NativeOptions};
use tower::util::BoxCloneSyncService;
use tower::{Service, ServiceExt};

type Machine = BoxCloneSyncService<CompileTask, CompileOutput, BoxError>;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let gcc = find_and_identify("gcc", &DetectOptions::default().path_dirs).await?;
    let native = NativeExecutor::new(vec![gcc.clone()], NativeOptions::default());

    // The tool's machines: m0 and m1 compile, m2 is broken.
    let calls: Arc<Vec<AtomicUsize>> = Arc::new((0..3).map(|_| AtomicUsize::new(0)).collect());
    let registry = Registry::new();
    let make = {
        let calls = calls.clone();
        move |w: hybridgrid_core::registry::RegisteredWorker| {
            let n: usize = w.info.id.0.trim_start_matches('m').parse().unwrap_or(0);
            let calls = calls.clone();
            let native = native.clone();
            let id = w.info.id.0.clone();
            let machine = tower::service_fn(move |task: CompileTask| {
                calls[n].fetch_add(1, Ordering::Relaxed);
                let native = native.clone();
                let id = id.clone();
                async move {
                    if n == 2 {
                        return Err(BoxError::from(GridError::WorkerUnavailable {
                            worker: id,
                            reason: "connection reset".into(),
                        }));
                    }
                    native.oneshot(task).await
                }
            });
            // Each machine gets its own circuit: 3 calls, 50% failures opens it.
            let mut breaker = CircuitBreakerConfig::default();
            breaker.request_threshold = 3;
            breaker.failure_rate_threshold = 0.5;
            breaker.open_timeout = Duration::from_secs(60);
            let ep = Endpoint::with_breaker(w, machine, breaker);
            Endpoint {
                worker: ep.worker,
                circuit: ep.circuit,
                service: Machine::new(ep.service),
            }
        }
    };
    let scheduler = Scheduler::new(
        Endpoints::new(registry.subscribe(), make),
        &SchedulerConfig::default(),
    );
    let mut retry = RetryConfig::default();
    retry.initial_interval = Duration::from_millis(5);
    let mut runner = Retry::new(scheduler, retry);

    for i in 0..3 {
        let mut caps = Capabilities::new(Arch::Amd64);
        caps.cores = 2;
        caps.max_parallel_tasks = 2;
        caps.compilers.push(gcc.clone());
        registry.register(WorkerInfo::new(
            WorkerId(format!("m{i}")),
            format!("m{i}:0"),
            WorkerSource::Static,
            caps,
        ));
    }
    tokio::task::yield_now().await;

    // The tool's own jobs.
    let mut jobs = Vec::new();
    for i in 0..12 {
        let task = CompileTask::new(
            gcc.identity.clone(),
            Language::C,
            vec!["-O2".into()],
            format!("job{i}.c"),
            Payload::compress(format!("int job{i}(int x) {{ return x * {i}; }}\n").into_bytes()),
        );
        runner.ready().await.map_err(|e| anyhow::anyhow!(e))?;
        jobs.push(runner.call(task));
    }
    let mut ok = 0;
    for job in jobs {
        let out = job.await.map_err(|e| anyhow::anyhow!(e))?;
        let obj = out
            .output(OutputKind::Object)
            .ok_or_else(|| anyhow::anyhow!("no object"))?
            .data
            .decode()?;
        anyhow::ensure!(out.exit_code == 0 && obj.starts_with(b"\x7fELF"));
        ok += 1;
    }
    let per: Vec<usize> = calls.iter().map(|c| c.load(Ordering::Relaxed)).collect();
    println!(
        "{ok}/12 jobs compiled; calls per machine: m0={} m1={} m2={} (broken)",
        per[0], per[1], per[2]
    );
    anyhow::ensure!(ok == 12, "every job must complete");
    anyhow::ensure!(
        per[2] <= 4,
        "the broken machine's circuit should have opened"
    );
    Ok(())
}
