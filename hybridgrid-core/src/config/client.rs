//! `client:` settings (hgbuild).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::ConfigError;
use super::error::host_port;

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

impl ClientConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        host_port("client.coordinator", &self.coordinator)
    }
}
