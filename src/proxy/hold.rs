//! The REST side of a hold: store or attach, wait, then answer with the
//! upstream's response (approved), 403 (denied or expired), the replayed
//! outcome (already executed), or 202 with `Retry-After` (still pending).

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::request::Parts;
use http::{header, HeaderValue, Request, Response, StatusCode};
use http_body_util::{Either, Full};
use serde_json::json;

use super::error::ProxyError;
use super::recheck::SnapshotChecker;
use super::{forward, strip_for_upstream, ProxyBody, ProxyState};
use crate::approval::fingerprint::fingerprint;
use crate::approval::{ApprovalError, Approvals, Claim, HeldCall};
use crate::approval::{HoldRecord, HoldState, Outcome, StoredGate, StoredRequest};
use crate::audit::AuditRecord;
use crate::clock::now_ms;
use crate::policy::{CallRequest, Escalation, Gate};
use crate::snapshot::GatewaySnapshot;

/// The header a REST agent names its approval with.
pub const APPROVAL_HEADER: &str = "airlock-approval";

/// What the hold branch needs from the request.
pub struct HeldRequest<'a> {
    pub call: &'a CallRequest,
    pub route: &'a str,
    pub rest: &'a str,
    pub decoded_path: String,
    pub parts: &'a Parts,
    pub body: Bytes,
}

impl From<ApprovalError> for ProxyError {
    fn from(e: ApprovalError) -> Self {
        match e {
            ApprovalError::NotFound(id) => ProxyError::UnknownApproval(id),
            ApprovalError::Mismatch { id } => ProxyError::ApprovalMismatch(id),
            ApprovalError::TooManyPending { agent, cap } => {
                ProxyError::TooManyPending { agent, cap }
            }
            ApprovalError::Store(e) => ProxyError::StoreUnavailable(e.to_string()),
            other => ProxyError::Internal(other.to_string()),
        }
    }
}

