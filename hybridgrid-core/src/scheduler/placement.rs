//! Placement: which worker of the pool gets a task, by each algorithm
//! (random two choices, least loaded, earliest finish), and why none can.

use tokio::time::Instant;

use crate::config::Algorithm;
use crate::error::GridError;
use crate::task::CompileTask;
use crate::worker::{Arch, WorkerId};

use super::pool::{Placement, Pool, SpeedOrder};

impl<S> Pool<S> {
    /// Chooses a worker for `task`, avoiding `exclude`.
    pub(super) fn pick(
        &mut self,
        task: &CompileTask,
        exclude: &[WorkerId],
    ) -> Result<usize, GridError> {
        let arch = &task.target_arch;
        let n = self.capable(task)?;
        let chosen = match self.algorithm {
            Algorithm::P2c if n > 2 => {
                let mut found = [usize::MAX; 2];
                let mut k = 0;
                for _ in 0..8 {
                    let r = self.next_rand();
                    let idx = self.index_at(task, arch, (r % n as u64) as usize);
                    if self.usable(idx, exclude) && !found[..k].contains(&idx) {
                        found[k] = idx;
                        k += 1;
                        if k == 2 {
                            break;
                        }
                    }
                }
                match k {
                    2 => {
                        let (a, b) = (found[0], found[1]);
                        Some(if self.score(a, arch) >= self.score(b, arch) {
                            a
                        } else {
                            b
                        })
                    }
                    _ => self.best_by(task, arch, exclude, |p, i| p.score(i, arch)),
                }
            }
            Algorithm::P2c => self.best_by(task, arch, exclude, |p, i| p.score(i, arch)),
            Algorithm::LeastLoaded => {
                let start = (self.next_rand() % n as u64) as usize;
                self.least_loaded(task, arch, exclude, start)
            }
            Algorithm::CostAware => {
                match self.earliest_finish(task, exclude, Instant::now(), &[]) {
                    Ok(Placement::Now(i) | Placement::Hold { best: i, .. }) => Some(i),
                    Err(e) => return Err(e),
                }
            }
        };
        chosen.ok_or_else(|| self.none_usable(task, arch, exclude))
    }

    /// The usable worker with the fewest active tasks per slot. The scan
    /// starts at `start` (random, so equal loads spread) and stops at the
    /// first idle worker, nothing can beat it: in a pool that is not
    /// saturated a decision looks at a handful of workers, not all.
    fn least_loaded(
        &self,
        task: &CompileTask,
        arch: &Arch,
        exclude: &[WorkerId],
        start: usize,
    ) -> Option<usize> {
        let list = self.list(task, arch);
        let (after, before) = list.split_at(start.min(list.len()));
        let mut best: Option<(usize, f64)> = None;
        for &i in before.iter().chain(after) {
            let i = i as usize;
            if !self.usable(i, exclude) {
                continue;
            }
            let load = self.load(i);
            if load <= 0.0 {
                return Some(i);
            }
            if best.is_none_or(|(_, b)| load < b) {
                best = Some((i, load));
            }
        }
        best.map(|(i, _)| i)
    }

