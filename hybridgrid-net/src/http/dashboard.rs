//! The coordinator's live dashboard and the APIs behind it:
//!
//! - `GET /`: the dashboard (HTML, CSS and JS embedded in the binary; no
//!   CDN, no external fonts);
//! - `GET /api/v1/tasks?limit=N`: the most recent finished tasks, newest
//!   first (at most the ring's capacity, 200);
//! - `GET /api/v1/snapshot`: what the dashboard shows, as one JSON object;
//! - `GET /api/v1/events`: server-sent events, one `snapshot` event at
//!   once, then every second and shortly after every finished task.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::extract::{Query, State};
use axum::http::header;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Json};
use axum::routing::get;
use futures::Stream;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::watch;

use crate::coordinator::CoordinatorState;

const INDEX_HTML: &str = include_str!("../../assets/dashboard.html");
const DASHBOARD_CSS: &str = include_str!("../../assets/dashboard.css");
const DASHBOARD_JS: &str = include_str!("../../assets/dashboard.js");

/// Tasks in each snapshot.
const SNAPSHOT_TASKS: usize = 25;
/// An event stream ends after this long; browsers reconnect on their own.
/// (So a stream never holds a connection forever.)
const STREAM_MAX: Duration = Duration::from_secs(300);

#[derive(Clone)]
struct Dash {
    state: Arc<CoordinatorState>,
    stop: watch::Receiver<bool>,
}

async fn index() -> impl IntoResponse {
    ([(header::CACHE_CONTROL, "no-cache")], Html(INDEX_HTML))
}

async fn css() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
        DASHBOARD_CSS,
    )
}

async fn js() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        DASHBOARD_JS,
    )
}

#[derive(Deserialize)]
struct TasksQuery {
    limit: Option<usize>,
}

async fn tasks(State(d): State<Dash>, Query(q): Query<TasksQuery>) -> Json<Value> {
    let limit = q.limit.unwrap_or(usize::MAX);
    Json(json!({
        "capacity": d.state.recent.capacity(),
        "tasks": d.state.recent.newest(limit),
    }))
}

/// What the dashboard shows, as one JSON object: `time_ms`, `version`,
/// `stats` (as `/api/stats`), `workers` (as `/api/v1/workers`) and the
/// newest `tasks`.
pub async fn snapshot(state: &Arc<CoordinatorState>) -> Value {
    let stats = super::api_stats(State(state.clone())).await.0;
    let workers = super::api_workers(State(state.clone())).await.0;
    json!({
        "time_ms": SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0),
        "version": crate::VERSION,
        "stats": stats,
        "workers": workers.get("workers").cloned().unwrap_or_else(|| json!([])),
        "tasks": state.recent.newest(SNAPSHOT_TASKS),
    })
}

async fn snapshot_handler(State(d): State<Dash>) -> Json<Value> {
    Json(snapshot(&d.state).await)
}

struct EventLoop {
    d: Dash,
    tasks: watch::Receiver<u64>,
    first: bool,
    until: tokio::time::Instant,
}

async fn events(State(d): State<Dash>) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let st = EventLoop {
        tasks: d.state.recent.subscribe(),
        d,
        first: true,
        until: tokio::time::Instant::now() + STREAM_MAX,
    };
    let stream = futures::stream::unfold(st, |mut st| async move {
        if !st.first {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                r = st.tasks.changed() => {
                    if r.is_err() {
                        return None;
                    }
                    // Coalesce a burst of finished tasks into one event.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                r = st.d.stop.changed() => {
                    if r.is_err() {
                        return None;
                    }
                }
            }
        }
        st.first = false;
        if *st.d.stop.borrow() || tokio::time::Instant::now() >= st.until {
            return None;
        }
        let _ = st.tasks.borrow_and_update();
        let snap = snapshot(&st.d.state).await;
        let ev = Event::default()
            .event("snapshot")
            .retry(Duration::from_secs(1))
            .data(snap.to_string());
        Some((Ok(ev), st))
    });
    Sse::new(stream).keep_alive(KeepAlive::default())
}

/// The dashboard's routes. Event streams end when `stop` turns true, so a
/// graceful shutdown does not wait for open dashboards.
pub fn router(state: Arc<CoordinatorState>, stop: watch::Receiver<bool>) -> Router<()> {
    Router::new()
        .route("/", get(index))
        .route("/assets/dashboard.css", get(css))
        .route("/assets/dashboard.js", get(js))
        .route("/api/v1/tasks", get(tasks))
        .route("/api/v1/snapshot", get(snapshot_handler))
        .route("/api/v1/events", get(events))
        .with_state(Dash { state, stop })
}
