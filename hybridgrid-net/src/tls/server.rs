//! The server side: an accept loop that runs each handshake in its own
//! task, logs every failure with its explanation and hands finished
//! connections to tonic (as a stream) or axum (as a listener).

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use hybridgrid_core::config::TlsConfig;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{DigitallySignedStruct, DistinguishedName, ServerConfig, SignatureScheme};
use tokio::io::{AsyncRead, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tonic::transport::server::{Connected, TcpConnectInfo};

use super::{
    CertNames, FailureKind, HandshakeError, Peer, TlsError, explain_alert, explain_certificate,
    file_name, load_identity, load_roots, provider, rustls_error,
};

/// Handshakes running at once per listener; more connections wait.
const MAX_PENDING_HANDSHAKES: usize = 256;

/// A server's TLS settings: its certificate and, for mTLS, the CA bundle
/// client certificates must chain to.
pub struct ServerTls {
    provider: Arc<rustls::crypto::CryptoProvider>,
    identity: Arc<CertifiedKey>,
    client_verifier: Option<Arc<dyn ClientCertVerifier>>,
    ca_file: String,
    cert_file: String,
    handshake_timeout: Duration,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls")
            .field("cert_file", &self.cert_file)
            .field("ca_file", &self.ca_file)
            .field("require_client_cert", &self.client_verifier.is_some())
            .finish()
    }
}

impl ServerTls {
    /// The server side of `cfg`; `None` when TLS is off.
    /// `tls.cert_file` and `tls.key_file` are required, and `tls.ca_file`
    /// too when `tls.require_client_cert` is on.
    pub fn from_config(cfg: &TlsConfig) -> Result<Option<Arc<ServerTls>>, TlsError> {
        if !cfg.enabled {
            return Ok(None);
        }
        if cfg.cert_file.is_empty() || cfg.key_file.is_empty() {
            return Err(TlsError::Missing {
                key: "tls.cert_file",
                message: "TLS is on, so a server needs tls.cert_file and tls.key_file \
                          (--tls-cert, --tls-key): its certificate and private key (PEM)",
            });
        }
        let provider = provider();
        let identity = load_identity(&cfg.cert_file, &cfg.key_file)?;
        let client_verifier = if cfg.require_client_cert {
            if cfg.ca_file.is_empty() {
                return Err(TlsError::Missing {
                    key: "tls.ca_file",
                    message: "tls.require_client_cert is on, so tls.ca_file (--tls-ca) must \
                              name the CA bundle (PEM) client certificates are checked against",
                });
            }
            let roots = load_roots(&cfg.ca_file)?;
            Some(
                WebPkiClientVerifier::builder_with_provider(roots, provider.clone())
                    .build()
                    .map_err(|e| TlsError::Rejected {
                        key: "tls.ca_file",
                        file: cfg.ca_file.clone(),
                        source: rustls::Error::General(e.to_string()),
                    })?,
            )
        } else {
            None
        };
        Ok(Some(Arc::new(ServerTls {
            provider,
            identity,
            client_verifier,
            ca_file: cfg.ca_file.clone(),
            cert_file: cfg.cert_file.clone(),
            handshake_timeout: Duration::from_secs(10),
        })))
    }

    /// The same with another handshake time limit (10 s by default).
    pub fn with_handshake_timeout(self: &Arc<Self>, t: Duration) -> Arc<Self> {
        Arc::new(ServerTls {
            provider: self.provider.clone(),
            identity: self.identity.clone(),
            client_verifier: self.client_verifier.clone(),
            ca_file: self.ca_file.clone(),
            cert_file: self.cert_file.clone(),
            handshake_timeout: t,
        })
    }

    /// True if clients must present a certificate.
    pub fn requires_client_cert(&self) -> bool {
        self.client_verifier.is_some()
    }

