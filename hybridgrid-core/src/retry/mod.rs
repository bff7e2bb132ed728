//! Retries on another worker, with exponential backoff.
//!
//! A task that failed with a retryable error ([`GridError::is_retryable`]:
//! the worker was unreachable, timed out, failed internally or lacked
//! Docker; or the worker's circuit refused it) is tried again on a worker
//! not tried before, after `initial_interval`, then `multiplier` times
//! longer each time up to `max_interval`, at most `max_retries` times. Each
//! retry increments `hybridgrid_retries_total`. When no untried worker is
//! left the last worker's error is returned.
//!
//! `Retry` wraps a `Service<Attempt>` (the [scheduler](crate::scheduler),
//! maybe behind [hedging](crate::hedge)) and is a `Service<CompileTask>`.

mod layer;

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use tower::{Service, ServiceExt};

pub use self::layer::RetryLayer;
use crate::breaker::CircuitOpenError;
use crate::config::RetryConfig;
use crate::error::{BoxError, GridError};
use crate::scheduler::{Attempt, WorkerError};
use crate::task::{CompileOutput, CompileTask};

/// True if running the task on another worker may succeed.
pub fn is_retryable(err: &(dyn std::error::Error + 'static)) -> bool {
    if let Some(g) = GridError::find(err) {
        return g.is_retryable();
    }
    let mut cur = Some(err);
    while let Some(e) = cur {
        if e.is::<CircuitOpenError>() {
            return true;
        }
        cur = e.source();
    }
    false
}

fn no_worker_left(err: &(dyn std::error::Error + 'static)) -> bool {
    matches!(
        GridError::find(err),
        Some(GridError::NoWorker(_) | GridError::CircuitOpen)
    ) && WorkerError::worker_of(err).is_none()
}

/// Retries retryable failures on other workers.
#[derive(Clone, Debug)]
pub struct Retry<S> {
    inner: S,
    config: RetryConfig,
}

impl<S> Retry<S> {
    /// Retries calls to `inner` per `config`.
    pub fn new(inner: S, config: RetryConfig) -> Self {
        Retry { inner, config }
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

/// The future of a [`Retry`] call.
pub type ResponseFuture = Pin<Box<dyn Future<Output = Result<CompileOutput, BoxError>> + Send>>;

impl<S> Service<CompileTask> for Retry<S>
where
    S: Service<Attempt, Response = CompileOutput, Error = BoxError> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = CompileOutput;
    type Error = BoxError;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, task: CompileTask) -> ResponseFuture {
        // The first attempt uses the service that was made ready.
        let first = self.inner.call(Attempt::new(task.clone()));
        let inner = self.inner.clone();
        let cfg = self.config.clone();
        Box::pin(async move {
            let mut result = first.await;
            let mut tried = Vec::new();
            let mut backoff = cfg.initial_interval;
            for retry in 1..=cfg.max_retries {
                let err = match result {
                    Ok(out) => return Ok(out),
                    Err(e) => e,
                };
                if !is_retryable(err.as_ref()) {
                    return Err(err);
                }
                let worker = WorkerError::worker_of(err.as_ref()).cloned();
                tracing::warn!(task_id = %task.id, worker = ?worker.as_ref().map(|w| &w.0),
                    error = %err, retry, "retrying on another worker");
                tried.extend(worker);
                metrics::counter!("hybridgrid_retries_total").increment(1);
                tokio::time::sleep(backoff).await;
                backoff = backoff.mul_f64(cfg.multiplier).min(cfg.max_interval);
                let attempt = Attempt {
                    task: task.clone(),
                    exclude: tried.clone(),
                    route: None,
                };
                result = match inner.clone().oneshot(attempt).await {
                    Err(e) if no_worker_left(e.as_ref()) => return Err(err),
                    r => r,
                };
            }
            result
        })
    }
}

#[cfg(test)]
mod tests;
