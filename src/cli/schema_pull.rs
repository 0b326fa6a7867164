//! `airlock schema pull`: asks each MCP route's server for its tools and
//! writes their Cedar declarations (see [`crate::mcp::schema_gen`]) to a file
//! under `policies/` for review.
//!
//! It speaks the handshake revision every current server accepts:
//! `initialize`, `notifications/initialized`, then `tools/list` page by
//! page, with the route's injected headers.
//!
//! Some servers list a tool only to a client that can answer what the tool
//! asks of it (sampling, elicitation, roots). So each server is asked
//! twice: declaring no capabilities, then the capabilities agents declare
//! ([`AGENT_CAPABILITIES`] unless the command line says otherwise). Every
//! tool of either list is declared, and the tools seen only with
//! capabilities are named, so that policies can be written for them.

use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request};
use http_body_util::{BodyExt, Full};
use serde_json::{json, Value};

use crate::config::RouteConfig;
use crate::mcp::schema_gen::ToolDecl;
use crate::upstream::UpstreamClient;

const PROTOCOL_VERSION: &str = "2025-06-18";

/// What agents' MCP clients commonly declare at `initialize`.
pub const AGENT_CAPABILITIES: &str =
    r#"{"sampling": {}, "elicitation": {"form": {}, "url": {}}, "roots": {"listChanged": true}}"#;
const MAX_PAGES: usize = 100;
const MAX_ANSWER: usize = 16 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum PullError {
    #[error("route `{route}`: {detail}")]
    Upstream { route: String, detail: String },
    #[error("route `{route}`: the server answered `{method}` with an error: {error}")]
    Rpc {
        route: String,
        method: String,
        error: String,
    },
}

/// Every tool of one MCP route's server, asked without capabilities and
/// with `capabilities`, and the names of those it lists only with them.
pub async fn pull_tools(
    route: &RouteConfig,
    client: &UpstreamClient,
    capabilities: &Value,
) -> Result<(Vec<ToolDecl>, Vec<String>), PullError> {
    let plain = list_tools(route, client, &json!({})).await?;
    let mut tools = list_tools(route, client, capabilities).await?;
    let mut only_with: Vec<String> = tools
        .iter()
        .filter(|t| !plain.iter().any(|p| p.name == t.name))
        .map(|t| t.name.clone())
        .collect();
    only_with.sort();
    // A tool a server lists only without capabilities is still a tool.
    for t in plain {
        if !tools.iter().any(|c| c.name == t.name) {
            tools.push(t);
        }
    }
    tools.sort_by(|a, b| a.name.cmp(&b.name));
    Ok((tools, only_with))
}

/// One session's `tools/list`, every page, declaring `capabilities`.
async fn list_tools(
    route: &RouteConfig,
    client: &UpstreamClient,
    capabilities: &Value,
) -> Result<Vec<ToolDecl>, PullError> {
    let mut session = Session {
        route,
        client,
        id: None,
        version: None,
    };
    let init = session
        .call(
            "initialize",
            json!({
                "protocolVersion": PROTOCOL_VERSION,
                "capabilities": capabilities,
                "clientInfo": {"name": "airlock", "version": env!("CARGO_PKG_VERSION")},
            }),
            Some(1),
        )
        .await?;
    session.version = init
        .get("protocolVersion")
        .and_then(Value::as_str)
        .map(str::to_string);
    session
        .call("notifications/initialized", json!({}), None)
        .await?;
    let mut tools = Vec::new();
    let mut cursor: Option<String> = None;
    for page in 0..MAX_PAGES {
        let params = match &cursor {
            Some(c) => json!({"cursor": c}),
            None => json!({}),
        };
        let id = i64::try_from(page).unwrap_or(0) + 2;
        let result = session.call("tools/list", params, Some(id)).await?;
        for t in result
            .get("tools")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let Some(name) = t.get("name").and_then(Value::as_str) else {
                continue;
            };
            tools.push(ToolDecl {
                name: name.to_string(),
                description: t
                    .get("description")
                    .and_then(Value::as_str)
                    .map(str::to_string),
                input_schema: t.get("inputSchema").cloned().unwrap_or(Value::Null),
            });
        }
        cursor = result
            .get("nextCursor")
            .and_then(Value::as_str)
            .map(str::to_string);
        if cursor.is_none() {
            break;
        }
    }
    session.close().await;
    Ok(tools)
}

struct Session<'a> {
    route: &'a RouteConfig,
    client: &'a UpstreamClient,
    id: Option<HeaderValue>,
    version: Option<String>,
}

