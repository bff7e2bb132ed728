//! Serving: binding listeners and running the gRPC routers of the
//! coordinator and the worker until shutdown.

use std::future::Future;
use std::net::SocketAddr;

use tokio::net::TcpListener;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;

use crate::auth::RequireToken;
use crate::coordinator::CoordinatorServer;
use crate::proto::build_service_server::BuildServiceServer;
use crate::proto::registry_service_server::RegistryServiceServer;
use crate::proto::worker_service_server::WorkerServiceServer;
use crate::security::Security;
use crate::worker::WorkerServer;

/// Why a server could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The port is taken or not allowed.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The gRPC server failed.
    #[error("gRPC server failed: {0}")]
    Grpc(#[from] tonic::transport::Error),
    /// The HTTP server failed.
    #[error("HTTP server failed: {0}")]
    Http(#[source] std::io::Error),
    /// TLS or auth could not be set up (a missing or unreadable file...).
    #[error("cannot set up security: {0}")]
    Security(#[from] crate::security::SecurityError),
    /// Something else the server needs could not be set up (a worker's
    /// directory for task directories...); the message says what to do.
    #[error("{0}")]
    Setup(String),
}

/// Binds `host:port` (port 0 picks a free one).
pub async fn bind(host: &str, port: u16) -> Result<TcpListener, ServeError> {
    let addr = if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    TcpListener::bind(&addr)
        .await
        .map_err(|source| ServeError::Bind { addr, source })
}

/// The local address of a listener (for logs and tests).
pub fn local_addr(l: &TcpListener) -> SocketAddr {
    l.local_addr()
        .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)))
}

fn builder() -> Server {
    // `tcp_nodelay` here applies only to listeners tonic binds itself; the
    // connections of the listeners passed in get it from [`incoming`].
    Server::builder().http2_keepalive_interval(Some(std::time::Duration::from_secs(30)))
}

/// The connections accepted on `listener`, each with `TCP_NODELAY` set.
///
/// A gRPC response is written in more than one segment (headers, data,
/// trailers); with Nagle's algorithm on, the second waits for the client's
/// delayed ACK, which costs about 40 ms on a fresh connection. tonic's
/// `Server::tcp_nodelay` does not reach listeners passed to
/// `serve_with_incoming*`, so every plain listener is served through this.
pub fn incoming(listener: TcpListener) -> TcpIncoming {
    TcpIncoming::from(listener).with_nodelay(Some(true))
}

/// ALPN of gRPC over TLS.
pub const GRPC_ALPN: &[&[u8]] = &[b"h2"];

