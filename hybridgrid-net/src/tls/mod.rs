//! TLS for every gRPC connection (and the HTTP endpoints), with rustls.
//!
//! [`ClientTls`] makes the connections of `hgbuild`, of the coordinator to
//! its workers and of workers to the coordinator; [`ServerTls`] accepts
//! them. Both do the handshake themselves (instead of leaving it to
//! tonic) so that a failed handshake can be explained: every failure is a
//! [`HandshakeError`] whose message starts with `TLS handshake failed:`,
//! says what went wrong (an expired certificate, an unknown certificate
//! authority, a host name the certificate does not cover, a missing client
//! certificate...), names the certificates and hosts involved and what to
//! check. Servers log the same message for each refused connection.
//!
//! Servers ask for a client certificate only when
//! `tls.require_client_cert` is on (mTLS); a client therefore knows that a
//! server that asks for one demands one.
//!
//! ```
//! use hybridgrid_core::config::TlsConfig;
//! use hybridgrid_net::tls::{ClientTls, ServerTls};
//!
//! // TLS off: nothing to load.
//! let off = TlsConfig::default();
//! assert!(ClientTls::from_config(&off).unwrap().is_none());
//! assert!(ServerTls::from_config(&off).unwrap().is_none());
//! ```

/// `AsyncWrite` for a TLS connection type whose `inner` field is the
/// `tokio_rustls` stream: every method forwards to it. (Reads differ: the
/// client maps alerts into messages.)
macro_rules! forward_async_write {
    ($io:ty) => {
        impl tokio::io::AsyncWrite for $io {
            fn poll_write(
                mut self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
                buf: &[u8],
            ) -> std::task::Poll<std::io::Result<usize>> {
                std::pin::Pin::new(&mut self.inner).poll_write(cx, buf)
            }

            fn poll_flush(
                mut self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
            ) -> std::task::Poll<std::io::Result<()>> {
                std::pin::Pin::new(&mut self.inner).poll_flush(cx)
            }

            fn poll_shutdown(
                mut self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
            ) -> std::task::Poll<std::io::Result<()>> {
                std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
            }

            fn poll_write_vectored(
                mut self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
                bufs: &[std::io::IoSlice<'_>],
            ) -> std::task::Poll<std::io::Result<usize>> {
                std::pin::Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
            }

            fn is_write_vectored(&self) -> bool {
                self.inner.is_write_vectored()
            }
        }
    };
}

mod client;
mod names;
mod server;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::sign::CertifiedKey;
use rustls::{AlertDescription, CertificateError, RootCertStore};

pub use client::{ClientIo, ClientTls, TlsConnector};
pub use names::CertNames;
pub use server::{ServerIo, ServerTls, TlsIncoming};

/// The words every handshake failure message starts with.
pub const HANDSHAKE_FAILED: &str = "TLS handshake failed:";

/// Why TLS could not be set up from the configuration. The messages name
/// the configuration key or the file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A required setting is missing.
    #[error("{key}: {message}")]
    Missing {
        /// The configuration key.
        key: &'static str,
        /// What to set.
        message: &'static str,
    },
    /// A file could not be read.
    #[error("{key}: cannot read {file}: {source}")]
    Read {
        /// The configuration key.
        key: &'static str,
        /// The file.
        file: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A file holds no usable PEM item of the expected kind.
    #[error("{key}: {file} holds no {what}")]
    Empty {
        /// The configuration key.
        key: &'static str,
        /// The file.
        file: String,
        /// What was expected (`PEM certificate`, `PEM private key`).
        what: &'static str,
    },
    /// rustls refused the material.
    #[error("{key}: {file}: {source}")]
    Rejected {
        /// The configuration key.
        key: &'static str,
        /// The file.
        file: String,
        /// Why.
        #[source]
        source: rustls::Error,
    },
}

/// The kind of a handshake failure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum FailureKind {
    /// The peer's certificate has expired.
    Expired,
    /// The peer's certificate is not valid yet.
    NotYetValid,
    /// The peer's certificate is not signed by a trusted CA.
    UnknownCa,
    /// The server's certificate does not cover the name that was dialled.
    HostMismatch,
    /// The server demands a client certificate and this client has none
    /// (or, on a server, the client sent none).
    MissingClientCert,
    /// The peer refused this side's certificate.
    RejectedByPeer,
    /// The handshake did not finish in time.
    Timeout,
    /// Anything else (not TLS at all, a protocol error...).
    Other,
}

impl FailureKind {
    /// A short name for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            FailureKind::Expired => "expired",
            FailureKind::NotYetValid => "not-yet-valid",
            FailureKind::UnknownCa => "unknown-ca",
            FailureKind::HostMismatch => "host-mismatch",
            FailureKind::MissingClientCert => "missing-client-cert",
            FailureKind::RejectedByPeer => "rejected-by-peer",
            FailureKind::Timeout => "timeout",
            FailureKind::Other => "other",
        }
    }
}

/// A failed TLS handshake, explained. Its message starts with
/// [`HANDSHAKE_FAILED`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct HandshakeError {
    kind: FailureKind,
    message: String,
}

