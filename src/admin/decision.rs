//! `POST /v1/approvals/{id}/decision` with
//! `{"decision": "approve"|"deny", "reason", "body"|"arguments",
//! "approval_id"}`, or a take-over `{"decision": "respond", "status",
//! "body"}` (REST) / `{"decision": "respond", "result"}` (MCP): the admin token, an approver's token, or a callback
//! signed under Standard Webhooks rules with `approvals.callback_secret`.
//! A signed body must name the approval it decides (`approval_id`, equal to
//! the one in the URL, so that a signature given for one approval decides
//! no other) and the configured approver who decided (`approver`), who
//! must be in the groups the call needs.
//!
//! Every attempt leaves one audit record (`"event": "approval"`): the
//! decision taken, or why the attempt was refused. Tokens and signatures
//! never go into it.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::approvals::{bearer_caller, view, Caller};
use super::refusal::Refusal;
use super::AdminState;
use crate::approval::trail::{self, body_shown};
use crate::approval::{Decided, Decider, DecisionInput, DecisionKind, HumanAnswer};
use crate::audit::AuditRecord;
use crate::clock::now_ms;
use crate::notify::signing;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DecisionBody {
    decision: String,
    reason: Option<String>,
    /// REST: the replacement request body; with `respond`, the body of the
    /// human's answer.
    body: Option<Value>,
    /// `respond` to a REST call: the answer's status (default 200).
    status: Option<u16>,
    /// `respond` to an MCP call: the tool result.
    result: Option<Value>,
    /// MCP: the replacement tool arguments.
    arguments: Option<Value>,
    /// For signed callbacks: the configured approver who decided.
    approver: Option<String>,
    /// The approval decided; required in signed callbacks, and when given
    /// it must be the one in the URL.
    approval_id: Option<String>,
}

/// What is known about an attempt so far, for its audit record.
#[derive(Default)]
struct Attempt {
    caller: Option<String>,
    decision: Option<&'static str>,
    /// A signed callback's `webhook-id` (not a secret: it is only ever
    /// accepted once).
    webhook_id: Option<String>,
    /// The payload an approve-with-edits proposed.
    edit: Option<Value>,
    /// The answer a take-over proposed.
    answer: Option<Value>,
}

pub async fn decide(
    State(state): State<AdminState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let mut attempt = Attempt::default();
    match try_decide(&state, &headers, &id, &body, &mut attempt).await {
        Ok(resp) => resp,
        Err(refusal) => {
            record_refusal(&state, &id, &attempt, &refusal).await;
            refusal.into_response()
        }
    }
}

async fn try_decide(
    state: &AdminState,
    headers: &HeaderMap,
    id: &str,
    body: &[u8],
    attempt: &mut Attempt,
) -> Result<Response, Refusal> {
    let snap = state.live.load_full();
    let cfg = snap.config.clone();
    let parsed: Result<DecisionBody, _> = serde_json::from_slice(body);
    if let Ok(b) = &parsed {
        attempt.decision = match b.decision.as_str() {
            "approve" => Some("approve"),
            "deny" => Some("deny"),
            "respond" => Some("respond"),
            _ => None,
        };
        if b.decision == "respond" {
            attempt.answer = b.result.clone().or_else(|| b.body.clone());
        } else {
            attempt.edit = b.body.clone().or_else(|| b.arguments.clone());
        }
    }
    let decider = match bearer_caller(state, headers)? {
        Some(Caller::Admin) => {
            attempt.caller = Some("admin".into());
            Decider {
                id: "admin".into(),
                groups: Vec::new(),
                any_group: true,
            }
        }
        Some(Caller::Approver(d)) => {
            attempt.caller = Some(d.id.clone());
            d
        }
        Some(agent @ Caller::Agent(_)) => {
            attempt.caller = Some(agent.label());
            return Err(Refusal::agent_key());
        }
        None if headers.contains_key("webhook-signature") => {
            let d =
                verify_callback(state, headers, id, body, parsed.as_ref().ok(), attempt).await?;
            attempt.caller = Some(d.id.clone());
            d
        }
        None => return Err(Refusal::unauthenticated()),
    };
    if let Some(named) = parsed.as_ref().ok().and_then(|b| b.approval_id.as_deref()) {
        bound_to(named, id)?;
    }
    let input = decision_input(parsed)?;
    let decided = take(state, &cfg, id, &decider, input, attempt).await?;
    Ok(Json(view(&decided.hold)).into_response())
}

/// Decides approval `id` for a `decider` the inbox has already signed in,
/// and audits the decision or its refusal exactly as the API does: the two
/// share this path.
pub async fn decide_as(
    state: &AdminState,
    id: &str,
    decider: &Decider,
    input: DecisionInput,
) -> Result<Decided, Refusal> {
    let answer = match &input.kind {
        DecisionKind::Respond(HumanAnswer::Http { body, .. }) => body.clone(),
        DecisionKind::Respond(HumanAnswer::Mcp { result }) => Some(result.clone()),
        _ => None,
    };
    let attempt = Attempt {
        caller: Some(decider.id.clone()),
        decision: Some(input.kind.as_str()),
        edit: input.edit.clone(),
        answer,
        ..Attempt::default()
    };
    let cfg = state.live.load().config.clone();
    match take(state, &cfg, id, decider, input, &attempt).await {
        Ok(decided) => Ok(decided),
        Err(refusal) => {
            record_refusal(state, id, &attempt, &refusal).await;
            Err(refusal)
        }
    }
}

