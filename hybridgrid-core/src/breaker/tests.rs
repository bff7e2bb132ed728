use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use tower::{Service, ServiceExt};

use super::*;
use crate::config::CircuitBreakerConfig;
use crate::task::CompileTask;
use crate::testutil::{capture_logs, capture_metrics, metric, task_of};

const OK: u8 = 0;
const FAULT: u8 = 1;
const COMPILE_ERROR: u8 = 2;
const BAD_TASK: u8 = 3;
const UNCLASSIFIED: u8 = 4;

type Fake = tower::util::BoxCloneService<CompileTask, CompileOutput, BoxError>;

fn fake(mode: Arc<AtomicU8>) -> Fake {
    tower::util::BoxCloneService::new(tower::service_fn(move |_t: CompileTask| {
        let m = mode.load(Ordering::SeqCst);
        async move {
            match m {
                OK => Ok(CompileOutput::default()),
                COMPILE_ERROR => Ok(CompileOutput {
                    exit_code: 1,
                    ..Default::default()
                }),
                FAULT => Err(GridError::WorkerUnavailable {
                    worker: "w1".into(),
                    reason: "connection refused".into(),
                }
                .into()),
                BAD_TASK => Err(GridError::InvalidTask("bad".into()).into()),
                _ => Err("socket closed".into()),
            }
        }
    }))
}

fn breaker() -> (Breaker<Fake>, Arc<AtomicU8>) {
    let mode = Arc::new(AtomicU8::new(OK));
    let cfg = CircuitBreakerConfig::default();
    let layer = BreakerLayer::for_worker("w1".into(), cfg);
    (tower::Layer::layer(&layer, fake(mode.clone())), mode)
}

async fn run(b: &mut Breaker<Fake>) -> Result<CompileOutput, BoxError> {
    b.ready().await?.call(task_of(1)).await
}

async fn run_n(b: &mut Breaker<Fake>, mode: &AtomicU8, m: u8, n: usize) {
    mode.store(m, Ordering::SeqCst);
    for _ in 0..n {
        let _ = run(b).await;
    }
}

#[tokio::test(start_paused = true)]
async fn opens_only_after_threshold_requests_at_the_failure_rate() {
    let (logs, _g) = capture_logs();
    let (snap, _m) = capture_metrics();
    let (mut b, mode) = breaker();
    // 9 failures: fewer than request_threshold (10) requests, stays closed.
    run_n(&mut b, &mode, FAULT, 9).await;
    assert_eq!(b.circuit().state(), CircuitState::Closed);
    // 10th request: 10 failures of 10.
    run_n(&mut b, &mode, FAULT, 1).await;
    assert_eq!(b.circuit().state(), CircuitState::Open);
    assert!(!b.circuit().admits());
    let text = logs.text();
    assert!(text.contains("level=warn"), "{text}");
    assert!(text.contains("msg=\"circuit opened\""), "{text}");
    assert!(text.contains("worker=w1"), "{text}");
    assert!(text.contains("failure_rate=1"), "{text}");
    assert_eq!(
        metric(&snap, "hybridgrid_circuit_state", Some("w1")),
        Some(2.0)
    );
    let err = run(&mut b).await.expect_err("open circuit refuses");
    assert!(err.is::<CircuitOpenError>(), "{err}");
    assert!(err.to_string().contains("circuit breaker open"), "{err}");
}

#[tokio::test(start_paused = true)]
async fn rate_below_threshold_stays_closed_and_window_slides() {
    let (mut b, mode) = breaker();
    // 5 failures in 10: 0.5 < 0.6.
    run_n(&mut b, &mode, OK, 5).await;
    run_n(&mut b, &mode, FAULT, 5).await;
    assert_eq!(b.circuit().state(), CircuitState::Closed);
    // One more failure: the window is the last 10, 6 failures -> 0.6 opens.
    run_n(&mut b, &mode, FAULT, 1).await;
    assert_eq!(b.circuit().state(), CircuitState::Open);
}

