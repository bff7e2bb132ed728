//! The scheduler: a balancer over the discovered workers.
//!
//! Workers arrive as [`Change::Insert`]/[`Change::Remove`] of
//! [`Endpoint`]s (see [`Endpoints`] to build them from the
//! [registry](crate::registry)). For each task the scheduler keeps the
//! workers that have the task's exact compiler and can produce code for its
//! target (an index by compiler and target keeps that cheap), skips those
//! whose circuit is open, and places the task with `scheduler.algorithm`:
//!
//! - `p2c`: two random capable workers, the one with the better weighted
//!   score wins (native arch, cores, RAM, load per slot, latency, LAN);
//! - `least-loaded`: the fewest active tasks per slot;
//! - `cost-aware`: learns each worker's speed (cost units per second, the
//!   cost being the input size) and picks the earliest estimated finish
//!   time, which keeps a build's makespan short on mixed hardware.
//!
//! No capable worker gives [`GridError::NoWorker`] naming the compiler and
//! target; capable workers that are all open give [`GridError::CircuitOpen`].
//! Errors of a worker come back as [`WorkerError`] naming the worker.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! use hybridgrid_core::config::SchedulerConfig;
//! use hybridgrid_core::registry::Registry;
//! use hybridgrid_core::scheduler::{Endpoint, Endpoints, Scheduler};
//! use hybridgrid_core::task::{CompileOutput, CompileTask};
//! use hybridgrid_core::BoxError;
//! use tower::ServiceExt;
//!
//! let registry = Registry::new();
//! let endpoints = Endpoints::new(registry.subscribe(), |w| {
//!     Endpoint::new(w, tower::service_fn(|_t: CompileTask| async {
//!         Ok::<_, BoxError>(CompileOutput::default())
//!     }))
//! });
//! let scheduler = Scheduler::new(endpoints, &SchedulerConfig::default());
//! # let _ = scheduler;
//! # }
//! ```

mod endpoint;
mod error;
mod pool;

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, ready};

use pin_project_lite::pin_project;
use tokio::time::Instant;
use tower::discover::{Change, Discover};
use tower::util::Oneshot;
use tower::{Service, ServiceExt};

pub use self::endpoint::{Attempt, Endpoint, Endpoints, RouteSlot};
pub use self::error::WorkerError;
pub use self::pool::task_cost;
use self::pool::{Pool, PoolSpeed};
use crate::config::SchedulerConfig;
use crate::error::{BoxError, GridError};
use crate::registry::WorkerStats;
use crate::task::{CompileOutput, CompileTask, TaskId};
use crate::worker::WorkerId;

struct Shared<D, S> {
    discover: D,
    pool: Pool<S>,
}

/// The balancer. Cheap to clone: clones share the workers and their load.
pub struct Scheduler<D, S> {
    shared: Arc<Mutex<Shared<D, S>>>,
}

impl<D, S> Clone for Scheduler<D, S> {
    fn clone(&self) -> Self {
        Scheduler {
            shared: self.shared.clone(),
        }
    }
}

impl<D, S> std::fmt::Debug for Scheduler<D, S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scheduler").finish_non_exhaustive()
    }
}

