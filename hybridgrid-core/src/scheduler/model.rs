//! The cost-aware scheduler's model of compile times, learned online from
//! the tasks it placed.
//!
//! A compile of file `f` with an input of `b` bytes on worker `w` is
//! expected to take `c_f * b / s_w` seconds: `c_f` is the file's cost per
//! input byte, `s_w` the worker's speed. Both are learned in log space
//! from completed compiles (`ln t = ln c_f + ln b - ln s_w`): each
//! observation's residual is split between the file and the worker by how
//! much each has been observed, so a file compiled once on a fast worker
//! does not make that worker look slow, and a worker's speed is an
//! average over all the files it compiled (not total bytes over total
//! time, which a single slow file skews). A file never compiled yet gets
//! the average cost per byte of the files seen so far; a worker with no
//! completed task the average speed of the others.
//!
//! Only what a real coordinator sees goes in: the task's source name,
//! compiler and input size, and the compile time the worker reported.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::time::Instant;

use crate::task::CompileTask;
use crate::worker::WorkerId;

/// A worker's learned speed, readable without the model's lock (a
/// placement reads it for every worker it weighs).
#[derive(Debug, Default)]
pub(super) struct Speed(AtomicU64);

impl Speed {
    /// Cost units per second, 0 when nothing was learned yet.
    pub(super) fn get(&self) -> f64 {
        f64::from_bits(self.0.load(Ordering::Relaxed))
    }

    fn set(&self, v: f64) {
        self.0.store(v.to_bits(), Ordering::Relaxed);
    }
}

/// What the model knows about one worker.
#[derive(Debug, Default)]
struct WorkerEntry {
    speed: Arc<Speed>,
    /// ln of the speed, valid when `n > 0`.
    ln: f64,
    n: u32,
}

/// What the model knows about one file.
#[derive(Debug, Clone, Copy)]
struct FileEntry {
    /// ln of the cost per input byte.
    ln: f64,
    n: u32,
    /// Its last input size.
    bytes: f64,
}

/// A compile in flight, for the lower bound it puts on its file's cost.
#[derive(Debug)]
struct InFlightCompile {
    token: u64,
    started: Instant,
    speed: Arc<Speed>,
    bytes: u64,
}

#[derive(Debug, Default)]
struct Inner {
    workers: HashMap<WorkerId, WorkerEntry>,
    files: HashMap<u64, FileEntry>,
    /// Compiles in flight by file.
    running: HashMap<u64, Vec<InFlightCompile>>,
    next_token: u64,
    /// Sums over the files of cost (cost per byte times the last input
    /// size) and of input size: their ratio is the prior cost per byte of
    /// a new file. A ratio of sums, so that big files weigh by their size
    /// (tiny files cost far more per byte: the compiler's fixed start-up).
    file_cost_sum: f64,
    file_bytes_sum: f64,
    /// Sum of the known workers' `ln`, and how many are known.
    worker_sum: f64,
    workers_known: u32,
}

impl Inner {
    fn prior_speed(&self) -> f64 {
        if self.workers_known == 0 {
            1.0
        } else {
            (self.worker_sum / f64::from(self.workers_known)).exp()
        }
    }

    /// ln of the cost per byte of a file not compiled yet: the average of
    /// the known files, or 1 microsecond per byte before any.
    fn prior_file(&self) -> f64 {
        if self.file_bytes_sum > 0.0 && self.file_cost_sum > 0.0 {
            (self.file_cost_sum / self.file_bytes_sum).ln()
        } else {
            (1e-6f64).ln()
        }
    }
}

/// The learned compile-time model (see the module docs). Shared by the
/// scheduler and its tasks in flight.
#[derive(Debug, Default)]
pub(super) struct CostModel {
    inner: Mutex<Inner>,
    /// Observations so far.
    samples: AtomicU64,
}

/// Compiles in flight of one file weighed for its cost at most.
const RUNNING_SCAN: usize = 4;

/// Observations after which an estimate stops averaging and follows
/// change (a worker that became slower, a file that grew).
const MAX_WEIGHT: u32 = 16;

