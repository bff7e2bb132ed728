//! What the scheduler knows of one worker, and the discovery adapter that
//! turns registry events into endpoints.

use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use futures::Stream;
use tower::discover::Change;

use crate::breaker::{Breaker, CircuitHandle};
use crate::config::CircuitBreakerConfig;
use crate::registry::RegisteredWorker;
use crate::task::CompileTask;
use crate::worker::WorkerId;

/// A worker the scheduler can send tasks to: its registry entry, its
/// circuit (if its service is guarded by a [`Breaker`]) and its service.
#[derive(Clone, Debug)]
pub struct Endpoint<S> {
    /// Description and live stats.
    pub worker: RegisteredWorker,
    /// The circuit the scheduler consults to route around the worker.
    pub circuit: Option<CircuitHandle>,
    /// The service that runs tasks on the worker.
    pub service: S,
}

impl<S> Endpoint<S> {
    /// An endpoint without a circuit breaker.
    pub fn new(worker: RegisteredWorker, service: S) -> Self {
        Endpoint {
            worker,
            circuit: None,
            service,
        }
    }

    /// An endpoint whose service is guarded by a fresh circuit breaker.
    pub fn with_breaker(
        worker: RegisteredWorker,
        service: S,
        config: CircuitBreakerConfig,
    ) -> Endpoint<Breaker<S>> {
        let circuit = CircuitHandle::new(worker.info.id.clone(), config);
        Endpoint {
            worker,
            circuit: Some(circuit.clone()),
            service: Breaker::new(service, circuit),
        }
    }
}

pin_project_lite::pin_project! {
    /// Maps a stream of registry changes to endpoint changes with a
    /// function that makes each worker's service. It is a
    /// [`tower::discover::Discover`] the [`Scheduler`](super::Scheduler) consumes.
    #[derive(Debug)]
    pub struct Endpoints<St, F> {
        #[pin]
        changes: St,
        make: F,
    }
}

impl<St, F> Endpoints<St, F> {
    /// Makes an endpoint for every worker `changes` inserts, with `make`.
    pub fn new(changes: St, make: F) -> Self {
        Endpoints { changes, make }
    }
}

impl<St, F, S, E> Stream for Endpoints<St, F>
where
    St: Stream<Item = Result<Change<WorkerId, RegisteredWorker>, E>>,
    F: FnMut(RegisteredWorker) -> Endpoint<S>,
{
    type Item = Result<Change<WorkerId, Endpoint<S>>, E>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.project();
        this.changes.poll_next(cx).map(|c| {
            c.map(|r| {
                r.map(|change| match change {
                    Change::Insert(k, w) => Change::Insert(k, (this.make)(w)),
                    Change::Remove(k) => Change::Remove(k),
                })
            })
        })
    }
}

/// Where the scheduler reports the worker it chose for an [`Attempt`].
#[derive(Clone, Debug, Default)]
pub struct RouteSlot(Arc<OnceLock<WorkerId>>);

impl RouteSlot {
    /// An empty slot.
    pub fn new() -> Self {
        Self::default()
    }

    /// The worker chosen, once the scheduler chose one.
    pub fn get(&self) -> Option<&WorkerId> {
        self.0.get()
    }

    pub(crate) fn set(&self, w: &WorkerId) {
        let _ = self.0.set(w.clone());
    }
}

/// One attempt at a task: the task, the workers not to use (already tried
/// or already running it), and optionally where to report the choice.
#[derive(Clone, Debug)]
pub struct Attempt {
    /// The task.
    pub task: CompileTask,
    /// Workers to avoid.
    pub exclude: Vec<WorkerId>,
    /// Filled with the chosen worker when the scheduler chooses.
    pub route: Option<RouteSlot>,
}

impl Attempt {
    /// A first attempt: no worker excluded.
    pub fn new(task: CompileTask) -> Self {
        Attempt {
            task,
            exclude: Vec::new(),
            route: None,
        }
    }
}

impl From<CompileTask> for Attempt {
    fn from(task: CompileTask) -> Self {
        Attempt::new(task)
    }
}
