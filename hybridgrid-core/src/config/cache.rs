//! `cache:` settings: the local cache and the remote tier, with the
//! credentials it reads from files or the environment.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{ConfigError, expand_home};

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

    pub(super) fn validate(&self) -> Result<(), ConfigError> {
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
pub(super) fn secret(
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

    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        let gb = self.max_size_gb;
        if !(gb.is_finite() && gb >= 0.0) {
            return Err(ConfigError::key(
                "cache.max_size_gb",
                format!("must be a number >= 0, got {gb}"),
            ));
        }
        if self.enabled && self.dir.trim().is_empty() {
            return Err(ConfigError::key("cache.dir", "must not be empty"));
        }
        self.remote.validate()
    }
}
