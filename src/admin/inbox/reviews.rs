//! The Reviews tab, for reviewers only (the API's rule,
//! `reviews::reviewer_name`): the sampled calls the person claimed and the
//! open ones, a form that claims the oldest, each captured call, and the
//! verdict form. Claims and verdicts go through `reviews::claim_next_as`
//! and `reviews::verdict_as`, the API's own path: the same store checks,
//! the same `review` audit record, webhook, metric and daily counters.

use askama::Template;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::pages::render;
use super::session::Session;
use super::{check_post, session_reader, signed_in_label, Who};
use crate::admin::refusal::Refusal;
use crate::admin::reviews::{claim_next_as, find, queue, reviewer_name, verdict_as, verdict_of};
use crate::admin::AdminState;
use crate::approval::Decider;
use crate::clock::{ms_to_rfc3339, now_ms};
use crate::store::{CapturedBody, ReviewItem};

/// Items listed on the tab, of each status.
const LISTED: u32 = 100;

/// One item in the list.
pub struct ItemRow {
    pub id: String,
    pub agent: String,
    pub call: String,
    pub when: String,
    pub sampled_by: String,
    pub status: &'static str,
}

impl ItemRow {
    fn of(i: &ReviewItem, now: i64) -> ItemRow {
        ItemRow {
            id: i.id.clone(),
            agent: i.agent.clone(),
            call: target(i),
            when: ms_to_rfc3339(i.created_ms),
            sampled_by: i.sampled_by.clone(),
            status: i.status(now).as_str(),
        }
    }
}

/// `route/tool`, or the route alone for a REST call.
fn target(i: &ReviewItem) -> String {
    match &i.tool {
        Some(tool) => format!("{}/{tool}", i.route),
        None => i.route.clone(),
    }
}

#[derive(Template)]
#[template(path = "inbox/reviews.html")]
struct ReviewsPage {
    who: Who,
    csrf: String,
    rows: Vec<ItemRow>,
    error: Option<String>,
}

#[derive(Template)]
#[template(path = "inbox/review.html")]
struct ReviewPage {
    who: Who,
    csrf: String,
    item: ItemRow,
    method: String,
    path: String,
    query: String,
    request_headers: Vec<(String, String)>,
    request_body: String,
    status: u16,
    response_headers: Vec<(String, String)>,
    response_body: String,
    policies: String,
    confidence: String,
    reason: String,
    claimed_by: String,
    /// The verdict given, as `verdict by name: note`.
    verdict: Option<String>,
    /// Whether the verdict form is shown: the item is this person's claim.
    mine: bool,
    last: VerdictForm,
    error: Option<String>,
}

#[derive(Template)]
#[template(path = "inbox/not_reviewer.html")]
struct NotReviewerPage {
    who: Who,
    csrf: String,
    why: String,
}

/// The reviewer's name, or the refusal page (boxed: a response is large).
fn reviewer(
    state: &AdminState,
    session: &Session,
    decider: &Decider,
) -> Result<String, Box<Response>> {
    reviewer_name(state, decider).map_err(|r| {
        let page = NotReviewerPage {
            who: signed_in_label(state, &session.who),
            csrf: session.csrf.clone(),
            why: r.message,
        };
        Box::new(render(r.status, &page))
    })
}

pub async fn page(State(state): State<AdminState>, headers: HeaderMap) -> Response {
    let Some((session, decider)) = session_reader(&state, &headers) else {
        return Redirect::to("/").into_response();
    };
    reviews_page(&state, &session, &decider, StatusCode::OK, None).await
}

async fn reviews_page(
    state: &AdminState,
    session: &Session,
    decider: &Decider,
    status: StatusCode,
    error: Option<String>,
) -> Response {
    let by = match reviewer(state, session, decider) {
        Ok(by) => by,
        Err(refused) => return *refused,
    };
    let now = now_ms();
    let (rows, error, status) = match queue(state, &by, LISTED).await {
        Ok(items) => (
            items.iter().map(|i| ItemRow::of(i, now)).collect(),
            error,
            status,
        ),
        Err(r) => (Vec::new(), Some(r.message), r.status),
    };
    let page = ReviewsPage {
        who: signed_in_label(state, &session.who),
        csrf: session.csrf.clone(),
        rows,
        error,
    };
    render(status, &page)
}

#[derive(Deserialize, Default)]
pub struct VerdictForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    verdict: String,
    #[serde(default)]
    note: String,
    #[serde(default)]
    correction: String,
}

