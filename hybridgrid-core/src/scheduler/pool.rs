//! The workers the scheduler knows, indexed by compiler and target, and the
//! placement algorithms.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::time::Instant;

use crate::config::{Algorithm, ScoreWeights};
use crate::error::GridError;
use crate::task::{CompileTask, CompilerIdentity};
use crate::worker::{Arch, WorkerId, WorkerSource};

use super::Endpoint;
use super::model::{CostModel, Speed};

/// The estimated cost of a task, in cost units: the size of what the
/// compiler reads in bytes (at least 1, see [`CompileTask::input_bytes`]).
/// Compile time grows with the preprocessed size.
pub fn task_cost(task: &CompileTask) -> u64 {
    task.input_bytes().max(1)
}

pub(super) struct Slot<S> {
    pub(super) id: WorkerId,
    pub(super) endpoint: Endpoint<S>,
    arch: Option<Arch>,
    /// The score terms that do not depend on the task or on load.
    static_score: f64,
    pub(super) slots: f64,
    /// Estimated ends of the tasks in flight (cost-aware only).
    pub(super) running: Arc<Running>,
    /// Learned speed (cost-aware only).
    pub(super) speed: Arc<Speed>,
}

/// The estimated ends of the tasks in flight on one worker, for the
/// cost-aware estimate of when a busy worker frees a slot.
#[derive(Debug, Default)]
pub(super) struct Running {
    ends: Mutex<Vec<(u64, Instant)>>,
    next: AtomicU64,
}

impl Running {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<(u64, Instant)>> {
        self.ends.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records a task expected to end at `end`; returns its token.
    pub(super) fn add(&self, end: Instant) -> u64 {
        let token = self.next.fetch_add(1, Ordering::Relaxed);
        self.lock().push((token, end));
        token
    }

    /// Forgets the task with `token`.
    pub(super) fn remove(&self, token: u64) {
        let mut ends = self.lock();
        if let Some(k) = ends.iter().position(|&(t, _)| t == token) {
            ends.swap_remove(k);
        }
    }

    /// Seconds until the last of the tasks in flight is expected to end
    /// (0 if none is, or all are overdue).
    pub(super) fn latest(&self, now: Instant) -> f64 {
        self.lock()
            .iter()
            .map(|&(_, end)| end.saturating_duration_since(now).as_secs_f64())
            .fold(0.0, f64::max)
    }

    /// Seconds until the `k`-th (0-based) earliest of the tasks in flight
    /// ends. A task past its estimated end is expected to need as long
    /// again as it is overdue (so a stuck worker stops looking attractive).
    fn wait(&self, now: Instant, k: usize) -> Option<f64> {
        let ends = self.lock();
        if ends.is_empty() {
            return None;
        }
        let rem = ends.iter().map(|&(_, end)| {
            if end >= now {
                (end - now).as_secs_f64()
            } else {
                (now - end).as_secs_f64()
            }
        });
        if k == 0 {
            return rem.min_by(f64::total_cmp);
        }
        let mut rem: Vec<f64> = rem.collect();
        let k = k.min(rem.len() - 1);
        rem.select_nth_unstable_by(k, f64::total_cmp);
        Some(rem[k])
    }
}

/// Where a cost-aware decision puts a task.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Placement {
    /// On this worker, which has a free slot.
    Now(usize),
    /// Nowhere yet: the earliest estimated finish is on a busy worker.
    /// `recheck` is set when a usable worker does have a free slot (the
    /// task declined it): seconds until the chosen worker should free one.
    /// `claim` is how much later the worker frees its next slot once this
    /// task is counted on it (its run spread over the worker's slots).
    /// `free` is set in a large pool, where the caller places the task on
    /// that free worker instead of holding it.
    Hold {
        best: usize,
        recheck: Option<f64>,
        claim: f64,
        free: Option<usize>,
    },
}

