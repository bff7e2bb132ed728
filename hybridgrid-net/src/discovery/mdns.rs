//! mDNS (DNS-SD over multicast) with `mdns-sd`: workers and the coordinator
//! announce `_hybridgrid._tcp.local.` (name and domain from
//! `discovery.mdns`); the coordinator browses for workers, workers and
//! `hgbuild` browse for the coordinator.
//!
//! TXT keys: `role` (`worker` or `coordinator`), `id`, `arch`, `os`,
//! `cores`, `mem` (bytes), `grpc` and `http` (ports), `ver`, and `addr`
//! when the worker has an advertised address (`--advertise-address`).
//! A TXT record is a hint: the coordinator dials the worker's gRPC
//! `GetCapabilities` for the full description before registering it.
//!
//! With `discovery.mdns.interfaces` set, the daemon is limited to those
//! interfaces right after it starts (mdns-sd joins the multicast group on
//! every interface when its thread starts, before the limit applies; it
//! sends nothing there).

use std::collections::HashMap;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::Stream;
use hybridgrid_core::config::MdnsConfig;
use hybridgrid_core::worker::{WorkerInfo, WorkerSource};
use mdns_sd::{IfKind, ResolvedService, ServiceDaemon, ServiceEvent, ServiceInfo};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::probe::{ProbeOptions, Watch, supervise};
use super::{DiscoveryError, DiscoveryEvent};

/// TXT value of `role` for workers.
pub const ROLE_WORKER: &str = "worker";
/// TXT value of `role` for the coordinator.
pub const ROLE_COORDINATOR: &str = "coordinator";

fn err(e: mdns_sd::Error) -> DiscoveryError {
    DiscoveryError::Mdns(e.to_string())
}

/// The DNS-SD service type for `cfg`, e.g. `_hybridgrid._tcp.local.`.
pub fn service_type(cfg: &MdnsConfig) -> String {
    let name = cfg.service_name.trim().trim_end_matches('.');
    let domain = cfg.domain.trim().trim_matches('.');
    let domain = if domain.is_empty() { "local" } else { domain };
    format!("{name}.{domain}.")
}

fn hostname() -> String {
    hybridgrid_core::addr::hostname()
        .and_then(|h| h.split('.').next().map(str::to_owned))
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "hybridgrid".into())
}

/// Cuts `s` to at most `max` bytes on a character boundary.
fn cut(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// The TXT records a worker announces.
pub fn worker_txt(
    info: &WorkerInfo,
    grpc_port: u16,
    advertise: Option<&str>,
) -> HashMap<String, String> {
    let c = &info.capabilities;
    let mut m = HashMap::new();
    m.insert("role".into(), ROLE_WORKER.into());
    m.insert("id".into(), cut(&info.id.0, 200).to_owned());
    m.insert(
        "arch".into(),
        c.arch.as_ref().map(|a| a.to_string()).unwrap_or_default(),
    );
    m.insert("os".into(), c.os.clone());
    m.insert("cores".into(), c.cores.to_string());
    m.insert("mem".into(), c.memory_bytes.to_string());
    m.insert("grpc".into(), grpc_port.to_string());
    m.insert("http".into(), info.http_port.to_string());
    m.insert("ver".into(), info.version.clone());
    if let Some(a) = advertise {
        m.insert("addr".into(), cut(a, 200).to_owned());
    }
    m
}

/// The `host:port` addresses to try for a resolved service, best first:
/// the advertised address (TXT `addr`, unless its host is unspecified),
/// then IPv4 addresses (loopback last), then global IPv6 ones.
pub fn candidates(
    advertised: Option<&str>,
    port: u16,
    ips: impl IntoIterator<Item = IpAddr>,
) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(a) = advertised
        && let Ok((host, _)) = hybridgrid_core::addr::parse_host_port(a)
        && !host.is_empty()
        && host != "0.0.0.0"
        && host != "::"
    {
        out.push(a.to_owned());
    }
    let mut ips: Vec<IpAddr> = ips
        .into_iter()
        .filter(|ip| match ip {
            IpAddr::V4(v4) => !v4.is_unspecified(),
            // Link-local IPv6 needs a scope to dial; skip it.
            IpAddr::V6(v6) => !v6.is_unspecified() && (v6.segments()[0] & 0xffc0) != 0xfe80,
        })
        .collect();
    ips.sort_by_key(|ip| (ip.is_ipv6(), ip.is_loopback(), *ip));
    ips.dedup();
    for ip in ips {
        let a = std::net::SocketAddr::new(ip, port).to_string();
        if !out.contains(&a) {
            out.push(a);
        }
    }
    out
}

fn resolved_candidates(r: &ResolvedService) -> Vec<String> {
    let port = r
        .get_property_val_str("grpc")
        .and_then(|p| p.parse::<u16>().ok())
        .filter(|p| *p != 0)
        .unwrap_or(r.port);
    candidates(
        r.get_property_val_str("addr"),
        port,
        r.addresses.iter().map(|a| a.to_ip_addr()),
    )
}

