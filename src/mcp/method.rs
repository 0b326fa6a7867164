//! From a JSON-RPC method to the Cedar request a policy judges.
//!
//! | method | action | resource | context |
//! | --- | --- | --- | --- |
//! | `tools/call` | `"<route>/<tool>"` when the schema declares it, else `"call_tool"` | `Tool::"<route>/<tool>"` | `method`, `tool`, `arguments` |
//! | `tools/list` | `list_tools` | `Route::"<route>"` | `method` |
//! | `resources/list`, `resources/templates/list` | `list_resources` | route | `method` |
//! | `prompts/list` | `list_prompts` | route | `method` |
//! | `resources/read`, `resources/subscribe`, `resources/unsubscribe` | `read_resource` | route | `method`, `uri` |
//! | `prompts/get` | `get_prompt` | route | `method`, `name` |
//! | `initialize`, `server/discover`, `ping`, `notifications/*`, `logging/setLevel`, `completion/complete`, `subscriptions/listen`, client responses, the GET stream, `DELETE` | `protocol` | route | `method` |
//! | anything else | `other_method` | route | `method` |
//!
//! Every context may also have `confidence` and `agent_reason`
//! ([`call_with_escalation`], `policy::escalation`), and has `body_kind`: `json` for a JSON-RPC message,
//! `none` for the GET stream and `DELETE`. Every one of these actions is a
//! member of `Action::"mcp"`, and every per-tool action of
//! `Action::"call_tool"`.
//!
//! A tool's `arguments` may hold no key, at any depth, that reads as a
//! name the schema declares without being it (`Amount` for `amount`): a
//! server that matches keys without regard to case would bind it to the
//! field the policy finds empty (see `policy::keys`).

use serde_json::{json, Map, Value};

use super::jsonrpc::Message;
use crate::policy::keys::fold;
use crate::policy::{
    CallRequest, ContextNeeds, Escalation, EscalationError, PolicySnapshot, Resource,
};

/// Methods that belong to the protocol itself rather than to any tool,
/// resource or prompt.
const HOUSEKEEPING: &[&str] = &[
    "initialize",
    "server/discover",
    "ping",
    "logging/setLevel",
    "completion/complete",
    "subscriptions/listen",
];

/// The methods [`call_for`] names, besides [`HOUSEKEEPING`] and
/// `notifications/*`.
const KNOWN: &[&str] = &[
    "tools/call",
    "tools/list",
    "resources/list",
    "resources/templates/list",
    "prompts/list",
    "resources/read",
    "resources/subscribe",
    "resources/unsubscribe",
    "prompts/get",
];

/// What is wrong with a message's method or parameters.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParamsError {
    #[error("`{method}` needs `params.{field}` as a {kind}")]
    Missing {
        method: String,
        field: &'static str,
        kind: &'static str,
    },
    #[error("method `{method}` is not `{known}`: methods are compared exactly, and a server that folds case would run it as `{known}`")]
    LookAlike { method: String, known: &'static str },
    #[error("`params.arguments` has key `{key}`, which servers that match keys without regard to case read as `{declared}`; send `{declared}`")]
    AmbiguousKey { key: String, declared: String },
    #[error(transparent)]
    Escalation(#[from] EscalationError),
}

impl ParamsError {
    /// The JSON-RPC error code of the answer.
    pub fn code(&self) -> i64 {
        match self {
            ParamsError::Missing { .. }
            | ParamsError::AmbiguousKey { .. }
            | ParamsError::Escalation(_) => super::jsonrpc::INVALID_PARAMS,
            ParamsError::LookAlike { .. } => super::jsonrpc::INVALID_REQUEST,
        }
    }

    /// The `error` kind of the audit record.
    pub fn kind(&self) -> &'static str {
        match self {
            ParamsError::Missing { .. } | ParamsError::AmbiguousKey { .. } => "invalid_params",
            ParamsError::LookAlike { .. } => "mcp_method_case",
            ParamsError::Escalation(_) => "invalid_confidence",
        }
    }
}

/// The known method `method` is not, but reads as once case is folded
/// (the way Go's `EqualFold` folds, `K` and `ſ` included).
fn look_alike(method: &str) -> Option<&'static str> {
    // The one fold JSON keys are compared with too.
    let folded = fold(method);
    if let Some(known) = KNOWN
        .iter()
        .chain(HOUSEKEEPING)
        .copied()
        .find(|k| *fold(k) == *folded)
    {
        return Some(known);
    }
    const NOTIFICATIONS: &str = "notifications/";
    let head = folded.chars().take(NOTIFICATIONS.len());
    (!method.starts_with(NOTIFICATIONS) && head.eq(NOTIFICATIONS.chars()))
        .then_some("notifications/*")
}

/// The field of `params` that names what a method acts on, which the
/// `Mcp-Name` header must repeat.
pub fn name_field(method: &str) -> Option<&'static str> {
    match method {
        "tools/call" | "prompts/get" => Some("name"),
        "resources/read" | "resources/subscribe" | "resources/unsubscribe" => Some("uri"),
        _ => None,
    }
}

