//! The breaker layer.

use tower::Layer;

use super::{Breaker, CircuitHandle};
use crate::config::CircuitBreakerConfig;
use crate::worker::WorkerId;

/// Wraps one worker's service in a [`Breaker`]. A layer is per worker: it
/// carries the worker's [`CircuitHandle`].
#[derive(Clone, Debug)]
pub struct BreakerLayer {
    circuit: CircuitHandle,
}

impl BreakerLayer {
    /// A layer that guards services with `circuit`.
    pub const fn new(circuit: CircuitHandle) -> Self {
        BreakerLayer { circuit }
    }

    /// A layer with a fresh circuit for `worker`.
    pub fn for_worker(worker: WorkerId, config: CircuitBreakerConfig) -> Self {
        BreakerLayer::new(CircuitHandle::new(worker, config))
    }

    /// The circuit the layer's services share.
    pub fn circuit(&self) -> &CircuitHandle {
        &self.circuit
    }
}

impl<S> Layer<S> for BreakerLayer {
    type Service = Breaker<S>;

    fn layer(&self, inner: S) -> Breaker<S> {
        Breaker::new(inner, self.circuit.clone())
    }
}
