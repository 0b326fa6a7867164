//! The data plane of `protocol: mcp` routes: every JSON-RPC message is
//! judged on its own, and refusals are answered in JSON-RPC so that the
//! model can read them.
//!
//! - A POST body that is not declared `application/json`, is compressed
//!   or starts with a byte order mark gets a parse error (-32700) with HTTP
//!   status 415 (`unsupported_body`); one that is not JSON gets -32700, and
//!   a message that is not JSON-RPC -32600, with status 400.
//! - `Mcp-Method` / `Mcp-Name` headers must repeat what the body says, or
//!   the request is refused (-32020): Airlock decides from the body it
//!   forwards, so no header may route one tool past a policy for another.
//! - A denied `tools/call` is a tool error (`result.isError: true`) with
//!   the same id, whose text says what was denied and why; any other denied
//!   request is a JSON-RPC `error`.
//! - A batch is forwarded only when every message in it would be allowed
//!   on its own; otherwise nothing of it is forwarded.
//! - An allowed request is forwarded byte for byte and its answer streamed
//!   back unbuffered, except `tools/list` answers, which are filtered (see
//!   `mcp::tools_list`).
//! - Requests without a JSON-RPC body (the GET event stream, `DELETE` of a
//!   session) are judged as `protocol` and pass through with their
//!   `Mcp-Session-Id`; a body on anything but a POST is refused, since
//!   nobody judged it. (Methods other than `GET`, `POST` and `DELETE`, and
//!   an `Origin` outside the route's `allowed_origins`, are refused before
//!   the body is read: `proxy::screen_method`.)
//! - A repeated `Mcp-Method` or `Mcp-Name` header is refused (-32020), and
//!   so is a method that is not one Airlock knows but folds to one
//!   (`Tools/call`, -32600): a server could read either copy, or fold.
//! - A held `tools/call` may send the client the approval's page (URL
//!   elicitation, `elicit`); the client's answer to Airlock's own request
//!   is taken with 202 and never forwarded, since the server never asked.

mod elicit;
mod hold;
mod progress;

pub use elicit::ElicitingSessions;

use std::time::Instant;

use base64::Engine as _;
use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Method, Response, StatusCode};
use http_body_util::{BodyExt, Either, Full};
use serde_json::{json, Value};

use super::error::ProxyError;
use super::trail::RequestTrail;
use super::{ProxyBody, ProxyState};
use crate::audit::Fault;
use crate::mcp::jsonrpc::{self, Message};
use crate::mcp::method::{self, name_field};
use crate::mcp::tools_list::{ListFilter, SseRewriter};
use crate::policy::{Decision, Escalation, Gate, Verdict};
use crate::snapshot::{GatewaySnapshot, Route};

/// The largest `tools/list` answer Airlock reads to filter it.
const MAX_LIST_RESPONSE: usize = 16 * 1024 * 1024;

/// One request on an MCP route, after authentication and routing.
pub(super) struct McpRequest<'a> {
    pub state: &'a ProxyState,
    pub snap: &'a GatewaySnapshot,
    pub route: &'a Route,
    pub rest: &'a str,
    pub agent: &'a str,
    pub request_id: &'a str,
    /// The agent's connection: its own upstream connection and its hop.
    pub conn: &'a super::AgentConnection,
}

/// One judged message.
struct Judged {
    msg: Message,
    /// The call as the policies judged it.
    call: crate::policy::CallRequest,
    /// `call`'s resource as text, for the record and the answers.
    resource: String,
    decision: Decision,
}

