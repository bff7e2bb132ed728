//! A task in flight on a worker (counted in its load until it ends or is
//! dropped, when it rings the bell that wakes held tasks), and the future a
//! caller of the scheduler awaits.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker, ready};
use std::time::Duration;

use pin_project_lite::pin_project;
use tokio::time::Instant;
use tower::discover::Discover;
use tower::util::Oneshot;
use tower::{Service, ServiceExt};

use crate::error::{BoxError, GridError};
use crate::registry::WorkerStats;
use crate::task::{CompileOutput, CompileTask, TaskId};
use crate::worker::WorkerId;

use super::model::CostModel;
use super::pool::{Pool, Running};
use super::*;

/// Rung when a cost-aware slot frees: wakes the held task that places the
/// held tasks next.
#[derive(Debug, Default)]
pub(super) struct Bell {
    pub(super) waker: Mutex<Option<Waker>>,
    rings: AtomicU64,
}

impl Bell {
    fn lock(&self) -> MutexGuard<'_, Option<Waker>> {
        self.waker.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn ring(&self) {
        self.rings.fetch_add(1, Ordering::SeqCst);
        let w = self.lock().take();
        if let Some(w) = w {
            w.wake();
        }
    }

    pub(super) fn rings(&self) -> u64 {
        self.rings.load(Ordering::SeqCst)
    }

    pub(super) fn arm(&self, waker: Option<Waker>) {
        *self.lock() = waker;
    }
}

/// Counts a task into worker `i`'s load and makes what runs it.
pub(super) fn start<S: Clone>(
    pool: &Pool<S>,
    i: usize,
    attempt: &Attempt,
    bell: Option<&Arc<Bell>>,
) -> (S, InFlight) {
    let slot = &pool.slots[i];
    let task = &attempt.task;
    let cost = task_cost(task);
    let stats = slot.endpoint.worker.stats.clone();
    stats.start(cost);
    let started = Instant::now();
    let freed = bell.map(|b| {
        let end = started + Duration::from_secs_f64(pool.estimate(i, task).min(1e9));
        let file = CostModel::key(task);
        Freed {
            running: slot.running.clone(),
            token: slot.running.add(end),
            bell: b.clone(),
            model: pool.model.clone(),
            file,
            compile: pool.model.begin(file, cost, slot.speed.clone(), started),
        }
    });
    let worker = slot.id.clone();
    if let Some(r) = &attempt.route {
        r.set(&worker);
    }
    tracing::info!(task_id = %task.id, worker = %worker, compiler = %task.compiler, "task started");
    (
        slot.endpoint.service.clone(),
        InFlight {
            stats,
            cost,
            started,
            worker,
            task_id: task.id.clone(),
            freed,
            done: false,
        },
    )
}

/// A task in flight on a worker; counts it out of the worker's load when
/// it ends or is dropped.
pub(super) struct InFlight {
    stats: Arc<WorkerStats>,
    cost: u64,
    started: Instant,
    worker: WorkerId,
    task_id: TaskId,
    /// Cost-aware bookkeeping.
    freed: Option<Freed>,
    done: bool,
}

/// What a cost-aware task updates when it ends.
struct Freed {
    /// Where its estimated end is kept, and its token there.
    running: Arc<Running>,
    token: u64,
    /// Rung when its slot frees.
    bell: Arc<Bell>,
    /// The learned model, and the task's file's key.
    model: Arc<CostModel>,
    file: u64,
    /// Its token in the model's compiles in flight.
    compile: u64,
}

impl InFlight {
    fn slot_freed(&mut self) {
        if let Some(f) = self.freed.take() {
            f.running.remove(f.token);
            f.model.end(f.file, f.compile);
            f.bell.ring();
        }
    }
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
        if let (true, Some(f)) = (ok, &self.freed) {
            let secs = service.unwrap_or(latency).as_secs_f64();
            f.model.observe(&self.worker, f.file, self.cost, secs);
        }
        self.slot_freed();
        let success = matches!(res, Ok(o) if o.success());
        tracing::info!(task_id = %self.task_id, worker = %self.worker,
            duration = ?latency, success, "task completed");
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if !self.done {
            self.stats.abandon(self.cost);
            self.slot_freed();
        }
    }
}

/// A held task's place in the scheduler's line; leaving it (the future
/// dropped) gives up the place, and a slot already counted for it.
pub(super) struct Ticket<D, S> {
    pub(super) sched: Scheduler<D, S>,
    pub(super) seq: u64,
}

