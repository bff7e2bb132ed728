//! [`CacheLayer`]: a tower layer that answers compiles from a store.
//!
//! On a hit the stored result comes back with `from_cache = true` and the
//! inner service is not called. On a miss the inner service runs, and a
//! successful result ([`CacheEntry::is_cacheable`]) is stored before the
//! response is returned. The cache never fails a request: a task whose
//! input cannot be hashed, a lookup that fails or a write that is skipped
//! simply goes through to the inner service, and is counted.
//!
//! Metrics (via the `metrics` facade): `hybridgrid_cache_hits_total`,
//! `hybridgrid_cache_misses_total`, `hybridgrid_cache_evictions_total`,
//! `hybridgrid_cache_errors_total` and the gauge
//! `hybridgrid_cache_size_bytes`.

use std::sync::Arc;
use std::task::{Context, Poll};

use futures::future::BoxFuture;
use hybridgrid_core::error::BoxError;
use hybridgrid_core::task::{CompileOutput, CompileTask};
use tower::{Layer, Service};

use crate::entry::CacheEntry;
use crate::key::CacheKey;
use crate::store::{CacheStore, Lookup};

/// Counter: lookups answered from the cache.
pub const METRIC_HITS: &str = "hybridgrid_cache_hits_total";
/// Counter: lookups that found nothing.
pub const METRIC_MISSES: &str = "hybridgrid_cache_misses_total";
/// Counter: entries evicted to stay under the limit.
pub const METRIC_EVICTIONS: &str = "hybridgrid_cache_evictions_total";
/// Counter: corrupt entries, failed lookups and unhashable tasks.
pub const METRIC_ERRORS: &str = "hybridgrid_cache_errors_total";
/// Gauge: bytes in the store.
pub const METRIC_SIZE: &str = "hybridgrid_cache_size_bytes";

/// Wraps a compile service in a [`Cache`] backed by one store.
#[derive(Clone)]
pub struct CacheLayer {
    store: Arc<dyn CacheStore>,
}

impl CacheLayer {
    /// A layer over `store`.
    pub fn new(store: impl CacheStore + 'static) -> Self {
        CacheLayer {
            store: Arc::new(store),
        }
    }

    /// A layer over a shared store (e.g. one the HTTP API also reads
    /// stats from).
    pub fn from_arc(store: Arc<dyn CacheStore>) -> Self {
        CacheLayer { store }
    }
}

impl std::fmt::Debug for CacheLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CacheLayer").finish_non_exhaustive()
    }
}

impl<S> Layer<S> for CacheLayer {
    type Service = Cache<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Cache {
            inner,
            store: self.store.clone(),
        }
    }
}

/// A compile service that consults a store before its inner service.
#[derive(Clone)]
pub struct Cache<S> {
    inner: S,
    store: Arc<dyn CacheStore>,
}

