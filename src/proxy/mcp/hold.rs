//! The MCP side of a hold: a held `tools/call` is stored as an approval
//! (bound to the tool and its canonical arguments), waited on, and answered
//! in a way the model can act on.
//!
//! - approved: the stored (or approver-edited) call is forwarded once, with
//!   the JSON-RPC id of the agent's current request, and the tool's answer
//!   is returned;
//! - denied or expired: an `isError` result with the approver's reason;
//! - still pending: an `isError` result telling the model the call awaits a
//!   human and to call the tool again later with the same arguments (which
//!   attaches to the same approval);
//! - already executed: the recorded outcome, never a second upstream call.
//!
//! A client that accepts `text/event-stream` and sent a `progressToken` gets
//! all of this as an event stream with progress while it waits (see
//! `mcp::progress`); any other client gets one JSON answer after the wait.
//! A gate with `@elicit("url")` also sends a client that declared URL
//! elicitation the approval's page (see `mcp::elicit`).

use bytes::Bytes;
use http::request::Parts;
use http::{header, HeaderMap, HeaderValue, Response, StatusCode};
use serde_json::{json, Value};

use super::elicit::{self, Elicitation};
use super::{Judged, McpRequest};
use crate::approval::fingerprint::fingerprint;
use crate::approval::Claim;
use crate::approval::{HoldRecord, HoldState, HumanAnswer, Outcome};
use crate::mcp::jsonrpc;
use crate::policy::Gate;
use crate::proxy::error::ProxyError;
use crate::proxy::hold::{execute, held_call, internal, stored_tool_request, Session};
use crate::proxy::recheck::SnapshotChecker;
use crate::proxy::trail::RequestTrail;
use crate::proxy::ProxyBody;

/// Holds one `tools/call` message for approval and answers it.
pub(super) async fn on_tool_hold(
    cx: &McpRequest<'_>,
    parts: &Parts,
    body: Bytes,
    judged: &Judged,
    gates: &[Gate],
    trail: &mut RequestTrail,
) -> Result<Response<ProxyBody>, ProxyError> {
    let msg = &judged.msg;
    let approvals = &cx.state.approvals;
    let cfg = &cx.snap.config;
    let id = msg.request_id().cloned().unwrap_or(Value::Null);
    let params = msg.params().cloned().unwrap_or(Value::Null);
    let tool = params
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let arguments = params.get("arguments").cloned().unwrap_or(json!({}));
    // The JSON-RPC id and `_meta` change from one attempt to the next; the
    // approval is bound to the tool and its arguments only.
    let args_bytes = serde_json::to_vec(&arguments).map_err(internal)?;
    let route = cx.route.config.name.clone();
    let fp = fingerprint("mcp", "tools/call", &route, &tool, None, &args_bytes);
    let stored = stored_tool_request(
        parts,
        &trail.path,
        cx.rest,
        &body,
        &cx.route.config.headers,
        msg,
    );
    let call = held_call(&judged.call, &route, fp, stored, gates);
    let hold = approvals.hold(cfg, call).await?;
    trail.approval_id = Some(hold.id.clone());
    trail.approver_groups = hold.approver_groups.clone();
    let held = HeldTool {
        id,
        tool,
        modern: msg.is_modern(),
        progress_token: progress_token(&params),
        request_id: cx.request_id.to_string(),
        session: parts.headers.get(crate::mcp::SESSION_ID).cloned(),
    };
    let asked = match ask_human(cx, parts, &params, gates, &hold, &held) {
        Asked::InputRequired(answer) => {
            note_elicitation(trail, "elicitation", "input_required");
            return Ok(super::rpc_answer(StatusCode::OK, &answer, cx.request_id));
        }
        Asked::OnStream(e) => {
            note_elicitation(trail, "elicitation_id", &e.id);
            Some(e)
        }
        Asked::No => None,
    };
    if (held.progress_token.is_some() || asked.is_some()) && accepts_events(&parts.headers) {
        return Ok(super::progress::respond(
            cx.state, hold.id, held, asked, trail,
        ));
    }

    // Bounded like the REST side: an approved call settles within a round
    // or two, whoever claims it.
    for _ in 0..3 {
        let hold = approvals.wait(cfg, &hold.id, cfg.approvals.wait).await?;
        trail.approver = hold.decided_by.clone();
        if let Some(answer) = held.answer_for(&hold) {
            return Ok(super::rpc_answer(StatusCode::OK, &answer, cx.request_id));
        }
        let checker = SnapshotChecker {
            live: cx.state.live.clone(),
            pauses: cx.state.pauses.clone(),
        };
        match approvals.claim_checked(cfg, hold, &checker).await? {
            Claim::Run(hold) => {
                let body = held.body_to_forward(&hold)?;
                let request_id = cx.request_id.to_string();
                let session = Session::Current(held.session.clone());
                return execute(
                    approvals,
                    &cx.state.live,
                    hold,
                    body,
                    request_id,
                    session,
                    trail,
                )
                .await;
            }
            Claim::Settled(hold) => {
                trail.approver = hold.decided_by.clone();
                if let Some(answer) = held.answer_for(&hold) {
                    return Ok(super::rpc_answer(StatusCode::OK, &answer, cx.request_id));
                }
            }
            Claim::Lost => {}
        }
    }
    Err(ProxyError::Internal(
        "the approved call did not settle; call the tool again".into(),
    ))
}

