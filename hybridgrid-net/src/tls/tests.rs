//! Real handshakes over loopback with certificates made here (rcgen).

use std::net::SocketAddr;
use std::sync::Arc;

use hybridgrid_core::config::TlsConfig;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, date_time_ymd};
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};

use super::*;

/// A private CA that writes PEM files into a temp dir.
struct Pki {
    dir: tempfile::TempDir,
    ca_file: String,
    issuer: Issuer<'static, KeyPair>,
}

impl Pki {
    fn new(name: &str) -> Pki {
        let dir = tempfile::tempdir().expect("tempdir");
        let key = KeyPair::generate().expect("key");
        let mut p = CertificateParams::new(Vec::<String>::new()).expect("params");
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.distinguished_name.push(DnType::CommonName, name);
        let cert = p.self_signed(&key).expect("ca cert");
        let ca_file = dir.path().join(format!("{name}.crt"));
        std::fs::write(&ca_file, cert.pem()).expect("write");
        Pki {
            ca_file: ca_file.display().to_string(),
            dir,
            issuer: Issuer::new(p, key),
        }
    }

    /// A leaf for `names` (CN = the first); expired when `expired`.
    fn leaf(&self, file: &str, names: &[&str], expired: bool) -> (String, String) {
        let key = KeyPair::generate().expect("key");
        let mut p = CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .expect("params");
        p.distinguished_name.push(DnType::CommonName, names[0]);
        if expired {
            p.not_before = date_time_ymd(2020, 1, 1);
            p.not_after = date_time_ymd(2021, 1, 1);
        }
        let cert = p.signed_by(&key, &self.issuer).expect("leaf");
        let c = self.dir.path().join(format!("{file}.crt"));
        let k = self.dir.path().join(format!("{file}.key"));
        std::fs::write(&c, cert.pem()).expect("write");
        std::fs::write(&k, key.serialize_pem()).expect("write");
        (c.display().to_string(), k.display().to_string())
    }
}

fn cfg(cert: Option<&(String, String)>, ca: &str, mtls: bool) -> TlsConfig {
    let mut c = TlsConfig::default();
    c.enabled = true;
    if let Some((crt, key)) = cert {
        c.cert_file = crt.clone();
        c.key_file = key.clone();
    }
    c.ca_file = ca.to_owned();
    c.require_client_cert = mtls;
    c
}

/// One handshake: the server's result and the client's (dialled as `host`).
async fn handshake(
    server: &TlsConfig,
    client: &TlsConfig,
    host: &str,
) -> (
    Result<ServerIo, HandshakeError>,
    Result<ClientIo, HandshakeError>,
) {
    let stls = ServerTls::from_config(server)
        .expect("server tls")
        .expect("on");
    let ctls = ClientTls::from_config(client)
        .expect("client tls")
        .expect("on");
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr: SocketAddr = l.local_addr().expect("addr");
    let srv = tokio::spawn(async move {
        let (tcp, peer) = l.accept().await.expect("accept");
        stls.accept(tcp, peer, &[b"h2"], true).await
    });
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let c = ctls.connect(tcp, host, &addr.to_string()).await;
    // The client drops its side on failure, which ends the server's wait.
    let s = tokio::time::timeout(std::time::Duration::from_secs(10), srv)
        .await
        .expect("server handshake ends")
        .expect("join");
    (s, c)
}

fn assert_msg(e: &HandshakeError, kind: FailureKind, words: &[&str]) {
    eprintln!("{e}");
    assert_eq!(e.kind(), kind, "{e}");
    assert!(e.message().starts_with(HANDSHAKE_FAILED), "{e}");
    for w in words {
        assert!(e.message().contains(w), "`{w}` missing in: {e}");
    }
}

#[tokio::test]
async fn mtls_succeeds_with_good_certificates() {
    let pki = Pki::new("Grid CA");
    let server = pki.leaf("server", &["localhost"], false);
    let client = pki.leaf("client", &["hgbuild-client"], false);
    let (s, c) = handshake(
        &cfg(Some(&server), &pki.ca_file, true),
        &cfg(Some(&client), &pki.ca_file, false),
        "localhost",
    )
    .await;
    let s = s.expect("server side");
    c.expect("client side");
    let names = s.peer_names().expect("client presented a certificate");
    assert_eq!(names.subject, "CN=hgbuild-client");
}

#[tokio::test]
async fn expired_server_certificate() {
    let pki = Pki::new("Grid CA");
    let server = pki.leaf("server", &["localhost"], true);
    let (_, c) = handshake(
        &cfg(Some(&server), &pki.ca_file, false),
        &cfg(None, &pki.ca_file, false),
        "localhost",
    )
    .await;
    let e = c.expect_err("expired certificate must fail");
    assert_msg(
        &e,
        FailureKind::Expired,
        &[
            "certificate expired",
            "CN=localhost",
            "2021-01-01",
            "-dates",
        ],
    );
}

