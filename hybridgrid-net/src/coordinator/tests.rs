use super::*;

#[test]
fn advertised_addresses() {
    let peer: std::net::SocketAddr = "10.1.2.3:4444".parse().unwrap();
    assert_eq!(
        resolve_advertised("0.0.0.0:50052", Some(peer)),
        "10.1.2.3:50052"
    );
    assert_eq!(resolve_advertised(":50052", Some(peer)), "10.1.2.3:50052");
    assert_eq!(resolve_advertised("w1:50052", Some(peer)), "w1:50052");
    assert_eq!(resolve_advertised("0.0.0.0:50052", None), "0.0.0.0:50052");
}

fn gcc() -> hybridgrid_core::task::CompilerIdentity {
    use hybridgrid_core::task::{CompilerFamily, CompilerIdentity, DriverKind};
    CompilerIdentity {
        family: CompilerFamily::Gcc,
        driver: DriverKind::C,
        version: "12.2.0".into(),
        target: "x86_64-linux-gnu".into(),
    }
}

/// A coordinator stack over one worker with `slots` whose compiles wait
/// until `release` has permits.
fn stack_over_a_stuck_worker(
    slots: u32,
    cfg: &hybridgrid_core::config::Config,
) -> (
    Arc<CoordinatorState>,
    BoxCompile,
    Arc<tokio::sync::Semaphore>,
) {
    use hybridgrid_core::worker::{Arch, Capabilities, CompilerInfo};
    let release = Arc::new(tokio::sync::Semaphore::new(0));
    let r = release.clone();
    let connector: Connector = Arc::new(move |_w: &WorkerInfo| {
        let r = r.clone();
        Ok(BoxCompile::new(tower::service_fn(
            move |_t: CompileTask| {
                let r = r.clone();
                async move {
                    let _permit = r.acquire().await;
                    Ok::<_, BoxError>(CompileOutput::default())
                }
            },
        )))
    });
    let pool = Arc::new(
        WorkerPool::new(Duration::from_secs(3600), ChannelOptions::default())
            .with_connector(connector),
    );
    let mut caps = Capabilities::new(Arch::Amd64);
    caps.max_parallel_tasks = slots;
    caps.compilers.push(CompilerInfo {
        name: "gcc".into(),
        path: "/usr/bin/gcc".into(),
        identity: gcc(),
    });
    pool.registry().register(WorkerInfo::new(
        WorkerId::from("w1"),
        "127.0.0.1:1",
        WorkerSource::Handshake,
        caps,
    ));
    let state = CoordinatorState::new(pool, Duration::from_secs(3600));
    let stack = compose_stack(&state, cfg, |s| s);
    (state, stack, release)
}

async fn queued_becomes(state: &CoordinatorState, want: u64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while state.stats().tasks_queued != want {
        assert!(
            Instant::now() < deadline,
            "tasks.queued is {}, expected {want}",
            state.stats().tasks_queued
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Three compiles on a stuck worker with `slots`: two are reported
/// waiting, then none once the worker answers.
async fn three_compiles_two_waiting(slots: u32, cfg: &hybridgrid_core::config::Config) {
    let (state, stack, release) = stack_over_a_stuck_worker(slots, cfg);
    assert_eq!(state.stats().tasks_queued, 0);
    let calls: Vec<_> = (0..3).map(|n| compile(&stack, n)).collect();
    queued_becomes(&state, 2).await;
    release.add_permits(3);
    for c in calls {
        assert!(c.await.unwrap());
    }
    queued_becomes(&state, 0).await;
}

fn compile(stack: &BoxCompile, n: usize) -> tokio::task::JoinHandle<bool> {
    let stack = stack.clone();
    let task = CompileTask::new(
        gcc(),
        hybridgrid_core::task::Language::PreprocessedC,
        vec![],
        format!("t{n}.c"),
        hybridgrid_core::payload::Payload::raw(vec![b' '; 100 + n]),
    );
    tokio::spawn(async move { stack.oneshot(task).await.is_ok() })
}

/// `tasks.queued` (`/api/stats`, the `hybridgrid_tasks_queued` gauge)
/// counts the tasks waiting for admission.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_counts_tasks_waiting_for_admission() {
    let mut cfg = hybridgrid_core::config::Config::default();
    cfg.coordinator.max_concurrent_tasks = 1;
    cfg.coordinator.max_queued_tasks = 10;
    three_compiles_two_waiting(4, &cfg).await;
}

/// ... and the tasks the cost-aware scheduler holds for a free slot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_counts_tasks_held_for_a_free_slot() {
    let mut cfg = hybridgrid_core::config::Config::default();
    cfg.scheduler.algorithm = hybridgrid_core::config::Algorithm::CostAware;
    three_compiles_two_waiting(1, &cfg).await;
}