impl<S> Cache<S> {
    /// Wraps `inner` with `store`.
    pub fn new(inner: S, store: Arc<dyn CacheStore>) -> Self {
        Cache { inner, store }
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn CacheStore> {
        &self.store
    }
}

impl<S: std::fmt::Debug> std::fmt::Debug for Cache<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cache")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl<S> Service<CompileTask> for Cache<S>
where
    S: Service<CompileTask, Response = CompileOutput, Error = BoxError> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = CompileOutput;
    type Error = BoxError;
    type Future = BoxFuture<'static, Result<CompileOutput, BoxError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, task: CompileTask) -> Self::Future {
        // Take the service that was driven to readiness; leave a clone.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let store = self.store.clone();
        Box::pin(async move {
            let key = match CacheKey::for_task(&task) {
                Ok(k) => Some(k),
                Err(err) => {
                    tracing::debug!(task_id = %task.id, error = %err, "task not cacheable");
                    metrics::counter!(METRIC_ERRORS).increment(1);
                    None
                }
            };
            if let Some(key) = &key {
                match store.get(key).await {
                    Lookup::Hit(entry) => {
                        metrics::counter!(METRIC_HITS).increment(1);
                        tracing::debug!(task_id = %task.id, key = %key, "cache hit");
                        return Ok(entry.to_output());
                    }
                    Lookup::Miss => metrics::counter!(METRIC_MISSES).increment(1),
                    Lookup::Failed => {
                        metrics::counter!(METRIC_MISSES).increment(1);
                        metrics::counter!(METRIC_ERRORS).increment(1);
                    }
                }
            }
            let output = inner.call(task).await?;
            if let Some(key) = &key {
                if CacheEntry::is_cacheable(&output) {
                    let put = store.put(key, &CacheEntry::from_output(&output)).await;
                    if put.evicted > 0 {
                        metrics::counter!(METRIC_EVICTIONS).increment(put.evicted);
                    }
                    metrics::gauge!(METRIC_SIZE).set(put.size_bytes as f64);
                }
            }
            Ok(output)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{CacheStats, MemoryStore, PutOutcome};
    use async_trait::async_trait;
    use bytes::Bytes;
    use hybridgrid_core::payload::{Encoding, Payload};
    use hybridgrid_core::task::{
        CompilerFamily, CompilerIdentity, DriverKind, Language, OutputFile, OutputKind,
    };
    use std::collections::HashMap;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
    use tower::ServiceExt;

    fn task(src: &str) -> CompileTask {
        let gcc = CompilerIdentity {
            family: CompilerFamily::Gcc,
            driver: DriverKind::C,
            version: "12.2.0".into(),
            target: "x86_64-linux-gnu".into(),
        };
        CompileTask::new(
            gcc,
            Language::PreprocessedC,
            vec!["-O2".into()],
            "x.c",
            Payload::raw(src.as_bytes().to_vec()),
        )
    }

    /// A compiler that "fails" when the source contains `error`.
    #[derive(Clone, Default)]
    struct FakeCompiler {
        calls: Arc<AtomicUsize>,
    }

    impl Service<CompileTask> for FakeCompiler {
        type Response = CompileOutput;
        type Error = BoxError;
        type Future = BoxFuture<'static, Result<CompileOutput, BoxError>>;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, task: CompileTask) -> Self::Future {
            self.calls.fetch_add(1, Ordering::SeqCst);
            Box::pin(async move {
                let src = task.input.decode()?;
                let mut out = CompileOutput::default();
                if src.windows(5).any(|w| w == b"error") {
                    out.exit_code = 1;
                    out.stderr = Bytes::from_static(b"x.c:1: error: boom\n");
                } else {
                    out.stderr = Bytes::from_static(b"x.c:1: warning: hm\n");
                    out.outputs.push(OutputFile {
                        kind: OutputKind::Object,
                        data: Payload::raw(src.to_vec()),
                    });
                }
                Ok(out)
            })
        }
    }

    #[tokio::test]
    async fn hit_skips_the_inner_service() {
        let compiler = FakeCompiler::default();
        let calls = compiler.calls.clone();
        let mut svc = CacheLayer::new(MemoryStore::new(1 << 20)).layer(compiler);

        let first = svc
            .ready()
            .await
            .unwrap()
            .call(task("int x;"))
            .await
            .unwrap();
        assert!(!first.from_cache);
        let second = svc
            .ready()
            .await
            .unwrap()
            .call(task("int x;"))
            .await
            .unwrap();
        assert!(second.from_cache);
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert_eq!(second.stderr, first.stderr);
        let obj = |o: &CompileOutput| {
            o.output(OutputKind::Object)
                .map(|f| f.data.decode().unwrap())
        };
        assert_eq!(obj(&second), obj(&first));

        svc.ready()
            .await
            .unwrap()
            .call(task("int y;"))
            .await
            .unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        let stats = svc.store().stats().await;
        assert_eq!((stats.hits, stats.misses, stats.entries), (1, 2, 2));
    }

    #[tokio::test]
    async fn failures_are_not_cached() {
        let compiler = FakeCompiler::default();
        let calls = compiler.calls.clone();
        let mut svc = CacheLayer::new(MemoryStore::new(1 << 20)).layer(compiler);
        for _ in 0..2 {
            let out = svc
                .ready()
                .await
                .unwrap()
                .call(task("error"))
                .await
                .unwrap();
            assert_eq!(out.exit_code, 1);
            assert!(!out.from_cache);
        }
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        assert_eq!(svc.store().stats().await.entries, 0);
    }

    /// A store that fails everything.
    struct BrokenStore;

    #[async_trait]
    impl CacheStore for BrokenStore {
        async fn get(&self, _: &CacheKey) -> Lookup {
            Lookup::Failed
        }
        async fn put(&self, _: &CacheKey, _: &CacheEntry) -> PutOutcome {
            PutOutcome::default()
        }
        async fn remove(&self, _: &CacheKey) -> bool {
            false
        }
        async fn stats(&self) -> CacheStats {
            CacheStats::default()
        }
    }

    #[tokio::test]
    async fn cache_errors_never_fail_the_request() {
        let compiler = FakeCompiler::default();
        let calls = compiler.calls.clone();
        let mut svc = CacheLayer::new(BrokenStore).layer(compiler.clone());
        let out = svc
            .ready()
            .await
            .unwrap()
            .call(task("int x;"))
            .await
            .unwrap();
        assert!(out.success() && !out.from_cache);

        // An unusable disk cache behaves the same.
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("f"), b"").unwrap();
        let disk = crate::store::DiskStore::new(dir.path().join("f").join("c"), 1 << 20);
        let mut svc = CacheLayer::new(disk).layer(compiler);
        for _ in 0..2 {
            let out = svc
                .ready()
                .await
                .unwrap()
                .call(task("int x;"))
                .await
                .unwrap();
            assert!(out.success() && !out.from_cache);
        }
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn unhashable_input_goes_to_the_inner_service() {
        let compiler = FakeCompiler::default();
        let calls = compiler.calls.clone();
        let mut svc = CacheLayer::new(MemoryStore::new(1 << 20)).layer(compiler);
        let mut t = task("");
        t.input = Payload::from_parts(Encoding::Zstd, Bytes::from_static(b"junk"), 10);
        // The inner service sees the bad payload and reports it.
        assert!(svc.ready().await.unwrap().call(t).await.is_err());
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    /// A minimal recorder: counters and gauges by name.
    #[derive(Default)]
    struct Recorder {
        values: Mutex<HashMap<String, Arc<AtomicU64>>>,
    }

    impl Recorder {
        fn handle(&self, key: &metrics::Key) -> Arc<AtomicU64> {
            let mut v = self.values.lock().unwrap();
            v.entry(key.name().to_string()).or_default().clone()
        }
        fn counter(&self, name: &str) -> u64 {
            let v = self.values.lock().unwrap();
            v.get(name).map_or(0, |a| a.load(Ordering::SeqCst))
        }
        fn gauge(&self, name: &str) -> f64 {
            f64::from_bits(self.counter(name))
        }
    }

    impl metrics::Recorder for Recorder {
        fn describe_counter(
            &self,
            _: metrics::KeyName,
            _: Option<metrics::Unit>,
            _: metrics::SharedString,
        ) {
        }
        fn describe_gauge(
            &self,
            _: metrics::KeyName,
            _: Option<metrics::Unit>,
            _: metrics::SharedString,
        ) {
        }
        fn describe_histogram(
            &self,
            _: metrics::KeyName,
            _: Option<metrics::Unit>,
            _: metrics::SharedString,
        ) {
        }
        fn register_counter(
            &self,
            key: &metrics::Key,
            _: &metrics::Metadata<'_>,
        ) -> metrics::Counter {
            metrics::Counter::from_arc(self.handle(key))
        }
        fn register_gauge(&self, key: &metrics::Key, _: &metrics::Metadata<'_>) -> metrics::Gauge {
            metrics::Gauge::from_arc(self.handle(key))
        }
        fn register_histogram(
            &self,
            _: &metrics::Key,
            _: &metrics::Metadata<'_>,
        ) -> metrics::Histogram {
            metrics::Histogram::noop()
        }
    }

    #[test]
    fn metrics_are_recorded() {
        let recorder = Recorder::default();
        let one = CacheEntry::from_output(&{
            let mut o = CompileOutput::default();
            o.stderr = Bytes::from_static(b"x.c:1: warning: hm\n");
            o.outputs.push(OutputFile {
                kind: OutputKind::Object,
                data: Payload::raw(&b"int a;"[..]),
            });
            o
        })
        .encoded_len() as u64;
        metrics::with_local_recorder(&recorder, || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .build()
                .unwrap();
            rt.block_on(async {
                // Room for exactly one entry of this size: the second
                // distinct task evicts the first.
                let mut svc = CacheLayer::new(MemoryStore::new(one)).layer(FakeCompiler::default());
                for src in ["int a;", "int a;", "int b;"] {
                    svc.ready().await.unwrap().call(task(src)).await.unwrap();
                }
                let mut t = task("");
                t.input = Payload::from_parts(Encoding::Zstd, Bytes::from_static(b"junk"), 10);
                let _ = svc.ready().await.unwrap().call(t).await;
            });
        });
        assert_eq!(recorder.counter(METRIC_HITS), 1);
        assert_eq!(recorder.counter(METRIC_MISSES), 2);
        assert_eq!(recorder.counter(METRIC_EVICTIONS), 1);
        assert_eq!(recorder.counter(METRIC_ERRORS), 1);
        assert_eq!(recorder.gauge(METRIC_SIZE), one as f64);
    }
}
