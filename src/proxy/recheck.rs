//! Re-checking a stored REST call against the current policies, for the
//! approval module's decision path. It lives here, beside `call`, because
//! mapping a request to the policy's [`CallRequest`] is the proxy's job;
//! the approval module only sees the [`CallChecker`] trait, so it never
//! depends on the proxy.

use std::sync::Arc;

use arc_swap::ArcSwap;
use bytes::Bytes;
use serde_json::Value;

use super::call::http_call;
use super::hold::stored_parts;
use crate::approval::HoldRecord;
use crate::approval::{CallChecker, HumanAnswer, Recheck};
use crate::config::Protocol;
use crate::oversight::PauseBoard;
use crate::policy::{ContextNeeds, Escalation, Verdict};
use crate::snapshot::GatewaySnapshot;

pub struct SnapshotChecker {
    pub live: Arc<ArcSwap<GatewaySnapshot>>,
    /// Operators' pauses, which bind an approved call as the policies do.
    pub pauses: Arc<PauseBoard>,
}

impl CallChecker for SnapshotChecker {
    fn recheck(&self, hold: &HoldRecord, body: &[u8]) -> Result<Recheck, String> {
        let snap = self.live.load();
        if snap.route_named(&hold.route).is_none() {
            return Ok(Recheck::Deny {
                reasons: vec![format!("route `{}` is no longer configured", hold.route)],
            });
        }
        // The `Airlock-*` headers are not forwarded, so not stored with the
        // request either: what the agent said is stored beside it.
        let said = Escalation {
            confidence: hold.request.confidence.clone(),
            reason: hold.request.agent_reason.clone(),
        };
        let call = match snap.route_named(&hold.route).map(|r| r.config.protocol) {
            Some(Protocol::Mcp) => {
                let parsed = crate::mcp::jsonrpc::parse(body).map_err(|e| e.to_string())?;
                let msg = parsed
                    .messages
                    .into_iter()
                    .next()
                    .ok_or("the stored MCP request is empty")?
                    .map_err(|e| e.message)?;
                let parts = stored_parts(&hold.request)?;
                let common = super::call::common_context(
                    &parts,
                    &hold.request.path,
                    snap.policy.declared_names(),
                )
                .map_err(|e| e.to_string())?;
                crate::mcp::method::call_with_escalation(
                    &snap.policy,
                    &hold.agent,
                    &hold.route,
                    &msg,
                    &common,
                    &said,
                )
                .map_err(|e| e.to_string())?
            }
            _ => {
                let parts = stored_parts(&hold.request)?;
                let body = Bytes::copy_from_slice(body);
                let rules = super::call::BodyRules {
                    names: snap.policy.declared_names(),
                    opaque_bodies: snap
                        .route_named(&hold.route)
                        .is_some_and(|r| r.config.opaque_bodies),
                };
                let mut call = http_call(
                    &hold.agent,
                    &hold.route,
                    &parts,
                    hold.request.path.clone(),
                    &body,
                    rules,
                )
                .map_err(|e| e.to_string())?;
                said.insert_into(&mut call.context, ContextNeeds::everything());
                call
            }
        };
        let decision = match snap
            .policy
            .plan(&call)
            .and_then(|plan| snap.policy.decide(&call, plan))
        {
            Ok(d) => d,
            // An agent removed from the configuration can no longer be approved.
            Err(e) => {
                return Ok(Recheck::Deny {
                    reasons: vec![e.to_string()],
                })
            }
        };
        let verdict = match decision.verdict {
            Verdict::Allow => Recheck::Allow,
            Verdict::Deny { reasons } => Recheck::Deny { reasons },
            Verdict::Hold { gates } => Recheck::Hold {
                gates: gates.iter().map(super::hold::stored_gate).collect(),
            },
        };
        let (_, tool) = super::paused::route_and_tool(&call.resource);
        Ok(super::paused::apply_to_recheck(
            &self.pauses,
            &snap.config,
            hold,
            tool,
            verdict,
        ))
    }

    /// REST: the edit is the new body. MCP: the edit is the tool's new
    /// `arguments`, put into the stored JSON-RPC request.
    fn edited_body(&self, hold: &HoldRecord, edit: &Value) -> Result<Vec<u8>, String> {
        let snap = self.live.load();
        let body = match snap.route_named(&hold.route).map(|r| r.config.protocol) {
            Some(Protocol::Mcp) => {
                if !edit.is_object() {
                    return Err("edited MCP `arguments` must be an object".into());
                }
                let mut request: Value = serde_json::from_slice(&hold.request.body)
                    .map_err(|e| format!("the stored MCP request does not parse: {e}"))?;
                let params = request
                    .get_mut("params")
                    .and_then(Value::as_object_mut)
                    .ok_or("the stored MCP request has no `params`")?;
                params.insert("arguments".into(), edit.clone());
                request
            }
            _ => edit.clone(),
        };
        serde_json::to_vec(&body).map_err(|e| format!("the edited body does not encode: {e}"))
    }

    /// An MCP tool's answer must be a `CallToolResult`: an object with a
    /// `content` array, which is what MCP clients check for.
    fn check_answer(&self, hold: &HoldRecord, answer: &HumanAnswer) -> Result<(), String> {
        let snap = self.live.load();
        let Some(route) = snap.route_named(&hold.route) else {
            return Err(format!("route `{}` is no longer configured", hold.route));
        };
        match (route.config.protocol, answer) {
            (Protocol::Mcp, HumanAnswer::Mcp { result }) => {
                if result.get("content").is_some_and(Value::is_array) {
                    Ok(())
                } else {
                    Err("an MCP tool's `result` must be an object with a `content` array, such as `{\"content\": [{\"type\": \"text\", \"text\": \"...\"}]}`".into())
                }
            }
            (Protocol::Mcp, HumanAnswer::Http { .. }) => Err(format!(
                "approval `{}` holds an MCP tool call: answer with `result` (a tool result), not `status` and `body`",
                hold.id
            )),
            (_, HumanAnswer::Mcp { .. }) => Err(format!(
                "approval `{}` holds a REST call: answer with `status` and `body`, not `result`",
                hold.id
            )),
            (_, HumanAnswer::Http { .. }) => Ok(()),
        }
    }
}
