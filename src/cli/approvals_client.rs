//! The `airlock approvals` command: a small client of the admin API's
//! approval endpoints, for humans at a terminal; `pauses` adds operators'
//! commands.

mod pauses;
mod reviews;
mod watch;

use bytes::Bytes;
use http::{header, Method, Request};
use http_body_util::{BodyExt, Full};
use serde_json::{json, Value};

use crate::upstream::{UpstreamClient, UpstreamClients};
pub use pauses::{OverrideCommand, PauseTarget};
pub use reviews::ReviewsCommand;
pub use watch::WatchFilter;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("`{0}` is not a valid admin URL")]
    BadUrl(String),
    #[error("cannot reach the admin API at `{url}`: {detail}")]
    Unreachable { url: String, detail: String },
    #[error("the admin API answered {status}: {message}")]
    Refused { status: u16, message: String },
    #[error("`--args` is not JSON: {0}")]
    BadArgs(String),
    #[error("the answer is not JSON: {0}")]
    BadAnswer(String),
    #[error("{0}")]
    Setup(String),
}

/// What to do.
pub enum ApprovalsCommand {
    /// One page (`limit`, starting at `cursor`), or every page with `all`.
    List {
        status: Option<String>,
        limit: Option<u32>,
        cursor: Option<String>,
        all: bool,
    },
    Show {
        id: String,
    },
    Approve {
        id: String,
        reason: Option<String>,
        args: Option<String>,
    },
    Deny {
        id: String,
        reason: String,
    },
    /// Take-over: answer in the tool's place. `answer` is the JSON text of
    /// the REST body (with `status`) or, with `mcp`, of the tool result.
    Respond {
        id: String,
        status: Option<u16>,
        answer: Option<String>,
        mcp: bool,
        reason: Option<String>,
    },
}

pub struct ApprovalsClient {
    base: String,
    token: Option<String>,
    /// Its timeout is the connect's alone, so `watch` can follow a stream
    /// that stays quiet for long.
    client: UpstreamClient,
}

impl ApprovalsClient {
    pub fn new(base: &str, token: Option<String>) -> Result<Self, ClientError> {
        let clients = UpstreamClients::new(std::time::Duration::from_secs(5), 0);
        let client = clients
            .client(None, std::time::Duration::from_secs(5))
            .map_err(|e| ClientError::Setup(e.to_string()))?;
        Ok(ApprovalsClient {
            base: base.trim_end_matches('/').to_string(),
            token,
            client,
        })
    }

    /// Runs the command and returns what to print.
    pub async fn run(&self, cmd: ApprovalsCommand) -> Result<String, ClientError> {
        match cmd {
            ApprovalsCommand::List {
                status,
                limit,
                cursor,
                all,
            } => self.list(status, limit, cursor, all).await,
            ApprovalsCommand::Show { id } => {
                let v = self
                    .call(Method::GET, &format!("/v1/approvals/{id}"), None)
                    .await?;
                Ok(serde_json::to_string_pretty(&v).unwrap_or_default())
            }
            ApprovalsCommand::Approve { id, reason, args } => {
                let mut body = json!({"decision": "approve", "reason": reason});
                if let Some(a) = args {
                    let parsed: Value = serde_json::from_str(&a)
                        .map_err(|e| ClientError::BadArgs(e.to_string()))?;
                    body["arguments"] = parsed;
                }
                let v = self.decide(&id, body).await?;
                Ok(format!(
                    "approved {id} (status: {})",
                    v["status"].as_str().unwrap_or("?")
                ))
            }
            ApprovalsCommand::Deny { id, reason } => {
                let v = self
                    .decide(&id, json!({"decision": "deny", "reason": reason}))
                    .await?;
                Ok(format!(
                    "denied {id} (status: {})",
                    v["status"].as_str().unwrap_or("?")
                ))
            }
            ApprovalsCommand::Respond {
                id,
                status,
                answer,
                mcp,
                reason,
            } => self.respond(&id, status, answer, mcp, reason).await,
        }
    }

    async fn respond(
        &self,
        id: &str,
        status: Option<u16>,
        answer: Option<String>,
        mcp: bool,
        reason: Option<String>,
    ) -> Result<String, ClientError> {
        let answer = answer
            .map(|a| serde_json::from_str::<Value>(&a))
            .transpose()
            .map_err(|e| ClientError::BadAnswer(e.to_string()))?;
        let mut body = json!({"decision": "respond", "reason": reason});
        match (mcp, answer) {
            (true, Some(result)) => body["result"] = result,
            (true, None) => {
                return Err(ClientError::BadAnswer(
                    "an MCP tool call is answered with `--result FILE`".into(),
                ))
            }
            (false, answer) => {
                body["status"] = json!(status.unwrap_or(200));
                if let Some(a) = answer {
                    body["body"] = a;
                }
            }
        }
        let v = self.decide(id, body).await?;
        Ok(format!(
            "answered {id} in the tool's place (status: {})",
            v["status"].as_str().unwrap_or("?")
        ))
    }