impl<D, S> Drop for Ticket<D, S> {
    fn drop(&mut self) {
        let mut sh = self.sched.lock();
        if let Some(e) = sh.unhold(self.seq) {
            // A slot placed for it and not taken is freed by the guard's
            // drop (which rings the bell); either way the next held task
            // looks again.
            drop(e);
            let next = sh.first_held_waker();
            drop(sh);
            if let Some(w) = next {
                w.wake();
            }
        }
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<D, S: Service<CompileTask>> {
        Running { #[pin] call: Oneshot<S, CompileTask>, guard: Option<InFlight> },
        Held { ticket: Option<Ticket<D, S>>, timer: Option<Pin<Box<tokio::time::Sleep>>> },
        Failed { error: Option<GridError> },
    }
}

pin_project! {
    /// The future of a scheduled task.
    pub struct ResponseFuture<D, S: Service<CompileTask>> {
        #[pin]
        kind: Kind<D, S>,
    }
}

impl<D, S: Service<CompileTask>> std::fmt::Debug for ResponseFuture<D, S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("scheduler::ResponseFuture")
    }
}

impl<D, S: Service<CompileTask>> ResponseFuture<D, S> {
    /// Waiting in line for a slot, with its ticket.
    pub(super) fn held(ticket: Ticket<D, S>) -> Self {
        ResponseFuture {
            kind: Kind::Held {
                ticket: Some(ticket),
                timer: None,
            },
        }
    }

    pub(super) fn failed(e: GridError) -> Self {
        ResponseFuture {
            kind: Kind::Failed { error: Some(e) },
        }
    }

    pub(super) fn running(service: S, task: CompileTask, guard: InFlight) -> Self {
        ResponseFuture {
            kind: Kind::Running {
                call: service.oneshot(task),
                guard: Some(guard),
            },
        }
    }

    pub(super) fn placed(p: Result<(S, InFlight), GridError>, attempt: Option<Attempt>) -> Self {
        match (p, attempt) {
            (Ok((service, guard)), Some(a)) => Self::running(service, a.task, guard),
            (Err(e), _) => Self::failed(e),
            (Ok(_), None) => Self::failed(GridError::Internal("scheduler lost a held task".into())),
        }
    }
}

impl<D, S> Future for ResponseFuture<D, S>
where
    D: Discover<Key = WorkerId, Service = Endpoint<S>> + Unpin,
    D::Error: Into<BoxError>,
    S: Service<CompileTask, Response = CompileOutput, Error = BoxError> + Clone,
{
    type Output = Result<CompileOutput, BoxError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        loop {
            let mut this = self.as_mut().project();
            let next = match this.kind.as_mut().project() {
                KindProj::Running { call, guard } => {
                    let res = ready!(call.poll(cx));
                    let Some(g) = guard.take() else {
                        return Poll::Ready(Err("scheduler future polled after completion".into()));
                    };
                    let worker = g.worker.clone();
                    g.finish(&res);
                    return Poll::Ready(match res {
                        Ok(mut out) => {
                            if out.worker_id.is_none() {
                                out.worker_id = Some(worker);
                            }
                            Ok(out)
                        }
                        Err(source) => Err(Box::new(WorkerError { worker, source })),
                    });
                }
                KindProj::Failed { error } => {
                    return Poll::Ready(Err(match error.take() {
                        Some(e) => e.into(),
                        None => "scheduler future polled after completion".into(),
                    }));
                }
                KindProj::Held { ticket, timer } => {
                    let Some(t) = ticket.as_ref() else {
                        return Poll::Ready(Err("scheduler future polled after completion".into()));
                    };
                    let sched = t.sched.clone();
                    let seq = t.seq;
                    let mut sh = sched.lock();
                    if let Err(e) = sh.poll_changes(cx, &sched.bell) {
                        drop(sh);
                        return Poll::Ready(Err(e));
                    }
                    let placed = match sh.held_mut(seq) {
                        None => Some(Err(GridError::Internal(
                            "scheduler lost a held task".into(),
                        ))),
                        Some(e) => {
                            e.waker = Some(cx.waker().clone());
                            e.placed.take()
                        }
                    };
                    let placed = match placed {
                        Some(p) => Some(p),
                        None => {
                            sh.assign(&sched.bell);
                            sh.held_mut(seq).and_then(|e| e.placed.take())
                        }
                    };
                    match placed {
                        Some(p) => {
                            let attempt = sh.unhold(seq).map(|e| e.attempt);
                            // Declined tasks need someone to look again.
                            let next = sh
                                .recheck_at
                                .is_some()
                                .then(|| sh.first_held_waker())
                                .flatten();
                            drop(sh);
                            if let Some(w) = next {
                                w.wake();
                            }
                            ticket.take();
                            ResponseFuture::placed(p, attempt).kind
                        }
                        None => {
                            let at = sh.recheck_at;
                            drop(sh);
                            match at {
                                Some(at) => {
                                    if timer.as_ref().is_none_or(|s| s.deadline() != at) {
                                        *timer = Some(Box::pin(tokio::time::sleep_until(at)));
                                    }
                                    if let Some(s) = timer.as_mut()
                                        && s.as_mut().poll(cx).is_ready()
                                    {
                                        *timer = None;
                                        cx.waker().wake_by_ref();
                                    }
                                }
                                None => *timer = None,
                            }
                            return Poll::Pending;
                        }
                    }
                }
            };
            this.kind.set(next);
        }
    }
}
