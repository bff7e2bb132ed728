//! Hedging: a task that runs much longer than usual is started again on an
//! idle worker, and the first result wins.
//!
//! The hedge learns the p90 duration of successful tasks per compiler. Once
//! it has `min_samples` of them, a task still running after
//! `max(p90 * p90_multiplier, min_delay)` is started on a second worker,
//! if one that can run it (other than the first) is idle. The first
//! successful result is returned and the other call is dropped, which
//! cancels it. If one fails, the other is awaited.
//!
//! `Hedge` wraps a `Service<Attempt>` (the [scheduler](crate::scheduler))
//! and is one; it asks an [`IdleProbe`] (the scheduler) whether a second
//! worker is idle.

mod stats;

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::time::Instant;
use tower::discover::Discover;
use tower::{Service, ServiceExt};

pub use self::stats::Latencies;
use crate::config::HedgeConfig;
use crate::error::BoxError;
use crate::scheduler::{Attempt, Endpoint, RouteSlot, Scheduler};
use crate::task::{CompileOutput, CompileTask};
use crate::worker::WorkerId;

/// Tells whether a worker other than `exclude` could take `task` now.
pub trait IdleProbe {
    /// True if an idle worker able to run `task`, not in `exclude`, exists.
    fn has_idle(&self, task: &CompileTask, exclude: &[WorkerId]) -> bool;
}

impl<D, S> IdleProbe for Scheduler<D, S>
where
    D: Discover<Key = WorkerId, Service = Endpoint<S>> + Unpin,
    D::Error: Into<BoxError>,
    S: Service<CompileTask, Response = CompileOutput, Error = BoxError> + Clone,
{
    fn has_idle(&self, task: &CompileTask, exclude: &[WorkerId]) -> bool {
        Scheduler::has_idle(self, task, exclude)
    }
}

/// Hedges slow tasks on a second worker.
#[derive(Clone, Debug)]
pub struct Hedge<S, P> {
    inner: S,
    probe: P,
    config: HedgeConfig,
    latencies: Latencies,
}

impl<S, P> Hedge<S, P> {
    /// Hedges calls to `inner`, asking `probe` for idle workers.
    pub fn new(inner: S, probe: P, config: HedgeConfig) -> Self {
        Hedge {
            inner,
            probe,
            config,
            latencies: Latencies::default(),
        }
    }

    /// The durations learned so far.
    pub fn latencies(&self) -> &Latencies {
        &self.latencies
    }

    fn delay(&self, task: &CompileTask) -> Option<std::time::Duration> {
        if !self.config.enabled {
            return None;
        }
        let (p90, n) = self.latencies.p90(&task.compiler)?;
        (n >= self.config.min_samples as usize).then(|| {
            p90.mul_f64(self.config.p90_multiplier)
                .max(self.config.min_delay)
        })
    }
}

/// The future of a [`Hedge`] call.
pub type ResponseFuture = Pin<Box<dyn Future<Output = Result<CompileOutput, BoxError>> + Send>>;

impl<S, P> Service<Attempt> for Hedge<S, P>
where
    S: Service<Attempt, Response = CompileOutput, Error = BoxError> + Clone + Send + 'static,
    S::Future: Send + 'static,
    P: IdleProbe + Clone + Send + 'static,
{
    type Response = CompileOutput;
    type Error = BoxError;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut attempt: Attempt) -> ResponseFuture {
        let started = Instant::now();
        let route = attempt.route.clone().unwrap_or_default();
        attempt.route = Some(route.clone());
        let task = attempt.task.clone();
        let exclude = attempt.exclude.clone();
        let delay = self.delay(&task);
        let primary = self.inner.call(attempt);
        let inner = self.inner.clone();
        let probe = self.probe.clone();
        let latencies = self.latencies.clone();
        Box::pin(async move {
            let mut primary = std::pin::pin!(primary);
            let res = match delay {
                None => primary.await,
                Some(d) => {
                    tokio::select! {
                        r = &mut primary => r,
                        _ = tokio::time::sleep(d) => {
                            hedge(primary, inner, probe, task.clone(), exclude, &route).await
                        }
                    }
                }
            };
            if res.is_ok() {
                latencies.record(&task.compiler, started.elapsed());
            }
            res
        })
    }
}

async fn hedge<F, S, P>(
    mut primary: Pin<&mut F>,
    inner: S,
    probe: P,
    task: CompileTask,
    mut exclude: Vec<WorkerId>,
    route: &RouteSlot,
) -> Result<CompileOutput, BoxError>
where
    F: Future<Output = Result<CompileOutput, BoxError>>,
    S: Service<Attempt, Response = CompileOutput, Error = BoxError>,
    P: IdleProbe,
{
    exclude.extend(route.get().cloned());
    if !probe.has_idle(&task, &exclude) {
        return primary.await;
    }
    tracing::info!(task_id = %task.id, worker = ?route.get().map(|w| &w.0),
        "task is slow, hedging on a second worker");
    metrics::counter!("hybridgrid_hedges_total").increment(1);
    let second = inner.oneshot(Attempt {
        task,
        exclude,
        route: None,
    });
    let mut second = std::pin::pin!(second);
    tokio::select! {
        r = &mut primary => match r {
            Ok(o) => Ok(o),
            Err(e) => second.await.map_err(|_| e),
        },
        r = &mut second => match r {
            Ok(o) => Ok(o),
            Err(_) => primary.await,
        },
    }
}

#[cfg(test)]
mod tests;
