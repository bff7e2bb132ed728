//! Discovery: how the coordinator learns of workers, and how workers and
//! `hgbuild` find the coordinator.
//!
//! A discovery source is a stream of [`DiscoveryEvent`]s, like tower's
//! `Discover`: a worker is [`Found`](DiscoveryEvent::Found) (with its full
//! capability list, fetched over gRPC `GetCapabilities`) or
//! [`Lost`](DiscoveryEvent::Lost) (with the reason). Two sources exist:
//!
//! - [`StaticWorkers`]: the `coordinator.static_workers` list. Each address
//!   is dialled, health-checked periodically, and retried with exponential
//!   backoff (capped) while it does not answer.
//! - mDNS (cargo feature `mdns`): workers announce `_hybridgrid._tcp.local.`
//!   with TXT records (`role=worker`, id, arch, os, cores, memory, ports,
//!   version); the coordinator browses, dials each worker found, and then
//!   supervises it like a static one. The coordinator announces itself with
//!   `role=coordinator` so that workers and `hgbuild` find it.
//!
//! [`drive`] applies the events of several sources to a
//! [`WorkerPool`] through a [`Reconciler`]. A worker seen by two sources
//! (say, a handshake and mDNS, with the same id) stays one pool entry: the
//! source that registered it first keeps it (a handshake replaces a
//! discovered entry, never the reverse).
//!
//! ```
//! use hybridgrid_core::worker::WorkerId;
//! use hybridgrid_net::discovery::DiscoveryEvent;
//!
//! let ev = DiscoveryEvent::Lost { id: WorkerId::from("w1"), reason: "goodbye".into() };
//! assert_eq!(ev.id(), &WorkerId::from("w1"));
//! ```

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::{Stream, StreamExt};
use hybridgrid_core::config::Config;
use hybridgrid_core::worker::{WorkerId, WorkerInfo, WorkerSource};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::coordinator::WorkerPool;
use crate::worker::WorkerCounters;

mod client_cache;
#[cfg(feature = "mdns")]
pub mod mdns;
mod probe;
mod static_list;

pub use client_cache::{
    CLIENT_BROWSE_TIMEOUT, FOUND_TTL, NOT_FOUND_TTL, coordinator_for_client,
    forget_discovered_coordinator,
};
pub use probe::ProbeOptions;
pub use static_list::StaticWorkers;

/// A change in the set of workers a source sees.
#[derive(Clone, Debug, PartialEq)]
pub enum DiscoveryEvent {
    /// A worker is reachable, with its capabilities; `info.source` and
    /// `info.address` say how and where it was found.
    Found(WorkerInfo),
    /// A worker is gone or no longer answers.
    Lost {
        /// Its id.
        id: WorkerId,
        /// Why, for the log (`connection refused (10.0.0.5:50052)`,
        /// `mdns: service withdrawn`...).
        reason: String,
    },
}

impl DiscoveryEvent {
    /// The worker the event is about.
    pub fn id(&self) -> &WorkerId {
        match self {
            DiscoveryEvent::Found(info) => &info.id,
            DiscoveryEvent::Lost { id, .. } => id,
        }
    }
}

/// A source of [`DiscoveryEvent`]s (an alias over `Stream`, as tower's
/// `Discover` is over `TryStream`).
pub trait Discover: Stream<Item = DiscoveryEvent> + Send {}

impl<T> Discover for T where T: Stream<Item = DiscoveryEvent> + Send {}

/// A boxed discovery source.
pub type BoxDiscover = Pin<Box<dyn Stream<Item = DiscoveryEvent> + Send>>;

/// Why discovery could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DiscoveryError {
    /// The mDNS daemon failed (sockets, interfaces, names).
    #[error("mDNS: {0}")]
    Mdns(String),
    /// This build has no mDNS support (cargo feature `mdns`).
    #[error("mDNS support is not compiled in (cargo feature `mdns`)")]
    NotCompiled,
}

/// Applies discovery events to a [`WorkerPool`], remembering where each
/// source saw each worker.
///
/// - `Found` registers the worker unless the pool already has a worker with
///   that id from another source (that one stays: one worker, one entry), or
///   the same description from this source (nothing to do).
/// - `Lost` removes the worker if this source registered it, or if the
///   pool's entry has the address at which this source saw it stop
///   answering (a handshake worker killed at that address leaves at once
///   rather than at heartbeat expiry; one that is in fact alive registers
///   again with its next heartbeat).
#[derive(Debug)]
pub struct Reconciler {
    pool: Arc<WorkerPool>,
    seen: HashMap<(WorkerSource, WorkerId), String>,
}

