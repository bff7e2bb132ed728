use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tower::ServiceExt;

use super::*;
use crate::testutil::{capture_metrics, metric, metrics_of};

/// Calls block until released.
fn gate(release: Arc<Notify>) -> tower::util::BoxCloneService<u32, u32, BoxError> {
    tower::util::BoxCloneService::new(tower::service_fn(move |x: u32| {
        let r = release.clone();
        async move {
            r.notified().await;
            Ok::<_, BoxError>(x)
        }
    }))
}

#[tokio::test(start_paused = true)]
async fn bounds_in_flight_and_queue_then_refuses() {
    let (snap, _m) = capture_metrics();
    let release = Arc::new(Notify::new());
    let svc = Admission::new(gate(release.clone()), 2, 1);
    let mut running = Vec::new();
    for i in 0..3 {
        running.push(tokio::spawn(svc.clone().oneshot(i)));
    }
    tokio::time::sleep(Duration::from_millis(1)).await;
    assert_eq!((svc.active(), svc.queued()), (2, 1));
    // A snapshot drains the recorder: read both gauges from one.
    let all = metrics_of(&snap);
    assert_eq!(all.get("hybridgrid_tasks_active"), Some(&2.0), "{all:?}");
    assert_eq!(all.get("hybridgrid_tasks_queued"), Some(&1.0), "{all:?}");
    let e = svc.clone().oneshot(9).await.expect_err("refused");
    assert!(matches!(
        GridError::find(e.as_ref()),
        Some(GridError::Overloaded(_))
    ));
    let text = e.to_string();
    assert!(text.contains("2 concurrent tasks"), "{text}");
    assert!(text.contains("compile locally"), "{text}");
    // Finishing one admits the queued one.
    release.notify_one();
    tokio::time::sleep(Duration::from_millis(1)).await;
    assert_eq!((svc.active(), svc.queued()), (2, 0));
    release.notify_one();
    release.notify_one();
    for r in running {
        r.await.expect("join").expect("ok");
    }
    assert_eq!((svc.active(), svc.queued()), (0, 0));
    assert_eq!(metric(&snap, "hybridgrid_tasks_active", None), Some(0.0));
}

#[tokio::test(start_paused = true)]
async fn cancelled_waiter_leaves_the_queue() {
    let release = Arc::new(Notify::new());
    let svc = Admission::new(gate(release.clone()), 1, 1);
    let first = tokio::spawn(svc.clone().oneshot(1));
    tokio::time::sleep(Duration::from_millis(1)).await;
    let waiter = tokio::spawn(svc.clone().oneshot(2));
    tokio::time::sleep(Duration::from_millis(1)).await;
    assert_eq!(svc.queued(), 1);
    waiter.abort();
    let _ = waiter.await;
    assert_eq!(svc.queued(), 0);
    release.notify_one();
    first.await.expect("join").expect("ok");
}
