//! The approval endpoints on the admin listener:
//!
//! - `GET /v1/approvals?status=pending&limit=N&cursor=C`,
//!   `GET /v1/approvals/{id}`: the admin token (every approval) or an
//!   approver's token (the approvals that name one of their groups); the
//!   list is keyset paginated, newest first, and answers `next_cursor`.
//!   These views are authenticated, so they redact nothing: the headers
//!   that will be forwarded and the body as it will be sent;
//! - `POST /v1/approvals/{id}/decision` (see `decision`);
//! - `GET /v1/webhooks/deliveries`: the outbox, admin token only.
//!
//! An agent's key never reads or decides (403). Every refusal is a JSON
//! error and changes nothing.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::refusal::Refusal;
use super::{bearer, constant_time_eq, error, AdminState};
use crate::approval::bound::visible_to;
use crate::approval::Decider;
use crate::clock::ms_to_rfc3339;
use crate::notify::shown::{self, Audience};
use crate::store::{HoldCursor, HoldPageQuery, HoldRecord, HoldState};

/// Page size when `limit` is not given.
const DEFAULT_LIMIT: u32 = 100;
/// The largest page: a page is read and encoded in one go.
pub const MAX_LIMIT: u32 = 500;

/// Parameters as sent; validated by hand so that every mistake gets a JSON
/// error that names it.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    status: Option<String>,
    limit: Option<String>,
    cursor: Option<String>,
}

/// Who a bearer token belongs to.
pub enum Caller {
    Admin,
    Approver(Decider),
    /// An agent's key: known, and never allowed here.
    Agent(String),
}

impl Caller {
    /// The caller as the audit log names it.
    pub fn label(&self) -> String {
        match self {
            Caller::Admin => "admin".into(),
            Caller::Approver(d) => d.id.clone(),
            Caller::Agent(id) => format!("agent:{id}"),
        }
    }
}

/// The caller named by the bearer token: `Ok(None)` without a token,
/// `Err` for a token nobody holds.
pub fn bearer_caller(state: &AdminState, headers: &HeaderMap) -> Result<Option<Caller>, Refusal> {
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
    if let Some(agent) = snap.agent_by_key(&digest) {
        return Ok(Some(Caller::Agent(agent.id.clone())));
    }
    Err(Refusal::unauthenticated())
}

/// Lets the admin and approvers read approvals: the admin as a reader of
/// every group.
pub(super) fn require_reader(state: &AdminState, headers: &HeaderMap) -> Result<Decider, Refusal> {
    match bearer_caller(state, headers)? {
        Some(Caller::Admin) => Ok(Decider {
            id: "admin".into(),
            groups: Vec::new(),
            any_group: true,
        }),
        Some(Caller::Approver(d)) => Ok(d),
        Some(Caller::Agent(_)) => Err(Refusal::agent_key()),
        None => Err(Refusal::unauthenticated()),
    }
}

/// A list's `limit` parameter: [`DEFAULT_LIMIT`] when absent, else a
/// whole number from 1 to [`MAX_LIMIT`].
pub(super) fn page_limit(text: Option<&str>) -> Result<u32, Refusal> {
    let Some(text) = text else {
        return Ok(DEFAULT_LIMIT);
    };
    match text.trim().parse::<u32>() {
        Ok(n) if (1..=MAX_LIMIT).contains(&n) => Ok(n),
        _ => Err(Refusal::bad_request(
            "bad_limit",
            format!(
                "`limit` must be a whole number from 1 to {MAX_LIMIT}, not `{}`",
                text.chars().take(40).collect::<String>()
            ),
        )),
    }
}

/// The validated list parameters, for `reader`'s approvals only.
fn page_query(q: ListQuery, reader: &Decider) -> Result<HoldPageQuery, Refusal> {
    let state = match q.status.as_deref() {
        None | Some("all") => None,
        Some(s) => Some(HoldState::parse(s).ok_or_else(|| {
            Refusal::bad_request(
                "bad_status",
                format!("unknown status `{s}`; use pending, approved, executing, executed, denied, expired, voided or all"),
            )
        })?),
    };
    let limit = page_limit(q.limit.as_deref())?;
    let after = match q.cursor.as_deref() {
        None | Some("") => None,
        Some(text) => Some(HoldCursor::decode(text).map_err(|e| {
            Refusal::bad_request(
                "bad_cursor",
                format!("{e}; pass `next_cursor` from the previous page unchanged"),
            )
        })?),
    };
    Ok(HoldPageQuery {
        state,
        after,
        limit,
        groups: (!reader.any_group).then(|| reader.groups.clone()),
    })
}

pub async fn list(
    State(state): State<AdminState>,
    headers: HeaderMap,
    q: Result<Query<ListQuery>, QueryRejection>,
) -> Response {
    let reader = match require_reader(&state, &headers) {
        Ok(r) => r,
        Err(r) => return r.into_response(),
    };
    let query = match q {
        Ok(Query(q)) => page_query(q, &reader),
        Err(e) => Err(Refusal::bad_request(
            "bad_query",
            format!(
                "{}; the parameters are `status`, `limit` and `cursor`",
                e.body_text()
            ),
        )),
    };
    let query = match query {
        Ok(q) => q,
        Err(r) => return r.into_response(),
    };
    match state.approvals.store().list(query).await {
        Ok(page) => Json(json!({
            "approvals": page.holds.iter().map(view).collect::<Vec<_>>(),
            "next_cursor": page.next.as_ref().map(HoldCursor::encode),
        }))
        .into_response(),
        Err(e) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "store_unavailable",
            e.to_string(),
        ),
    }
}

pub async fn show(
    State(state): State<AdminState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let reader = match require_reader(&state, &headers) {
        Ok(r) => r,
        Err(r) => return r.into_response(),
    };
    match state.approvals.store().get(&id).await {
        Ok(Some(h)) if visible_to(&reader, &h) => {
            let mut shown = view(&h);
            shown["links"] = crate::notify::payload::links(&state.live.load().config.admin, &h.id);
            Json(shown).into_response()
        }
        // Another group's approval is not there for this approver, in the
        // same words as one that does not exist.
        Ok(_) if reader.any_group => error(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no approval `{id}`"),
        ),
        Ok(_) => error(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no approval `{id}` among those of your groups"),
        ),
        Err(e) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "store_unavailable",
            e.to_string(),
        ),
    }
}

pub async fn deliveries(State(state): State<AdminState>) -> Response {
    match state.approvals.store().list_deliveries(200).await {
        Ok(d) => Json(json!({"deliveries": d})).into_response(),
        Err(e) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "store_unavailable",
            e.to_string(),
        ),
    }
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
        "headers": shown::headers(&h.request.headers, Audience::Authenticated),
        "body": shown::body(&h.request.headers, &h.request.body, Audience::Authenticated),
        "edited_body": h.edited_body.as_deref().map(|b| shown::body(&h.request.headers, b, Audience::Authenticated)),
        "fingerprint": h.fingerprint,
        "gates": h.gates,
        "approver_groups": h.approver_groups,
        "lifted": h.lifted,
        "confidence": shown::confidence(h.request.confidence.as_deref()),
        "agent_reason": h.request.agent_reason,
        "created_at": ms_to_rfc3339(h.created_ms),
        "expires_at": ms_to_rfc3339(h.expires_ms),
        "decided_at": h.decided_ms.map(ms_to_rfc3339),
        "decided_by": h.decided_by,
        "reason": h.reason,
        "executed_at": h.executed_ms.map(ms_to_rfc3339),
        "outcome": h.outcome,
        "answer": h.answer,
    })
}