pub(super) struct Pool<S> {
    pub(super) slots: Vec<Slot<S>>,
    by_id: HashMap<WorkerId, usize>,
    /// Capable workers (indexes into `slots`) by compiler and target, built
    /// lazily; cleared when the membership changes.
    pub(super) index: HashMap<CompilerIdentity, HashMap<Arch, Vec<u32>>>,
    /// For cost-aware: the capable workers fastest first (by speed when the
    /// order was taken) and the decisions since; cleared with `index`.
    pub(super) by_speed: HashMap<CompilerIdentity, HashMap<Arch, SpeedOrder>>,
    pub(super) algorithm: Algorithm,
    weights: ScoreWeights,
    rng: u64,
    /// Learned compile times (cost-aware).
    pub(super) model: Arc<CostModel>,
}

/// Capable workers sorted by learned speed, fastest first. It is re-sorted
/// after [`SpeedOrder::REFRESH`] decisions, or once speed samples (task
/// completions) since the sort reach a quarter of the workers, so learning
/// shows up while the cost stays amortised.
#[derive(Default)]
pub(super) struct SpeedOrder {
    pub(super) order: Vec<u32>,
    pub(super) decisions: u32,
    pub(super) samples_at: u64,
}

impl SpeedOrder {
    const REFRESH: u32 = 256;
    /// Up to this many capable workers are scanned in full (exact, and
    /// cheaper than keeping an order).
    pub(super) const SCAN_ALL: usize = 64;

    pub(super) fn stale(&self, samples: u64) -> bool {
        self.decisions >= Self::REFRESH
            || samples.saturating_sub(self.samples_at) * 4 >= self.order.len() as u64
    }
}

fn static_score(w: &ScoreWeights, e: &Endpoint<impl Sized>) -> f64 {
    let caps = &e.worker.info.capabilities;
    let cores = (f64::from(caps.cores) / 64.0).min(1.0);
    let mem = (caps.memory_bytes as f64 / (128u64 << 30) as f64).min(1.0);
    let lan = if e.worker.info.source == WorkerSource::Mdns {
        1.0
    } else {
        0.0
    };
    w.cores * cores + w.memory * mem + w.lan * lan
}

impl<S> Pool<S> {
    pub(super) fn new(algorithm: Algorithm, weights: ScoreWeights, seed: u64) -> Self {
        Pool {
            slots: Vec::new(),
            by_id: HashMap::new(),
            index: HashMap::new(),
            by_speed: HashMap::new(),
            algorithm,
            weights,
            rng: seed | 1,
            model: Arc::default(),
        }
    }

    pub(super) fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    pub(super) fn len(&self) -> usize {
        self.slots.len()
    }

    pub(super) fn insert(&mut self, id: WorkerId, endpoint: Endpoint<S>) {
        let caps = &endpoint.worker.info.capabilities;
        let slot = Slot {
            arch: caps.arch.clone(),
            slots: f64::from(if caps.max_parallel_tasks > 0 {
                caps.max_parallel_tasks
            } else {
                caps.cores.max(1)
            }),
            static_score: static_score(&self.weights, &endpoint),
            running: Arc::default(),
            speed: self.model.speed_cell(&id),
            id: id.clone(),
            endpoint,
        };
        match self.by_id.get(&id) {
            Some(&i) => self.slots[i] = slot,
            None => {
                self.by_id.insert(id, self.slots.len());
                self.slots.push(slot);
            }
        }
        self.index.clear();
        self.by_speed.clear();
    }

    pub(super) fn remove(&mut self, id: &WorkerId) {
        if let Some(i) = self.by_id.remove(id) {
            self.slots.swap_remove(i);
            if let Some(moved) = self.slots.get(i) {
                self.by_id.insert(moved.id.clone(), i);
            }
            self.index.clear();
            self.by_speed.clear();
        }
    }

