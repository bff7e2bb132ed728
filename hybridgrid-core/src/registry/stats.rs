//! Live per-worker numbers, shared lock-free between the registry, the
//! scheduler and the admin endpoints.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Weight of a new sample in the exponentially weighted moving averages.
const EWMA_ALPHA: f64 = 0.3;

/// Live counters of one worker. Updated by the scheduler as tasks start and
/// finish; read by the scheduler's scores and by `/api/v1/workers`.
#[derive(Debug, Default)]
pub struct WorkerStats {
    active: AtomicU64,
    completed: AtomicU64,
    failed: AtomicU64,
    /// Estimated cost of the tasks in flight (cost units, see
    /// [`crate::scheduler::task_cost`]).
    backlog: AtomicU64,
    /// Latency EWMA in microseconds, as f64 bits; 0 = no sample yet.
    latency_us: AtomicU64,
    /// Cost units and service microseconds of completed tasks, whose ratio
    /// is the speed (more robust than averaging per-task ratios: a task's
    /// input size predicts its compile time poorly).
    done_cost: AtomicU64,
    done_us: AtomicU64,
}

fn load_f64(a: &AtomicU64) -> f64 {
    f64::from_bits(a.load(Ordering::Relaxed))
}

fn ewma(a: &AtomicU64, sample: f64) {
    // A lost update under a race only drops one sample; no loop needed.
    let old = load_f64(a);
    let new = if old == 0.0 {
        sample
    } else {
        old + EWMA_ALPHA * (sample - old)
    };
    a.store(new.to_bits(), Ordering::Relaxed);
}

impl WorkerStats {
    /// Fresh counters.
    pub fn new() -> Self {
        Self::default()
    }

    /// Tasks running or queued on the worker now.
    pub fn active(&self) -> u64 {
        self.active.load(Ordering::Relaxed)
    }

    /// Tasks the worker finished (with any compiler exit code).
    pub fn completed(&self) -> u64 {
        self.completed.load(Ordering::Relaxed)
    }

    /// Tasks that failed on the worker with an error.
    pub fn failed(&self) -> u64 {
        self.failed.load(Ordering::Relaxed)
    }

    /// Estimated cost units in flight on the worker.
    pub fn backlog(&self) -> u64 {
        self.backlog.load(Ordering::Relaxed)
    }

    /// The latency EWMA, if any task finished yet.
    pub fn latency(&self) -> Option<Duration> {
        let us = load_f64(&self.latency_us);
        (us > 0.0).then(|| Duration::from_secs_f64(us / 1e6))
    }

    /// The latency EWMA in seconds (0 when unknown).
    pub fn latency_secs(&self) -> f64 {
        load_f64(&self.latency_us) / 1e6
    }

    /// Learned speed in cost units per second per slot (0 when unknown).
    pub fn speed(&self) -> f64 {
        let us = self.done_us.load(Ordering::Relaxed);
        if us == 0 {
            return 0.0;
        }
        self.done_cost.load(Ordering::Relaxed) as f64 / (us as f64 / 1e6)
    }

    /// Records that a task of `cost` units was sent to the worker.
    pub fn start(&self, cost: u64) {
        self.active.fetch_add(1, Ordering::Relaxed);
        self.backlog.fetch_add(cost, Ordering::Relaxed);
    }

    /// Records the end of a task started with [`WorkerStats::start`].
    ///
    /// `latency` is the whole time the task took; `service` the time the
    /// compiler ran, if known, from which the speed is learned. `ok` is false
    /// when the task failed with an error (a compile error is ok).
    pub fn finish(&self, cost: u64, latency: Duration, service: Option<Duration>, ok: bool) {
        self.active.fetch_sub(1, Ordering::Relaxed);
        self.backlog.fetch_sub(cost, Ordering::Relaxed);
        if !ok {
            self.failed.fetch_add(1, Ordering::Relaxed);
            return;
        }
        self.completed.fetch_add(1, Ordering::Relaxed);
        ewma(&self.latency_us, latency.as_secs_f64() * 1e6);
        let us = service.unwrap_or(latency).as_micros() as u64;
        if us > 0 && cost > 0 {
            self.done_cost.fetch_add(cost, Ordering::Relaxed);
            self.done_us.fetch_add(us, Ordering::Relaxed);
        }
    }

    /// Records a task that was abandoned (cancelled) before it finished.
    pub fn abandon(&self, cost: u64) {
        self.active.fetch_sub(1, Ordering::Relaxed);
        self.backlog.fetch_sub(cost, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_ewma() {
        let s = WorkerStats::new();
        s.start(100);
        s.start(50);
        assert_eq!((s.active(), s.backlog()), (2, 150));
        s.finish(
            100,
            Duration::from_secs(2),
            Some(Duration::from_secs(1)),
            true,
        );
        assert_eq!((s.active(), s.backlog(), s.completed()), (1, 50, 1));
        assert_eq!(s.latency(), Some(Duration::from_secs(2)));
        assert!((s.speed() - 100.0).abs() < 1e-9);
        s.finish(50, Duration::from_secs(1), None, false);
        assert_eq!((s.active(), s.failed(), s.completed()), (0, 1, 1));
        assert!((s.speed() - 100.0).abs() < 1e-9, "failures teach no speed");
    }
}
