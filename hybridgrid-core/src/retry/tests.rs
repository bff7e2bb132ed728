use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;
use tower::{Service, ServiceExt};

use super::*;
use crate::testutil::{capture_metrics, metric, task_of};
use crate::worker::WorkerId;

type Seen = Arc<Mutex<Vec<(Vec<WorkerId>, Instant)>>>;

/// A fake scheduler: answers attempts from a script of results, records
/// the exclusions and times it saw.
#[derive(Clone)]
struct Script {
    results: Arc<Mutex<Vec<Result<&'static str, GridError>>>>,
    seen: Seen,
}

impl Script {
    fn new(mut results: Vec<Result<&'static str, GridError>>) -> Self {
        results.reverse();
        Script {
            results: Arc::new(Mutex::new(results)),
            seen: Arc::default(),
        }
    }
    fn seen(&self) -> Vec<(Vec<WorkerId>, Instant)> {
        self.seen.lock().expect("lock").clone()
    }
}

impl Service<Attempt> for Script {
    type Response = CompileOutput;
    type Error = BoxError;
    type Future = futures::future::Ready<Result<CompileOutput, BoxError>>;
    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }
    fn call(&mut self, a: Attempt) -> Self::Future {
        self.seen
            .lock()
            .expect("lock")
            .push((a.exclude.clone(), Instant::now()));
        let n = self.seen.lock().expect("lock").len();
        let worker = WorkerId(format!("w{n}"));
        let r = self
            .results
            .lock()
            .expect("lock")
            .pop()
            .unwrap_or(Ok("end"));
        futures::future::ready(match r {
            Ok(_) => Ok(CompileOutput {
                worker_id: Some(worker),
                ..Default::default()
            }),
            // Errors from the scheduler itself name no worker.
            Err(e @ (GridError::NoWorker(_) | GridError::CircuitOpen)) => Err(e.into()),
            Err(e) => Err(Box::new(WorkerError {
                worker,
                source: e.into(),
            })),
        })
    }
}

fn unreachable() -> GridError {
    GridError::WorkerUnavailable {
        worker: "w".into(),
        reason: "connection refused".into(),
    }
}

async fn call(s: &Script) -> Result<CompileOutput, BoxError> {
    Retry::new(s.clone(), RetryConfig::default())
        .oneshot(task_of(1))
        .await
}

#[tokio::test(start_paused = true)]
async fn retries_retryable_errors_on_other_workers_with_backoff() {
    let (snap, _m) = capture_metrics();
    let s = Script::new(vec![
        Err(unreachable()),
        Err(GridError::DeadlineExceeded(Duration::from_secs(1))),
        Err(GridError::Internal("oops".into())),
        Ok("done"),
    ]);
    let t0 = Instant::now();
    let out = call(&s).await.expect("fourth attempt succeeds");
    assert_eq!(out.worker_id, Some("w4".into()));
    let seen = s.seen();
    assert_eq!(seen.len(), 4);
    assert_eq!(seen[0].0, Vec::<WorkerId>::new());
    assert_eq!(seen[3].0, vec!["w1".into(), "w2".into(), "w3".into()]);
    let gaps: Vec<Duration> = seen.iter().map(|(_, t)| *t - t0).collect();
    assert_eq!(
        gaps,
        [0, 100, 300, 700].map(Duration::from_millis).to_vec(),
        "100ms, then x2 each retry"
    );
    assert_eq!(metric(&snap, "hybridgrid_retries_total", None), Some(3.0));
}

#[tokio::test(start_paused = true)]
async fn gives_up_after_max_retries() {
    let s = Script::new(vec![Err(unreachable()); 10]);
    let e = call(&s).await.expect_err("fails");
    assert!(e.to_string().contains("connection refused"), "{e}");
    assert_eq!(s.seen().len(), 4, "one attempt and max_retries=3 retries");
}

#[tokio::test(start_paused = true)]
async fn backoff_is_capped_at_max_interval() {
    let s = Script::new(vec![Err(unreachable()); 10]);
    let cfg = RetryConfig {
        max_retries: 4,
        initial_interval: Duration::from_secs(2),
        max_interval: Duration::from_secs(5),
        multiplier: 3.0,
    };
    let t0 = Instant::now();
    let _ = Retry::new(s.clone(), cfg).oneshot(task_of(1)).await;
    let gaps: Vec<u64> = s.seen().iter().map(|(_, t)| (*t - t0).as_secs()).collect();
    assert_eq!(gaps, vec![0, 2, 7, 12, 17]);
}

#[tokio::test(start_paused = true)]
async fn does_not_retry_non_retryable_errors() {
    let s = Script::new(vec![Err(GridError::InvalidTask("bad".into()))]);
    let e = call(&s).await.expect_err("fails");
    assert!(e.to_string().contains("invalid task"), "{e}");
    assert_eq!(s.seen().len(), 1);
    let s = Script::new(vec![Err(GridError::CircuitOpen)]);
    assert!(call(&s).await.is_err());
    assert_eq!(s.seen().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn no_other_worker_returns_the_worker_error() {
    let s = Script::new(vec![
        Err(unreachable()),
        Err(GridError::NoWorker("all tried".into())),
    ]);
    let e = call(&s).await.expect_err("fails");
    assert!(e.to_string().contains("connection refused"), "{e}");
    assert_eq!(s.seen().len(), 2);
}

#[test]
fn classification() {
    assert!(is_retryable(&unreachable()));
    assert!(is_retryable(&crate::breaker::CircuitOpenError {
        worker: "w".into()
    }));
    assert!(!is_retryable(&GridError::Overloaded("x".into())));
    let plain: BoxError = "unclassified".into();
    assert!(!is_retryable(plain.as_ref()));
}