#[tokio::test]
async fn unknown_ca() {
    let pki = Pki::new("Grid CA");
    let other = Pki::new("Other CA");
    let server = other.leaf("server", &["localhost"], false);
    let (s, c) = handshake(
        &cfg(Some(&server), &pki.ca_file, false),
        &cfg(None, &pki.ca_file, false),
        "localhost",
    )
    .await;
    let e = c.expect_err("unknown CA must fail");
    assert_msg(
        &e,
        FailureKind::UnknownCa,
        &[
            "unknown certificate authority",
            "CN=localhost",
            "issued by CN=Other CA",
            &pki.ca_file,
        ],
    );
    // The server hears the client's alert and says so.
    let e = s.expect_err("server sees the refusal");
    assert_msg(
        &e,
        FailureKind::RejectedByPeer,
        &["client 127.0.0.1:", "UnknownCA"],
    );
}

#[tokio::test]
async fn host_name_mismatch() {
    let pki = Pki::new("Grid CA");
    let server = pki.leaf("server", &["worker-7.example"], false);
    let (_, c) = handshake(
        &cfg(Some(&server), &pki.ca_file, false),
        &cfg(None, &pki.ca_file, false),
        "127.0.0.1",
    )
    .await;
    let e = c.expect_err("mismatch must fail");
    assert_msg(
        &e,
        FailureKind::HostMismatch,
        &[
            "host name mismatch",
            "`127.0.0.1`",
            "worker-7.example",
            "grep DNS",
        ],
    );
}

#[tokio::test]
async fn missing_client_certificate() {
    let pki = Pki::new("Grid CA");
    let server = pki.leaf("server", &["localhost"], false);
    let (s, c) = handshake(
        &cfg(Some(&server), &pki.ca_file, true),
        &cfg(None, &pki.ca_file, false),
        "localhost",
    )
    .await;
    let e = c.expect_err("no client certificate must fail");
    assert_msg(
        &e,
        FailureKind::MissingClientCert,
        &["missing client certificate", "tls.cert_file", "--tls-cert"],
    );
    let e = s.expect_err("server refuses too");
    assert_msg(
        &e,
        FailureKind::MissingClientCert,
        &[
            "missing client certificate",
            "client 127.0.0.1:",
            "tls.require_client_cert",
        ],
    );
}

#[tokio::test]
async fn client_certificate_from_unknown_ca() {
    let pki = Pki::new("Grid CA");
    let rogue = Pki::new("Rogue CA");
    let server = pki.leaf("server", &["localhost"], false);
    let client = rogue.leaf("client", &["intruder"], false);
    let (s, c) = handshake(
        &cfg(Some(&server), &pki.ca_file, true),
        &cfg(Some(&client), &pki.ca_file, false),
        "localhost",
    )
    .await;
    let e = s.expect_err("server refuses the client certificate");
    assert_msg(
        &e,
        FailureKind::UnknownCa,
        &["CN=intruder", "issued by CN=Rogue CA", "client 127.0.0.1:"],
    );
    // TLS 1.3: the client learns it at its first read.
    if let Ok(mut io) = c {
        let mut b = [0u8; 1];
        let err = io.read(&mut b).await.expect_err("the server's alert");
        let h = HandshakeError::find_message(&err).expect("explained");
        assert!(h.contains("refused this side's certificate"), "{h}");
    }
}

#[tokio::test]
async fn expired_client_certificate() {
    let pki = Pki::new("Grid CA");
    let server = pki.leaf("server", &["localhost"], false);
    let client = pki.leaf("client", &["old-client"], true);
    let (s, _) = handshake(
        &cfg(Some(&server), &pki.ca_file, true),
        &cfg(Some(&client), &pki.ca_file, false),
        "localhost",
    )
    .await;
    let e = s.expect_err("expired client certificate");
    assert_msg(&e, FailureKind::Expired, &["CN=old-client", "2021-01-01"]);
}

#[tokio::test]
async fn plain_client_to_tls_server_is_explained() {
    let pki = Pki::new("Grid CA");
    let server = pki.leaf("server", &["localhost"], false);
    let stls = ServerTls::from_config(&cfg(Some(&server), &pki.ca_file, false))
        .expect("tls")
        .expect("on");
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    let srv = tokio::spawn(async move {
        let (tcp, peer) = l.accept().await.expect("accept");
        stls.accept(tcp, peer, &[b"h2"], true).await
    });
    let mut tcp = TcpStream::connect(addr).await.expect("connect");
    tokio::io::AsyncWriteExt::write_all(&mut tcp, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        .await
        .expect("write");
    let e = srv.await.expect("join").expect_err("not TLS");
    assert_msg(&e, FailureKind::Other, &["is the client using TLS"]);
}

#[test]
fn config_errors_name_the_key_and_file() {
    let mut c = TlsConfig::default();
    c.enabled = true;
    let e = ClientTls::from_config(&c).unwrap_err().to_string();
    assert!(e.starts_with("tls.ca_file"), "{e}");
    let e = ServerTls::from_config(&c).unwrap_err().to_string();
    assert!(e.starts_with("tls.cert_file"), "{e}");
    c.ca_file = "/nonexistent/ca.pem".into();
    let e = ClientTls::from_config(&c).unwrap_err().to_string();
    assert!(e.contains("/nonexistent/ca.pem"), "{e}");
    let dir = tempfile::tempdir().expect("tmp");
    let junk = dir.path().join("junk.pem");
    std::fs::write(&junk, "not a certificate").expect("write");
    c.ca_file = junk.display().to_string();
    let e = ClientTls::from_config(&c).unwrap_err().to_string();
    assert!(e.contains("holds no PEM certificate"), "{e}");
    let _ = Arc::new(());
}
