//! Review items: sampled calls kept for a human to judge after the fact,
//! and the queue reviewers work through.
//!
//! An item is `open` until a reviewer claims it, `claimed` while the claim
//! runs (a claim is a lease: once it runs out the item is open again), and
//! `done` once a verdict is stored. Claims and verdicts are compare-and-set
//! in the store, so of two reviewers (or two replicas) one wins.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde::{Deserialize, Serialize};

use super::{CursorError, NewDelivery, StoreFuture};

/// A body as kept: JSON when it read as JSON (redacted), else text.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CapturedBody {
    /// `json`, `text` (lossy UTF-8), `withheld` (not kept: see `note`) or
    /// `empty`.
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<serde_json::Value>,
    /// The body's whole length in bytes, as far as it was seen.
    pub bytes: u64,
    /// Only the first `sampling.max_bytes` were kept.
    pub truncated: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CapturedRequest {
    pub method: String,
    pub path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query: Option<String>,
    pub headers: Vec<(String, String)>,
    pub body: CapturedBody,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CapturedResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: CapturedBody,
    /// False when the body broke off (or the agent left) before its end.
    pub complete: bool,
}

/// A reviewer's judgment of a sampled call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VerdictKind {
    Ok,
    Bad,
    PolicyGap,
}

impl VerdictKind {
    pub fn as_str(self) -> &'static str {
        match self {
            VerdictKind::Ok => "ok",
            VerdictKind::Bad => "bad",
            VerdictKind::PolicyGap => "policy_gap",
        }
    }

    pub fn parse(s: &str) -> Option<VerdictKind> {
        Some(match s {
            "ok" => VerdictKind::Ok,
            "bad" => VerdictKind::Bad,
            "policy_gap" => VerdictKind::PolicyGap,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReviewVerdict {
    pub verdict: VerdictKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// What the call or its answer should have been.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correction: Option<serde_json::Value>,
    pub by: String,
    pub at_ms: i64,
}

/// One sampled call, as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReviewItem {
    /// A UUIDv7, so that ids sort by creation.
    pub id: String,
    pub request_id: String,
    pub agent: String,
    pub route: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool: Option<String>,
    pub policies: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confidence: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// What picked it: `policy` (an `@sample` permit) or `rule`.
    pub sampled_by: String,
    pub created_ms: i64,
    pub request: CapturedRequest,
    pub response: CapturedResponse,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claimed_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claimed_until_ms: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verdict: Option<ReviewVerdict>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReviewStatus {
    Open,
    Claimed,
    Done,
}

impl ReviewStatus {
    pub fn parse(s: &str) -> Option<ReviewStatus> {
        Some(match s {
            "open" => ReviewStatus::Open,
            "claimed" => ReviewStatus::Claimed,
            "done" => ReviewStatus::Done,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ReviewStatus::Open => "open",
            ReviewStatus::Claimed => "claimed",
            ReviewStatus::Done => "done",
        }
    }
}

impl ReviewItem {
    /// Where the item stands at `now_ms`.
    pub fn status(&self, now_ms: i64) -> ReviewStatus {
        if self.verdict.is_some() {
            ReviewStatus::Done
        } else if self.claimed_until_ms.is_some_and(|u| u > now_ms) {
            ReviewStatus::Claimed
        } else {
            ReviewStatus::Open
        }
    }
}

/// One page request, newest first.
#[derive(Debug, Clone, Default)]
pub struct ReviewQuery {
    pub status: Option<ReviewStatus>,
    pub agent: Option<String>,
    pub route: Option<String>,
    pub tool: Option<String>,
    pub after: Option<ReviewCursor>,
    pub limit: u32,
    /// The instant `open` and `claimed` are judged at.
    pub now_ms: i64,
}

#[derive(Debug, Clone, Default)]
pub struct ReviewPage {
    pub items: Vec<ReviewItem>,
    pub next: Option<ReviewCursor>,
}

impl ReviewPage {
    /// A page from up to `limit + 1` rows: the extra row only says that
    /// there is more.
    pub fn from_rows(mut rows: Vec<ReviewItem>, limit: u32) -> ReviewPage {
        let limit = usize::try_from(limit).unwrap_or(usize::MAX);
        let more = rows.len() > limit;
        rows.truncate(limit);
        let next = match rows.last() {
            Some(last) if more => Some(ReviewCursor {
                after_id: last.id.clone(),
            }),
            _ => None,
        };
        ReviewPage { items: rows, next }
    }
}

const CURSOR_VERSION: &str = "r1";

/// Where the next page starts: after the item with this id (keyset paging,
/// as for holds).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReviewCursor {
    // INVARIANT: a canonical UUID, so text order is id order.
    after_id: String,
}

impl ReviewCursor {
    pub fn after_id(&self) -> &str {
        &self.after_id
    }

    pub fn encode(&self) -> String {
        URL_SAFE_NO_PAD.encode(format!("{CURSOR_VERSION}.{}", self.after_id))
    }

    pub fn decode(text: &str) -> Result<ReviewCursor, CursorError> {
        let bad = || CursorError(text.chars().take(80).collect());
        let raw = URL_SAFE_NO_PAD.decode(text.trim()).map_err(|_| bad())?;
        let raw = String::from_utf8(raw).map_err(|_| bad())?;
        let id = raw
            .strip_prefix(CURSOR_VERSION)
            .and_then(|r| r.strip_prefix('.'))
            .ok_or_else(bad)?;
        let id = uuid::Uuid::parse_str(id).map_err(|_| bad())?;
        Ok(ReviewCursor {
            after_id: id.hyphenated().to_string(),
        })
    }
}

/// What a claim or a verdict found.
#[derive(Debug, Clone, PartialEq)]
pub enum ReviewChange {
    /// Made: the item as it is now (boxed: the other outcomes are small).
    Made(Box<ReviewItem>),
    Missing,
    /// Another reviewer's claim runs until `until_ms`.
    Taken {
        by: String,
        until_ms: i64,
    },
    /// A verdict was stored already.
    Finished,
}

/// Durable review items; claims and verdicts are compare-and-set.
pub trait ReviewStore: Send + Sync {
    /// Stores `items` in one transaction: all of them or, on an error,
    /// none. The writer batches what the queue holds, so that a burst of
    /// sampled calls costs one commit rather than one each.
    fn insert_reviews(&self, items: Vec<ReviewItem>) -> StoreFuture<'_, ()>;

    fn insert_review(&self, item: ReviewItem) -> StoreFuture<'_, ()> {
        self.insert_reviews(vec![item])
    }

    fn get_review(&self, id: &str) -> StoreFuture<'_, Option<ReviewItem>>;

    /// One page, newest first.
    fn list_reviews(&self, query: ReviewQuery) -> StoreFuture<'_, ReviewPage>;

    /// Claims item `id` for `by` until `until_ms` if nobody else holds a
    /// claim running at `now_ms` (a reviewer may renew their own).
    fn claim_review(
        &self,
        id: &str,
        by: &str,
        now_ms: i64,
        until_ms: i64,
    ) -> StoreFuture<'_, ReviewChange>;

    /// Claims the oldest open item for `by`; `None` when none is open.
    fn claim_next_review(
        &self,
        by: &str,
        now_ms: i64,
        until_ms: i64,
    ) -> StoreFuture<'_, Option<ReviewItem>>;

    /// Stores `verdict` on item `id` with the deliveries announcing it, in
    /// one transaction, if it has none yet and no other reviewer's claim
    /// runs at `now_ms`.
    fn finish_review(
        &self,
        id: &str,
        verdict: ReviewVerdict,
        now_ms: i64,
        deliveries: Vec<NewDelivery>,
    ) -> StoreFuture<'_, ReviewChange>;

    /// Deletes items created before `before_ms`; how many went.
    fn prune_reviews(&self, before_ms: i64) -> StoreFuture<'_, u64>;

    /// Items given a verdict at or after `since_ms`, oldest verdict first
    /// (for the feedback export).
    fn reviews_decided_since(&self, since_ms: i64, limit: u32) -> StoreFuture<'_, Vec<ReviewItem>>;
}

pub(super) fn encode(item: &ReviewItem) -> Result<String, super::StoreError> {
    serde_json::to_string(item)
        .map_err(|e| super::StoreError::Backend(format!("cannot encode: {e}")))
}

/// The item from its stored document and its claim columns.
pub(super) fn decode(
    text: &str,
    claimed_by: Option<String>,
    claimed_until_ms: i64,
) -> Result<ReviewItem, super::StoreError> {
    let mut item: ReviewItem = serde_json::from_str(text).map_err(|e| {
        super::StoreError::Backend(format!("a stored review item does not decode: {e}"))
    })?;
    item.claimed_by = claimed_by;
    item.claimed_until_ms = (claimed_until_ms > 0).then_some(claimed_until_ms);
    Ok(item)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_review_cursor_round_trips_and_refuses_a_hold_cursor() {
        let id = uuid::Uuid::now_v7().to_string();
        let c = ReviewCursor {
            after_id: id.clone(),
        };
        assert_eq!(ReviewCursor::decode(&c.encode()).unwrap(), c);
        assert!(ReviewCursor::decode(&URL_SAFE_NO_PAD.encode(format!("h1.{id}"))).is_err());
    }
}
