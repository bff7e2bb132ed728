use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tower::ServiceExt;

use super::*;
use crate::testutil::{capture_metrics, metric, task_of};

/// A fake scheduler: the n-th attempt takes `durations[n]` and runs on
/// worker `w{n}`; records each attempt's exclusions and cancellations.
#[derive(Clone)]
struct Fake {
    durations: Arc<Vec<u64>>,
    calls: Arc<AtomicUsize>,
    excluded: Arc<Mutex<Vec<Vec<WorkerId>>>>,
    cancelled: Arc<AtomicUsize>,
}

struct OnDrop(Arc<AtomicUsize>, bool);
impl Drop for OnDrop {
    fn drop(&mut self) {
        if !self.1 {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
}

impl Service<Attempt> for Fake {
    type Response = CompileOutput;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<CompileOutput, BoxError>> + Send>>;
    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }
    fn call(&mut self, a: Attempt) -> Self::Future {
        let n = self.calls.fetch_add(1, Ordering::SeqCst);
        let w = WorkerId(format!("w{n}"));
        if let Some(r) = &a.route {
            r.set(&w);
        }
        self.excluded.lock().expect("lock").push(a.exclude);
        let d = self.durations.get(n).copied().unwrap_or(1000);
        let cancelled = self.cancelled.clone();
        Box::pin(async move {
            let mut guard = OnDrop(cancelled, false);
            tokio::time::sleep(Duration::from_millis(d)).await;
            guard.1 = true;
            Ok(CompileOutput {
                worker_id: Some(w),
                ..Default::default()
            })
        })
    }
}

#[derive(Clone)]
struct Idle(Arc<AtomicBool>);
impl IdleProbe for Idle {
    fn has_idle(&self, _: &CompileTask, _: &[WorkerId]) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

fn setup(durations: Vec<u64>, idle: bool) -> (Hedge<Fake, Idle>, Fake) {
    let fake = Fake {
        durations: Arc::new(durations),
        calls: Arc::default(),
        excluded: Arc::default(),
        cancelled: Arc::default(),
    };
    let cfg = HedgeConfig {
        min_samples: 5,
        min_delay: Duration::from_millis(500),
        ..Default::default()
    };
    let h = Hedge::new(fake.clone(), Idle(Arc::new(AtomicBool::new(idle))), cfg);
    (h, fake)
}

async fn learn(h: &Hedge<Fake, Idle>, n: usize) {
    for _ in 0..n {
        h.clone()
            .oneshot(Attempt::new(task_of(1)))
            .await
            .expect("ok");
    }
}

#[tokio::test(start_paused = true)]
async fn slow_task_is_hedged_on_an_idle_worker_and_the_loser_cancelled() {
    let (snap, _m) = capture_metrics();
    // Five 200 ms tasks teach p90 = 200 ms; hedge after max(600 ms, 500 ms).
    let (h, fake) = setup(vec![200, 200, 200, 200, 200, 10_000, 300], true);
    learn(&h, 5).await;
    let t0 = tokio::time::Instant::now();
    let out = h
        .clone()
        .oneshot(Attempt::new(task_of(1)))
        .await
        .expect("ok");
    assert_eq!(out.worker_id, Some("w6".into()), "the hedge wins");
    assert_eq!(t0.elapsed(), Duration::from_millis(900));
    assert_eq!(
        fake.excluded.lock().expect("lock")[6],
        vec![WorkerId::from("w5")]
    );
    assert_eq!(
        fake.cancelled.load(Ordering::SeqCst),
        1,
        "the slow call was dropped"
    );
    assert_eq!(metric(&snap, "hybridgrid_hedges_total", None), Some(1.0));
}

#[tokio::test(start_paused = true)]
async fn no_hedge_without_an_idle_worker_or_enough_samples() {
    let (h, fake) = setup(vec![200, 200, 200, 200, 200, 5000], false);
    learn(&h, 5).await;
    let out = h
        .clone()
        .oneshot(Attempt::new(task_of(1)))
        .await
        .expect("ok");
    assert_eq!(out.worker_id, Some("w5".into()));
    assert_eq!(fake.calls.load(Ordering::SeqCst), 6);
    // Only 4 samples: never hedge, even with idle workers.
    let (h, fake) = setup(vec![200, 200, 200, 200, 5000], true);
    learn(&h, 4).await;
    h.clone()
        .oneshot(Attempt::new(task_of(1)))
        .await
        .expect("ok");
    assert_eq!(fake.calls.load(Ordering::SeqCst), 5);
}

#[tokio::test(start_paused = true)]
async fn primary_finishing_first_wins() {
    let (h, fake) = setup(vec![200, 200, 200, 200, 200, 1000, 5000], true);
    learn(&h, 5).await;
    let out = h
        .clone()
        .oneshot(Attempt::new(task_of(1)))
        .await
        .expect("ok");
    assert_eq!(out.worker_id, Some("w5".into()));
    assert_eq!(fake.cancelled.load(Ordering::SeqCst), 1);
}
