//! `coordinator:` settings: the coordinator's servers, its queue and the
//! workers it dials.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::ConfigError;
use super::error::{nonzero, positive};

/// `coordinator:` settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct CoordinatorConfig {
    /// Address the servers bind to.
    pub bind_address: String,
    /// gRPC port (9000).
    pub grpc_port: u16,
    /// HTTP port for health, metrics, API and dashboard (8080).
    pub http_port: u16,
    /// A worker that has not sent a heartbeat for this long leaves the pool.
    #[serde(with = "humantime_serde")]
    pub heartbeat_ttl: Duration,
    /// Tasks in flight at once; more wait in the queue.
    pub max_concurrent_tasks: usize,
    /// Tasks that may wait for admission; more are refused at once.
    pub max_queued_tasks: usize,
    /// Workers to dial directly (`host:port`), for other subnets.
    pub static_workers: Vec<String>,
    /// Largest compile request accepted, in bytes: the gRPC message and
    /// the decoded size of its files; larger ones are refused at once.
    pub max_request_bytes: usize,
    /// The Remote Execution API endpoint (`coordinator.reapi.*`).
    pub reapi: ReapiConfig,
}

/// `coordinator.reapi:` the Remote Execution API (REAPI v2) served on the
/// coordinator's gRPC port, with its TLS and token (docs/reapi.md).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct ReapiConfig {
    /// Serve it (off by default).
    pub enabled: bool,
    /// The instance name clients must give (`--remote_instance_name`);
    /// empty: the default instance, which clients use when they give none.
    pub instance_name: String,
}

/// Path segments REAPI reserves in resource names: an instance name made
/// of them would be ambiguous in ByteStream paths.
const RESERVED_SEGMENTS: &[&str] = &[
    "blobs",
    "uploads",
    "actions",
    "actionResults",
    "operations",
    "capabilities",
    "compressed-blobs",
];

impl ReapiConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        let name = &self.instance_name;
        if name.is_empty() {
            return Ok(());
        }
        let bad = |why: &str| {
            Err(ConfigError::key(
                "coordinator.reapi.instance_name",
                format!("{name:?} {why}"),
            ))
        };
        if name.starts_with('/') || name.ends_with('/') {
            return bad("must not start or end with '/'");
        }
        for seg in name.split('/') {
            if seg.is_empty() || seg == "." || seg == ".." {
                return bad("has an empty, '.' or '..' segment");
            }
            if RESERVED_SEGMENTS.contains(&seg) {
                return bad(&format!(
                    "uses {seg:?}, a word REAPI reserves in resource names"
                ));
            }
            if !seg
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            {
                return bad("may hold only letters, digits, '-', '_', '.' and '/'");
            }
        }
        Ok(())
    }
}

impl Default for CoordinatorConfig {
    fn default() -> Self {
        CoordinatorConfig {
            bind_address: "0.0.0.0".into(),
            grpc_port: 9000,
            http_port: 8080,
            heartbeat_ttl: Duration::from_secs(30),
            max_concurrent_tasks: 500,
            max_queued_tasks: 1000,
            static_workers: Vec::new(),
            max_request_bytes: 256 * 1024 * 1024,
            reapi: ReapiConfig::default(),
        }
    }
}

impl CoordinatorConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        positive(
            "coordinator.max_concurrent_tasks",
            self.max_concurrent_tasks,
        )?;
        positive("coordinator.max_request_bytes", self.max_request_bytes)?;
        nonzero("coordinator.heartbeat_ttl", self.heartbeat_ttl)?;
        self.reapi.validate()?;
        for (i, w) in self.static_workers.iter().enumerate() {
            crate::addr::parse_host_port(w).map_err(|e| {
                ConfigError::key(format!("coordinator.static_workers[{i}]"), e.to_string())
            })?;
        }
        Ok(())
    }
}