/// An mDNS daemon limited to the configured interfaces, with the services
/// this process announced.
pub struct Mdns {
    daemon: ServiceDaemon,
    ty: String,
    host: String,
    announced: Mutex<Vec<String>>,
}

impl std::fmt::Debug for Mdns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mdns").field("service", &self.ty).finish()
    }
}

impl Mdns {
    /// Starts the daemon (UDP 5353), limited to `cfg.interfaces` if set.
    pub fn start(cfg: &MdnsConfig) -> Result<Self, DiscoveryError> {
        let daemon = ServiceDaemon::new().map_err(err)?;
        if !cfg.interfaces.is_empty() {
            daemon.disable_interface(IfKind::All).map_err(err)?;
            let names: Vec<IfKind> = cfg
                .interfaces
                .iter()
                .map(|n| IfKind::Name(n.clone()))
                .collect();
            daemon.enable_interface(names).map_err(err)?;
        }
        let ty = service_type(cfg);
        tracing::debug!(service = %ty, interfaces = ?cfg.interfaces, "mDNS started");
        Ok(Mdns {
            daemon,
            ty,
            host: format!("{}.local.", hostname()),
            announced: Mutex::new(Vec::new()),
        })
    }

    /// The service type browsed and announced.
    pub fn service_type(&self) -> &str {
        &self.ty
    }

    fn announce(
        &self,
        instance: &str,
        port: u16,
        txt: HashMap<String, String>,
    ) -> Result<(), DiscoveryError> {
        let info = ServiceInfo::new(&self.ty, cut(instance, 63), &self.host, (), port, txt)
            .map_err(err)?
            .enable_addr_auto();
        let full = info.get_fullname().to_owned();
        self.daemon.register(info).map_err(err)?;
        tracing::info!(service = %full, port, "announced by mDNS");
        if let Ok(mut a) = self.announced.lock() {
            a.push(full);
        }
        Ok(())
    }

    /// Announces a worker (role=worker) listening for gRPC on `grpc_port`.
    pub fn announce_worker(
        &self,
        info: &WorkerInfo,
        grpc_port: u16,
        advertise: Option<&str>,
    ) -> Result<(), DiscoveryError> {
        self.announce(
            &info.id.0,
            grpc_port,
            worker_txt(info, grpc_port, advertise),
        )
    }

    /// Announces the coordinator (role=coordinator).
    pub fn announce_coordinator(
        &self,
        grpc_port: u16,
        http_port: u16,
    ) -> Result<(), DiscoveryError> {
        let mut txt = HashMap::new();
        txt.insert("role".to_owned(), ROLE_COORDINATOR.to_owned());
        txt.insert("grpc".to_owned(), grpc_port.to_string());
        txt.insert("http".to_owned(), http_port.to_string());
        txt.insert("ver".to_owned(), crate::VERSION.to_owned());
        self.announce(&format!("coordinator-{}", hostname()), grpc_port, txt)
    }

    /// Browses for workers; each one found is dialled for its capabilities
    /// and then supervised (see [`super::StaticWorkers`]); a worker whose
    /// service is withdrawn (goodbye or expiry) is `Lost`.
    pub fn browse_workers(&self, opts: ProbeOptions) -> Result<MdnsWorkers, DiscoveryError> {
        let events = self.daemon.browse(&self.ty).map_err(err)?;
        let (tx, rx) = mpsc::channel(64);
        let task = tokio::spawn(async move {
            struct Sup {
                cands: Vec<String>,
                watch: Arc<Watch>,
                task: JoinHandle<()>,
            }
            let mut sups: HashMap<String, Sup> = HashMap::new();
            while let Ok(ev) = events.recv_async().await {
                match ev {
                    ServiceEvent::ServiceResolved(r) => {
                        if r.get_property_val_str("role") != Some(ROLE_WORKER) {
                            continue;
                        }
                        let cands = resolved_candidates(&r);
                        tracing::debug!(service = %r.fullname, addresses = ?cands, "worker seen by mDNS");
                        if let Some(s) = sups.get(&r.fullname)
                            && s.cands == cands
                        {
                            s.watch.kick.notify_one();
                            continue;
                        }
                        if let Some(old) = sups.remove(&r.fullname) {
                            old.task.abort();
                        }
                        let watch = Arc::new(Watch::default());
                        let task = tokio::spawn(supervise(
                            cands.clone(),
                            WorkerSource::Mdns,
                            opts.clone(),
                            tx.clone(),
                            watch.clone(),
                        ));
                        sups.insert(r.fullname.clone(), Sup { cands, watch, task });
                    }
                    ServiceEvent::ServiceRemoved(_, full) => {
                        let Some(s) = sups.remove(&full) else {
                            continue;
                        };
                        s.task.abort();
                        let id = s.watch.id.lock().ok().and_then(|g| g.clone());
                        tracing::debug!(service = %full, "worker withdrawn from mDNS");
                        if let Some(id) = id {
                            let reason = "service withdrawn (goodbye or expiry)".to_owned();
                            if tx.send(DiscoveryEvent::Lost { id, reason }).await.is_err() {
                                break;
                            }
                        }
                    }
                    _ => {}
                }
            }
            for s in sups.into_values() {
                s.task.abort();
            }
        });
        Ok(MdnsWorkers { rx, task })
    }

