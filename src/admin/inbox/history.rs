//! The History tab: the decided approvals the signed-in person may see,
//! newest first, paged with the API's cursors (`GET /v1/approvals`): who
//! decided, when, what, and what came of it.

use askama::Template;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;

use super::pages::render;
use super::view::call_label;
use super::{session_reader, signed_in_label, Who};
use crate::admin::approvals::MAX_LIMIT;
use crate::admin::AdminState;
use crate::clock::ms_to_rfc3339;
use crate::store::{HoldCursor, HoldPageQuery, HoldRecord, HoldState, HumanAnswer};

/// Approvals read per page when `limit` is not given.
const DEFAULT_LIMIT: u32 = 50;

/// One decided approval.
pub struct DecidedRow {
    pub id: String,
    pub agent: String,
    pub call: String,
    pub by: String,
    pub when: String,
    /// `approve`, `edit`, `deny`, `respond`, `expired` or `voided`.
    pub what: &'static str,
    pub reason: String,
    pub outcome: String,
}

impl DecidedRow {
    fn of(h: &HoldRecord) -> DecidedRow {
        let what = match h.state {
            HoldState::Approved | HoldState::Executing | HoldState::Executed
                if h.edited_body.is_some() =>
            {
                "edit"
            }
            HoldState::Pending
            | HoldState::Approved
            | HoldState::Executing
            | HoldState::Executed => "approve",
            HoldState::Denied => "deny",
            HoldState::Responded => "respond",
            HoldState::Expired => "expired",
            HoldState::Voided => "voided",
        };
        DecidedRow {
            id: h.id.clone(),
            agent: h.agent.clone(),
            call: call_label(h),
            by: h.decided_by.clone().unwrap_or_else(|| "-".into()),
            when: ms_to_rfc3339(h.decided_ms.unwrap_or(h.expires_ms)),
            what,
            reason: h.reason.clone().unwrap_or_default(),
            outcome: outcome(h),
        }
    }
}

/// What came of a decided approval, as far as the store knows.
fn outcome(h: &HoldRecord) -> String {
    match (h.state, &h.outcome, &h.answer) {
        (HoldState::Executed, Some(o), _) => format!("executed: the tool answered {}", o.status),
        (HoldState::Executed, None, _) => "executed".into(),
        (HoldState::Executing, ..) => "executing".into(),
        (HoldState::Approved, ..) => "approved; the agent has not retried yet".into(),
        (_, _, Some(HumanAnswer::Http { status, .. })) => format!("answered {status} by a human"),
        (_, _, Some(HumanAnswer::Mcp { .. })) => "answered with a result by a human".into(),
        (_, Some(o), _) => o.reason.clone(),
        (state, None, None) => format!("not run ({})", state.as_str()),
    }
}

#[derive(Deserialize)]
pub struct HistoryQuery {
    cursor: Option<String>,
    limit: Option<u32>,
}

#[derive(Template)]
#[template(path = "inbox/history.html")]
struct HistoryPage {
    who: Who,
    csrf: String,
    rows: Vec<DecidedRow>,
    /// The link to the next, older page.
    older: Option<String>,
    error: Option<String>,
}

pub async fn page(
    State(state): State<AdminState>,
    headers: HeaderMap,
    q: Result<Query<HistoryQuery>, QueryRejection>,
) -> Response {
    let Some((session, decider)) = session_reader(&state, &headers) else {
        return Redirect::to("/").into_response();
    };
    let mut page = HistoryPage {
        who: signed_in_label(&state, &session.who),
        csrf: session.csrf,
        rows: Vec::new(),
        older: None,
        error: None,
    };
    let query = match read_query(q) {
        Ok((after, limit)) => HoldPageQuery {
            state: None,
            after,
            limit,
            groups: (!decider.any_group).then(|| decider.groups.clone()),
        },
        Err(why) => {
            page.error = Some(why);
            return render(StatusCode::BAD_REQUEST, &page);
        }
    };
    let limit = query.limit;
    match state.approvals.store().list(query).await {
        Ok(found) => {
            // Pending approvals are the Pending tab's; a page may show
            // fewer rows than `limit` for them.
            page.rows = found
                .holds
                .iter()
                .filter(|h| h.state != HoldState::Pending)
                .map(DecidedRow::of)
                .collect();
            page.older = found
                .next
                .map(|n| format!("/history?cursor={}&limit={limit}", n.encode()));
            render(StatusCode::OK, &page)
        }
        Err(e) => {
            page.error = Some(format!("the approval store did not answer: {e}"));
            render(StatusCode::SERVICE_UNAVAILABLE, &page)
        }
    }
}

/// The cursor and page size asked for, checked as the API checks them.
fn read_query(
    q: Result<Query<HistoryQuery>, QueryRejection>,
) -> Result<(Option<HoldCursor>, u32), String> {
    let Query(q) =
        q.map_err(|e| format!("{}; the parameters are `cursor` and `limit`", e.body_text()))?;
    let limit = q.limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(format!("`limit` must be from 1 to {MAX_LIMIT}"));
    }
    let after = match q.cursor.as_deref() {
        None | Some("") => None,
        Some(c) => Some(
            HoldCursor::decode(c)
                .map_err(|e| format!("{e}; follow the Older link from the previous page"))?,
        ),
    };
    Ok((after, limit))
}
