//! Admission control: at most `coordinator.max_concurrent_tasks` tasks in
//! flight, at most `coordinator.max_queued_tasks` waiting for a place;
//! beyond that a task is refused at once with [`GridError::Overloaded`] so
//! the client compiles it locally instead of waiting.
//!
//! Sets the gauges `hybridgrid_tasks_active` and `hybridgrid_tasks_queued`.

mod layer;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};

use tokio::sync::Semaphore;
use tower::{Service, ServiceExt};

pub use self::layer::AdmissionLayer;
use crate::config::CoordinatorConfig;
use crate::error::{BoxError, GridError};

#[derive(Debug)]
struct LimitInner {
    permits: Arc<Semaphore>,
    max_concurrent: usize,
    max_queued: usize,
    queued: AtomicUsize,
}

#[derive(Clone, Debug)]
struct Limit(Arc<LimitInner>);

impl Limit {
    fn active(&self) -> usize {
        self.0.max_concurrent - self.0.permits.available_permits()
    }

    fn queued(&self) -> usize {
        self.0.queued.load(Ordering::Relaxed)
    }

    fn new(max_concurrent: usize, max_queued: usize) -> Self {
        let max_concurrent = max_concurrent.max(1);
        Limit(Arc::new(LimitInner {
            permits: Arc::new(Semaphore::new(max_concurrent)),
            max_concurrent,
            max_queued,
            queued: AtomicUsize::new(0),
        }))
    }

    fn publish(&self) {
        let l = &self.0;
        let active = l.max_concurrent - l.permits.available_permits();
        metrics::gauge!("hybridgrid_tasks_active").set(active as f64);
        metrics::gauge!("hybridgrid_tasks_queued").set(l.queued.load(Ordering::Relaxed) as f64);
    }
}

/// Decrements the queue count when a waiting task leaves the queue (or is
/// cancelled while waiting).
struct Queued(Limit);

impl Drop for Queued {
    fn drop(&mut self) {
        self.0.0.queued.fetch_sub(1, Ordering::Relaxed);
        self.0.publish();
    }
}

/// Reads the counts of an [`Admission`] (see [`Admission::counts`]).
#[derive(Clone)]
pub struct AdmissionCounts(Limit);

impl AdmissionCounts {
    /// Tasks in flight now.
    pub fn active(&self) -> usize {
        self.0.active()
    }

    /// Tasks waiting now.
    pub fn queued(&self) -> usize {
        self.0.queued()
    }
}

impl std::fmt::Debug for AdmissionCounts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdmissionCounts")
            .field("active", &self.active())
            .field("queued", &self.queued())
            .finish()
    }
}

/// Bounds the tasks in flight and the tasks waiting.
#[derive(Clone, Debug)]
pub struct Admission<S> {
    inner: S,
    limit: Limit,
}

impl<S> Admission<S> {
    /// Limits `inner` to `max_concurrent` tasks in flight and `max_queued`
    /// waiting.
    pub fn new(inner: S, max_concurrent: usize, max_queued: usize) -> Self {
        Admission {
            inner,
            limit: Limit::new(max_concurrent, max_queued),
        }
    }

    /// Limits `inner` per the coordinator settings.
    pub fn from_config(inner: S, config: &CoordinatorConfig) -> Self {
        Self::new(inner, config.max_concurrent_tasks, config.max_queued_tasks)
    }

    /// Tasks in flight now.
    pub fn active(&self) -> usize {
        self.limit.active()
    }

    /// Tasks waiting now.
    pub fn queued(&self) -> usize {
        self.limit.queued()
    }

    /// A handle that reads this layer's counts (shared with its clones)
    /// after the service has been boxed away.
    pub fn counts(&self) -> AdmissionCounts {
        AdmissionCounts(self.limit.clone())
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

/// The future of an [`Admission`] call.
pub type ResponseFuture<T> = Pin<Box<dyn Future<Output = Result<T, BoxError>> + Send>>;

impl<S, R> Service<R> for Admission<S>
where
    S: Service<R, Error = BoxError> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Response: Send + 'static,
    R: Send + 'static,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Response>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        // Admission decides per call (refuse at once, or queue).
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: R) -> Self::Future {
        let limit = self.limit.clone();
        let inner = self.inner.clone();
        let now = limit.0.permits.clone().try_acquire_owned().ok();
        let queued = match now {
            Some(_) => None,
            None => {
                let l = &limit.0;
                if l.queued.fetch_add(1, Ordering::Relaxed) >= l.max_queued {
                    l.queued.fetch_sub(1, Ordering::Relaxed);
                    let err = GridError::Overloaded(format!(
                        "coordinator is at its limit of {} concurrent tasks with {} queued; \
                         the client will compile locally",
                        l.max_concurrent, l.max_queued
                    ));
                    return Box::pin(async move { Err(err.into()) });
                }
                Some(Queued(limit.clone()))
            }
        };
        limit.publish();
        Box::pin(async move {
            let permit = match now {
                Some(p) => p,
                None => {
                    let p = limit
                        .0
                        .permits
                        .clone()
                        .acquire_owned()
                        .await
                        .map_err(|_| GridError::Internal("admission closed".into()))?;
                    drop(queued);
                    p
                }
            };
            limit.publish();
            let res = inner.oneshot(req).await;
            drop(permit);
            limit.publish();
            res
        })
    }
}

#[cfg(test)]
mod tests;