    pub(super) fn next_rand(&mut self) -> u64 {
        // splitmix64: fast, deterministic for a seed.
        self.rng = self.rng.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// How many workers can run `task` (its compiler for its target), or
    /// the error that says none can.
    pub(super) fn capable(&mut self, task: &CompileTask) -> Result<usize, GridError> {
        let arch = &task.target_arch;
        self.ensure_index(&task.compiler, arch);
        match self.list(task, arch).len() {
            0 => Err(GridError::NoWorker(format!(
                "no worker has compiler {} for target {} ({} workers registered)",
                task.compiler,
                arch,
                self.slots.len()
            ))),
            n => Ok(n),
        }
    }

    fn ensure_index(&mut self, compiler: &CompilerIdentity, arch: &Arch) {
        let present = self
            .index
            .get(compiler)
            .is_some_and(|m| m.contains_key(arch));
        if present {
            return;
        }
        let list: Vec<u32> = self
            .slots
            .iter()
            .enumerate()
            .filter(|(_, s)| {
                let caps = &s.endpoint.worker.info.capabilities;
                caps.can_compile(compiler) && caps.can_target(arch)
            })
            .map(|(i, _)| i as u32)
            .collect();
        self.index
            .entry(compiler.clone())
            .or_default()
            .insert(arch.clone(), list);
    }

    pub(super) fn usable(&self, i: usize, exclude: &[WorkerId]) -> bool {
        let s = &self.slots[i];
        !exclude.contains(&s.id) && s.endpoint.circuit.as_ref().is_none_or(|c| c.admits())
    }

    pub(super) fn score(&self, i: usize, arch: &Arch) -> f64 {
        let s = &self.slots[i];
        let w = &self.weights;
        let stats = &s.endpoint.worker.stats;
        let arch_bonus = if s.arch.as_ref() == Some(arch) {
            w.native_arch
        } else {
            w.cross_compile
        };
        let lat = stats.latency_secs();
        s.static_score + arch_bonus
            - w.load * (stats.active() as f64 / s.slots)
            - w.latency * (lat / (lat + 1.0))
    }

    pub(super) fn load(&self, i: usize) -> f64 {
        let s = &self.slots[i];
        s.endpoint.worker.stats.active() as f64 / s.slots
    }

    /// Learned speed of `i` (cost units per second per slot), else `prior`.
    pub(super) fn speed_of(&self, i: usize, prior: f64) -> f64 {
        let learned = self.slots[i].speed.get();
        if learned > 0.0 { learned } else { prior }
    }

    /// The pool-wide prior speed for workers with no sample yet.
    pub(super) fn prior(&self) -> f64 {
        self.model.prior_speed()
    }

    /// True if `i` has a free slot.
    pub(super) fn is_free(&self, i: usize) -> bool {
        (self.slots[i].endpoint.worker.stats.active() as f64) < self.slots[i].slots
    }

    /// Estimated seconds until a slot of `i` frees (0 if one is free).
    pub(super) fn wait_time(&self, i: usize, now: Instant, speed: f64) -> f64 {
        let s = &self.slots[i];
        let stats = &s.endpoint.worker.stats;
        let active = stats.active();
        if (active as f64) < s.slots {
            return 0.0;
        }
        let k = (active as f64 - s.slots) as usize;
        s.running.wait(now, k).unwrap_or_else(|| {
            // Tasks started without an estimate: drain the backlog (input
            // bytes) at the average cost per byte.
            self.model.prior_cost(stats.backlog()) / (speed * s.slots)
        })
    }

    /// Estimated seconds `task` runs on `i` once it has a slot.
    pub(super) fn estimate(&self, i: usize, task: &CompileTask) -> f64 {
        let speed = self.speed_of(i, self.prior());
        self.expected_cost(task) / speed
    }

    /// Cost-aware: the task's expected cost (seconds at speed 1) from the
    /// learned model.
    pub(super) fn expected_cost(&self, task: &CompileTask) -> f64 {
        self.model
            .cost(CostModel::key(task), task_cost(task), Instant::now())
    }

    /// The expected cost as a held task's sort key (microseconds at
    /// speed 1).
    pub(super) fn held_cost(&self, task: &CompileTask) -> u64 {
        (self.expected_cost(task) * 1e6).min(1e18) as u64
    }

    /// True if a worker able to run `task`, not in `exclude`, admits calls
    /// and has a free slot.
    pub(super) fn has_idle(&mut self, task: &CompileTask, exclude: &[WorkerId]) -> bool {
        let arch = &task.target_arch;
        self.ensure_index(&task.compiler, arch);
        self.list(task, arch)
            .iter()
            .any(|&i| self.usable(i as usize, exclude) && self.load(i as usize) < 1.0)
    }
}