    /// Runs the server handshake on `tcp` from `peer`. `mtls`: demand a
    /// client certificate when configured (gRPC); off for HTTP, where
    /// health checks and scrapers have none.
    pub async fn accept(
        &self,
        tcp: TcpStream,
        peer: SocketAddr,
        alpn: &[&[u8]],
        mtls: bool,
    ) -> Result<ServerIo, HandshakeError> {
        let builder = ServerConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| HandshakeError::new(FailureKind::Other, e))?;
        let recorder = match (&self.client_verifier, mtls) {
            (Some(v), true) => Some(Arc::new(Recorder {
                inner: v.clone(),
                seen: Mutex::new(None),
            })),
            _ => None,
        };
        let builder = match &recorder {
            Some(r) => builder.with_client_cert_verifier(r.clone()),
            None => builder.with_no_client_auth(),
        };
        let mut cfg = builder.with_cert_resolver(Arc::new(FixedCert(self.identity.clone())));
        cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
        let who = format!("client {peer}");
        let result = tokio::time::timeout(self.handshake_timeout, acceptor.accept(tcp)).await;
        let e = match result {
            Ok(Ok(s)) => return Ok(ServerIo { inner: s }),
            Ok(Err(e)) => e,
            Err(_) => {
                return Err(HandshakeError::new(
                    FailureKind::Timeout,
                    format!(
                        "no handshake within {:?} ({who}); a slow network, or a client that \
                         does not speak TLS",
                        self.handshake_timeout
                    ),
                ));
            }
        };
        let names = recorder
            .as_ref()
            .and_then(|r| r.seen.lock().ok().and_then(|mut g| g.take()));
        let p = Peer {
            who: &who,
            names,
            ca_file: &self.ca_file,
        };
        Err(match rustls_error(&e) {
            Some(rustls::Error::InvalidCertificate(ce)) => explain_certificate(&p, ce),
            Some(rustls::Error::NoCertificatesPresented) => HandshakeError::new(
                FailureKind::MissingClientCert,
                format!(
                    "missing client certificate: {who} sent none, but this server requires \
                     one (tls.require_client_cert); give that client tls.cert_file and \
                     tls.key_file (--tls-cert, --tls-key) with a certificate issued by the CA \
                     in this server's tls.ca_file ({})",
                    file_name(&self.ca_file)
                ),
            ),
            Some(rustls::Error::AlertReceived(a)) => explain_alert(
                &who,
                *a,
                &format!("tls.cert_file {}", file_name(&self.cert_file)),
            ),
            Some(other) => HandshakeError::new(
                FailureKind::Other,
                format!("{other} ({who}); is the client using TLS (tls.enabled)?"),
            ),
            None => HandshakeError::new(
                FailureKind::Other,
                format!("the connection ended during the handshake ({e}) ({who})"),
            ),
        })
    }

    /// Accepts connections on `listener` and runs their handshakes in the
    /// background (at most 256 at once, each within the handshake time
    /// limit); failures are logged at `warn` with their explanation.
    pub fn incoming(
        self: &Arc<Self>,
        listener: TcpListener,
        alpn: &'static [&'static [u8]],
        mtls: bool,
    ) -> TlsIncoming {
        let local = listener
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
        let (tx, rx) = mpsc::channel(64);
        let tls = self.clone();
        let task = tokio::spawn(async move {
            let slots = Arc::new(Semaphore::new(MAX_PENDING_HANDSHAKES));
            loop {
                let permit = tokio::select! {
                    p = slots.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => return },
                    _ = tx.closed() => return,
                };
                let (tcp, peer) = tokio::select! {
                    r = listener.accept() => match r {
                        Ok(x) => x,
                        Err(e) => {
                            tracing::debug!(error = %e, "accept failed");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    },
                    _ = tx.closed() => return,
                };
                let _ = tcp.set_nodelay(true);
                let (tls, tx) = (tls.clone(), tx.clone());
                tokio::spawn(async move {
                    let _permit = permit;
                    match tls.accept(tcp, peer, alpn, mtls).await {
                        Ok(io) => {
                            let _ = tx.send((io, peer)).await;
                        }
                        Err(e) => {
                            metrics::counter!("hybridgrid_tls_handshake_failures_total", "kind" => e.kind().as_str()).increment(1);
                            tracing::warn!(peer = %peer, kind = e.kind().as_str(), "{e}");
                        }
                    }
                });
            }
        });
        TlsIncoming {
            rx,
            local,
            task: AbortOnDrop(task),
        }
    }
}

#[derive(Debug)]
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Connections whose handshake succeeded: a `Stream` for tonic's
/// `serve_with_incoming*` and an `axum::serve::Listener` for axum.
#[derive(Debug)]
pub struct TlsIncoming {
    rx: mpsc::Receiver<(ServerIo, SocketAddr)>,
    local: SocketAddr,
    #[allow(dead_code)]
    task: AbortOnDrop,
}

impl futures::Stream for TlsIncoming {
    type Item = Result<ServerIo, std::io::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.rx
            .poll_recv(cx)
            .map(|o| o.map(|(io, _)| Ok::<_, std::io::Error>(io)))
    }
}

impl axum::serve::Listener for TlsIncoming {
    type Io = ServerIo;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (ServerIo, SocketAddr) {
        match self.rx.recv().await {
            Some(x) => x,
            // The accept loop ended: nothing more will come.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        Ok(self.local)
    }
}

/// A server's TLS connection.
#[derive(Debug)]
pub struct ServerIo {
    inner: tokio_rustls::server::TlsStream<TcpStream>,
}

impl ServerIo {
    /// The names of the client's certificate, if it presented one.
    pub fn peer_names(&self) -> Option<CertNames> {
        let (_, conn) = self.inner.get_ref();
        conn.peer_certificates()
            .and_then(|c| c.first())
            .and_then(|c| CertNames::from_der(c))
    }
}

impl Connected for ServerIo {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        self.inner.get_ref().0.connect_info()
    }
}

impl AsyncRead for ServerIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

forward_async_write!(ServerIo);

/// Always the server's one certificate.
#[derive(Debug)]
struct FixedCert(Arc<CertifiedKey>);

impl ResolvesServerCert for FixedCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }
}

/// Checks client certificates and keeps the names of one it refuses.
#[derive(Debug)]
struct Recorder {
    inner: Arc<dyn ClientCertVerifier>,
    seen: Mutex<Option<CertNames>>,
}

impl ClientCertVerifier for Recorder {
    fn offer_client_auth(&self) -> bool {
        self.inner.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let r = self
            .inner
            .verify_client_cert(end_entity, intermediates, now);
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
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}
