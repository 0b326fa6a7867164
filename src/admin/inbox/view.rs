//! What the inbox's templates show of a held call: plain text fields,
//! which askama escapes when it writes them into the page.

use serde_json::Value;

use crate::audit::live::LiveEvent;
use crate::clock::now_ms;
use crate::store::HoldRecord;

/// How many of an agent's calls a held call's page lists.
pub const RECENT_CALLS: usize = 10;

/// One row of the pending list.
pub struct PendingRow {
    pub id: String,
    pub agent: String,
    pub call: String,
    pub reasons: String,
    pub expires_ms: i64,
    pub time_left: String,
    pub confidence: String,
    pub agent_reason: String,
}

/// A held call in full.
pub struct HeldCall {
    pub row: PendingRow,
    pub status: String,
    pub route: String,
    pub method: String,
    pub path: String,
    pub tool: Option<String>,
    pub body: String,
    /// What the edit box starts with: the body, or an MCP call's arguments.
    pub editable: String,
    pub gates: Vec<GateShown>,
}

pub struct GateShown {
    pub policy: String,
    pub reason: String,
    pub approvers: String,
}

/// One of the agent's recent calls, from the live feed's ring.
pub struct RecentCall {
    pub time: String,
    pub verdict: String,
    /// The Cedar action and resource it was judged as.
    pub what: String,
    pub status: String,
}

impl RecentCall {
    /// The agent's calls: `decision` events (a held call's comes when its
    /// wait ends).
    pub fn is_call_of(agent: &str, e: &LiveEvent) -> bool {
        e.kind == "decision" && e.agent.as_deref() == Some(agent)
    }

    pub fn of(e: &LiveEvent) -> RecentCall {
        RecentCall {
            time: e.time.clone(),
            verdict: e.verdict.to_string(),
            what: format!(
                "{} {}",
                e.action.as_deref().unwrap_or("-"),
                e.resource.as_deref().unwrap_or("-")
            ),
            status: match e.status {
                0 => "-".into(),
                s => s.to_string(),
            },
        }
    }
}

impl PendingRow {
    pub fn of(h: &HoldRecord) -> PendingRow {
        PendingRow {
            id: h.id.clone(),
            agent: h.agent.clone(),
            call: call_label(h),
            reasons: h
                .gates
                .iter()
                .map(|g| g.reason.as_str())
                .collect::<Vec<_>>()
                .join("; "),
            expires_ms: h.expires_ms,
            time_left: time_left(h.expires_ms - now_ms()),
            confidence: h.request.confidence.clone().unwrap_or_else(|| "-".into()),
            agent_reason: h.request.agent_reason.clone().unwrap_or_default(),
        }
    }
}

impl HeldCall {
    pub fn of(h: &HoldRecord) -> HeldCall {
        let parsed: Option<Value> = serde_json::from_slice(&h.request.body).ok();
        let body = match &parsed {
            Some(v) => pretty(v),
            None => String::from_utf8_lossy(&h.request.body).into_owned(),
        };
        let arguments = parsed
            .as_ref()
            .filter(|_| tool_name(h).is_some())
            .and_then(|v| v.pointer("/params/arguments"));
        HeldCall {
            row: PendingRow::of(h),
            status: h.state.as_str().to_string(),
            route: h.route.clone(),
            method: h.request.method.clone(),
            path: match &h.request.query {
                Some(q) => format!("{}?{q}", h.request.path),
                None => h.request.path.clone(),
            },
            tool: tool_name(h),
            editable: arguments.map_or_else(|| body.clone(), pretty),
            body,
            gates: h
                .gates
                .iter()
                .map(|g| GateShown {
                    policy: g.policy.clone(),
                    reason: g.reason.clone(),
                    approvers: g.approvers.clone().unwrap_or_else(|| "-".into()),
                })
                .collect(),
        }
    }
}

/// A held call in a few words: method and path, or route and tool.
pub fn call_label(h: &HoldRecord) -> String {
    match tool_name(h) {
        Some(tool) => format!("{} · tool {tool}", h.route),
        None => format!("{} {}", h.request.method, h.request.path),
    }
}

/// The tool an MCP call names, from its JSON-RPC body.
fn tool_name(h: &HoldRecord) -> Option<String> {
    let v: Value = serde_json::from_slice(&h.request.body).ok()?;
    (v.get("method")?.as_str()? == "tools/call")
        .then(|| v.pointer("/params/name")?.as_str().map(str::to_string))
        .flatten()
}

fn pretty(v: &Value) -> String {
    serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string())
}

/// `14m 05s left`, or `expired`.
pub fn time_left(ms: i64) -> String {
    if ms <= 0 {
        return "expired".into();
    }
    let secs = ms / 1000;
    match (secs / 3600, secs / 60 % 60, secs % 60) {
        (0, 0, s) => format!("{s}s left"),
        (0, m, s) => format!("{m}m {s:02}s left"),
        (h, m, _) => format!("{h}h {m:02}m left"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_left_reads_in_the_largest_units() {
        assert_eq!(time_left(-5), "expired");
        assert_eq!(time_left(9_500), "9s left");
        assert_eq!(time_left(845_000), "14m 05s left");
        assert_eq!(time_left(3_600_000 * 2 + 60_000), "2h 01m left");
    }
}
