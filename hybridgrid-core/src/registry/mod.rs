//! The coordinator's registry of workers.
//!
//! Workers arrive by handshake, from `coordinator.static_workers` or by
//! mDNS; a worker reachable through several sources is one worker (keyed by
//! its [`WorkerId`]). Each has a last heartbeat and live [`WorkerStats`].
//! The registry publishes its changes as a stream of
//! [`tower::discover::Change`] events that the
//! [scheduler](crate::scheduler) consumes.
//!
//! ```
//! use hybridgrid_core::registry::Registry;
//! use hybridgrid_core::worker::{Arch, Capabilities, WorkerInfo, WorkerSource};
//!
//! let reg = Registry::new();
//! let info = WorkerInfo::new("w1".into(), "10.0.0.1:50052", WorkerSource::Handshake,
//!                            Capabilities::new(Arch::Amd64));
//! reg.register(info);
//! assert!(reg.heartbeat(&"w1".into()));
//! assert!(!reg.heartbeat(&"w2".into()), "unknown workers must register again");
//! ```

mod stats;

use std::collections::HashMap;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::Stream;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tower::discover::Change;

pub use self::stats::WorkerStats;
use crate::worker::{WorkerId, WorkerInfo, WorkerSource};

/// A registered worker: what it is and its live numbers.
#[derive(Clone, Debug)]
pub struct RegisteredWorker {
    /// Its description (capabilities, address, source).
    pub info: Arc<WorkerInfo>,
    /// Its live counters, shared with the scheduler.
    pub stats: Arc<WorkerStats>,
}

/// What [`Registry::register`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Registration {
    /// The worker was not known.
    New,
    /// The worker was known; its description was updated.
    Updated,
}

/// A point-in-time view of one worker, for status pages.
#[derive(Clone, Debug)]
pub struct WorkerSnapshot {
    /// The worker.
    pub worker: RegisteredWorker,
    /// Every source it was learned from.
    pub sources: Vec<WorkerSource>,
    /// When it was last heard from.
    pub last_heartbeat: Instant,
}

/// A worker registry event as the scheduler consumes it.
pub type WorkerChange = Change<WorkerId, RegisteredWorker>;

struct Entry {
    worker: RegisteredWorker,
    sources: Vec<WorkerSource>,
    last_heartbeat: Instant,
}

#[derive(Default)]
struct Inner {
    workers: HashMap<WorkerId, Entry>,
    subscribers: Vec<mpsc::UnboundedSender<WorkerChange>>,
}

impl Inner {
    fn publish(&mut self, change: &WorkerChange) {
        self.subscribers.retain(|tx| {
            let c = match change {
                Change::Insert(k, w) => Change::Insert(k.clone(), w.clone()),
                Change::Remove(k) => Change::Remove(k.clone()),
            };
            tx.send(c).is_ok()
        });
    }

    fn remove(&mut self, id: &WorkerId, reason: &str) -> Option<WorkerInfo> {
        let entry = self.workers.remove(id)?;
        tracing::info!(worker_id = %id, reason, "worker left");
        self.publish(&Change::Remove(id.clone()));
        Some(WorkerInfo::clone(&entry.worker.info))
    }
}

