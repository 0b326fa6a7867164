//! What one request's phases learn about it, kept until it is answered.
//!
//! Each phase fills in what it found out (who calls, which route, the call
//! as judged, the verdict, the approval, the upstream's status); none of
//! them writes the audit record. [`RequestTrail::take_record`] builds that
//! record once, at the end, from the trail and the outcome: the status
//! answered and, for a refusal, the error that caused it.

use std::borrow::Cow;
use std::mem::take;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use super::error::ProxyError;
use crate::audit::{AuditRecord, Fault};
use crate::clock::rfc3339;

/// The per-request context the phases fill in.
#[derive(Debug, Clone)]
pub struct RequestTrail {
    pub started: Instant,
    /// The instant the request id names.
    pub time: SystemTime,
    pub request_id: String,
    pub method: Cow<'static, str>,
    /// The policy snapshot that judges the whole request.
    pub snapshot: Arc<str>,
    // Phase: admit.
    pub agent: Option<String>,
    pub route: Option<Arc<str>>,
    /// The decoded path once routing decoded it; as sent before that.
    pub path: String,
    // Phase: decide.
    pub action: Option<Cow<'static, str>>,
    pub resource: Option<Arc<str>>,
    /// `allow`, `deny` or `hold` once judged; empty before.
    pub verdict: &'static str,
    pub policies: Vec<String>,
    pub reasons: Vec<String>,
    pub eval_errors: Vec<String>,
    pub shadow: Option<serde_json::Value>,
    pub decision_us: Option<u64>,
    /// A refusal answered inside a successful response (an MCP tool call's
    /// JSON-RPC error), which the outcome alone does not show.
    pub error: Option<&'static str>,
    pub fault: Option<Fault>,
    // Phase: hold.
    pub approval_id: Option<String>,
    pub approver_groups: Vec<String>,
    pub approver: Option<String>,
    // Phase: forward.
    pub upstream_status: Option<u16>,
    /// Protocol detail (an MCP message's method and tools).
    pub extra: Option<serde_json::Value>,
}

impl RequestTrail {
    pub fn new(
        started: Instant,
        time: SystemTime,
        request_id: &str,
        method: Cow<'static, str>,
        snapshot: Arc<str>,
    ) -> RequestTrail {
        RequestTrail {
            started,
            time,
            request_id: request_id.to_owned(),
            method,
            snapshot,
            agent: None,
            route: None,
            path: String::new(),
            action: None,
            resource: None,
            verdict: "",
            policies: Vec::new(),
            reasons: Vec::new(),
            eval_errors: Vec::new(),
            shadow: None,
            decision_us: None,
            error: None,
            fault: None,
            approval_id: None,
            approver_groups: Vec::new(),
            approver: None,
            upstream_status: None,
            extra: None,
        }
    }

    /// The request's audit record: what the trail learned, the `status`
    /// answered and, when the request was refused, why. The trail's text
    /// moves into the record, leaving the trail empty; it stays where it
    /// lives (a request's future) rather than being copied whole to here.
    pub fn take_record(&mut self, status: u16, refused: Option<&ProxyError>) -> AuditRecord {
        let mut rec = AuditRecord {
            time: rfc3339(self.time),
            request_id: take(&mut self.request_id),
            event: "decision",
            agent: self.agent.take(),
            route: self.route.take(),
            method: take(&mut self.method),
            path: take(&mut self.path),
            action: self.action.take(),
            resource: self.resource.take(),
            verdict: self.verdict,
            policies: take(&mut self.policies),
            reasons: take(&mut self.reasons),
            eval_errors: take(&mut self.eval_errors),
            shadow: self.shadow.take(),
            error: self.error,
            fault: self.fault,
            snapshot: Some(self.snapshot.clone()),
            decision_us: self.decision_us,
            upstream_status: self.upstream_status,
            status,
            duration_ms: self.started.elapsed().as_secs_f64() * 1000.0,
            approval_id: self.approval_id.take(),
            approver: self.approver.take(),
            approver_groups: take(&mut self.approver_groups),
            extra: self.extra.take(),
            // Named rather than `..AuditRecord::default()`, which builds a
            // whole default record to copy these three from.
            approval_status: None,
            decision: None,
            caller: None,
        };
        if let Some(e) = refused {
            if rec.verdict.is_empty() {
                // An operator's pause is a refusal, not a failure.
                rec.verdict = match e {
                    ProxyError::Paused { .. } => "deny",
                    _ => "error",
                };
            }
            rec.error = Some(e.kind());
            rec.fault = Some(e.fault());
            if rec.reasons.is_empty() {
                rec.reasons = vec![e.to_string()];
            }
        }
        rec
    }
}
