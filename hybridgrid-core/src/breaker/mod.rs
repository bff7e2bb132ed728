//! A per-worker circuit breaker, as tower middleware.
//!
//! The circuit counts the outcomes of calls to one worker over a window of
//! the last `request_threshold` calls. When at least `request_threshold`
//! calls were counted and the share of failures reaches
//! `failure_rate_threshold`, it opens: calls are refused for `open_timeout`.
//! Then it is half-open and admits exactly one probe: success closes it,
//! failure opens it again.
//!
//! Only the worker's faults count as failures: an error whose [`GridError`]
//! is a worker fault, or an error nobody classified. A compile that ran and
//! failed (an `Ok` with a non-zero exit code) is a success.
//!
//! The breaker works through readiness: [`Breaker::poll_ready`] fails at once
//! with [`CircuitOpenError`] when the circuit refuses, and
//! [`CircuitHandle::admits`] lets the scheduler route around open workers
//! without calling them.
//!
//! ```
//! use hybridgrid_core::breaker::{BreakerLayer, CircuitState};
//! use hybridgrid_core::config::CircuitBreakerConfig;
//! use tower::Layer;
//!
//! let layer = BreakerLayer::for_worker("w1".into(), CircuitBreakerConfig::default());
//! let svc = layer.layer(tower::service_fn(|_t: hybridgrid_core::task::CompileTask| async {
//!     Ok::<_, hybridgrid_core::BoxError>(hybridgrid_core::task::CompileOutput::default())
//! }));
//! assert_eq!(svc.circuit().state(), CircuitState::Closed);
//! ```

mod circuit;
mod error;
mod layer;

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use pin_project_lite::pin_project;
use tower::Service;

pub use self::circuit::{CircuitHandle, CircuitState, Outcome, Ticket};
pub use self::error::CircuitOpenError;
pub use self::layer::BreakerLayer;
use crate::error::{BoxError, GridError};
use crate::task::CompileOutput;

/// True if `err` counts against a worker: a [`GridError`] that is a worker
/// fault, or an error with no `GridError` in its chain.
pub fn is_worker_fault(err: &(dyn std::error::Error + 'static)) -> bool {
    GridError::find(err).is_none_or(GridError::is_worker_fault)
}

/// How the circuit counts a call's result.
pub fn classify(result: &Result<CompileOutput, BoxError>) -> Outcome {
    match result {
        Ok(_) => Outcome::Success,
        Err(e) if is_worker_fault(e.as_ref()) => Outcome::Failure,
        Err(_) => Outcome::Ignored,
    }
}

/// Guards a worker's service with its circuit.
#[derive(Debug)]
pub struct Breaker<S> {
    inner: S,
    circuit: CircuitHandle,
    ticket: Option<Ticket>,
}

impl<S: Clone> Clone for Breaker<S> {
    fn clone(&self) -> Self {
        // A clone is not ready: it takes its own ticket.
        Breaker {
            inner: self.inner.clone(),
            circuit: self.circuit.clone(),
            ticket: None,
        }
    }
}

impl<S> Breaker<S> {
    /// Guards `inner` with `circuit`.
    pub fn new(inner: S, circuit: CircuitHandle) -> Self {
        Breaker {
            inner,
            circuit,
            ticket: None,
        }
    }

    /// The circuit.
    pub fn circuit(&self) -> &CircuitHandle {
        &self.circuit
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// The inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, R> Service<R> for Breaker<S>
where
    S: Service<R, Response = CompileOutput, Error = BoxError>,
{
    type Response = CompileOutput;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        if self.ticket.is_none() {
            self.ticket = Some(self.circuit.try_acquire()?);
        }
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: R) -> Self::Future {
        let ticket = match self.ticket.take() {
            Some(t) => Ok(t),
            None => self.circuit.try_acquire(),
        };
        match ticket {
            Ok(t) => ResponseFuture {
                kind: Kind::Called {
                    inner: self.inner.call(req),
                    ticket: Some(t),
                },
            },
            Err(e) => ResponseFuture {
                kind: Kind::Refused { error: Some(e) },
            },
        }
    }
}

pin_project! {
    #[project = Proj]
    enum Kind<F> {
        Called { #[pin] inner: F, ticket: Option<Ticket> },
        Refused { error: Option<CircuitOpenError> },
    }
}

pin_project! {
    /// The future of a [`Breaker`] call.
    pub struct ResponseFuture<F> {
        #[pin]
        kind: Kind<F>,
    }
}

impl<F> std::fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("breaker::ResponseFuture")
    }
}

impl<F> Future for ResponseFuture<F>
where
    F: Future<Output = Result<CompileOutput, BoxError>>,
{
    type Output = Result<CompileOutput, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            Proj::Called { inner, ticket } => {
                let res = ready!(inner.poll(cx));
                if let Some(t) = ticket.take() {
                    t.record(classify(&res));
                }
                Poll::Ready(res)
            }
            Proj::Refused { error } => Poll::Ready(Err(match error.take() {
                Some(e) => e.into(),
                None => "breaker future polled after completion".into(),
            })),
        }
    }
}

#[cfg(test)]
mod tests;
