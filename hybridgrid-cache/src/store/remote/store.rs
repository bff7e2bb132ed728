//! The remote tier as a [`CacheStore`](crate::store::CacheStore): lookups,
//! writes, removals and counters.

use std::sync::atomic::Ordering;

use async_trait::async_trait;
use bytes::Bytes;
use opendal::ErrorKind;

use crate::entry::CacheEntry;
use crate::key::CacheKey;
use crate::layer::{METRIC_ERRORS, METRIC_HITS};
use crate::store::{CacheStats, CacheStore, Lookup, PutOutcome};

use super::*;

#[async_trait]
impl CacheStore for RemoteStore {
    async fn get(&self, key: &CacheKey) -> Lookup {
        let inner = &self.inner;
        if inner.is_down() {
            inner.counters.skipped.fetch_add(1, Ordering::Relaxed);
            inner.miss();
            return Lookup::Miss;
        }
        let path = inner.layout.path(key);
        match tokio::time::timeout(inner.timeout, inner.op.read(&path)).await {
            Ok(Ok(buf)) => {
                inner.mark_up();
                match CacheEntry::decode_bytes(buf.to_bytes()) {
                    Ok(entry) => {
                        inner.counters.hits.fetch_add(1, Ordering::Relaxed);
                        metrics::counter!(METRIC_HITS, "tier" => TIER).increment(1);
                        Lookup::Hit(entry)
                    }
                    Err(e) => {
                        inner.counters.corrupt.fetch_add(1, Ordering::Relaxed);
                        inner.counters.errors.fetch_add(1, Ordering::Relaxed);
                        metrics::counter!(METRIC_CORRUPT, "tier" => TIER).increment(1);
                        metrics::counter!(METRIC_ERRORS, "tier" => TIER).increment(1);
                        inner.miss();
                        tracing::warn!(
                            backend = %inner.backend,
                            key = %key,
                            error = %e,
                            "corrupt remote cache entry ignored"
                        );
                        if !inner.read_only {
                            let _ =
                                tokio::time::timeout(inner.timeout, inner.op.delete(&path)).await;
                        }
                        Lookup::Failed
                    }
                }
            }
            Ok(Err(e)) if e.kind() == ErrorKind::NotFound => {
                inner.mark_up();
                inner.miss();
                Lookup::Miss
            }
            Ok(Err(e)) => {
                inner.miss();
                inner.mark_down("read", &e.to_string());
                Lookup::Failed
            }
            Err(_) => {
                inner.miss();
                inner.mark_down("read", &format!("timed out after {:?}", inner.timeout));
                Lookup::Failed
            }
        }
    }

    async fn put(&self, key: &CacheKey, entry: &CacheEntry) -> PutOutcome {
        let inner = &self.inner;
        if inner.read_only {
            return PutOutcome::default();
        }
        let data = Bytes::from(entry.encode());
        inner.pending.fetch_add(1, Ordering::SeqCst);
        match self.queue.try_send((inner.layout.path(key), data)) {
            Ok(()) => PutOutcome {
                stored: true,
                ..PutOutcome::default()
            },
            Err(_) => {
                inner.done_writing();
                inner
                    .counters
                    .dropped_writes
                    .fetch_add(1, Ordering::Relaxed);
                metrics::counter!(METRIC_WRITES, "tier" => TIER, "result" => "dropped")
                    .increment(1);
                tracing::debug!(backend = %inner.backend, "remote cache write queue full; write dropped");
                PutOutcome::default()
            }
        }
    }

    async fn remove(&self, key: &CacheKey) -> bool {
        let inner = &self.inner;
        if inner.read_only || inner.is_down() {
            return false;
        }
        let path = inner.layout.path(key);
        matches!(
            tokio::time::timeout(inner.timeout, inner.op.delete(&path)).await,
            Ok(Ok(()))
        )
    }

    /// Hits, misses and errors; a remote tier has no size limit of ours.
    async fn stats(&self) -> CacheStats {
        let s = self.remote_stats();
        CacheStats {
            hits: s.hits,
            misses: s.misses,
            errors: s.errors,
            ..CacheStats::default()
        }
    }
}
