//! The cost of one scheduling decision with 10, 1,000 and 10,000 workers.
//!
//! `cargo bench -p hybridgrid-core --bench schedule`

// criterion's macros generate undocumented public items.
#![allow(missing_docs)]

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use hybridgrid_core::BoxError;
use hybridgrid_core::config::{Algorithm, SchedulerConfig};
use hybridgrid_core::payload::Payload;
use hybridgrid_core::registry::{RegisteredWorker, Registry};
use hybridgrid_core::scheduler::{Endpoint, Endpoints, Scheduler};
use hybridgrid_core::task::{
    CompileOutput, CompileTask, CompilerFamily, CompilerIdentity, DriverKind, Language,
};
use hybridgrid_core::worker::{
    Arch, Capabilities, CompilerInfo, WorkerId, WorkerInfo, WorkerSource,
};
use tower::util::BoxCloneService;

type Svc = BoxCloneService<CompileTask, CompileOutput, BoxError>;

fn gcc(version: &str) -> CompilerIdentity {
    CompilerIdentity {
        family: CompilerFamily::Gcc,
        driver: DriverKind::C,
        version: version.into(),
        target: "x86_64-linux-gnu".into(),
    }
}

fn bench(c: &mut Criterion) {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => panic!("runtime: {e}"),
    };
    let _guard = rt.enter();
    let task = CompileTask::new(
        gcc("12.2.0"),
        Language::PreprocessedC,
        vec![],
        "x.c",
        Payload::raw(vec![b' '; 4096]),
    );
    let mut group = c.benchmark_group("schedule_decision");
    for alg in [Algorithm::P2c, Algorithm::LeastLoaded, Algorithm::CostAware] {
        for n in [10usize, 1_000, 10_000] {
            let registry = Registry::new();
            let make = |w: RegisteredWorker| -> Endpoint<Svc> {
                Endpoint::new(
                    w,
                    Svc::new(tower::service_fn(|_t: CompileTask| async {
                        Ok::<_, BoxError>(CompileOutput::default())
                    })),
                )
            };
            let mut cfg = SchedulerConfig::default();
            cfg.algorithm = alg;
            let sched = Scheduler::new(Endpoints::new(registry.subscribe(), make), &cfg);
            for i in 0..n {
                let mut caps = Capabilities::new(Arch::Amd64);
                caps.cores = 8;
                caps.max_parallel_tasks = 4;
                // Three of four workers have the task's compiler.
                let v = if i % 4 == 3 { "13.1.0" } else { "12.2.0" };
                caps.compilers.push(CompilerInfo {
                    name: "gcc".into(),
                    path: "/usr/bin/gcc".into(),
                    identity: gcc(v),
                });
                let id = WorkerId(format!("w{i}"));
                registry.register(WorkerInfo::new(
                    id.clone(),
                    format!("{id}:1"),
                    WorkerSource::Static,
                    caps,
                ));
            }
            if let Err(e) = sched.refresh() {
                panic!("refresh: {e}");
            }
            // Load some workers so scores differ.
            for (i, w) in registry.snapshot().iter().enumerate() {
                for _ in 0..(i % 5) {
                    w.worker.stats.start(1000);
                }
            }
            group.bench_with_input(BenchmarkId::new(format!("{alg:?}"), n), &n, |b, _| {
                b.iter(|| sched.choose(std::hint::black_box(&task), &[]))
            });
        }
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