/// Serves the coordinator's gRPC services (`BuildService`,
/// `RegistryService`, and the standard `grpc.health.v1.Health`) until
/// `shutdown` completes; running calls are drained. Plain TCP, no token.
pub async fn serve_coordinator(
    listener: TcpListener,
    server: CoordinatorServer,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServeError> {
    serve_coordinator_with(listener, server, &Security::default(), shutdown).await
}

/// [`serve_coordinator`] with `security`: TLS on the listener when
/// configured, and the token required on `BuildService`,
/// `RegistryService` and the REAPI services when the server has them
/// ([`CoordinatorServer::with_reapi`]; the standard health service stays
/// open, like `/health`). Requests larger than the server's `max_request_bytes` are
/// refused before they are decoded.
pub async fn serve_coordinator_with(
    listener: TcpListener,
    server: CoordinatorServer,
    security: &Security,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServeError> {
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter
        .set_serving::<BuildServiceServer<CoordinatorServer>>()
        .await;
    reporter
        .set_service_status("", tonic_health::ServingStatus::Serving)
        .await;
    let auth = RequireToken::new(security.token.clone());
    let max = server.limits().max_request_bytes;
    let build = BuildServiceServer::new(server.clone())
        .max_decoding_message_size(max)
        .max_encoding_message_size(crate::MAX_MESSAGE_BYTES)
        .send_compressed(tonic::codec::CompressionEncoding::Zstd)
        .accept_compressed(tonic::codec::CompressionEncoding::Zstd);
    let reapi = server
        .reapi()
        .map(|r| InterceptedService::new(r.capabilities_service(), auth.clone()));
    let registry = RegistryServiceServer::new(server).max_decoding_message_size(1024 * 1024);
    let router = builder()
        .add_service(health)
        .add_service(InterceptedService::new(build, auth.clone()))
        .add_optional_service(reapi)
        .add_service(InterceptedService::new(registry, auth));
    match &security.server_tls {
        Some(tls) => {
            router
                .serve_with_incoming_shutdown(tls.incoming(listener, GRPC_ALPN, true), shutdown)
                .await?
        }
        None => {
            router
                .serve_with_incoming_shutdown(incoming(listener), shutdown)
                .await?
        }
    }
    Ok(())
}

/// Serves the worker's gRPC service (and `grpc.health.v1.Health`) until
/// `shutdown` completes. Plain TCP, no token.
pub async fn serve_worker(
    listener: TcpListener,
    server: WorkerServer,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServeError> {
    serve_worker_with(listener, server, &Security::default(), shutdown).await
}

/// [`serve_worker`] with `security` (TLS, token), as for the coordinator.
pub async fn serve_worker_with(
    listener: TcpListener,
    server: WorkerServer,
    security: &Security,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServeError> {
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter
        .set_serving::<WorkerServiceServer<WorkerServer>>()
        .await;
    reporter
        .set_service_status("", tonic_health::ServingStatus::Serving)
        .await;
    let auth = RequireToken::new(security.token.clone());
    let router = builder()
        .add_service(health)
        .add_service(InterceptedService::new(server.into_service(), auth));
    match &security.server_tls {
        Some(tls) => {
            router
                .serve_with_incoming_shutdown(tls.incoming(listener, GRPC_ALPN, true), shutdown)
                .await?
        }
        None => {
            router
                .serve_with_incoming_shutdown(incoming(listener), shutdown)
                .await?
        }
    }
    Ok(())
}

/// The background tasks of a running coordinator or worker (its gRPC and
/// HTTP servers, timers, registration, discovery) and the one signal that
/// stops them all: the start-up and shutdown path both programs share.
#[derive(Debug)]
pub struct ServerTasks {
    stop: tokio::sync::watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Default for ServerTasks {
    fn default() -> Self {
        ServerTasks {
            stop: tokio::sync::watch::channel(false).0,
            tasks: Vec::new(),
        }
    }
}

impl ServerTasks {
    /// No tasks yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// A receiver that turns true when [`ServerTasks::stop`] is called
    /// (for tasks that select on it themselves).
    pub fn signal(&self) -> tokio::sync::watch::Receiver<bool> {
        self.stop.subscribe()
    }

    /// A future that completes when [`ServerTasks::stop`] is called: the
    /// graceful-shutdown argument of the `serve_*_with` functions.
    pub fn stopped(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut rx = self.signal();
        async move {
            while !*rx.borrow() {
                if rx.changed().await.is_err() {
                    return;
                }
            }
        }
    }

    /// Runs a server until it ends; an error is logged as `{what} stopped`.
    pub fn serve<E: std::fmt::Display>(
        &mut self,
        what: &'static str,
        server: impl Future<Output = Result<(), E>> + Send + 'static,
    ) {
        self.tasks.push(tokio::spawn(async move {
            if let Err(e) = server.await {
                tracing::error!(error = %e, "{what} stopped");
            }
        }));
    }

    /// Adds a task that watches [`ServerTasks::signal`] itself.
    pub fn push(&mut self, task: tokio::task::JoinHandle<()>) {
        self.tasks.push(task);
    }

    /// Signals every task to stop and waits for them all, at most `grace`
    /// in all (not `grace` for each in turn).
    pub async fn stop(self, grace: std::time::Duration) {
        self.stop.send_replace(true);
        let _ = tokio::time::timeout(grace, futures::future::join_all(self.tasks)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    #[tokio::test]
    async fn stop_ends_every_task() {
        let ended = Arc::new(AtomicUsize::new(0));
        let mut tasks = ServerTasks::new();
        let (e, stopped) = (ended.clone(), tasks.stopped());
        tasks.serve("server", async move {
            stopped.await;
            e.fetch_add(1, Ordering::SeqCst);
            Ok::<(), String>(())
        });
        let (e, mut signal) = (ended.clone(), tasks.signal());
        tasks.push(tokio::spawn(async move {
            let _ = signal.changed().await;
            e.fetch_add(1, Ordering::SeqCst);
        }));
        // A server that fails is logged, not waited for.
        tasks.serve("failing", async { Err::<(), _>("bind failed") });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(
            ended.load(Ordering::SeqCst),
            0,
            "nothing stops before stop()"
        );
        tokio::time::timeout(Duration::from_secs(5), tasks.stop(Duration::from_secs(5)))
            .await
            .expect("stop returns once the tasks end");
        assert_eq!(ended.load(Ordering::SeqCst), 2);
    }
}
