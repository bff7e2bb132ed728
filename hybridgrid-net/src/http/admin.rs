//! Admin endpoints of both servers, kept together so that one
//! authorization layer can guard them all:
//!
//! - `GET /api/v1/log-level`: the current level or filter, as text;
//! - `PUT /api/v1/log-level` with a body such as `debug` or
//!   `info,hybridgrid_net=debug`: changes it at once;
//! - `GET /debug/pprof/heap`: a heap profile in pprof format (gzip'd
//!   protobuf, as `go tool pprof` reads it), when the binary was built with
//!   heap profiling; `501 Not Implemented` otherwise.
//!
//! With a token ([`AdminHooks::token`], from `auth.enabled`) every admin
//! request must carry `Authorization: Bearer <token>`; others get
//! `401 Unauthorized` with the reason.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use hybridgrid_core::logging::LogHandle;

/// The future a heap profile hook returns: the gzip'd pprof bytes, or why
/// there are none.
pub type HeapProfileFuture = Pin<Box<dyn Future<Output = Result<Vec<u8>, String>> + Send>>;

/// Produces a heap profile. The allocator lives in the binaries; they hand
/// the HTTP layer this hook so this crate needs no allocator of its own.
pub type HeapProfileFn = Arc<dyn Fn() -> HeapProfileFuture + Send + Sync>;

/// What the admin endpoints act on.
#[derive(Clone, Default)]
pub struct AdminHooks {
    /// The process's log filter (from `hybridgrid_core::logging::init`);
    /// without it the log level cannot be changed.
    pub log: Option<LogHandle>,
    /// The heap profiler; without it `/debug/pprof/heap` answers 501.
    pub heap_profile: Option<HeapProfileFn>,
    /// The token admin requests must carry (none: auth off).
    pub token: Option<crate::auth::Token>,
}

impl std::fmt::Debug for AdminHooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminHooks")
            .field("log", &self.log)
            .field("heap_profile", &self.heap_profile.is_some())
            .field("token", &self.token.is_some())
            .finish()
    }
}

impl AdminHooks {
    /// Hooks with a log handle and, if given, a heap profiler.
    pub fn new(log: LogHandle, heap_profile: Option<HeapProfileFn>) -> Self {
        AdminHooks {
            log: Some(log),
            heap_profile,
            token: None,
        }
    }

    /// The same requiring `token` on every admin request.
    pub fn with_token(mut self, token: Option<crate::auth::Token>) -> Self {
        self.token = token;
        self
    }
}

async fn require_token(
    State(token): State<Option<crate::auth::Token>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    if let Some(t) = &token
        && let Err(r) = crate::auth::check(
            t,
            req.headers()
                .get(header::AUTHORIZATION)
                .map(|v| v.as_bytes()),
        )
    {
        tracing::warn!(path = %req.uri().path(), reason = ?r, "admin request refused: unauthenticated");
        return (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            format!("{}\n", r.message()),
        )
            .into_response();
    }
    next.run(req).await
}

const NOT_BUILT: &str = "heap profiling is not available in this process: hg-coord and hg-worker \
serve /debug/pprof/heap when built with the default `heap-profile` feature (jemalloc); a program \
embedding the servers installs a profiler (hybridgrid_net::heap_profiling_allocator! and \
hybridgrid_net::heap::install)\n";

async fn get_level(State(h): State<AdminHooks>) -> Response {
    match &h.log {
        Some(l) => (StatusCode::OK, format!("{}\n", l.level())).into_response(),
        None => (
            StatusCode::NOT_IMPLEMENTED,
            "this process's logging is not managed by hybridgrid\n",
        )
            .into_response(),
    }
}

async fn put_level(State(h): State<AdminHooks>, body: String) -> Response {
    let Some(l) = &h.log else {
        return (
            StatusCode::NOT_IMPLEMENTED,
            "this process's logging is not managed by hybridgrid\n",
        )
            .into_response();
    };
    let level = body.trim();
    if level.is_empty() {
        return (
            StatusCode::BAD_REQUEST,
            "send the level as the body, e.g. `debug` or `info,hybridgrid_net=debug`\n",
        )
            .into_response();
    }
    let old = l.level();
    match l.set_level(level) {
        Ok(()) => {
            tracing::warn!(old = %old, new = %level, "log level changed");
            (StatusCode::OK, format!("{level}\n")).into_response()
        }
        Err(e) => (
            StatusCode::BAD_REQUEST,
            format!("invalid log level {level:?}: {e}\n"),
        )
            .into_response(),
    }
}