    async fn list(
        &self,
        status: Option<String>,
        limit: Option<u32>,
        cursor: Option<String>,
        all: bool,
    ) -> Result<String, ClientError> {
        let status = status.unwrap_or_else(|| "pending".into());
        let mut rows = Vec::new();
        let mut cursor = cursor;
        // Bounded: at most 10,000 pages; a server handing out cursors in a
        // loop cannot keep the command running for ever.
        for _ in 0..10_000 {
            let mut path = format!("/v1/approvals?status={}", query_value(&status));
            if let Some(l) = limit {
                path.push_str(&format!("&limit={l}"));
            }
            if let Some(c) = &cursor {
                path.push_str(&format!("&cursor={}", query_value(c)));
            }
            let v = self.call(Method::GET, &path, None).await?;
            rows.extend(v["approvals"].as_array().cloned().unwrap_or_default());
            cursor = v["next_cursor"].as_str().map(str::to_string);
            if !all || cursor.is_none() {
                break;
            }
        }
        let mut out = table(&rows);
        if let Some(c) = cursor {
            out.push_str(&format!(
                "more: airlock approvals list --status {status} --cursor {c}   (or --all)\n"
            ));
        }
        Ok(out)
    }

    async fn decide(&self, id: &str, body: Value) -> Result<Value, ClientError> {
        self.call(
            Method::POST,
            &format!("/v1/approvals/{id}/decision"),
            Some(body),
        )
        .await
    }

    /// Sends one request to the admin API with the caller's token:
    /// `body` as JSON when given, `accept` as the `Accept` header.
    async fn send(
        &self,
        method: Method,
        path: &str,
        accept: Option<&'static str>,
        body: Option<Value>,
    ) -> Result<http::Response<hyper::body::Incoming>, ClientError> {
        let url = format!("{}{path}", self.base);
        let mut b = Request::builder().method(method).uri(url.as_str());
        if let Some(a) = accept {
            b = b.header(header::ACCEPT, a);
        }
        if let Some(t) = &self.token {
            b = b.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        let bytes = match body {
            Some(v) => {
                b = b.header(header::CONTENT_TYPE, "application/json");
                Bytes::from(v.to_string())
            }
            None => Bytes::new(),
        };
        let req = b
            .body(Full::new(bytes))
            .map_err(|_| ClientError::BadUrl(self.base.clone()))?;
        self.client
            .request(req)
            .await
            .map_err(|e| self.unreachable(crate::upstream::describe_error(&e)))
    }

    fn unreachable(&self, detail: String) -> ClientError {
        ClientError::Unreachable {
            url: self.base.clone(),
            detail,
        }
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, ClientError> {
        let resp = self.send(method, path, None, body).await?;
        let status = resp.status().as_u16();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| self.unreachable(e.to_string()))?
            .to_bytes();
        let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        if !(200..300).contains(&status) {
            let mut message = v["message"]
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned());
            if status == 401 {
                message.push_str(
                    "; give an approver's (an operator's, to pause) or the admin token with `--token` or `$AIRLOCK_TOKEN`",
                );
            }
            return Err(ClientError::Refused { status, message });
        }
        Ok(v)
    }
}

/// A query-string value: cursors are URL-safe base64 and statuses are
/// words, but anything else typed is percent-encoded rather than trusted.
fn query_value(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// What an approver recognises a held call by: an MCP tool as
/// `route/tool`, an HTTP call as `METHOD path`.
fn call_name(a: &Value) -> String {
    let resource = a["resource"].as_str().unwrap_or("");
    if let Some(tool) = resource
        .strip_prefix("Tool::\"")
        .and_then(|t| t.strip_suffix('"'))
    {
        return tool.to_string();
    }
    format!(
        "{} {}",
        a["method"].as_str().unwrap_or(""),
        a["path"].as_str().unwrap_or("")
    )
}

fn table(approvals: &[Value]) -> String {
    let mut out = String::from("ID                                    STATUS    AGENT         CALL                             EXPIRES                   GATES\n");
    for a in approvals {
        let s = |k: &str| a[k].as_str().unwrap_or("").to_string();
        let gates: Vec<&str> = a["gates"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|g| g["policy"].as_str())
            .collect();
        out.push_str(&format!(
            "{:<37} {:<9} {:<13} {:<32} {:<25} {}\n",
            s("id"),
            s("status"),
            s("agent"),
            call_name(a),
            s("expires_at"),
            gates.join(",")
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_held_call_is_named_by_its_tool_or_its_method_and_path() {
        let mcp = serde_json::json!({"resource": "Tool::\"crm-mcp/issue_refund\"", "method": "POST", "path": "/mcp/crm"});
        assert_eq!(call_name(&mcp), "crm-mcp/issue_refund");
        let rest = serde_json::json!({"resource": "Route::\"crm\"", "method": "POST", "path": "/crm/refunds"});
        assert_eq!(call_name(&rest), "POST /crm/refunds");
    }
}
