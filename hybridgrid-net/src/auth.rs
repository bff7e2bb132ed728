//! Token authentication: with `auth.enabled`, every gRPC call carries
//! `authorization: Bearer <token>` ([`AttachToken`] on clients) and servers
//! refuse a call without the right token with `Unauthenticated`
//! ([`RequireToken`]); the admin HTTP endpoints check the same header.
//!
//! Tokens are compared in constant time (their BLAKE3 hashes, so the
//! length leaks nothing either) and never appear in logs, errors or
//! `Debug` output.
//!
//! ```
//! use hybridgrid_net::auth::Token;
//!
//! let t = Token::new("s3cret-token").unwrap();
//! assert!(t.verify_bearer("Bearer s3cret-token"));
//! assert!(!t.verify_bearer("Bearer guess"));
//! assert!(!format!("{t:?}").contains("s3cret"));
//! ```

use std::sync::Arc;

use hybridgrid_core::config::AuthConfig;
use subtle::ConstantTimeEq;
use tonic::metadata::{AsciiMetadataValue, MetadataMap};
use tonic::{Request, Status};

/// The header (gRPC metadata key) that carries the token.
pub const AUTHORIZATION: &str = "authorization";

/// Why a token could not be loaded. Messages never contain the token.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// The token file could not be read.
    #[error("auth.token_file: cannot read {file}: {source}")]
    Read {
        /// The file.
        file: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The token is empty or has characters a header cannot carry.
    #[error("{key}: {message}")]
    Invalid {
        /// `auth.token` or `auth.token_file`.
        key: &'static str,
        /// What is wrong (never the token itself).
        message: &'static str,
    },
}

/// A shared secret. `Debug` shows `Token(<redacted>)`.
#[derive(Clone)]
pub struct Token {
    hash: [u8; 32],
    header: AsciiMetadataValue,
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

impl Token {
    /// A token from its text: printable ASCII without spaces, 1 to 4096
    /// characters.
    pub fn new(secret: &str) -> Result<Token, AuthError> {
        Self::parse("auth.token", secret)
    }

    fn parse(key: &'static str, secret: &str) -> Result<Token, AuthError> {
        if secret.is_empty() || secret.len() > 4096 {
            return Err(AuthError::Invalid {
                key,
                message: "the token must be 1 to 4096 characters",
            });
        }
        if !secret.bytes().all(|b| (0x21..0x7f).contains(&b)) {
            return Err(AuthError::Invalid {
                key,
                message: "the token must be printable ASCII without spaces",
            });
        }
        let mut value: AsciiMetadataValue =
            format!("Bearer {secret}")
                .parse()
                .map_err(|_| AuthError::Invalid {
                    key,
                    message: "the token cannot be sent in a header",
                })?;
        value.set_sensitive(true);
        Ok(Token {
            hash: *blake3::hash(secret.as_bytes()).as_bytes(),
            header: value,
        })
    }

    /// The token of `cfg` (`auth.token`, else the first line of
    /// `auth.token_file`); `None` when auth is off.
    pub fn from_config(cfg: &AuthConfig) -> Result<Option<Token>, AuthError> {
        if !cfg.enabled {
            return Ok(None);
        }
        if !cfg.token.is_empty() {
            return Self::parse("auth.token", &cfg.token).map(Some);
        }
        if cfg.token_file.is_empty() {
            return Err(AuthError::Invalid {
                key: "auth.token",
                message: "auth.enabled is true but neither auth.token nor auth.token_file is set",
            });
        }
        let text = std::fs::read_to_string(&cfg.token_file).map_err(|source| AuthError::Read {
            file: cfg.token_file.clone(),
            source,
        })?;
        Self::parse("auth.token_file", text.trim()).map(Some)
    }

    /// True if `presented` is this token (constant time).
    pub fn verify(&self, presented: &[u8]) -> bool {
        let h = blake3::hash(presented);
        bool::from(self.hash.ct_eq(h.as_bytes()))
    }

    /// True if an `authorization` header value is `Bearer <this token>`.
    pub fn verify_bearer(&self, header: &str) -> bool {
        match header.strip_prefix("Bearer ") {
            Some(t) => self.verify(t.trim().as_bytes()),
            None => false,
        }
    }

    /// The `authorization` value to send.
    pub fn header_value(&self) -> &AsciiMetadataValue {
        &self.header
    }
}

/// Why a server refused a call or request (the text a client sees).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// No `authorization: Bearer` header at all.
    Missing,
    /// A token that is not the server's.
    Wrong,
}

impl Refusal {
    /// The message for the caller: what is wrong and what to check.
    pub fn message(self) -> &'static str {
        match self {
            Refusal::Missing => {
                "missing auth token: this server has auth.enabled and every call must carry \
                 `authorization: Bearer <token>`; set auth.enabled and auth.token or \
                 auth.token_file on the caller to the server's token"
            }
            Refusal::Wrong => {
                "wrong auth token: the token sent is not this server's; check that auth.token \
                 or auth.token_file hold the same token on both sides"
            }
        }
    }
}

