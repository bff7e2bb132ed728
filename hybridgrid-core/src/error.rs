//! Errors shared across crates.
//!
//! A compile that ran and failed (a syntax error in the user's code) is not
//! an error here: it is an `Ok(CompileOutput)` with a non-zero exit code.
//! [`GridError`] is for everything else: the grid could not run the task.

use std::time::Duration;

/// The error type at service boundaries.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Why the grid could not run a task.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum GridError {
    /// No registered worker can run the task (none at all, or none with the
    /// task's compiler and target).
    #[error("no worker available: {0}")]
    NoWorker(String),
    /// Workers that could run the task exist, but every one's circuit is open.
    #[error("no worker available: circuit breaker open for every capable worker")]
    CircuitOpen,
    /// The coordinator's admission limit and queue are full.
    #[error("resource exhausted: {0}")]
    Overloaded(String),
    /// A worker could not be reached or dropped the call.
    #[error("worker {worker} unreachable: {reason}")]
    WorkerUnavailable {
        /// The worker.
        worker: String,
        /// What went wrong.
        reason: String,
    },
    /// The coordinator could not be reached (the client compiles locally).
    #[error("coordinator unreachable: {0}")]
    CoordinatorUnavailable(String),
    /// The task ran out of time.
    #[error("deadline exceeded after {0:?}")]
    DeadlineExceeded(Duration),
    /// The task is malformed or refused (bad arguments, too large...).
    #[error("invalid task: {0}")]
    InvalidTask(String),
    /// Docker was needed and is not usable.
    #[error("Docker not available: {0}")]
    DockerUnavailable(String),
    /// Something failed inside a worker or the coordinator.
    #[error("internal error: {0}")]
    Internal(String),
    /// A compile from source named files by digest only that the worker
    /// does not have (their client paths): the client sends the task again
    /// with their content. Not the worker's fault, and another worker would
    /// not do better.
    #[error("the worker lacks files sent by digest only: {}", .0.join(", "))]
    MissingInputs(Vec<String>),
    /// The server refused the caller's credentials (a missing or wrong
    /// auth token); the message says which and never contains a token.
    #[error("unauthenticated: {0}")]
    Unauthenticated(String),
}

impl GridError {
    /// True if running the task on another worker may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            GridError::WorkerUnavailable { .. }
                | GridError::DeadlineExceeded(_)
                | GridError::Internal(_)
                | GridError::DockerUnavailable(_)
        )
    }

    /// True if the failure is the worker's fault (it counts against the
    /// worker's circuit breaker). A user's compile error never is.
    pub fn is_worker_fault(&self) -> bool {
        matches!(
            self,
            GridError::WorkerUnavailable { .. }
                | GridError::DeadlineExceeded(_)
                | GridError::Internal(_)
        )
    }

    /// Finds a `GridError` in a boxed error's chain.
    pub fn find<'a>(err: &'a (dyn std::error::Error + 'static)) -> Option<&'a GridError> {
        let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err);
        while let Some(e) = cur {
            if let Some(g) = e.downcast_ref::<GridError>() {
                return Some(g);
            }
            cur = e.source();
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_carry_the_contract_words() {
        assert!(
            GridError::CircuitOpen
                .to_string()
                .contains("circuit breaker open")
        );
        assert!(
            GridError::DeadlineExceeded(Duration::from_secs(1))
                .to_string()
                .contains("deadline exceeded")
        );
        assert!(
            GridError::DockerUnavailable("no socket".into())
                .to_string()
                .starts_with("Docker not available: ")
        );
    }

    #[test]
    fn classification() {
        let unreachable = GridError::WorkerUnavailable {
            worker: "w".into(),
            reason: "connection refused".into(),
        };
        assert!(unreachable.is_retryable() && unreachable.is_worker_fault());
        assert!(!GridError::InvalidTask("x".into()).is_retryable());
        assert!(!GridError::Overloaded("x".into()).is_worker_fault());
        let missing = GridError::MissingInputs(vec!["/usr/include/a.h".into()]);
        assert!(!missing.is_retryable() && !missing.is_worker_fault());
        let boxed: BoxError = Box::new(unreachable.clone());
        assert_eq!(GridError::find(boxed.as_ref()), Some(&unreachable));
    }
}