/// Builds the call a policy judges for one message on route `route`;
/// `common` is the HTTP request's part of the context (`method`, `path`,
/// `query`, `headers`), which every call carries.
pub fn call_for(
    policy: &PolicySnapshot,
    agent: &str,
    route: &str,
    msg: &Message,
    common: &Map<String, Value>,
) -> Result<CallRequest, ParamsError> {
    let method = msg.method().unwrap_or("(response)");
    let params = msg.params();
    let text = |field: &'static str| -> Result<String, ParamsError> {
        params
            .and_then(|p| p.get(field))
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| ParamsError::Missing {
                method: method.to_string(),
                field,
                kind: "string",
            })
    };
    let mut context = common.clone();
    context.insert("rpc_method".into(), json!(method));
    context.insert("body_kind".into(), json!("json"));
    let route_call = |action: &str, context: Map<String, Value>| CallRequest {
        agent: agent.to_string(),
        action: action.to_string(),
        resource: Resource::Route(route.to_string()),
        context,
    };
    Ok(match method {
        "tools/call" => {
            let tool = text("name")?;
            let arguments = match params.and_then(|p| p.get("arguments")) {
                None | Some(Value::Null) => Value::Object(Map::new()),
                Some(a @ Value::Object(_)) => {
                    check_arguments(policy, a)?;
                    a.clone()
                }
                Some(_) => {
                    return Err(ParamsError::Missing {
                        method: method.to_string(),
                        field: "arguments",
                        kind: "object",
                    })
                }
            };
            tool_call(policy, agent, route, &tool, Some(arguments), common)
        }
        "tools/list" => route_call("list_tools", context),
        "resources/list" | "resources/templates/list" => route_call("list_resources", context),
        "prompts/list" => route_call("list_prompts", context),
        "resources/read" | "resources/subscribe" | "resources/unsubscribe" => {
            context.insert("uri".into(), json!(text("uri")?));
            route_call("read_resource", context)
        }
        "prompts/get" => {
            context.insert("name".into(), json!(text("name")?));
            route_call("get_prompt", context)
        }
        m if HOUSEKEEPING.contains(&m)
            || m.starts_with("notifications/")
            || msg.method().is_none() =>
        {
            route_call("protocol", context)
        }
        m => {
            if let Some(known) = look_alike(m) {
                return Err(ParamsError::LookAlike {
                    method: m.to_string(),
                    known,
                });
            }
            route_call("other_method", context)
        }
    })
}

/// [`call_for`], with the agent's confidence and reason in the context:
/// from `params._meta`, joined with what the headers said (`headers`).
pub fn call_with_escalation(
    policy: &PolicySnapshot,
    agent: &str,
    route: &str,
    msg: &Message,
    common: &Map<String, Value>,
    headers: &Escalation,
) -> Result<CallRequest, ParamsError> {
    let mut call = call_for(policy, agent, route, msg, common)?;
    let said = headers.clone().with_meta(msg.params())?;
    said.insert_into(&mut call.context, ContextNeeds::everything());
    Ok(call)
}

/// Refuses tool arguments with a key, at any depth, that reads as a name
/// the schema declares without being it. Keys that collide with each other
/// are refused when the message is parsed.
pub fn check_arguments(policy: &PolicySnapshot, arguments: &Value) -> Result<(), ParamsError> {
    unambiguous(arguments, policy.declared_names(), 0)
}

fn unambiguous(
    v: &Value,
    names: &crate::policy::keys::DeclaredNames,
    depth: usize,
) -> Result<(), ParamsError> {
    // serde_json refuses deeper documents.
    if depth > 128 {
        return Ok(());
    }
    match v {
        Value::Object(map) => map.iter().try_for_each(|(k, v)| {
            if let Some(declared) = names.json_key(k) {
                return Err(ParamsError::AmbiguousKey {
                    key: k.clone(),
                    declared: declared.to_string(),
                });
            }
            unambiguous(v, names, depth + 1)
        }),
        Value::Array(items) => items
            .iter()
            .try_for_each(|i| unambiguous(i, names, depth + 1)),
        _ => Ok(()),
    }
}

/// The call for one tool: its per-tool action when the schema declares one.
/// `arguments` is `None` when asking whether the tool is listed; `common`
/// is the HTTP request's part of the context.
pub fn tool_call(
    policy: &PolicySnapshot,
    agent: &str,
    route: &str,
    tool: &str,
    arguments: Option<Value>,
    common: &Map<String, Value>,
) -> CallRequest {
    let per_tool = format!("{route}/{tool}");
    let action = if policy.has_action(&per_tool) {
        per_tool
    } else {
        "call_tool".to_string()
    };
    let mut context = common.clone();
    context.insert("rpc_method".into(), json!("tools/call"));
    context.insert("body_kind".into(), json!("json"));
    context.insert("tool".into(), json!(tool));
    if let Some(a) = arguments {
        context.insert("arguments".into(), a);
    }
    CallRequest {
        agent: agent.to_string(),
        action,
        resource: Resource::Tool {
            route: route.to_string(),
            tool: tool.to_string(),
        },
        context,
    }
}

/// A call for a request with no JSON-RPC body: the GET stream or `DELETE`.
/// `common` carries the HTTP method, so no `rpc_method` is set.
pub fn transport_call(agent: &str, route: &str, common: &Map<String, Value>) -> CallRequest {
    let mut context = common.clone();
    context.insert("body_kind".into(), json!("none"));
    CallRequest {
        agent: agent.to_string(),
        action: "protocol".to_string(),
        resource: Resource::Route(route.to_string()),
        context,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_method_that_only_folds_to_a_known_one_is_named() {
        assert_eq!(look_alike("Tools/call"), Some("tools/call"));
        assert_eq!(look_alike("TOOLS/CALL"), Some("tools/call"));
        assert_eq!(look_alike("logging/setlevel"), Some("logging/setLevel"));
        // The Kelvin sign and the long s fold to `k` and `s` in Go.
        assert_eq!(look_alike("tools/li\u{17F}t"), Some("tools/list"));
        assert_eq!(
            look_alike("Notifications/initialized"),
            Some("notifications/*")
        );
        assert_eq!(look_alike("tools/calls"), None);
        assert_eq!(look_alike("x/custom"), None);
    }
}