impl<D, S> Scheduler<D, S>
where
    D: Discover<Key = WorkerId, Service = Endpoint<S>> + Unpin,
    D::Error: Into<BoxError>,
    S: Service<CompileTask, Response = CompileOutput, Error = BoxError> + Clone,
{
    /// A scheduler over the workers `discover` yields, configured by `config`.
    pub fn new(discover: D, config: &SchedulerConfig) -> Self {
        Self::with_seed(discover, config, 0x5eed_cafe)
    }

    /// Like [`Scheduler::new`] with a seed for P2C's random choices (the
    /// same seed and inputs give the same placements).
    pub fn with_seed(discover: D, config: &SchedulerConfig, seed: u64) -> Self {
        Scheduler {
            shared: Arc::new(Mutex::new(Shared {
                discover,
                pool: Pool::new(config.algorithm, config.weights.clone(), seed),
            })),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Shared<D, S>> {
        self.shared.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Applies every pending discovery change.
    fn poll_changes(&self, cx: &mut Context<'_>) -> Result<(), BoxError> {
        let mut sh = self.lock();
        loop {
            match Pin::new(&mut sh.discover).poll_discover(cx) {
                Poll::Ready(Some(Ok(Change::Insert(id, ep)))) => sh.pool.insert(id, ep),
                Poll::Ready(Some(Ok(Change::Remove(id)))) => sh.pool.remove(&id),
                Poll::Ready(Some(Err(e))) => return Err(e.into()),
                Poll::Ready(None) | Poll::Pending => return Ok(()),
            }
        }
    }

    /// Applies pending discovery changes without a waker (for callers that
    /// do not go through `poll_ready`).
    pub fn refresh(&self) -> Result<(), BoxError> {
        let waker = futures::task::noop_waker();
        self.poll_changes(&mut Context::from_waker(&waker))
    }

    /// How many workers the scheduler knows.
    pub fn len(&self) -> usize {
        self.lock().pool.len()
    }

    /// True if it knows no worker.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// True if a worker that can run `task`, not in `exclude`, admits calls
    /// and has a free slot (used by hedging).
    pub fn has_idle(&self, task: &CompileTask, exclude: &[WorkerId]) -> bool {
        self.lock().pool.has_idle(task, exclude)
    }

    /// Chooses a worker for `task` and returns its id, without running
    /// anything (for benchmarks and dry runs).
    pub fn choose(&self, task: &CompileTask, exclude: &[WorkerId]) -> Result<WorkerId, GridError> {
        let mut sh = self.lock();
        let i = sh.pool.pick(task, exclude)?;
        Ok(sh.pool.slots[i].id.clone())
    }

    fn dispatch(&self, attempt: Attempt) -> ResponseFuture<S> {
        let Attempt {
            task,
            exclude,
            route,
        } = attempt;
        let mut sh = self.lock();
        let i = match sh.pool.pick(&task, &exclude) {
            Ok(i) => i,
            Err(e) => {
                return ResponseFuture {
                    kind: Kind::Failed { error: Some(e) },
                };
            }
        };
        let slot = &sh.pool.slots[i];
        let cost = task_cost(&task);
        let stats = slot.endpoint.worker.stats.clone();
        stats.start(cost);
        let service = slot.endpoint.service.clone();
        let worker = slot.id.clone();
        let speed = sh.pool.speed.clone();
        drop(sh);
        if let Some(r) = &route {
            r.set(&worker);
        }
        tracing::info!(task_id = %task.id, worker = %worker, compiler = %task.compiler, "task started");
        let task_id = task.id.clone();
        ResponseFuture {
            kind: Kind::Running {
                call: service.oneshot(task),
                guard: Some(InFlight {
                    stats,
                    speed,
                    cost,
                    started: Instant::now(),
                    worker,
                    task_id,
                    done: false,
                }),
            },
        }
    }
}

impl<D, S> Service<Attempt> for Scheduler<D, S>
where
    D: Discover<Key = WorkerId, Service = Endpoint<S>> + Unpin,
    D::Error: Into<BoxError>,
    S: Service<CompileTask, Response = CompileOutput, Error = BoxError> + Clone,
{
    type Response = CompileOutput;
    type Error = BoxError;
    type Future = ResponseFuture<S>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(self.poll_changes(cx))
    }

    fn call(&mut self, attempt: Attempt) -> Self::Future {
        self.dispatch(attempt)
    }
}

impl<D, S> Service<CompileTask> for Scheduler<D, S>
where
    D: Discover<Key = WorkerId, Service = Endpoint<S>> + Unpin,
    D::Error: Into<BoxError>,
    S: Service<CompileTask, Response = CompileOutput, Error = BoxError> + Clone,
{
    type Response = CompileOutput;
    type Error = BoxError;
    type Future = ResponseFuture<S>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(self.poll_changes(cx))
    }

    fn call(&mut self, task: CompileTask) -> Self::Future {
        self.dispatch(Attempt::new(task))
    }
}

/// A task in flight on a worker; counts it out of the worker's load when
/// it ends or is dropped.
struct InFlight {
    stats: Arc<WorkerStats>,
    speed: Arc<PoolSpeed>,
    cost: u64,
    started: Instant,
    worker: WorkerId,
    task_id: TaskId,
    done: bool,
}

impl InFlight {
    fn finish(mut self, res: &Result<CompileOutput, BoxError>) {
        self.done = true;
        let latency = self.started.elapsed();
        let service = match res {
            Ok(out) if !out.timings.compile.is_zero() => Some(out.timings.compile),
            _ => None,
        };
        let ok = res.is_ok();
        self.stats.finish(self.cost, latency, service, ok);
        if ok {
            let secs = service.unwrap_or(latency).as_secs_f64();
            if secs > 0.0 {
                self.speed.observe(self.cost as f64 / secs);
            }
        }
        let success = matches!(res, Ok(o) if o.success());
        tracing::info!(task_id = %self.task_id, worker = %self.worker,
            duration = ?latency, success, "task completed");
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if !self.done {
            self.stats.abandon(self.cost);
        }
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<S: Service<CompileTask>> {
        Running { #[pin] call: Oneshot<S, CompileTask>, guard: Option<InFlight> },
        Failed { error: Option<GridError> },
    }
}

pin_project! {
    /// The future of a scheduled task.
    pub struct ResponseFuture<S: Service<CompileTask>> {
        #[pin]
        kind: Kind<S>,
    }
}

impl<S: Service<CompileTask>> std::fmt::Debug for ResponseFuture<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("scheduler::ResponseFuture")
    }
}

impl<S> Future for ResponseFuture<S>
where
    S: Service<CompileTask, Response = CompileOutput, Error = BoxError>,
{
    type Output = Result<CompileOutput, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Running { call, guard } => {
                let res = ready!(call.poll(cx));
                let Some(g) = guard.take() else {
                    return Poll::Ready(Err("scheduler future polled after completion".into()));
                };
                let worker = g.worker.clone();
                g.finish(&res);
                Poll::Ready(match res {
                    Ok(mut out) => {
                        if out.worker_id.is_none() {
                            out.worker_id = Some(worker);
                        }
                        Ok(out)
                    }
                    Err(source) => Err(Box::new(WorkerError { worker, source })),
                })
            }
            KindProj::Failed { error } => Poll::Ready(Err(match error.take() {
                Some(e) => e.into(),
                None => "scheduler future polled after completion".into(),
            })),
        }
    }
}

#[cfg(test)]
mod tests;
