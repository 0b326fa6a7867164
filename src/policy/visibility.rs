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
        let (action, resource) = self.scope_uids(call);
        let sets = self
            .enforced
            .sets_for(&action, &resource, &self.entities)
            .map_err(DecideError::Request)?;
        let request = self.request(call, &call.context, &action, &resource)?;
        let resp = self
            .authorizer
            .is_authorized(&request, &sets.main, &self.entities);
        let ids = |r: &Response| -> Vec<String> {
            r.diagnostics().reason().map(super::id_text).collect()
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
                policies: blocking.iter().map(|id| super::id_text(id)).collect(),
            });
        }
        let lifted = self
            .authorizer
            .is_authorized(&request, &sets.permits, &self.entities);
        if lifted.decision() == CedarDecision::Allow {
            return Ok(Visibility {
                visible: true,
                reason: "held: calls wait for a human's approval".to_string(),
                policies: ids(&resp),
            });
        }
        let mut failing_permits: Vec<String> = [&resp, &lifted]
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
            .map(|id| super::id_text(&id))
            .collect();
        failing_permits.sort();
        failing_permits.dedup();
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

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde_json::json;

    use super::super::{Directory, PrincipalSpec, Resource, Verdict};
    use super::*;

    const TOOLS: &str = r#"
action "crm/refund" in ["call_tool"] appliesTo {
  principal: [Agent], resource: [Tool],
  context: { "method": String, "tool": String, "arguments": { "amount": Long } }
};
action "crm/wipe" in ["call_tool"] appliesTo {
  principal: [Agent], resource: [Tool],
  context: { "method": String, "tool": String, "arguments": {} }
};
action "crm/pay" in ["call_tool"] appliesTo {
  principal: [Agent], resource: [Tool],
  context: { "method": String, "tool": String, "arguments": { "amount": decimal } }
};
action "crm/small" in ["call_tool"] appliesTo {
  principal: [Agent], resource: [Tool],
  context: { "method": String, "tool": String, "arguments": { "amount": Long } }
};
"#;

    const POLICIES: &str = r#"
@id("route-wide")
permit (principal, action in Action::"call_tool", resource in Route::"crm")
when { resource != Tool::"crm/small" };
@id("gate") @hold("big refunds")
forbid (principal, action == Action::"crm/refund", resource) when { context.arguments.amount > 100 };
@id("never-wipe")
forbid (principal, action == Action::"crm/wipe", resource);
@id("big-payments")
forbid (principal, action == Action::"crm/pay", resource)
when { context.arguments.amount.greaterThan(decimal("100.0")) };
@id("small-only")
permit (principal, action == Action::"crm/small", resource) when { context.arguments.amount < 10 };
"#;

    fn snapshot() -> (tempfile::TempDir, PolicySnapshot) {
        let dir = tempfile::tempdir().unwrap();
        let schema = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/policies/schema.cedarschema"
        ))
        .unwrap();
        std::fs::write(dir.path().join("schema.cedarschema"), schema).unwrap();
        std::fs::write(dir.path().join("tools.cedarschema"), TOOLS).unwrap();
        std::fs::write(dir.path().join("p.cedar"), POLICIES).unwrap();
        let directory = Directory {
            agents: vec![PrincipalSpec {
                id: "bot".into(),
                groups: vec![],
                attributes: BTreeMap::new(),
            }],
            routes: vec!["crm".into()],
            config_hash: String::new(),
        };
        let snap = PolicySnapshot::load(dir.path(), &directory).unwrap();
        (dir, snap)
    }

    fn call(tool: &str, args: Option<serde_json::Value>) -> CallRequest {
        let mut context = serde_json::Map::new();
        context.insert("method".into(), json!("tools/call"));
        context.insert("tool".into(), json!(tool));
        if let Some(a) = args {
            context.insert("arguments".into(), a);
        }
        CallRequest {
            agent: "bot".into(),
            action: format!("crm/{tool}"),
            resource: Resource::Tool {
                route: "crm".into(),
                tool: tool.into(),
            },
            context,
        }
    }

    #[test]
    fn declared_tools_are_under_their_route_and_arguments_gate_them() {
        let (_dir, snap) = snapshot();
        assert!(snap.has_action("crm/refund"));
        let small = snap
            .decide_now(&call("refund", Some(json!({"amount": 5}))))
            .unwrap();
        assert_eq!(small.verdict, Verdict::Allow);
        let big = snap
            .decide_now(&call("refund", Some(json!({"amount": 500}))))
            .unwrap();
        assert_eq!(big.verdict.name(), "hold");
        let mistyped = snap
            .decide_now(&call("refund", Some(json!({"amount": "500"}))))
            .unwrap();
        assert_eq!(
            mistyped.verdict.name(),
            "deny",
            "a mistyped argument never passes"
        );
    }

    #[test]
    fn numbers_declared_decimal_compare_whether_whole_or_not() {
        let (_dir, snap) = snapshot();
        let pay = |amount: serde_json::Value| {
            snap.decide_now(&call("pay", Some(json!({ "amount": amount }))))
                .unwrap()
                .verdict
                .name()
        };
        assert_eq!(pay(json!(50)), "allow");
        assert_eq!(pay(json!(50.25)), "allow");
        assert_eq!(pay(json!(150)), "deny");
        assert_eq!(pay(json!(100.5)), "deny");
        assert_eq!(pay(json!(0.123456)), "deny", "no decimal holds it: denied");
    }

    #[test]
    fn visibility_follows_what_some_call_could_get() {
        let (_dir, snap) = snapshot();
        let seen = |tool: &str| snap.visibility(&call(tool, None)).unwrap();
        assert!(seen("refund").visible, "allowed below the gate");
        let wipe = seen("wipe");
        assert!(!wipe.visible);
        assert!(wipe.reason.contains("never-wipe"), "{}", wipe.reason);
        let small = seen("small");
        assert!(
            small.visible,
            "a permit over arguments may allow it: {small:?}"
        );
        assert_eq!(small.policies, vec!["small-only".to_string()]);
    }
}
