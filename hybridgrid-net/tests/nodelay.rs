//! Every TCP connection the servers accept, and every one the clients dial,
//! has `TCP_NODELAY`: without it a response written in parts (HTTP/2
//! headers, data, trailers) waits for the peer's delayed ACK, ~40 ms on each
//! fresh connection. The option is read back with `getsockopt` from the live
//! sockets of servers running in this process.
// Reading a socket option of this process's own sockets by descriptor
// number needs a borrowed descriptor (see `sockets_on`).
#![allow(unsafe_code)]

mod support;

use std::os::fd::{BorrowedFd, RawFd};
use std::sync::Arc;
use std::time::Duration;

use hybridgrid_core::BoxError;
use hybridgrid_core::task::{CompileOutput, CompileTask};
use hybridgrid_core::worker::WorkerId;
use hybridgrid_net::client::{WorkerClient, connect_channel};
use hybridgrid_net::convert::RequestLimits;
use hybridgrid_net::coordinator::{CoordinatorServer, CoordinatorState, WorkerPool};
use hybridgrid_net::security::Security;
use hybridgrid_net::tls::ClientTls;
use hybridgrid_net::{http, server};
use support::{Pki, opts, server_security, start_worker, task, worker_server};
use tokio::sync::oneshot;
use tower::util::BoxCloneSyncService;

/// The `TCP_NODELAY` setting of this process's connected TCP sockets whose
/// local port is `port` (accepted by a server there) and of those whose
/// peer port is `port` (dialled to it).
#[derive(Debug, Default)]
struct Sockets {
    accepted: Vec<bool>,
    dialled: Vec<bool>,
}

fn sockets_on(port: u16) -> Sockets {
    let mut found = Sockets::default();
    let dir = std::fs::read_dir("/proc/self/fd").expect("/proc/self/fd");
    for e in dir.flatten() {
        let Ok(n) = e.file_name().to_string_lossy().parse::<RawFd>() else {
            continue;
        };
        let is_socket = std::fs::read_link(e.path())
            .map(|l| l.to_string_lossy().starts_with("socket:"))
            .unwrap_or(false);
        if !is_socket {
            continue;
        }
        // SAFETY: `n` was open when listed and is only used for the
        // getsockname/getpeername/getsockopt calls below, within this
        // iteration. Should another thread close it meanwhile, the calls
        // fail (EBADF) or read some other socket, which the port checks
        // then skip; no memory is touched through the descriptor.
        let fd = unsafe { BorrowedFd::borrow_raw(n) };
        let s = socket2::SockRef::from(&fd);
        let (Ok(local), Ok(peer)) = (s.local_addr(), s.peer_addr()) else {
            continue; // not an address socket, or not connected (a listener)
        };
        let (Some(local), Some(peer)) = (local.as_socket(), peer.as_socket()) else {
            continue;
        };
        let Ok(nodelay) = s.tcp_nodelay() else {
            continue;
        };
        if local.port() == port {
            found.accepted.push(nodelay);
        } else if peer.port() == port {
            found.dialled.push(nodelay);
        }
    }
    found
}

fn port_of(addr: &str) -> u16 {
    addr.rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("port")
}

fn assert_all_nodelay(what: &str, port: u16, dialled_here: bool) {
    let s = sockets_on(port);
    assert!(
        !s.accepted.is_empty(),
        "{what}: no accepted connection found"
    );
    assert!(
        s.accepted.iter().all(|&on| on),
        "{what}: an accepted connection lacks TCP_NODELAY: {s:?}"
    );
    if dialled_here {
        assert!(!s.dialled.is_empty(), "{what}: no dialled connection found");
        assert!(
            s.dialled.iter().all(|&on| on),
            "{what}: a dialled connection lacks TCP_NODELAY: {s:?}"
        );
    }
}

async fn health_check(
    addr: &str,
) -> tonic_health::pb::health_client::HealthClient<hybridgrid_net::client::GrpcChannel> {
    let ch = connect_channel(addr, &opts()).await.expect("connect");
    let mut h = tonic_health::pb::health_client::HealthClient::new(ch);
    h.check(tonic_health::pb::HealthCheckRequest {
        service: String::new(),
    })
    .await
    .expect("health");
    h
}

