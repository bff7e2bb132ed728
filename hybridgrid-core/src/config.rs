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

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

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
        }
    }
}

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

/// `client:` settings (used by hgbuild).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct ClientConfig {
    /// The coordinator (`host:port`); empty: find it by mDNS, else compile locally.
    pub coordinator: String,
    /// The C compiler `hgbuild cc` runs (default `cc`).
    pub cc: String,
    /// The C++ compiler `hgbuild c++` runs (default `c++`).
    pub cxx: String,
    /// How long to wait for a connection to the coordinator.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// How long a remote compile may take end to end before falling back.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// Send `-g` compiles to the grid, compiled from source so their
    /// objects are byte-identical to a local build's; off compiles them
    /// locally.
    pub remote_debug_info: bool,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            coordinator: String::new(),
            cc: String::new(),
            cxx: String::new(),
            connect_timeout: Duration::from_secs(2),
            request_timeout: Duration::from_secs(360),
            remote_debug_info: true,
        }
    }
}

/// `cache:` settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct CacheConfig {
    /// Cache results at all.
    pub enabled: bool,
    /// Where the local cache lives (`~` is the home directory).
    pub dir: String,
    /// Size limit in GB (10^9 bytes); least recently used entries go first.
    pub max_size_gb: f64,
    /// hgbuild: find repeat compiles without running the preprocessor, from
    /// a manifest of the files the last compile read (like ccache's direct
    /// mode).
    pub direct_mode: bool,
    /// hg-coord: results waiting to be written to its shared tier at most
    /// (written by a background thread after the answer went out); more
    /// are dropped and counted. 0 writes each result before answering.
    pub max_pending_writes: usize,
    /// `cache.remote:` a shared tier on an existing storage server.
    pub remote: RemoteCacheConfig,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            enabled: true,
            dir: "~/.hybridgrid/cache".into(),
            max_size_gb: 10.0,
            direct_mode: true,
            max_pending_writes: 1024,
            remote: RemoteCacheConfig::default(),
        }
    }
}

/// The storage servers `cache.remote.backend` can name.
pub const REMOTE_BACKENDS: &[&str] = &["redis", "webdav", "http", "s3"];

/// The key layouts `cache.remote.layout` can name.
pub const REMOTE_LAYOUTS: &[&str] = &["subdirs", "flat", "bazel"];

/// `cache.remote:` settings: a shared cache tier on Redis, a WebDAV or
/// plain HTTP server, or an S3-compatible object store.
///
/// Secrets are never written here: passwords and secret keys come from a
/// file or an environment variable (`*_file`, `*_env`), and a password in
/// `url` is redacted wherever the URL is shown ([`redact_url`]).
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct RemoteCacheConfig {
    /// `redis`, `webdav`, `http` or `s3`; empty: no remote tier.
    pub backend: String,
    /// Where the server is: `redis://host:6379/0`, `http://host/cache`,
    /// or for `s3` the endpoint (empty: the provider's default).
    pub url: String,
    /// Read entries but never write any (developers' laptops, untrusted
    /// clients).
    pub read_only: bool,
    /// Where an entry lives under `prefix`: `subdirs` (`ab/cdef...`, as
    /// ccache's HTTP storage), `flat`, or `bazel` (`ac/<64 hex>`).
    pub layout: String,
    /// A path (key prefix) under which every entry is kept.
    pub prefix: String,
    /// `s3`: the bucket.
    pub bucket: String,
    /// `s3`: the region (empty: `us-east-1`).
    pub region: String,
    /// User name for Redis ACLs or HTTP basic authentication.
    pub username: String,
    /// A file holding the password (Redis, WebDAV/HTTP).
    pub password_file: String,
    /// An environment variable holding the password.
    pub password_env: String,
    /// `s3`: the access key id (empty: the standard AWS environment and
    /// configuration files are used).
    pub access_key_id: String,
    /// `s3`: a file holding the secret access key.
    pub secret_access_key_file: String,
    /// `s3`: an environment variable holding the secret access key.
    pub secret_access_key_env: String,
    /// Longest a lookup may take; slower counts as an error (a miss).
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Longest one background write may take.
    #[serde(with = "humantime_serde")]
    pub write_timeout: Duration,
    /// Writes waiting for the server at most; more are dropped (counted).
    pub max_pending_writes: usize,
    /// After a failure, how long the tier is skipped before it is tried
    /// again (one warning per outage).
    #[serde(with = "humantime_serde")]
    pub retry_after: Duration,
}

impl Default for RemoteCacheConfig {
    fn default() -> Self {
        RemoteCacheConfig {
            backend: String::new(),
            url: String::new(),
            read_only: false,
            layout: "subdirs".into(),
            prefix: "hybridgrid".into(),
            bucket: String::new(),
            region: String::new(),
            username: String::new(),
            password_file: String::new(),
            password_env: String::new(),
            access_key_id: String::new(),
            secret_access_key_file: String::new(),
            secret_access_key_env: String::new(),
            timeout: Duration::from_secs(2),
            write_timeout: Duration::from_secs(10),
            max_pending_writes: 64,
            retry_after: Duration::from_secs(30),
        }
    }
}

impl RemoteCacheConfig {
    /// True when a backend is named.
    pub fn is_configured(&self) -> bool {
        !self.backend.is_empty()
    }

    /// The password from `password_file` or `password_env`, if either is
    /// set.
    pub fn password(&self) -> Result<Option<String>, ConfigError> {
        secret(
            "cache.remote.password_file",
            &self.password_file,
            "cache.remote.password_env",
            &self.password_env,
        )
    }

