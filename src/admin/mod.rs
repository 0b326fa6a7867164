//! The control plane: health, metrics, status, reload and approvals, on a
//! listener of its own (loopback by default).
//!
//! `/healthz` and `/metrics` are open; everything under `/v1` needs the
//! admin bearer token, except the approval endpoints (see `approvals`),
//! which approvers may use too, and the pause endpoints (see `pauses`),
//! which operators may use too. `/` and the pages under it are the
//! approver inbox (see `inbox`), signed in with a session cookie.

pub mod approvals;
mod deadline;
pub mod decision;
pub mod events;
pub mod inbox;
pub mod pauses;
pub mod refusal;
pub mod reviews;

use std::sync::Arc;

use arc_swap::ArcSwap;
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;

use crate::approval::{Approvals, CallChecker};
use crate::audit::AuditSink;
use crate::reload::Reloader;
use crate::snapshot::GatewaySnapshot;
use crate::telemetry::Metrics;

#[derive(Clone)]
pub struct AdminState {
    pub live: Arc<ArcSwap<GatewaySnapshot>>,
    pub metrics: Arc<Metrics>,
    pub reloader: Arc<Reloader>,
    pub approvals: Arc<Approvals>,
    pub checker: Arc<dyn CallChecker>,
    pub audit: AuditSink,
    pub overrides: Arc<crate::oversight::Overrides>,
    pub tally: Arc<crate::oversight::CallTally>,
    /// The inbox's signed-in people (see `inbox::session`).
    pub sessions: Arc<inbox::session::Sessions>,
    /// Sampled calls on their way to the store: `/healthz` reports those
    /// dropped.
    pub reviews: crate::sampling::ReviewQueue,
    /// The daily counters, whose failing flushes `/healthz` reports.
    pub counters: Arc<crate::feedback::DailyCounters>,
}

pub fn router(state: AdminState) -> Router {
    let v1 = Router::new()
        .route("/v1/status", get(status))
        .route("/v1/reload", post(reload))
        .route(
            "/v1/webhooks/deliveries",
            get(approvals::deliveries).layer(middleware::from_fn_with_state(
                state.clone(),
                deadline::within_store_timeout,
            )),
        )
        .route_layer(middleware::from_fn_with_state(state.clone(), require_admin));
    let approval_routes = Router::new()
        .route("/v1/approvals", get(approvals::list))
        .route("/v1/approvals/{id}", get(approvals::show))
        .route("/v1/approvals/{id}/decision", post(decision::decide))
        // Reviewers are checked by the handlers (`reviews`).
        .route("/v1/reviews", get(reviews::list))
        .route("/v1/reviews/next", post(reviews::claim_next))
        .route("/v1/reviews/{id}", get(reviews::show))
        .route("/v1/reviews/{id}/claim", post(reviews::claim))
        .route("/v1/reviews/{id}/verdict", post(reviews::verdict))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            deadline::within_store_timeout,
        ));
    // Operators' endpoints check their own callers (`pauses`).
    let pause_routes = Router::new()
        .route("/v1/agents", get(pauses::agents))
        .route("/v1/agents/{id}/pause", post(pauses::pause_agent))
        .route("/v1/agents/{id}/resume", post(pauses::resume_agent))
        .route("/v1/routes/{name}/pause", post(pauses::pause_route))
        .route("/v1/routes/{name}/resume", post(pauses::resume_route))
        .route(
            "/v1/routes/{name}/tools/{tool}/pause",
            post(pauses::pause_tool),
        )
        .route(
            "/v1/routes/{name}/tools/{tool}/resume",
            post(pauses::resume_tool),
        )
        .route("/v1/pause", post(pauses::pause_all))
        .route("/v1/resume", post(pauses::resume_all))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            deadline::within_store_timeout,
        ));
    Router::new()
        .merge(approval_routes)
        .merge(pause_routes)
        // The live view checks its own readers (`events`) and is long-lived:
        // no store deadline.
        .route("/v1/events", get(events::events))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .merge(v1)
        .merge(inbox::routes())
        .fallback(|| async { error(StatusCode::NOT_FOUND, "not_found", "no such endpoint") })
        .with_state(state)
}

