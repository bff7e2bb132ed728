//! A process's security settings in one place: the TLS of its servers and
//! clients and the auth token, loaded from [`Config`] once at start (so a
//! missing file stops the program with a message naming the key).
//!
//! ```
//! use hybridgrid_core::config::Config;
//! use hybridgrid_net::security::Security;
//!
//! // Everything off by default.
//! let s = Security::for_server(&Config::default()).unwrap();
//! assert!(s.server_tls.is_none() && s.client_tls.is_none() && s.token.is_none());
//! ```

use std::sync::Arc;

use hybridgrid_core::config::Config;

use crate::auth::{AuthError, Token};
use crate::tls::{ClientTls, ServerTls, TlsError};

/// Why the security settings could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SecurityError {
    /// TLS material.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The auth token.
    #[error(transparent)]
    Auth(#[from] AuthError),
}

/// TLS and token of a process.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct Security {
    /// How this process's servers accept connections (none: plain TCP).
    pub server_tls: Option<Arc<ServerTls>>,
    /// How this process dials servers (none: plain TCP).
    pub client_tls: Option<Arc<ClientTls>>,
    /// The token calls carry and servers require (none: auth off).
    pub token: Option<Token>,
}

impl Security {
    /// For a process that only dials (hgbuild): client TLS and token.
    pub fn for_client(cfg: &Config) -> Result<Security, SecurityError> {
        Ok(Security {
            server_tls: None,
            client_tls: ClientTls::from_config(&cfg.tls)?,
            token: Token::from_config(&cfg.auth)?,
        })
    }

    /// For a server that also dials (the coordinator calls workers, a
    /// worker calls the coordinator): both sides of TLS, and the token.
    pub fn for_server(cfg: &Config) -> Result<Security, SecurityError> {
        Ok(Security {
            server_tls: ServerTls::from_config(&cfg.tls)?,
            client_tls: ClientTls::from_config(&cfg.tls)?,
            token: Token::from_config(&cfg.auth)?,
        })
    }
}
