//! An operator's pause as stored: what it covers, how it stops calls, who
//! set it and why. The data plane reads pauses from memory
//! (`oversight`); the store keeps them across restarts and reloads.

use serde::{Deserialize, Serialize};

/// What a pause covers.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "scope", rename_all = "lowercase")]
pub enum PauseScope {
    /// Every agent's every call.
    All,
    Agent {
        agent: String,
    },
    Route {
        route: String,
    },
    /// One tool of an MCP route.
    Tool {
        route: String,
        tool: String,
    },
}

impl PauseScope {
    /// The stored key: one pause per scope.
    pub fn key(&self) -> String {
        match self {
            PauseScope::All => "all".into(),
            PauseScope::Agent { agent } => format!("agent:{agent}"),
            PauseScope::Route { route } => format!("route:{route}"),
            PauseScope::Tool { route, tool } => format!("tool:{route}/{tool}"),
        }
    }

    /// The scope's kind as webhook events and metrics name it.
    pub fn kind(&self) -> &'static str {
        match self {
            PauseScope::All => "all",
            PauseScope::Agent { .. } => "agent",
            PauseScope::Route { .. } => "route",
            PauseScope::Tool { .. } => "tool",
        }
    }

    /// Whether a call by `agent` on `route` (to `tool`, on an MCP route)
    /// falls under this scope.
    pub fn covers(&self, agent: &str, route: &str, tool: Option<&str>) -> bool {
        match self {
            PauseScope::All => true,
            PauseScope::Agent { agent: a } => a == agent,
            PauseScope::Route { route: r } => r == route,
            PauseScope::Tool { route: r, tool: t } => r == route && tool == Some(t.as_str()),
        }
    }
}

/// How a pause stops calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PauseMode {
    /// Every call the policies allow is held for an operator instead.
    Hold,
    /// Every call is refused (403 `paused`), and pending holds are voided.
    Deny,
}

impl PauseMode {
    pub fn as_str(self) -> &'static str {
        match self {
            PauseMode::Hold => "hold",
            PauseMode::Deny => "deny",
        }
    }
}

/// One pause in force.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PauseRecord {
    #[serde(flatten)]
    pub scope: PauseScope,
    pub mode: PauseMode,
    pub reason: String,
    /// Who paused: `admin` or an operator's approver id.
    pub by: String,
    /// Unix milliseconds.
    pub since_ms: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tool_pause_covers_that_tool_of_that_route_only() {
        let s = PauseScope::Tool {
            route: "crm".into(),
            tool: "delete".into(),
        };
        assert!(s.covers("a", "crm", Some("delete")));
        assert!(!s.covers("a", "crm", Some("read")));
        assert!(!s.covers("a", "crm", None));
        assert!(!s.covers("a", "other", Some("delete")));
        assert!(PauseScope::All.covers("a", "r", None));
    }

    #[test]
    fn a_record_round_trips_through_its_json() {
        let r = PauseRecord {
            scope: PauseScope::Route {
                route: "crm".into(),
            },
            mode: PauseMode::Deny,
            reason: "incident".into(),
            by: "admin".into(),
            since_ms: 5,
        };
        let text = serde_json::to_string(&r).unwrap();
        assert!(text.contains(r#""scope":"route""#), "{text}");
        assert_eq!(serde_json::from_str::<PauseRecord>(&text).unwrap(), r);
    }
}
