//! `coordinator.static_workers`: workers dialled at fixed addresses.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::Stream;
use hybridgrid_core::worker::WorkerSource;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::DiscoveryEvent;
use super::probe::{ProbeOptions, Watch, supervise};

/// The workers of a static list, as a stream of [`DiscoveryEvent`]s.
///
/// Each address is dialled at once; a worker that answers is `Found` with
/// its capabilities (source `static`, address as listed), is checked every
/// `health_interval`, and is `Lost` when it stops answering. An unreachable
/// address is dialled again with exponential backoff up to `max_backoff`,
/// each failure logged as `worker unreachable`. Dropping the stream stops
/// everything.
#[derive(Debug)]
pub struct StaticWorkers {
    rx: mpsc::Receiver<DiscoveryEvent>,
    tasks: Vec<JoinHandle<()>>,
}

impl StaticWorkers {
    /// Starts watching `addresses` (`host:port`). Needs a tokio runtime.
    pub fn new(addresses: Vec<String>, opts: ProbeOptions) -> Self {
        let (tx, rx) = mpsc::channel(64);
        let tasks = addresses
            .into_iter()
            .map(|a| {
                tokio::spawn(supervise(
                    vec![a],
                    WorkerSource::Static,
                    opts.clone(),
                    tx.clone(),
                    Arc::new(Watch::default()),
                ))
            })
            .collect();
        StaticWorkers { rx, tasks }
    }
}

impl Stream for StaticWorkers {
    type Item = DiscoveryEvent;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.rx.poll_recv(cx)
    }
}

impl Drop for StaticWorkers {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}
