//! `airlock agents`, `airlock routes`, `airlock pause` and `airlock
//! resume`: operators' pauses through the admin API.

use http::Method;
use serde_json::{json, Value};

use super::{query_value, ApprovalsClient, ClientError};

/// What an operator's pause covers, as typed.
pub enum PauseTarget {
    All,
    Agent(String),
    Route { route: String, tool: Option<String> },
}

impl PauseTarget {
    /// The admin API path of the scope, without `/pause` or `/resume`.
    fn path(&self) -> String {
        let seg = |s: &str| query_value(s);
        match self {
            PauseTarget::All => "/v1".into(),
            PauseTarget::Agent(a) => format!("/v1/agents/{}", seg(a)),
            PauseTarget::Route { route, tool: None } => format!("/v1/routes/{}", seg(route)),
            PauseTarget::Route {
                route,
                tool: Some(t),
            } => format!("/v1/routes/{}/tools/{}", seg(route), seg(t)),
        }
    }
}

pub enum OverrideCommand {
    ListAgents,
    Pause {
        target: PauseTarget,
        mode: String,
        reason: String,
    },
    Resume {
        target: PauseTarget,
        reason: Option<String>,
    },
}

impl ApprovalsClient {
    /// Runs an operator's command and returns what to print.
    pub async fn run_override(&self, cmd: OverrideCommand) -> Result<String, ClientError> {
        match cmd {
            OverrideCommand::ListAgents => {
                let v = self.call(Method::GET, "/v1/agents", None).await?;
                Ok(agents_table(&v))
            }
            OverrideCommand::Pause {
                target,
                mode,
                reason,
            } => {
                let path = format!("{}/pause", target.path());
                let v = self
                    .call(
                        Method::POST,
                        &path,
                        Some(json!({"mode": mode, "reason": reason})),
                    )
                    .await?;
                Ok(format!(
                    "paused {} ({}); {} pending holds voided",
                    describe(&v["paused"]),
                    v["paused"]["mode"].as_str().unwrap_or("?"),
                    v["voided"].as_u64().unwrap_or(0)
                ))
            }
            OverrideCommand::Resume { target, reason } => {
                let path = format!("{}/resume", target.path());
                let v = self
                    .call(Method::POST, &path, Some(json!({"reason": reason})))
                    .await?;
                Ok(format!("resumed {}", describe(&v["resumed"])))
            }
        }
    }
}

/// A pause's scope as the API answers it, in words.
fn describe(p: &Value) -> String {
    let s = |k: &str| p[k].as_str().unwrap_or("").to_string();
    match p["scope"].as_str() {
        Some("agent") => format!("agent {}", s("agent")),
        Some("route") => format!("route {}", s("route")),
        Some("tool") => format!("tool {}/{}", s("route"), s("tool")),
        _ => "everything".into(),
    }
}

fn agents_table(v: &Value) -> String {
    let mut out = String::from(
        "AGENT            PAUSED  ALLOW   DENY    HOLD    ERROR   PENDING  (calls in the last hour)\n",
    );
    for a in v["agents"].as_array().into_iter().flatten() {
        let n = |k: &str| a["calls_last_hour"][k].as_u64().unwrap_or(0);
        out.push_str(&format!(
            "{:<16} {:<7} {:<7} {:<7} {:<7} {:<7} {}\n",
            a["id"].as_str().unwrap_or(""),
            a["paused"]["mode"].as_str().unwrap_or("-"),
            n("allow"),
            n("deny"),
            n("hold"),
            n("error"),
            a["pending_holds"].as_u64().unwrap_or(0)
        ));
    }
    let pauses = v["pauses"].as_array().cloned().unwrap_or_default();
    if !pauses.is_empty() {
        out.push_str("\nPAUSES\n");
        for p in &pauses {
            out.push_str(&format!(
                "{:<24} {:<5} by {} since {}: {}\n",
                describe(p),
                p["mode"].as_str().unwrap_or(""),
                p["by"].as_str().unwrap_or(""),
                p["since"].as_str().unwrap_or(""),
                p["reason"].as_str().unwrap_or("")
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_target_has_its_admin_path() {
        assert_eq!(PauseTarget::All.path(), "/v1");
        assert_eq!(
            PauseTarget::Agent("bot 1".into()).path(),
            "/v1/agents/bot%201"
        );
        let tool = PauseTarget::Route {
            route: "crm".into(),
            tool: Some("delete".into()),
        };
        assert_eq!(tool.path(), "/v1/routes/crm/tools/delete");
    }
}
