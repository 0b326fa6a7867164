//! Where an operator's pause meets the data plane (see `oversight`): a
//! `deny` pause refuses the calls it covers (403 `paused`); a `hold` pause
//! holds every call the policies allow under the gate `airlock:paused`,
//! whose approvers are `pause.approvers`, and leaves what they deny
//! denied. On an MCP route only a tool call can wait for a human, so a
//! `hold` pause lets the protocol's own requests (`initialize`,
//! `tools/list`, ...) through; a `deny` pause refuses them too.

use http::StatusCode;
use serde_json::{json, Value};

use super::error::ProxyError;
use super::ProxyBody;
use crate::approval::Recheck;
use crate::approval::{HoldRecord, StoredGate};
use crate::config::{Config, Protocol};
use crate::mcp::jsonrpc::{self, Message};
use crate::oversight::{describe, PauseBoard, PAUSED_GATE};
use crate::oversight::{PauseMode, PauseRecord};
use crate::policy::{CallRequest, Decision, Gate, Resource, Verdict};
use crate::proxy::trail::RequestTrail;
use crate::snapshot::GatewaySnapshot;

/// The refusal for a call that `deny` pause `p` covers.
pub(super) fn refusal(p: &PauseRecord) -> ProxyError {
    ProxyError::Paused {
        what: describe(&p.scope),
        by: p.by.clone(),
        reason: p.reason.clone(),
    }
}

/// Refuses a call by `agent` on `route` that a `deny` pause covers: the
/// check as soon as both are known, before the body is read.
pub(super) fn refuse_if_denied(
    board: &PauseBoard,
    agent: &str,
    route: &str,
) -> Result<(), ProxyError> {
    match board.lookup(agent, route, None) {
        Some(p) if p.mode == PauseMode::Deny => Err(refusal(&p)),
        _ => Ok(()),
    }
}

fn gate(cfg: &Config, p: &PauseRecord) -> Gate {
    Gate {
        policy: PAUSED_GATE.into(),
        reason: format!(
            "{} is paused by `{}`: {}",
            describe(&p.scope),
            p.by,
            p.reason
        ),
        approvers: Some(cfg.pause.approvers.clone()),
        timeout: None,
        elicit: false,
    }
}

/// `route` and the tool `resource` names, if it names one.
pub(super) fn route_and_tool(resource: &Resource) -> (&str, Option<&str>) {
    match resource {
        Resource::Route(r) => (r, None),
        Resource::Tool { route, tool } => (route, Some(tool)),
    }
}

/// The decision for `call` once the pauses in force are applied: the check
/// after the verdict, on both the REST and the MCP path.
pub(super) fn apply(
    board: &PauseBoard,
    snap: &GatewaySnapshot,
    call: &CallRequest,
    mut decision: Decision,
) -> Result<Decision, ProxyError> {
    let (route, tool) = route_and_tool(&call.resource);
    let Some(p) = board.lookup(&call.agent, route, tool) else {
        return Ok(decision);
    };
    if p.mode == PauseMode::Deny {
        return Err(refusal(&p));
    }
    let mcp_protocol = tool.is_none()
        && snap
            .route_named(route)
            .is_some_and(|r| r.config.protocol == Protocol::Mcp);
    if mcp_protocol {
        return Ok(decision);
    }
    let g = gate(&snap.config, &p);
    decision.verdict = match decision.verdict {
        Verdict::Allow => Verdict::Hold { gates: vec![g] },
        Verdict::Hold { mut gates } => {
            gates.push(g);
            Verdict::Hold { gates }
        }
        deny @ Verdict::Deny { .. } => {
            return Ok(Decision {
                verdict: deny,
                ..decision
            })
        }
    };
    decision.policies.push(PAUSED_GATE.into());
    Ok(decision)
}

/// The policies' `verdict` on stored call `hold`, with the pauses in force
/// applied, for re-checking an approved call before it runs.
pub(super) fn apply_to_recheck(
    board: &PauseBoard,
    cfg: &Config,
    hold: &HoldRecord,
    tool: Option<&str>,
    verdict: Recheck,
) -> Recheck {
    let Some(p) = board.lookup(&hold.agent, &hold.route, tool) else {
        return verdict;
    };
    if p.mode == PauseMode::Deny {
        return Recheck::Deny {
            reasons: vec![refusal(&p).to_string()],
        };
    }
    let g = gate(cfg, &p);
    let stored = StoredGate {
        policy: g.policy,
        reason: g.reason,
        approvers: g.approvers,
    };
    match verdict {
        Recheck::Allow => Recheck::Hold {
            gates: vec![stored],
        },
        Recheck::Hold { mut gates } => {
            gates.push(stored);
            Recheck::Hold { gates }
        }
        deny @ Recheck::Deny { .. } => deny,
    }
}

/// The JSON-RPC answer to an MCP message refused by a `deny` pause (the
/// whole POST is refused, as a batch with a refused member is): status 200
/// when the error answers a request, so that the client reads it, 403 when
/// there is no id to answer.
pub(super) fn rpc_refusal(
    e: &ProxyError,
    msg: &Message,
    batch: bool,
    trail: &mut RequestTrail,
    request_id: &str,
) -> http::Response<ProxyBody> {
    trail.verdict = "deny";
    trail.error = Some(e.kind());
    trail.fault = Some(e.fault());
    trail.reasons = vec![e.to_string()];
    let (id, status) = match msg.request_id() {
        Some(id) => (id.clone(), StatusCode::OK),
        None => (Value::Null, StatusCode::FORBIDDEN),
    };
    let data = json!({"error": e.kind(), "requestId": request_id});
    let answer = jsonrpc::error(&id, jsonrpc::PAUSED, &e.to_string(), Some(data));
    let answer = if batch {
        Value::Array(vec![answer])
    } else {
        answer
    };
    super::mcp::rpc_answer(status, &answer, request_id)
}
