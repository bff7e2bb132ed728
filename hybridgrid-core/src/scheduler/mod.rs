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
//! - `cost-aware`: learns from completed compiles each worker's speed and
//!   each source file's cost per input byte (see `model.rs`: a joint
//!   model, so a slow file does not make its worker look slow), and picks
//!   the earliest estimated finish time, which keeps a build's makespan
//!   short on mixed hardware. It binds late: when that worker is busy (no
//!   slot free, or a busy fast worker beats an idle slow one) the task is
//!   held in its call future and placed when a slot frees, the largest
//!   estimated cost first (re-ordered as estimates change; a compile of
//!   the same file running longer than expected raises them; a task's
//!   priority also grows while it waits, which bounds small tasks' wait). A free
//!   slower worker is still taken when the task would finish there before
//!   the work in flight is expected to end (it does not lengthen the
//!   build, and keeps the fast worker for a later task). Held tasks are
//!   bounded by the callers' own concurrency (admission upstream).
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
mod model;
mod pool;

use std::cmp::Reverse;
use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker, ready};
use std::time::Duration;

use pin_project_lite::pin_project;
use tokio::time::Instant;
use tower::discover::{Change, Discover};
use tower::util::Oneshot;
use tower::{Service, ServiceExt};

pub use self::endpoint::{Attempt, Endpoint, Endpoints, RouteSlot};
pub use self::error::WorkerError;
use self::model::CostModel;
pub use self::pool::task_cost;
use self::pool::{Placement, Pool, Running};
use crate::config::{Algorithm, SchedulerConfig};
use crate::error::{BoxError, GridError};
use crate::registry::WorkerStats;
use crate::task::{CompileOutput, CompileTask, CompilerIdentity, TaskId};
use crate::worker::{Arch, WorkerId};

/// A held task's place in line: the largest estimated cost (aged, see
/// [`AGING`]) first, then the order of arrival.
type HeldKey = (Reverse<u64>, u64);

/// A task the cost-aware scheduler holds until a slot frees.
struct HeldEntry<S> {
    attempt: Attempt,
    /// When it was first held.
    since: Instant,
    waker: Option<Waker>,
    /// Set when it is placed (or cannot be): the worker's service and the
    /// in-flight guard, already counted in the worker's load.
    placed: Option<Result<(S, InFlight), GridError>>,
}

/// A held task's place in line: its estimated cost (seconds at speed 1)
/// plus this much per second it has waited, so small tasks are not passed
/// over for ever by larger ones (the p99 latency) while the largest still
/// go first.
const AGING: f64 = 0.1;

/// Lines of held tasks up to this long are re-ordered on every pass.
const REKEY_ALWAYS: usize = 256;
/// Longer lines are re-ordered at most this often.
const REKEY_EVERY: Duration = Duration::from_millis(100);

/// At most this many held tasks decline a free slot (waiting for a busy
/// faster worker) in one placement pass; the rest wait for the next event.
const MAX_DECLINES: usize = 16;

/// Rung when a cost-aware slot frees: wakes the held task that places the
/// held tasks next.
#[derive(Debug, Default)]
struct Bell {
    waker: Mutex<Option<Waker>>,
    rings: AtomicU64,
}

impl Bell {
    fn lock(&self) -> MutexGuard<'_, Option<Waker>> {
        self.waker.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn ring(&self) {
        self.rings.fetch_add(1, Ordering::SeqCst);
        let w = self.lock().take();
        if let Some(w) = w {
            w.wake();
        }
    }

    fn rings(&self) -> u64 {
        self.rings.load(Ordering::SeqCst)
    }

    fn arm(&self, waker: Option<Waker>) {
        *self.lock() = waker;
    }
}

struct Shared<D, S> {
    discover: D,
    pool: Pool<S>,
    held: BTreeMap<HeldKey, HeldEntry<S>>,
    /// Each held task's current key by its number (keys change when the
    /// estimates do).
    keys: HashMap<u64, HeldKey>,
    /// When the held tasks were last put in order of their estimates.
    rekeyed: Option<Instant>,
    /// Held tasks by compiler and target (so a placement pass can stop
    /// once every group has no free slot).
    groups: HashMap<(CompilerIdentity, Arch), usize>,
    seq: u64,
    /// When held tasks that declined a free slot should look again.
    recheck_at: Option<Instant>,
}