pub(super) async fn handle(
    cx: McpRequest<'_>,
    mut parts: http::request::Parts,
    body: Bytes,
    trail: &mut RequestTrail,
) -> Result<Response<ProxyBody>, ProxyError> {
    let route_name = cx.route.config.name.as_str();
    let common = super::call::common_context(&parts, &trail.path, cx.snap.policy.declared_names())?;
    if parts.method != Method::POST {
        if !body.is_empty() {
            // Only a POST carries JSON-RPC; a body elsewhere is one nobody
            // judged, which a server could still read.
            return Err(ProxyError::bad_request(
                "mcp_body_not_post",
                format!(
                    "a `{}` to an MCP route must have no body; JSON-RPC messages are sent with `POST`",
                    parts.method
                ),
            ));
        }
        let mut call = method::transport_call(cx.agent, route_name, &common);
        super::call::escalation(&parts.headers)?
            .insert_into(&mut call.context, crate::policy::ContextNeeds::everything());
        trail.action = Some(call.action.clone().into());
        trail.resource = Some(call.resource.to_string().into());
        let decision = super::decide(cx.state, cx.snap, &call, plan(cx.snap, &call)?)?;
        note_decision(trail, &decision);
        return match decision.verdict {
            Verdict::Allow => {
                let ended = (parts.method == Method::DELETE)
                    .then(|| parts.headers.get(crate::mcp::SESSION_ID).cloned())
                    .flatten();
                let resp = forward(&cx, parts, body, trail).await?;
                if let Some(session) = ended.filter(|_| resp.status().is_success()) {
                    cx.state.eliciting.forget(cx.agent, route_name, &session);
                }
                Ok(resp)
            }
            Verdict::Deny { reasons } => Err(ProxyError::Denied {
                reasons,
                policies: decision.policies,
            }),
            Verdict::Hold { gates } => Err(ProxyError::ApprovalRequired {
                reasons: gates.iter().map(gate_reason).collect(),
                policies: decision.policies,
            }),
        };
    }

    // Phase: the body is JSON by its declared type, as the server reads it.
    if let Err(problem) = declared_json(&parts.headers, &body) {
        refused_by_agent(trail, "unsupported_body", vec![problem.clone()]);
        let answer = jsonrpc::error(&Value::Null, jsonrpc::PARSE_ERROR, &problem, None);
        return Ok(rpc_answer(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            &answer,
            cx.request_id,
        ));
    }

    // Phase: parse.
    let parsed = match jsonrpc::parse(&body) {
        Ok(b) => b,
        Err(e) => {
            refused_by_agent(trail, "invalid_jsonrpc", vec![e.to_string()]);
            let answer = jsonrpc::error(&Value::Null, e.code(), &e.to_string(), None);
            return Ok(rpc_answer(StatusCode::BAD_REQUEST, &answer, cx.request_id));
        }
    };
    let mut messages = Vec::with_capacity(parsed.messages.len());
    let mut invalid = Vec::new();
    for m in parsed.messages {
        match m {
            Ok(m) => messages.push(m),
            Err(e) => invalid.push(e),
        }
    }
    if !invalid.is_empty() {
        let reasons = invalid.iter().map(|e| e.message.clone()).collect();
        refused_by_agent(trail, "invalid_jsonrpc", reasons);
        let mut answers: Vec<Value> = invalid
            .iter()
            .map(|e| jsonrpc::error(&e.id, jsonrpc::INVALID_REQUEST, &e.message, None))
            .collect();
        answers.extend(messages.iter().filter_map(|m| {
            m.request_id().map(|id| {
                jsonrpc::error(
                    id,
                    jsonrpc::BATCH_REFUSED,
                    "not forwarded: another message in this batch is invalid",
                    None,
                )
            })
        }));
        let answer = if parsed.batch {
            Value::Array(answers)
        } else {
            answers.swap_remove(0)
        };
        return Ok(rpc_answer(StatusCode::BAD_REQUEST, &answer, cx.request_id));
    }

    // Phase: the client's answer to Airlock's own elicitation is Airlock's
    // to take; the server never asked.
    if let Some(action) = elicit::answer_to_airlock(&messages, &body) {
        tracing::info!(agent = cx.agent, %action, "the agent's client answered an elicitation; the approver decides");
        trail.verdict = "allow";
        trail.extra = Some(json!({"elicitation_answer": action}));
        let mut resp = Response::new(Either::Right(Full::new(Bytes::new())));
        *resp.status_mut() = StatusCode::ACCEPTED;
        return Ok(resp);
    }

    // Phase: headers must agree with the body.
    if let Some(problem) = header_mismatch(&parts.headers, &messages, parsed.batch) {
        refused_by_agent(trail, "mcp_header_mismatch", vec![problem.clone()]);
        let id = messages
            .first()
            .and_then(Message::request_id)
            .cloned()
            .unwrap_or(Value::Null);
        let answer = jsonrpc::error(&id, jsonrpc::HEADER_MISMATCH, &problem, None);
        return Ok(rpc_answer(StatusCode::BAD_REQUEST, &answer, cx.request_id));
    }

    // Phase: decide every message, each with what the headers say of the
    // agent's confidence.
    let said = match Escalation::from_headers(&parts.headers) {
        Ok(s) => s,
        Err(e) => {
            let e = method::ParamsError::from(e);
            trail.verdict = "error";
            trail.error = Some(e.kind());
            trail.reasons = vec![e.to_string()];
            let id = messages
                .first()
                .and_then(Message::request_id)
                .cloned()
                .unwrap_or(Value::Null);
            let answer = jsonrpc::error(&id, e.code(), &e.to_string(), None);
            return Ok(rpc_answer(StatusCode::BAD_REQUEST, &answer, cx.request_id));
        }
    };
    let mut judged = Vec::with_capacity(messages.len());
    for msg in messages {
        let judging = method::call_with_escalation(
            &cx.snap.policy,
            cx.agent,
            route_name,
            &msg,
            &common,
            &said,
        );
        let call = match judging {
            Ok(c) => c,
            Err(e) => {
                refused_by_agent(trail, e.kind(), vec![e.to_string()]);
                let id = msg.request_id().cloned().unwrap_or(Value::Null);
                let answer = jsonrpc::error(&id, e.code(), &e.to_string(), None);
                return Ok(rpc_answer(StatusCode::BAD_REQUEST, &answer, cx.request_id));
            }
        };
        let decision = match super::decide(cx.state, cx.snap, &call, plan(cx.snap, &call)?) {
            Err(e @ ProxyError::Paused { .. }) => {
                return Ok(super::paused::rpc_refusal(
                    &e,
                    &msg,
                    parsed.batch,
                    trail,
                    cx.request_id,
                ));
            }
            other => other?,
        };
        judged.push(Judged {
            resource: call.resource.to_string(),
            call,
            msg,
            decision,
        });
    }
    note_all(trail, &judged);

    // Phase: act. A lone held tool call waits for a human.
    if let [only] = judged.as_slice() {
        if let (false, Some("tools/call"), Verdict::Hold { gates }) =
            (parsed.batch, only.msg.method(), &only.decision.verdict)
        {
            return hold::on_tool_hold(&cx, &parts, body, only, gates, trail).await;
        }
    }
    let all_allowed = judged
        .iter()
        .all(|j| matches!(j.decision.verdict, Verdict::Allow));
    if !all_allowed {
        if trail.verdict == "deny" {
            trail.error = Some("denied");
            trail.fault = Some(Fault::Policy);
        }
        let mut answers: Vec<Value> = judged
            .iter()
            .filter_map(|j| {
                let id = j.msg.request_id()?;
                Some(match &j.decision.verdict {
                    Verdict::Allow => jsonrpc::error(
                        id,
                        jsonrpc::BATCH_REFUSED,
                        "not forwarded: another message in this batch was refused by policy",
                        None,
                    ),
                    _ => refusal(j, cx.request_id),
                })
            })
            .collect();
        if answers.is_empty() {
            // Only notifications or responses were refused: there is no id
            // to answer, so the HTTP status carries the refusal.
            let reasons = trail.reasons.join("; ");
            let answer = jsonrpc::error(&Value::Null, jsonrpc::DENIED, &reasons, None);
            return Ok(rpc_answer(StatusCode::FORBIDDEN, &answer, cx.request_id));
        }
        let answer = if parsed.batch {
            Value::Array(answers)
        } else {
            answers.swap_remove(0)
        };
        return Ok(rpc_answer(StatusCode::OK, &answer, cx.request_id));
    }

    // Phase: forward, filtering tools/list answers.
    let pending: Vec<Value> = judged
        .iter()
        .filter(|j| j.msg.method() == Some("tools/list"))
        .filter_map(|j| j.msg.request_id().cloned())
        .collect();
    if pending.is_empty() {
        let declares_url =
            matches!(judged.as_slice(), [only] if elicit::initialize_declares_url(&only.msg));
        // A lone allowed tool call may be sampled for review.
        let capture = match judged.as_slice() {
            [only] if !parsed.batch && only.msg.method() == Some("tools/call") => {
                let tool = only.msg.params().and_then(|p| p.get("name"));
                let tool = tool.and_then(Value::as_str);
                super::sample(cx.state, cx.snap, cx.route, trail, tool, &parts, &body)
            }
            _ => None,
        };
        let mut resp = forward(&cx, parts, body, trail).await?;
        super::attach_capture(&mut resp, capture);
        if let Some(session) = resp.headers().get(crate::mcp::SESSION_ID) {
            if declares_url {
                cx.state.eliciting.remember(cx.agent, route_name, session);
            }
        }
        return Ok(resp);
    }
    // The answer is rewritten, so it must arrive uncompressed.
    parts.headers.remove(header::ACCEPT_ENCODING);
    let resp = forward(&cx, parts, body, trail).await?;
    let mut filter = ListFilter {
        policy: &cx.snap.policy,
        agent: cx.agent,
        route: route_name,
        common: &common,
        pending,
        hidden: Vec::new(),
    };
    let first_id = filter.pending.first().cloned().unwrap_or(Value::Null);
    let filtered = filter_list_answer(resp, &mut filter, cx.route).await;
    if !filter.hidden.is_empty() {
        let extra = trail.extra.get_or_insert_with(|| json!({}));
        extra["hidden_tools"] = json!(filter.hidden);
    }
    match filtered {
        Ok(r) => Ok(r),
        Err(problem) => {
            // Never fail open: an answer that cannot be filtered is not
            // passed on.
            trail.reasons.push(problem.clone());
            let answer = jsonrpc::error(&first_id, -32603, &problem, None);
            Ok(rpc_answer(StatusCode::BAD_GATEWAY, &answer, cx.request_id))
        }
    }
}

