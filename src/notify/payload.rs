//! What a webhook says: the call as it will be sent, with secrets marked
//! (see `shown`), and where to decide.

use crate::clock::ms_to_rfc3339;
use crate::config::AdminConfig;
use serde_json::{json, Value};

use super::shown::{self, Audience};

use crate::store::{HoldRecord, HoldState};

pub const REQUESTED: &str = "approval.requested";
pub const DECIDED: &str = "approval.decided";
pub const EXPIRED: &str = "approval.expired";

/// The decision that moved a hold to `state`, as the decision API names it.
fn decision(state: HoldState) -> Option<&'static str> {
    match state {
        HoldState::Approved | HoldState::Executing | HoldState::Executed => Some("approve"),
        HoldState::Denied => Some("deny"),
        HoldState::Responded => Some("respond"),
        HoldState::Pending | HoldState::Expired | HoldState::Voided => None,
    }
}

/// The webhook body for `event` about `hold`.
pub fn event(event: &str, hold: &HoldRecord, admin: &AdminConfig) -> Value {
    let public_url = &admin.public_url;
    let headers = &hold.request.headers;
    let body = shown::body(headers, &hold.request.body, Audience::Redacted);
    let edited = hold
        .edited_body
        .as_ref()
        .map(|b| shown::body(headers, b, Audience::Redacted));
    json!({
        "type": event,
        "timestamp": crate::clock::rfc3339(std::time::SystemTime::now()),
        "data": {
            "approval_id": hold.id,
            "status": hold.state.as_str(),
            "agent": hold.agent,
            "route": hold.route,
            "action": hold.action,
            "resource": hold.resource,
            "method": hold.request.method,
            "path": hold.request.path,
            "query": hold.request.query,
            "headers": shown::headers(headers, Audience::Redacted),
            "body": body,
            "edited_body": edited,
            "gates": hold.gates,
            "approver_groups": hold.approver_groups,
            "lifted": hold.lifted,
            "confidence": shown::confidence(hold.request.confidence.as_deref()),
            "agent_reason": hold.request.agent_reason,
            "created_at": ms_to_rfc3339(hold.created_ms),
            "expires_at": ms_to_rfc3339(hold.expires_ms),
            "decided_by": hold.decided_by,
            "decision": (event == DECIDED).then(|| decision(hold.state)).flatten(),
            "reason": hold.reason,
            "answer": hold.answer.as_ref().map(|a| shown::redact_value(&json!(a))),
            "decide_url": format!("{public_url}/v1/approvals/{}/decision", hold.id),
            "links": links(admin, &hold.id),
        }
    })
}

/// Where a person opens approval `id`: `null` without `admin.public_url`,
/// since a guessed address (the listener's own) may reach nobody.
pub fn links(admin: &AdminConfig, id: &str) -> Value {
    match admin.approval_page(id) {
        Some(inbox) => json!({ "inbox": inbox }),
        None => Value::Null,
    }
}