impl<D, S> Shared<D, S>
where
    D: Discover<Key = WorkerId, Service = Endpoint<S>> + Unpin,
    D::Error: Into<BoxError>,
    S: Service<CompileTask, Response = CompileOutput, Error = BoxError> + Clone,
{
    /// Applies every pending discovery change; held tasks look again after
    /// a change.
    fn poll_changes(&mut self, cx: &mut Context<'_>, bell: &Bell) -> Result<(), BoxError> {
        let mut changed = false;
        let res = loop {
            match Pin::new(&mut self.discover).poll_discover(cx) {
                Poll::Ready(Some(Ok(Change::Insert(id, ep)))) => {
                    self.pool.insert(id, ep);
                    changed = true;
                }
                Poll::Ready(Some(Ok(Change::Remove(id)))) => {
                    self.pool.remove(&id);
                    changed = true;
                }
                Poll::Ready(Some(Err(e))) => break Err(e.into()),
                Poll::Ready(None) | Poll::Pending => break Ok(()),
            }
        };
        if changed && !self.held.is_empty() {
            bell.ring();
        }
        res
    }

    /// Places held tasks, largest estimated cost first, on free slots
    /// where they finish earliest; a task whose earliest finish is on a
    /// busy worker stays held (and a smaller one may take the slot).
    fn assign(&mut self, bell: &Arc<Bell>) {
        self.rekey();
        loop {
            let rung = bell.rings();
            let now = Instant::now();
            let mut saturated: Vec<(CompilerIdentity, Arch)> = Vec::new();
            let mut recheck: Option<f64> = None;
            // Busy workers that held tasks before wait for, and how much
            // later each then frees a slot.
            let mut claims: Vec<(usize, f64)> = Vec::new();
            let Shared {
                pool, held, groups, ..
            } = self;
            for e in held.values_mut() {
                if saturated.len() >= groups.len() {
                    break;
                }
                if e.placed.is_some() {
                    continue;
                }
                let t = &e.attempt.task;
                if saturated
                    .iter()
                    .any(|(c, a)| *c == t.compiler && *a == t.target_arch)
                {
                    continue;
                }
                match pool.earliest_finish(t, &e.attempt.exclude, now, &claims) {
                    Err(err) => e.placed = Some(Err(err)),
                    Ok(Placement::Now(i) | Placement::Hold { free: Some(i), .. }) => {
                        e.placed = Some(Ok(start(pool, i, &e.attempt, Some(bell))));
                    }
                    Ok(Placement::Hold { recheck: None, .. }) => {
                        // No free slot for it: none for the tasks after it
                        // with the same needs either (unless it excluded
                        // workers).
                        if e.attempt.exclude.is_empty() {
                            saturated.push((t.compiler.clone(), t.target_arch.clone()));
                        }
                        continue;
                    }
                    Ok(Placement::Hold {
                        best,
                        recheck: Some(r),
                        claim,
                        free: None,
                    }) => {
                        recheck = Some(recheck.map_or(r, |m: f64| m.min(r)));
                        claims.push((best, claim));
                        if claims.len() >= MAX_DECLINES {
                            break;
                        }
                        continue;
                    }
                }
                if let Some(w) = &e.waker {
                    w.wake_by_ref();
                }
            }
            self.recheck_at = recheck.map(|r| now + Duration::from_secs_f64(r.max(0.001)));
            bell.arm(self.first_held_waker());
            if bell.rings() == rung {
                break;
            }
        }
    }
}

impl<D, S> Shared<D, S> {
    /// Puts the held tasks in order of their current estimates (which
    /// change as compiles complete and run) and of how long they have
    /// waited ([`AGING`]): every pass for a short line,
    /// at most every [`REKEY_EVERY`] for a long one.
    fn rekey(&mut self) {
        let now = Instant::now();
        if self.held.len() > REKEY_ALWAYS && self.rekeyed.is_some_and(|t| now < t + REKEY_EVERY) {
            return;
        }
        self.rekeyed = Some(now);
        let old = std::mem::take(&mut self.held);
        for ((_, seq), e) in old {
            let waited = now.saturating_duration_since(e.since).as_secs_f64();
            let aged = (AGING * waited * 1e6) as u64;
            let key = (
                Reverse(self.pool.held_cost(&e.attempt.task).saturating_add(aged)),
                seq,
            );
            self.keys.insert(seq, key);
            self.held.insert(key, e);
        }
    }

    /// Holds `attempt` under `key`.
    fn hold(&mut self, key: HeldKey, attempt: Attempt) {
        self.keys.insert(key.1, key);
        let group = (
            attempt.task.compiler.clone(),
            attempt.task.target_arch.clone(),
        );
        *self.groups.entry(group).or_default() += 1;
        self.held.insert(
            key,
            HeldEntry {
                attempt,
                since: Instant::now(),
                waker: None,
                placed: None,
            },
        );
    }

    /// The held task number `seq`.
    fn held_mut(&mut self, seq: u64) -> Option<&mut HeldEntry<S>> {
        let key = self.keys.get(&seq)?;
        self.held.get_mut(key)
    }

    /// Stops holding the task number `seq`.
    fn unhold(&mut self, seq: u64) -> Option<HeldEntry<S>> {
        let key = self.keys.remove(&seq)?;
        let e = self.held.remove(&key)?;
        let group = (
            e.attempt.task.compiler.clone(),
            e.attempt.task.target_arch.clone(),
        );
        if let Some(n) = self.groups.get_mut(&group) {
            *n -= 1;
            if *n == 0 {
                self.groups.remove(&group);
            }
        }
        Some(e)
    }

