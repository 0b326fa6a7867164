//! A held `tools/call` answered as an event stream: for clients that accept
//! `text/event-stream` and sent a `progressToken`, so that a client which
//! resets its timeout on progress keeps waiting for the human, and for
//! clients sent the approval's page (`mcp::elicit`): the stream then starts
//! with the `elicitation/create` request and carries
//! `notifications/elicitation/complete` once the approval is decided.
//! Progress is only sent to a client that gave a token.
//!
//! The POST is answered at once with `200` and `text/event-stream`. A task
//! then waits on the approval, sending `notifications/progress` (with the
//! client's token, increasing `progress`, and a message naming the
//! approval) at once and every `approvals.progress_interval`. The last event
//! is the JSON-RPC response: the tool's answer once approved (taken from the
//! upstream's JSON or event stream), or the same `isError` results as the
//! plain path (denied, expired, executed, still pending when
//! `approvals.wait` ends).
//!
//! Nobody listening, nothing runs: when the client goes away, hyper drops
//! the body, the channel closes, and the task stops before it claims the
//! approved call; the approval stays pending (or approved) for the agent's
//! next attempt.
//!
//! The request's own audit record is written when the stream starts; the
//! task writes a second one (`event: "held_stream"`) with the outcome.

use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use http_body_util::{BodyExt, Either};
use serde_json::{json, Value};
use tokio::sync::mpsc;

use super::elicit::Elicitation;
use super::hold::HeldTool;
use crate::approval::{ApprovalError, Approvals, Claim};
use crate::approval::{HoldRecord, HoldState};
use crate::audit::AuditSink;
use crate::config::Config;
use crate::mcp::{jsonrpc, sse};
use crate::proxy::error::ProxyError;
use crate::proxy::event_body;
use crate::proxy::hold::{execute, Session};
use crate::proxy::recheck::SnapshotChecker;
use crate::proxy::trail::RequestTrail;
use crate::proxy::{ProxyBody, ProxyState};
use crate::snapshot::GatewaySnapshot;

/// The largest upstream answer Airlock reads to relay as the final event.
const MAX_ANSWER: usize = 16 * 1024 * 1024;

/// JSON-RPC "internal error", for answers Airlock cannot get from the tool.
const INTERNAL_ERROR: i64 = -32603;

/// Answers a held tool call with an event stream and starts the task that
/// writes it.
pub(super) fn respond(
    state: &ProxyState,
    hold_id: String,
    held: HeldTool,
    elicitation: Option<Elicitation>,
    trail: &RequestTrail,
) -> Response<ProxyBody> {
    let (tx, body) = event_body::channel();
    let stream = HeldStream {
        approvals: state.approvals.clone(),
        live: state.live.clone(),
        pauses: state.pauses.clone(),
        audit: state.audit.clone(),
        hold_id,
        progress: Progress {
            token: held.progress_token.clone(),
            sent: 0,
        },
        held,
        elicitation,
        trail: trail.clone(),
        started: Instant::now(),
    };
    tokio::spawn(stream.run(tx));

    let mut resp = Response::new(Either::Left(Either::Right(body)));
    *resp.status_mut() = StatusCode::OK;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    if let Ok(v) = HeaderValue::from_str(&trail.request_id) {
        h.insert("x-request-id", v);
    }
    resp
}

/// How a stream ended.
enum End {
    /// The final JSON-RPC response, to be sent as the last event.
    Answer(Value),
    /// The client went away; nothing more is sent.
    Gone,
}

/// The task behind one event stream.
struct HeldStream {
    approvals: Arc<Approvals>,
    live: Arc<ArcSwap<GatewaySnapshot>>,
    pauses: Arc<crate::oversight::PauseBoard>,
    audit: AuditSink,
    hold_id: String,
    held: HeldTool,
    progress: Progress,
    /// The approval's page, sent to the client at the start and marked
    /// complete once the approval is decided (see `mcp::elicit`).
    elicitation: Option<Elicitation>,
    /// A copy of the request's trail, for the outcome record.
    trail: RequestTrail,
    started: Instant,
}

/// The progress notifications of one stream: `progress` increases with
/// each one, as the protocol requires.
struct Progress {
    /// `None` when the client sent no token: it is then sent no progress
    /// of Airlock's own.
    token: Option<Value>,
    sent: u64,
}

impl Progress {
    fn next(&mut self, message: Option<String>) -> Bytes {
        self.sent += 1;
        let token = self.token.clone().unwrap_or(Value::Null);
        let mut params = json!({"progressToken": token, "progress": self.sent});
        if let Some(m) = message {
            params["message"] = json!(m);
        }
        sse::message(&json!({
            "jsonrpc": "2.0",
            "method": "notifications/progress",
            "params": params,
        }))
    }
}