/// Refuses a POST body that is not declared JSON, is compressed, or starts
/// with a byte order mark: the server would read it otherwise, or not at
/// all (see `proxy::body`).
fn declared_json(headers: &HeaderMap, body: &[u8]) -> Result<(), String> {
    use super::body::{body_kind, BodyKind};
    match body_kind(headers, body, false) {
        Ok(BodyKind::Json | BodyKind::None) => Ok(()),
        Ok(_) => Err("a JSON-RPC message is sent as `application/json`".into()),
        Err(e) => Err(e.to_string()),
    }
}

fn gate_reason(g: &Gate) -> String {
    g.describe()
}

fn reasons(decision: &Decision) -> Vec<String> {
    decision.verdict.reasons()
}

/// The policies that can apply to an MCP call (its context is built whole,
/// and the decision cuts it down to what they read).
fn plan(
    snap: &GatewaySnapshot,
    call: &crate::policy::CallRequest,
) -> Result<crate::policy::DecisionPlan, ProxyError> {
    snap.policy.plan(call).map_err(super::decide_error)
}

/// Records a request refused as unreadable or malformed: the agent's
/// fault, as the same refusal on a REST route would be.
fn refused_by_agent(trail: &mut RequestTrail, kind: &'static str, reasons: Vec<String>) {
    trail.verdict = "error";
    trail.error = Some(kind);
    trail.fault = Some(Fault::Agent);
    trail.reasons = reasons;
}