/// How the human at the agent's client is sent to the approval's page.
enum Asked {
    /// The 2026-07-28 answer to the first attempt (see `mcp::elicit`).
    InputRequired(Value),
    /// A 2025-11-25 request on the held call's event stream.
    OnStream(Elicitation),
    No,
}

/// Whether, and how, this held call sends its client the approval's page:
/// a gate asks for it, `admin.public_url` gives the page, the client
/// declared URL elicitation, and the approval still waits.
fn ask_human(
    cx: &McpRequest<'_>,
    parts: &Parts,
    params: &Value,
    gates: &[Gate],
    hold: &HoldRecord,
    held: &HeldTool,
) -> Asked {
    if hold.state != HoldState::Pending {
        return Asked::No;
    }
    let route = &cx.route.config.name;
    let modern = held.modern;
    // A 2025-11-25 elicitation travels on the held call's event stream.
    let declared = if modern {
        elicit::request_declares_url(params)
    } else {
        accepts_events(&parts.headers)
            && parts
                .headers
                .get(crate::mcp::SESSION_ID)
                .is_some_and(|s| cx.state.eliciting.declared(cx.agent, route, s))
    };
    if !declared {
        return Asked::No;
    }
    if modern && elicit::is_retry(params) {
        let action = elicit::retry_action(params).unwrap_or("none");
        tracing::info!(agent = cx.agent, approval = %hold.id, %action, "the agent's client answered an elicitation; the approver decides");
        return Asked::No;
    }
    let Some(e) = Elicitation::for_hold(&cx.snap.config.admin, gates, &hold.id, &held.tool) else {
        return Asked::No;
    };
    tracing::info!(agent = cx.agent, approval = %hold.id, elicitation = %e.id, "sending the agent's client the approval's page");
    if modern {
        return Asked::InputRequired(e.input_required(&held.id));
    }
    Asked::OnStream(e)
}

/// Marks the request's audit record with the elicitation it sent.
fn note_elicitation(trail: &mut RequestTrail, key: &str, value: &str) {
    if let Some(Value::Object(extra)) = &mut trail.extra {
        extra.insert(key.into(), json!(value));
    }
}

/// The `tools/call` an agent is waiting on, as its answers must name it.
pub(super) struct HeldTool {
    /// The JSON-RPC id of the agent's current attempt.
    pub id: Value,
    pub tool: String,
    pub modern: bool,
    /// `params._meta.progressToken` of the current attempt (a string or a
    /// number).
    pub progress_token: Option<Value>,
    pub request_id: String,
    /// The current attempt's `Mcp-Session-Id`, which the approved call
    /// carries (see `hold::Session`).
    pub session: Option<HeaderValue>,
}

// === impl HeldTool ===

impl HeldTool {
    /// The answer for a hold whose wait ended; `None` when it is approved
    /// and the caller should claim and run it.
    pub fn answer_for(&self, hold: &HoldRecord) -> Option<Value> {
        let tool = &self.tool;
        let text = match hold.state {
            HoldState::Executing => format!(
                "This approved call to tool `{tool}` (approval {}) is running, or its outcome is not recorded yet; it is never run twice. Call the tool again in a few seconds with the same arguments to get its result.",
                hold.id
            ),
            HoldState::Pending => format!(
                "This call to tool `{tool}` awaits a human's approval (approval {}, until {}) and was not run: {}. Call the tool again later with the same arguments to get its result.",
                hold.id,
                crate::clock::ms_to_rfc3339(hold.expires_ms),
                gate_reasons(hold)
            ),
            HoldState::Denied => format!(
                "A human ({}) denied this call to tool `{tool}`: {}. It was not run.",
                hold.decided_by.as_deref().unwrap_or("an approver"),
                hold.reason.as_deref().unwrap_or("no reason given")
            ),
            HoldState::Expired => format!(
                "The approval for this call to tool `{tool}` expired before the call ran; it was not run."
            ),
            HoldState::Voided => format!(
                "An operator ({}) paused calls like this one to tool `{tool}`: {}. It was not run; do not retry it until the pause is lifted.",
                hold.decided_by.as_deref().unwrap_or("an operator"),
                hold.reason.as_deref().unwrap_or("no reason given")
            ),
            HoldState::Executed => {
                let outcome = hold.outcome.clone().unwrap_or(Outcome {
                    status: 502,
                    reason: "the outcome was not recorded".into(),
                });
                format!(
                    "This approved call to tool `{tool}` was already executed and is not sent again: {}.",
                    outcome.reason
                )
            }
            HoldState::Responded => return Some(self.responded(hold)),
            HoldState::Approved => return None,
        };
        let meta = json!({
            "airlock/verdict": "hold",
            "airlock/approvalId": hold.id,
            "airlock/status": hold.state.as_str(),
            "airlock/requestId": self.request_id,
        });
        Some(jsonrpc::tool_error(&self.id, &text, self.modern, meta))
    }

