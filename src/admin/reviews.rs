//! The review queue on the admin listener (see docs/feedback.md):
//!
//! - `GET /v1/reviews?status=open|claimed|done&agent=&route=&tool=&limit=&cursor=`
//!   lists sampled calls newest first, keyset paginated like approvals;
//! - `GET /v1/reviews/{id}` shows one;
//! - `POST /v1/reviews/{id}/claim` reserves it for the caller for
//!   [`CLAIM_FOR_MS`]; another reviewer's running claim answers 409;
//! - `POST /v1/reviews/next` claims the oldest open item;
//! - `POST /v1/reviews/{id}/verdict` stores the judgment: the claimer's, or
//!   anyone's once no claim runs. Each verdict is audited (event `review`),
//!   sent as the webhook `review.completed` from the outbox (queued in the
//!   same transaction) and counted in `airlock_reviews_total{verdict}`.
//!
//! Reviewers are approvers in the group `sampling.reviewers`, and the
//! admin token.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::approvals::{bearer_caller, page_limit, Caller};
use super::refusal::Refusal;
use super::AdminState;
use crate::approval::Decider;
use crate::audit::AuditRecord;
use crate::clock::{ms_to_rfc3339, now_ms, rfc3339};
use crate::config::Config;
use crate::store::{
    NewDelivery, ReviewChange, ReviewCursor, ReviewItem, ReviewQuery, ReviewStatus, ReviewVerdict,
    StoreError, VerdictKind,
};
use crate::telemetry::ReviewLabels;

/// How long a claim reserves an item.
pub const CLAIM_FOR_MS: i64 = 10 * 60 * 1000;
/// The longest note kept with a verdict, in bytes.
const MAX_NOTE: usize = 4096;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    status: Option<String>,
    agent: Option<String>,
    route: Option<String>,
    tool: Option<String>,
    limit: Option<String>,
    cursor: Option<String>,
}

/// The caller's name when they may review: the admin, or an approver in
/// the group `sampling.reviewers`.
fn require_reviewer(state: &AdminState, headers: &HeaderMap) -> Result<String, Refusal> {
    match bearer_caller(state, headers)? {
        Some(Caller::Admin) => Ok("admin".into()),
        Some(Caller::Approver(d)) => reviewer_name(state, &d),
        Some(Caller::Agent(_)) => Err(Refusal::agent_key()),
        None => Err(Refusal::unauthenticated()),
    }
}

/// `decider`'s name when they may review, the one rule for the API and
/// the inbox: the admin (any group), or a member of `sampling.reviewers`.
pub fn reviewer_name(state: &AdminState, decider: &Decider) -> Result<String, Refusal> {
    if decider.any_group {
        return Ok(decider.id.clone());
    }
    let snap = state.live.load();
    match &snap.config.sampling.reviewers {
        Some(group) if decider.groups.contains(group) => Ok(decider.id.clone()),
        Some(group) => Err(Refusal::new(
            StatusCode::FORBIDDEN,
            "not_a_reviewer",
            format!("reviewing sampled calls takes the group `{group}` (`sampling.reviewers`)"),
        )),
        None => Err(Refusal::new(
            StatusCode::FORBIDDEN,
            "not_a_reviewer",
            "no `sampling.reviewers` group is configured: only the admin token reviews",
        )),
    }
}

fn unavailable(e: &StoreError) -> Refusal {
    Refusal::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "store_unavailable",
        e.to_string(),
    )
}