/// The worker registry. Cheap to clone; clones share the same workers.
#[derive(Clone, Default)]
pub struct Registry {
    inner: Arc<Mutex<Inner>>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("workers", &self.len())
            .finish()
    }
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves consistent data behind.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers a worker, or updates it if its id is known (a worker found
    /// through several sources stays one worker). A different worker id at
    /// the same address is taken to be a restarted worker and replaces it.
    pub fn register(&self, info: WorkerInfo) -> Registration {
        let mut inner = self.lock();
        let now = Instant::now();
        let id = info.id.clone();
        let stale: Vec<WorkerId> = inner
            .workers
            .iter()
            .filter(|(k, e)| {
                **k != id && !info.address.is_empty() && e.worker.info.address == info.address
            })
            .map(|(k, _)| k.clone())
            .collect();
        for old in stale {
            let reason = format!("replaced by worker {id} at the same address");
            inner.remove(&old, &reason);
        }
        if let Some(entry) = inner.workers.get_mut(&id) {
            entry.last_heartbeat = now;
            if !entry.sources.contains(&info.source) {
                entry.sources.push(info.source);
            }
            // The worker keeps the source it was first known by, except
            // that its own handshake wins over having been discovered.
            let mut info = info;
            if info.source != WorkerSource::Handshake {
                info.source = entry.worker.info.source;
            }
            if *entry.worker.info != info {
                entry.worker.info = Arc::new(info);
                let change = Change::Insert(id.clone(), entry.worker.clone());
                tracing::debug!(worker_id = %id, "worker updated");
                inner.publish(&change);
            }
            return Registration::Updated;
        }
        let arch = info
            .capabilities
            .arch
            .as_ref()
            .map_or("unknown", |a| a.as_str())
            .to_owned();
        tracing::info!(worker_id = %id, arch = %arch, source = %info.source, "worker registered");
        let source = info.source;
        let worker = RegisteredWorker {
            info: Arc::new(info),
            stats: Arc::new(WorkerStats::new()),
        };
        let change = Change::Insert(id.clone(), worker.clone());
        inner.workers.insert(
            id,
            Entry {
                worker,
                sources: vec![source],
                last_heartbeat: now,
            },
        );
        inner.publish(&change);
        Registration::New
    }

    /// Records a heartbeat. Returns false if the worker is not known (after
    /// a coordinator restart, say): it must register again.
    pub fn heartbeat(&self, id: &WorkerId) -> bool {
        let mut inner = self.lock();
        match inner.workers.get_mut(id) {
            Some(e) => {
                e.last_heartbeat = Instant::now();
                true
            }
            None => false,
        }
    }

    /// Removes a worker, logging `worker left` with the reason.
    pub fn remove(&self, id: &WorkerId, reason: &str) -> Option<WorkerInfo> {
        self.lock().remove(id, reason)
    }

    /// Removes every worker not heard from for longer than `ttl`, and
    /// returns them.
    pub fn expire(&self, ttl: Duration) -> Vec<WorkerInfo> {
        let mut inner = self.lock();
        let now = Instant::now();
        let dead: Vec<WorkerId> = inner
            .workers
            .iter()
            .filter(|(_, e)| now.saturating_duration_since(e.last_heartbeat) > ttl)
            .map(|(k, _)| k.clone())
            .collect();
        let reason = format!("no heartbeat for {}", humantime::format_duration(ttl));
        dead.iter()
            .filter_map(|id| inner.remove(id, &reason))
            .collect()
    }

    /// The worker with this id, if registered.
    pub fn get(&self, id: &WorkerId) -> Option<WorkerSnapshot> {
        self.lock().workers.get(id).map(snapshot)
    }

    /// Every registered worker, sorted by id.
    pub fn snapshot(&self) -> Vec<WorkerSnapshot> {
        let mut v: Vec<WorkerSnapshot> = self.lock().workers.values().map(snapshot).collect();
        v.sort_by(|a, b| a.worker.info.id.cmp(&b.worker.info.id));
        v
    }

    /// How many workers are registered.
    pub fn len(&self) -> usize {
        self.lock().workers.len()
    }

    /// True if no worker is registered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A stream of changes: an insert for every worker registered now, then
    /// every insert (new or updated worker) and removal as it happens.
    pub fn subscribe(&self) -> WorkerChanges {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut inner = self.lock();
        for (id, e) in &inner.workers {
            // The receiver is alive: it is in our hands.
            let _ = tx.send(Change::Insert(id.clone(), e.worker.clone()));
        }
        inner.subscribers.push(tx);
        WorkerChanges { rx }
    }
}

fn snapshot(e: &Entry) -> WorkerSnapshot {
    WorkerSnapshot {
        worker: e.worker.clone(),
        sources: e.sources.clone(),
        last_heartbeat: e.last_heartbeat,
    }
}

/// The stream returned by [`Registry::subscribe`]; it is a
/// [`tower::discover::Discover`] of [`RegisteredWorker`]s.
#[derive(Debug)]
pub struct WorkerChanges {
    rx: mpsc::UnboundedReceiver<WorkerChange>,
}

impl Stream for WorkerChanges {
    type Item = Result<WorkerChange, Infallible>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        // Queued changes first, without tokio's cooperative budget: a
        // consumer draining a burst (10,000 workers registered at start)
        // must see all of it in one go, not 128 per poll.
        match self.rx.try_recv() {
            Ok(c) => Poll::Ready(Some(Ok(c))),
            Err(mpsc::error::TryRecvError::Disconnected) => Poll::Ready(None),
            Err(mpsc::error::TryRecvError::Empty) => self.rx.poll_recv(cx).map(|c| c.map(Ok)),
        }
    }
}

#[cfg(test)]
mod tests;
