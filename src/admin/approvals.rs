//! The approval endpoints on the admin listener:
//!
//! - `GET /v1/approvals?status=pending&limit=N`, `GET /v1/approvals/{id}`:
//!   the admin token or an approver's token;
//! - `POST /v1/approvals/{id}/decision` with
//!   `{"decision": "approve"|"deny", "reason", "body"|"arguments"}`: the
//!   admin token, an approver's token, or a callback signed under Standard
//!   Webhooks rules with `approvals.callback_secret` (then `"approver"` in
//!   the body names the configured approver who decided);
//! - `GET /v1/webhooks/deliveries`: the outbox, admin token only.
//!
//! An agent's key never decides (403). Every refusal is a JSON error and
//! changes nothing.

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{bearer, constant_time_eq, error, AdminState};
use crate::approval::{now_ms, ApprovalError, Decider, DecisionInput};
use crate::audit::{rfc3339, AuditRecord};
use crate::notify::payload::{ms_to_rfc3339, redact};
use crate::notify::signing;
use crate::store::{HoldRecord, HoldState};

#[derive(Deserialize)]
pub struct ListQuery {
    status: Option<String>,
    limit: Option<u32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DecisionBody {
    decision: String,
    reason: Option<String>,
    /// REST: the replacement request body.
    body: Option<Value>,
    /// MCP: the replacement tool arguments.
    arguments: Option<Value>,
    /// For signed callbacks: the configured approver who decided.
    approver: Option<String>,
}

/// Who a bearer token belongs to.
enum Caller {
    Admin,
    Approver(Decider),
}

/// The caller named by the bearer token; the refusal is boxed, being large.
fn bearer_caller(state: &AdminState, headers: &HeaderMap) -> Result<Option<Caller>, Box<Response>> {
    let Some(token) = bearer(headers) else {
        return Ok(None);
    };
    let digest = crate::config::sha256(token.as_bytes());
    let snap = state.live.load();
    if snap
        .config
        .admin
        .token_sha256
        .is_some_and(|t| constant_time_eq(&t, &digest))
    {
        return Ok(Some(Caller::Admin));
    }
    if let Some(a) = snap
        .config
        .approvers
        .iter()
        .find(|a| constant_time_eq(&a.token_sha256, &digest))
    {
        return Ok(Some(Caller::Approver(Decider {
            id: a.id.clone(),
            groups: a.groups.clone(),
            any_group: false,
        })));
    }
    if snap.agent_by_key(&digest).is_some() {
        return Err(Box::new(error(
            StatusCode::FORBIDDEN,
            "agent_cannot_decide",
            "an agent's key can never read or decide approvals",
        )));
    }
    Err(Box::new(unauthenticated()))
}

fn unauthenticated() -> Response {
    error(
        StatusCode::UNAUTHORIZED,
        "unauthenticated",
        "send `Authorization: Bearer <approver or admin token>`",
    )
}

fn admin_decider() -> Decider {
    Decider {
        id: "admin".into(),
        groups: Vec::new(),
        any_group: true,
    }
}

pub async fn list(
    State(state): State<AdminState>,
    headers: HeaderMap,
    Query(q): Query<ListQuery>,
) -> Response {
    match bearer_caller(&state, &headers) {
        Ok(Some(_)) => {}
        Ok(None) => return unauthenticated(),
        Err(resp) => return *resp,
    }
    let status = match q.status.as_deref() {
        None | Some("all") => None,
        Some(s) => match HoldState::parse(s) {
            Some(s) => Some(s),
            None => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "bad_status",
                    format!("unknown status `{s}`"),
                )
            }
        },
    };
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    match state.approvals.store().list(status, limit).await {
        Ok(holds) => Json(json!({
            "approvals": holds.iter().map(view).collect::<Vec<_>>(),
        }))
        .into_response(),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, "store", e.to_string()),
    }
}

pub async fn show(
    State(state): State<AdminState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    match bearer_caller(&state, &headers) {
        Ok(Some(_)) => {}
        Ok(None) => return unauthenticated(),
        Err(resp) => return *resp,
    }
    match state.approvals.store().get(&id).await {
        Ok(Some(h)) => Json(view(&h)).into_response(),
        Ok(None) => error(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no approval `{id}`"),
        ),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, "store", e.to_string()),
    }
}

pub async fn deliveries(State(state): State<AdminState>) -> Response {
    match state.approvals.store().list_deliveries(200).await {
        Ok(d) => Json(json!({"deliveries": d})).into_response(),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, "store", e.to_string()),
    }
}

