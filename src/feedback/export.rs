//! `airlock feedback export`: one JSON line per human judgment, the data
//! set for evaluating or tuning an agent.
//!
//! Sources: held calls a human decided (approved, edited, answered in the
//! tool's place, denied), read from the store. A review verdict becomes a
//! line through [`FeedbackLine::review`], so adding reviews as a source is
//! one loop over the done items.

use serde::Serialize;
use serde_json::Value;

use super::tally::target_of_resource;
use crate::store::{ApprovalStore, HoldPageQuery, HoldRecord, HoldState, HumanAnswer, StoreError};

/// Replaces every redacted value.
pub const REDACTED: &str = "[redacted]";

/// What an export leaves out.
#[derive(Debug, Clone, Default)]
pub struct Redaction {
    /// Header names (any case) never written: the agent's credentials and
    /// every header a route injects.
    pub headers: Vec<String>,
    /// JSON pointers (`/card_number`) whose values are replaced by
    /// [`REDACTED`] in bodies, edits and answers; for an MCP tool call they
    /// apply to the tool's arguments. This is where `sampling.redact`
    /// goes.
    pub json_pointers: Vec<String>,
}

/// The call as the agent sent it.
#[derive(Debug, Clone, Serialize)]
pub struct CallPayload {
    pub method: String,
    pub path: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub query: Option<String>,
    pub headers: Vec<(String, String)>,
    /// JSON when the body is JSON, else its text (lossy UTF-8).
    pub body: Value,
}

/// One human judgment.
#[derive(Debug, Clone, Serialize)]
pub struct FeedbackLine {
    /// `approve`, `respond`, `deny` or `review`.
    pub judgment: &'static str,
    /// The approval's (or review item's) id.
    pub id: String,
    pub agent: String,
    pub route: String,
    /// The MCP tool, for a tool call.
    pub tool: Option<String>,
    pub policies: Vec<String>,
    /// When the agent made the call, RFC 3339.
    pub requested_at: String,
    /// When the human judged it.
    pub judged_at: Option<String>,
    pub judged_by: Option<String>,
    /// The confidence and reason the agent stated with the call.
    pub confidence: Option<String>,
    pub agent_reason: Option<String>,
    pub request: CallPayload,
    /// The body the approver substituted (`approve` with an edit).
    pub edited_body: Option<Value>,
    /// The human's answer in the tool's place (`respond`).
    pub answer: Option<Value>,
    /// The human's reason: a denial's, or the note with an approval.
    pub reason: Option<String>,
    /// A review's verdict: `ok`, `bad` or `policy_gap`.
    pub verdict: Option<String>,
    /// A review's correction: what the call or its answer should have been.
    pub correction: Option<Value>,
}

fn body_value(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(bytes).into_owned()))
}

/// `value` with every pointer of `redaction` replaced; `mcp` applies them
/// to a JSON-RPC message's tool arguments.
fn redact_value(mut value: Value, redaction: &Redaction, mcp: bool) -> Value {
    for pointer in &redaction.json_pointers {
        let target = if mcp {
            value
                .pointer_mut("/params/arguments")
                .and_then(|a| a.pointer_mut(pointer))
        } else {
            value.pointer_mut(pointer)
        };
        if let Some(v) = target {
            *v = Value::String(REDACTED.into());
        }
    }
    value
}

fn redact_headers(headers: &[(String, String)], redaction: &Redaction) -> Vec<(String, String)> {
    headers
        .iter()
        .filter(|(name, _)| {
            !name.eq_ignore_ascii_case("authorization")
                && !name.eq_ignore_ascii_case("proxy-authorization")
                && !redaction
                    .headers
                    .iter()
                    .any(|h| h.eq_ignore_ascii_case(name))
        })
        .cloned()
        .collect()
}

fn judgment_of(hold: &HoldRecord) -> Option<&'static str> {
    // A hold settled by the policies (`policy`) or by an operator's pause
    // is nobody's judgment of the call.
    let by = hold.decided_by.as_deref()?;
    if by == "policy" {
        return None;
    }
    Some(match hold.state {
        HoldState::Approved | HoldState::Executing | HoldState::Executed => "approve",
        HoldState::Responded => "respond",
        HoldState::Denied => "deny",
        _ => return None,
    })
}

