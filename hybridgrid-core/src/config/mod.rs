//! Configuration: the types, their defaults, and the loader.
//!
//! Precedence, lowest first: built-in defaults, the YAML file
//! (`--config FILE`, else the first of `./hybridgrid.yaml`,
//! `~/.hybridgrid/config.yaml`, `/etc/hybridgrid/config.yaml`), environment
//! variables (`HG_SECTION__KEY`, plus the short forms `HG_LOG_LEVEL`,
//! `HG_LOG_FORMAT`, `HG_COORDINATOR`, `HG_CC`, `HG_CXX`), then flags.
//!
//! Unknown keys, bad values and unreadable files are errors that name the
//! key or the file.
//!
//! ```
//! use hybridgrid_core::config::ConfigLoader;
//!
//! let cfg = ConfigLoader::new()
//!     .no_search()
//!     .env_vars([("HG_WORKER__MAX_CONCURRENT_TASKS", "8")])
//!     .set("coordinator.grpc_port", 9100)
//!     .load()
//!     .unwrap();
//! assert_eq!(cfg.worker.max_concurrent_tasks, 8);
//! assert_eq!(cfg.coordinator.grpc_port, 9100);
//! assert_eq!(cfg.coordinator.http_port, 8080);
//! ```

//! The parts, one file per section, each with its defaults and the checks
//! that name its keys:
//!
//! | file | sections |
//! |---|---|
//! | `coordinator.rs` | `coordinator:` |
//! | `worker.rs` | `worker:` (with `worker.docker:`, `worker.isolation`) |
//! | `client.rs` | `client:` (hgbuild) |
//! | `cache.rs` | `cache:` (with `cache.remote:`) |
//! | `discovery.rs` | `discovery:` |
//! | `scheduler.rs` | `scheduler:` |
//! | `resilience.rs` | `resilience:` |
//! | `security.rs` | `tls:`, `auth:` |
//! | `logging.rs` | `logging:`, `metrics:` |
//! | `error.rs` | [`ConfigError`] |
//! | `loader.rs` | [`ConfigLoader`]: defaults, file, environment, flags |

mod cache;
mod client;
mod coordinator;
mod discovery;
mod error;
mod loader;
mod logging;
mod resilience;
mod scheduler;
mod security;
#[cfg(test)]
mod tests;
mod worker;

pub use cache::{CacheConfig, REMOTE_BACKENDS, REMOTE_LAYOUTS, RemoteCacheConfig, redact_url};
pub use client::ClientConfig;
pub use coordinator::{CoordinatorConfig, ReapiConfig};
pub use discovery::{DiscoveryConfig, MdnsConfig};
pub use error::ConfigError;
pub use loader::{ConfigLoader, ENV_ALIASES, ENV_CONFIG_FILE, default_search_paths, expand_home};
pub use logging::{LogFormat, LoggingConfig, MetricsConfig, parse_filter};
pub use resilience::{CircuitBreakerConfig, FallbackConfig, ResilienceConfig, RetryConfig};
pub use scheduler::{Algorithm, HedgeConfig, SchedulerConfig, ScoreWeights};
pub use security::{AuthConfig, TlsConfig};
pub use worker::{DockerConfig, IsolationMode, WorkerConfig};

use serde::{Deserialize, Serialize};

/// The whole configuration of hybridgrid (all three binaries share it).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct Config {
    /// `coordinator:` section.
    pub coordinator: CoordinatorConfig,
    /// `worker:` section.
    pub worker: WorkerConfig,
    /// `client:` section (hgbuild).
    pub client: ClientConfig,
    /// `cache:` section.
    pub cache: CacheConfig,
    /// `discovery:` section.
    pub discovery: DiscoveryConfig,
    /// `scheduler:` section.
    pub scheduler: SchedulerConfig,
    /// `resilience:` section.
    pub resilience: ResilienceConfig,
    /// `tls:` section.
    pub tls: TlsConfig,
    /// `auth:` section.
    pub auth: AuthConfig,
    /// `logging:` section.
    pub logging: LoggingConfig,
    /// `metrics:` section.
    pub metrics: MetricsConfig,
}

impl Config {
    /// The defaults, with nothing read.
    pub fn defaults() -> Self {
        Config::default()
    }

    /// Checks value ranges that types cannot express, section by section.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.coordinator.validate()?;
        self.worker.validate()?;
        self.client.validate()?;
        self.resilience.validate()?;
        self.cache.validate()?;
        self.logging.validate()?;
        self.metrics.validate()?;
        self.auth.validate()?;
        self.tls.validate()
    }
}