    /// The S3 secret key from `secret_access_key_file` or
    /// `secret_access_key_env`, if either is set.
    pub fn secret_access_key(&self) -> Result<Option<String>, ConfigError> {
        secret(
            "cache.remote.secret_access_key_file",
            &self.secret_access_key_file,
            "cache.remote.secret_access_key_env",
            &self.secret_access_key_env,
        )
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if !self.is_configured() {
            return Ok(());
        }
        let k = |name: &str| format!("cache.remote.{name}");
        if !REMOTE_BACKENDS.contains(&self.backend.as_str()) {
            return Err(ConfigError::key(
                k("backend"),
                format!(
                    "unknown backend `{}`; expected one of {}",
                    self.backend,
                    REMOTE_BACKENDS.join(", ")
                ),
            ));
        }
        let schemes: &[&str] = match self.backend.as_str() {
            "redis" => &["redis://", "rediss://"],
            _ => &["http://", "https://"],
        };
        if self.url.is_empty() {
            if self.backend != "s3" {
                return Err(ConfigError::key(
                    k("url"),
                    format!("must be set for backend `{}`", self.backend),
                ));
            }
        } else if !schemes.iter().any(|s| self.url.starts_with(s)) {
            return Err(ConfigError::key(
                k("url"),
                format!(
                    "`{}` must start with {} for backend `{}`",
                    redact_url(&self.url),
                    schemes.join(" or "),
                    self.backend
                ),
            ));
        }
        if self.backend == "s3" && self.bucket.is_empty() {
            return Err(ConfigError::key(
                k("bucket"),
                "must be set for backend `s3`",
            ));
        }
        if !REMOTE_LAYOUTS.contains(&self.layout.as_str()) {
            return Err(ConfigError::key(
                k("layout"),
                format!(
                    "unknown layout `{}`; expected one of {}",
                    self.layout,
                    REMOTE_LAYOUTS.join(", ")
                ),
            ));
        }
        for (name, d) in [
            ("timeout", self.timeout),
            ("write_timeout", self.write_timeout),
        ] {
            if d.is_zero() {
                return Err(ConfigError::key(k(name), "must be longer than 0s"));
            }
        }
        if self.max_pending_writes == 0 {
            return Err(ConfigError::key(
                k("max_pending_writes"),
                "must be at least 1",
            ));
        }
        if !self.password_file.is_empty() && !self.password_env.is_empty() {
            return Err(ConfigError::key(
                k("password_env"),
                "set cache.remote.password_file or cache.remote.password_env, not both",
            ));
        }
        if !self.secret_access_key_file.is_empty() && !self.secret_access_key_env.is_empty() {
            return Err(ConfigError::key(
                k("secret_access_key_env"),
                "set cache.remote.secret_access_key_file or \
                 cache.remote.secret_access_key_env, not both",
            ));
        }
        Ok(())
    }
}

impl fmt::Debug for RemoteCacheConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RemoteCacheConfig")
            .field("backend", &self.backend)
            .field("url", &redact_url(&self.url))
            .field("read_only", &self.read_only)
            .field("layout", &self.layout)
            .field("prefix", &self.prefix)
            .field("bucket", &self.bucket)
            .field("region", &self.region)
            .field("username", &self.username)
            .field("password_file", &self.password_file)
            .field("password_env", &self.password_env)
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key_file", &self.secret_access_key_file)
            .field("secret_access_key_env", &self.secret_access_key_env)
            .field("timeout", &self.timeout)
            .field("write_timeout", &self.write_timeout)
            .field("max_pending_writes", &self.max_pending_writes)
            .field("retry_after", &self.retry_after)
            .finish()
    }
}

/// `url` with any password in it (`scheme://user:PASSWORD@host`) replaced
/// by `<redacted>`, for logs and messages.
pub fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_owned();
    };
    let rest = &url[scheme_end + 3..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    let Some(at) = authority.rfind('@') else {
        return url.to_owned();
    };
    let userinfo = &authority[..at];
    let user = match userinfo.find(':') {
        Some(colon) => format!("{}:<redacted>", &userinfo[..colon]),
        None => userinfo.to_owned(),
    };
    format!("{}://{}@{}", &url[..scheme_end], user, &rest[at + 1..])
}

/// Reads a secret from a file (trailing newline removed) or an
/// environment variable; errors name the key.
fn secret(
    file_key: &str,
    file: &str,
    env_key: &str,
    env: &str,
) -> Result<Option<String>, ConfigError> {
    if !file.is_empty() {
        let path = expand_home(file);
        return std::fs::read_to_string(&path)
            .map(|s| Some(s.trim_end_matches(['\n', '\r']).to_owned()))
            .map_err(|e| {
                ConfigError::key(file_key, format!("cannot read {}: {e}", path.display()))
            });
    }
    if !env.is_empty() {
        return std::env::var(env).map(Some).map_err(|_| {
            ConfigError::key(env_key, format!("environment variable {env} is not set"))
        });
    }
    Ok(None)
}

impl CacheConfig {
    /// The cache directory with `~` expanded.
    pub fn dir_path(&self) -> PathBuf {
        expand_home(&self.dir)
    }

    /// The size limit in bytes.
    pub fn max_size_bytes(&self) -> u64 {
        (self.max_size_gb * 1e9) as u64
    }
}

/// `discovery:` settings.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct DiscoveryConfig {
    /// `discovery.mdns:` settings.
    pub mdns: MdnsConfig,
}

