//! Audit records for what happens to an approval (`"event": "approval"`):
//! decisions, refused decision attempts and expiries all start from the
//! held call's own description here, so they read alike.

use serde_json::Value;

use crate::audit::AuditRecord;
use crate::clock::rfc3339;
use crate::notify::shown::{self, Audience};
use crate::store::{HoldRecord, HoldState};

/// A record about approval `h`, naming its call; the caller fills in what
/// happened.
pub fn record(h: &HoldRecord, verdict: &'static str) -> AuditRecord {
    AuditRecord {
        time: rfc3339(std::time::SystemTime::now()),
        request_id: uuid::Uuid::now_v7().to_string(),
        event: "approval",
        agent: Some(h.agent.clone()),
        route: Some(h.route.as_str().into()),
        method: h.request.method.clone().into(),
        path: h.request.path.clone(),
        action: Some(h.action.clone().into()),
        resource: Some(h.resource.as_str().into()),
        verdict,
        policies: h.gates.iter().map(|g| g.policy.clone()).collect(),
        approval_id: Some(h.id.clone()),
        approver_groups: h.approver_groups.clone(),
        ..AuditRecord::default()
    }
}

/// The record of `h` expiring: nobody is answered, so there is no status.
pub fn expired(h: &HoldRecord) -> AuditRecord {
    let mut rec = record(h, "expired");
    rec.approval_status = Some(HoldState::Expired.as_str());
    rec.reasons = vec![expiry_reason(h.state).into()];
    rec
}

/// The record of approved call `h` starting to execute, written before
/// the tool is called, so that a crash mid-call leaves a trace of it.
pub fn executing(h: &HoldRecord) -> AuditRecord {
    let mut rec = record(h, "executing");
    rec.approval_status = Some(HoldState::Executing.as_str());
    rec.approver = h.decided_by.clone();
    rec
}

/// The record of `h` settled after an interruption: the Airlock forwarding
/// it stopped while it was executing, so whether the tool acted is unknown, and it is not repeated.
pub fn interrupted(h: &HoldRecord) -> AuditRecord {
    let mut rec = record(h, "interrupted");
    rec.approval_status = Some(HoldState::Executed.as_str());
    rec.approver = h.decided_by.clone();
    rec.reasons = vec![INTERRUPTED.into()];
    rec
}

/// Why an interrupted call is settled as it is; also its stored outcome.
pub const INTERRUPTED: &str = "airlock stopped while forwarding this approved call; its outcome is unknown and it is not repeated";

/// Why a hold in state `from` expired.
pub fn expiry_reason(from: HoldState) -> &'static str {
    match from {
        HoldState::Approved => "the approved call was not run before the approval expired",
        _ => "nobody decided before the approval expired",
    }
}

/// Body `b` of `h`'s call as the audit log keeps it: as sent, with the
/// values of secret-looking keys marked (see `notify::shown`).
pub fn body_shown(h: &HoldRecord, b: &[u8]) -> Value {
    shown::body(&h.request.headers, b, Audience::Redacted)
}

/// The live view's `approval.requested` event for a new hold. It is an
/// event only, not an audit record: the held call's own `decision` record
/// is written when the agent's wait ends, and approvers watching the live
/// view (the inbox) must see the hold before that.
pub fn requested_event(h: &HoldRecord) -> crate::audit::live::LiveEvent {
    crate::audit::live::LiveEvent {
        kind: "approval.requested".into(),
        time: rfc3339(std::time::SystemTime::now()),
        request_id: uuid::Uuid::now_v7().to_string(),
        agent: Some(h.agent.clone()),
        route: Some(h.route.as_str().into()),
        action: Some(h.action.clone().into()),
        resource: Some(h.resource.as_str().into()),
        verdict: "hold".into(),
        policies: h.gates.iter().map(|g| g.policy.clone()).collect(),
        approval_id: Some(h.id.clone()),
        approval_status: Some(HoldState::Pending.as_str().into()),
        approver_groups: h.approver_groups.clone(),
        ..Default::default()
    }
}
