use std::collections::HashMap;
use std::time::Duration;

use tower::{Service, ServiceExt};

use super::model::CostModel;
use super::*;
use crate::config::{Algorithm, CircuitBreakerConfig};
use crate::registry::{Registry, WorkerChanges};
use crate::task::{TaskId, Timings};
use crate::testutil::{capture_logs, gcc, gcc_amd64, task_of, worker_info};
use crate::worker::Arch;

type Fake = tower::util::BoxCloneService<CompileTask, CompileOutput, BoxError>;
type Sched = Scheduler<
    Endpoints<
        WorkerChanges,
        Box<dyn FnMut(crate::registry::RegisteredWorker) -> Endpoint<Fake> + Send>,
    >,
    Fake,
>;

/// A worker that compiles `speed` bytes per second, or fails if `speed` is 0.
fn fake(speed: f64) -> Fake {
    tower::util::BoxCloneService::new(tower::service_fn(move |t: CompileTask| async move {
        if speed == 0.0 {
            return Err(GridError::WorkerUnavailable {
                worker: "x".into(),
                reason: "connection refused".into(),
            }
            .into());
        }
        let d = Duration::from_secs_f64(t.input.raw_len() as f64 / speed);
        tokio::time::sleep(d).await;
        Ok(CompileOutput {
            timings: Timings {
                queue: Duration::ZERO,
                compile: d,
            },
            ..Default::default()
        })
    }))
}

fn scheduler(algorithm: Algorithm, speeds: HashMap<&'static str, f64>) -> (Registry, Sched) {
    let reg = Registry::new();
    let speeds: HashMap<String, f64> = speeds.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
    let make: Box<dyn FnMut(crate::registry::RegisteredWorker) -> Endpoint<Fake> + Send> =
        Box::new(move |w| {
            let speed = speeds.get(&w.info.id.0).copied().unwrap_or(1000.0);
            let ep = Endpoint::with_breaker(w, fake(speed), CircuitBreakerConfig::default());
            Endpoint {
                worker: ep.worker,
                circuit: ep.circuit,
                service: Fake::new(ep.service),
            }
        });
    let cfg = SchedulerConfig {
        algorithm,
        ..Default::default()
    };
    let s = Scheduler::new(Endpoints::new(reg.subscribe(), make), &cfg);
    (reg, s)
}

async fn run(s: &mut Sched, t: CompileTask) -> Result<CompileOutput, BoxError> {
    ServiceExt::<CompileTask>::ready(s).await?.call(t).await
}

#[tokio::test(start_paused = true)]
async fn capability_filter_is_exact() {
    let (reg, mut s) = scheduler(Algorithm::P2c, HashMap::new());
    let mut gcc13 = gcc_amd64();
    gcc13.version = "13.1.0".into();
    reg.register(worker_info("a", Arch::Amd64, &[gcc_amd64()]));
    reg.register(worker_info("b", Arch::Amd64, &[gcc13.clone()]));
    reg.register(worker_info("c", Arch::Arm64, &[gcc("aarch64-linux-gnu")]));
    for _ in 0..20 {
        let out = run(&mut s, task_of(10)).await.expect("ok");
        assert_eq!(out.worker_id, Some("a".into()));
    }
    let mut t = task_of(10);
    t.compiler = gcc("aarch64-linux-gnu");
    t.target_arch = Arch::Arm64;
    assert_eq!(
        run(&mut s, t).await.expect("ok").worker_id,
        Some("c".into())
    );
    let mut t = task_of(10);
    t.compiler.version = "14.0.0".into();
    let e = run(&mut s, t).await.expect_err("no worker").to_string();
    assert!(e.contains("no worker available"), "{e}");
    assert!(e.contains("gcc 14.0.0 (x86_64-linux-gnu)"), "{e}");
    assert!(
        e.contains("amd64") && e.contains("3 workers registered"),
        "{e}"
    );
}

