//! Dialling the coordinator (in the background while the preprocessor runs,
//! with the configuration's TLS and token) and the compile stack in front of
//! it.

use futures::FutureExt;
use futures::future::{BoxFuture, Shared};
use hybridgrid_cache::{CacheLayer, DiskStore};
use hybridgrid_core::config::Config;
use hybridgrid_core::task::{CompileOutput, CompileTask};
use hybridgrid_core::{BoxError, GridError};
use hybridgrid_net::client::{ChannelOptions, CoordinatorClient};
use hybridgrid_net::discovery;
use tower::Layer;
use tower::util::BoxCloneSyncService;

/// How hgbuild dials the coordinator: its timeouts, TLS and token. A
/// TLS or token file that cannot be loaded is a grid failure (the compile
/// falls back locally with the message, which names the key and file).
fn channel_options(cfg: &Config) -> Result<ChannelOptions, GridError> {
    let security = hybridgrid_net::security::Security::for_client(cfg)
        .map_err(|e| GridError::CoordinatorUnavailable(e.to_string()))?;
    Ok(
        ChannelOptions::new(cfg.client.connect_timeout, cfg.client.request_timeout)
            .with_security(&security),
    )
}

pub(crate) async fn connect(cfg: &Config) -> Option<Result<CoordinatorClient, GridError>> {
    // client.coordinator, else one found by mDNS (cached briefly), else none.
    let addr = discovery::coordinator_for_client(cfg).await?;
    let opts = match channel_options(cfg) {
        Ok(o) => o,
        Err(e) => return Some(Err(e)),
    };
    Some(CoordinatorClient::connect(&addr, &opts).await.map_err(|e| {
        discovery::forget_discovered_coordinator(cfg);
        coordinator_error(e)
    }))
}

/// The coordinator, dialled in the background as soon as the compile stack
/// is built, so that the TCP (and TLS) handshake runs while the
/// preprocessor does; the first call waits for it. A direct-mode cache hit
/// never builds the stack, so it opens no connection.
#[derive(Clone)]
pub struct LazyCoordinator {
    address: String,
    client: Shared<BoxFuture<'static, Result<CoordinatorClient, GridError>>>,
}

impl std::fmt::Debug for LazyCoordinator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LazyCoordinator")
            .field("address", &self.address)
            .finish_non_exhaustive()
    }
}

impl LazyCoordinator {
    /// Starts dialling `address` (on the current Tokio runtime).
    pub fn dial(address: String, opts: ChannelOptions) -> Self {
        let dialled = address.clone();
        let handle = tokio::spawn(async move {
            CoordinatorClient::connect(&dialled, &opts)
                .await
                .map_err(coordinator_error)
        });
        let client = async move {
            handle.await.unwrap_or_else(|e| {
                Err(GridError::Internal(format!(
                    "connecting to the coordinator: {e}"
                )))
            })
        }
        .boxed()
        .shared();
        LazyCoordinator { address, client }
    }
}

impl tower::Service<CompileTask> for LazyCoordinator {
    type Response = CompileOutput;
    type Error = BoxError;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<CompileOutput, BoxError>> + Send>,
    >;

    fn poll_ready(
        &mut self,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), BoxError>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, task: CompileTask) -> Self::Future {
        let client = self.client.clone();
        Box::pin(async move {
            let mut c = client.await?;
            Ok(c.compile(&task).await?)
        })
    }
}

fn coordinator_error(e: GridError) -> GridError {
    match e {
        GridError::WorkerUnavailable { reason, .. } => GridError::CoordinatorUnavailable(reason),
        other => other,
    }
}

/// Environment that gives a child hgbuild this configuration's TLS and
/// auth settings (only those that are set; files as absolute paths, since
/// builds change directory).
pub fn security_env(cfg: &Config) -> Vec<(&'static str, String)> {
    fn abs(f: &str) -> String {
        std::path::absolute(f)
            .map(|p| p.display().to_string())
            .unwrap_or_else(|_| f.to_owned())
    }
    let mut env = Vec::new();
    let t = &cfg.tls;
    if t.enabled {
        env.push(("HG_TLS__ENABLED", "true".to_owned()));
        for (k, v) in [
            ("HG_TLS__CERT_FILE", &t.cert_file),
            ("HG_TLS__KEY_FILE", &t.key_file),
            ("HG_TLS__CA_FILE", &t.ca_file),
        ] {
            if !v.is_empty() {
                env.push((k, abs(v)));
            }
        }
    }
    let a = &cfg.auth;
    if a.enabled {
        env.push(("HG_AUTH__ENABLED", "true".to_owned()));
        if !a.token.is_empty() {
            env.push(("HG_AUTH__TOKEN", a.token.clone()));
        }
        if !a.token_file.is_empty() {
            env.push(("HG_AUTH__TOKEN_FILE", abs(&a.token_file)));
        }
    }
    env
}

/// The client's compile stack: the local cache tier in front of the
/// coordinator; `None` when no coordinator is configured.
pub async fn remote_stack(cfg: &Config) -> Option<Result<BoxCompile, GridError>> {
    // client.coordinator, else one found by mDNS (cached briefly), else none.
    let addr = discovery::coordinator_for_client(cfg).await?;
    let coord = LazyCoordinator::dial(
        addr,
        match channel_options(cfg) {
            Ok(o) => o,
            Err(e) => return Some(Err(e)),
        },
    );
    Some(Ok(if cfg.cache.enabled {
        BoxCloneSyncService::new(CacheLayer::new(DiskStore::from_config(&cfg.cache)).layer(coord))
    } else {
        BoxCloneSyncService::new(coord)
    }))
}

/// A boxed compile service (the one the coordinator's stack uses).
pub use hybridgrid_net::coordinator::BoxCompile;
