//! `airlock reviews`: reviewers' commands on the admin API's review queue.

use http::Method;
use serde_json::{json, Value};

use super::{query_value, ApprovalsClient, ClientError};

pub enum ReviewsCommand {
    List {
        status: Option<String>,
        agent: Option<String>,
        route: Option<String>,
        tool: Option<String>,
        limit: Option<u32>,
    },
    /// Claims the oldest open item and shows it.
    Next,
    Verdict {
        id: String,
        verdict: String,
        note: Option<String>,
        /// The correction as JSON text.
        correction: Option<String>,
    },
}

impl ApprovalsClient {
    /// Runs a reviewer's command and returns what to print.
    pub async fn run_reviews(&self, cmd: ReviewsCommand) -> Result<String, ClientError> {
        match cmd {
            ReviewsCommand::List {
                status,
                agent,
                route,
                tool,
                limit,
            } => {
                let mut path = format!(
                    "/v1/reviews?status={}",
                    query_value(status.as_deref().unwrap_or("open"))
                );
                for (name, value) in [("agent", agent), ("route", route), ("tool", tool)] {
                    if let Some(v) = value {
                        path.push_str(&format!("&{name}={}", query_value(&v)));
                    }
                }
                if let Some(l) = limit {
                    path.push_str(&format!("&limit={l}"));
                }
                let v = self.call(Method::GET, &path, None).await?;
                Ok(table(&v))
            }
            ReviewsCommand::Next => {
                let v = self
                    .call(Method::POST, "/v1/reviews/next", Some(json!({})))
                    .await?;
                Ok(serde_json::to_string_pretty(&v).unwrap_or_default())
            }
            ReviewsCommand::Verdict {
                id,
                verdict,
                note,
                correction,
            } => {
                let mut body = json!({"verdict": verdict, "note": note});
                if let Some(c) = correction {
                    let parsed: Value = serde_json::from_str(&c)
                        .map_err(|e| ClientError::BadArgs(e.to_string()))?;
                    body["correction"] = parsed;
                }
                let path = format!("/v1/reviews/{}/verdict", query_value(&id));
                let v = self.call(Method::POST, &path, Some(body)).await?;
                Ok(format!(
                    "{id}: {} (by {})",
                    v["verdict"]["verdict"].as_str().unwrap_or("?"),
                    v["verdict"]["by"].as_str().unwrap_or("?")
                ))
            }
        }
    }
}

/// One line per item: id, status, agent, route, the call, its answer.
fn table(v: &Value) -> String {
    let items = v["reviews"].as_array().cloned().unwrap_or_default();
    if items.is_empty() {
        return "no review items".into();
    }
    let s = |v: &Value| v.as_str().unwrap_or("-").to_string();
    let mut out: Vec<String> = items
        .iter()
        .map(|i| {
            format!(
                "{}  {:<7}  {}  {}  {} {}  -> {}",
                s(&i["id"]),
                s(&i["status"]),
                s(&i["agent"]),
                i["tool"]
                    .as_str()
                    .map_or_else(|| s(&i["route"]), str::to_string),
                s(&i["request"]["method"]),
                s(&i["request"]["path"]),
                i["response"]["status"]
            )
        })
        .collect();
    if v["next_cursor"].is_string() {
        out.push("(more: narrow with --status, --agent, --route or --tool)".into());
    }
    out.join("\n")
}