/// A JSON error in the same shape the proxy uses.
pub fn error(status: StatusCode, kind: &str, message: impl Into<String>) -> Response {
    let mut resp = (
        status,
        Json(json!({"error": kind, "message": message.into()})),
    )
        .into_response();
    // A store that did not answer (restarting, locked) is worth a retry
    // soon, as on the agents' side.
    if kind == "store_unavailable" {
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    resp
}

/// The bearer token from a request, if any.
pub fn bearer(req_headers: &axum::http::HeaderMap) -> Option<&str> {
    let v = req_headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim())
}

async fn require_admin(State(state): State<AdminState>, req: Request, next: Next) -> Response {
    let snap = state.live.load();
    let Some(expected) = snap.config.admin.token_sha256 else {
        return error(
            StatusCode::FORBIDDEN,
            "admin_disabled",
            "no `admin.token` is configured, so the admin API is closed",
        );
    };
    match bearer(req.headers()) {
        Some(t) if constant_time_eq(&crate::config::sha256(t.as_bytes()), &expected) => {
            next.run(req).await
        }
        _ => error(
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            "send `Authorization: Bearer <admin token>`",
        ),
    }
}

/// Compares two digests without an early exit.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// 503 with the reason while the audit sink cannot take records: a load
/// balancer then steers calls to a replica that can record them.
/// Sampled calls dropped (queue full, store refused) and daily counters
/// the store has not taken are reported too, without failing the check.
async fn healthz(State(state): State<AdminState>) -> Response {
    if let Some(why) = state.audit.trouble() {
        return error(StatusCode::SERVICE_UNAVAILABLE, "audit_unavailable", why);
    }
    // Still 200 with a loss or a delay said: calls are served and audited;
    // taking the replica out of rotation would not bring the store back.
    let mut body = String::from("ok\n");
    let dropped = state.reviews.dropped();
    if dropped > 0 {
        body.push_str(&format!("sampling: {dropped} sampled calls were not kept for review (the review queue was full or the store refused them)\n"));
    }
    if let Some(t) = state.counters.trouble() {
        body.push_str(&format!(
            "degraded: daily counters not stored since {} ({}); {} counts kept in memory and retried\n",
            crate::clock::ms_to_rfc3339(t.since_ms),
            t.error,
            t.kept
        ));
    }
    body.into_response()
}

async fn metrics(State(state): State<AdminState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.encode(),
    )
        .into_response()
}

async fn status(State(state): State<AdminState>) -> Response {
    let snap = state.live.load();
    let reload = state.reloader.status();
    Json(json!({
        "version": snap.policy.version().as_ref(),
        "loaded_at": crate::clock::rfc3339(snap.policy.loaded_at()),
        "policies": snap.policy.policy_count(),
        "agents": snap.config.agents.len(),
        "routes": snap.config.routes.iter().map(|r| json!({"name": r.name, "prefix": r.prefix})).collect::<Vec<_>>(),
        "last_error": reload.last_error,
        "last_reload_attempt": reload.last_attempt,
        "restart_required": reload.restart_required,
    }))
    .into_response()
}

async fn reload(State(state): State<AdminState>) -> Response {
    // Like SIGHUP: a reload also reopens the audit file after rotation.
    state.audit.reopen();
    match state.reloader.reload().await {
        Ok(outcome) => Json(outcome).into_response(),
        Err(problems) => (
            StatusCode::UNPROCESSABLE_ENTITY,
            Json(json!({
                "error": "reload_failed",
                "message": "the new configuration or policies did not load; the last good snapshot keeps serving",
                "problems": problems,
            })),
        )
            .into_response(),
    }
}