/// `discovery.mdns:` settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct MdnsConfig {
    /// Announce and browse with mDNS.
    pub enabled: bool,
    /// Service type (`_hybridgrid._tcp`).
    pub service_name: String,
    /// Domain (`local.`).
    pub domain: String,
    /// Network interfaces to use; empty: all.
    pub interfaces: Vec<String>,
}

impl Default for MdnsConfig {
    fn default() -> Self {
        MdnsConfig {
            enabled: true,
            service_name: "_hybridgrid._tcp".into(),
            domain: "local.".into(),
            interfaces: Vec::new(),
        }
    }
}

/// Scheduling algorithms.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum Algorithm {
    /// Power of two choices over a weighted score.
    #[default]
    P2c,
    /// The worker with the fewest active tasks per slot.
    LeastLoaded,
    /// Learns worker speeds and minimises the build's makespan.
    CostAware,
}

/// `scheduler:` settings.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct SchedulerConfig {
    /// Which algorithm places tasks.
    pub algorithm: Algorithm,
    /// Weights of the P2C score.
    pub weights: ScoreWeights,
    /// Hedging of slow tasks on a second worker.
    pub hedge: HedgeConfig,
}

/// `scheduler.weights:` how much each worker property counts in the P2C
/// score (higher score wins). Each property is normalised to about 0..1.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct ScoreWeights {
    /// Bonus for a worker whose native architecture is the task's target.
    pub native_arch: f64,
    /// Bonus for a worker that cross-compiles to the task's target.
    pub cross_compile: f64,
    /// Bonus per core (up to 64 cores).
    pub cores: f64,
    /// Bonus per GiB of RAM (up to 128 GiB).
    pub memory: f64,
    /// Penalty per active task per slot.
    pub load: f64,
    /// Penalty for latency (EWMA `l` seconds counts `l / (l + 1)`).
    pub latency: f64,
    /// Bonus for a worker on the local network (found by mDNS).
    pub lan: f64,
}

impl Default for ScoreWeights {
    fn default() -> Self {
        ScoreWeights {
            native_arch: 1.0,
            cross_compile: 0.5,
            cores: 0.5,
            memory: 0.25,
            load: 4.0,
            latency: 1.0,
            lan: 0.25,
        }
    }
}

/// `scheduler.hedge:` running a slow task a second time on an idle worker.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct HedgeConfig {
    /// Whether to hedge at all.
    pub enabled: bool,
    /// Hedge when a task runs longer than this many times the p90 duration
    /// learned for its compiler.
    pub p90_multiplier: f64,
    /// Never hedge a task before it has run this long.
    #[serde(with = "humantime_serde")]
    pub min_delay: Duration,
    /// Durations to learn for a compiler before hedging its tasks.
    pub min_samples: u32,
}

impl Default for HedgeConfig {
    fn default() -> Self {
        HedgeConfig {
            enabled: true,
            p90_multiplier: 3.0,
            min_delay: Duration::from_secs(2),
            min_samples: 20,
        }
    }
}

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

/// `tls:` settings.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct TlsConfig {
    /// Use TLS on every gRPC connection.
    pub enabled: bool,
    /// PEM certificate of this process.
    pub cert_file: String,
    /// PEM private key of this process.
    pub key_file: String,
    /// PEM CA bundle to verify peers with.
    pub ca_file: String,
    /// Servers demand a client certificate (mTLS).
    pub require_client_cert: bool,
}

/// `auth:` settings.
#[derive(Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct AuthConfig {
    /// Require a token on every gRPC call.
    pub enabled: bool,
    /// The token itself.
    pub token: String,
    /// A file holding the token.
    pub token_file: String,
}

impl fmt::Debug for AuthConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthConfig")
            .field("enabled", &self.enabled)
            .field(
                "token",
                &if self.token.is_empty() {
                    ""
                } else {
                    "<redacted>"
                },
            )
            .field("token_file", &self.token_file)
            .finish()
    }
}

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

/// Why configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file named with `--config` does not exist or cannot be read.
    #[error("cannot read config file {path}: {source}")]
    Unreadable {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid YAML.
    #[error("invalid config file {path}: {message}")]
    Syntax {
        /// The file.
        path: PathBuf,
        /// The parser's message.
        message: String,
    },
    /// A key is unknown or its value is invalid.
    #[error("invalid configuration key `{key}`{origin}: {message}")]
    Key {
        /// The dotted key, e.g. `worker.task_timeout`.
        key: String,
        /// Where it came from (` (in FILE)` or ` (from HG_...)`), or empty.
        origin: String,
        /// What is wrong with it.
        message: String,
    },
}

impl ConfigError {
    fn key(key: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError::Key {
            key: key.into(),
            origin: String::new(),
            message: message.into(),
        }
    }
}

/// The values each configuration enum accepts, by its Rust name.
const ENUM_VALUES: &[(&str, &[&str])] = &[
    ("IsolationMode", &["auto", "off", "bubblewrap", "unshare"]),
    ("Algorithm", &["p2c", "least-loaded", "cost-aware"]),
    ("LogFormat", &["console", "json"]),
];

/// Rewrites the deserialiser's wording for an unknown enum value (`enum
/// IsolationMode does not have variant constructor none`) into what a user
/// can act on: the value given and the values allowed.
fn tidy_message(message: String) -> String {
    let Some(rest) = message.strip_prefix("enum ") else {
        return message;
    };
    let Some((name, value)) = rest.split_once(" does not have variant constructor ") else {
        return message;
    };
    // The deserialiser may append ` for key `...``: the key is named anyway.
    let value = value.split(" for key ").next().unwrap_or(value);
    match ENUM_VALUES.iter().find(|(n, _)| *n == name) {
        Some((_, allowed)) => format!(
            "`{value}` is not a valid value; use one of: {}",
            allowed.join(", ")
        ),
        None => format!("`{value}` is not a valid value"),
    }
}