impl Reconciler {
    /// A reconciler over `pool`.
    pub fn new(pool: Arc<WorkerPool>) -> Self {
        Reconciler {
            pool,
            seen: HashMap::new(),
        }
    }

    /// Applies one event from `source`; true if the pool changed.
    pub fn apply(&mut self, source: WorkerSource, event: DiscoveryEvent) -> bool {
        let pool = &self.pool;
        let existing = pool
            .entries()
            .into_iter()
            .find(|e| &e.info.id == event.id());
        match event {
            DiscoveryEvent::Found(mut info) => {
                info.source = source;
                self.seen
                    .insert((source, info.id.clone()), info.address.clone());
                if let Some(e) = existing {
                    if e.info.source != source {
                        tracing::debug!(worker_id = %info.id, known_via = %e.info.source, found_via = %source, "worker already in the pool");
                        return false;
                    }
                    if *e.info == info {
                        return false;
                    }
                }
                match pool.register(info) {
                    Ok(()) => true,
                    Err(e) => {
                        tracing::warn!(source = %source, error = %e, "cannot register discovered worker");
                        false
                    }
                }
            }
            DiscoveryEvent::Lost { id, reason } => {
                let seen_at = self.seen.remove(&(source, id.clone()));
                match existing {
                    Some(e)
                        if e.info.source == source
                            || seen_at.as_deref() == Some(e.info.address.as_str()) =>
                    {
                        pool.remove(&id, &format!("{source}: {reason}"))
                    }
                    _ => false,
                }
            }
        }
    }
}

/// Applies events from several sources (each tagged with its source) to the
/// pool until every source ends or `shutdown` turns true.
pub async fn drive(
    pool: Arc<WorkerPool>,
    sources: Vec<(WorkerSource, BoxDiscover)>,
    mut shutdown: watch::Receiver<bool>,
) {
    let tagged: Vec<_> = sources
        .into_iter()
        .map(|(src, s)| s.map(move |ev| (src, ev)).boxed())
        .collect();
    if tagged.is_empty() {
        return;
    }
    let mut all = futures::stream::select_all(tagged);
    let mut rec = Reconciler::new(pool);
    loop {
        if *shutdown.borrow() {
            return;
        }
        tokio::select! {
            ev = all.next() => match ev {
                Some((src, ev)) => { rec.apply(src, ev); }
                None => return,
            },
            r = shutdown.changed() => if r.is_err() { return },
        }
    }
}

/// Starts the coordinator's discovery: the static worker list, and with
/// mDNS enabled, the coordinator's own announcement and the browse for
/// workers. The task ends (and the announcement is withdrawn) when
/// `shutdown` turns true.
pub fn spawn_coordinator(
    cfg: &Config,
    pool: Arc<WorkerPool>,
    grpc_port: u16,
    http_port: u16,
    shutdown: watch::Receiver<bool>,
) -> JoinHandle<()> {
    // Workers are dialled with the pool's TLS and token.
    let opts =
        ProbeOptions::for_ttl(cfg.coordinator.heartbeat_ttl).with_channel(pool.channel_options());
    let mut sources: Vec<(WorkerSource, BoxDiscover)> = Vec::new();
    if !cfg.coordinator.static_workers.is_empty() {
        sources.push((
            WorkerSource::Static,
            Box::pin(StaticWorkers::new(
                cfg.coordinator.static_workers.clone(),
                opts.clone(),
            )),
        ));
    }
    #[cfg(feature = "mdns")]
    let mdns = if cfg.discovery.mdns.enabled {
        match mdns::Mdns::start(&cfg.discovery.mdns) {
            Ok(m) => {
                if let Err(e) = m.announce_coordinator(grpc_port, http_port) {
                    tracing::warn!(error = %e, "cannot announce the coordinator by mDNS");
                }
                match m.browse_workers(opts) {
                    Ok(s) => sources.push((WorkerSource::Mdns, Box::pin(s))),
                    Err(e) => tracing::warn!(error = %e, "cannot browse for workers by mDNS"),
                }
                Some(m)
            }
            Err(e) => {
                tracing::warn!(error = %e, "mDNS discovery unavailable");
                None
            }
        }
    } else {
        tracing::info!("mDNS discovery disabled (discovery.mdns.enabled: false)");
        None
    };
    #[cfg(not(feature = "mdns"))]
    {
        let _ = (grpc_port, http_port);
        if cfg.discovery.mdns.enabled {
            tracing::info!("{}", DiscoveryError::NotCompiled);
        }
    }
    tokio::spawn(async move {
        drive(pool, sources, shutdown.clone()).await;
        let mut shutdown = shutdown;
        while !*shutdown.borrow() {
            if shutdown.changed().await.is_err() {
                break;
            }
        }
        #[cfg(feature = "mdns")]
        if let Some(m) = mdns {
            m.shutdown().await;
        }
    })
}