#[tokio::test(start_paused = true)]
async fn routes_around_open_circuits_and_reports_all_open() {
    let (reg, mut s) = scheduler(Algorithm::P2c, HashMap::from([("bad", 0.0)]));
    reg.register(worker_info("bad", Arch::Amd64, &[gcc_amd64()]));
    reg.register(worker_info("good", Arch::Amd64, &[gcc_amd64()]));
    let mut bad_calls = 0;
    for _ in 0..60 {
        if let Err(e) = run(&mut s, task_of(10)).await {
            assert_eq!(WorkerError::worker_of(e.as_ref()), Some(&"bad".into()));
            assert!(GridError::find(e.as_ref()).is_some_and(|g| g.is_retryable()));
            bad_calls += 1;
        }
    }
    assert_eq!(
        bad_calls, 10,
        "the circuit opens after request_threshold failures"
    );
    reg.remove(&"good".into(), "test");
    let e = run(&mut s, task_of(10)).await.expect_err("all open");
    assert_eq!(GridError::find(e.as_ref()), Some(&GridError::CircuitOpen));
    assert!(e.to_string().contains("circuit breaker open"));
}

#[tokio::test(start_paused = true)]
async fn exclusion_and_removal() {
    let (reg, mut s) = scheduler(Algorithm::LeastLoaded, HashMap::new());
    reg.register(worker_info("a", Arch::Amd64, &[gcc_amd64()]));
    reg.register(worker_info("b", Arch::Amd64, &[gcc_amd64()]));
    let mut a = Attempt::new(task_of(10));
    a.exclude = vec!["a".into()];
    let route = RouteSlot::new();
    a.route = Some(route.clone());
    let out = ServiceExt::<Attempt>::ready(&mut s)
        .await
        .expect("ready")
        .call(a)
        .await;
    assert_eq!(out.expect("ok").worker_id, Some("b".into()));
    assert_eq!(route.get(), Some(&"b".into()));
    let mut a = Attempt::new(task_of(10));
    a.exclude = vec!["a".into(), "b".into()];
    let e = ServiceExt::<Attempt>::ready(&mut s)
        .await
        .expect("ready")
        .call(a)
        .await;
    let e = e.expect_err("all tried").to_string();
    assert!(e.contains("already tried"), "{e}");
    reg.remove(&"a".into(), "test");
    s.refresh().expect("refresh");
    assert_eq!(s.len(), 1);
    assert_eq!(s.choose(&task_of(1), &[]).expect("b"), "b".into());
}

#[tokio::test(start_paused = true)]
async fn p2c_never_picks_the_most_loaded_of_three() {
    let (reg, s) = scheduler(Algorithm::P2c, HashMap::new());
    reg.register(worker_info("a", Arch::Amd64, &[gcc_amd64()]));
    reg.register(worker_info("b", Arch::Amd64, &[gcc_amd64()]));
    reg.register(worker_info("busy", Arch::Amd64, &[gcc_amd64()]));
    s.refresh().expect("refresh");
    let busy = reg.get(&"busy".into()).expect("busy");
    for _ in 0..4 {
        busy.worker.stats.start(1);
    }
    let mut seen = HashMap::new();
    for _ in 0..200 {
        *seen
            .entry(s.choose(&task_of(1), &[]).expect("pick").0)
            .or_insert(0) += 1;
    }
    assert_eq!(seen.get("busy"), None, "{seen:?}");
    assert!(seen.get("a").is_some_and(|&n| n > 50), "{seen:?}");
    assert!(seen.get("b").is_some_and(|&n| n > 50), "{seen:?}");
}

#[tokio::test(start_paused = true)]
async fn p2c_prefers_native_arch() {
    let (reg, s) = scheduler(Algorithm::P2c, HashMap::new());
    // An arm64 box with an x86-64 cross compiler vs native ones.
    for id in ["n1", "n2"] {
        reg.register(worker_info(id, Arch::Amd64, &[gcc_amd64()]));
    }
    reg.register(worker_info("cross", Arch::Arm64, &[gcc_amd64()]));
    s.refresh().expect("refresh");
    for _ in 0..100 {
        assert_ne!(s.choose(&task_of(1), &[]).expect("pick").0, "cross");
    }
}