/// Sends the stream's last frame, waiting for room at most `limit` (the
/// time an agent connection may sit idle): an agent that stops reading
/// must not keep the stream's task, and its audit record, waiting forever.
/// The audit `error` when it could not be sent.
async fn send_last(
    tx: &mpsc::Sender<Bytes>,
    frame: Bytes,
    limit: Duration,
) -> Option<&'static str> {
    match tokio::time::timeout(limit, tx.send(frame)).await {
        Ok(Ok(())) => None,
        Ok(Err(_)) => Some("agent_gone"),
        Err(_) => Some("agent_not_reading"),
    }
}

// === impl HeldStream ===

impl HeldStream {
    async fn run(mut self, tx: mpsc::Sender<Bytes>) {
        // The snapshot when the stream starts: the request was judged a
        // moment ago, and the wait's settings come from the same config.
        let snap = self.live.load_full();
        let end = self.drive(&snap.config, &tx).await;
        let mut rec = self.trail.take_record(StatusCode::OK.as_u16(), None);
        rec.event = "held_stream";
        rec.duration_ms = self.started.elapsed().as_secs_f64() * 1000.0;
        match end {
            End::Answer(answer) => {
                let limit = snap.config.timeouts.header_read;
                rec.error = send_last(&tx, sse::message(&answer), limit).await;
            }
            End::Gone => rec.error = Some("agent_gone"),
        }
        self.audit.record(rec).await;
    }

    async fn drive(&mut self, cfg: &Config, tx: &mpsc::Sender<Bytes>) -> End {
        if let Some(e) = &self.elicitation {
            if tx.send(sse::message(&e.request())).await.is_err() {
                return End::Gone;
            }
        }
        // Bounded like the plain path: an approved call settles within a
        // round or two, whoever claims it.
        for _ in 0..3 {
            let hold = match self.wait(cfg, tx).await {
                None => return End::Gone,
                Some(Ok(h)) => h,
                Some(Err(e)) => return End::Answer(self.error(&ProxyError::from(e).to_string())),
            };
            if hold.state != HoldState::Pending {
                self.elicitation_complete(tx);
            }
            self.trail.approver = hold.decided_by.clone();
            if let Some(answer) = self.held.answer_for(&hold) {
                return End::Answer(answer);
            }
            // Nobody listening, nothing runs.
            if tx.is_closed() {
                return End::Gone;
            }
            let checker = SnapshotChecker {
                live: self.live.clone(),
                pauses: self.pauses.clone(),
            };
            match self.approvals.claim_checked(cfg, hold, &checker).await {
                Err(e) => return End::Answer(self.error(&e.to_string())),
                Ok(Claim::Lost) => continue,
                Ok(Claim::Settled(hold)) => {
                    self.trail.approver = hold.decided_by.clone();
                    if let Some(answer) = self.held.answer_for(&hold) {
                        return End::Answer(answer);
                    }
                }
                Ok(Claim::Run(hold)) => return self.run_approved(hold, tx).await,
            }
        }
        End::Answer(self.error("the approved call did not settle; call the tool again"))
    }

