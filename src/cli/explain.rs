//! `airlock explain`: the verdict a call would get, computed by the same
//! code the proxy runs, without sending anything anywhere.

use bytes::Bytes;
use serde_json::{json, Value};

use crate::policy::{CallRequest, ContextNeeds, Decision, Escalation, Verdict};
use crate::proxy::call::http_call;
use crate::proxy::error::ProxyError;
use crate::snapshot::GatewaySnapshot;

#[derive(Debug, thiserror::Error)]
pub enum ExplainError {
    #[error("agent `{0}` is not configured")]
    UnknownAgent(String),
    #[error("`{0}` is not an HTTP method")]
    BadMethod(String),
    #[error("`{0}` is not `ROUTE/TOOL` for a route with `protocol: mcp`")]
    BadTool(String),
    #[error("`--args` must be a JSON object: {0}")]
    BadArgs(String),
    #[error("{0}")]
    BadEscalation(#[from] crate::policy::EscalationError),
    #[error("the call would be refused before any policy runs: {0}")]
    Refused(#[from] ProxyError),
}

/// A REST call to explain. `path` may carry a query string.
pub struct HttpCallSpec<'a> {
    pub agent: &'a str,
    pub method: &'a str,
    pub path: &'a str,
    pub body: Option<&'a str>,
    /// Extra request headers, e.g. `airlock-confidence`.
    pub headers: &'a [(String, String)],
}

/// A call decided without being sent: what `explain` and `airlock test`
/// report on.
pub struct DecidedCall {
    pub decision: Decision,
    pub call: CallRequest,
    pub route: String,
}

/// Builds the call exactly as the proxy would and decides it against `snap`.
pub fn decide_http(
    snap: &GatewaySnapshot,
    spec: &HttpCallSpec,
) -> Result<DecidedCall, ExplainError> {
    if snap.agent(spec.agent).is_none() {
        return Err(ExplainError::UnknownAgent(spec.agent.to_string()));
    }
    let method: http::Method = spec
        .method
        .to_ascii_uppercase()
        .parse()
        .map_err(|_| ExplainError::BadMethod(spec.method.to_string()))?;
    let mut builder = http::Request::builder().method(method).uri(spec.path);
    let typed = spec
        .headers
        .iter()
        .any(|(n, _)| n.eq_ignore_ascii_case("content-type"));
    if spec.body.is_some() && !typed {
        builder = builder.header(http::header::CONTENT_TYPE, "application/json");
    }
    for (name, value) in spec.headers {
        builder = builder.header(name.as_str(), value.as_str());
    }
    let (parts, ()) = builder
        .body(())
        .map_err(|e| ProxyError::bad_request("bad_request", e.to_string()))?
        .into_parts();
    let crate::proxy::Routed {
        route,
        decoded,
        params,
        ..
    } = crate::proxy::route_path(snap, parts.uri.path())?;
    crate::proxy::screen_params(route, params)?;
    let body = Bytes::from(spec.body.unwrap_or("").to_string());
    let rules = crate::proxy::call::BodyRules {
        names: snap.policy.declared_names(),
        opaque_bodies: route.config.opaque_bodies,
    };
    let call = http_call(
        spec.agent,
        &route.config.name,
        &parts,
        decoded,
        &body,
        rules,
    )?;
    let decision = snap
        .policy
        .plan(&call)
        .and_then(|plan| snap.policy.decide(&call, plan))
        .map_err(|e| ProxyError::Internal(e.to_string()))?;
    Ok(DecidedCall {
        decision,
        call,
        route: route.config.name.clone(),
    })
}

/// Decides a REST call against `snap` and describes the result as JSON.
pub fn explain_http(snap: &GatewaySnapshot, spec: &HttpCallSpec) -> Result<Value, ExplainError> {
    let DecidedCall {
        decision,
        call,
        route,
    } = decide_http(snap, spec)?;
    let (reasons, gates) = (
        decision.verdict.reasons(),
        decision.verdict.gates().to_vec(),
    );
    // Nothing permits the call: show the permits that are scoped to it, so
    // the author sees which condition or principal scope to look at.
    let nothing_permits = matches!(decision.verdict, Verdict::Deny { .. })
        && decision.policies.is_empty()
        && decision.errors.is_empty();
    let closest = if nothing_permits {
        let permits = snap.policy.scoped_permits(&call);
        json!({
            "note": if permits.is_empty() {
                "nothing permits this, and no permit is scoped to this action and resource"
            } else {
                "nothing permits this; these permits are scoped to it"
            },
            "permits": permits,
        })
    } else {
        Value::Null
    };
    Ok(json!({
        "verdict": decision.verdict.name(),
        "closest_permits": closest,
        "policies": decision.policies,
        "reasons": reasons,
        "gates": gates,
        "errors": decision.errors,
        "shadow": decision.shadow,
        "agent": call.agent,
        "route": route,
        "action": format!("Action::\"{}\"", call.action),
        "resource": call.resource.to_string(),
        "context": Value::Object(call.context),
        "snapshot": decision.snapshot.as_ref(),
        "eval_micros": decision.eval_micros,
    }))
}

/// Decides an MCP `tools/call` of `tool` (`ROUTE/TOOL`) with `args` (a JSON
/// object), and says whether the tool is listed for the agent and why.
pub fn explain_tool(
    snap: &GatewaySnapshot,
    agent: &str,
    tool: &str,
    args: Option<&str>,
    said: &Escalation,
) -> Result<Value, ExplainError> {
    let arguments = match args {
        None => Value::Object(serde_json::Map::new()),
        Some(a) => match crate::policy::value::parse_json_strict(a.as_bytes()) {
            Ok(v) => v,
            Err(e) => return Err(ExplainError::BadArgs(e.to_string())),
        },
    };
    let DecidedCall { call, decision, .. } = decide_tool(snap, agent, tool, arguments, said)?;
    let crate::policy::Resource::Tool { route, tool: name } = &call.resource else {
        return Err(ExplainError::BadTool(tool.to_string()));
    };
    let (route, name) = (route.as_str(), name.as_str());
    let common = posted_context(snap, route);
    let listing = crate::mcp::method::tool_call(&snap.policy, agent, route, name, None, &common);
    let decide_err = |e: crate::policy::DecideError| ProxyError::Internal(e.to_string());
    let visibility = snap.policy.visibility(&listing).map_err(decide_err)?;
    let (reasons, gates) = (
        decision.verdict.reasons(),
        decision.verdict.gates().to_vec(),
    );
    let declared = call.action != "call_tool";
    Ok(json!({
        "verdict": decision.verdict.name(),
        "policies": decision.policies,
        "reasons": reasons,
        "gates": gates,
        "errors": decision.errors,
        "shadow": decision.shadow,
        "agent": call.agent,
        "route": route,
        "action": format!("Action::\"{}\"", call.action),
        "resource": call.resource.to_string(),
        "declared": declared,
        "context": Value::Object(call.context),
        "listed": visibility,
        "note": (!declared).then(|| format!(
            "tool `{tool}` has no per-tool action, so policies cannot read its arguments and it is not under `Route::\"{route}\"`; run `airlock schema pull`"
        )),
        "snapshot": decision.snapshot.as_ref(),
        "eval_micros": decision.eval_micros,
    }))
}

/// The common context of a JSON-RPC message posted to MCP route `route`
/// the way the SDKs post one: `POST` to the route's prefix, no query,
/// declared JSON.
fn posted_context(snap: &GatewaySnapshot, route: &str) -> serde_json::Map<String, Value> {
    let path = snap
        .route_named(route)
        .map(|r| r.config.prefix.clone())
        .unwrap_or_default();
    let mut common = serde_json::Map::new();
    common.insert("method".into(), json!("POST"));
    common.insert("path".into(), json!(path));
    common.insert("query".into(), json!({}));
    common.insert(
        "headers".into(),
        json!({"content-type": "application/json"}),
    );
    common
}

/// Decides an MCP tool call named `ROUTE/TOOL` with these arguments: the
/// code path `explain --tool` and `airlock test` share with the proxy.
pub fn decide_tool(
    snap: &GatewaySnapshot,
    agent: &str,
    tool: &str,
    arguments: Value,
    said: &Escalation,
) -> Result<DecidedCall, ExplainError> {
    if snap.agent(agent).is_none() {
        return Err(ExplainError::UnknownAgent(agent.to_string()));
    }
    let (route, name) = tool
        .split_once('/')
        .filter(|(r, t)| {
            !t.is_empty()
                && snap
                    .route_named(r)
                    .is_some_and(|r| r.config.protocol == crate::config::Protocol::Mcp)
        })
        .ok_or_else(|| ExplainError::BadTool(tool.to_string()))?;
    if !arguments.is_object() {
        return Err(ExplainError::BadArgs("not an object".into()));
    }
    crate::mcp::method::check_arguments(&snap.policy, &arguments)
        .map_err(|e| ExplainError::BadArgs(e.to_string()))?;
    let common = posted_context(snap, route);
    let mut call =
        crate::mcp::method::tool_call(&snap.policy, agent, route, name, Some(arguments), &common);
    // What the agent says of itself (`_meta` or the headers), as the proxy
    // adds it to every tool call's context.
    said.insert_into(&mut call.context, ContextNeeds::everything());
    let decision = snap
        .policy
        .plan(&call)
        .and_then(|plan| snap.policy.decide(&call, plan))
        .map_err(|e| ProxyError::Internal(e.to_string()))?;
    Ok(DecidedCall {
        call,
        decision,
        route: route.to_string(),
    })
}