fn note_decision(trail: &mut RequestTrail, decision: &Decision) {
    trail.verdict = decision.verdict.name();
    trail.policies = decision.policies.clone();
    trail.eval_errors = decision.errors.clone();
    trail.decision_us = Some(decision.eval_micros);
    trail.reasons = reasons(decision);
    if let Some(shadow) = &decision.shadow {
        trail.shadow = serde_json::to_value(shadow).ok();
    }
}

/// Notes the whole POST in the trail: the strictest verdict, and every
/// message's method, action and verdict under `extra.mcp`.
fn note_all(trail: &mut RequestTrail, judged: &[Judged]) {
    let rank = |v: &Verdict| match v {
        Verdict::Allow => 0,
        Verdict::Hold { .. } => 1,
        Verdict::Deny { .. } => 2,
    };
    if let Some(worst) = judged.iter().max_by_key(|j| rank(&j.decision.verdict)) {
        note_decision(trail, &worst.decision);
    }
    if let [one] = judged {
        trail.action = Some(one.call.action.clone().into());
        trail.resource = Some(one.resource.as_str().into());
    } else {
        let actions: Vec<&str> = judged.iter().map(|j| j.call.action.as_str()).collect();
        trail.action = Some(format!("batch[{}]", actions.join(",")).into());
        trail.policies = judged
            .iter()
            .flat_map(|j| j.decision.policies.iter().cloned())
            .collect();
        trail.reasons = judged.iter().flat_map(|j| reasons(&j.decision)).collect();
    }
    let detail: Vec<Value> = judged
        .iter()
        .map(|j| {
            json!({
                "method": j.msg.method(),
                "id": j.msg.request_id(),
                "action": j.call.action,
                "resource": j.resource,
                "verdict": j.decision.verdict.name(),
            })
        })
        .collect();
    trail.extra = Some(json!({ "mcp": detail }));
}