    /// A human answered in the tool's place: their `result`, as if the tool
    /// had sent it, with Airlock's `_meta` beside the human's own.
    fn responded(&self, hold: &HoldRecord) -> Value {
        // INVARIANT: an MCP hold is only ever answered with `Mcp` and an
        // object `result` (checked when the decision is taken).
        let Some(HumanAnswer::Mcp { result }) = &hold.answer else {
            let meta = json!({"airlock/approvalId": hold.id, "airlock/requestId": self.request_id});
            return jsonrpc::tool_error(
                &self.id,
                "The human's answer to this call was not recorded.",
                self.modern,
                meta,
            );
        };
        let mut result = result.clone();
        if let Some(obj) = result.as_object_mut() {
            // Framed for the revision the agent's session speaks, as the
            // tool's own answer would be.
            if self.modern {
                obj.entry("resultType").or_insert_with(|| json!("complete"));
            }
            let meta = obj.entry("_meta").or_insert_with(|| json!({}));
            if let Some(meta) = meta.as_object_mut() {
                meta.insert("airlock/status".into(), json!(hold.state.as_str()));
                meta.insert("airlock/approvalId".into(), json!(hold.id));
                meta.insert("airlock/answeredBy".into(), json!(hold.decided_by));
                meta.insert("airlock/requestId".into(), json!(self.request_id));
            }
        }
        json!({"jsonrpc": "2.0", "id": self.id, "result": result})
    }

    /// The stored (or approver-edited) JSON-RPC request with the current
    /// attempt's id and progress token, so the agent can match the tool's
    /// answer and progress to the request it is waiting on.
    pub fn body_to_forward(&self, hold: &HoldRecord) -> Result<Bytes, ProxyError> {
        let mut v: Value = serde_json::from_slice(hold.body_to_forward()).map_err(internal)?;
        if let Some(obj) = v.as_object_mut() {
            obj.insert("id".into(), self.id.clone());
        }
        let meta = v
            .get_mut("params")
            .and_then(|p| p.get_mut("_meta"))
            .and_then(Value::as_object_mut);
        match (meta, &self.progress_token) {
            (Some(meta), Some(token)) => {
                meta.insert("progressToken".into(), token.clone());
            }
            (Some(meta), None) => {
                meta.remove("progressToken");
            }
            (None, Some(token)) => {
                if let Some(params) = v.get_mut("params").and_then(Value::as_object_mut) {
                    params.insert("_meta".into(), json!({ "progressToken": token }));
                }
            }
            (None, None) => {}
        }
        serde_json::to_vec(&v).map(Bytes::from).map_err(internal)
    }
}

/// `params._meta.progressToken`, when it is a string or an integer.
fn progress_token(params: &Value) -> Option<Value> {
    let token = params.get("_meta")?.get("progressToken")?;
    match token {
        Value::String(_) => Some(token.clone()),
        Value::Number(n) if n.is_i64() || n.is_u64() => Some(token.clone()),
        _ => None,
    }
}

/// Whether the client's `Accept` lists `text/event-stream`.
fn accepts_events(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|m| {
            m.split(';')
                .next()
                .is_some_and(|t| t.trim().eq_ignore_ascii_case("text/event-stream"))
        })
}

fn gate_reasons(hold: &HoldRecord) -> String {
    hold.gates
        .iter()
        .map(|g| crate::policy::gate_text(&g.policy, &g.reason))
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    #[test]
    fn accept_must_list_event_streams() {
        let mut h = HeaderMap::new();
        assert!(!accepts_events(&h));
        h.insert(header::ACCEPT, HeaderValue::from_static("application/json"));
        assert!(!accepts_events(&h));
        h.append(
            header::ACCEPT,
            HeaderValue::from_static("application/json, Text/Event-Stream;q=0.9"),
        );
        assert!(accepts_events(&h));
    }

    #[test]
    fn progress_tokens_are_strings_or_integers() {
        let t = |v: Value| progress_token(&json!({"_meta": {"progressToken": v}}));
        assert_eq!(t(json!("a")), Some(json!("a")));
        assert_eq!(t(json!(7)), Some(json!(7)));
        assert_eq!(t(json!(1.5)), None);
        assert_eq!(t(json!(true)), None);
        assert_eq!(progress_token(&json!({})), None);
    }
}
