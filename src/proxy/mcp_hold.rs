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

use bytes::Bytes;
use http::request::Parts;
use http::{Response, StatusCode};
use serde_json::{json, Value};

use super::error::ProxyError;
use super::hold::{execute, internal, stored_request};
use super::mcp::McpRequest;
use super::ProxyBody;
use crate::approval::fingerprint::fingerprint;
use crate::approval::HeldCall;
use crate::audit::AuditRecord;
use crate::mcp::jsonrpc::{self, Message};
use crate::policy::Gate;
use crate::store::{HoldRecord, HoldState, Outcome, StoredGate};

/// Holds one `tools/call` message for approval and answers it.
pub(super) async fn on_tool_hold(
    cx: &McpRequest<'_>,
    parts: &Parts,
    body: Bytes,
    msg: &Message,
    gates: &[Gate],
    rec: &mut AuditRecord,
) -> Result<Response<ProxyBody>, ProxyError> {
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
    let call = HeldCall {
        agent: cx.agent.to_string(),
        route: route.clone(),
        action: rec.action.clone().unwrap_or_default(),
        resource: rec.resource.clone().unwrap_or_default(),
        fingerprint: fp,
        request: stored_request(parts, &rec.path, cx.rest, &body),
        gates: gates
            .iter()
            .map(|g| StoredGate {
                policy: g.policy.clone(),
                reason: g.reason.clone(),
                approvers: g.approvers.clone(),
            })
            .collect(),
        timeout: gates.iter().filter_map(|g| g.timeout).min(),
    };
    let hold = approvals.hold(cfg, call).await?;
    rec.approval_id = Some(hold.id.clone());

    // Bounded like the REST side: an approved call settles within a round
    // or two, whoever claims it.
    for _ in 0..3 {
        let hold = approvals.wait(cfg, &hold.id, cfg.approvals.wait).await?;
        rec.approver = hold.decided_by.clone();
        let text = match hold.state {
            HoldState::Pending | HoldState::Executing => format!(
                "This call to tool `{tool}` awaits a human's approval (approval {}, until {}) and was not run: {}. Call the tool again later with the same arguments to get its result.",
                hold.id,
                crate::notify::payload::ms_to_rfc3339(hold.expires_ms),
                gate_reasons(&hold)
            ),
            HoldState::Denied => format!(
                "A human ({}) denied this call to tool `{tool}`: {}. It was not run.",
                hold.decided_by.as_deref().unwrap_or("an approver"),
                hold.reason.as_deref().unwrap_or("no reason given")
            ),
            HoldState::Expired => format!(
                "The approval for this call to tool `{tool}` expired before a human decided; it was not run."
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
            HoldState::Approved => {
                if approvals.claim(&hold.id).await.map_err(internal)? {
                    let body = with_id(hold.body_to_forward(), &id)?;
                    return execute(cx.state, hold, body, cx.request_id.to_string(), rec).await;
                }
                continue;
            }
        };
        let meta = json!({
            "airlock/verdict": "hold",
            "airlock/approvalId": hold.id,
            "airlock/status": hold.state.as_str(),
            "airlock/requestId": cx.request_id,
        });
        let answer = jsonrpc::tool_error(&id, &text, msg.is_modern(), meta);
        return Ok(super::mcp::rpc_answer(
            StatusCode::OK,
            &answer,
            cx.request_id,
        ));
    }
    Err(ProxyError::Internal(
        "the approved call did not settle; call the tool again".into(),
    ))
}

fn gate_reasons(hold: &HoldRecord) -> String {
    hold.gates
        .iter()
        .map(|g| crate::policy::gate_text(&g.policy, &g.reason))
        .collect::<Vec<_>>()
        .join("; ")
}

/// The stored JSON-RPC request with the current attempt's id, so the agent
/// can match the tool's answer to the request it is waiting on.
fn with_id(stored: &[u8], id: &Value) -> Result<Bytes, ProxyError> {
    let mut v: Value = serde_json::from_slice(stored).map_err(internal)?;
    if let Some(obj) = v.as_object_mut() {
        obj.insert("id".into(), id.clone());
    }
    serde_json::to_vec(&v).map(Bytes::from).map_err(internal)
}