/// Starts a worker's discovery: with mDNS enabled, announces the worker
/// (`grpc_port` is the port it listens on); with no coordinator configured,
/// browses for one by mDNS and keeps the worker registered with it (see
/// [`crate::worker::run_registration`]). Ends when `shutdown` turns true,
/// withdrawing the announcement. `channel` carries the TLS and token the
/// coordinator is called with.
pub fn spawn_worker(
    cfg: &Config,
    info: WorkerInfo,
    grpc_port: u16,
    counters: Arc<WorkerCounters>,
    channel: crate::client::ChannelOptions,
    shutdown: watch::Receiver<bool>,
) -> JoinHandle<()> {
    let find = cfg.worker.coordinator.trim().is_empty();
    let heartbeat = cfg.worker.heartbeat_interval;
    #[cfg(feature = "mdns")]
    let mdns = if cfg.discovery.mdns.enabled {
        match mdns::Mdns::start(&cfg.discovery.mdns) {
            Ok(m) => {
                let advertise =
                    Some(cfg.worker.advertise_address.as_str()).filter(|a| !a.is_empty());
                if let Err(e) = m.announce_worker(&info, grpc_port, advertise) {
                    tracing::warn!(error = %e, "cannot announce the worker by mDNS");
                }
                Some(m)
            }
            Err(e) => {
                tracing::warn!(error = %e, "mDNS discovery unavailable");
                None
            }
        }
    } else {
        None
    };
    #[cfg(not(feature = "mdns"))]
    let _ = grpc_port;
    let sd = shutdown;
    tokio::spawn(async move {
        #[cfg(feature = "mdns")]
        if find {
            match &mdns {
                Some(m) => {
                    tracing::info!("no coordinator configured: looking for one by mDNS");
                    let found = tokio::select! {
                        a = m.wait_coordinator() => a,
                        _ = wait_true(sd.clone()) => None,
                    };
                    if let Some(addr) = found {
                        tracing::info!(coordinator = %addr, "coordinator found by mDNS");
                        crate::worker::run_registration(
                            addr,
                            info.clone(),
                            counters.clone(),
                            heartbeat,
                            channel.clone(),
                            sd.clone(),
                        )
                        .await;
                    }
                }
                None => warn_undialled(),
            }
        }
        #[cfg(not(feature = "mdns"))]
        if find {
            let _ = (&info, &counters, heartbeat, &channel);
            warn_undialled();
        }
        wait_true(sd).await;
        #[cfg(feature = "mdns")]
        if let Some(m) = mdns {
            m.shutdown().await;
        }
    })
}

fn warn_undialled() {
    tracing::warn!(
        "no coordinator configured (worker.coordinator / --coordinator) and mDNS is off: waiting to be dialled (coordinator.static_workers)"
    );
}

async fn wait_true(mut rx: watch::Receiver<bool>) {
    while !*rx.borrow() {
        if rx.changed().await.is_err() {
            return;
        }
    }
}

