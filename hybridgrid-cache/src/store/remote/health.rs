//! Whether the backend is down (and the marker that lets other processes skip
//! it for a while), and the writes that run in the background.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Instant, SystemTime};

use bytes::Bytes;
use tokio::sync::{Semaphore, mpsc};

use crate::layer::{METRIC_ERRORS, METRIC_MISSES};

use super::*;

impl Inner {
    pub(super) fn is_down(&self) -> bool {
        let local = self
            .down_until
            .lock()
            .map(|d| d.is_some_and(|t| Instant::now() < t))
            .unwrap_or(false);
        local || self.marker_is_fresh()
    }

    fn marker_is_fresh(&self) -> bool {
        let Some(path) = self.down_marker.get() else {
            return false;
        };
        std::fs::metadata(path)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| SystemTime::now().duration_since(t).ok())
            .is_some_and(|age| age < self.retry_after)
    }

    /// A call failed: skip the tier for `retry_after`, warn once.
    pub(super) fn mark_down(&self, what: &str, error: &str) {
        self.counters.errors.fetch_add(1, Ordering::Relaxed);
        metrics::counter!(METRIC_ERRORS, "tier" => TIER).increment(1);
        metrics::gauge!(METRIC_AVAILABLE, "tier" => TIER).set(0.0);
        if let Ok(mut d) = self.down_until.lock() {
            *d = Some(Instant::now() + self.retry_after);
        }
        // Another process already announced this outage.
        let shared = self.marker_is_fresh();
        if let Some(path) = self.down_marker.get() {
            let _ = std::fs::write(path, format!("{}: {error}\n", self.url));
        }
        if !self.warned.swap(true, Ordering::Relaxed) && !shared {
            tracing::warn!(
                backend = %self.backend,
                url = %self.url,
                operation = what,
                error,
                retry_after = ?self.retry_after,
                "remote cache unavailable; using the local cache tiers until it is back"
            );
        } else {
            tracing::debug!(backend = %self.backend, operation = what, error, "remote cache call failed");
        }
    }

    /// A call succeeded: the tier is back if it was down.
    pub(super) fn mark_up(&self) {
        if self.warned.swap(false, Ordering::Relaxed) {
            tracing::info!(backend = %self.backend, url = %self.url, "remote cache available again");
            metrics::gauge!(METRIC_AVAILABLE, "tier" => TIER).set(1.0);
            if let Some(path) = self.down_marker.get() {
                let _ = std::fs::remove_file(path);
            }
        }
        if let Ok(mut d) = self.down_until.lock() {
            *d = None;
        }
    }

    pub(super) fn miss(&self) {
        self.counters.misses.fetch_add(1, Ordering::Relaxed);
        metrics::counter!(METRIC_MISSES, "tier" => TIER).increment(1);
    }

    async fn write(&self, path: &str, data: Bytes) {
        if self.is_down() {
            self.counters.dropped_writes.fetch_add(1, Ordering::Relaxed);
            metrics::counter!(METRIC_WRITES, "tier" => TIER, "result" => "dropped").increment(1);
            return;
        }
        match tokio::time::timeout(self.write_timeout, self.op.write(path, data)).await {
            Ok(Ok(_)) => {
                self.counters.writes.fetch_add(1, Ordering::Relaxed);
                metrics::counter!(METRIC_WRITES, "tier" => TIER, "result" => "stored").increment(1);
                self.mark_up();
            }
            Ok(Err(e)) => {
                self.counters.write_errors.fetch_add(1, Ordering::Relaxed);
                metrics::counter!(METRIC_WRITES, "tier" => TIER, "result" => "failed").increment(1);
                self.mark_down("write", &e.to_string());
            }
            Err(_) => {
                self.counters.write_errors.fetch_add(1, Ordering::Relaxed);
                metrics::counter!(METRIC_WRITES, "tier" => TIER, "result" => "failed").increment(1);
                self.mark_down(
                    "write",
                    &format!("timed out after {:?}", self.write_timeout),
                );
            }
        }
    }

    pub(super) fn done_writing(&self) {
        if self.pending.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.drained.notify_waiters();
        }
    }
}

/// Takes queued writes and runs them, a few at a time, until the store is
/// dropped.
pub(super) async fn writer(inner: std::sync::Weak<Inner>, mut rx: mpsc::Receiver<(String, Bytes)>) {
    let slots = Arc::new(Semaphore::new(WRITE_CONCURRENCY));
    while let Some((path, data)) = rx.recv().await {
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        let Some(inner) = inner.upgrade() else {
            return;
        };
        tokio::spawn(async move {
            inner.write(&path, data).await;
            inner.done_writing();
            drop(permit);
        });
    }
}
