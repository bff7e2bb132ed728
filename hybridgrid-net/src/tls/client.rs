//! The client side: a connector for tonic channels that does the TLS
//! handshake itself and explains failures.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use hybridgrid_core::BoxError;
use hybridgrid_core::config::TlsConfig;
use hyper_util::rt::TokioIo;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{ResolvesClientCert, WebPkiServerVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};
use tokio::io::{AsyncRead, ReadBuf};
use tokio::net::TcpStream;

use super::{
    CertNames, FailureKind, HandshakeError, Peer, TlsError, explain_alert, explain_certificate,
    file_name, load_identity, load_roots, provider, rustls_error,
};

/// A client's TLS settings: the CA bundle servers are checked against and,
/// for mTLS, this client's certificate.
pub struct ClientTls {
    provider: Arc<rustls::crypto::CryptoProvider>,
    verifier: Arc<WebPkiServerVerifier>,
    identity: Option<Arc<CertifiedKey>>,
    ca_file: String,
    cert_file: String,
}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientTls")
            .field("ca_file", &self.ca_file)
            .field("cert_file", &self.cert_file)
            .finish()
    }
}

impl ClientTls {
    /// The client side of `cfg`; `None` when TLS is off. `tls.ca_file` is
    /// required; `tls.cert_file` and `tls.key_file` are used when set.
    pub fn from_config(cfg: &TlsConfig) -> Result<Option<Arc<ClientTls>>, TlsError> {
        if !cfg.enabled {
            return Ok(None);
        }
        if cfg.ca_file.is_empty() {
            return Err(TlsError::Missing {
                key: "tls.ca_file",
                message: "TLS is on, so tls.ca_file (--tls-ca) must name the CA bundle (PEM) \
                          that issued the servers' certificates",
            });
        }
        let roots = load_roots(&cfg.ca_file)?;
        let provider = provider();
        let verifier = WebPkiServerVerifier::builder_with_provider(roots, provider.clone())
            .build()
            .map_err(|e| TlsError::Rejected {
                key: "tls.ca_file",
                file: cfg.ca_file.clone(),
                source: rustls::Error::General(e.to_string()),
            })?;
        let identity = if cfg.cert_file.is_empty() {
            None
        } else {
            Some(load_identity(&cfg.cert_file, &cfg.key_file)?)
        };
        Ok(Some(Arc::new(ClientTls {
            provider,
            verifier,
            identity,
            ca_file: cfg.ca_file.clone(),
            cert_file: cfg.cert_file.clone(),
        })))
    }

    /// True if this client has a certificate to present (mTLS).
    pub fn has_client_cert(&self) -> bool {
        self.identity.is_some()
    }

    /// Runs the handshake over `tcp` with the server dialled as `host`
    /// (`address` is what messages call it).
    pub async fn connect(
        &self,
        tcp: TcpStream,
        host: &str,
        address: &str,
    ) -> Result<ClientIo, HandshakeError> {
        let recorder = Arc::new(Recorder {
            inner: self.verifier.clone(),
            seen: Mutex::new(None),
        });
        let resolver = Arc::new(Resolver {
            identity: self.identity.clone(),
            asked: AtomicBool::new(false),
        });
        let who = format!("the server {address}");
        let mut cfg = ClientConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| HandshakeError::new(FailureKind::Other, e))?
            .dangerous()
            .with_custom_certificate_verifier(recorder.clone())
            .with_client_cert_resolver(resolver.clone());
        cfg.alpn_protocols = vec![b"h2".to_vec()];
        let name = ServerName::try_from(host.to_owned()).map_err(|_| {
            HandshakeError::new(
                FailureKind::Other,
                format!("`{host}` is not a valid server name ({address})"),
            )
        })?;
        let connector = tokio_rustls::TlsConnector::from(Arc::new(cfg));
        match connector.connect(name, tcp).await {
            Ok(stream) => {
                if resolver.asked.load(Ordering::SeqCst) && self.identity.is_none() {
                    // Servers ask only when they demand one (see the module docs).
                    return Err(missing_client_cert(&who));
                }
                Ok(ClientIo {
                    inner: stream,
                    who: who.into(),
                    own_cert: self.own_cert().into(),
                })
            }
            Err(e) => {
                let names = recorder.seen.lock().ok().and_then(|mut g| g.take());
                let peer = Peer {
                    who: &who,
                    names,
                    ca_file: &self.ca_file,
                };
                Err(match rustls_error(&e) {
                    Some(rustls::Error::InvalidCertificate(ce)) => explain_certificate(&peer, ce),
                    Some(rustls::Error::AlertReceived(a)) => {
                        if resolver.asked.load(Ordering::SeqCst) && self.identity.is_none() {
                            missing_client_cert(&who)
                        } else {
                            explain_alert(&who, *a, &self.own_cert())
                        }
                    }
                    Some(other) => HandshakeError::new(
                        FailureKind::Other,
                        format!(
                            "{other} ({address}); check that {address} serves TLS \
                             (tls.enabled on the server)"
                        ),
                    ),
                    None => HandshakeError::new(
                        FailureKind::Other,
                        format!(
                            "the connection ended during the handshake ({e}) ({address}); \
                             check that {address} serves TLS (tls.enabled on the server)"
                        ),
                    ),
                })
            }
        }
    }

    fn own_cert(&self) -> String {
        if self.cert_file.is_empty() {
            String::new()
        } else {
            format!("tls.cert_file {}", file_name(&self.cert_file))
        }
    }
}