/// The decision itself, with its audit record.
async fn take(
    state: &AdminState,
    cfg: &crate::config::Config,
    id: &str,
    decider: &Decider,
    input: DecisionInput,
    attempt: &Attempt,
) -> Result<Decided, Refusal> {
    let kind = input.kind.as_str();
    let decided = state
        .approvals
        .decide(cfg, id, decider, input, state.checker.as_ref())
        .await
        .map_err(|e| Refusal::from(&e))?;
    state
        .audit
        .record(decision_record(&decided, kind, decider, attempt))
        .await;
    Ok(decided)
}

/// The audit record of a decision taken.
fn decision_record(
    decided: &Decided,
    kind: &'static str,
    decider: &Decider,
    attempt: &Attempt,
) -> AuditRecord {
    let h = &decided.hold;
    let mut rec = trail::record(h, kind);
    rec.approver = Some(decider.id.clone());
    rec.caller = attempt.caller.clone();
    rec.decision = attempt.decision;
    rec.approval_status = Some(h.state.as_str());
    rec.reasons = h.reason.clone().into_iter().collect();
    rec.status = StatusCode::OK.as_u16();
    if decided.edited {
        rec.extra = Some(json!({
            "edited": true,
            "original_body": body_shown(h, &h.request.body),
            "edited_body": h.edited_body.as_deref().map(|b| body_shown(h, b)),
        }));
    }
    if let Some(answer) = &h.answer {
        // Both sides of a take-over: the call that was held, and what the
        // human told the agent instead.
        rec.extra = Some(json!({
            "original_body": body_shown(h, &h.request.body),
            "answer": crate::notify::shown::redact_value(&json!(answer)),
        }));
    }
    rec
}

/// Refuses a decision that names another approval than the URL's.
fn bound_to(named: &str, id: &str) -> Result<(), Refusal> {
    if named == id {
        return Ok(());
    }
    let mut r = Refusal::new(
        StatusCode::FORBIDDEN,
        "wrong_approval",
        format!(
            "the decision names approval `{}` but was sent for `{id}`",
            named.chars().take(80).collect::<String>()
        ),
    );
    r.logged = Some(format!("the decision names another approval than `{id}`"));
    Err(r)
}

/// Checks a signed callback: signature, timestamp window, that it names
/// this approval and a configured approver, and that its `webhook-id` was
/// never accepted before (checked last, so that a callback replayed on the
/// wrong approval cannot use up the id of the right one). The decider is
/// that approver.
async fn verify_callback(
    state: &AdminState,
    headers: &HeaderMap,
    id: &str,
    body: &[u8],
    parsed: Option<&DecisionBody>,
    attempt: &mut Attempt,
) -> Result<Decider, Refusal> {
    let cfg = state.live.load().config.clone();
    let h = |n: &str| headers.get(n).and_then(|v| v.to_str().ok());
    attempt.webhook_id = h("webhook-id").map(|s| s.chars().take(200).collect());
    let Some(key) = &cfg.approvals.callback_secret else {
        return Err(Refusal::new(
            StatusCode::UNAUTHORIZED,
            "callbacks_disabled",
            "no `approvals.callback_secret` is configured, so signed callbacks are refused",
        ));
    };
    let now = now_ms() / 1000;
    signing::verify(
        key,
        h("webhook-id"),
        h("webhook-timestamp"),
        h("webhook-signature"),
        body,
        now,
    )
    .map_err(|e| Refusal::new(StatusCode::UNAUTHORIZED, "bad_signature", e.to_string()))?;
    let approver = callback_approver(&cfg, id, parsed)?;
    let msg_id = h("webhook-id").unwrap_or_default();
    match state
        .approvals
        .store()
        .remember_callback_id(msg_id, now_ms())
        .await
    {
        Ok(true) => {}
        Ok(false) => {
            return Err(Refusal::new(
                StatusCode::UNAUTHORIZED,
                "replayed",
                format!("callback `{msg_id}` was already accepted once; replays are refused"),
            ))
        }
        Err(e) => {
            return Err(Refusal::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "store_unavailable",
                e.to_string(),
            ))
        }
    }
    Ok(approver)
}