/// The reader itself: a connection accepted by a bare listener has Nagle's
/// algorithm on (Linux's default), and the check sees it.
#[tokio::test]
async fn the_check_sees_a_socket_without_nodelay() {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = l.local_addr().expect("addr").port();
    let client = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    let (accepted, _) = l.accept().await.expect("accept");
    let s = sockets_on(port);
    assert_eq!(s.accepted, vec![false], "{s:?}");
    drop((client, accepted));
}

#[tokio::test]
async fn worker_grpc_plain_and_its_clients() {
    let w = start_worker(Security::default(), RequestLimits::default()).await;
    let _health = health_check(&w.addr).await;
    // The coordinator's channel to a worker.
    let mut wc = WorkerClient::new(WorkerId("w".into()), &w.addr, &opts()).expect("client");
    wc.compile(&task()).await.expect("compiles");
    assert_all_nodelay("worker gRPC", port_of(&w.addr), true);
}

#[tokio::test]
async fn worker_grpc_over_mtls() {
    let pki = Pki::new("Grid CA");
    let w = start_worker(
        server_security(&pki.tls("worker", &["127.0.0.1"], true)),
        RequestLimits::default(),
    )
    .await;
    let client = pki.tls("client", &["client"], false);
    let o = opts().with_tls(ClientTls::from_config(&client).expect("tls"));
    let mut wc = WorkerClient::new(WorkerId("w".into()), &w.addr, &o).expect("client");
    wc.compile(&task()).await.expect("compiles over mTLS");
    assert_all_nodelay("worker gRPC over mTLS", port_of(&w.addr), true);
}

#[tokio::test]
async fn coordinator_grpc() {
    let ttl = Duration::from_secs(30);
    let state = CoordinatorState::new(Arc::new(WorkerPool::new(ttl, opts())), ttl);
    let compile =
        tower::service_fn(|_t: CompileTask| async { Ok::<_, BoxError>(CompileOutput::default()) });
    let srv = CoordinatorServer::new(state, BoxCloneSyncService::new(compile));
    let l = server::bind("127.0.0.1", 0).await.expect("bind");
    let addr = server::local_addr(&l).to_string();
    let (stop, stopped) = oneshot::channel::<()>();
    let serving = tokio::spawn(server::serve_coordinator(l, srv, async {
        let _ = stopped.await;
    }));
    let health = health_check(&addr).await;
    assert_all_nodelay("coordinator gRPC", port_of(&addr), true);
    drop(health);
    let _ = stop.send(());
    let _ = tokio::time::timeout(Duration::from_secs(10), serving).await;
}

#[tokio::test]
async fn http_plain_and_over_tls() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    // Plain: one HTTP/1.1 request, the connection kept open.
    let (worker, _) = worker_server(RequestLimits::default());
    let router = http::worker_router(worker.clone(), "/metrics");
    let l = server::bind("127.0.0.1", 0).await.expect("bind");
    let port = server::local_addr(&l).port();
    let (stop, stopped) = oneshot::channel::<()>();
    let serving = tokio::spawn(http::serve(l, router.clone(), async {
        let _ = stopped.await;
    }));
    let mut c = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    c.write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .expect("request");
    let mut buf = [0u8; 12];
    c.read_exact(&mut buf).await.expect("response");
    assert_eq!(&buf, b"HTTP/1.1 200");
    assert_all_nodelay("HTTP", port, false);
    drop(c);
    let _ = stop.send(());
    let _ = tokio::time::timeout(Duration::from_secs(10), serving).await;

    // TLS: the handshake completes on an accepted connection.
    let pki = Pki::new("Grid CA");
    let sec = server_security(&pki.tls("server", &["127.0.0.1"], false));
    let l = server::bind("127.0.0.1", 0).await.expect("bind");
    let port = server::local_addr(&l).port();
    let (stop, stopped) = oneshot::channel::<()>();
    let serving = tokio::spawn(http::serve_with(l, router, sec.server_tls.clone(), async {
        let _ = stopped.await;
    }));
    let client = ClientTls::from_config(&pki.tls("client", &["client"], false))
        .expect("tls")
        .expect("enabled");
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    let addr = format!("127.0.0.1:{port}");
    let io = client
        .connect(tcp, "127.0.0.1", &addr)
        .await
        .expect("handshake");
    assert_all_nodelay("HTTP over TLS", port, false);
    drop(io);
    let _ = stop.send(());
    let _ = tokio::time::timeout(Duration::from_secs(10), serving).await;
}
