//! A sampled call's copy, taken as it passes.
//!
//! The request is copied once it is judged (before `forward` takes its
//! headers); the response's chunks are copied as they go to the agent, up
//! to `sampling.max_bytes`, and none is held back. When the response body
//! ends, breaks off, or the agent leaves, the capture is dropped, and its
//! drop queues it: a call is reviewed as far as it went. Redaction and
//! JSON parsing happen on the writer task ([`Pending::into_item`]), not on
//! the worker that served the call.

use http::{HeaderMap, HeaderName, HeaderValue};

use super::{redact, Picked, ReviewQueue};
use crate::config::SamplingConfig;
use crate::store::{CapturedBody, CapturedRequest, CapturedResponse, ReviewItem};

/// What the proxy knows of a sampled call once it is allowed.
pub struct CallFacts<'a> {
    pub request_id: &'a str,
    pub agent: &'a str,
    pub route: &'a str,
    pub tool: Option<&'a str>,
    pub policies: &'a [String],
    pub picked: Picked,
    pub confidence: Option<&'a str>,
    pub reason: Option<&'a str>,
    pub method: &'a str,
    /// The decoded path, route prefix included.
    pub path: &'a str,
    pub query: Option<&'a str>,
    pub headers: &'a HeaderMap,
    pub body: &'a [u8],
    /// The route's injected headers: only their names are kept.
    pub injected: &'a [(HeaderName, HeaderValue)],
}

/// A sampled call on its way; queued for the store when dropped.
pub struct Capture {
    // INVARIANT: `Some` until the drop queues it.
    pending: Option<Pending>,
    queue: ReviewQueue,
}

/// A capture as handed to the writer: unredacted bytes and their lengths.
pub struct Pending {
    item: ReviewItem,
    request_body: Vec<u8>,
    response_kept: Vec<u8>,
    response_seen: u64,
    max: usize,
    pointers: Vec<String>,
}

impl Capture {
    pub fn new(facts: CallFacts<'_>, cfg: &SamplingConfig, queue: &ReviewQueue) -> Capture {
        let empty = CapturedBody {
            kind: "empty".into(),
            content: None,
            bytes: 0,
            truncated: false,
            note: None,
        };
        let item = ReviewItem {
            id: uuid::Uuid::now_v7().to_string(),
            request_id: facts.request_id.to_string(),
            agent: facts.agent.to_string(),
            route: facts.route.to_string(),
            tool: facts.tool.map(str::to_string),
            policies: facts.policies.to_vec(),
            confidence: facts.confidence.map(str::to_string),
            reason: facts.reason.map(str::to_string),
            sampled_by: facts.picked.as_str().to_string(),
            created_ms: crate::clock::now_ms(),
            request: CapturedRequest {
                method: facts.method.to_string(),
                path: facts.path.to_string(),
                query: facts.query.map(str::to_string),
                headers: redact::request_headers(facts.headers, facts.injected),
                body: empty.clone(),
            },
            response: CapturedResponse {
                status: 0,
                headers: Vec::new(),
                body: empty,
                complete: false,
            },
            claimed_by: None,
            claimed_until_ms: None,
            verdict: None,
        };
        Capture {
            pending: Some(Pending {
                item,
                request_body: facts.body.to_vec(),
                response_kept: Vec::new(),
                response_seen: 0,
                max: cfg.max_bytes,
                pointers: cfg.redact.clone(),
            }),
            queue: queue.clone(),
        }
    }

    /// The response's status and headers, as the agent gets them.
    pub fn response_head(&mut self, status: u16, headers: &HeaderMap) {
        if let Some(p) = &mut self.pending {
            p.item.response.status = status;
            p.item.response.headers = redact::response_headers(headers);
        }
    }

    /// Copies what fits of one chunk on its way to the agent.
    pub fn chunk(&mut self, data: &[u8]) {
        if let Some(p) = &mut self.pending {
            p.response_seen = p
                .response_seen
                .saturating_add(u64::try_from(data.len()).unwrap_or(u64::MAX));
            let room = p.max.saturating_sub(p.response_kept.len());
            p.response_kept
                .extend_from_slice(&data[..room.min(data.len())]);
        }
    }

    /// The response body reached its end.
    pub fn complete(&mut self) {
        if let Some(p) = &mut self.pending {
            p.item.response.complete = true;
        }
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        if let Some(p) = self.pending.take() {
            self.queue.offer(p);
        }
    }
}

impl Pending {
    /// The review item, redacted: bodies read, pointers blanked, cut.
    pub fn into_item(self) -> ReviewItem {
        let mut item = self.item;
        let request_len = u64::try_from(self.request_body.len()).unwrap_or(u64::MAX);
        item.request.body = redact::body(&self.request_body, request_len, self.max, &self.pointers);
        item.response.body = redact::body(
            &self.response_kept,
            self.response_seen,
            self.max,
            &self.pointers,
        );
        item
    }
}
