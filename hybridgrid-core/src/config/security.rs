//! `tls:` and `auth:` settings.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::ConfigError;

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

impl AuthConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if self.enabled && self.token.is_empty() && self.token_file.is_empty() {
            return Err(ConfigError::key(
                "auth.token",
                "auth.enabled is true but neither auth.token nor auth.token_file is set",
            ));
        }
        Ok(())
    }
}

impl TlsConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if self.enabled && (self.cert_file.is_empty() != self.key_file.is_empty()) {
            return Err(ConfigError::key(
                "tls.key_file",
                "tls.cert_file and tls.key_file must be set together",
            ));
        }
        Ok(())
    }
}
