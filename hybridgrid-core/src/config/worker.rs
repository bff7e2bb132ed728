//! `worker:` settings: the worker's servers, its tasks, how compilers are
//! isolated and Docker.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::ConfigError;
use super::error::{host_port, nonzero, positive};

/// `worker:` settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct WorkerConfig {
    /// The worker's id (default: the host name).
    pub id: String,
    /// Address the servers bind to.
    pub bind_address: String,
    /// gRPC port (50052).
    pub grpc_port: u16,
    /// HTTP port (9090).
    pub http_port: u16,
    /// The coordinator to register with (`host:port`); empty: find it by mDNS.
    pub coordinator: String,
    /// The `host:port` the coordinator dials back; empty: derived.
    pub advertise_address: String,
    /// Compiles run at once.
    pub max_concurrent_tasks: usize,
    /// A compile running longer is killed (`deadline exceeded`).
    #[serde(with = "humantime_serde")]
    pub task_timeout: Duration,
    /// How often the worker sends a heartbeat.
    #[serde(with = "humantime_serde")]
    pub heartbeat_interval: Duration,
    /// Largest output (object plus diagnostics) a compile may produce, in bytes.
    pub max_output_bytes: u64,
    /// Largest compile request accepted, in bytes: the gRPC message and
    /// the decoded size of its files; larger ones are refused at once.
    pub max_request_bytes: usize,
    /// How native compiles are isolated (`auto`, `off`, `bubblewrap`, `unshare`).
    pub isolation: IsolationMode,
    /// Where task directories are written; empty: `TMPDIR` if set, else
    /// `/dev/shm` when it is a tmpfs with room, else the system temp dir.
    pub work_dir: String,
    /// Most MiB of compiles' source files the worker keeps by digest, in an
    /// `hg-inputs-N` directory beside its task directories (kept across
    /// restarts), so that later compiles send them by digest only; 0 keeps
    /// none.
    pub input_store_mb: u64,
    /// `worker.docker:` settings.
    pub docker: DockerConfig,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        WorkerConfig {
            id: String::new(),
            bind_address: "0.0.0.0".into(),
            grpc_port: 50052,
            http_port: 9090,
            coordinator: String::new(),
            advertise_address: String::new(),
            max_concurrent_tasks: 4,
            task_timeout: Duration::from_secs(300),
            heartbeat_interval: Duration::from_secs(5),
            max_output_bytes: 256 * 1024 * 1024,
            max_request_bytes: 256 * 1024 * 1024,
            isolation: IsolationMode::Auto,
            work_dir: String::new(),
            input_store_mb: 512,
            docker: DockerConfig::default(),
        }
    }
}

/// `worker.isolation:` how the native executor isolates a compiler.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum IsolationMode {
    /// The best available: `bubblewrap`, else `unshare`, else none (warned).
    #[default]
    Auto,
    /// No isolation: the compiler runs as the worker, with its network and files.
    Off,
    /// `bwrap`: no network, read-only system, only the task directory writable.
    Bubblewrap,
    /// `unshare --net --map-root-user`: no network (files are not protected).
    Unshare,
}

impl IsolationMode {
    /// The configuration spelling (`auto`, `off`, `bubblewrap`, `unshare`).
    pub fn as_str(self) -> &'static str {
        match self {
            IsolationMode::Auto => "auto",
            IsolationMode::Off => "off",
            IsolationMode::Bubblewrap => "bubblewrap",
            IsolationMode::Unshare => "unshare",
        }
    }
}

/// `worker.docker:` settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct DockerConfig {
    /// Use Docker for cross-compiles when a daemon is available.
    pub enabled: bool,
    /// Target architecture -> image.
    pub images: BTreeMap<String, String>,
}

impl Default for DockerConfig {
    fn default() -> Self {
        let mut images = BTreeMap::new();
        images.insert("arm64".into(), "dockcross/linux-arm64".into());
        images.insert("armv7".into(), "dockcross/linux-armv7".into());
        DockerConfig {
            enabled: true,
            images,
        }
    }
}

impl WorkerConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        positive("worker.max_concurrent_tasks", self.max_concurrent_tasks)?;
        positive("worker.max_request_bytes", self.max_request_bytes)?;
        nonzero("worker.task_timeout", self.task_timeout)?;
        nonzero("worker.heartbeat_interval", self.heartbeat_interval)?;
        host_port("worker.coordinator", &self.coordinator)?;
        host_port("worker.advertise_address", &self.advertise_address)
    }
}
