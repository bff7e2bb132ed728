//! Black-box security test: the real hg-coord, hg-worker and hgbuild with
//! mTLS and a token on every connection, certificates made here (rcgen).
//! A file compiles remotely; a wrong token and a missing client
//! certificate are refused with the right words and hgbuild compiles
//! locally with a warning.

mod support;

use std::io::{Read, Write};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use support::*;

const TOKEN: &str = "e2e-grid-token-5d1f";

struct Pki {
    issuer: Issuer<'static, KeyPair>,
    ca_pem: String,
}

impl Pki {
    fn new(dir: &Path) -> Pki {
        let key = KeyPair::generate().expect("key");
        let mut p = CertificateParams::new(Vec::<String>::new()).expect("params");
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.distinguished_name.push(DnType::CommonName, "e2e CA");
        let cert = p.self_signed(&key).expect("ca");
        std::fs::write(dir.join("ca.crt"), cert.pem()).expect("write");
        Pki {
            ca_pem: cert.pem(),
            issuer: Issuer::new(p, key),
        }
    }

    fn issue(&self, dir: &Path, name: &str, sans: &[&str]) {
        let key = KeyPair::generate().expect("key");
        let mut p = CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .expect("params");
        p.distinguished_name.push(DnType::CommonName, name);
        let cert = p.signed_by(&key, &self.issuer).expect("leaf");
        std::fs::write(dir.join(format!("{name}.crt")), cert.pem()).expect("write");
        std::fs::write(dir.join(format!("{name}.key")), key.serialize_pem()).expect("write");
    }
}

fn p(dir: &Path, f: &str) -> String {
    dir.join(f).display().to_string()
}

/// `GET`/`PUT` over HTTPS (rustls, trusting `ca_pem`); returns (status, body).
fn https(ca_pem: &str, addr: &str, method: &str, path: &str, token: Option<&str>) -> (u16, String) {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls::pki_types::CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(c.expect("pem")).expect("root");
    }
    let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
    let conn = rustls::ClientConnection::new(Arc::new(cfg), name).expect("conn");
    let tcp = std::net::TcpStream::connect(addr).expect("connect");
    tcp.set_read_timeout(Some(Duration::from_secs(10))).ok();
    let mut s = rustls::StreamOwned::new(conn, tcp);
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let body = if method == "PUT" { "debug" } else { "" };
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\n{auth}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .expect("send");
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

