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
/// never builds the stack, so it opens no connection. Every clone shares
/// the one connection; a dial that failed is dialled again by the next
/// call (a long-lived [`crate::Client`] recovers when the coordinator
/// comes back).
#[derive(Clone)]
pub struct LazyCoordinator {
    address: String,
    opts: ChannelOptions,
    client: std::sync::Arc<std::sync::Mutex<Dialled>>,
}

type Dialled = Shared<BoxFuture<'static, Result<CoordinatorClient, GridError>>>;

impl std::fmt::Debug for LazyCoordinator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LazyCoordinator")
            .field("address", &self.address)
            .finish_non_exhaustive()
    }
}

/// Starts dialling `address` (on the current Tokio runtime).
fn dial(address: &str, opts: &ChannelOptions) -> Dialled {
    let (dialled, opts) = (address.to_owned(), opts.clone());
    let handle = tokio::spawn(async move {
        CoordinatorClient::connect(&dialled, &opts)
            .await
            .map_err(coordinator_error)
    });
    async move {
        handle.await.unwrap_or_else(|e| {
            Err(GridError::Internal(format!(
                "connecting to the coordinator: {e}"
            )))
        })
    }
    .boxed()
    .shared()
}

impl LazyCoordinator {
    /// Starts dialling `address` (on the current Tokio runtime).
    pub fn dial(address: String, opts: ChannelOptions) -> Self {
        let client = std::sync::Arc::new(std::sync::Mutex::new(dial(&address, &opts)));
        LazyCoordinator {
            address,
            opts,
            client,
        }
    }

    /// The connection, or a new dial when the last one failed.
    fn connection(&self) -> Dialled {
        let mut current = self.client.lock().unwrap_or_else(|e| e.into_inner());
        if matches!(current.peek(), Some(Err(_))) {
            *current = dial(&self.address, &self.opts);
        }
        current.clone()
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
        let client = self.connection();
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

/// The client's compile stack: the local cache tier `local` (the caller's
/// store, when `cache.enabled`) in front of the coordinator; `None` when no
/// coordinator is configured.
pub async fn remote_stack(
    cfg: &Config,
    local: Option<&DiskStore>,
) -> Option<Result<BoxCompile, GridError>> {
    // client.coordinator, else one found by mDNS (cached briefly), else none.
    let addr = discovery::coordinator_for_client(cfg).await?;
    let coord = LazyCoordinator::dial(
        addr,
        match channel_options(cfg) {
            Ok(o) => o,
            Err(e) => return Some(Err(e)),
        },
    );
    Some(Ok(match local {
        Some(store) => BoxCloneSyncService::new(CacheLayer::new(store.clone()).layer(coord)),
        None => BoxCloneSyncService::new(coord),
    }))
}

/// A boxed compile service (the one the coordinator's stack uses).
pub use hybridgrid_net::coordinator::BoxCompile;

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn a_failed_dial_is_dialled_again() {
        // A loopback port nobody listens on.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .unwrap();
        let opts = ChannelOptions::new(Duration::from_secs(2), Duration::from_secs(5));
        let lazy = LazyCoordinator::dial(format!("127.0.0.1:{port}"), opts);
        let first = lazy.connection();
        assert!(first.clone().await.is_err(), "nothing listens there");
        // The failure is not kept: the next call dials again, and every
        // clone shares the new dial.
        let again = lazy.connection();
        assert!(!first.ptr_eq(&again), "a new dial, not the failed one");
        assert!(again.peek().is_none(), "not resolved before it is awaited");
        assert!(again.ptr_eq(&lazy.clone().connection()), "clones share it");
    }
}