    /// Waits for the approval up to `approvals.wait`, sending progress at
    /// once and then every interval; `None` when the client went away.
    async fn wait(
        &mut self,
        cfg: &Config,
        tx: &mpsc::Sender<Bytes>,
    ) -> Option<Result<HoldRecord, ApprovalError>> {
        let waiting = self.approvals.wait(cfg, &self.hold_id, cfg.approvals.wait);
        tokio::pin!(waiting);
        let mut ticks = tokio::time::interval(cfg.approvals.progress_interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let message = format!("awaiting human approval (approval `{}`)", self.hold_id);
        loop {
            tokio::select! {
                hold = &mut waiting => return Some(hold),
                () = tx.closed() => return None,
                _ = ticks.tick(), if self.progress.token.is_some() => {
                    // A client that does not read misses a beat instead of
                    // stalling the wait.
                    let frame = self.progress.next(Some(message.clone()));
                    if let Err(mpsc::error::TrySendError::Closed(_)) = tx.try_send(frame) {
                        return None;
                    }
                }
            }
        }
    }

    /// Tells the client the approval's page has done its part, once: the
    /// 2025-11-25 revision's `notifications/elicitation/complete`.
    fn elicitation_complete(&mut self, tx: &mpsc::Sender<Bytes>) {
        if let Some(e) = self.elicitation.take() {
            // A client that does not read misses the notice; the answer
            // that follows says the same.
            let _ = tx.try_send(sse::message(&e.complete()));
        }
    }

    /// Forwards the claimed call and relays its answer.
    async fn run_approved(&mut self, hold: HoldRecord, tx: &mpsc::Sender<Bytes>) -> End {
        let body = match self.held.body_to_forward(&hold) {
            Ok(b) => b,
            Err(e) => return End::Answer(self.error(&e.to_string())),
        };
        let limit = self
            .live
            .load()
            .route_named(&hold.route)
            .map_or(Duration::from_secs(30), |r| r.config.response_timeout);
        let request_id = self.held.request_id.clone();
        let session = Session::Current(self.held.session.clone());
        let result = execute(
            &self.approvals,
            &self.live,
            hold,
            body,
            request_id,
            session,
            &mut self.trail,
        )
        .await;
        let resp = match result {
            Ok(r) => r,
            Err(e) => return End::Answer(self.error(&e.to_string())),
        };
        match tokio::time::timeout(limit, self.relay(resp, tx)).await {
            Ok(end) => end,
            Err(_) => End::Answer(self.error("the tool's answer did not finish in time")),
        }
    }

    /// The tool's answer as the final event: a JSON body as it is, or, from
    /// an event stream, the events before the response (progress renumbered
    /// to keep increasing) and then the response.
    async fn relay(&mut self, resp: Response<ProxyBody>, tx: &mpsc::Sender<Bytes>) -> End {
        let status = resp.status();
        if !status.is_success() {
            return End::Answer(self.error(&format!(
                "the tool's server answered HTTP {}",
                status.as_u16()
            )));
        }
        let events = match super::AnswerKind::of(resp.headers()) {
            super::AnswerKind::Events => true,
            super::AnswerKind::Json => false,
            super::AnswerKind::Other(content_type) => {
                return End::Answer(self.error(&format!(
                    "the tool's server answered with `{content_type}`, not JSON"
                )))
            }
        };
        let mut body = resp.into_body();
        let mut raw = Vec::new();
        let mut splitter = sse::EventSplitter::default();
        loop {
            let frame = match body.frame().await {
                None => break,
                Some(Err(e)) => {
                    return End::Answer(self.error(&format!("the tool's answer broke off: {e}")))
                }
                Some(Ok(f)) => f,
            };
            let Ok(data) = frame.into_data() else {
                continue;
            };
            if !events {
                raw.extend_from_slice(&data);
                if raw.len() > MAX_ANSWER {
                    return End::Answer(self.error("the tool's answer is too large"));
                }
                continue;
            }
            for event in splitter.push(&data) {
                if let Some(end) = self.relay_event(&event, tx).await {
                    return end;
                }
            }
        }
        if events {
            if let Some(event) = splitter.finish() {
                if let Some(end) = self.relay_event(&event, tx).await {
                    return end;
                }
            }
            return End::Answer(self.error("the tool's server ended its answer without a result"));
        }
        match serde_json::from_slice::<Value>(&raw) {
            Ok(v) => End::Answer(v),
            Err(e) => End::Answer(self.error(&format!("the tool's answer is not JSON: {e}"))),
        }
    }

    /// One upstream event: `Some` when it was the response (or the client
    /// went away).
    async fn relay_event(&mut self, event: &[u8], tx: &mpsc::Sender<Bytes>) -> Option<End> {
        let Ok(v) = serde_json::from_str::<Value>(&sse::data(event)) else {
            // Empty priming events and comments carry no message.
            return None;
        };
        let is_response =
            v.get("method").is_none() && (v.get("result").is_some() || v.get("error").is_some());
        if is_response {
            return Some(End::Answer(v));
        }
        let frame = if v.get("method").and_then(Value::as_str) == Some("notifications/progress") {
            let params = v.get("params");
            let message = params
                .and_then(|p| p.get("message"))
                .and_then(Value::as_str)
                .map(str::to_string);
            self.progress.next(message)
        } else {
            sse::message(&v)
        };
        match tx.send(frame).await {
            Ok(()) => None,
            Err(_) => Some(End::Gone),
        }
    }

    /// A JSON-RPC error answer for the current attempt.
    fn error(&self, message: &str) -> Value {
        jsonrpc::error(
            &self.held.id,
            INTERNAL_ERROR,
            message,
            Some(json!({
                "approvalId": self.hold_id,
                "requestId": self.held.request_id,
            })),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_last_frame_waits_for_a_stalled_agent_only_so_long() {
        let (tx, mut rx) = mpsc::channel(1);
        let limit = Duration::from_millis(100);
        assert_eq!(send_last(&tx, Bytes::from_static(b"a"), limit).await, None);
        // The queue is full and nobody reads: given up after `limit`.
        let started = Instant::now();
        let stalled = send_last(&tx, Bytes::from_static(b"b"), limit).await;
        assert_eq!(stalled, Some("agent_not_reading"));
        assert!(started.elapsed() >= limit);
        // Room again: it goes through.
        assert_eq!(rx.recv().await.as_deref(), Some(&b"a"[..]));
        assert_eq!(send_last(&tx, Bytes::from_static(b"c"), limit).await, None);
        // The agent hung up.
        drop(rx);
        let gone = send_last(&tx, Bytes::from_static(b"d"), limit).await;
        assert_eq!(gone, Some("agent_gone"));
    }
}