impl HandshakeError {
    pub(crate) fn new(kind: FailureKind, detail: impl std::fmt::Display) -> Self {
        HandshakeError {
            kind,
            message: format!("{HANDSHAKE_FAILED} {detail}"),
        }
    }

    /// What went wrong.
    pub fn kind(&self) -> FailureKind {
        self.kind
    }

    /// The whole message.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The handshake failure message in an error chain, if any (a
    /// [`HandshakeError`] or any error whose text contains
    /// [`HANDSHAKE_FAILED`]), from the words `TLS handshake failed:` on.
    pub fn find_message(err: &(dyn std::error::Error + 'static)) -> Option<String> {
        let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err);
        while let Some(e) = cur {
            if let Some(h) = e.downcast_ref::<HandshakeError>() {
                return Some(h.message.clone());
            }
            let t = e.to_string();
            if let Some(i) = t.find(HANDSHAKE_FAILED) {
                return Some(t[i..].to_owned());
            }
            cur = e.source();
        }
        None
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read(key: &'static str, file: &str) -> Result<Vec<u8>, TlsError> {
    std::fs::read(file).map_err(|source| TlsError::Read {
        key,
        file: file.to_owned(),
        source,
    })
}

fn load_certs(key: &'static str, file: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(key, file)?;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&pem)
        .filter_map(Result::ok)
        .collect();
    if certs.is_empty() {
        return Err(TlsError::Empty {
            key,
            file: file.to_owned(),
            what: "PEM certificate",
        });
    }
    Ok(certs)
}

fn load_roots(file: &str) -> Result<Arc<RootCertStore>, TlsError> {
    let mut roots = RootCertStore::empty();
    for c in load_certs("tls.ca_file", file)? {
        roots.add(c).map_err(|source| TlsError::Rejected {
            key: "tls.ca_file",
            file: file.to_owned(),
            source,
        })?;
    }
    Ok(Arc::new(roots))
}

/// The certificate chain of `cert_file` with the key of `key_file`.
fn load_identity(cert_file: &str, key_file: &str) -> Result<Arc<CertifiedKey>, TlsError> {
    let chain = load_certs("tls.cert_file", cert_file)?;
    let pem = read("tls.key_file", key_file)?;
    let key = PrivateKeyDer::from_pem_slice(&pem).map_err(|_| TlsError::Empty {
        key: "tls.key_file",
        file: key_file.to_owned(),
        what: "PEM private key",
    })?;
    let ck =
        CertifiedKey::from_der(chain, key, &provider()).map_err(|source| TlsError::Rejected {
            key: "tls.key_file",
            file: key_file.to_owned(),
            source,
        })?;
    Ok(Arc::new(ck))
}

fn file_name(f: &str) -> &str {
    Path::new(f)
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or(f)
}

fn when(t: UnixTime) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(t.as_secs())).to_string()
}

/// Who the certificate in question belongs to, for messages.
pub(crate) struct Peer<'a> {
    /// `the server 127.0.0.1:9000` or `client 10.0.0.5:41234`.
    pub(crate) who: &'a str,
    /// Names read from the certificate, when one was presented.
    pub(crate) names: Option<CertNames>,
    /// This side's `tls.ca_file`.
    pub(crate) ca_file: &'a str,
}

impl Peer<'_> {
    fn cert(&self) -> String {
        match &self.names {
            Some(n) => format!("the certificate of {} ({})", self.who, n.describe()),
            None => format!("the certificate of {}", self.who),
        }
    }
}

/// The words before every refusal of a peer's certificate (OpenSSL's, so
/// that searches for the usual phrase find ours too).
pub const VERIFY_FAILED: &str = "certificate verify failed:";

/// Explains a certificate that this side's verifier refused.
pub(crate) fn explain_certificate(peer: &Peer<'_>, e: &CertificateError) -> HandshakeError {
    let h = explain_certificate_inner(peer, e);
    HandshakeError {
        kind: h.kind,
        message: h.message.replacen(
            HANDSHAKE_FAILED,
            &format!("{HANDSHAKE_FAILED} {VERIFY_FAILED}"),
            1,
        ),
    }
}