fn missing_client_cert(who: &str) -> HandshakeError {
    HandshakeError::new(
        FailureKind::MissingClientCert,
        format!(
            "missing client certificate: {who} requires a client certificate (mTLS) but this \
             client has none; set tls.cert_file and tls.key_file (--tls-cert, --tls-key) to a \
             certificate issued by the CA in the server's tls.ca_file"
        ),
    )
}

/// Checks server certificates with webpki and keeps the names of one it
/// refuses, for the error message.
#[derive(Debug)]
struct Recorder {
    inner: Arc<WebPkiServerVerifier>,
    seen: Mutex<Option<CertNames>>,
}

impl ServerCertVerifier for Recorder {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let r = self.inner.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        );
        if r.is_err()
            && let Ok(mut g) = self.seen.lock()
        {
            *g = CertNames::from_der(end_entity);
        }
        r
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// Hands out this client's certificate and notes whether the server asked.
#[derive(Debug)]
struct Resolver {
    identity: Option<Arc<CertifiedKey>>,
    asked: AtomicBool,
}

impl ResolvesClientCert for Resolver {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        self.asked.store(true, Ordering::SeqCst);
        self.identity.clone()
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// A client's TLS connection. A read that fails because the server sent
/// an alert (it refused this client's certificate after the handshake, as
/// TLS 1.3 servers do) fails with a `TLS handshake failed:` message.
pub struct ClientIo {
    inner: tokio_rustls::client::TlsStream<TcpStream>,
    who: Arc<str>,
    own_cert: Arc<str>,
}

impl std::fmt::Debug for ClientIo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientIo").field("peer", &self.who).finish()
    }
}

impl AsyncRead for ClientIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match Pin::new(&mut self.inner).poll_read(cx, buf) {
            Poll::Ready(Err(e)) => {
                let mapped = match rustls_error(&e) {
                    Some(rustls::Error::AlertReceived(a)) => {
                        std::io::Error::new(e.kind(), explain_alert(&self.who, *a, &self.own_cert))
                    }
                    _ => e,
                };
                Poll::Ready(Err(mapped))
            }
            other => other,
        }
    }
}

forward_async_write!(ClientIo);

/// A tonic connector (`tower::Service<Uri>`) that dials TCP and runs the
/// TLS handshake of a [`ClientTls`]; failures are [`HandshakeError`]s.
#[derive(Clone, Debug)]
pub struct TlsConnector {
    tls: Arc<ClientTls>,
    address: Arc<str>,
}

impl TlsConnector {
    /// A connector for the server at `address` (used in messages).
    pub fn new(tls: Arc<ClientTls>, address: &str) -> Self {
        TlsConnector {
            tls,
            address: address.into(),
        }
    }
}

impl tower::Service<http::Uri> for TlsConnector {
    type Response = TokioIo<ClientIo>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        let tls = self.tls.clone();
        let address = self.address.clone();
        Box::pin(async move {
            let host = uri
                .host()
                .unwrap_or_default()
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned();
            let port = uri.port_u16().unwrap_or(443);
            let tcp = TcpStream::connect((host.as_str(), port)).await?;
            let _ = tcp.set_nodelay(true);
            let io = tls.connect(tcp, &host, &address).await?;
            Ok(TokioIo::new(io))
        })
    }
}
