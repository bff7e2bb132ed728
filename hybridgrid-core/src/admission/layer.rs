//! The admission layer.

use tower::Layer;

use super::Admission;

/// Wraps a service in an [`Admission`] limit; the services it makes share
/// one limit.
#[derive(Clone, Debug)]
pub struct AdmissionLayer {
    limit: super::Limit,
}

impl AdmissionLayer {
    /// At most `max_concurrent` tasks in flight and `max_queued` waiting.
    pub fn new(max_concurrent: usize, max_queued: usize) -> Self {
        AdmissionLayer {
            limit: super::Limit::new(max_concurrent, max_queued),
        }
    }
}

impl<S> Layer<S> for AdmissionLayer {
    type Service = Admission<S>;

    fn layer(&self, inner: S) -> Admission<S> {
        Admission {
            inner,
            limit: self.limit.clone(),
        }
    }
}