fn explain_certificate_inner(peer: &Peer<'_>, e: &CertificateError) -> HandshakeError {
    use CertificateError as C;
    match e {
        C::Expired | C::ExpiredContext { .. } => {
            let dates = match e {
                C::ExpiredContext { time, not_after } => {
                    format!(
                        " expired at {} (it is now {})",
                        when(*not_after),
                        when(*time)
                    )
                }
                _ => " has expired".into(),
            };
            HandshakeError::new(
                FailureKind::Expired,
                format!(
                    "certificate expired: {}{dates}; check its dates with \
                     `openssl x509 -in CERT -noout -dates` and renew it (and check the clocks)",
                    peer.cert()
                ),
            )
        }
        C::NotValidYet | C::NotValidYetContext { .. } => {
            let dates = match e {
                C::NotValidYetContext { time, not_before } => format!(
                    " is valid only from {} (it is now {})",
                    when(*not_before),
                    when(*time)
                ),
                _ => " is not valid yet".into(),
            };
            HandshakeError::new(
                FailureKind::NotYetValid,
                format!(
                    "certificate not yet valid: {}{dates}; check the clocks of both machines \
                     and the dates with `openssl x509 -in CERT -noout -dates`",
                    peer.cert()
                ),
            )
        }
        C::UnknownIssuer | C::BadSignature => {
            let issuer = peer
                .names
                .as_ref()
                .map(|n| format!(" is issued by {}, which", n.issuer))
                .unwrap_or_default();
            HandshakeError::new(
                FailureKind::UnknownCa,
                format!(
                    "unknown certificate authority: {}{issuer} is not signed by a CA in \
                     tls.ca_file ({}); check that tls.ca_file holds the CA that issued that \
                     certificate and that the peer sends its whole chain",
                    peer.cert(),
                    if peer.ca_file.is_empty() {
                        "not set"
                    } else {
                        peer.ca_file
                    }
                ),
            )
        }
        C::NotValidForName | C::NotValidForNameContext { .. } => {
            let (expected, presented) = match e {
                C::NotValidForNameContext {
                    expected,
                    presented,
                } => {
                    // Our own reading of the certificate, else rustls's list
                    // (written as `DnsName("x")`).
                    let names: Vec<String> = match &peer.names {
                        Some(n) if !n.alt_names.is_empty() => n.alt_names.clone(),
                        _ => presented.iter().map(|p| unwrap_name(p)).collect(),
                    };
                    (
                        server_name_text(expected),
                        if names.is_empty() {
                            "no names at all".to_owned()
                        } else {
                            names.join(", ")
                        },
                    )
                }
                _ => (
                    "the dialled name".to_owned(),
                    peer.names
                        .as_ref()
                        .map(|n| n.alt_names.join(", "))
                        .unwrap_or_else(|| "other names".into()),
                ),
            };
            HandshakeError::new(
                FailureKind::HostMismatch,
                format!(
                    "host name mismatch: {} dialled as `{expected}`, but its certificate \
                     is only valid for {presented}; dial one of those names or reissue the \
                     certificate with `{expected}` in its subjectAltName (list them with \
                     `openssl x509 -in CERT -noout -text | grep DNS`)",
                    peer.who
                ),
            )
        }
        other => HandshakeError::new(
            FailureKind::Other,
            format!(
                "invalid certificate: {} was refused ({other:?}); check it with \
                 `openssl x509 -in CERT -noout -text`",
                peer.cert()
            ),
        ),
    }
}

/// `DnsName("x")` -> `x`, `IpAddress(1.2.3.4)` -> `1.2.3.4`.
fn unwrap_name(p: &str) -> String {
    match (p.find('('), p.rfind(')')) {
        (Some(a), Some(b)) if a < b => p[a + 1..b].trim_matches('"').to_owned(),
        _ => p.to_owned(),
    }
}

fn server_name_text(n: &rustls::pki_types::ServerName<'_>) -> String {
    match n {
        rustls::pki_types::ServerName::DnsName(d) => d.as_ref().to_owned(),
        rustls::pki_types::ServerName::IpAddress(ip) => std::net::IpAddr::from(*ip).to_string(),
        other => format!("{other:?}"),
    }
}

/// Explains an alert the peer sent during the handshake: it refused this
/// side's certificate (or demanded one).
pub(crate) fn explain_alert(who: &str, alert: AlertDescription, own_cert: &str) -> HandshakeError {
    match alert {
        AlertDescription::CertificateRequired => HandshakeError::new(
            FailureKind::MissingClientCert,
            format!(
                "missing client certificate: {who} requires a client certificate (mTLS) \
                 but none was sent; set tls.cert_file and tls.key_file (--tls-cert, \
                 --tls-key) to a certificate issued by the CA in the server's tls.ca_file"
            ),
        ),
        AlertDescription::BadCertificate
        | AlertDescription::UnsupportedCertificate
        | AlertDescription::CertificateRevoked
        | AlertDescription::CertificateExpired
        | AlertDescription::CertificateUnknown
        | AlertDescription::UnknownCA
        | AlertDescription::AccessDenied => HandshakeError::new(
            FailureKind::RejectedByPeer,
            format!(
                "{who} refused this side's certificate{} (alert: {alert:?}); check that it is \
                 issued by a CA in the peer's tls.ca_file, has not expired and, for a server, \
                 names the host the peer dials",
                if own_cert.is_empty() {
                    String::new()
                } else {
                    format!(" ({own_cert})")
                }
            ),
        ),
        other => HandshakeError::new(
            FailureKind::Other,
            format!(
                "{who} ended the handshake (alert: {other:?}); check that both sides use TLS \
                 (tls.enabled) and trust each other's CA"
            ),
        ),
    }
}

/// The rustls error inside an I/O error from tokio-rustls, if any.
pub(crate) fn rustls_error(e: &std::io::Error) -> Option<&rustls::Error> {
    e.get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
}

#[cfg(test)]
mod tests;
