//! gRPC clients: [`WorkerClient`] (coordinator -> worker) and
//! [`CoordinatorClient`] (hgbuild or a worker -> coordinator). Both compile
//! through `tower::Service<CompileTask>`, so they stack with the core layers.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use hybridgrid_core::task::{CompileOutput, CompileTask};
use hybridgrid_core::worker::{WorkerId, WorkerInfo};
use hybridgrid_core::{BoxError, GridError, addr};
use tonic::codec::CompressionEncoding;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};

use crate::auth::{AttachToken, Token};
use crate::tls::{ClientTls, HandshakeError, TlsConnector};

use crate::convert;
use crate::proto;
use crate::proto::build_service_client::BuildServiceClient;
use crate::proto::registry_service_client::RegistryServiceClient;
use crate::proto::worker_service_client::WorkerServiceClient;
use crate::status::from_status;

/// How to reach a server.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ChannelOptions {
    /// Time allowed to connect.
    pub connect_timeout: Duration,
    /// Time allowed for one call (0: none).
    pub request_timeout: Duration,
    /// TLS (none: plain TCP).
    pub tls: Option<Arc<ClientTls>>,
    /// The token every call carries (none: auth off).
    pub token: Option<Token>,
}

impl Default for ChannelOptions {
    fn default() -> Self {
        ChannelOptions {
            connect_timeout: Duration::from_secs(3),
            request_timeout: Duration::ZERO,
            tls: None,
            token: None,
        }
    }
}

impl ChannelOptions {
    /// Options with these timeouts.
    pub fn new(connect_timeout: Duration, request_timeout: Duration) -> Self {
        ChannelOptions {
            connect_timeout,
            request_timeout,
            tls: None,
            token: None,
        }
    }

    /// The same over TLS (none: plain TCP).
    pub fn with_tls(mut self, tls: Option<Arc<ClientTls>>) -> Self {
        self.tls = tls;
        self
    }

    /// The same with every call carrying `token` (none: no token).
    pub fn with_token(mut self, token: Option<Token>) -> Self {
        self.token = token;
        self
    }

    /// The same with the TLS and token of `security`.
    pub fn with_security(self, security: &crate::security::Security) -> Self {
        self.with_tls(security.client_tls.clone())
            .with_token(security.token.clone())
    }
}

/// A channel whose calls carry the token of its [`ChannelOptions`].
pub type GrpcChannel = InterceptedService<Channel, AttachToken>;

fn intercepted(ch: Channel, opts: &ChannelOptions) -> GrpcChannel {
    InterceptedService::new(ch, AttachToken::new(opts.token.clone()))
}

/// How often an open connection is pinged (HTTP/2 PING), idle or not.
/// With [`KEEPALIVE_TIMEOUT`] this bounds how long a peer whose network
/// was cut can hold a call: its calls fail within about 10 s and are
/// retried elsewhere, instead of waiting for the request deadline.
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(5);

/// How long a PING may go unanswered before the connection is dropped.
pub const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(5);

fn endpoint(address: &str, opts: &ChannelOptions) -> Result<Endpoint, GridError> {
    addr::parse_host_port(address).map_err(|e| GridError::InvalidTask(e.to_string()))?;
    let uri = addr::to_uri(address, false);
    let mut ep = Endpoint::from_shared(uri)
        .map_err(|e| GridError::InvalidTask(format!("bad address {address}: {e}")))?
        .connect_timeout(opts.connect_timeout)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
        .keep_alive_timeout(KEEPALIVE_TIMEOUT)
        .keep_alive_while_idle(true);
    if !opts.request_timeout.is_zero() {
        ep = ep.timeout(opts.request_timeout);
    }
    Ok(ep)
}

/// A readable description of a connection error, e.g.
/// `connection refused (127.0.0.1:9000)`.
pub fn describe_connect_error(address: &str, e: &(dyn std::error::Error + 'static)) -> String {
    if let Some(m) = HandshakeError::find_message(e) {
        // It names the server already.
        return m;
    }
    let mut root = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        root = s.to_string();
        cur = s.source();
    }
    let lower = root.to_ascii_lowercase();
    let short = if lower.contains("connection refused") {
        "connection refused".to_owned()
    } else if lower.contains("timed out") || lower.contains("timeout") {
        "connection timed out".to_owned()
    } else {
        root
    };
    format!("{short} ({address})")
}

/// A channel that connects on first use.
pub fn lazy_channel(address: &str, opts: &ChannelOptions) -> Result<GrpcChannel, GridError> {
    let ep = endpoint(address, opts)?;
    let ch = match &opts.tls {
        Some(tls) => ep.connect_with_connector_lazy(TlsConnector::new(tls.clone(), address)),
        None => ep.connect_lazy(),
    };
    Ok(intercepted(ch, opts))
}