pub async fn claim_next(
    State(state): State<AdminState>,
    headers: HeaderMap,
    Form(form): Form<VerdictForm>,
) -> Response {
    let (session, decider) = match check_post(&state, &headers, &form.csrf) {
        Ok(s) => s,
        Err(refused) => return refused.into_response(),
    };
    let by = match reviewer(&state, &session, &decider) {
        Ok(by) => by,
        Err(refused) => return *refused,
    };
    match claim_next_as(&state, &by).await {
        Ok(item) => Redirect::to(&format!("/reviews/{}", item.id)).into_response(),
        Err(r) => reviews_page(&state, &session, &decider, r.status, Some(r.message)).await,
    }
}

pub async fn item(
    State(state): State<AdminState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let Some((session, decider)) = session_reader(&state, &headers) else {
        return Redirect::to("/").into_response();
    };
    item_page(
        &state,
        &session,
        &decider,
        &id,
        VerdictForm::default(),
        None,
    )
    .await
}

/// One captured call, with the refusal of the last verdict form if any.
async fn item_page(
    state: &AdminState,
    session: &Session,
    decider: &Decider,
    id: &str,
    last: VerdictForm,
    refused: Option<Refusal>,
) -> Response {
    let by = match reviewer(state, session, decider) {
        Ok(by) => by,
        Err(refused) => return *refused,
    };
    let item = match find(state, id).await {
        Ok(item) => item,
        Err(r) => return reviews_page(state, session, decider, r.status, Some(r.message)).await,
    };
    let now = now_ms();
    let status = refused.as_ref().map_or(StatusCode::OK, |r| r.status);
    let page = ReviewPage {
        who: signed_in_label(state, &session.who),
        csrf: session.csrf.clone(),
        mine: item.verdict.is_none() && item.claimed_by.as_deref() == Some(by.as_str()),
        method: item.request.method.clone(),
        path: item.request.path.clone(),
        query: item.request.query.clone().unwrap_or_default(),
        request_headers: item.request.headers.clone(),
        request_body: shown(&item.request.body),
        status: item.response.status,
        response_headers: item.response.headers.clone(),
        response_body: shown(&item.response.body),
        policies: item.policies.join(", "),
        confidence: item.confidence.clone().unwrap_or_else(|| "-".into()),
        reason: item.reason.clone().unwrap_or_else(|| "-".into()),
        claimed_by: item.claimed_by.clone().unwrap_or_else(|| "-".into()),
        verdict: item.verdict.as_ref().map(|v| {
            let note = v.note.as_deref().unwrap_or("");
            format!("{} by {}: {note}", v.verdict.as_str(), v.by)
        }),
        item: ItemRow::of(&item, now),
        last,
        error: refused.map(|r| r.message),
    };
    render(status, &page)
}

/// A captured body as text: JSON pretty-printed, with what was not kept.
fn shown(body: &CapturedBody) -> String {
    let text = match &body.content {
        Some(Value::String(s)) if body.kind != "json" => s.clone(),
        Some(v) => serde_json::to_string_pretty(v).unwrap_or_default(),
        None => String::new(),
    };
    let mut notes = Vec::new();
    if body.truncated {
        notes.push(format!("truncated: {} bytes in all", body.bytes));
    }
    if let Some(n) = &body.note {
        notes.push(n.clone());
    }
    if notes.is_empty() {
        return if text.is_empty() {
            format!("({})", body.kind)
        } else {
            text
        };
    }
    format!("{text}\n({})", notes.join("; "))
}

pub async fn verdict(
    State(state): State<AdminState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(form): Form<VerdictForm>,
) -> Response {
    let (session, decider) = match check_post(&state, &headers, &form.csrf) {
        Ok(s) => s,
        Err(refused) => return refused.into_response(),
    };
    let by = match reviewer(&state, &session, &decider) {
        Ok(by) => by,
        Err(refused) => return *refused,
    };
    let judged = match verdict_value(&form) {
        Ok(value) => match verdict_of(value, by, now_ms()) {
            Ok(v) => verdict_as(&state, &id, v).await,
            Err(r) => Err(r),
        },
        Err(r) => Err(r),
    };
    match judged {
        Ok(_) => Redirect::to(&format!("/reviews/{id}")).into_response(),
        Err(r) => item_page(&state, &session, &decider, &id, form, Some(r)).await,
    }
}

/// The form as the API's JSON verdict; a correction that is not JSON is
/// the API's 400.
fn verdict_value(form: &VerdictForm) -> Result<Value, Refusal> {
    let mut fields = Map::new();
    fields.insert("verdict".into(), json!(form.verdict));
    if !form.note.trim().is_empty() {
        fields.insert("note".into(), json!(form.note));
    }
    if !form.correction.trim().is_empty() {
        let correction: Value = serde_json::from_str(&form.correction).map_err(|e| {
            Refusal::bad_request("bad_verdict", format!("the correction is not JSON: {e}"))
        })?;
        fields.insert("correction".into(), correction);
    }
    Ok(Value::Object(fields))
}