/// Stores the held call, or attaches it to the approval it names, and
/// returns the approval's id. Brief: the waiting is [`await_decision`]'s,
/// so that nothing read from the agent stays in memory while a human
/// decides (the store has it).
pub async fn register(
    state: &ProxyState,
    snap: &GatewaySnapshot,
    req: HeldRequest<'_>,
    gates: Vec<Gate>,
    rec: &mut AuditRecord,
) -> Result<String, ProxyError> {
    let approvals = &state.approvals;
    let cfg = &snap.config;
    let injected = snap
        .route_named(req.route)
        .map_or(&[][..], |r| &r.config.headers[..]);
    let stored = stored_request(req.parts, &req.decoded_path, req.rest, &req.body, injected);
    let fp = fingerprint(
        "http",
        &stored.method,
        req.route,
        &stored.path,
        stored.query.as_deref(),
        &req.body,
    );
    let named = req
        .parts
        .headers
        .get(APPROVAL_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(|s| s.trim().to_string());
    let mut hold = None;
    if let Some(id) = named {
        let found = approvals.attach(&id, &req.call.agent, &fp).await?;
        let stale_since =
            now_ms() - i64::try_from(cfg.approvals.replay_window.as_millis()).unwrap_or(0);
        let settled_long_ago = found.state == HoldState::Expired
            || (matches!(found.state, HoldState::Executed | HoldState::Denied)
                && found.executed_ms.or(found.decided_ms).unwrap_or(0) < stale_since);
        if !settled_long_ago {
            hold = Some(found);
        }
    }
    let hold = match hold {
        Some(h) => h,
        None => {
            let call = held_call(req.call, req.route, fp, stored, &gates);
            approvals.hold(cfg, call).await?
        }
    };
    rec.approval_id = Some(hold.id.clone());
    rec.approver_groups = hold.approver_groups.clone();
    Ok(hold.id)
}

/// What is stored for `call` held by `gates`, REST or MCP alike: the call
/// as judged, its gates, and the shortest `@timeout` among them.
pub(super) fn held_call(
    call: &CallRequest,
    route: &str,
    fingerprint: String,
    request: StoredRequest,
    gates: &[Gate],
) -> HeldCall {
    HeldCall {
        agent: call.agent.clone(),
        route: route.to_string(),
        action: call.action.clone(),
        resource: call.resource.to_string(),
        fingerprint,
        request,
        gates: gates.iter().map(stored_gate).collect(),
        timeout: gates.iter().filter_map(|g| g.timeout).min(),
    }
}

/// A gate as the store keeps it.
pub(super) fn stored_gate(g: &Gate) -> StoredGate {
    StoredGate {
        policy: g.policy.clone(),
        reason: g.reason.clone(),
        approvers: g.approvers.clone(),
    }
}

/// Waits for the decision on approval `id` (up to `approvals.wait`) and
/// answers the agent. This future lives as long as a human takes, so it
/// keeps only the id and boxes everything brief.
pub async fn await_decision(
    state: &ProxyState,
    snap: &GatewaySnapshot,
    id: &str,
    request_id: &str,
    rec: &mut AuditRecord,
) -> Result<Response<ProxyBody>, ProxyError> {
    let approvals = &state.approvals;
    let cfg = &snap.config;
    // Bounded: an approved call is claimed by us or by a concurrent
    // identical call; either way it settles within a round or two.
    for _ in 0..3 {
        let hold = approvals.wait(cfg, id, cfg.approvals.wait).await?;
        rec.approver = hold.decided_by.clone();
        if let Some(answer) = settled_answer(&hold, request_id) {
            return answer;
        }
        // Approved: judged again by the policies as they are now.
        let checker = SnapshotChecker {
            live: state.live.clone(),
            pauses: state.pauses.clone(),
        };
        match Box::pin(approvals.claim_checked(cfg, hold, &checker)).await? {
            Claim::Run(hold) => {
                let body = Bytes::copy_from_slice(hold.body_to_forward());
                return Box::pin(execute(
                    &state.approvals,
                    &state.live,
                    hold,
                    body,
                    request_id.to_string(),
                    Session::Stored,
                    rec,
                ))
                .await;
            }
            Claim::Settled(hold) => {
                rec.approver = hold.decided_by.clone();
                if let Some(answer) = settled_answer(&hold, request_id) {
                    return answer;
                }
            }
            Claim::Lost => {}
        }
    }
    Err(ProxyError::Internal(
        "the approved call did not settle; retry with the same approval".into(),
    ))
}

/// The answer for a hold that is not approved; `None` when it is.
fn settled_answer(
    hold: &HoldRecord,
    request_id: &str,
) -> Option<Result<Response<ProxyBody>, ProxyError>> {
    Some(match hold.state {
        HoldState::Pending => Ok(pending(hold, request_id)),
        // Running, or its outcome not yet stored: the retry waits for it.
        HoldState::Executing => Err(ProxyError::ApprovalExecuting(hold.id.clone())),
        HoldState::Denied => Err(ProxyError::ApprovalDenied {
            id: hold.id.clone(),
            by: hold.decided_by.clone().unwrap_or_default(),
            reason: hold.reason.clone().unwrap_or_default(),
        }),
        HoldState::Expired => Err(ProxyError::ApprovalExpired(hold.id.clone())),
        HoldState::Voided => Err(ProxyError::Paused {
            what: format!("approval `{}`", hold.id),
            by: hold.decided_by.clone().unwrap_or_default(),
            reason: hold.reason.clone().unwrap_or_default(),
        }),
        HoldState::Executed => Ok(replay(hold, request_id)),
        HoldState::Approved => return None,
    })
}

pub(super) fn internal(e: impl std::fmt::Display) -> ProxyError {
    ProxyError::Internal(e.to_string())
}

/// The call as it will be forwarded, which is what an approver is shown:
/// never the agent's credentials, nor its own values of the headers the
/// route injects (`injected`), which replace them on the way out. A header
/// value that is not text is neither kept nor forwarded.
pub(super) fn stored_request(
    parts: &Parts,
    decoded_path: &str,
    rest: &str,
    body: &Bytes,
    injected: &[(http::HeaderName, HeaderValue)],
) -> StoredRequest {
    // Checked when the call was judged; what fails here was refused there.
    let said = Escalation::from_headers(&parts.headers).unwrap_or_default();
    let mut fwd = parts.headers.clone();
    strip_for_upstream(&mut fwd);
    for (name, _) in injected {
        fwd.remove(name);
    }
    StoredRequest {
        method: parts.method.as_str().to_string(),
        path: decoded_path.to_string(),
        rest: rest.to_string(),
        query: parts.uri.query().map(str::to_string),
        headers: fwd
            .iter()
            .filter_map(|(k, v)| Some((k.as_str().to_string(), v.to_str().ok()?.to_string())))
            .collect(),
        body: body.to_vec(),
        confidence: said.confidence,
        agent_reason: said.reason,
    }
}

/// [`stored_request`] for an MCP message, whose `params._meta` may state
/// the agent's confidence and reason as well.
pub(super) fn stored_tool_request(
    parts: &Parts,
    decoded_path: &str,
    rest: &str,
    body: &Bytes,
    injected: &[(http::HeaderName, HeaderValue)],
    msg: &crate::mcp::jsonrpc::Message,
) -> StoredRequest {
    let mut stored = stored_request(parts, decoded_path, rest, body, injected);
    // Checked when the call was judged; what fails here was refused there.
    if let Ok(said) =
        Escalation::from_headers(&parts.headers).and_then(|h| h.with_meta(msg.params()))
    {
        stored.confidence = said.confidence;
        stored.agent_reason = said.reason;
    }
    stored
}

/// Request parts rebuilt from a stored request (for forwarding and
/// re-checking).
pub fn stored_parts(r: &StoredRequest) -> Result<Parts, String> {
    let uri = match &r.query {
        Some(q) => format!("/?{q}"),
        None => "/".to_string(),
    };
    let mut b = Request::builder().method(r.method.as_str()).uri(uri);
    for (k, v) in &r.headers {
        b = b.header(k.as_str(), v.as_str());
    }
    b.body(())
        .map(|r| r.into_parts().0)
        .map_err(|e| format!("the stored request does not rebuild: {e}"))
}

/// The MCP session an approved call runs in.
pub(super) enum Session {
    /// As stored with the hold (REST calls have none).
    Stored,
    /// The agent's current attempt's `Mcp-Session-Id`, or none: an agent
    /// that started a new session since the first attempt has usually
    /// ended the old one, and the upstream would refuse that id.
    Current(Option<HeaderValue>),
}

/// Forwards the approved call (`body`: the stored or edited payload) once.
/// The forward runs in its own task, so that an agent hanging up mid-way
/// cannot leave it half done: the outcome is always recorded for the replay.
pub(super) async fn execute(
    approvals: &Arc<Approvals>,
    live: &Arc<ArcSwap<GatewaySnapshot>>,
    hold: HoldRecord,
    body: Bytes,
    request_id: String,
    session: Session,
    rec: &mut AuditRecord,
) -> Result<Response<ProxyBody>, ProxyError> {
    let approvals = approvals.clone();
    let live = live.clone();
    let task = tokio::spawn(async move {
        // Until the outcome is stored: on a shared store, other replicas
        // leave the call alone while its lease lasts.
        let _lease = approvals.keep_lease(&hold.id);
        approvals.record_executing(&hold).await;
        let snap = live.load_full();
        let result = match (snap.route_named(&hold.route), stored_parts(&hold.request)) {
            (None, _) => Err(ProxyError::NoRoute(hold.route.clone())),
            (_, Err(e)) => Err(ProxyError::Internal(e)),
            (Some(route), Ok(mut parts)) => {
                if let Session::Current(current) = session {
                    match current {
                        Some(id) => parts.headers.insert(crate::mcp::SESSION_ID, id),
                        None => parts.headers.remove(crate::mcp::SESSION_ID),
                    };
                }
                // The pool: the agent's connection may be gone by now.
                forward(route, &hold.request.rest, parts, body, &request_id, None).await
            }
        };
        settle(&approvals, &hold, result).await
    });
    let result = task.await.map_err(internal)?;
    if let Ok(resp) = &result {
        rec.upstream_status = Some(resp.status().as_u16());
    }
    result
}

/// Stores what became of an executed approval; when the store is slow or
/// locked, in the background, and the agent is answered meanwhile
/// (identical calls are told `executing` until the write lands). A call
/// that never left Airlock goes back to `approved` instead, and its agent
/// is told to send it again.
async fn settle(
    approvals: &Arc<Approvals>,
    hold: &HoldRecord,
    result: Result<Response<ProxyBody>, ProxyError>,
) -> Result<Response<ProxyBody>, ProxyError> {
    if let Err(ProxyError::UpstreamUnavailable {
        route,
        detail,
        connected: false,
    }) = result
    {
        approvals.record_not_sent(&hold.id).await;
        return Err(ProxyError::ApprovedCallNotSent {
            id: hold.id.clone(),
            route,
            detail,
        });
    }
    let outcome = match &result {
        Ok(resp) => Outcome {
            status: resp.status().as_u16(),
            reason: format!(
                "approved by `{}`; the upstream answered {}",
                hold.decided_by.as_deref().unwrap_or("?"),
                resp.status().as_u16()
            ),
        },
        Err(e) => Outcome {
            status: e.status().as_u16(),
            reason: e.to_string(),
        },
    };
    approvals.record_outcome(&hold.id, outcome).await;
    result
}

fn json_response(
    status: StatusCode,
    body: serde_json::Value,
    request_id: &str,
    id: &str,
) -> Response<ProxyBody> {
    let mut resp = Response::new(Either::Right(Full::new(Bytes::from(body.to_string()))));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if let Ok(v) = HeaderValue::from_str(request_id) {
        h.insert("x-request-id", v);
    }
    if let Ok(v) = HeaderValue::from_str(id) {
        h.insert(APPROVAL_HEADER, v);
    }
    resp
}

fn pending(hold: &HoldRecord, request_id: &str) -> Response<ProxyBody> {
    let left = Duration::from_millis(u64::try_from(hold.expires_ms - now_ms()).unwrap_or(0));
    let retry = left.as_secs().clamp(1, 10);
    let mut resp = json_response(
        StatusCode::ACCEPTED,
        json!({
            "approval_id": hold.id,
            "status": "pending",
            "expires_at": crate::clock::ms_to_rfc3339(hold.expires_ms),
            "message": format!(
                "this call awaits human approval; send it again (same request, or with `Airlock-Approval: {}`) after {retry}s",
                hold.id
            ),
            "reasons": hold.gates.iter().map(|g| crate::policy::gate_text(&g.policy, &g.reason)).collect::<Vec<_>>(),
            "request_id": request_id,
        }),
        request_id,
        &hold.id,
    );
    resp.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(retry));
    resp
}

/// An identical call after execution: the recorded outcome, and no second
/// upstream call.
fn replay(hold: &HoldRecord, request_id: &str) -> Response<ProxyBody> {
    let outcome = hold.outcome.clone().unwrap_or(Outcome {
        status: 502,
        reason: "the outcome was not recorded".into(),
    });
    let status = StatusCode::from_u16(outcome.status).unwrap_or(StatusCode::BAD_GATEWAY);
    let mut resp = json_response(
        status,
        json!({
            "approval_id": hold.id,
            "status": "executed",
            "replayed": true,
            "message": format!("this approved call was already executed; it is not sent again: {}", outcome.reason),
            "request_id": request_id,
        }),
        request_id,
        &hold.id,
    );
    resp.headers_mut()
        .insert("airlock-replayed", HeaderValue::from_static("true"));
    resp
}
