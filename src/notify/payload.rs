//! What a webhook says: the call summary, with secrets redacted, and where
//! to decide.

use serde_json::{json, Map, Value};

use crate::store::HoldRecord;

pub const REQUESTED: &str = "approval.requested";
pub const DECIDED: &str = "approval.decided";
pub const EXPIRED: &str = "approval.expired";

/// Body keys whose values never leave Airlock in a notification.
const SECRET_WORDS: &[&str] = &[
    "password",
    "passwd",
    "secret",
    "token",
    "key",
    "authorization",
    "cookie",
    "card",
    "cvv",
    "ssn",
    "iban",
];

/// The webhook body for `event` about `hold`.
pub fn event(event: &str, hold: &HoldRecord, public_url: &str) -> Value {
    let body = match serde_json::from_slice::<Value>(&hold.request.body) {
        Ok(v) => redact(&v),
        Err(_) if hold.request.body.is_empty() => Value::Null,
        Err(_) => json!(format!("[{} bytes, not JSON]", hold.request.body.len())),
    };
    let edited = hold
        .edited_body
        .as_ref()
        .and_then(|b| serde_json::from_slice::<Value>(b).ok())
        .map(|v| redact(&v));
    json!({
        "type": event,
        "timestamp": crate::audit::rfc3339(std::time::SystemTime::now()),
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
            "body": body,
            "edited_body": edited,
            "gates": hold.gates,
            "approver_groups": hold.approver_groups,
            "created_at": ms_to_rfc3339(hold.created_ms),
            "expires_at": ms_to_rfc3339(hold.expires_ms),
            "decided_by": hold.decided_by,
            "reason": hold.reason,
            "decide_url": format!("{public_url}/v1/approvals/{}/decision", hold.id),
        }
    })
}

pub fn ms_to_rfc3339(ms: i64) -> String {
    let t =
        std::time::UNIX_EPOCH + std::time::Duration::from_millis(u64::try_from(ms).unwrap_or(0));
    crate::audit::rfc3339(t)
}

/// The value with every secret-looking key's value replaced.
pub fn redact(v: &Value) -> Value {
    match v {
        Value::Object(m) => {
            let mut out = Map::new();
            for (k, x) in m {
                let lower = k.to_ascii_lowercase();
                if SECRET_WORDS.iter().any(|w| lower.contains(w)) {
                    out.insert(k.clone(), json!("[redacted]"));
                } else {
                    out.insert(k.clone(), redact(x));
                }
            }
            Value::Object(out)
        }
        Value::Array(a) => Value::Array(a.iter().map(redact).collect()),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_redacted_at_any_depth() {
        let v = json!({"amount": 5, "card_number": "4111", "auth": {"api_key": "k", "user": "u"}});
        let r = redact(&v);
        assert_eq!(r["amount"], 5);
        assert_eq!(r["card_number"], "[redacted]");
        assert_eq!(r["auth"]["api_key"], "[redacted]");
        assert_eq!(r["auth"]["user"], "u");
    }
}