/// The delay after `attempt` failures: `initial * 2^attempt`, at most `max`.
pub fn backoff(initial: Duration, max: Duration, attempt: u32) -> Duration {
    initial
        .checked_mul(1u32.checked_shl(attempt.min(31)).unwrap_or(u32::MAX))
        .unwrap_or(max)
        .min(max)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::ChannelOptions;
    use hybridgrid_core::worker::{Arch, Capabilities};

    fn info(id: &str, addr: &str) -> WorkerInfo {
        WorkerInfo::new(
            WorkerId::from(id),
            addr,
            WorkerSource::Handshake,
            Capabilities::new(Arch::Amd64),
        )
    }

    fn pool() -> Arc<WorkerPool> {
        Arc::new(WorkerPool::new(
            Duration::from_secs(30),
            ChannelOptions::default(),
        ))
    }

    fn only(p: &WorkerPool) -> WorkerInfo {
        let e = p.entries();
        assert_eq!(e.len(), 1, "one worker expected: {e:?}");
        (*e[0].info).clone()
    }

    #[tokio::test]
    async fn handshake_then_mdns_is_one_worker_shown_as_handshake() {
        let p = pool();
        let mut r = Reconciler::new(p.clone());
        p.register(info("w1", "10.0.0.1:50052")).unwrap();
        // Seen by mDNS at another address: not removed when that one stops.
        let found = DiscoveryEvent::Found(info("w1", "10.9.0.1:50052"));
        assert!(!r.apply(WorkerSource::Mdns, found));
        assert_eq!(only(&p).source, WorkerSource::Handshake);
        let lost = DiscoveryEvent::Lost {
            id: "w1".into(),
            reason: "withdrawn".into(),
        };
        assert!(!r.apply(WorkerSource::Mdns, lost.clone()));
        assert_eq!(only(&p).source, WorkerSource::Handshake);
        // Seen at its own address: one entry, and when it stops answering
        // there it leaves at once.
        let found = DiscoveryEvent::Found(info("w1", "10.0.0.1:50052"));
        assert!(!r.apply(WorkerSource::Mdns, found));
        assert_eq!(only(&p).source, WorkerSource::Handshake);
        assert!(r.apply(WorkerSource::Mdns, lost));
        assert!(p.entries().is_empty());
    }

    #[tokio::test]
    async fn static_then_mdns_is_one_worker_and_lost_removes_it() {
        let p = pool();
        let mut r = Reconciler::new(p.clone());
        assert!(r.apply(
            WorkerSource::Static,
            DiscoveryEvent::Found(info("w1", "10.0.0.1:50052"))
        ));
        assert_eq!(only(&p).source, WorkerSource::Static);
        // The same worker by mDNS at another address of the same host.
        assert!(!r.apply(
            WorkerSource::Mdns,
            DiscoveryEvent::Found(info("w1", "10.0.9.1:50052"))
        ));
        assert_eq!(only(&p).address, "10.0.0.1:50052");
        // Registering the same description again changes nothing.
        assert!(!r.apply(
            WorkerSource::Static,
            DiscoveryEvent::Found(info("w1", "10.0.0.1:50052"))
        ));
        assert!(r.apply(
            WorkerSource::Static,
            DiscoveryEvent::Lost {
                id: "w1".into(),
                reason: "connection refused".into()
            }
        ));
        assert!(p.entries().is_empty());
    }

    #[tokio::test]
    async fn a_handshake_replaces_a_discovered_entry() {
        let p = pool();
        let mut r = Reconciler::new(p.clone());
        r.apply(
            WorkerSource::Mdns,
            DiscoveryEvent::Found(info("w1", "10.0.0.1:50052")),
        );
        assert_eq!(only(&p).source, WorkerSource::Mdns);
        p.register(info("w1", "10.0.0.1:50052")).unwrap();
        assert_eq!(only(&p).source, WorkerSource::Handshake);
    }

    #[tokio::test]
    async fn drive_applies_tagged_streams() {
        let p = pool();
        let (_tx, rx) = watch::channel(false);
        let s1: BoxDiscover = Box::pin(futures::stream::iter(vec![
            DiscoveryEvent::Found(info("a", "10.0.0.1:1")),
            DiscoveryEvent::Found(info("b", "10.0.0.2:1")),
        ]));
        let s2: BoxDiscover = Box::pin(futures::stream::iter(vec![DiscoveryEvent::Found(info(
            "c",
            "10.0.0.3:1",
        ))]));
        tokio::time::timeout(
            Duration::from_secs(5),
            drive(
                p.clone(),
                vec![(WorkerSource::Static, s1), (WorkerSource::Mdns, s2)],
                rx,
            ),
        )
        .await
        .unwrap();
        let srcs: Vec<_> = p
            .entries()
            .iter()
            .map(|e| (e.info.id.0.clone(), e.info.source))
            .collect();
        assert_eq!(
            srcs,
            vec![
                ("a".into(), WorkerSource::Static),
                ("b".into(), WorkerSource::Static),
                ("c".into(), WorkerSource::Mdns)
            ]
        );
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let i = Duration::from_millis(500);
        let cap = Duration::from_secs(30);
        assert_eq!(backoff(i, cap, 0), i);
        assert_eq!(backoff(i, cap, 1), Duration::from_secs(1));
        assert_eq!(backoff(i, cap, 5), Duration::from_secs(16));
        assert_eq!(backoff(i, cap, 6), cap);
        assert_eq!(backoff(i, cap, 40), cap);
    }
}