/// A channel connected now; an unreachable server (or a failed TLS
/// handshake) is an error naming it.
pub async fn connect_channel(
    address: &str,
    opts: &ChannelOptions,
) -> Result<GrpcChannel, GridError> {
    let ep = endpoint(address, opts)?;
    let ch = match &opts.tls {
        Some(tls) => {
            ep.connect_with_connector(TlsConnector::new(tls.clone(), address))
                .await
        }
        None => ep.connect().await,
    }
    .map_err(|e| GridError::WorkerUnavailable {
        worker: address.to_owned(),
        reason: describe_connect_error(address, &e),
    })?;
    Ok(intercepted(ch, opts))
}

/// Calls a worker's `WorkerService`.
///
/// The connection (a tonic channel: a buffer task, its queue, the HTTP/2
/// connection) is made on the first call, not when the client is created:
/// a coordinator creates a client for every registered worker, and with
/// 10,000 registered the channels of workers never called cost it about
/// 100 MB. Clones share the connection.
#[derive(Clone, Debug)]
pub struct WorkerClient {
    id: WorkerId,
    address: String,
    opts: ChannelOptions,
    inner: Arc<OnceLock<WorkerServiceClient<GrpcChannel>>>,
}

impl WorkerClient {
    /// A client for the worker `id` at `address` (connects on first use;
    /// a malformed address is an error now).
    pub fn new(id: WorkerId, address: &str, opts: &ChannelOptions) -> Result<Self, GridError> {
        endpoint(address, opts)?;
        Ok(WorkerClient {
            id,
            address: address.to_owned(),
            opts: opts.clone(),
            inner: Arc::default(),
        })
    }

    /// The gRPC client, made on first use.
    fn grpc(&self) -> Result<WorkerServiceClient<GrpcChannel>, GridError> {
        if let Some(c) = self.inner.get() {
            return Ok(c.clone());
        }
        let made = WorkerServiceClient::new(lazy_channel(&self.address, &self.opts)?)
            .max_decoding_message_size(crate::MAX_MESSAGE_BYTES)
            .max_encoding_message_size(crate::MAX_MESSAGE_BYTES)
            .accept_compressed(CompressionEncoding::Zstd);
        // Two first calls at once: one channel is kept, the other dropped.
        Ok(self.inner.get_or_init(|| made).clone())
    }

    /// The worker's id.
    pub fn id(&self) -> &WorkerId {
        &self.id
    }

    /// The worker's address.
    pub fn address(&self) -> &str {
        &self.address
    }

    fn err(&self, s: &tonic::Status) -> GridError {
        match from_status(s, &self.id.0) {
            // The worker refused the coordinator's token: this worker's
            // fault (its circuit opens), not the client's.
            GridError::Unauthenticated(m) => GridError::WorkerUnavailable {
                worker: self.id.0.clone(),
                reason: format!(
                    "refused the coordinator's auth token: {m} ({})",
                    self.address
                ),
            },
            GridError::WorkerUnavailable { reason, .. } => GridError::WorkerUnavailable {
                worker: self.id.0.clone(),
                reason: if reason.contains(&self.address) {
                    reason
                } else {
                    format!("{reason} ({})", self.address)
                },
            },
            other => other,
        }
    }

    /// Compiles a task on the worker.
    pub async fn compile(&mut self, task: &CompileTask) -> Result<CompileOutput, GridError> {
        let resp = self
            .grpc()?
            .compile(convert::task_to_proto(task))
            .await
            .map_err(|s| self.err(&s))?;
        let mut out = convert::output_from_proto(resp.into_inner())?;
        if out.worker_id.is_none() {
            out.worker_id = Some(self.id.clone());
        }
        Ok(out)
    }

    /// The worker's capabilities.
    pub async fn capabilities(&mut self) -> Result<WorkerInfo, GridError> {
        let r = self
            .grpc()?
            .get_capabilities(proto::CapabilitiesRequest {})
            .await
            .map_err(|s| self.err(&s))?;
        convert::worker_from_proto(r.into_inner())
    }

    /// The worker's health check.
    pub async fn health(&mut self) -> Result<bool, GridError> {
        let r = self
            .grpc()?
            .health_check(proto::HealthCheckRequest {})
            .await
            .map_err(|s| self.err(&s))?;
        Ok(r.into_inner().healthy)
    }
}

impl tower::Service<CompileTask> for WorkerClient {
    type Response = CompileOutput;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<CompileOutput, BoxError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, task: CompileTask) -> Self::Future {
        let mut this = self.clone();
        Box::pin(async move { this.compile(&task).await.map_err(BoxError::from) })
    }
}

/// Calls the coordinator's `BuildService` and `RegistryService`.
#[derive(Clone, Debug)]
pub struct CoordinatorClient {
    address: String,
    build: BuildServiceClient<GrpcChannel>,
    registry: RegistryServiceClient<GrpcChannel>,
}