    /// Cost-aware: the usable worker where the task would finish first,
    /// counting for a busy worker the estimated time until a slot frees.
    /// If that worker has a free slot the task goes there now, else it is
    /// held (late binding: the caller places it when a slot frees).
    ///
    /// Small pools are scanned in full. In larger ones workers are visited
    /// fastest first (by the [`SpeedOrder`]). Once a worker with a free
    /// slot is found, no slower worker can finish sooner (its run alone
    /// takes longer), so the scan stops there, after looking among the
    /// equally fast ones for the least loaded. A saturated pool is scanned
    /// in full.
    pub(super) fn earliest_finish(
        &mut self,
        task: &CompileTask,
        exclude: &[WorkerId],
        now: Instant,
        claims: &[(usize, f64)],
    ) -> Result<Placement, GridError> {
        let arch = &task.target_arch;
        let n = self.capable(task)?;
        let cost = self.expected_cost(task);
        let prior = self.prior();
        let ordered = n > SpeedOrder::SCAN_ALL;
        if ordered {
            let samples = self.model.samples();
            let stale = self
                .by_speed
                .get(&task.compiler)
                .and_then(|m| m.get(arch))
                .is_none_or(|o| o.stale(samples));
            if stale {
                let mut order: Vec<(f64, u32)> = self
                    .list(task, arch)
                    .iter()
                    .map(|&i| (self.speed_of(i as usize, prior), i))
                    .collect();
                order.sort_by(|a, b| b.0.total_cmp(&a.0));
                self.by_speed
                    .entry(task.compiler.clone())
                    .or_default()
                    .insert(
                        arch.clone(),
                        SpeedOrder {
                            order: order.into_iter().map(|(_, i)| i).collect(),
                            decisions: 0,
                            samples_at: samples,
                        },
                    );
            }
            if let Some(o) = self
                .by_speed
                .get_mut(&task.compiler)
                .and_then(|m| m.get_mut(arch))
            {
                o.decisions += 1;
            }
        }
        let order: &[u32] = if ordered {
            self.by_speed
                .get(&task.compiler)
                .and_then(|m| m.get(arch))
                .map_or(&[], |o| o.order.as_slice())
        } else {
            self.list(task, arch)
        };
        // (worker, key, finish, free)
        let mut best: Option<(usize, f64, f64, bool)> = None;
        // The speed of the first worker with a free slot, once found.
        let mut free_speed: Option<f64> = None;
        let mut busy_seen = 0;
        let mut best_free: Option<(usize, f64)> = None;
        // When the work in flight is expected to end (small pools).
        let mut horizon: f64 = 0.0;
        for &i in order {
            let i = i as usize;
            if !self.usable(i, exclude) {
                continue;
            }
            if !ordered {
                horizon = horizon.max(self.slots[i].running.latest(now));
            }
            let speed = self.speed_of(i, prior);
            if ordered && free_speed.is_some_and(|f| speed < f) {
                break;
            }
            let free = self.is_free(i);
            if ordered && !free {
                // In a large pool only the fastest busy workers are weighed
                // (each costs a look at its tasks); past them the scan
                // only looks for a free slot.
                busy_seen += 1;
                if busy_seen > SpeedOrder::SCAN_ALL {
                    continue;
                }
            }
            let wait = if free {
                0.0
            } else {
                self.wait_time(i, now, speed)
                    + claims.iter().filter(|c| c.0 == i).map(|c| c.1).sum::<f64>()
            };
            let finish = wait + cost / speed;
            // Ties (equal speeds, e.g. none learned yet) go to the less
            // loaded worker.
            let key = finish * (1.0 + 1e-6 * self.load(i));
            if best.is_none_or(|(_, b, _, _)| key < b) {
                best = Some((i, key, wait, free));
            }
            if free && best_free.is_none_or(|(_, b)| key < b) {
                best_free = Some((i, key));
            }
            if free {
                free_speed.get_or_insert(speed);
                if ordered && self.load(i) <= 0.0 {
                    break;
                }
            }
        }
        match best {
            None => Err(self.none_usable(task, arch, exclude)),
            Some((i, _, _, true)) => Ok(Placement::Now(i)),
            // A free worker that finishes it before the work in flight is
            // expected to end does not make the build longer: taking it
            // now keeps the faster worker for a later task.
            Some((_, _, _, false)) if best_free.is_some_and(|(_, f)| f <= horizon) => {
                Ok(Placement::Now(best_free.map_or(0, |(f, _)| f)))
            }
            Some((i, _, wait, false)) => Ok(Placement::Hold {
                best: i,
                recheck: free_speed.map(|_| wait),
                claim: cost / self.speed_of(i, prior) / self.slots[i].slots,
                // A large pool does not hold a task while a slot is free:
                // passes over held tasks that decline free slots cost too
                // much there, and with many workers a free one is rarely
                // much slower.
                free: best_free.filter(|_| ordered).map(|(f, _)| f),
            }),
        }
    }

    pub(super) fn list(&self, task: &CompileTask, arch: &Arch) -> &[u32] {
        self.index
            .get(&task.compiler)
            .and_then(|m| m.get(arch))
            .map_or(&[], |v| v.as_slice())
    }

    fn index_at(&self, task: &CompileTask, arch: &Arch, k: usize) -> usize {
        self.list(task, arch)[k] as usize
    }

    /// The usable candidate with the highest `key`.
    fn best_by(
        &self,
        task: &CompileTask,
        arch: &Arch,
        exclude: &[WorkerId],
        key: impl Fn(&Self, usize) -> f64,
    ) -> Option<usize> {
        let mut best: Option<(usize, f64)> = None;
        for &i in self.list(task, arch) {
            let i = i as usize;
            if !self.usable(i, exclude) {
                continue;
            }
            let k = key(self, i);
            if best.is_none_or(|(_, bk)| k > bk) {
                best = Some((i, k));
            }
        }
        best.map(|(i, _)| i)
    }

    fn none_usable(&self, task: &CompileTask, arch: &Arch, exclude: &[WorkerId]) -> GridError {
        let list = self.list(task, arch);
        let untried = list
            .iter()
            .filter(|&&i| !exclude.contains(&self.slots[i as usize].id))
            .count();
        if untried == 0 {
            GridError::NoWorker(format!(
                "all {} workers with compiler {} for target {} were already tried",
                list.len(),
                task.compiler,
                arch
            ))
        } else {
            GridError::CircuitOpen
        }
    }
}
