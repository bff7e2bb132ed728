//! Building the backend from `cache.remote`: splitting the URL, its
//! credentials, and the opendal operator.

use std::sync::OnceLock;

use hybridgrid_core::config::RemoteCacheConfig;
use opendal::Operator;

use super::*;

/// The parts of a URL opendal takes separately.
pub(super) struct UrlParts {
    /// `scheme://host[:port]` plus, for HTTP, the path.
    pub(super) endpoint: String,
    /// Path after the authority (without the leading `/`).
    pub(super) path: String,
    pub(super) user: Option<String>,
    pub(super) password: Option<String>,
}

pub(super) fn split_url(url: &str) -> UrlParts {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let (userinfo, host) = match authority.rfind('@') {
        Some(at) => (Some(&authority[..at]), &authority[at + 1..]),
        None => (None, authority),
    };
    let (user, password) = match userinfo {
        Some(u) => match u.split_once(':') {
            Some((a, b)) => (Some(a.to_owned()), Some(b.to_owned())),
            None => (Some(u.to_owned()), None),
        },
        None => (None, None),
    };
    let path = tail.split(['?', '#']).next().unwrap_or("");
    UrlParts {
        endpoint: format!("{scheme}://{host}{}", path.trim_end_matches('/')),
        path: path.trim_matches('/').to_owned(),
        user: user.filter(|u| !u.is_empty()),
        password,
    }
}

/// Installs rustls' ring provider for the HTTP client, once per process
/// (a provider installed by someone else is kept).
fn install_crypto_provider() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

pub(super) fn root(prefix: &str) -> String {
    let p = prefix.trim_matches('/');
    if p.is_empty() {
        "/".into()
    } else {
        format!("/{p}/")
    }
}

pub(super) fn operator(cfg: &RemoteCacheConfig) -> Result<Operator, RemoteError> {
    install_crypto_provider();
    let parts = split_url(&cfg.url);
    let password = cfg.password()?.or(parts.password.clone());
    let user = if cfg.username.is_empty() {
        parts.user.clone()
    } else {
        Some(cfg.username.clone())
    };
    let backend_err = |e: opendal::Error| RemoteError::Backend(e.to_string());
    match cfg.backend.as_str() {
        #[cfg(feature = "remote-redis")]
        "redis" => {
            let authority = parts
                .endpoint
                .split_once("://")
                .map(|(s, rest)| format!("{s}://{}", rest.split('/').next().unwrap_or("")))
                .unwrap_or_default();
            let db = if parts.path.is_empty() {
                0
            } else {
                parts.path.parse::<i64>().map_err(|_| {
                    RemoteError::Backend(format!(
                        "cache.remote.url: `{}` is not a database number",
                        parts.path
                    ))
                })?
            };
            let mut b = opendal::services::Redis::default()
                .endpoint(&authority)
                .db(db)
                .root(&root(&cfg.prefix));
            if let Some(u) = &user {
                b = b.username(u);
            }
            if let Some(p) = &password {
                b = b.password(p);
            }
            Ok(Operator::new(b).map_err(backend_err)?.finish())
        }
        #[cfg(feature = "remote-webdav")]
        "webdav" | "http" => {
            let mut b = opendal::services::Webdav::default()
                .endpoint(&parts.endpoint)
                .root(&root(&cfg.prefix))
                // Plain HTTP caches (ccache's, bazel-remote) take a PUT
                // anywhere; a WebDAV server wants the collections first.
                .disable_create_dir(cfg.backend == "http");
            if let Some(u) = &user {
                b = b.username(u);
            }
            if let Some(p) = &password {
                b = b.password(p);
            }
            Ok(Operator::new(b).map_err(backend_err)?.finish())
        }
        #[cfg(feature = "remote-s3")]
        "s3" => {
            let region = if cfg.region.is_empty() {
                "us-east-1"
            } else {
                &cfg.region
            };
            let mut b = opendal::services::S3::default()
                .bucket(&cfg.bucket)
                .region(region)
                .root(&root(&cfg.prefix));
            if !cfg.url.is_empty() {
                b = b.endpoint(&parts.endpoint);
            }
            if !cfg.access_key_id.is_empty() {
                b = b.access_key_id(&cfg.access_key_id);
            }
            if let Some(secret) = cfg.secret_access_key()? {
                b = b.secret_access_key(&secret);
            }
            Ok(Operator::new(b).map_err(backend_err)?.finish())
        }
        other => {
            let _ = (user, password, backend_err);
            Err(RemoteError::Unsupported(other.to_owned()))
        }
    }
}
