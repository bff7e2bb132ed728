//! Test support: an in-process worker server on an ephemeral loopback port
//! whose executor only counts what reaches it, and a throwaway PKI.
#![allow(dead_code, unreachable_pub, missing_docs)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use hybridgrid_core::config::TlsConfig;
use hybridgrid_core::payload::Payload;
use hybridgrid_core::task::{
    CompileOutput, CompileTask, CompilerFamily, CompilerIdentity, DriverKind, Language,
};
use hybridgrid_core::worker::{
    Arch, Capabilities, CompilerInfo, WorkerId, WorkerInfo, WorkerSource,
};
use hybridgrid_core::{BoxError, GridError};
use hybridgrid_net::client::ChannelOptions;
use hybridgrid_net::convert::{RequestLimits, TaskCheck};
use hybridgrid_net::security::Security;
use hybridgrid_net::server;
use hybridgrid_net::tls::ServerTls;
use hybridgrid_net::worker::WorkerServer;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use tokio::sync::oneshot;
use tower::util::BoxCloneSyncService;

pub fn gcc() -> CompilerIdentity {
    CompilerIdentity {
        family: CompilerFamily::Gcc,
        driver: DriverKind::C,
        version: "12.2.0".into(),
        target: "x86_64-linux-gnu".into(),
    }
}

pub fn task() -> CompileTask {
    CompileTask::new(
        gcc(),
        Language::PreprocessedC,
        vec!["-O2".into()],
        "x.c",
        Payload::raw(&b"int x;\n"[..]),
    )
}

/// A worker whose executor only counts what reaches it.
pub struct TestWorker {
    pub addr: String,
    pub ran: Arc<AtomicUsize>,
    pub stop: Option<oneshot::Sender<()>>,
}

impl Drop for TestWorker {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

/// A worker server whose executor counts the tasks that reach it (the
/// counter is returned beside it).
pub fn worker_server(limits: RequestLimits) -> (WorkerServer, Arc<AtomicUsize>) {
    let ran = Arc::new(AtomicUsize::new(0));
    let r = ran.clone();
    let exec = tower::service_fn(move |_t: CompileTask| {
        let r = r.clone();
        async move {
            r.fetch_add(1, Ordering::SeqCst);
            Ok::<_, BoxError>(CompileOutput::default())
        }
    });
    let mut caps = Capabilities::new(Arch::Amd64);
    caps.compilers.push(CompilerInfo {
        name: "gcc".into(),
        path: "/usr/bin/gcc".into(),
        identity: gcc(),
    });
    let info = WorkerInfo::new(
        WorkerId("w-test".into()),
        "127.0.0.1:0",
        WorkerSource::Static,
        caps,
    );
    // The real binaries plug in the argument allow list here.
    let check: TaskCheck = Arc::new(|t: &CompileTask| {
        if t.args.iter().any(|a| a.starts_with("-fplugin")) {
            Err(GridError::InvalidTask(
                "refused compiler argument `-fplugin`".into(),
            ))
        } else {
            Ok(())
        }
    });
    let srv = WorkerServer::new(info, BoxCloneSyncService::new(exec), 2)
        .with_validation(limits, Some(check));
    (srv, ran)
}

/// [`worker_server`] serving gRPC on an ephemeral loopback port until the
/// returned handle is dropped.
pub async fn start_worker(security: Security, limits: RequestLimits) -> TestWorker {
    let (srv, ran) = worker_server(limits);
    let l = server::bind("127.0.0.1", 0).await.expect("bind");
    let addr = server::local_addr(&l).to_string();
    let (tx, rx) = oneshot::channel::<()>();
    tokio::spawn(async move {
        let _ = server::serve_worker_with(l, srv, &security, async {
            let _ = rx.await;
        })
        .await;
    });
    TestWorker {
        addr,
        ran,
        stop: Some(tx),
    }
}

pub fn opts() -> ChannelOptions {
    ChannelOptions::new(Duration::from_secs(3), Duration::from_secs(10))
}

pub struct Pki {
    pub dir: tempfile::TempDir,
    pub ca: String,
    pub issuer: Issuer<'static, KeyPair>,
}

impl Pki {
    pub fn new(cn: &str) -> Pki {
        let dir = tempfile::tempdir().expect("dir");
        let key = KeyPair::generate().expect("key");
        let mut p = CertificateParams::new(Vec::<String>::new()).expect("p");
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.distinguished_name.push(DnType::CommonName, cn);
        let cert = p.self_signed(&key).expect("ca");
        let ca = dir.path().join("ca.crt");
        std::fs::write(&ca, cert.pem()).expect("w");
        Pki {
            ca: ca.display().to_string(),
            dir,
            issuer: Issuer::new(p, key),
        }
    }

    pub fn tls(&self, name: &str, sans: &[&str], mtls: bool) -> TlsConfig {
        let key = KeyPair::generate().expect("key");
        let mut p = CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .expect("p");
        p.distinguished_name.push(DnType::CommonName, name);
        let cert = p.signed_by(&key, &self.issuer).expect("leaf");
        let c = self.dir.path().join(format!("{name}.crt"));
        let k = self.dir.path().join(format!("{name}.key"));
        std::fs::write(&c, cert.pem()).expect("w");
        std::fs::write(&k, key.serialize_pem()).expect("w");
        let mut t = TlsConfig::default();
        t.enabled = true;
        t.cert_file = c.display().to_string();
        t.key_file = k.display().to_string();
        t.ca_file = self.ca.clone();
        t.require_client_cert = mtls;
        t
    }
}

pub fn server_security(t: &TlsConfig) -> Security {
    let mut s = Security::default();
    s.server_tls = ServerTls::from_config(t).expect("server tls");
    s
}