/// Environment variable naming the configuration file, as `--config` does
/// (the flag wins). `hgbuild make` sets it for the compiles of the build,
/// so that every compile, in whatever directory make runs it, reads the
/// file the wrapper read.
pub const ENV_CONFIG_FILE: &str = "HG_CONFIG";

/// The files searched when no `--config` is given, in order.
pub fn default_search_paths() -> Vec<PathBuf> {
    vec![
        PathBuf::from("hybridgrid.yaml"),
        expand_home("~/.hybridgrid/config.yaml"),
        PathBuf::from("/etc/hybridgrid/config.yaml"),
    ]
}

/// Expands a leading `~` to the home directory.
pub fn expand_home(p: &str) -> PathBuf {
    if let Some(rest) = p
        .strip_prefix("~/")
        .or(if p == "~" { Some("") } else { None })
        && let Some(home) = std::env::var_os("HOME")
    {
        return Path::new(&home).join(rest);
    }
    PathBuf::from(p)
}

const SECTIONS: &[&str] = &[
    "coordinator",
    "worker",
    "client",
    "cache",
    "discovery",
    "scheduler",
    "resilience",
    "tls",
    "auth",
    "logging",
    "metrics",
];

const LIST_KEYS: &[&str] = &["coordinator.static_workers", "discovery.mdns.interfaces"];

/// Short environment variables and the keys they set.
pub const ENV_ALIASES: &[(&str, &[&str])] = &[
    ("HG_LOG_LEVEL", &["logging.level"]),
    ("HG_LOG_FORMAT", &["logging.format"]),
    (
        "HG_COORDINATOR",
        &["client.coordinator", "worker.coordinator"],
    ),
    ("HG_CC", &["client.cc"]),
    ("HG_CXX", &["client.cxx"]),
];

/// Builds a [`Config`] from defaults, a file, environment and overrides.
#[derive(Clone, Debug, Default)]
pub struct ConfigLoader {
    file: Option<PathBuf>,
    search: Option<Vec<PathBuf>>,
    env: Vec<(String, String)>,
    overrides: Vec<(String, config::Value)>,
}

impl ConfigLoader {
    /// A loader that searches the default paths and reads no environment.
    pub fn new() -> Self {
        ConfigLoader::default()
    }

    /// Reads this file (it must exist) instead of searching.
    pub fn file(mut self, path: impl Into<PathBuf>) -> Self {
        self.file = Some(path.into());
        self
    }

    /// Reads this file if given, else searches the default paths.
    pub fn file_opt(self, path: Option<impl Into<PathBuf>>) -> Self {
        match path {
            Some(p) => self.file(p),
            None => self,
        }
    }

    /// Searches these paths instead of the default ones.
    pub fn search_paths(mut self, paths: Vec<PathBuf>) -> Self {
        self.search = Some(paths);
        self
    }

    /// Searches no file (only `file` is read, if set).
    pub fn no_search(self) -> Self {
        self.search_paths(Vec::new())
    }

    /// Takes environment variables from this list (tests inject here).
    pub fn env_vars<K: Into<String>, V: Into<String>>(
        mut self,
        vars: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        self.env
            .extend(vars.into_iter().map(|(k, v)| (k.into(), v.into())));
        self
    }

    /// Takes the process environment's `HG_*` variables.
    pub fn process_env(self) -> Self {
        let vars: Vec<(String, String)> = std::env::vars()
            .filter(|(k, _)| k.starts_with("HG_"))
            .collect();
        self.env_vars(vars)
    }

    /// Sets a key (a flag); flags win over everything else.
    pub fn set(mut self, key: &str, value: impl Into<config::Value>) -> Self {
        self.overrides.push((key.to_owned(), value.into()));
        self
    }

    /// Sets a key if the value is present.
    pub fn set_opt<V: Into<config::Value>>(self, key: &str, value: Option<V>) -> Self {
        match value {
            Some(v) => self.set(key, v),
            None => self,
        }
    }

    /// The file that [`ConfigLoader::load`] would read, if any.
    pub fn resolved_file(&self) -> Option<PathBuf> {
        if let Some(f) = &self.file {
            return Some(f.clone());
        }
        if let Some((_, f)) = self.env.iter().find(|(k, _)| k == ENV_CONFIG_FILE)
            && !f.is_empty()
        {
            return Some(PathBuf::from(f));
        }
        let search = self.search.clone().unwrap_or_else(default_search_paths);
        search.into_iter().find(|p| p.is_file())
    }

    fn env_overrides(&self) -> Result<Vec<(String, String, String)>, ConfigError> {
        let mut out = Vec::new();
        for (name, value) in &self.env {
            if let Some((_, keys)) = ENV_ALIASES.iter().find(|(n, _)| n == name) {
                for k in keys.iter() {
                    out.push((k.to_string(), value.clone(), name.clone()));
                }
                continue;
            }
            let Some(rest) = name.strip_prefix("HG_") else {
                continue;
            };
            if !rest.contains("__") {
                continue;
            }
            let key = rest.to_ascii_lowercase().replace("__", ".");
            let section = key.split('.').next().unwrap_or_default().to_owned();
            if !SECTIONS.contains(&section.as_str()) {
                return Err(ConfigError::Key {
                    key,
                    origin: format!(" (from {name})"),
                    message: format!(
                        "unknown section `{section}`; expected one of {}",
                        SECTIONS.join(", ")
                    ),
                });
            }
            out.push((key, value.clone(), name.clone()));
        }
        Ok(out)
    }