    /// Browses until a coordinator answers; its `host:port`.
    pub async fn wait_coordinator(&self) -> Option<String> {
        let events = match self.daemon.browse(&self.ty) {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!(error = %e, "cannot browse for the coordinator");
                return None;
            }
        };
        let mut found = None;
        while let Ok(ev) = events.recv_async().await {
            if let ServiceEvent::ServiceResolved(r) = ev
                && r.get_property_val_str("role") == Some(ROLE_COORDINATOR)
                && let Some(a) = resolved_candidates(&r).into_iter().next()
            {
                found = Some(a);
                break;
            }
        }
        let _ = self.daemon.stop_browse(&self.ty);
        found
    }

    /// Like [`Mdns::wait_coordinator`], giving up after `timeout`.
    pub async fn find_coordinator(&self, timeout: Duration) -> Option<String> {
        let r = tokio::time::timeout(timeout, self.wait_coordinator()).await;
        if r.is_err() {
            let _ = self.daemon.stop_browse(&self.ty);
        }
        r.ok().flatten()
    }

    /// Withdraws what this process announced (goodbye packets) and stops
    /// the daemon, within about two seconds.
    pub async fn shutdown(self) {
        let names = self.announced.lock().map(|a| a.clone()).unwrap_or_default();
        for n in names {
            if let Ok(rx) = self.daemon.unregister(&n) {
                let _ = tokio::time::timeout(Duration::from_secs(1), rx.recv_async()).await;
                tracing::debug!(service = %n, "mDNS announcement withdrawn");
            }
        }
        if let Ok(rx) = self.daemon.shutdown() {
            let _ = tokio::time::timeout(Duration::from_secs(1), rx.recv_async()).await;
        }
    }
}

/// Workers found by mDNS, as a stream of [`DiscoveryEvent`]s (source
/// `mdns`). Dropping it stops browsing and supervising.
#[derive(Debug)]
pub struct MdnsWorkers {
    rx: mpsc::Receiver<DiscoveryEvent>,
    task: JoinHandle<()>,
}

impl Stream for MdnsWorkers {
    type Item = DiscoveryEvent;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.rx.poll_recv(cx)
    }
}

impl Drop for MdnsWorkers {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hybridgrid_core::worker::{Arch, Capabilities, WorkerId};

    #[test]
    fn service_type_from_config() {
        let mut c = MdnsConfig::default();
        assert_eq!(service_type(&c), "_hybridgrid._tcp.local.");
        c.service_name = "_other._tcp.".into();
        c.domain = "local".into();
        assert_eq!(service_type(&c), "_other._tcp.local.");
    }

    #[test]
    fn txt_records_of_a_worker() {
        let mut caps = Capabilities::new(Arch::Arm64);
        caps.cores = 8;
        caps.memory_bytes = 1 << 30;
        let mut info = WorkerInfo::new(
            WorkerId::from("w1"),
            "0.0.0.0:50052",
            WorkerSource::Handshake,
            caps,
        );
        info.http_port = 9090;
        info.version = "0.1.0".into();
        let t = worker_txt(&info, 50052, Some("host.example:6000"));
        assert_eq!(t["role"], "worker");
        assert_eq!(t["id"], "w1");
        assert_eq!(t["arch"], "arm64");
        assert_eq!(t["cores"], "8");
        assert_eq!(t["mem"], "1073741824");
        assert_eq!(t["grpc"], "50052");
        assert_eq!(t["http"], "9090");
        assert_eq!(t["ver"], "0.1.0");
        assert_eq!(t["addr"], "host.example:6000");
        assert!(!worker_txt(&info, 1, None).contains_key("addr"));
    }

    #[test]
    fn candidate_order() {
        let ips: Vec<IpAddr> = ["127.0.0.1", "fe80::1", "10.0.0.2", "2001:db8::2", "0.0.0.0"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        assert_eq!(
            candidates(None, 50052, ips.clone()),
            vec!["10.0.0.2:50052", "127.0.0.1:50052", "[2001:db8::2]:50052"]
        );
        assert_eq!(
            candidates(Some("gw.example:7000"), 50052, ips.clone())[0],
            "gw.example:7000"
        );
        assert_eq!(
            candidates(Some("0.0.0.0:7000"), 50052, ips)[0],
            "10.0.0.2:50052"
        );
    }

    #[test]
    fn cut_keeps_characters_whole() {
        assert_eq!(cut("abc", 2), "ab");
        assert_eq!(cut("é", 1), "");
        assert_eq!(cut("abc", 10), "abc");
    }
}
