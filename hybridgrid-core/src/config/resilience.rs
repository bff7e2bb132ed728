//! `resilience:` settings: circuit breakers, retries and local fallback.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::ConfigError;
use super::error::nonzero;

/// `resilience:` settings.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct ResilienceConfig {
    /// Per-worker circuit breaker.
    pub circuit_breaker: CircuitBreakerConfig,
    /// Retries on another worker.
    pub retry: RetryConfig,
    /// Local fallback in hgbuild.
    pub fallback: FallbackConfig,
}

/// `resilience.circuit_breaker:` settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct CircuitBreakerConfig {
    /// Requests in the window before the failure rate is judged.
    pub request_threshold: u32,
    /// Failure rate (0..1] that opens the circuit.
    pub failure_rate_threshold: f64,
    /// How long an open circuit waits before a half-open probe.
    #[serde(with = "humantime_serde")]
    pub open_timeout: Duration,
}

impl Default for CircuitBreakerConfig {
    fn default() -> Self {
        CircuitBreakerConfig {
            request_threshold: 10,
            failure_rate_threshold: 0.6,
            open_timeout: Duration::from_secs(30),
        }
    }
}

/// `resilience.retry:` settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct RetryConfig {
    /// Retries after the first attempt.
    pub max_retries: u32,
    /// Backoff before the first retry.
    #[serde(with = "humantime_serde")]
    pub initial_interval: Duration,
    /// Largest backoff.
    #[serde(with = "humantime_serde")]
    pub max_interval: Duration,
    /// Backoff growth per retry.
    pub multiplier: f64,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            max_retries: 3,
            initial_interval: Duration::from_millis(100),
            max_interval: Duration::from_secs(5),
            multiplier: 2.0,
        }
    }
}

/// `resilience.fallback:` settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct FallbackConfig {
    /// Compile locally when the grid cannot.
    pub enabled: bool,
}

impl Default for FallbackConfig {
    fn default() -> Self {
        FallbackConfig { enabled: true }
    }
}

impl ResilienceConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        nonzero(
            "resilience.circuit_breaker.open_timeout",
            self.circuit_breaker.open_timeout,
        )?;
        let rate = self.circuit_breaker.failure_rate_threshold;
        if !(rate > 0.0 && rate <= 1.0) {
            return Err(ConfigError::key(
                "resilience.circuit_breaker.failure_rate_threshold",
                format!("must be in (0, 1], got {rate}"),
            ));
        }
        if self.circuit_breaker.request_threshold == 0 {
            return Err(ConfigError::key(
                "resilience.circuit_breaker.request_threshold",
                "must be at least 1",
            ));
        }
        let m = self.retry.multiplier;
        if !(m.is_finite() && m >= 1.0) {
            return Err(ConfigError::key(
                "resilience.retry.multiplier",
                format!("must be a number >= 1.0, got {m}"),
            ));
        }
        if self.retry.initial_interval > self.retry.max_interval {
            return Err(ConfigError::key(
                "resilience.retry.initial_interval",
                "must not exceed resilience.retry.max_interval",
            ));
        }
        Ok(())
    }
}