impl FeedbackLine {
    /// The line of a held call a human decided; `None` when nobody did.
    pub fn of_hold(hold: &HoldRecord, redaction: &Redaction) -> Option<FeedbackLine> {
        let judgment = judgment_of(hold)?;
        let target = target_of_resource(&hold.resource);
        let mcp = hold.resource.starts_with("Tool::");
        let tool = target
            .strip_prefix(hold.route.as_str())
            .and_then(|t| t.strip_prefix('/'))
            .filter(|_| mcp)
            .map(str::to_string);
        let answer = hold.answer.as_ref().map(|a| match a {
            HumanAnswer::Http { status, body } => serde_json::json!({
                "status": status,
                "body": body.clone().map(|b| redact_value(b, redaction, false)),
            }),
            HumanAnswer::Mcp { result } => serde_json::json!({
                "result": redact_value(result.clone(), redaction, false),
            }),
        });
        let mut policies: Vec<String> = hold.gates.iter().map(|g| g.policy.clone()).collect();
        for lifted in &hold.lifted {
            if !policies.contains(&lifted.policy) {
                policies.push(lifted.policy.clone());
            }
        }
        Some(FeedbackLine {
            judgment,
            id: hold.id.clone(),
            agent: hold.agent.clone(),
            route: hold.route.clone(),
            tool,
            policies,
            requested_at: crate::clock::ms_to_rfc3339(hold.created_ms),
            judged_at: hold.decided_ms.map(crate::clock::ms_to_rfc3339),
            judged_by: hold.decided_by.clone(),
            confidence: hold.request.confidence.clone(),
            agent_reason: hold.request.agent_reason.clone(),
            request: CallPayload {
                method: hold.request.method.clone(),
                path: hold.request.path.clone(),
                query: hold.request.query.clone(),
                headers: redact_headers(&hold.request.headers, redaction),
                body: redact_value(body_value(&hold.request.body), redaction, mcp),
            },
            edited_body: hold
                .edited_body
                .as_deref()
                .map(|b| redact_value(body_value(b), redaction, mcp)),
            answer,
            reason: hold.reason.clone(),
            verdict: None,
            correction: None,
        })
    }

    /// The line of a review verdict on a sampled call: `request` as
    /// captured (already redacted when stored), `verdict` `ok`, `bad` or
    /// `policy_gap`, the reviewer's `note` and `correction`.
    pub fn review(item: ReviewJudgment, redaction: &Redaction) -> FeedbackLine {
        let mcp = item.tool.is_some();
        FeedbackLine {
            judgment: "review",
            id: item.id,
            agent: item.agent,
            route: item.route,
            tool: item.tool,
            policies: item.policies,
            requested_at: crate::clock::ms_to_rfc3339(item.requested_ms),
            judged_at: Some(crate::clock::ms_to_rfc3339(item.judged_ms)),
            judged_by: Some(item.reviewer),
            confidence: item.confidence,
            agent_reason: item.agent_reason,
            request: CallPayload {
                headers: redact_headers(&item.request.headers, redaction),
                body: redact_value(item.request.body, redaction, mcp),
                ..item.request
            },
            edited_body: None,
            answer: None,
            reason: item.note,
            verdict: Some(item.verdict),
            correction: item.correction.map(|c| redact_value(c, redaction, false)),
        }
    }
}

/// A finished review, as [`FeedbackLine::review`] takes it.
#[derive(Debug, Clone)]
pub struct ReviewJudgment {
    pub id: String,
    pub agent: String,
    pub route: String,
    pub tool: Option<String>,
    pub policies: Vec<String>,
    pub requested_ms: i64,
    pub judged_ms: i64,
    pub reviewer: String,
    pub confidence: Option<String>,
    pub agent_reason: Option<String>,
    pub request: CallPayload,
    pub verdict: String,
    pub note: Option<String>,
    pub correction: Option<Value>,
}

/// The states a human decision leaves a hold in.
const JUDGED: [HoldState; 5] = [
    HoldState::Approved,
    HoldState::Executing,
    HoldState::Executed,
    HoldState::Responded,
    HoldState::Denied,
];

/// Every hold a human judged at `since_ms` or later, oldest judgment
/// first, as lines.
pub async fn hold_lines(
    store: &dyn ApprovalStore,
    since_ms: i64,
    redaction: &Redaction,
) -> Result<Vec<FeedbackLine>, StoreError> {
    let mut holds = Vec::new();
    for state in JUDGED {
        let mut query = HoldPageQuery {
            state: Some(state),
            after: None,
            limit: 500,
            groups: None,
        };
        loop {
            let page = store.list(query.clone()).await?;
            holds.extend(
                page.holds
                    .into_iter()
                    .filter(|h| h.decided_ms.is_some_and(|d| d >= since_ms)),
            );
            match page.next {
                Some(next) => query.after = Some(next),
                None => break,
            }
        }
    }
    holds.sort_by(|a, b| (a.decided_ms, &a.id).cmp(&(b.decided_ms, &b.id)));
    Ok(holds
        .iter()
        .filter_map(|h| FeedbackLine::of_hold(h, redaction))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pointers_and_credentials_are_redacted() {
        let r = Redaction {
            headers: vec!["X-Api-Key".into()],
            json_pointers: vec!["/card".into(), "/missing".into()],
        };
        let body = serde_json::json!({"card": "4111", "amount": 5});
        assert_eq!(
            redact_value(body, &r, false),
            serde_json::json!({"card": REDACTED, "amount": 5})
        );
        let rpc = serde_json::json!({"params": {"name": "pay", "arguments": {"card": "4111"}}});
        assert_eq!(
            redact_value(rpc, &r, true)["params"]["arguments"]["card"],
            REDACTED
        );
        let headers = vec![
            ("authorization".to_string(), "Bearer k".to_string()),
            ("x-api-key".to_string(), "s".to_string()),
            ("accept".to_string(), "*/*".to_string()),
        ];
        assert_eq!(
            redact_headers(&headers, &r),
            vec![("accept".into(), "*/*".into())]
        );
    }
}