    /// Loads and validates the configuration.
    pub fn load(&self) -> Result<Config, ConfigError> {
        let mut builder = config::Config::builder();
        let file = self.resolved_file();
        if let Some(path) = &file {
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Unreadable {
                path: path.clone(),
                source,
            })?;
            if !text.trim().is_empty() {
                builder =
                    builder.add_source(config::File::from_str(&text, config::FileFormat::Yaml));
            }
        }
        let env = self.env_overrides()?;
        for (key, value, _) in &env {
            let v: config::Value = if LIST_KEYS.contains(&key.as_str()) {
                let items: Vec<String> = value
                    .split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
                    .collect();
                items.into()
            } else {
                value.clone().into()
            };
            builder = builder
                .set_override(key.as_str(), v)
                .map_err(|e| ConfigError::key(key.clone(), e.to_string()))?;
        }
        for (key, value) in &self.overrides {
            builder = builder
                .set_override(key.as_str(), value.clone())
                .map_err(|e| ConfigError::key(key.clone(), e.to_string()))?;
        }
        let built = builder.build().map_err(|e| match &file {
            Some(path) => ConfigError::Syntax {
                path: path.clone(),
                message: e.to_string(),
            },
            None => ConfigError::key("", e.to_string()),
        })?;
        let root: config::Value = built
            .try_deserialize()
            .map_err(|e| ConfigError::key("", e.to_string()))?;
        let cfg: Config = serde_path_to_error::deserialize(root).map_err(|e| {
            let key = e.path().to_string();
            let origin = origin_of(&key, &env, self, file.as_deref());
            ConfigError::Key {
                key,
                origin,
                message: tidy_message(e.into_inner().to_string()),
            }
        })?;
        cfg.validate().map_err(|e| match e {
            ConfigError::Key { key, message, .. } => {
                let origin = origin_of(&key, &env, self, file.as_deref());
                ConfigError::Key {
                    key,
                    origin,
                    message,
                }
            }
            other => other,
        })?;
        Ok(cfg)
    }
}

fn origin_of(
    key: &str,
    env: &[(String, String, String)],
    loader: &ConfigLoader,
    file: Option<&Path>,
) -> String {
    if loader
        .overrides
        .iter()
        .any(|(k, _)| key.starts_with(k.as_str()))
    {
        return " (from the command line)".into();
    }
    if let Some((_, _, name)) = env
        .iter()
        .rev()
        .find(|(k, _, _)| key.starts_with(k.as_str()))
    {
        return format!(" (from {name})");
    }
    match file {
        Some(f) => format!(" (in {})", f.display()),
        None => String::new(),
    }
}

impl Config {
    /// The defaults, with nothing read.
    pub fn defaults() -> Self {
        Config::default()
    }

