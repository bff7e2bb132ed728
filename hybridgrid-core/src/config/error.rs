//! Configuration errors: each names the key, the file or the variable.

use std::path::PathBuf;
use std::time::Duration;

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
    pub(super) fn key(key: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError::Key {
            key: key.into(),
            origin: String::new(),
            message: message.into(),
        }
    }
}

/// The values each configuration enum accepts, by its Rust name.
pub(super) const ENUM_VALUES: &[(&str, &[&str])] = &[
    ("IsolationMode", &["auto", "off", "bubblewrap", "unshare"]),
    ("Algorithm", &["p2c", "least-loaded", "cost-aware"]),
    ("LogFormat", &["console", "json"]),
];

/// Rewrites the deserialiser's wording for an unknown enum value (`enum
/// IsolationMode does not have variant constructor none`) into what a user
/// can act on: the value given and the values allowed.
pub(super) fn tidy_message(message: String) -> String {
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

/// `key` must be at least 1.
pub(super) fn positive(key: &str, v: usize) -> Result<(), ConfigError> {
    if v == 0 {
        return Err(ConfigError::key(key, "must be at least 1"));
    }
    Ok(())
}

/// `key` must be a duration longer than zero.
pub(super) fn nonzero(key: &str, d: Duration) -> Result<(), ConfigError> {
    if d.is_zero() {
        return Err(ConfigError::key(key, "must be longer than 0s"));
    }
    Ok(())
}

/// `key`, when set, must be `host:port`.
pub(super) fn host_port(key: &str, v: &str) -> Result<(), ConfigError> {
    if !v.is_empty() {
        crate::addr::parse_host_port(v).map_err(|e| ConfigError::key(key, e.to_string()))?;
    }
    Ok(())
}
