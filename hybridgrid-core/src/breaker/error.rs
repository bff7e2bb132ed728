//! The breaker's error.

use crate::worker::WorkerId;

/// A call refused because the worker's circuit is open (or half-open with
/// its one probe already out). Retrying on another worker may succeed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("circuit breaker open for worker {worker}")]
pub struct CircuitOpenError {
    /// The worker whose circuit refused the call.
    pub worker: WorkerId,
}
