//! Whether a tool belongs in an agent's `tools/list`: the agent sees a tool
//! it could call, allowed or held, with some arguments.
//!
//! The question is asked without arguments. A policy that reads an argument
//! then fails to evaluate, and that failure means "it depends on the
//! arguments": a failing permit may allow some call, so the tool is shown;
//! a failing forbid may block only some calls, so it hides nothing. A forbid
//! that holds whatever the arguments are hides the tool, unless it is a
//! `@hold` gate that a human may lift.

use cedar_policy::{Decision as CedarDecision, Effect, PolicyId, Response};
use serde::Serialize;

use super::{CallRequest, DecideError, PolicySnapshot};

/// The answer to "is this tool listed for this agent?", with the why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Visibility {
    pub visible: bool,
    pub reason: String,
    /// The policies the answer rests on.
    pub policies: Vec<String>,
}

impl PolicySnapshot {
    /// Decides whether the tool named by `call` (whose context carries no
    /// arguments) is shown to the agent.
    pub fn visibility(&self, call: &CallRequest) -> Result<Visibility, DecideError> {
        if !self.agents.contains(&call.agent) {
            return Err(DecideError::UnknownAgent(call.agent.clone()));
        }
        let request = self.request(call)?;
        let sets = &self.enforced;
        let resp = self
            .authorizer
            .is_authorized(&request, &sets.main, &self.entities);
        let ids = |r: &Response| -> Vec<String> {
            r.diagnostics().reason().map(|id| id.to_string()).collect()
        };
        if resp.decision() == CedarDecision::Allow {
            return Ok(Visibility {
                visible: true,
                reason: "allowed".to_string(),
                policies: ids(&resp),
            });
        }
        let blocking: Vec<&PolicyId> = resp
            .diagnostics()
            .reason()
            .filter(|id| self.meta.get(*id).is_none_or(|m| m.hold.is_none()))
            .collect();
        if let Some(first) = blocking.first() {
            return Ok(Visibility {
                visible: false,
                reason: format!(
                    "hidden: every call is denied, {}",
                    self.deny_reason(first.as_ref())
                ),
                policies: blocking.iter().map(|id| id.to_string()).collect(),
            });
        }
        let lifted = self
            .authorizer
            .is_authorized(&request, &sets.lifted, &self.entities);
        if lifted.decision() == CedarDecision::Allow {
            return Ok(Visibility {
                visible: true,
                reason: "held: calls wait for a human's approval".to_string(),
                policies: ids(&resp),
            });
        }
        let failing_permits: Vec<String> = [&resp, &lifted]
            .iter()
            .flat_map(|r| r.diagnostics().errors())
            .map(|e| {
                let cedar_policy::AuthorizationError::PolicyEvaluationError(pe) = e;
                pe.policy_id().clone()
            })
            .filter(|id| {
                self.meta
                    .get(id)
                    .is_some_and(|m| m.effect == Effect::Permit)
            })
            .map(|id| id.to_string())
            .collect();
        if !failing_permits.is_empty() {
            return Ok(Visibility {
                visible: true,
                reason: "allowed or held depending on the arguments".to_string(),
                policies: failing_permits,
            });
        }
        Ok(Visibility {
            visible: false,
            reason: format!(
                "hidden: no policy permits agent `{}` to `{}` on `{}`",
                call.agent, call.action, call.resource
            ),
            policies: Vec::new(),
        })
    }
}