fn page_query(q: ListQuery) -> Result<ReviewQuery, Refusal> {
    let status = match q.status.as_deref() {
        None | Some("all") => None,
        Some(s) => Some(ReviewStatus::parse(s).ok_or_else(|| {
            Refusal::bad_request(
                "bad_status",
                format!("unknown status `{s}`; use open, claimed, done or all"),
            )
        })?),
    };
    let limit = page_limit(q.limit.as_deref())?;
    let after = match q.cursor.as_deref() {
        None | Some("") => None,
        Some(text) => Some(ReviewCursor::decode(text).map_err(|e| {
            Refusal::bad_request(
                "bad_cursor",
                format!("{e}; pass `next_cursor` from the previous page unchanged"),
            )
        })?),
    };
    Ok(ReviewQuery {
        status,
        agent: q.agent,
        route: q.route,
        tool: q.tool,
        after,
        limit,
        now_ms: now_ms(),
    })
}

pub async fn list(
    State(state): State<AdminState>,
    headers: HeaderMap,
    q: Result<Query<ListQuery>, QueryRejection>,
) -> Response {
    if let Err(r) = require_reviewer(&state, &headers) {
        return r.into_response();
    }
    let query = match q {
        Ok(Query(q)) => page_query(q),
        Err(e) => Err(Refusal::bad_request(
            "bad_query",
            format!(
                "{}; the parameters are `status`, `agent`, `route`, `tool`, `limit` and `cursor`",
                e.body_text()
            ),
        )),
    };
    let query = match query {
        Ok(q) => q,
        Err(r) => return r.into_response(),
    };
    let now = query.now_ms;
    match state.approvals.store().list_reviews(query).await {
        Ok(page) => Json(json!({
            "reviews": page.items.iter().map(|i| view(i, now)).collect::<Vec<_>>(),
            "next_cursor": page.next.as_ref().map(ReviewCursor::encode),
        }))
        .into_response(),
        Err(e) => unavailable(&e).into_response(),
    }
}

pub async fn show(
    State(state): State<AdminState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    if let Err(r) = require_reviewer(&state, &headers) {
        return r.into_response();
    }
    match state.approvals.store().get_review(&id).await {
        Ok(Some(item)) => Json(view(&item, now_ms())).into_response(),
        Ok(None) => missing(&id).into_response(),
        Err(e) => unavailable(&e).into_response(),
    }
}

fn missing(id: &str) -> Refusal {
    Refusal::new(
        StatusCode::NOT_FOUND,
        "not_found",
        format!("no review item `{id}`"),
    )
}

/// The item a claim or verdict changed, or why it did not change.
fn changed(id: &str, change: ReviewChange) -> Result<ReviewItem, Refusal> {
    match change {
        ReviewChange::Made(item) => Ok(*item),
        ReviewChange::Missing => Err(missing(id)),
        ReviewChange::Taken { by, until_ms } => Err(Refusal::new(
            StatusCode::CONFLICT,
            "claimed",
            format!(
                "review item `{id}` is claimed by `{by}` until {}",
                ms_to_rfc3339(until_ms)
            ),
        )),
        ReviewChange::Finished => Err(Refusal::new(
            StatusCode::CONFLICT,
            "reviewed",
            format!("review item `{id}` has a verdict already"),
        )),
    }
}

/// The API's answer: the item's view, or the refusal.
fn answer(done: Result<ReviewItem, Refusal>) -> Response {
    match done {
        Ok(item) => Json(view(&item, now_ms())).into_response(),
        Err(r) => r.into_response(),
    }
}

pub async fn claim(
    State(state): State<AdminState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let by = match require_reviewer(&state, &headers) {
        Ok(by) => by,
        Err(r) => return r.into_response(),
    };
    let now = now_ms();
    let change = state
        .approvals
        .store()
        .claim_review(&id, &by, now, now + CLAIM_FOR_MS)
        .await;
    answer(
        change
            .map_err(|e| unavailable(&e))
            .and_then(|c| changed(&id, c)),
    )
}

pub async fn claim_next(State(state): State<AdminState>, headers: HeaderMap) -> Response {
    match require_reviewer(&state, &headers) {
        Ok(by) => answer(claim_next_as(&state, &by).await),
        Err(r) => r.into_response(),
    }
}