async fn heap(State(h): State<AdminHooks>) -> Response {
    let Some(f) = &h.heap_profile else {
        return (StatusCode::NOT_IMPLEMENTED, NOT_BUILT).into_response();
    };
    match f().await {
        Ok(bytes) => (
            [
                (header::CONTENT_TYPE, "application/octet-stream"),
                (
                    header::CONTENT_DISPOSITION,
                    "attachment; filename=\"heap.pb.gz\"",
                ),
            ],
            bytes,
        )
            .into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot take a heap profile: {e}\n"),
        )
            .into_response(),
    }
}

/// The admin routes.
pub fn router(hooks: AdminHooks) -> Router<()> {
    let token = hooks.token.clone();
    Router::new()
        .route("/api/v1/log-level", get(get_level).put(put_level))
        .route("/debug/pprof/heap", get(heap))
        .route_layer(axum::middleware::from_fn_with_state(token, require_token))
        .with_state(hooks)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;

    async fn call(r: Router<()>, method: &str, path: &str, body: &str) -> (StatusCode, String) {
        let req = Request::builder()
            .method(method)
            .uri(path)
            .body(Body::from(body.to_owned()))
            .expect("request");
        let resp = r.oneshot(req).await.expect("response");
        let status = resp.status();
        let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .expect("body");
        (status, String::from_utf8_lossy(&bytes).into_owned())
    }

    #[tokio::test]
    async fn heap_without_profiler_is_501() {
        let (s, body) = call(
            router(AdminHooks::default()),
            "GET",
            "/debug/pprof/heap",
            "",
        )
        .await;
        assert_eq!(s, StatusCode::NOT_IMPLEMENTED);
        assert!(body.contains("heap-profile"), "{body}");
    }

    #[tokio::test]
    async fn heap_with_profiler() {
        let f: HeapProfileFn =
            Arc::new(|| -> HeapProfileFuture { Box::pin(async { Ok(vec![0x1f, 0x8b, 1]) }) });
        let r = router(AdminHooks::new(LogHandle::detached(), Some(f)));
        let (s, body) = call(r, "GET", "/debug/pprof/heap", "").await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(body.as_bytes()[0], 0x1f);
    }

    #[tokio::test]
    async fn token_guards_every_admin_route() {
        let token = crate::auth::Token::new("adm1n-t0ken").unwrap();
        let r = router(AdminHooks::new(LogHandle::detached(), None).with_token(Some(token)));
        for (m, p) in [
            ("GET", "/api/v1/log-level"),
            ("PUT", "/api/v1/log-level"),
            ("GET", "/debug/pprof/heap"),
        ] {
            let (s, body) = call(r.clone(), m, p, "debug").await;
            assert_eq!(s, StatusCode::UNAUTHORIZED, "{m} {p}");
            assert!(body.starts_with("missing auth token"), "{body}");
        }
        let req = |tok: &str| {
            Request::builder()
                .method("PUT")
                .uri("/api/v1/log-level")
                .header("authorization", format!("Bearer {tok}"))
                .body(Body::from("debug"))
                .expect("request")
        };
        let resp = r.clone().oneshot(req("nope")).await.expect("response");
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
        let resp = r.oneshot(req("adm1n-t0ken")).await.expect("response");
        assert_eq!(resp.status(), StatusCode::OK);
    }

    #[tokio::test]
    async fn log_level_round_trip() {
        let r = router(AdminHooks::new(LogHandle::detached(), None));
        let (s, _) = call(r.clone(), "PUT", "/api/v1/log-level", "debug\n").await;
        assert_eq!(s, StatusCode::OK);
        let (s, body) = call(r.clone(), "GET", "/api/v1/log-level", "").await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(body.trim(), "debug");
        let (s, body) = call(r, "PUT", "/api/v1/log-level", "info,x=bogus").await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{body}");
    }
}
