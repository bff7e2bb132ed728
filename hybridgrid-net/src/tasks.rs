//! The coordinator's record of recent tasks (for `/api/v1/tasks` and the
//! dashboard) and the per-task metrics recorded when a task finishes.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hybridgrid_core::GridError;
use hybridgrid_core::task::CompileOutput;
use serde::Serialize;
use tokio::sync::watch;

/// How many finished tasks the coordinator remembers by default.
pub const DEFAULT_RECENT_TASKS: usize = 200;

/// How a task ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskResult {
    /// The compiler exited with 0.
    Success,
    /// The compiler ran and reported errors in the user's code.
    CompileError,
    /// The grid could not compile it (no worker, timeout, worker failure...).
    Error,
}

impl TaskResult {
    /// The label used in metrics and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            TaskResult::Success => "success",
            TaskResult::CompileError => "compile_error",
            TaskResult::Error => "error",
        }
    }
}

/// One finished task.
#[derive(Clone, Debug, Serialize)]
pub struct TaskRecord {
    /// The task's id.
    pub task_id: String,
    /// The source's name on the client (e.g. `src/foo.c`).
    pub source: String,
    /// The worker that compiled it; empty for cache hits and grid errors.
    pub worker: String,
    /// Time from receipt to answer, in milliseconds.
    pub duration_ms: f64,
    /// Time spent waiting for a slot (on the worker), in milliseconds.
    pub queue_ms: f64,
    /// Time the compiler ran, in milliseconds.
    pub compile_ms: f64,
    /// How it ended.
    pub result: TaskResult,
    /// The result came from the coordinator's cache.
    pub from_cache: bool,
    /// The compiler's exit code (absent when the grid failed).
    pub exit_code: Option<i32>,
    /// The grid's error, when `result` is `error`.
    pub error: Option<String>,
    /// When it finished, in milliseconds since the Unix epoch.
    pub finished_at_ms: u64,
    /// When it finished, RFC 3339 in UTC.
    pub timestamp: String,
}

/// A bounded ring of the most recent finished tasks. Also a change signal
/// for live views (the dashboard's event stream).
#[derive(Debug)]
pub struct RecentTasks {
    ring: Mutex<VecDeque<TaskRecord>>,
    capacity: usize,
    seq: AtomicU64,
    changed: watch::Sender<u64>,
}

impl Default for RecentTasks {
    fn default() -> Self {
        RecentTasks::new(DEFAULT_RECENT_TASKS)
    }
}

impl RecentTasks {
    /// A ring of at most `capacity` tasks (at least 1).
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        RecentTasks {
            ring: Mutex::new(VecDeque::with_capacity(capacity)),
            capacity,
            seq: AtomicU64::new(0),
            changed: watch::channel(0).0,
        }
    }

    /// Adds a finished task, dropping the oldest when full.
    pub fn push(&self, rec: TaskRecord) {
        if let Ok(mut r) = self.ring.lock() {
            if r.len() == self.capacity {
                r.pop_front();
            }
            r.push_back(rec);
        }
        let n = self.seq.fetch_add(1, Ordering::Relaxed) + 1;
        self.changed.send_replace(n);
    }

    /// The newest `limit` tasks, newest first.
    pub fn newest(&self, limit: usize) -> Vec<TaskRecord> {
        self.ring
            .lock()
            .map(|r| r.iter().rev().take(limit).cloned().collect())
            .unwrap_or_default()
    }

    /// How many it can hold.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// A receiver that sees a new value whenever a task is added.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// Records a finished task: the ring, and the task metrics that need
    /// the task's result (queue time, per-worker latency, fallbacks).
    pub fn record(
        &self,
        task_id: &str,
        source: &str,
        duration: Duration,
        res: &Result<CompileOutput, GridError>,
    ) {
        let (result, worker, queue, compile, from_cache, exit_code, error) = match res {
            Ok(o) => (
                if o.success() {
                    TaskResult::Success
                } else {
                    TaskResult::CompileError
                },
                o.worker_id
                    .as_ref()
                    .map(|w| w.0.clone())
                    .unwrap_or_default(),
                o.timings.queue,
                o.timings.compile,
                o.from_cache,
                Some(o.exit_code),
                None,
            ),
            Err(e) => (
                TaskResult::Error,
                String::new(),
                Duration::ZERO,
                Duration::ZERO,
                false,
                None,
                Some(e.to_string()),
            ),
        };
        if let Ok(o) = res {
            if !o.from_cache {
                metrics::histogram!(crate::metrics::M_TASK_QUEUE).record(queue.as_secs_f64());
            }
            if !worker.is_empty() && !o.from_cache {
                metrics::histogram!(crate::metrics::M_WORKER_LATENCY, "worker" => worker.clone())
                    .record(duration.as_secs_f64());
            }
        }
        if let Err(e) = res {
            // The client compiles these locally unless it runs with
            // --no-fallback: count them as fallbacks the grid caused.
            metrics::counter!(crate::metrics::M_FALLBACKS, "reason" => error_reason(e))
                .increment(1);
        }
        let now = SystemTime::now();
        self.push(TaskRecord {
            task_id: task_id.to_owned(),
            source: source.to_owned(),
            worker,
            duration_ms: ms(duration),
            queue_ms: ms(queue),
            compile_ms: ms(compile),
            result,
            from_cache,
            exit_code,
            error,
            finished_at_ms: now
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0),
            timestamp: rfc3339(now),
        });
    }
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1000.0 * 1000.0).round() / 1000.0
}

/// A short label for a grid error (metrics label values stay few).
pub fn error_reason(e: &GridError) -> &'static str {
    match e {
        GridError::NoWorker(_) => "no_worker",
        GridError::CircuitOpen => "circuit_open",
        GridError::WorkerUnavailable { .. } => "worker_unavailable",
        GridError::DeadlineExceeded(_) => "timeout",
        GridError::Overloaded(_) => "overloaded",
        _ => "other",
    }
}

/// Formats a time as RFC 3339 UTC with milliseconds (no time crate needed).
pub fn rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs() as i64;
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (h, m, s) = (rem / 3600, (rem % 3600) / 60, rem % 60);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{h:02}:{m:02}:{s:02}.{:03}Z",
        d.subsec_millis()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(id: &str) -> TaskRecord {
        TaskRecord {
            task_id: id.into(),
            source: "a.c".into(),
            worker: "w1".into(),
            duration_ms: 1.0,
            queue_ms: 0.0,
            compile_ms: 1.0,
            result: TaskResult::Success,
            from_cache: false,
            exit_code: Some(0),
            error: None,
            finished_at_ms: 0,
            timestamp: String::new(),
        }
    }

    #[test]
    fn ring_is_bounded_and_newest_first() {
        let r = RecentTasks::new(3);
        let rx = r.subscribe();
        for i in 0..5 {
            r.push(rec(&format!("t{i}")));
        }
        let ids: Vec<String> = r.newest(10).into_iter().map(|t| t.task_id).collect();
        assert_eq!(ids, ["t4", "t3", "t2"]);
        assert_eq!(r.newest(1)[0].task_id, "t4");
        assert_eq!(*rx.borrow(), 5);
    }

    #[test]
    fn timestamps() {
        let t = UNIX_EPOCH + Duration::from_millis(951_782_400_123); // 2000-02-29
        assert_eq!(rfc3339(t), "2000-02-29T00:00:00.123Z");
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
    }

    #[test]
    fn error_reasons() {
        assert_eq!(error_reason(&GridError::CircuitOpen), "circuit_open");
        assert_eq!(error_reason(&GridError::NoWorker("x".into())), "no_worker");
    }
}