    /// Checks value ranges that types cannot express.
    pub fn validate(&self) -> Result<(), ConfigError> {
        fn positive(key: &str, v: usize) -> Result<(), ConfigError> {
            if v == 0 {
                return Err(ConfigError::key(key, "must be at least 1"));
            }
            Ok(())
        }
        fn nonzero(key: &str, d: Duration) -> Result<(), ConfigError> {
            if d.is_zero() {
                return Err(ConfigError::key(key, "must be longer than 0s"));
            }
            Ok(())
        }
        positive(
            "coordinator.max_concurrent_tasks",
            self.coordinator.max_concurrent_tasks,
        )?;
        positive(
            "worker.max_concurrent_tasks",
            self.worker.max_concurrent_tasks,
        )?;
        positive(
            "coordinator.max_request_bytes",
            self.coordinator.max_request_bytes,
        )?;
        positive("worker.max_request_bytes", self.worker.max_request_bytes)?;
        nonzero("coordinator.heartbeat_ttl", self.coordinator.heartbeat_ttl)?;
        nonzero("worker.task_timeout", self.worker.task_timeout)?;
        nonzero("worker.heartbeat_interval", self.worker.heartbeat_interval)?;
        nonzero(
            "resilience.circuit_breaker.open_timeout",
            self.resilience.circuit_breaker.open_timeout,
        )?;
        let rate = self.resilience.circuit_breaker.failure_rate_threshold;
        if !(rate > 0.0 && rate <= 1.0) {
            return Err(ConfigError::key(
                "resilience.circuit_breaker.failure_rate_threshold",
                format!("must be in (0, 1], got {rate}"),
            ));
        }
        if self.resilience.circuit_breaker.request_threshold == 0 {
            return Err(ConfigError::key(
                "resilience.circuit_breaker.request_threshold",
                "must be at least 1",
            ));
        }
        let m = self.resilience.retry.multiplier;
        if !(m.is_finite() && m >= 1.0) {
            return Err(ConfigError::key(
                "resilience.retry.multiplier",
                format!("must be a number >= 1.0, got {m}"),
            ));
        }
        if self.resilience.retry.initial_interval > self.resilience.retry.max_interval {
            return Err(ConfigError::key(
                "resilience.retry.initial_interval",
                "must not exceed resilience.retry.max_interval",
            ));
        }
        let gb = self.cache.max_size_gb;
        if !(gb.is_finite() && gb >= 0.0) {
            return Err(ConfigError::key(
                "cache.max_size_gb",
                format!("must be a number >= 0, got {gb}"),
            ));
        }
        if self.cache.enabled && self.cache.dir.trim().is_empty() {
            return Err(ConfigError::key("cache.dir", "must not be empty"));
        }
        self.cache.remote.validate()?;
        crate::logging::parse_filter(&self.logging.level)
            .map_err(|e| ConfigError::key("logging.level", e))?;
        if !self.metrics.path.starts_with('/') {
            return Err(ConfigError::key("metrics.path", "must start with `/`"));
        }
        for (i, w) in self.coordinator.static_workers.iter().enumerate() {
            crate::addr::parse_host_port(w).map_err(|e| {
                ConfigError::key(format!("coordinator.static_workers[{i}]"), e.to_string())
            })?;
        }
        for (key, v) in [
            ("worker.coordinator", &self.worker.coordinator),
            ("worker.advertise_address", &self.worker.advertise_address),
            ("client.coordinator", &self.client.coordinator),
        ] {
            if !v.is_empty() {
                crate::addr::parse_host_port(v)
                    .map_err(|e| ConfigError::key(key, e.to_string()))?;
            }
        }
        if self.auth.enabled && self.auth.token.is_empty() && self.auth.token_file.is_empty() {
            return Err(ConfigError::key(
                "auth.token",
                "auth.enabled is true but neither auth.token nor auth.token_file is set",
            ));
        }
        if self.tls.enabled && (self.tls.cert_file.is_empty() != self.tls.key_file.is_empty()) {
            return Err(ConfigError::key(
                "tls.key_file",
                "tls.cert_file and tls.key_file must be set together",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn load_yaml(yaml: &str) -> Result<Config, ConfigError> {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(yaml.as_bytes()).unwrap();
        ConfigLoader::new().no_search().file(f.path()).load()
    }

    #[test]
    fn defaults_match_the_design() {
        let c = ConfigLoader::new().no_search().load().unwrap();
        assert_eq!(c.coordinator.grpc_port, 9000);
        assert_eq!(c.coordinator.http_port, 8080);
        assert_eq!(c.coordinator.heartbeat_ttl, Duration::from_secs(30));
        assert_eq!(c.coordinator.max_concurrent_tasks, 500);
        assert_eq!(c.worker.grpc_port, 50052);
        assert_eq!(c.worker.http_port, 9090);
        assert_eq!(c.worker.max_concurrent_tasks, 4);
        assert_eq!(c.worker.task_timeout, Duration::from_secs(300));
        assert_eq!(c.worker.docker.images["arm64"], "dockcross/linux-arm64");
        assert!(c.cache.enabled);
        assert_eq!(c.cache.max_size_gb, 10.0);
        assert!(c.discovery.mdns.enabled);
        assert_eq!(c.discovery.mdns.service_name, "_hybridgrid._tcp");
        assert_eq!(c.scheduler.algorithm, Algorithm::P2c);
        assert_eq!(c.resilience.circuit_breaker.request_threshold, 10);
        assert_eq!(c.resilience.circuit_breaker.failure_rate_threshold, 0.6);
        assert_eq!(
            c.resilience.circuit_breaker.open_timeout,
            Duration::from_secs(30)
        );
        assert_eq!(c.resilience.retry.max_retries, 3);
        assert_eq!(
            c.resilience.retry.initial_interval,
            Duration::from_millis(100)
        );
        assert!(c.resilience.fallback.enabled);
        assert!(!c.tls.enabled);
        assert!(!c.auth.enabled);
        assert_eq!(c.logging.level, "info");
        assert_eq!(c.logging.format, LogFormat::Console);
        assert_eq!(c.metrics.path, "/metrics");
    }

    #[test]
    fn file_values_and_durations() {
        let c = load_yaml(
            "worker:\n  task_timeout: 10m\n  max_concurrent_tasks: 2\ncoordinator:\n  static_workers: [\"192.168.2.10:50052\", \"b:1\"]\nscheduler:\n  algorithm: least-loaded\n",
        )
        .unwrap();
        assert_eq!(c.worker.task_timeout, Duration::from_secs(600));
        assert_eq!(c.worker.max_concurrent_tasks, 2);
        assert_eq!(c.coordinator.static_workers.len(), 2);
        assert_eq!(c.scheduler.algorithm, Algorithm::LeastLoaded);
    }

    #[test]
    fn isolation_mode() {
        assert_eq!(load_yaml("").unwrap().worker.isolation, IsolationMode::Auto);
        let c = load_yaml("worker:\n  isolation: off\n").unwrap();
        assert_eq!(c.worker.isolation, IsolationMode::Off);
        let c = load_yaml("worker:\n  isolation: bubblewrap\n").unwrap();
        assert_eq!(c.worker.isolation, IsolationMode::Bubblewrap);
        let e = load_yaml("worker:\n  isolation: jail\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("worker.isolation"), "{e}");
    }

    #[test]
    fn unknown_key_is_named() {
        let e = load_yaml("worker:\n  max_task: 3\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("worker.max_task"), "{e}");
        assert!(e.contains("unknown field"), "{e}");
    }

    #[test]
    fn unknown_section_is_named() {
        let e = load_yaml("wokrer:\n  grpc_port: 3\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("wokrer"), "{e}");
    }

    #[test]
    fn bad_value_is_named() {
        let e = load_yaml("worker:\n  task_timeout: soon\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("worker.task_timeout"), "{e}");
        let e = load_yaml("coordinator:\n  grpc_port: 70000\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("coordinator.grpc_port"), "{e}");
        let e = load_yaml("resilience:\n  circuit_breaker:\n    failure_rate_threshold: 1.5\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("resilience.circuit_breaker.failure_rate_threshold"),
            "{e}"
        );
        let e = load_yaml("logging:\n  format: xml\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("logging.format"), "{e}");
        let e = load_yaml("coordinator:\n  static_workers: [\"nohostport\"]\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("coordinator.static_workers[0]"), "{e}");
    }

    #[test]
    fn unknown_enum_values_list_the_allowed_ones() {
        let e = ConfigLoader::new()
            .no_search()
            .set("worker.isolation", "none")
            .load()
            .expect_err("none is not an isolation mode");
        let text = e.to_string();
        assert!(text.contains("`worker.isolation`"), "{text}");
        assert!(
            text.contains(
                "`none` is not a valid value; use one of: auto, off, bubblewrap, unshare"
            ),
            "{text}"
        );
        let e = ConfigLoader::new()
            .no_search()
            .set("scheduler.algorithm", "fastest")
            .load()
            .expect_err("no such algorithm");
        assert!(
            e.to_string().contains("p2c, least-loaded, cost-aware"),
            "{e}"
        );
    }

    #[test]
    fn scheduler_weights_and_hedge_keys() {
        let c = load_yaml(
            "scheduler:\n  algorithm: cost-aware\n  weights: { load: 2.5, lan: 0 }\n  hedge: { enabled: false, p90_multiplier: 4, min_delay: 5s, min_samples: 3 }\n",
        )
        .unwrap();
        assert_eq!(c.scheduler.algorithm, Algorithm::CostAware);
        assert_eq!(c.scheduler.weights.load, 2.5);
        assert_eq!(c.scheduler.weights.lan, 0.0);
        assert_eq!(c.scheduler.weights.native_arch, 1.0);
        assert!(!c.scheduler.hedge.enabled);
        assert_eq!(c.scheduler.hedge.p90_multiplier, 4.0);
        assert_eq!(c.scheduler.hedge.min_delay, Duration::from_secs(5));
        assert_eq!(c.scheduler.hedge.min_samples, 3);
        let e = load_yaml("scheduler:\n  weights: { speed: 1 }\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("speed"), "{e}");
        let e = load_yaml("scheduler:\n  hedge: { min_delay: later }\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("scheduler.hedge.min_delay"), "{e}");
    }

    #[test]
    fn unreadable_file_is_named() {
        let e = ConfigLoader::new()
            .file("/nonexistent/hg.yaml")
            .load()
            .unwrap_err()
            .to_string();
        assert!(e.contains("/nonexistent/hg.yaml"), "{e}");
    }

    #[test]
    fn syntax_error_names_file() {
        let e = load_yaml("worker: [unclosed\n").unwrap_err().to_string();
        assert!(e.contains("invalid config file"), "{e}");
    }

    #[test]
    fn precedence_defaults_file_env_flags() {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(
            b"worker:\n  max_concurrent_tasks: 2\n  grpc_port: 1111\nlogging:\n  level: warn\n",
        )
        .unwrap();
        let base = ConfigLoader::new().no_search().file(f.path());
        let c = base.clone().load().unwrap();
        assert_eq!(c.worker.max_concurrent_tasks, 2);
        let c = base
            .clone()
            .env_vars([
                ("HG_WORKER__MAX_CONCURRENT_TASKS", "8"),
                ("HG_LOG_LEVEL", "debug"),
                ("HG_COORDINATOR", "coord:9000"),
                ("HG_TEST_REQUIRE_ALL", "1"),
                ("HG_CC", "gcc-12"),
            ])
            .load()
            .unwrap();
        assert_eq!(c.worker.max_concurrent_tasks, 8);
        assert_eq!(c.worker.grpc_port, 1111);
        assert_eq!(c.logging.level, "debug");
        assert_eq!(c.client.coordinator, "coord:9000");
        assert_eq!(c.worker.coordinator, "coord:9000");
        assert_eq!(c.client.cc, "gcc-12");
        let c = base
            .env_vars([("HG_WORKER__MAX_CONCURRENT_TASKS", "8")])
            .set("worker.max_concurrent_tasks", 16)
            .load()
            .unwrap();
        assert_eq!(c.worker.max_concurrent_tasks, 16);
    }

    #[test]
    fn env_lists_and_durations() {
        let c = ConfigLoader::new()
            .no_search()
            .env_vars([
                ("HG_COORDINATOR__STATIC_WORKERS", "a:1, b:2"),
                ("HG_WORKER__TASK_TIMEOUT", "90s"),
                ("HG_DISCOVERY__MDNS__ENABLED", "false"),
            ])
            .load()
            .unwrap();
        assert_eq!(c.coordinator.static_workers, vec!["a:1", "b:2"]);
        assert_eq!(c.worker.task_timeout, Duration::from_secs(90));
        assert!(!c.discovery.mdns.enabled);
    }

    #[test]
    fn bad_env_value_names_variable() {
        let e = ConfigLoader::new()
            .no_search()
            .env_vars([("HG_WORKER__MAX_CONCURRENT_TASKS", "lots")])
            .load()
            .unwrap_err()
            .to_string();
        assert!(e.contains("worker.max_concurrent_tasks"), "{e}");
        assert!(e.contains("HG_WORKER__MAX_CONCURRENT_TASKS"), "{e}");
        let e = ConfigLoader::new()
            .no_search()
            .env_vars([("HG_WROKER__GRPC_PORT", "1")])
            .load()
            .unwrap_err()
            .to_string();
        assert!(e.contains("HG_WROKER__GRPC_PORT"), "{e}");
    }

    #[test]
    fn token_is_not_in_debug_output() {
        let mut c = Config::default();
        c.auth.token = "s3cret-token".into();
        assert!(!format!("{c:?}").contains("s3cret-token"));
    }

    #[test]
    fn config_file_from_the_environment_beats_the_search_but_not_the_flag() {
        let dir = tempfile::tempdir().unwrap();
        let searched = dir.path().join("searched.yaml");
        let from_env = dir.path().join("env.yaml");
        let flag = dir.path().join("flag.yaml");
        std::fs::write(&searched, "worker:\n  grpc_port: 1111\n").unwrap();
        std::fs::write(&from_env, "worker:\n  grpc_port: 2222\n").unwrap();
        std::fs::write(&flag, "worker:\n  grpc_port: 3333\n").unwrap();
        let env = [(ENV_CONFIG_FILE, from_env.to_str().unwrap())];
        let base = ConfigLoader::new().search_paths(vec![searched.clone()]);
        assert_eq!(base.clone().load().unwrap().worker.grpc_port, 1111);
        let c = base.clone().env_vars(env).load().unwrap();
        assert_eq!(c.worker.grpc_port, 2222);
        let c = base.clone().env_vars(env).file(&flag).load().unwrap();
        assert_eq!(c.worker.grpc_port, 3333);
        // A file named there that cannot be read is an error, not a search.
        let e = base
            .env_vars([(ENV_CONFIG_FILE, "/nonexistent/hg.yaml")])
            .load()
            .unwrap_err()
            .to_string();
        assert!(e.contains("/nonexistent/hg.yaml"), "{e}");
    }

    #[test]
    fn search_takes_first_existing_file() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.yaml");
        let b = dir.path().join("b.yaml");
        std::fs::write(&b, "worker:\n  grpc_port: 2222\n").unwrap();
        let c = ConfigLoader::new()
            .search_paths(vec![a.clone(), b.clone()])
            .load()
            .unwrap();
        assert_eq!(c.worker.grpc_port, 2222);
        std::fs::write(&a, "worker:\n  grpc_port: 1111\n").unwrap();
        let c = ConfigLoader::new().search_paths(vec![a, b]).load().unwrap();
        assert_eq!(c.worker.grpc_port, 1111);
    }

    #[test]
    fn remote_cache_keys_parse_and_validate() {
        let c = load_yaml(
            "cache:\n  remote:\n    backend: redis\n    url: redis://127.0.0.1:6379/0\n    read_only: true\n    timeout: 500ms\n",
        )
        .unwrap();
        let r = &c.cache.remote;
        assert!(r.is_configured() && r.read_only);
        assert_eq!(r.timeout, Duration::from_millis(500));
        assert_eq!(r.layout, "subdirs");
        assert!(!Config::default().cache.remote.is_configured());

        let err = |yaml: &str| load_yaml(yaml).unwrap_err().to_string();
        let e = err("cache:\n  remote:\n    backend: memcached\n    url: x\n");
        assert!(
            e.contains("cache.remote.backend") && e.contains("memcached"),
            "{e}"
        );
        let e = err("cache:\n  remote:\n    backend: redis\n");
        assert!(e.contains("cache.remote.url"), "{e}");
        let e = err("cache:\n  remote:\n    backend: webdav\n    url: redis://h:1\n");
        assert!(
            e.contains("cache.remote.url") && e.contains("http://"),
            "{e}"
        );
        let e = err("cache:\n  remote:\n    backend: s3\n");
        assert!(e.contains("cache.remote.bucket"), "{e}");
        let e = err("cache:\n  remote:\n    backend: http\n    url: http://h/\n    layout: deep\n");
        assert!(e.contains("cache.remote.layout"), "{e}");
        let e = err(
            "cache:\n  remote:\n    backend: http\n    url: http://h/\n    max_pending_writes: 0\n",
        );
        assert!(e.contains("cache.remote.max_pending_writes"), "{e}");
        let e = err("cache:\n  remote:\n    backend: http\n    url: http://h/\n    passwd: x\n");
        assert!(e.contains("passwd"), "{e}");
        let e = err(
            "cache:\n  remote:\n    backend: redis\n    url: redis://h:1\n    password_file: a\n    password_env: B\n",
        );
        assert!(e.contains("cache.remote.password_env"), "{e}");
    }

    #[test]
    fn remote_cache_secrets_come_from_files_and_are_never_shown() {
        let dir = tempfile::tempdir().unwrap();
        let pw = dir.path().join("pw");
        std::fs::write(&pw, "s3cret\n").unwrap();
        let mut r = RemoteCacheConfig {
            backend: "redis".into(),
            url: "redis://user:hunter2@127.0.0.1:6379/0".into(),
            password_file: pw.display().to_string(),
            ..RemoteCacheConfig::default()
        };
        assert_eq!(r.password().unwrap().as_deref(), Some("s3cret"));
        let shown = format!("{r:?}");
        assert!(
            !shown.contains("hunter2") && !shown.contains("s3cret"),
            "{shown}"
        );
        assert!(
            shown.contains("redis://user:<redacted>@127.0.0.1:6379/0"),
            "{shown}"
        );
        r.password_file = dir.path().join("missing").display().to_string();
        let e = r.password().unwrap_err().to_string();
        assert!(e.contains("cache.remote.password_file"), "{e}");
        r.password_file.clear();
        r.password_env = "HG_TEST_SURELY_UNSET_VARIABLE".into();
        let e = r.password().unwrap_err().to_string();
        assert!(e.contains("cache.remote.password_env"), "{e}");
        assert_eq!(redact_url("http://h:80/x"), "http://h:80/x");
        assert_eq!(redact_url("http://u@h/x@y"), "http://u@h/x@y");
        assert_eq!(redact_url("https://u:p@h/x"), "https://u:<redacted>@h/x");
    }
}