#[tokio::test(start_paused = true)]
async fn least_loaded_picks_fewest_active_per_slot() {
    let (reg, s) = scheduler(Algorithm::LeastLoaded, HashMap::new());
    reg.register(worker_info("a", Arch::Amd64, &[gcc_amd64()]));
    let mut big = worker_info("big", Arch::Amd64, &[gcc_amd64()]);
    big.capabilities.max_parallel_tasks = 16;
    reg.register(big);
    s.refresh().expect("refresh");
    reg.get(&"a".into()).expect("a").worker.stats.start(1);
    let big = reg.get(&"big".into()).expect("big");
    for _ in 0..3 {
        big.worker.stats.start(1);
    }
    // a: 1/4 busy, big: 3/16 busy.
    assert_eq!(s.choose(&task_of(1), &[]).expect("pick").0, "big");
    big.worker.stats.start(1);
    big.worker.stats.start(1);
    // big: 5/16 > 1/4.
    assert_eq!(s.choose(&task_of(1), &[]).expect("pick").0, "a");
}

#[tokio::test(start_paused = true)]
async fn cost_aware_learns_speeds_and_queues_on_the_fast_worker() {
    let (logs, _g) = capture_logs();
    let (reg, s) = scheduler(
        Algorithm::CostAware,
        HashMap::from([("slow", 100.0), ("fast", 1000.0)]),
    );
    for id in ["slow", "fast"] {
        let mut w = worker_info(id, Arch::Amd64, &[gcc_amd64()]);
        w.capabilities.max_parallel_tasks = 1;
        reg.register(w);
    }
    // Two tasks at once: equal priors, so one goes to each; both speeds learned.
    let (r1, r2) = tokio::join!(
        s.clone().oneshot(task_of(1000)),
        s.clone().oneshot(task_of(1000))
    );
    let mut ws = vec![r1.expect("ok").worker_id, r2.expect("ok").worker_id];
    ws.sort();
    assert_eq!(ws, vec![Some("fast".into()), Some("slow".into())]);
    // Learned from what each compile took: the fast worker is the faster
    // (one sample each, so not yet the full 10x).
    let (fast, slow) = (s.learned_speed("fast"), s.learned_speed("slow"));
    assert!(fast > 3.0 * slow, "fast {fast} slow {slow}");
    assert_eq!(s.choose(&task_of(1000), &[]).expect("pick").0, "fast");
    // Fast is busy for 3 s, then 1 s, against ~10 s on the slow one: the
    // task waits for the fast worker.
    let busy = tokio::spawn(s.clone().oneshot(task_of(3000)));
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(s.choose(&task_of(1000), &[]).expect("pick").0, "fast");
    busy.await.expect("join").expect("busy");
    // Busy for 100 s: the idle slow worker finishes first.
    let busy = tokio::spawn(s.clone().oneshot(task_of(100_000)));
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(s.choose(&task_of(1000), &[]).expect("pick").0, "slow");
    busy.abort();
    let text = logs.text();
    assert!(text.contains("msg=\"task started\""), "{text}");
    assert!(text.contains("msg=\"task completed\""), "{text}");
    assert!(text.contains("success=true"), "{text}");
}

#[tokio::test(start_paused = true)]
async fn least_loaded_in_a_large_pool_takes_an_idle_worker() {
    let (reg, s) = scheduler(Algorithm::LeastLoaded, HashMap::new());
    for i in 0..200 {
        let mut w = worker_info(&format!("w{i}"), Arch::Amd64, &[gcc_amd64()]);
        w.capabilities.max_parallel_tasks = 4;
        reg.register(w);
    }
    s.refresh().expect("refresh");
    // Every worker busy but w137, which is idle.
    for w in reg.snapshot() {
        if w.worker.info.id.0 != "w137" {
            w.worker.stats.start(1);
        }
    }
    for _ in 0..20 {
        assert_eq!(s.choose(&task_of(1000), &[]).expect("pick").0, "w137");
    }
    // With w137 loaded 2/4 too, the least loaded are the 1/4 ones.
    let w137 = reg.get(&"w137".into()).expect("w137");
    w137.worker.stats.start(1);
    w137.worker.stats.start(1);
    let picked = s.choose(&task_of(1000), &[]).expect("pick");
    assert_ne!(picked.0, "w137");
}