#[tokio::test(start_paused = true)]
async fn compile_errors_and_bad_tasks_do_not_count_but_unclassified_errors_do() {
    let (mut b, mode) = breaker();
    run_n(&mut b, &mode, COMPILE_ERROR, 20).await;
    run_n(&mut b, &mode, BAD_TASK, 20).await;
    assert_eq!(b.circuit().state(), CircuitState::Closed);
    run_n(&mut b, &mode, UNCLASSIFIED, 10).await;
    assert_eq!(b.circuit().state(), CircuitState::Open);
}

async fn open(b: &mut Breaker<Fake>, mode: &AtomicU8) {
    run_n(b, mode, FAULT, 10).await;
    assert_eq!(b.circuit().state(), CircuitState::Open);
}

#[tokio::test(start_paused = true)]
async fn half_open_after_timeout_admits_exactly_one_probe_then_closes() {
    let (logs, _g) = capture_logs();
    let (snap, _m) = capture_metrics();
    let (mut b, mode) = breaker();
    open(&mut b, &mode).await;
    tokio::time::advance(Duration::from_secs(29)).await;
    assert!(!b.circuit().admits());
    assert_eq!(b.circuit().state(), CircuitState::Open);
    tokio::time::advance(Duration::from_secs(1)).await;
    assert!(b.circuit().admits());
    // The probe takes the one ticket...
    let mut probe = b.clone();
    probe.ready().await.expect("probe admitted");
    assert_eq!(b.circuit().state(), CircuitState::HalfOpen);
    assert!(
        logs.text().contains("msg=\"circuit half-open\" worker=w1"),
        "{}",
        logs.text()
    );
    assert_eq!(
        metric(&snap, "hybridgrid_circuit_state", Some("w1")),
        Some(1.0)
    );
    // ...so a second caller is refused while it is out.
    let mut other = b.clone();
    assert!(!b.circuit().admits());
    assert!(other.ready().await.is_err());
    mode.store(OK, Ordering::SeqCst);
    probe.call(task_of(1)).await.expect("probe ok");
    assert_eq!(b.circuit().state(), CircuitState::Closed);
    assert!(
        logs.text().contains("msg=\"circuit closed\" worker=w1"),
        "{}",
        logs.text()
    );
    assert_eq!(
        metric(&snap, "hybridgrid_circuit_state", Some("w1")),
        Some(0.0)
    );
    // Closed afresh: 9 failures do not reopen it.
    run_n(&mut b, &mode, FAULT, 9).await;
    assert_eq!(b.circuit().state(), CircuitState::Closed);
}

#[tokio::test(start_paused = true)]
async fn failed_probe_reopens_for_another_timeout() {
    let (mut b, mode) = breaker();
    open(&mut b, &mode).await;
    tokio::time::advance(Duration::from_secs(30)).await;
    let err = run(&mut b).await.expect_err("probe fails");
    assert!(!err.is::<CircuitOpenError>());
    assert_eq!(b.circuit().state(), CircuitState::Open);
    tokio::time::advance(Duration::from_secs(29)).await;
    assert_eq!(b.circuit().state(), CircuitState::Open);
    tokio::time::advance(Duration::from_secs(1)).await;
    assert_eq!(b.circuit().state(), CircuitState::HalfOpen);
}

#[tokio::test(start_paused = true)]
async fn cancelled_or_unclassified_probe_frees_the_probe() {
    let (mut b, mode) = breaker();
    open(&mut b, &mode).await;
    tokio::time::advance(Duration::from_secs(30)).await;
    let mut probe = b.clone();
    probe.ready().await.expect("probe");
    drop(probe.call(task_of(1)));
    assert!(
        b.circuit().admits(),
        "cancelled probe gives the ticket back"
    );
    mode.store(BAD_TASK, Ordering::SeqCst);
    let _ = run(&mut b).await;
    assert_eq!(b.circuit().state(), CircuitState::HalfOpen);
    assert!(b.circuit().admits());
}