/// The answer to a request that is not forwarded.
fn refusal(j: &Judged, request_id: &str) -> Value {
    match &j.decision.verdict {
        Verdict::Hold { gates } => held(j, gates, request_id),
        _ => denied(j, request_id),
    }
}

fn denied(j: &Judged, request_id: &str) -> Value {
    let id = j.msg.request_id().cloned().unwrap_or(Value::Null);
    let reasons = reasons(&j.decision);
    let meta = json!({
        "airlock/verdict": "deny",
        "airlock/policies": j.decision.policies,
        "airlock/requestId": request_id,
    });
    if j.msg.method() == Some("tools/call") {
        let text = format!(
            "Airlock denied this call to tool {}: {}. The tool was not run; do not retry it unchanged.",
            j.resource,
            reasons.join("; ")
        );
        jsonrpc::tool_error(&id, &text, j.msg.is_modern(), meta)
    } else {
        let message = format!(
            "denied by policy: `{}` on {}: {}",
            j.msg.method().unwrap_or(""),
            j.resource,
            reasons.join("; ")
        );
        jsonrpc::error(
            &id,
            jsonrpc::DENIED,
            &message,
            Some(
                json!({"reasons": reasons, "policies": j.decision.policies, "requestId": request_id}),
            ),
        )
    }
}

/// The answer to a held request that cannot wait for approval on its own
/// (a held member of a batch, or a held non-tool method): it says the
/// request awaits a human and was not run. A lone held `tools/call` goes to
/// `mcp::hold` instead, which stores it for approval.
fn held(j: &Judged, gates: &[Gate], request_id: &str) -> Value {
    let id = j.msg.request_id().cloned().unwrap_or(Value::Null);
    let reasons: Vec<String> = gates.iter().map(gate_reason).collect();
    let meta = json!({
        "airlock/verdict": "hold",
        "airlock/policies": j.decision.policies,
        "airlock/requestId": request_id,
    });
    if j.msg.method() == Some("tools/call") {
        let text = format!(
            "This call to tool {} awaits a human's approval and was not run: {}.",
            j.resource,
            reasons.join("; ")
        );
        jsonrpc::tool_error(&id, &text, j.msg.is_modern(), meta)
    } else {
        let message = format!(
            "this request awaits a human's approval: {}",
            reasons.join("; ")
        );
        jsonrpc::error(
            &id,
            jsonrpc::APPROVAL_REQUIRED,
            &message,
            Some(
                json!({"reasons": reasons, "policies": j.decision.policies, "requestId": request_id}),
            ),
        )
    }
}

/// Whether `Mcp-Method` / `Mcp-Name` disagree with the body; `None` when
/// they agree or are absent.
fn header_mismatch(headers: &HeaderMap, messages: &[Message], batch: bool) -> Option<String> {
    let get = |name: &str| {
        headers
            .get(name)
            .map(|v| v.to_str().ok().map(str::to_string))
    };
    let h_method = get("mcp-method");
    let h_name = get("mcp-name");
    if h_method.is_none() && h_name.is_none() {
        return None;
    }
    for (lower, name) in [("mcp-method", "Mcp-Method"), ("mcp-name", "Mcp-Name")] {
        if headers.get_all(lower).iter().nth(1).is_some() {
            return Some(format!(
                "header `{name}` is repeated; a server could read either copy"
            ));
        }
    }
    if batch {
        return Some("`Mcp-Method` and `Mcp-Name` cannot describe a batch".to_string());
    }
    let msg = messages.first()?;
    let body_method = msg.method();
    if let Some(h) = &h_method {
        if h.as_deref() != body_method {
            return Some(format!(
                "header `Mcp-Method: {}` does not match the body's method `{}`",
                h.as_deref().unwrap_or("<not text>"),
                body_method.unwrap_or("<none>")
            ));
        }
    }
    let field = body_method.and_then(name_field);
    let body_name = field.and_then(|f| msg.params()?.get(f)?.as_str());
    match (h_name, field) {
        (Some(h), Some(f)) => {
            let decoded = h.as_deref().and_then(decode_header_value);
            if decoded.as_deref() != body_name {
                return Some(format!(
                    "header `Mcp-Name` does not match the body's `params.{f}` `{}`",
                    body_name.unwrap_or("<none>")
                ));
            }
        }
        (Some(_), None) => {
            return Some(format!(
                "header `Mcp-Name` was sent, but method `{}` names nothing",
                body_method.unwrap_or("<none>")
            ))
        }
        (None, Some(f)) if h_method.is_some() && body_name.is_some() => {
            return Some(format!(
                "header `Mcp-Name` is missing; it must repeat `params.{f}`"
            ))
        }
        (None, _) => {}
    }
    None
}