#[tokio::test(start_paused = true)]
async fn cost_aware_in_a_large_pool_takes_the_fastest_free_worker() {
    let (reg, s) = scheduler(Algorithm::CostAware, HashMap::new());
    for i in 0..200 {
        let mut w = worker_info(&format!("w{i}"), Arch::Amd64, &[gcc_amd64()]);
        w.capabilities.max_parallel_tasks = 1;
        reg.register(w);
    }
    s.refresh().expect("refresh");
    // Speeds learned: w{i} compiles the file at 1000 * (i + 1) bytes per
    // second.
    {
        let sh = s.lock();
        let key = CostModel::key(&task_of(1000));
        for i in 0..200u64 {
            let id = WorkerId(format!("w{i}"));
            sh.pool.model.observe(&id, key, 1000 * (i + 1), 1.0);
        }
    }
    assert_eq!(s.choose(&task_of(1000), &[]).expect("pick").0, "w199");
    // w199 busy with a long backlog: the next fastest free worker.
    let w199 = reg.get(&"w199".into()).expect("w199");
    w199.worker.stats.start(10_000_000);
    assert_eq!(s.choose(&task_of(1000), &[]).expect("pick").0, "w198");
    // Excluded workers are skipped.
    assert_eq!(
        s.choose(&task_of(1000), &["w198".into()]).expect("pick").0,
        "w197"
    );
    // A slow worker that is free loses to a fast one with a short backlog:
    // make every worker but w0 and w199 busy for a long time; w199 has a
    // 1000-unit backlog (5 ms + 5 ms) against w0's 1 s run.
    for w in reg.snapshot() {
        let id = w.worker.info.id.0.clone();
        if id != "w0" && id != "w199" {
            w.worker.stats.start(10_000_000);
        }
    }
    w199.worker
        .stats
        .finish(10_000_000, Duration::from_secs(50), None, true);
    w199.worker.stats.start(1000);
    assert_eq!(s.choose(&task_of(1000), &[]).expect("pick").0, "w199");
}

/// Registers `ids` with one slot each and teaches the scheduler their
/// speeds by running one task on each at once.
async fn learned_one_slot_pool(reg: &Registry, s: &Sched, ids: &[&str]) {
    for id in ids {
        let mut w = worker_info(id, Arch::Amd64, &[gcc_amd64()]);
        w.capabilities.max_parallel_tasks = 1;
        reg.register(w);
    }
    let runs = ids.iter().map(|_| s.clone().oneshot(task_of(1000)));
    for r in futures::future::join_all(runs).await {
        r.expect("warm-up task");
    }
}