pub async fn decide(
    State(state): State<AdminState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let snap = state.live.load_full();
    let cfg = snap.config.clone();
    let signed = headers.contains_key("webhook-signature");
    let caller = match bearer_caller(&state, &headers) {
        Ok(c) => c,
        Err(resp) => return *resp,
    };
    let parsed: Result<DecisionBody, _> = serde_json::from_slice(&body);
    let decider = match caller {
        Some(Caller::Admin) => admin_decider(),
        Some(Caller::Approver(d)) => d,
        None if signed => {
            let Some(key) = &cfg.approvals.callback_secret else {
                return error(
                    StatusCode::UNAUTHORIZED,
                    "callbacks_disabled",
                    "no `approvals.callback_secret` is configured, so signed callbacks are refused",
                );
            };
            let h = |n: &str| headers.get(n).and_then(|v| v.to_str().ok());
            let now = now_ms() / 1000;
            if let Err(e) = signing::verify(
                key,
                h("webhook-id"),
                h("webhook-timestamp"),
                h("webhook-signature"),
                &body,
                now,
            ) {
                return error(StatusCode::UNAUTHORIZED, "bad_signature", e.to_string());
            }
            let msg_id = h("webhook-id").unwrap_or_default();
            match state
                .approvals
                .store()
                .remember_callback_id(msg_id, now_ms())
                .await
            {
                Ok(true) => {}
                Ok(false) => {
                    return error(
                        StatusCode::UNAUTHORIZED,
                        "replayed",
                        format!(
                            "callback `{msg_id}` was already accepted once; replays are refused"
                        ),
                    )
                }
                Err(e) => return error(StatusCode::SERVICE_UNAVAILABLE, "store", e.to_string()),
            }
            let named = parsed.as_ref().ok().and_then(|b| b.approver.clone());
            match named.and_then(|n| cfg.approvers.iter().find(|a| a.id == n)) {
                Some(a) => Decider {
                    id: a.id.clone(),
                    groups: a.groups.clone(),
                    any_group: false,
                },
                None => Decider {
                    id: "callback".into(),
                    groups: Vec::new(),
                    any_group: false,
                },
            }
        }
        None => return unauthenticated(),
    };
    let input = match parsed {
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                "malformed_decision",
                format!("the decision is not valid JSON of the expected shape: {e}"),
            )
        }
        Ok(b) => {
            let approve = match b.decision.as_str() {
                "approve" => true,
                "deny" => false,
                other => {
                    return error(
                        StatusCode::BAD_REQUEST,
                        "malformed_decision",
                        format!("`decision` must be `approve` or `deny`, not `{other}`"),
                    )
                }
            };
            if b.body.is_some() && b.arguments.is_some() {
                return error(
                    StatusCode::BAD_REQUEST,
                    "malformed_decision",
                    "send `body` (REST) or `arguments` (MCP), not both",
                );
            }
            DecisionInput {
                approve,
                reason: b.reason,
                edit: b.body.or(b.arguments),
            }
        }
    };
    let approve = input.approve;
    match state
        .approvals
        .decide(&cfg, &id, &decider, input, state.checker.as_ref())
        .await
    {
        Ok(decided) => {
            let h = &decided.hold;
            let mut rec = audit_base(h, &decider.id);
            rec.verdict = if approve { "approve" } else { "deny" };
            rec.reasons = h.reason.clone().into_iter().collect();
            rec.status = 200;
            if decided.edited {
                rec.extra = Some(json!({
                    "edited": true,
                    "original_body": body_json(&h.request.body),
                    "edited_body": h.edited_body.as_deref().map(body_json),
                }));
            }
            state.audit.record(rec).await;
            Json(view(h)).into_response()
        }
        Err(e) => {
            let (status, kind) = match &e {
                ApprovalError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
                ApprovalError::Mismatch { .. } => (StatusCode::CONFLICT, "mismatch"),
                ApprovalError::AlreadyDecided { .. } => (StatusCode::CONFLICT, "already_decided"),
                ApprovalError::WrongGroup { .. } => (StatusCode::FORBIDDEN, "wrong_group"),
                ApprovalError::EditDenied { .. } => {
                    (StatusCode::UNPROCESSABLE_ENTITY, "edit_denied")
                }
                ApprovalError::NowDenied { .. } => (StatusCode::CONFLICT, "now_denied"),
                ApprovalError::Invalid(_) => (StatusCode::BAD_REQUEST, "invalid_decision"),
                ApprovalError::Store(_) => (StatusCode::SERVICE_UNAVAILABLE, "store"),
            };
            if let ApprovalError::NowDenied { reasons } = &e {
                if let Ok(Some(h)) = state.approvals.store().get(&id).await {
                    let mut rec = audit_base(&h, "policy");
                    rec.verdict = "deny";
                    rec.reasons = reasons.clone();
                    rec.status = status.as_u16();
                    rec.extra = Some(json!({"attempted_by": decider.id}));
                    state.audit.record(rec).await;
                }
            }
            error(status, kind, e.to_string())
        }
    }
}

fn audit_base(h: &HoldRecord, approver: &str) -> AuditRecord {
    AuditRecord {
        time: rfc3339(std::time::SystemTime::now()),
        request_id: uuid::Uuid::now_v7().to_string(),
        event: "approval",
        agent: Some(h.agent.clone()),
        route: Some(h.route.clone()),
        method: h.request.method.clone(),
        path: h.request.path.clone(),
        action: Some(h.action.clone()),
        resource: Some(h.resource.clone()),
        policies: h.gates.iter().map(|g| g.policy.clone()).collect(),
        approval_id: Some(h.id.clone()),
        approver: Some(approver.to_string()),
        ..AuditRecord::default()
    }
}

fn body_json(b: &[u8]) -> Value {
    serde_json::from_slice::<Value>(b)
        .map(|v| redact(&v))
        .unwrap_or_else(|_| json!(format!("[{} bytes, not JSON]", b.len())))
}

/// The API's view of an approval.
pub fn view(h: &HoldRecord) -> Value {
    json!({
        "id": h.id,
        "status": h.state.as_str(),
        "agent": h.agent,
        "route": h.route,
        "action": h.action,
        "resource": h.resource,
        "method": h.request.method,
        "path": h.request.path,
        "query": h.request.query,
        "body": body_json(&h.request.body),
        "edited_body": h.edited_body.as_deref().map(body_json),
        "fingerprint": h.fingerprint,
        "gates": h.gates,
        "approver_groups": h.approver_groups,
        "created_at": ms_to_rfc3339(h.created_ms),
        "expires_at": ms_to_rfc3339(h.expires_ms),
        "decided_at": h.decided_ms.map(ms_to_rfc3339),
        "decided_by": h.decided_by,
        "reason": h.reason,
        "executed_at": h.executed_ms.map(ms_to_rfc3339),
        "outcome": h.outcome,
    })
}