/// The configured approver a signed callback for approval `id` names.
fn callback_approver(
    cfg: &crate::config::Config,
    id: &str,
    parsed: Option<&DecisionBody>,
) -> Result<Decider, Refusal> {
    let Some(b) = parsed else {
        return Err(Refusal::bad_request(
            "malformed_decision",
            "a signed callback must be a JSON decision naming its `approval_id` and `approver`",
        ));
    };
    let Some(named) = b.approval_id.as_deref() else {
        return Err(Refusal::bad_request(
            "malformed_decision",
            format!("a signed callback must carry `\"approval_id\": \"{id}\"`, so that its signature decides this approval only"),
        ));
    };
    bound_to(named, id)?;
    let Some(name) = b.approver.as_deref() else {
        return Err(Refusal::bad_request(
            "malformed_decision",
            "a signed callback must name the configured `approver` who decided",
        ));
    };
    let a = cfg.approvers.iter().find(|a| a.id == name).ok_or_else(|| {
        let mut r = Refusal::new(
            StatusCode::FORBIDDEN,
            "unknown_approver",
            format!(
                "the callback names approver `{}`, who is not configured",
                name.chars().take(80).collect::<String>()
            ),
        );
        r.logged = Some("the callback names an approver who is not configured".into());
        r
    })?;
    Ok(Decider {
        id: a.id.clone(),
        groups: a.groups.clone(),
        any_group: false,
    })
}

fn decision_input(
    parsed: Result<DecisionBody, serde_json::Error>,
) -> Result<DecisionInput, Refusal> {
    let b = parsed.map_err(|e| {
        let mut r = Refusal::bad_request(
            "malformed_decision",
            format!("the decision is not valid JSON of the expected shape: {e}"),
        );
        // serde's message may quote the body's values; the log keeps only
        // where the problem is.
        r.logged = Some(format!(
            "the decision is not valid JSON of the expected shape (line {}, column {})",
            e.line(),
            e.column()
        ));
        r
    })?;
    let kind = match b.decision.as_str() {
        "approve" | "deny" if b.status.is_some() || b.result.is_some() => {
            return Err(Refusal::bad_request(
                "malformed_decision",
                "`status` and `result` belong to a `respond` decision only",
            ));
        }
        "approve" => DecisionKind::Approve,
        "deny" => DecisionKind::Deny,
        "respond" => return respond_input(b),
        other => {
            let mut r = Refusal::bad_request(
                "malformed_decision",
                format!("`decision` must be `approve`, `deny` or `respond`, not `{other}`"),
            );
            r.logged = Some("`decision` must be `approve`, `deny` or `respond`".into());
            return Err(r);
        }
    };
    if b.body.is_some() && b.arguments.is_some() {
        return Err(Refusal::bad_request(
            "malformed_decision",
            "send `body` (REST) or `arguments` (MCP), not both",
        ));
    }
    Ok(DecisionInput {
        kind,
        reason: b.reason,
        edit: b.body.or(b.arguments),
    })
}

/// A take-over: `status` and `body` answer a REST call, `result` an MCP
/// one.
fn respond_input(b: DecisionBody) -> Result<DecisionInput, Refusal> {
    let answer = match b.result {
        Some(_) if b.status.is_some() || b.body.is_some() => {
            return Err(Refusal::bad_request(
                "malformed_decision",
                "answer with `status` and `body` (REST) or `result` (MCP), not both",
            ));
        }
        Some(result) => HumanAnswer::Mcp { result },
        None => HumanAnswer::Http {
            status: b.status.unwrap_or(200),
            body: b.body,
        },
    };
    Ok(DecisionInput {
        kind: DecisionKind::Respond(answer),
        reason: b.reason,
        edit: b.arguments,
    })
}

/// One audit record for a refused attempt: the approval's call when the id
/// is known (else the decision request itself), who tried, what they asked
/// for, the status and why it was refused.
async fn record_refusal(state: &AdminState, id: &str, attempt: &Attempt, refusal: &Refusal) {
    let id: String = id.chars().take(200).collect();
    let hold = match refusal.status {
        // The store is what failed; do not ask it again.
        StatusCode::SERVICE_UNAVAILABLE => None,
        _ => state.approvals.store().get(&id).await.ok().flatten(),
    };
    let mut rec = match &hold {
        Some(h) => {
            let mut rec = trail::record(h, "refused");
            rec.approval_status = Some(h.state.as_str());
            rec
        }
        None => AuditRecord {
            time: crate::clock::rfc3339(std::time::SystemTime::now()),
            request_id: uuid::Uuid::now_v7().to_string(),
            event: "approval",
            method: "POST".into(),
            path: format!("/v1/approvals/{id}/decision"),
            verdict: "refused",
            approval_id: Some(id.clone()),
            ..AuditRecord::default()
        },
    };
    rec.status = refusal.status.as_u16();
    rec.error = Some(refusal.kind);
    rec.reasons = vec![refusal.audit_reason().to_string()];
    rec.caller = attempt.caller.clone();
    rec.decision = attempt.decision;
    let mut extra = Map::new();
    if let Some(w) = &attempt.webhook_id {
        extra.insert("webhook_id".into(), json!(w));
    }
    if let Some(edit) = &attempt.edit {
        extra.insert(
            "attempted_edit".into(),
            crate::notify::shown::redact_value(edit),
        );
    }
    if let Some(answer) = &attempt.answer {
        extra.insert(
            "attempted_answer".into(),
            crate::notify::shown::redact_value(answer),
        );
    }
    if !extra.is_empty() {
        rec.extra = Some(Value::Object(extra));
    }
    state.audit.record(rec).await;
}