/// Claims the oldest open item for reviewer `by`: the API's and the
/// inbox's one path.
pub async fn claim_next_as(state: &AdminState, by: &str) -> Result<ReviewItem, Refusal> {
    let now = now_ms();
    match state
        .approvals
        .store()
        .claim_next_review(by, now, now + CLAIM_FOR_MS)
        .await
    {
        Ok(Some(item)) => Ok(item),
        Ok(None) => Err(Refusal::new(
            StatusCode::NOT_FOUND,
            "queue_empty",
            "no review item is open",
        )),
        Err(e) => Err(unavailable(&e)),
    }
}

/// One review item, for the inbox.
pub async fn find(state: &AdminState, id: &str) -> Result<ReviewItem, Refusal> {
    match state.approvals.store().get_review(id).await {
        Ok(Some(item)) => Ok(item),
        Ok(None) => Err(missing(id)),
        Err(e) => Err(unavailable(&e)),
    }
}

/// The items `by` has claimed, then the open ones, newest first, for the
/// inbox.
pub async fn queue(state: &AdminState, by: &str, limit: u32) -> Result<Vec<ReviewItem>, Refusal> {
    let now = now_ms();
    let mut items = Vec::new();
    for status in [ReviewStatus::Claimed, ReviewStatus::Open] {
        let query = ReviewQuery {
            status: Some(status),
            limit,
            now_ms: now,
            ..ReviewQuery::default()
        };
        let page = state
            .approvals
            .store()
            .list_reviews(query)
            .await
            .map_err(|e| unavailable(&e))?;
        items.extend(
            page.items
                .into_iter()
                .filter(|i| status == ReviewStatus::Open || i.claimed_by.as_deref() == Some(by)),
        );
    }
    Ok(items)
}

pub async fn verdict(
    State(state): State<AdminState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let by = match require_reviewer(&state, &headers) {
        Ok(by) => by,
        Err(r) => return r.into_response(),
    };
    let judged = match parse_verdict(&body, by, now_ms()) {
        Ok(v) => verdict_as(&state, &id, v).await,
        Err(r) => Err(r),
    };
    answer(judged)
}

/// Stores `verdict` on item `id`, then audits, announces and counts it:
/// the API's and the inbox's one path.
pub async fn verdict_as(
    state: &AdminState,
    id: &str,
    verdict: ReviewVerdict,
) -> Result<ReviewItem, Refusal> {
    let item = find(state, id).await?;
    let config = state.live.load().config.clone();
    let deliveries = deliveries(&config, &item, &verdict);
    let kind = verdict.verdict.as_str();
    let now = verdict.at_ms;
    let change = state
        .approvals
        .store()
        .finish_review(id, verdict, now, deliveries)
        .await
        .map_err(|e| unavailable(&e))?;
    let done = changed(id, change)?;
    state.approvals.wake_outbox();
    state
        .metrics
        .reviews
        .get_or_create(&ReviewLabels { verdict: kind })
        .inc();
    let target = match &done.tool {
        Some(tool) => format!("{}/{tool}", done.route),
        None => done.route.clone(),
    };
    state
        .counters
        .count_review(now, &done.policies, &target, kind);
    state.audit.record(audit_record(&done, kind)).await;
    Ok(done)
}

/// The verdict in `body`, or a 400 that says what is wrong with it.
fn parse_verdict(body: &[u8], by: String, now: i64) -> Result<ReviewVerdict, Refusal> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| Refusal::bad_request("bad_verdict", format!("the body is not JSON: {e}")))?;
    verdict_of(value, by, now)
}

