//! `discovery:` settings (mDNS).

use serde::{Deserialize, Serialize};

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
