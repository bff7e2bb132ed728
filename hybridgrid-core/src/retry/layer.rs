//! The retry layer.

use tower::Layer;

use super::Retry;
use crate::config::RetryConfig;

/// Wraps a scheduler (a `Service<Attempt>`) in a [`Retry`].
#[derive(Clone, Debug)]
pub struct RetryLayer {
    config: RetryConfig,
}

impl RetryLayer {
    /// A layer retrying per `config`.
    pub const fn new(config: RetryConfig) -> Self {
        RetryLayer { config }
    }
}

impl<S> Layer<S> for RetryLayer {
    type Service = Retry<S>;

    fn layer(&self, inner: S) -> Retry<S> {
        Retry::new(inner, self.config.clone())
    }
}
