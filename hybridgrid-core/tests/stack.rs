//! The coordinator's stack composed end to end:
//! admission -> retry -> hedge -> scheduler -> breaker -> worker.

use std::time::Duration;

use hybridgrid_core::admission::Admission;
use hybridgrid_core::config::Config;
use hybridgrid_core::hedge::Hedge;
use hybridgrid_core::payload::Payload;
use hybridgrid_core::registry::{RegisteredWorker, Registry};
use hybridgrid_core::retry::Retry;
use hybridgrid_core::scheduler::{Endpoint, Endpoints, Scheduler};
use hybridgrid_core::task::{
    CompileOutput, CompileTask, CompilerFamily, CompilerIdentity, DriverKind, Language,
};
use hybridgrid_core::worker::{Arch, Capabilities, CompilerInfo, WorkerInfo, WorkerSource};
use hybridgrid_core::{BoxError, GridError};
use tower::ServiceExt;
use tower::util::BoxCloneService;

type Svc = BoxCloneService<CompileTask, CompileOutput, BoxError>;
type Make = Box<dyn FnMut(RegisteredWorker) -> Endpoint<Svc> + Send>;

fn gcc() -> CompilerIdentity {
    CompilerIdentity {
        family: CompilerFamily::Gcc,
        driver: DriverKind::C,
        version: "12.2.0".into(),
        target: "x86_64-linux-gnu".into(),
    }
}

fn worker(id: &str) -> WorkerInfo {
    let mut caps = Capabilities::new(Arch::Amd64);
    caps.max_parallel_tasks = 2;
    caps.compilers.push(CompilerInfo {
        name: "gcc".into(),
        path: "/usr/bin/gcc".into(),
        identity: gcc(),
    });
    WorkerInfo::new(
        id.into(),
        format!("{id}:50052"),
        WorkerSource::Handshake,
        caps,
    )
}

#[tokio::test(start_paused = true)]
async fn a_dead_worker_is_retried_around_then_its_circuit_opens() {
    let config = Config::default();
    let registry = Registry::new();
    let breaker_cfg = config.resilience.circuit_breaker.clone();
    // The network layer supplies a client per worker; here "dead" refuses.
    let make: Make = Box::new(move |w: RegisteredWorker| {
        let dead = w.info.id.0 == "dead";
        let id = w.info.id.0.clone();
        let client = Svc::new(tower::service_fn(move |_t: CompileTask| {
            let id = id.clone();
            async move {
                tokio::time::sleep(Duration::from_millis(100)).await;
                if dead {
                    return Err(GridError::WorkerUnavailable {
                        worker: id,
                        reason: "connection refused".into(),
                    }
                    .into());
                }
                Ok(CompileOutput::default())
            }
        }));
        let ep = Endpoint::with_breaker(w, client, breaker_cfg.clone());
        Endpoint {
            worker: ep.worker,
            circuit: ep.circuit,
            service: Svc::new(ep.service),
        }
    });
    let scheduler = Scheduler::new(
        Endpoints::new(registry.subscribe(), make),
        &config.scheduler,
    );
    let hedge = Hedge::new(scheduler.clone(), scheduler, config.scheduler.hedge.clone());
    let retry = Retry::new(hedge, config.resilience.retry.clone());
    let coordinator = Admission::from_config(retry, &config.coordinator);

    registry.register(worker("dead"));
    registry.register(worker("good"));
    for _ in 0..50 {
        let task = CompileTask::new(
            gcc(),
            Language::PreprocessedC,
            vec![],
            "x.c",
            Payload::raw(&b"int x;"[..]),
        );
        let out = coordinator
            .clone()
            .oneshot(task)
            .await
            .expect("retried onto good");
        assert_eq!(out.worker_id, Some("good".into()));
    }
    let dead = registry.get(&"dead".into()).expect("dead");
    // P2C sends some tasks to "dead" until its circuit opens after 10 failures.
    assert_eq!(dead.worker.stats.failed(), 10);
}
