//! The upstream's response body on its way to the agent, counted, so that
//! a body the upstream cuts off mid-stream is audited as incomplete (with
//! the bytes that reached the agent) rather than passing for a success
//! whose record was written when the headers went out.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use serde_json::json;

use crate::audit::live::LiveEvent;
use crate::audit::{AuditRecord, AuditSink, Fault};
use crate::clock::rfc3339;
use crate::sampling::Capture;

pub struct UpstreamBody {
    inner: Incoming,
    sent: u64,
    /// Set once the call's record is written.
    watch: Option<Watch>,
    /// A sampled call's copy, fed each chunk as it passes; boxed, as
    /// `watch`, for the calls nobody samples.
    capture: Option<Box<Capture>>,
}

/// Where a follow-up record goes, and the live view's event of the call's
/// record, which names the call (shared, so that watching copies no text).
struct Watch {
    sink: AuditSink,
    call: Arc<LiveEvent>,
}

impl UpstreamBody {
    pub fn new(inner: Incoming) -> UpstreamBody {
        UpstreamBody {
            inner,
            sent: 0,
            watch: None,
            capture: None,
        }
    }

    /// From now on, each chunk is copied into `capture` as it passes; the
    /// capture is queued when the body ends or is dropped.
    pub fn capture(&mut self, mut capture: Box<Capture>) {
        if self.inner.is_end_stream() {
            capture.complete();
            return;
        }
        self.capture = Some(capture);
    }

    /// From now on, a cut is recorded to `sink` as a follow-up of the call
    /// whose record became the live event `call`.
    pub fn watch(&mut self, sink: &AuditSink, call: Arc<LiveEvent>) {
        self.watch = Some(Watch {
            sink: sink.clone(),
            call,
        });
    }

    fn report_cut(&mut self, error: &hyper::Error) {
        let Some(w) = self.watch.take() else {
            return;
        };
        let rec = incomplete(&w.call, self.sent, error);
        let sink = w.sink;
        tokio::spawn(async move { sink.record(rec).await });
    }
}

/// The follow-up record of a response cut after `sent` bytes.
fn incomplete(call: &LiveEvent, sent: u64, error: &hyper::Error) -> AuditRecord {
    AuditRecord {
        time: rfc3339(std::time::SystemTime::now()),
        request_id: call.request_id.clone(),
        event: "response_incomplete",
        agent: call.agent.clone(),
        route: call.route.clone(),
        verdict: "error",
        error: Some("response_incomplete"),
        fault: Some(Fault::Upstream),
        status: call.status,
        upstream_status: Some(call.status),
        reasons: vec![format!(
            "the upstream's response broke off after {sent} bytes of its body: {error}"
        )],
        extra: Some(json!({"incomplete": true, "bytes_sent": sent})),
        ..AuditRecord::default()
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    self.sent = self
                        .sent
                        .saturating_add(u64::try_from(data.len()).unwrap_or(u64::MAX));
                    let ended = self.inner.is_end_stream();
                    if let Some(c) = &mut self.capture {
                        c.chunk(data);
                        if ended {
                            c.complete();
                            self.capture = None;
                        }
                    }
                }
            }
            Poll::Ready(Some(Err(e))) => {
                // Dropped incomplete: queued as far as it went.
                self.capture = None;
                self.report_cut(e);
            }
            Poll::Ready(None) => {
                if let Some(mut c) = self.capture.take() {
                    c.complete();
                }
            }
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