impl CoordinatorClient {
    /// Connects now; an unreachable coordinator is an error such as
    /// `connection refused (127.0.0.1:9000)`.
    pub async fn connect(address: &str, opts: &ChannelOptions) -> Result<Self, GridError> {
        let ch = connect_channel(address, opts).await?;
        Ok(Self::from_channel(address, ch))
    }

    /// A client that connects on first use.
    pub fn lazy(address: &str, opts: &ChannelOptions) -> Result<Self, GridError> {
        Ok(Self::from_channel(address, lazy_channel(address, opts)?))
    }

    fn from_channel(address: &str, ch: GrpcChannel) -> Self {
        CoordinatorClient {
            address: address.to_owned(),
            build: BuildServiceClient::new(ch.clone())
                .max_decoding_message_size(crate::MAX_MESSAGE_BYTES)
                .max_encoding_message_size(crate::MAX_MESSAGE_BYTES)
                .accept_compressed(CompressionEncoding::Zstd),
            registry: RegistryServiceClient::new(ch),
        }
    }

    /// The coordinator's address.
    pub fn address(&self) -> &str {
        &self.address
    }

    fn err(&self, s: &tonic::Status) -> GridError {
        from_status(s, &self.address)
    }

    /// Compiles a task somewhere on the grid.
    pub async fn compile(&mut self, task: &CompileTask) -> Result<CompileOutput, GridError> {
        let resp = self
            .build
            .compile(convert::task_to_proto(task))
            .await
            .map_err(|s| self.err(&s))?;
        convert::output_from_proto(resp.into_inner())
    }

    /// The coordinator's health check.
    pub async fn health(&mut self) -> Result<proto::HealthCheckResponse, GridError> {
        let r = self
            .build
            .health_check(proto::HealthCheckRequest {})
            .await
            .map_err(|s| self.err(&s))?;
        Ok(r.into_inner())
    }

    /// The registered workers.
    pub async fn workers(&mut self) -> Result<Vec<proto::WorkerStatus>, GridError> {
        let r = self
            .build
            .get_worker_status(proto::WorkerStatusRequest {})
            .await
            .map_err(|s| self.err(&s))?;
        Ok(r.into_inner().workers)
    }

    /// Task and cache counters.
    pub async fn stats(&mut self) -> Result<proto::StatsResponse, GridError> {
        let r = self
            .build
            .get_stats(proto::StatsRequest {})
            .await
            .map_err(|s| self.err(&s))?;
        Ok(r.into_inner())
    }

    /// Registers a worker (handshake).
    pub async fn register(
        &mut self,
        info: &WorkerInfo,
    ) -> Result<proto::RegisterResponse, GridError> {
        let r = self
            .registry
            .register(proto::RegisterRequest {
                worker: Some(convert::worker_to_proto(info)),
            })
            .await
            .map_err(|s| self.err(&s))?;
        Ok(r.into_inner())
    }

    /// Sends a heartbeat; `Ok(false)` means the coordinator does not know
    /// the worker and it must register again.
    pub async fn heartbeat(&mut self, req: proto::HeartbeatRequest) -> Result<bool, GridError> {
        let r = self
            .registry
            .heartbeat(req)
            .await
            .map_err(|s| self.err(&s))?;
        Ok(r.into_inner().known)
    }

    /// Leaves the pool.
    pub async fn deregister(&mut self, worker_id: &str, reason: &str) -> Result<(), GridError> {
        self.registry
            .deregister(proto::DeregisterRequest {
                worker_id: worker_id.to_owned(),
                reason: reason.to_owned(),
            })
            .await
            .map_err(|s| self.err(&s))?;
        Ok(())
    }
}

impl tower::Service<CompileTask> for CoordinatorClient {
    type Response = CompileOutput;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<CompileOutput, BoxError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, task: CompileTask) -> Self::Future {
        let mut this = self.clone();
        Box::pin(async move { this.compile(&task).await.map_err(BoxError::from) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_worker_client_checks_its_address_but_connects_only_when_called() {
        let opts = ChannelOptions::default();
        assert!(WorkerClient::new(WorkerId::from("w"), "no port here", &opts).is_err());
        // No runtime here: creating a client must not need one (making a
        // channel spawns its buffer task, which would panic).
        let c = WorkerClient::new(WorkerId::from("w"), "127.0.0.1:1", &opts).unwrap();
        let clone = c.clone();
        assert!(c.inner.get().is_none());
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let mut c2 = c.clone();
        let err = rt.block_on(async move { c2.health().await }).unwrap_err();
        assert!(err.to_string().contains("127.0.0.1:1"), "{err}");
        // The channel made by the first call is shared by every clone.
        assert!(clone.inner.get().is_some());
    }
}