impl CostModel {
    /// Files remembered at most (forgotten all at once when full).
    const MAX_FILES: usize = 1 << 16;

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The key of `task`'s file: its source name and compiler.
    pub(super) fn key(task: &CompileTask) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        task.source_name.hash(&mut h);
        task.compiler.hash(&mut h);
        h.finish()
    }

    /// The speed cell of worker `id` (kept across re-registrations).
    pub(super) fn speed_cell(&self, id: &WorkerId) -> Arc<Speed> {
        let mut inner = self.lock();
        inner.workers.entry(id.clone()).or_default().speed.clone()
    }

    /// Observations so far.
    pub(super) fn samples(&self) -> u64 {
        self.samples.load(Ordering::Relaxed)
    }

    /// The speed for a worker not observed yet: the geometric mean of the
    /// known ones (1 before any).
    pub(super) fn prior_speed(&self) -> f64 {
        self.lock().prior_speed()
    }

    /// The expected cost of a compile of file `key` with `bytes` of input,
    /// in cost units (seconds at speed 1). A compile of the same file in
    /// flight for longer than that suggests (a file never seen, or one
    /// that got more expensive) raises it: what has run for `e` seconds is
    /// expected to need at least that (twice that for a file never
    /// compiled yet).
    pub(super) fn cost(&self, key: u64, bytes: u64, now: Instant) -> f64 {
        let inner = self.lock();
        let (mut ln, factor) = match inner.files.get(&key) {
            // A known file: at least what has run. A new one: what has run
            // for `e` is expected to need about as long again.
            Some(f) => (f.ln, 1.0),
            None => (inner.prior_file(), 2.0),
        };
        if let Some(list) = inner.running.get(&key) {
            // The oldest few (the list is in order of start) bound it
            // best; a file compiled on many workers at once is not
            // scanned in full.
            for r in list.iter().take(RUNNING_SCAN) {
                let speed = match r.speed.get() {
                    s if s > 0.0 => s,
                    _ => inner.prior_speed(),
                };
                let elapsed = now.saturating_duration_since(r.started).as_secs_f64();
                if elapsed > 0.0 {
                    let lower = (factor * elapsed * speed / r.bytes.max(1) as f64).ln();
                    ln = ln.max(lower);
                }
            }
        }
        ln.exp() * bytes.max(1) as f64
    }

    /// The expected cost of `bytes` of input of a file not compiled yet.
    pub(super) fn prior_cost(&self, bytes: u64) -> f64 {
        self.lock().prior_file().exp() * bytes as f64
    }

    /// Records a compile of file `key` started on a worker with `speed`;
    /// returns the token to end it with.
    pub(super) fn begin(&self, key: u64, bytes: u64, speed: Arc<Speed>, now: Instant) -> u64 {
        let mut inner = self.lock();
        inner.next_token += 1;
        let token = inner.next_token;
        inner.running.entry(key).or_default().push(InFlightCompile {
            token,
            started: now,
            speed,
            bytes,
        });
        token
    }

    /// Forgets the compile in flight `token` of file `key`.
    pub(super) fn end(&self, key: u64, token: u64) {
        let mut inner = self.lock();
        if let Some(list) = inner.running.get_mut(&key) {
            list.retain(|r| r.token != token);
            if list.is_empty() {
                inner.running.remove(&key);
            }
        }
    }

    /// Learns from a compile of file `key` with `bytes` of input that took
    /// `secs` on worker `id`.
    pub(super) fn observe(&self, id: &WorkerId, key: u64, bytes: u64, secs: f64) {
        if !(secs.is_finite() && secs > 0.0) {
            return;
        }
        let bytes = bytes.max(1) as f64;
        let y = bytes.ln() - secs.ln();
        let mut guard = self.lock();
        let inner = &mut *guard;
        if inner.files.len() >= Self::MAX_FILES && !inner.files.contains_key(&key) {
            inner.files.clear();
            inner.file_cost_sum = 0.0;
            inner.file_bytes_sum = 0.0;
        }
        let prior_file = inner.prior_file();
        let prior_worker = if inner.workers_known == 0 {
            0.0
        } else {
            inner.worker_sum / f64::from(inner.workers_known)
        };
        let file = inner.files.get(&key).copied();
        let worker = inner.workers.entry(id.clone()).or_default();
        let (wn, wln) = if worker.n > 0 {
            (worker.n, worker.ln)
        } else {
            (0, prior_worker)
        };
        let (fn_, fln) = file.map_or((0, prior_file), |f| (f.n, f.ln));
        // y = ln s_w - ln c_f; the residual goes to whichever is less
        // certain. A side seen for the first time counts as half an
        // observation (its prior is a guess, but not nothing).
        let r = y - (wln - fln);
        let cw = f64::from(wn.min(MAX_WEIGHT)) + 0.5;
        let cf = f64::from(fn_.min(MAX_WEIGHT)) + 0.5;
        let (new_w, new_f) = if wn == 0 && fn_ == 0 && inner.workers_known == 0 {
            // The very first observation fixes the scale: speed 1.
            (0.0, -y)
        } else {
            (wln + r * cf / (cw + cf), fln - r * cw / (cw + cf))
        };
        if worker.n == 0 {
            inner.workers_known += 1;
            inner.worker_sum += new_w;
        } else {
            inner.worker_sum += new_w - worker.ln;
        }
        worker.ln = new_w;
        worker.n = worker.n.saturating_add(1);
        worker.speed.set(new_w.exp());
        match inner.files.get_mut(&key) {
            Some(f) => {
                inner.file_cost_sum += new_f.exp() * bytes - f.ln.exp() * f.bytes;
                inner.file_bytes_sum += bytes - f.bytes;
                f.ln = new_f;
                f.n = f.n.saturating_add(1);
                f.bytes = bytes;
            }
            None => {
                inner.file_cost_sum += new_f.exp() * bytes;
                inner.file_bytes_sum += bytes;
                inner.files.insert(
                    key,
                    FileEntry {
                        ln: new_f,
                        n: 1,
                        bytes,
                    },
                );
            }
        }
        self.samples.fetch_add(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(s: &str) -> WorkerId {
        WorkerId(s.into())
    }

    /// Compile times that follow the model exactly: it learns the relative
    /// speeds and each file's cost per byte, and predicts a new compile of
    /// a known file on any worker.
    #[test]
    fn learns_speeds_and_file_costs_jointly() {
        let m = CostModel::default();
        let speeds = [("slow", 1.0), ("mid", 2.0), ("fast", 4.0)];
        let files = [(1u64, 1e-6), (2, 2e-5), (3, 3e-7), (4, 5e-6)];
        let cells: Vec<_> = speeds.iter().map(|(n, _)| m.speed_cell(&w(n))).collect();
        for round in 0..30u64 {
            for (k, (f, cpb)) in files.iter().enumerate() {
                let (name, s) = speeds[(round as usize + k) % 3];
                let bytes = 100_000 + 7_000 * ((round * 3 + k as u64) % 11);
                m.observe(&w(name), *f, bytes, cpb * bytes as f64 / s);
            }
        }
        let ratio = |a: usize, b: usize| cells[a].get() / cells[b].get();
        assert!((ratio(2, 0) - 4.0).abs() < 0.2, "fast/slow {}", ratio(2, 0));
        assert!((ratio(1, 0) - 2.0).abs() < 0.1, "mid/slow {}", ratio(1, 0));
        // File 2 at 150 kB on the fast worker: 2e-5 * 150e3 / 4 = 0.75 s.
        let now = Instant::now();
        let t = m.cost(2, 150_000, now) / cells[2].get();
        assert!((t - 0.75).abs() < 0.05, "{t}");
        // An unknown file gets the average cost per byte, an unknown worker
        // the average speed.
        assert!(m.cost(99, 1000, now) > 0.0);
        let prior = m.prior_speed();
        assert!(prior > cells[0].get() && prior < cells[2].get(), "{prior}");
        assert_eq!(m.samples(), 120);
    }

    #[test]
    fn ignores_nonsense_timings() {
        let m = CostModel::default();
        m.observe(&w("a"), 1, 100, 0.0);
        m.observe(&w("a"), 1, 100, f64::NAN);
        assert_eq!(m.samples(), 0);
        assert_eq!(m.speed_cell(&w("a")).get(), 0.0);
    }
}