/// `Mcp-Name` carries non-ASCII names as `=?base64?<utf-8 bytes>?=`.
fn decode_header_value(v: &str) -> Option<String> {
    let Some(payload) = v
        .strip_prefix("=?base64?")
        .and_then(|p| p.strip_suffix("?="))
    else {
        return Some(v.to_string());
    };
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(payload)
        .ok()?;
    String::from_utf8(bytes).ok()
}

pub(super) fn rpc_answer(
    status: StatusCode,
    answer: &Value,
    request_id: &str,
) -> Response<ProxyBody> {
    let bytes = serde_json::to_vec(answer).unwrap_or_default();
    let mut resp = Response::new(Either::Right(Full::new(Bytes::from(bytes))));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if let Ok(v) = HeaderValue::from_str(request_id) {
        resp.headers_mut().insert("x-request-id", v);
    }
    resp
}

async fn forward(
    cx: &McpRequest<'_>,
    parts: http::request::Parts,
    body: Bytes,
    trail: &mut RequestTrail,
) -> Result<Response<ProxyBody>, ProxyError> {
    let resp = super::forward(cx.route, cx.rest, parts, body, cx.request_id, Some(cx.conn)).await?;
    trail.upstream_status = Some(resp.status().as_u16());
    Ok(resp)
}

/// How an MCP server framed its answer to a POST, by its declared type.
pub(super) enum AnswerKind {
    Json,
    Events,
    /// Neither: the type as declared, lower case.
    Other(String),
}

impl AnswerKind {
    pub(super) fn of(headers: &HeaderMap) -> AnswerKind {
        let content_type = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_ascii_lowercase();
        if content_type.starts_with("text/event-stream") {
            AnswerKind::Events
        } else if content_type.starts_with("application/json") {
            AnswerKind::Json
        } else {
            AnswerKind::Other(content_type)
        }
    }
}

/// Reads a `tools/list` answer (JSON, or events up to the answer) and
/// rewrites it; `Err` when it cannot be filtered.
async fn filter_list_answer(
    resp: Response<ProxyBody>,
    filter: &mut ListFilter<'_>,
    route: &Route,
) -> Result<Response<ProxyBody>, String> {
    if !resp.status().is_success() {
        return Ok(resp);
    }
    let sse = match AnswerKind::of(resp.headers()) {
        AnswerKind::Events => true,
        AnswerKind::Json => false,
        AnswerKind::Other(_) => return Ok(resp),
    };
    let (mut parts, body) = resp.into_parts();
    let Either::Left(Either::Left(mut body)) = body else {
        return Ok(Response::from_parts(parts, body));
    };
    let deadline = Instant::now() + route.config.response_timeout;
    let mut raw = Vec::new();
    let mut out = Vec::new();
    let mut events = SseRewriter::new();
    loop {
        if sse && filter.done() {
            break;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        let frame = match tokio::time::timeout(left, body.frame()).await {
            Err(_) => return Err("the server's tools/list answer did not finish in time".into()),
            Ok(None) => break,
            Ok(Some(Err(e))) => {
                return Err(format!("the server's tools/list answer broke off: {e}"))
            }
            Ok(Some(Ok(f))) => f,
        };
        let Ok(data) = frame.into_data() else {
            continue;
        };
        if sse {
            out.extend(events.push(&data, filter));
        } else {
            raw.extend_from_slice(&data);
        }
        if raw.len() + out.len() > MAX_LIST_RESPONSE {
            return Err("the server's tools/list answer is too large to filter".into());
        }
    }
    let rewritten = if sse {
        out.extend(events.finish(filter));
        out
    } else {
        filter
            .rewrite_json(&raw)
            .ok_or("the server's tools/list answer is not JSON")?
    };
    parts.headers.remove(header::CONTENT_LENGTH);
    Ok(Response::from_parts(
        parts,
        Either::Right(Full::new(Bytes::from(rewritten))),
    ))
}