#[tokio::test(start_paused = true)]
async fn cost_aware_holds_a_task_until_the_fast_worker_frees_a_slot() {
    let (reg, s) = scheduler(
        Algorithm::CostAware,
        HashMap::from([("slow", 100.0), ("fast", 1000.0)]),
    );
    learned_one_slot_pool(&reg, &s, &["slow", "fast"]).await;
    let slow = reg.get(&"slow".into()).expect("slow");
    // The first task takes the fast worker (1 s). The second would take 10 s
    // on the idle slow worker but 1 s + 1 s after it on the fast one: it is
    // held, not sent anywhere, and placed on the fast one when its slot frees.
    let t0 = tokio::time::Instant::now();
    let first = tokio::spawn(s.clone().oneshot(task_of(1000)));
    tokio::time::sleep(Duration::from_millis(10)).await;
    let second = tokio::spawn(s.clone().oneshot(task_of(1000)));
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(s.held(), 1);
    assert_eq!(slow.worker.stats.active(), 0, "the slow worker stays idle");
    let out = first.await.expect("join").expect("first");
    assert_eq!(out.worker_id, Some("fast".into()));
    let out = second.await.expect("join").expect("second");
    assert_eq!(out.worker_id, Some("fast".into()));
    assert_eq!(s.held(), 0);
    let took = t0.elapsed();
    assert!(took < Duration::from_millis(2100), "{took:?}");

    // A held task whose caller gives up leaves the line.
    let first = tokio::spawn(s.clone().oneshot(task_of(1000)));
    tokio::time::sleep(Duration::from_millis(10)).await;
    let dropped =
        tokio::time::timeout(Duration::from_millis(10), s.clone().oneshot(task_of(1000))).await;
    assert!(dropped.is_err(), "held, so it timed out");
    assert_eq!(s.held(), 0);
    first.await.expect("join").expect("first");
}

#[tokio::test(start_paused = true)]
async fn cost_aware_places_the_largest_held_task_first() {
    let (reg, s) = scheduler(Algorithm::CostAware, HashMap::from([("only", 1000.0)]));
    learned_one_slot_pool(&reg, &s, &["only"]).await;
    let busy = tokio::spawn(s.clone().oneshot(task_of(1000)));
    tokio::time::sleep(Duration::from_millis(10)).await;
    let mut small = task_of(100);
    small.source_name = "small.c".into();
    let mut large = task_of(3000);
    large.source_name = "large.c".into();
    let small = tokio::spawn(s.clone().oneshot(small));
    tokio::time::sleep(Duration::from_millis(10)).await;
    let large = tokio::spawn(s.clone().oneshot(large));
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(s.held(), 2);
    busy.await.expect("join").expect("busy");
    // The large one (3 s) was placed first although it came last.
    let t = tokio::time::Instant::now();
    small.await.expect("join").expect("small");
    assert!(
        t.elapsed() >= Duration::from_millis(2900),
        "{:?}",
        t.elapsed()
    );
    large.await.expect("join").expect("large");
}

#[tokio::test(start_paused = true)]
async fn cost_aware_fails_held_tasks_when_their_workers_leave() {
    let (reg, s) = scheduler(Algorithm::CostAware, HashMap::from([("only", 100.0)]));
    learned_one_slot_pool(&reg, &s, &["only"]).await;
    // A long task occupies the only worker; the next one is held.
    let long = tokio::spawn(s.clone().oneshot(task_of(100_000)));
    tokio::time::sleep(Duration::from_millis(10)).await;
    let held = tokio::spawn(s.clone().oneshot(task_of(1000)));
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(s.held(), 1);
    reg.remove(&"only".into(), "left");
    let err = tokio::time::timeout(Duration::from_secs(1), held)
        .await
        .expect("not held forever")
        .expect("join")
        .expect_err("no worker left");
    assert!(
        matches!(GridError::find(err.as_ref()), Some(GridError::NoWorker(_))),
        "{err}"
    );
    assert_eq!(s.held(), 0);
    long.abort();
}

#[tokio::test(start_paused = true)]
async fn cost_aware_sends_held_tasks_elsewhere_when_their_worker_leaves() {
    let (reg, s) = scheduler(
        Algorithm::CostAware,
        HashMap::from([("slow", 100.0), ("fast", 1000.0)]),
    );
    learned_one_slot_pool(&reg, &s, &["slow", "fast"]).await;
    let slow = reg.get(&"slow".into()).expect("slow");
    // The first task runs on the fast worker; the second is held for it.
    let first = tokio::spawn(s.clone().oneshot(task_of(1000)));
    tokio::time::sleep(Duration::from_millis(10)).await;
    let second = tokio::spawn(s.clone().oneshot(task_of(1000)));
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!((s.held(), slow.worker.stats.active()), (1, 0));
    // The fast worker leaves: the held task goes to the slow one at once.
    reg.remove(&"fast".into(), "left");
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!((s.held(), slow.worker.stats.active()), (0, 1));
    let out = second.await.expect("join").expect("second");
    assert_eq!(out.worker_id, Some("slow".into()));
    first.abort();
}

