//! Dialling a worker for its capabilities and watching it afterwards; shared
//! by the static list and mDNS.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use hybridgrid_core::worker::{WorkerId, WorkerInfo, WorkerSource};
use tokio::sync::{Notify, mpsc};

use super::{DiscoveryEvent, backoff};
use crate::client::{ChannelOptions, GrpcChannel, connect_channel, describe_connect_error};
use crate::convert;
use crate::proto;
use crate::proto::worker_service_client::WorkerServiceClient;

/// Timing of the dials and health checks of discovered workers.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ProbeOptions {
    /// Time allowed to connect.
    pub connect_timeout: Duration,
    /// Time allowed for one `GetCapabilities` call.
    pub request_timeout: Duration,
    /// Time between health checks of a worker that answers.
    pub health_interval: Duration,
    /// First delay before dialling an unreachable worker again.
    pub initial_backoff: Duration,
    /// Largest delay between dials of an unreachable worker.
    pub max_backoff: Duration,
    /// TLS and token of the dials (the timeouts above apply, not its own).
    pub channel: ChannelOptions,
}

impl Default for ProbeOptions {
    fn default() -> Self {
        ProbeOptions::for_ttl(Duration::from_secs(30))
    }
}

impl ProbeOptions {
    /// Options that notice a dead worker well within `heartbeat_ttl`: a
    /// health check every third of it (between 0.5 and 10 s), backoff from
    /// 0.5 s up to 30 s.
    pub fn for_ttl(heartbeat_ttl: Duration) -> Self {
        let health_interval =
            (heartbeat_ttl / 3).clamp(Duration::from_millis(500), Duration::from_secs(10));
        ProbeOptions {
            connect_timeout: Duration::from_secs(2),
            request_timeout: health_interval.max(Duration::from_secs(2)),
            health_interval,
            initial_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(30),
            channel: ChannelOptions::default(),
        }
    }

    /// The same dialling with the TLS and token of `channel`.
    pub fn with_channel(mut self, channel: ChannelOptions) -> Self {
        self.channel = channel;
        self
    }

    /// The same with another backoff cap.
    pub fn with_max_backoff(mut self, max: Duration) -> Self {
        self.max_backoff = max;
        self
    }
}

fn status_reason(address: &str, s: &tonic::Status) -> String {
    if s.code() == tonic::Code::Unavailable || s.code() == tonic::Code::Unknown {
        describe_connect_error(address, s)
    } else {
        format!("{} ({address})", s.message())
    }
}

/// Dials `address` and fetches the worker's description.
pub(crate) async fn fetch(
    address: &str,
    opts: &ProbeOptions,
) -> Result<(WorkerInfo, WorkerServiceClient<GrpcChannel>), String> {
    let ch_opts = ChannelOptions::new(opts.connect_timeout, opts.request_timeout)
        .with_tls(opts.channel.tls.clone())
        .with_token(opts.channel.token.clone());
    let ch = connect_channel(address, &ch_opts)
        .await
        .map_err(|e| match e {
            hybridgrid_core::GridError::WorkerUnavailable { reason, .. } => reason,
            other => other.to_string(),
        })?;
    let mut client = WorkerServiceClient::new(ch);
    let info = capabilities(address, &mut client, opts).await?;
    Ok((info, client))
}

async fn capabilities(
    address: &str,
    client: &mut WorkerServiceClient<GrpcChannel>,
    opts: &ProbeOptions,
) -> Result<WorkerInfo, String> {
    let r = tokio::time::timeout(
        opts.request_timeout,
        client.get_capabilities(proto::CapabilitiesRequest {}),
    )
    .await
    .map_err(|_| format!("no answer within {:?} ({address})", opts.request_timeout))?
    .map_err(|s| status_reason(address, &s))?;
    convert::worker_from_proto(r.into_inner()).map_err(|e| format!("{e} ({address})"))
}

/// What a supervisor shares with whoever started it.
#[derive(Debug, Default)]
pub(crate) struct Watch {
    /// Cuts a backoff short (the worker announced itself again).
    pub(crate) kick: Notify,
    /// The id of the worker once it answered.
    pub(crate) id: Mutex<Option<WorkerId>>,
}

/// Keeps dialling the first answering address of `candidates`: sends
/// `Found` when the worker answers, `Lost` when it stops, retries with
/// backoff in between, logging `worker unreachable`. Ends when `tx` closes.
pub(crate) async fn supervise(
    candidates: Vec<String>,
    source: WorkerSource,
    opts: ProbeOptions,
    tx: mpsc::Sender<DiscoveryEvent>,
    watch: Arc<Watch>,
) {
    let shown = candidates.join(",");
    let mut attempt: u32 = 0;
    loop {
        let mut last_err = String::from("no address to dial");
        let mut got = None;
        for a in &candidates {
            match fetch(a, &opts).await {
                Ok(x) => {
                    got = Some((a.clone(), x));
                    break;
                }
                Err(e) => last_err = e,
            }
        }
        let Some((address, (mut info, mut client))) = got else {
            tracing::error!(worker = %shown, error = %last_err, source = %source, "worker unreachable");
            let d = backoff(opts.initial_backoff, opts.max_backoff, attempt);
            attempt = attempt.saturating_add(1);
            tokio::select! {
                _ = tokio::time::sleep(d) => {}
                _ = watch.kick.notified() => {}
                _ = tx.closed() => return,
            }
            continue;
        };
        attempt = 0;
        info.address = address.clone();
        info.source = source;
        let id = info.id.clone();
        if let Ok(mut g) = watch.id.lock() {
            *g = Some(id.clone());
        }
        if tx.send(DiscoveryEvent::Found(info.clone())).await.is_err() {
            return;
        }
        let reason = loop {
            tokio::select! {
                _ = tokio::time::sleep(opts.health_interval) => {}
                _ = tx.closed() => return,
            }
            match capabilities(&address, &mut client, &opts).await {
                Ok(mut now) => {
                    now.address = address.clone();
                    now.source = source;
                    if now != info {
                        // Restarted with another description (id, compilers...).
                        if now.id != id {
                            break format!("answers as {} now", now.id);
                        }
                        info = now;
                        if tx.send(DiscoveryEvent::Found(info.clone())).await.is_err() {
                            return;
                        }
                    }
                }
                Err(e) => break e,
            }
        };
        tracing::error!(worker = %address, error = %reason, source = %source, "worker unreachable");
        if tx
            .send(DiscoveryEvent::Lost {
                id: id.clone(),
                reason,
            })
            .await
            .is_err()
        {
            return;
        }
        if let Ok(mut g) = watch.id.lock() {
            *g = None;
        }
    }
}
