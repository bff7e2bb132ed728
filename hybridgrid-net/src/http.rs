//! HTTP endpoints: `/health`, `/metrics` (Prometheus), and on the
//! coordinator `/api/stats` and `/api/v1/workers`; the dashboard and its
//! APIs ([`dashboard`]) and the admin endpoints ([`admin`]: log level, heap
//! profile). [`coordinator_app`] and [`worker_app`] compose all of them.

pub mod admin;
pub mod dashboard;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Json};
use axum::routing::get;
use axum::serve::ListenerExt;
use serde_json::json;
use tokio::net::TcpListener;

pub use crate::metrics::{DURATION_BUCKETS, metrics_handle};

use crate::coordinator::CoordinatorState;
use crate::server::ServeError;
use crate::worker::WorkerServer;

async fn health() -> impl IntoResponse {
    (StatusCode::OK, "OK")
}

async fn metrics_text() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        metrics_handle().render(),
    )
}

/// Refreshes state gauges just before `/metrics` renders.
type Refresh = Arc<dyn Fn() + Send + Sync>;

/// `metrics_path` empty: no metrics endpoint (`metrics.enabled: false`).
fn base_router(metrics_path: &str, refresh: Refresh) -> Router<()> {
    let r = Router::new().route("/health", get(health));
    if metrics_path.is_empty() {
        return r;
    }
    let _ = metrics_handle();
    r.route(
        metrics_path,
        get(move || {
            refresh();
            metrics_text()
        }),
    )
}

pub(crate) async fn api_stats(State(st): State<Arc<CoordinatorState>>) -> Json<serde_json::Value> {
    let s = st.stats();
    let rate = if s.cache_hits + s.cache_misses == 0 {
        0.0
    } else {
        s.cache_hits as f64 / (s.cache_hits + s.cache_misses) as f64
    };
    let mut cache = json!({ "hits": s.cache_hits, "misses": s.cache_misses, "hit_rate": rate });
    if let (Some(serde_json::Value::Object(tiers)), Some(c)) =
        (st.cache_tiers.report(), cache.as_object_mut())
    {
        c.extend(tiers);
    }
    Json(json!({
        "workers": {
            "total": s.workers_total,
            "healthy": s.workers_healthy,
            "unhealthy": s.workers_total - s.workers_healthy,
        },
        "tasks": {
            "active": s.tasks_active,
            "queued": s.tasks_queued,
            "total": s.tasks_total,
            "successful": s.tasks_successful,
            "failed": s.tasks_failed,
        },
        "cache": cache,
        "uptime_seconds": s.uptime_seconds,
    }))
}

pub(crate) async fn api_workers(
    State(st): State<Arc<CoordinatorState>>,
) -> Json<serde_json::Value> {
    let list: Vec<serde_json::Value> = st
        .pool
        .entries()
        .iter()
        .map(|e| {
            let c = &e.info.capabilities;
            json!({
                "id": e.info.id.0,
                "address": e.info.address,
                "arch": c.arch.as_ref().map(|a| a.to_string()).unwrap_or_default(),
                "os": c.os,
                "cores": c.cores,
                "memory": c.memory_bytes,
                "compilers": c.compilers.iter().map(|ci| json!({
                    "name": ci.name,
                    "family": ci.identity.family.as_str(),
                    "version": ci.identity.version,
                    "target": ci.identity.target,
                })).collect::<Vec<_>>(),
                "docker_images": c.docker_images.iter().map(|d| json!({
                    "arch": d.arch.to_string(), "image": d.image,
                })).collect::<Vec<_>>(),
                "max_parallel_tasks": c.max_parallel_tasks,
                "source": e.info.source.as_str(),
                "circuit_state": e.circuit_state(),
                "active_tasks": e.active(),
                "completed": e.completed(),
                "failed": e.failed(),
                "average_latency_ms": e.avg_latency_ms(),
                "version": e.info.version,
            })
        })
        .collect();
    Json(json!({ "workers": list }))
}

/// The coordinator's HTTP router.
pub fn coordinator_router(state: Arc<CoordinatorState>, metrics_path: &str) -> Router<()> {
    let api = Router::new()
        .route("/api/stats", get(api_stats))
        .route("/api/v1/workers", get(api_workers))
        .with_state(state.clone());
    crate::metrics::register(crate::metrics::Role::Coordinator);
    let refresh: Refresh = Arc::new(move || crate::obs::refresh_coordinator(&state));
    base_router(metrics_path, refresh).merge(api)
}

/// Everything the coordinator serves over HTTP: [`coordinator_router`],
/// the dashboard (whose event streams end when `stop` turns true) and the
/// admin endpoints.
pub fn coordinator_app(
    state: Arc<CoordinatorState>,
    metrics_path: &str,
    admin: admin::AdminHooks,
    stop: tokio::sync::watch::Receiver<bool>,
) -> Router<()> {
    coordinator_router(state.clone(), metrics_path)
        .merge(dashboard::router(state, stop))
        .merge(admin::router(admin))
}

async fn worker_status(State(w): State<WorkerServer>) -> impl IntoResponse {
    let c = w.counters();
    Json(json!({
        "id": w.info().id.0,
        "active_tasks": c.active.load(Ordering::Relaxed),
        "queued_tasks": c.queued.load(Ordering::Relaxed),
        "completed": c.completed.load(Ordering::Relaxed),
        "failed": c.failed.load(Ordering::Relaxed),
        "max_parallel_tasks": w.info().capabilities.max_parallel_tasks,
    }))
}

/// The worker's HTTP router.
pub fn worker_router(worker: WorkerServer, metrics_path: &str) -> Router<()> {
    let api = Router::new()
        .route("/api/status", get(worker_status))
        .with_state(worker.clone());
    crate::metrics::register(crate::metrics::Role::Worker);
    let refresh: Refresh = Arc::new(move || crate::obs::refresh_worker(&worker));
    base_router(metrics_path, refresh).merge(api)
}

/// Everything the worker serves over HTTP: [`worker_router`] and the admin
/// endpoints.
pub fn worker_app(
    worker: WorkerServer,
    metrics_path: &str,
    admin: admin::AdminHooks,
) -> Router<()> {
    worker_router(worker, metrics_path).merge(admin::router(admin))
}

/// ALPN of the HTTP endpoints over TLS.
pub const HTTP_ALPN: &[&[u8]] = &[b"h2", b"http/1.1"];

/// [`serve`] over TLS when `tls` is set (the server's certificate; no
/// client certificate is asked for, so health checks and Prometheus need
/// only the CA to connect).
pub async fn serve_with(
    listener: TcpListener,
    router: Router<()>,
    tls: Option<Arc<crate::tls::ServerTls>>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    match tls {
        Some(tls) => axum::serve(tls.incoming(listener, HTTP_ALPN, false), router)
            .with_graceful_shutdown(shutdown)
            .await
            .map_err(ServeError::Http),
        None => serve(listener, router, shutdown).await,
    }
}

/// Serves `router` on `listener` until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    router: Router<()>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    // Without TCP_NODELAY a response written in two parts (headers, then
    // the body) waits for the client's delayed ACK.
    let listener = listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY");
        }
    });
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(ServeError::Http)
}