/// The verdict a JSON object states, checked as the API checks it.
pub fn verdict_of(value: Value, by: String, now: i64) -> Result<ReviewVerdict, Refusal> {
    let bad = |m: String| Refusal::bad_request("bad_verdict", m);
    let Value::Object(mut fields) = value else {
        return Err(bad("the body must be a JSON object with `verdict`".into()));
    };
    let kind = match fields.remove("verdict") {
        Some(Value::String(v)) => VerdictKind::parse(&v)
            .ok_or_else(|| bad(format!("unknown verdict `{v}`; use ok, bad or policy_gap")))?,
        Some(_) => {
            return Err(bad(
                "`verdict` must be a string: ok, bad or policy_gap".into()
            ))
        }
        None => return Err(bad("`verdict` is missing; use ok, bad or policy_gap".into())),
    };
    let note = match fields.remove("note") {
        None | Some(Value::Null) => None,
        Some(Value::String(n)) if n.len() <= MAX_NOTE => Some(n),
        Some(Value::String(n)) => {
            return Err(bad(format!(
                "`note` is {} bytes long; at most {MAX_NOTE} are kept",
                n.len()
            )))
        }
        Some(_) => return Err(bad("`note` must be a string".into())),
    };
    let correction = match fields.remove("correction") {
        None | Some(Value::Null) => None,
        Some(c @ Value::Object(_)) => Some(c),
        Some(_) => return Err(bad("`correction` must be a JSON object".into())),
    };
    if let Some(other) = fields.keys().next() {
        return Err(bad(format!(
            "unknown field `{other}`; a verdict has `verdict`, `note` and `correction`"
        )));
    }
    Ok(ReviewVerdict {
        verdict: kind,
        note,
        correction,
        by,
        at_ms: now,
    })
}

fn audit_record(item: &ReviewItem, kind: &'static str) -> AuditRecord {
    let v = item.verdict.as_ref();
    AuditRecord {
        time: rfc3339(std::time::SystemTime::now()),
        request_id: item.request_id.clone(),
        event: "review",
        agent: Some(item.agent.clone()),
        route: Some(Arc::from(item.route.as_str())),
        method: item.request.method.clone().into(),
        path: item.request.path.clone(),
        verdict: kind,
        policies: item.policies.clone(),
        approver: v.map(|v| v.by.clone()),
        reasons: v.and_then(|v| v.note.clone()).into_iter().collect(),
        extra: Some(json!({
            "review_id": item.id,
            "tool": item.tool,
            "correction": v.and_then(|v| v.correction.clone()),
        })),
        ..AuditRecord::default()
    }
}

/// One `review.completed` delivery per webhook that wants it.
fn deliveries(cfg: &Config, item: &ReviewItem, verdict: &ReviewVerdict) -> Vec<NewDelivery> {
    const EVENT: &str = "review.completed";
    crate::notify::deliveries(cfg, EVENT, || {
        json!({
            "type": EVENT,
            "timestamp": rfc3339(std::time::SystemTime::now()),
            "data": {
                "id": item.id,
                "request_id": item.request_id,
                "agent": item.agent,
                "route": item.route,
                "tool": item.tool,
                "policies": item.policies,
                "verdict": verdict.verdict.as_str(),
                "note": verdict.note,
                "correction": verdict.correction,
                "by": verdict.by,
            }
        })
        .to_string()
    })
}

/// The API's view of a review item.
pub fn view(item: &ReviewItem, now: i64) -> Value {
    json!({
        "id": item.id,
        "status": item.status(now).as_str(),
        "request_id": item.request_id,
        "agent": item.agent,
        "route": item.route,
        "tool": item.tool,
        "policies": item.policies,
        "confidence": item.confidence,
        "reason": item.reason,
        "sampled_by": item.sampled_by,
        "created_at": ms_to_rfc3339(item.created_ms),
        "request": item.request,
        "response": item.response,
        "claimed_by": item.claimed_by,
        "claimed_until": item.claimed_until_ms.map(ms_to_rfc3339),
        "verdict": item.verdict.as_ref().map(|v| json!({
            "verdict": v.verdict.as_str(),
            "note": v.note,
            "correction": v.correction,
            "by": v.by,
            "at": ms_to_rfc3339(v.at_ms),
        })),
    })
}
