//! `logging:` and `metrics:` settings, and the parser of log levels and
//! filters that checks `logging.level`.

use serde::{Deserialize, Serialize};
use tracing_subscriber::EnvFilter;

use super::ConfigError;

/// Log output formats.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// `key=value` lines (logfmt).
    #[default]
    Console,
    /// One JSON object a line.
    Json,
}

/// `logging:` settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct LoggingConfig {
    /// `error`, `warn`, `info`, `debug`, `trace`, or a filter such as
    /// `info,hybridgrid_net=debug`.
    pub level: String,
    /// `console` or `json`.
    pub format: LogFormat,
    /// Append logs to this file instead of standard error.
    pub file: String,
}

impl Default for LoggingConfig {
    fn default() -> Self {
        LoggingConfig {
            level: "info".into(),
            format: LogFormat::Console,
            file: String::new(),
        }
    }
}

/// `metrics:` settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct MetricsConfig {
    /// Serve Prometheus metrics.
    pub enabled: bool,
    /// Path of the metrics endpoint.
    pub path: String,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            enabled: true,
            path: "/metrics".into(),
        }
    }
}

/// Parses a level or filter directive (`info`, `debug,tower=warn`).
pub fn parse_filter(level: &str) -> Result<EnvFilter, String> {
    let level = level.trim();
    if level.is_empty() {
        return Err("must not be empty; use error, warn, info, debug or trace".into());
    }
    EnvFilter::builder().parse(level).map_err(|e| {
        format!(
            "`{level}` is not a log level or filter ({e}); use error, warn, info, debug or trace"
        )
    })
}

impl LoggingConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        parse_filter(&self.level).map_err(|e| ConfigError::key("logging.level", e))?;
        Ok(())
    }
}

impl MetricsConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if !self.path.starts_with('/') {
            return Err(ConfigError::key("metrics.path", "must start with `/`"));
        }
        Ok(())
    }
}
