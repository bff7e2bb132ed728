//! The scheduler's error.

use crate::error::BoxError;
use crate::worker::WorkerId;

/// A worker's call failed. Keeps the worker (so a retry can avoid it) and
/// the cause (so [`GridError::find`](crate::GridError::find) still
/// classifies it).
#[derive(Debug, thiserror::Error)]
#[error("worker {worker}: {source}")]
pub struct WorkerError {
    /// The worker that failed.
    pub worker: WorkerId,
    /// Why.
    #[source]
    pub source: BoxError,
}

impl WorkerError {
    /// The worker named by a [`WorkerError`] in `err`'s chain, if any.
    pub fn worker_of<'a>(err: &'a (dyn std::error::Error + 'static)) -> Option<&'a WorkerId> {
        let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err);
        while let Some(e) = cur {
            if let Some(w) = e.downcast_ref::<WorkerError>() {
                return Some(&w.worker);
            }
            cur = e.source();
        }
        None
    }
}