impl Session<'_> {
    fn fail(&self, detail: impl Into<String>) -> PullError {
        PullError::Upstream {
            route: self.route.name.clone(),
            detail: detail.into(),
        }
    }

    fn request(&self, method: Method, body: Bytes) -> Result<Request<Full<Bytes>>, PullError> {
        let mut req = Request::builder()
            .method(method)
            .uri(self.route.upstream.clone())
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::ACCEPT, "application/json, text/event-stream")
            .body(Full::new(body))
            .map_err(|e| self.fail(e.to_string()))?;
        let h = req.headers_mut();
        for (name, value) in &self.route.headers {
            h.insert(name.clone(), value.clone());
        }
        if let Some(id) = &self.id {
            h.insert(crate::mcp::SESSION_ID, id.clone());
        }
        if let Some(v) = self
            .version
            .as_deref()
            .and_then(|v| HeaderValue::from_str(v).ok())
        {
            h.insert("mcp-protocol-version", v);
        }
        Ok(req)
    }

    /// Sends one message; for a request (`id` given), returns its result.
    async fn call(
        &mut self,
        method: &str,
        params: Value,
        id: Option<i64>,
    ) -> Result<Value, PullError> {
        let mut msg = json!({"jsonrpc": "2.0", "method": method, "params": params});
        if let Some(id) = id {
            msg["id"] = json!(id);
        }
        let req = self.request(Method::POST, Bytes::from(msg.to_string()))?;
        let timeout = self.route.response_timeout.max(Duration::from_secs(1));
        let resp = tokio::time::timeout(timeout, self.client.request(req))
            .await
            .map_err(|_| self.fail(format!("no answer to `{method}` within {timeout:?}")))?
            .map_err(|e| self.fail(crate::upstream::describe_error(&e)))?;
        if let Some(sid) = resp.headers().get(crate::mcp::SESSION_ID) {
            self.id = Some(sid.clone());
        }
        let status = resp.status();
        let sse = resp
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|c| c.starts_with("text/event-stream"));
        let body = tokio::time::timeout(
            timeout,
            http_body_util::Limited::new(resp.into_body(), MAX_ANSWER).collect(),
        )
        .await
        .map_err(|_| {
            self.fail(format!(
                "the answer to `{method}` did not finish within {timeout:?}"
            ))
        })?
        .map_err(|e| self.fail(format!("reading the answer to `{method}`: {e}")))?
        .to_bytes();
        let Some(id) = id else {
            return Ok(Value::Null);
        };
        if !status.is_success() {
            return Err(self.fail(format!(
                "`{method}` got HTTP {status}: {}",
                String::from_utf8_lossy(&body)
                    .chars()
                    .take(300)
                    .collect::<String>()
            )));
        }
        let answer = if sse {
            sse_messages(&body)
                .into_iter()
                .find(|m| m.get("id") == Some(&json!(id)))
        } else {
            serde_json::from_slice::<Value>(&body).ok()
        }
        .ok_or_else(|| self.fail(format!("no JSON-RPC answer to `{method}`")))?;
        if let Some(err) = answer.get("error") {
            return Err(PullError::Rpc {
                route: self.route.name.clone(),
                method: method.to_string(),
                error: err.to_string(),
            });
        }
        Ok(answer.get("result").cloned().unwrap_or(Value::Null))
    }

    /// Ends the session; a server that does not support it is no problem.
    async fn close(&self) {
        if self.id.is_none() {
            return;
        }
        if let Ok(req) = self.request(Method::DELETE, Bytes::new()) {
            let _ = tokio::time::timeout(Duration::from_secs(2), self.client.request(req)).await;
        }
    }
}

/// The JSON messages in a complete event stream.
fn sse_messages(body: &[u8]) -> Vec<Value> {
    let text = String::from_utf8_lossy(body).replace("\r\n", "\n");
    text.split("\n\n")
        .filter_map(|event| {
            let data: Vec<&str> = event
                .lines()
                .filter_map(|l| l.strip_prefix("data:"))
                .map(|d| d.strip_prefix(' ').unwrap_or(d))
                .collect();
            serde_json::from_str(&data.join("\n")).ok()
        })
        .collect()
}

/// What `schema pull` made: the file's text, how many tools it declares,
/// and, per route, the tools its server listed only to a client declaring
/// capabilities.
pub struct Pulled {
    pub text: String,
    pub count: usize,
    pub only_with_capabilities: Vec<(String, Vec<String>)>,
}

/// The whole `tools.cedarschema` text for every MCP route of `config`, each
/// server asked without capabilities and with `capabilities`.
pub async fn schema_text(
    config: &crate::config::Config,
    clients: &crate::upstream::UpstreamClients,
    capabilities: &Value,
) -> Result<Pulled, PullError> {
    let mut out = String::from(
        "// Tool declarations for MCP routes, written by `airlock schema pull` from\n\
         // each server's own `tools/list`. Review changes like code, and pull again\n\
         // when a server's tools change.\n\
         //\n\
         // Each tool is `Action::\"<route>/<tool>\"`, a member of `call_tool`, on\n\
         // `Tool::\"<route>/<tool>\"`; its arguments are `context.arguments`.\n\n",
    );
    let mut count = 0;
    let mut only_with_capabilities = Vec::new();
    for route in config
        .routes
        .iter()
        .filter(|r| r.protocol == crate::config::Protocol::Mcp)
    {
        let client = clients
            .client(route.ca_file.as_deref(), route.connect_timeout)
            .map_err(|e| PullError::Upstream {
                route: route.name.clone(),
                detail: e.to_string(),
            })?;
        let (tools, only_with) = pull_tools(route, &client, capabilities).await?;
        count += tools.len();
        if !only_with.is_empty() {
            out.push_str(&format!(
                "// `{}` lists these tools only to clients declaring capabilities {capabilities}: {}\n",
                route.name,
                only_with.join(", ")
            ));
            only_with_capabilities.push((route.name.clone(), only_with));
        }
        out.push_str(&crate::mcp::schema_gen::route_section(
            &route.name,
            &route.upstream.to_string(),
            &tools,
        ));
    }
    Ok(Pulled {
        text: out,
        count,
        only_with_capabilities,
    })
}