    /// The waker of the first task still held.
    fn first_held_waker(&self) -> Option<Waker> {
        self.held
            .values()
            .find(|e| e.placed.is_none())
            .and_then(|e| e.waker.clone())
    }
}

/// Counts a task into worker `i`'s load and makes what runs it.
fn start<S: Clone>(
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

/// The balancer. Cheap to clone: clones share the workers and their load.
pub struct Scheduler<D, S> {
    shared: Arc<Mutex<Shared<D, S>>>,
    bell: Arc<Bell>,
}

impl<D, S> Clone for Scheduler<D, S> {
    fn clone(&self) -> Self {
        Scheduler {
            shared: self.shared.clone(),
            bell: self.bell.clone(),
        }
    }
}

impl<D, S> Scheduler<D, S> {
    fn lock(&self) -> MutexGuard<'_, Shared<D, S>> {
        self.shared.lock().unwrap_or_else(|e| e.into_inner())
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
                held: BTreeMap::new(),
                keys: HashMap::new(),
                rekeyed: None,
                groups: HashMap::new(),
                seq: 0,
                recheck_at: None,
            })),
            bell: Arc::default(),
        }
    }

    /// Applies every pending discovery change.
    fn poll_changes(&self, cx: &mut Context<'_>) -> Result<(), BoxError> {
        self.lock().poll_changes(cx, &self.bell)
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

    /// The speed cost-aware learned for worker `id` (0 if none yet).
    #[cfg(test)]
    fn learned_speed(&self, id: &str) -> f64 {
        self.lock()
            .pool
            .model
            .speed_cell(&WorkerId(id.into()))
            .get()
    }

    /// Tasks the cost-aware scheduler holds now, waiting for a slot.
    pub fn held(&self) -> usize {
        self.lock().held.len()
    }

    fn dispatch(&self, attempt: Attempt) -> ResponseFuture<D, S> {
        let mut sh = self.lock();
        if sh.pool.algorithm() == Algorithm::CostAware {
            return self.dispatch_late(sh, attempt);
        }
        let i = match sh.pool.pick(&attempt.task, &attempt.exclude) {
            Ok(i) => i,
            Err(e) => return ResponseFuture::failed(e),
        };
        let (service, guard) = start(&sh.pool, i, &attempt, None);
        drop(sh);
        ResponseFuture::running(service, attempt.task, guard)
    }

    /// Cost-aware: runs the task now if its earliest finish is on a free
    /// slot and nothing is held before it, else holds it.
    fn dispatch_late(
        &self,
        mut sh: MutexGuard<'_, Shared<D, S>>,
        attempt: Attempt,
    ) -> ResponseFuture<D, S> {
        let first = sh.held.is_empty();
        if first {
            match sh
                .pool
                .earliest_finish(&attempt.task, &attempt.exclude, Instant::now(), &[])
            {
                Err(e) => return ResponseFuture::failed(e),
                Ok(Placement::Now(i) | Placement::Hold { free: Some(i), .. }) => {
                    let (service, guard) = start(&sh.pool, i, &attempt, Some(&self.bell));
                    drop(sh);
                    return ResponseFuture::running(service, attempt.task, guard);
                }
                Ok(Placement::Hold { .. }) => {}
            }
        }
        sh.seq += 1;
        let seq = sh.seq;
        let key = (Reverse(sh.pool.held_cost(&attempt.task)), seq);
        sh.hold(key, attempt);
        if !first {
            // Others are held: the line decides who gets a free slot.
            sh.assign(&self.bell);
            if let Some(p) = sh.held_mut(seq).and_then(|e| e.placed.take()) {
                let attempt = sh.unhold(seq).map(|e| e.attempt);
                drop(sh);
                return ResponseFuture::placed(p, attempt);
            }
        }
        drop(sh);
        ResponseFuture {
            kind: Kind::Held {
                ticket: Some(Ticket {
                    sched: self.clone(),
                    seq,
                }),
                timer: None,
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
    type Future = ResponseFuture<D, S>;

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
    type Future = ResponseFuture<D, S>;

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
struct Ticket<D, S> {
    sched: Scheduler<D, S>,
    seq: u64,
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
    fn failed(e: GridError) -> Self {
        ResponseFuture {
            kind: Kind::Failed { error: Some(e) },
        }
    }

    fn running(service: S, task: CompileTask, guard: InFlight) -> Self {
        ResponseFuture {
            kind: Kind::Running {
                call: service.oneshot(task),
                guard: Some(guard),
            },
        }
    }

    fn placed(p: Result<(S, InFlight), GridError>, attempt: Option<Attempt>) -> Self {
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

#[cfg(test)]
mod tests;
