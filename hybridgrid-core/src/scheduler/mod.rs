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
//!
//! # Parts
//!
//! | file | what |
//! |---|---|
//! | `mod.rs` | the scheduler: its pool, placement and the tower services |
//! | `held.rs` | tasks the cost-aware algorithm holds until a slot frees |
//! | `response.rs` | a task in flight on a worker, the bell it rings when it ends, and the future a caller awaits |
//! | `pool.rs` | the workers' slots, their load and the capability index |
//! | `placement.rs` | which worker gets a task, by each algorithm |
//! | `model.rs`, `endpoint.rs`, `error.rs` | the cost model, the attempt and route types, errors |

mod endpoint;
mod error;
mod held;
mod model;
mod placement;
mod pool;
mod response;

use std::cmp::Reverse;
use std::collections::{BTreeMap, HashMap};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::Instant;
use tower::Service;
use tower::discover::{Change, Discover};

pub use self::endpoint::{Attempt, Endpoint, Endpoints, RouteSlot};
pub use self::error::WorkerError;
pub use self::pool::task_cost;
use self::pool::{Placement, Pool};
pub use self::response::ResponseFuture;
use crate::config::{Algorithm, SchedulerConfig};
use crate::error::{BoxError, GridError};
use crate::task::{CompileOutput, CompileTask, CompilerIdentity};
use crate::worker::{Arch, WorkerId};

use self::held::{HeldEntry, HeldKey, MAX_DECLINES};
use self::response::{Bell, Ticket, start};

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
        ResponseFuture::held(Ticket {
            sched: self.clone(),
            seq,
        })
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

#[cfg(test)]
mod tests;