#[test]
fn mtls_and_token_grid() {
    let pki_dir = tempdir();
    let d = pki_dir.path();
    let pki = Pki::new(d);
    pki.issue(d, "coord", &["localhost", "127.0.0.1"]);
    pki.issue(d, "worker", &["localhost", "127.0.0.1"]);
    pki.issue(d, "client", &["alice"]);
    std::fs::write(d.join("token"), format!("{TOKEN}\n")).expect("token");
    let token_file = p(d, "token");
    let ca = p(d, "ca.crt");
    let auth_env = [
        ("HG_AUTH__ENABLED", "true"),
        ("HG_AUTH__TOKEN_FILE", token_file.as_str()),
    ];

    let (coord_cert, coord_key) = (p(d, "coord.crt"), p(d, "coord.key"));
    let coord = start_coordinator_env(
        &[
            "--tls-cert",
            &coord_cert,
            "--tls-key",
            &coord_key,
            "--tls-ca",
            &ca,
            "--tls-require-client-cert",
        ],
        &auth_env,
    );
    let (grpc, http) = (coord.grpc.clone(), coord.http.clone());
    let coord = coord.proc;

    let (worker_cert, worker_key) = (p(d, "worker.crt"), p(d, "worker.key"));
    // Registering proves the worker's mTLS and token were accepted.
    let worker = start_worker_env(
        &grpc,
        "secure-w1",
        &[
            "--tls-cert",
            &worker_cert,
            "--tls-key",
            &worker_key,
            "--tls-ca",
            &ca,
            "--tls-require-client-cert",
        ],
        &auth_env,
    )
    .proc;

    let dir = tempdir();
    write(dir.path(), "main.c", "int twice(int x) { return 2 * x; }\n");
    let (client_cert, client_key) = (p(d, "client.crt"), p(d, "client.key"));
    let tls_args = [
        "--coordinator",
        grpc.as_str(),
        "--tls-cert",
        client_cert.as_str(),
        "--tls-key",
        client_key.as_str(),
        "--tls-ca",
        ca.as_str(),
    ];
    let run = |extra_tls: &[&str], env: &[(&str, &str)], args: &[&str]| {
        let mut a: Vec<&str> = extra_tls.to_vec();
        a.extend_from_slice(args);
        // No local cache: every run must talk to the coordinator.
        let mut e = vec![("HG_CACHE__ENABLED", "false")];
        e.extend_from_slice(env);
        run_in(dir.path(), HGBUILD, &a, &e)
    };

    // 1. Everything right: compiled on the worker.
    let out = run(
        &tls_args,
        &auth_env,
        &["-v", "cc", "-c", "main.c", "-o", "a.o"],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stderr.contains("[remote secure-w1"),
        "not compiled remotely over mTLS: {}",
        out.stderr
    );
    assert!(!read(dir.path(), "a.o").is_empty());

    // 2. Wrong token: refused, compiled locally with a warning.
    let wrong = [
        ("HG_AUTH__ENABLED", "true"),
        ("HG_AUTH__TOKEN", "not-the-token"),
    ];
    let out = run(
        &tls_args,
        &wrong,
        &["-v", "cc", "-c", "main.c", "-o", "b.o"],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stderr.contains("warning") && out.stderr.contains("wrong auth token"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("compiling locally"), "{}", out.stderr);
    assert!(!read(dir.path(), "b.o").is_empty());
    // No token at all, and no fallback: fails with the reason.
    let out = run(
        &tls_args,
        &[],
        &["--no-fallback", "cc", "-c", "main.c", "-o", "c.o"],
    );
    assert_ne!(out.code, 0, "{}", out.stderr);
    assert!(out.stderr.contains("missing auth token"), "{}", out.stderr);
    assert!(
        coord.wait_log("call refused: unauthenticated", Duration::from_secs(5)),
        "{}",
        coord.log_text()
    );

    // 3. No client certificate: the handshake fails, explained on both sides.
    let out = run(
        &["--coordinator", grpc.as_str(), "--tls-ca", ca.as_str()],
        &auth_env,
        &["cc", "-c", "main.c", "-o", "d.o"],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stderr
            .contains("TLS handshake failed: missing client certificate"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("compiling locally"), "{}", out.stderr);
    assert!(
        coord.wait_log(
            "TLS handshake failed: missing client certificate",
            Duration::from_secs(5)
        ),
        "{}",
        coord.log_text()
    );

    // 4. HTTPS with the same certificate: health open, admin needs the token.
    let (s, body) = https(&pki.ca_pem, &http, "GET", "/health", None);
    assert_eq!((s, body.trim()), (200, "OK"));
    let (s, body) = https(&pki.ca_pem, &http, "PUT", "/api/v1/log-level", None);
    assert_eq!(s, 401, "{body}");
    assert!(body.contains("missing auth token"), "{body}");
    let (s, _) = https(&pki.ca_pem, &http, "PUT", "/api/v1/log-level", Some("nope"));
    assert_eq!(s, 401);
    let (s, body) = https(&pki.ca_pem, &http, "PUT", "/api/v1/log-level", Some(TOKEN));
    assert_eq!(s, 200, "{body}");

    // The token never shows up in any log.
    for l in [coord.log_text(), worker.log_text()] {
        assert!(!l.contains(TOKEN), "token leaked into a log");
    }
}

/// The ELF type of an executable: 2 for one linked at a fixed address, 3
/// for a position-independent one.
fn elf_type(path: &str) -> u16 {
    let bytes = std::fs::read(path).expect("read the executable");
    assert_eq!(&bytes[..4], b"\x7fELF", "{path} is not ELF");
    u16::from_le_bytes([bytes[16], bytes[17]])
}

/// The long-running network servers are position-independent (their
/// addresses randomised); hgbuild, started once per compiler call, is
/// linked at a fixed address for its start-up time (bins/build.rs), unless
/// it was built with HG_HGBUILD_PIE=1.
#[test]
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn servers_are_position_independent() {
    assert_eq!(elf_type(COORD), 3, "hg-coord is PIE");
    assert_eq!(elf_type(WORKER), 3, "hg-worker is PIE");
    let keep_pie = option_env!("HG_HGBUILD_PIE").is_some_and(|v| !v.is_empty() && v != "0");
    assert_eq!(elf_type(HGBUILD), if keep_pie { 3 } else { 2 });
}

/// The REAPI endpoint is served behind the grid's mTLS and token: a client
/// with a certificate of the CA and the token (as Bazel sends it with
/// `--remote_header`) gets the capabilities over `grpcs://`; without the
/// token it is refused, and without a client certificate the handshake is.
#[test]
fn reapi_over_mtls_with_the_token() {
    use bazel_remote_apis::build::bazel::remote::execution::v2::GetCapabilitiesRequest;
    use bazel_remote_apis::build::bazel::remote::execution::v2::capabilities_client::CapabilitiesClient;
    use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

    let pki_dir = tempdir();
    let d = pki_dir.path();
    let pki = Pki::new(d);
    pki.issue(d, "coord", &["localhost", "127.0.0.1"]);
    pki.issue(d, "client", &["bazel"]);
    let (cert, key, ca) = (p(d, "coord.crt"), p(d, "coord.key"), p(d, "ca.crt"));
    let coord = start_coordinator_env(
        &[
            "--tls-cert",
            &cert,
            "--tls-key",
            &key,
            "--tls-ca",
            &ca,
            "--tls-require-client-cert",
        ],
        &[
            ("HG_AUTH__ENABLED", "true"),
            ("HG_AUTH__TOKEN", TOKEN),
            ("HG_COORDINATOR__REAPI__ENABLED", "true"),
        ],
    );
    let port = coord.grpc.rsplit(':').next().expect("port").to_owned();
    let read = |f: &str| std::fs::read(d.join(f)).expect("pki file");
    let call = |with_cert: bool, token: Option<&str>| {
        let mut tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(read("ca.crt")))
            .domain_name("localhost");
        if with_cert {
            tls = tls.identity(Identity::from_pem(read("client.crt"), read("client.key")));
        }
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let run = async {
                let channel = Channel::from_shared(format!("https://localhost:{port}"))
                    .expect("uri")
                    .tls_config(tls)
                    .expect("tls")
                    .connect()
                    .await
                    .map_err(|e| tonic::Status::unavailable(format!("{e:?}")))?;
                let mut req = tonic::Request::new(GetCapabilitiesRequest::default());
                if let Some(t) = token {
                    req.metadata_mut().insert(
                        "authorization",
                        format!("Bearer {t}").parse().expect("header"),
                    );
                }
                CapabilitiesClient::new(channel)
                    .get_capabilities(req)
                    .await
                    .map(tonic::Response::into_inner)
            };
            tokio::time::timeout(Duration::from_secs(30), run)
                .await
                .expect("answered within 30 s")
        })
    };
    let caps = call(true, Some(TOKEN)).expect("capabilities over mTLS with the token");
    assert!(caps.low_api_version.is_some(), "{caps:?}");
    let e = call(true, None).expect_err("no token");
    assert_eq!(e.code(), tonic::Code::Unauthenticated, "{e:?}");
    // Refused by the TLS layer, not by the token check (the token is right).
    let e = call(false, Some(TOKEN)).expect_err("no client certificate");
    assert_ne!(e.code(), tonic::Code::Unauthenticated, "{e:?}");
    drop(coord);
}
