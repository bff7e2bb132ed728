//! The gauges refreshed from the live state of a coordinator or a worker
//! just before `/metrics` renders, so they are never stale. The names and
//! the rest of the catalogue are in [`crate::metrics`], re-exported here
//! under their old paths.

use std::sync::atomic::Ordering;

pub use crate::metrics::*;

use crate::coordinator::CoordinatorState;
use crate::worker::WorkerServer;

/// Sets the coordinator's state gauges from its live state.
pub fn refresh_coordinator(st: &CoordinatorState) {
    let s = st.stats();
    metrics::gauge!(M_UPTIME).set(st.started.elapsed().as_secs_f64());
    metrics::gauge!(M_TASKS_ACTIVE).set(s.tasks_active as f64);
    metrics::gauge!(M_TASKS_QUEUED).set(s.tasks_queued as f64);
    metrics::gauge!(M_WORKERS, "state" => "healthy").set(s.workers_healthy as f64);
    metrics::gauge!(M_WORKERS, "state" => "unhealthy")
        .set(s.workers_total.saturating_sub(s.workers_healthy) as f64);
    for w in st.worker_status() {
        let id = w.info.as_ref().map(|i| i.id.clone()).unwrap_or_default();
        metrics::gauge!(M_CIRCUIT, "worker" => id.clone()).set(circuit_value(&w.circuit_state));
        metrics::gauge!(M_WORKER_ACTIVE, "worker" => id).set(w.active_tasks as f64);
    }
}

/// Sets the worker's state gauges from its counters.
pub fn refresh_worker(w: &WorkerServer) {
    let c = w.counters();
    metrics::gauge!(M_WORKER_RUNNING).set(f64::from(c.active.load(Ordering::Relaxed)));
    metrics::gauge!(M_WORKER_WAITING).set(f64::from(c.queued.load(Ordering::Relaxed)));
    metrics::gauge!(M_WORKER_SLOTS).set(f64::from(w.info().capabilities.max_parallel_tasks));
    metrics::gauge!(M_UPTIME).set(w.uptime().as_secs_f64());
}