#[tokio::test(start_paused = true)]
async fn cost_aware_never_runs_a_held_task_whose_caller_left() {
    let (logs, _g) = capture_logs();
    let (reg, s) = scheduler(Algorithm::CostAware, HashMap::from([("only", 1000.0)]));
    learned_one_slot_pool(&reg, &s, &["only"]).await;
    let only = reg.get(&"only".into()).expect("only");
    let busy = tokio::spawn(s.clone().oneshot(task_of(1000)));
    tokio::time::sleep(Duration::from_millis(10)).await;
    let mut gone = task_of(1000);
    gone.id = TaskId("caller-went-away".into());
    let held = tokio::spawn(s.clone().oneshot(gone));
    let next = tokio::spawn(s.clone().oneshot(task_of(1000)));
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(s.held(), 2);
    // The client disconnects: its call future is dropped while held.
    held.abort();
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(s.held(), 1);
    busy.await.expect("join").expect("busy");
    // The slot goes to the task behind it, right away.
    let t = tokio::time::Instant::now();
    next.await.expect("join").expect("next");
    assert!(
        t.elapsed() <= Duration::from_millis(1001),
        "{:?}",
        t.elapsed()
    );
    tokio::time::sleep(Duration::from_secs(5)).await;
    // Warm-up, busy, next: the dropped task never ran.
    assert_eq!(only.worker.stats.completed(), 3);
    let text = logs.text();
    assert!(!text.contains("caller-went-away"), "{text}");
}

#[tokio::test(start_paused = true)]
async fn cost_aware_holds_no_more_than_admission_lets_in() {
    use crate::admission::Admission;
    let (reg, s) = scheduler(Algorithm::CostAware, HashMap::from([("only", 1000.0)]));
    learned_one_slot_pool(&reg, &s, &["only"]).await;
    // coordinator.max_concurrent_tasks = 3 over one slot: one runs, two
    // are held, the rest wait in admission's queue (up to 4), then refused.
    let admitted = Admission::new(s.clone(), 3, 4);
    let calls: Vec<_> = (0..7)
        .map(|_| tokio::spawn(admitted.clone().oneshot(task_of(1000))))
        .collect();
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!((admitted.active(), admitted.queued(), s.held()), (3, 4, 2));
    let refused = admitted
        .clone()
        .oneshot(task_of(1000))
        .await
        .expect_err("over the queue");
    assert!(
        matches!(
            GridError::find(refused.as_ref()),
            Some(GridError::Overloaded(_))
        ),
        "{refused}"
    );
    for c in calls {
        c.await
            .expect("join")
            .expect("every admitted task completes");
    }
    assert_eq!((admitted.active(), s.held()), (0, 0));
}

/// After a mass registration (a coordinator restart: every worker comes
/// back at once) the first task must see every worker, not only the part
/// of the registry's changes that tokio's cooperative budget let one poll
/// apply.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_after_a_mass_registration_sees_every_worker() {
    for algorithm in [Algorithm::P2c, Algorithm::LeastLoaded, Algorithm::CostAware] {
        let (reg, mut s) = scheduler(algorithm, HashMap::new());
        let mut other = gcc_amd64();
        other.version = "0.0.0-other".into();
        for i in 0..2_000 {
            reg.register(worker_info(
                &format!("o{i:04}"),
                Arch::Amd64,
                &[other.clone()],
            ));
        }
        // The only worker that can run the task registers last.
        reg.register(worker_info("last", Arch::Amd64, &[gcc_amd64()]));
        let out = run(&mut s, task_of(10))
            .await
            .unwrap_or_else(|e| panic!("{algorithm:?}: {e}"));
        assert_eq!(out.worker_id, Some("last".into()), "{algorithm:?}");
    }
}