/// Checks an `authorization` value against `expected`.
pub fn check(expected: &Token, header: Option<&[u8]>) -> Result<(), Refusal> {
    let Some(h) = header else {
        return Err(Refusal::Missing);
    };
    let ok = std::str::from_utf8(h)
        .map(|s| expected.verify_bearer(s))
        .unwrap_or(false);
    if ok { Ok(()) } else { Err(Refusal::Wrong) }
}

/// Client interceptor: adds the token (if any) to every call.
#[derive(Clone, Debug, Default)]
pub struct AttachToken(Option<Token>);

impl AttachToken {
    /// Attaches `token` (none: calls go out as they are).
    pub fn new(token: Option<Token>) -> Self {
        AttachToken(token)
    }
}

impl tonic::service::Interceptor for AttachToken {
    fn call(&mut self, mut req: Request<()>) -> Result<Request<()>, Status> {
        if let Some(t) = &self.0 {
            req.metadata_mut()
                .insert(AUTHORIZATION, t.header_value().clone());
        }
        Ok(req)
    }
}

/// Server interceptor: refuses calls without the right token
/// (`Unauthenticated`); with no token configured every call passes.
#[derive(Clone, Debug, Default)]
pub struct RequireToken(Option<Arc<Token>>);

impl RequireToken {
    /// Requires `token` (none: auth off).
    pub fn new(token: Option<Token>) -> Self {
        RequireToken(token.map(Arc::new))
    }

    fn check_metadata(&self, md: &MetadataMap) -> Result<(), Refusal> {
        match &self.0 {
            None => Ok(()),
            Some(t) => check(t, md.get(AUTHORIZATION).map(|v| v.as_bytes())),
        }
    }
}

impl tonic::service::Interceptor for RequireToken {
    fn call(&mut self, req: Request<()>) -> Result<Request<()>, Status> {
        match self.check_metadata(req.metadata()) {
            Ok(()) => Ok(req),
            Err(r) => {
                let peer = req
                    .remote_addr()
                    .map(|a| a.to_string())
                    .unwrap_or_else(|| "?".into());
                tracing::warn!(peer = %peer, reason = ?r, "call refused: unauthenticated");
                metrics::counter!("hybridgrid_auth_refused_total").increment(1);
                Err(Status::unauthenticated(r.message()))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::service::Interceptor;

    fn cfg(token: &str, file: &str) -> AuthConfig {
        let mut c = AuthConfig::default();
        c.enabled = true;
        c.token = token.into();
        c.token_file = file.into();
        c
    }

    #[test]
    fn token_from_config_and_file() {
        assert!(
            Token::from_config(&AuthConfig::default())
                .unwrap()
                .is_none()
        );
        let t = Token::from_config(&cfg("abc", "")).unwrap().unwrap();
        assert!(t.verify(b"abc") && !t.verify(b"abd") && !t.verify(b"ab"));
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("token");
        std::fs::write(&f, "from-file\n").unwrap();
        let t = Token::from_config(&cfg("", f.to_str().unwrap()))
            .unwrap()
            .unwrap();
        assert!(t.verify(b"from-file"));
        let e = Token::from_config(&cfg("", "/nonexistent/token")).unwrap_err();
        assert!(e.to_string().contains("/nonexistent/token"), "{e}");
    }

    #[test]
    fn bad_tokens_are_refused_without_echo() {
        for bad in ["", "has space", "tab\there", "é"] {
            let e = Token::new(bad).unwrap_err().to_string();
            assert!(bad.is_empty() || !e.contains(bad), "{e}");
        }
    }

    #[test]
    fn interceptors_attach_and_check() {
        let t = Token::new("tok-123").unwrap();
        let mut attach = AttachToken::new(Some(t.clone()));
        let req = attach.call(Request::new(())).unwrap();
        let mut require = RequireToken::new(Some(t));
        assert!(require.call(req).is_ok());

        let s = require.call(Request::new(())).unwrap_err();
        assert_eq!(s.code(), tonic::Code::Unauthenticated);
        assert!(s.message().starts_with("missing auth token"), "{s:?}");

        let wrong = Token::new("tok-999").unwrap();
        let req = AttachToken::new(Some(wrong))
            .call(Request::new(()))
            .unwrap();
        let s = require.call(req).unwrap_err();
        assert!(s.message().starts_with("wrong auth token"), "{s:?}");
        assert!(!s.message().contains("tok-"), "{s:?}");

        let mut off = RequireToken::new(None);
        assert!(off.call(Request::new(())).is_ok());
    }
}
