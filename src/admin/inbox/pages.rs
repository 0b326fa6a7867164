//! The inbox's sign-in page and pending list, and how every page is
//! rendered.

use askama::Template;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Response};

use super::view::PendingRow;
use super::{session_reader, signed_in_label, Who};
use crate::admin::approvals::MAX_LIMIT;
use crate::admin::AdminState;
use crate::approval::Decider;
use crate::store::{HoldPageQuery, HoldState};

#[derive(Template)]
#[template(path = "inbox/signin.html")]
struct SignInPage<'a> {
    error: Option<&'a str>,
}

#[derive(Template)]
#[template(path = "inbox/pending.html")]
struct PendingPage {
    who: Who,
    csrf: String,
    rows: Vec<PendingRow>,
    error: Option<String>,
}

#[derive(Template)]
#[template(path = "inbox/pending_list.html")]
struct PendingList {
    rows: Vec<PendingRow>,
    error: Option<String>,
}

pub(super) fn render(status: StatusCode, page: &impl Template) -> Response {
    match page.render() {
        Ok(html) => (status, Html(html)).into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("the page could not be rendered: {e}"),
        )
            .into_response(),
    }
}

pub fn sign_in_page(status: StatusCode, error: Option<&str>) -> Response {
    render(status, &SignInPage { error })
}

/// The pending holds `decider` may decide, oldest first.
async fn pending_rows(state: &AdminState, decider: &Decider) -> Result<Vec<PendingRow>, String> {
    let page = state
        .approvals
        .store()
        .list(HoldPageQuery {
            state: Some(HoldState::Pending),
            after: None,
            limit: MAX_LIMIT,
            groups: (!decider.any_group).then(|| decider.groups.clone()),
        })
        .await
        .map_err(|e| format!("the approval store did not answer: {e}"))?;
    Ok(page.holds.iter().rev().map(PendingRow::of).collect())
}

pub async fn home(State(state): State<AdminState>, headers: HeaderMap) -> Response {
    let Some((session, decider)) = session_reader(&state, &headers) else {
        return sign_in_page(StatusCode::OK, None);
    };
    let (rows, error) = match pending_rows(&state, &decider).await {
        Ok(rows) => (rows, None),
        Err(e) => (Vec::new(), Some(e)),
    };
    let page = PendingPage {
        who: signed_in_label(&state, &session.who),
        csrf: session.csrf,
        rows,
        error,
    };
    render(StatusCode::OK, &page)
}

pub async fn pending_fragment(State(state): State<AdminState>, headers: HeaderMap) -> Response {
    let Some((_, decider)) = session_reader(&state, &headers) else {
        return (StatusCode::UNAUTHORIZED, "sign in again").into_response();
    };
    let (rows, error) = match pending_rows(&state, &decider).await {
        Ok(rows) => (rows, None),
        Err(e) => (Vec::new(), Some(e)),
    };
    render(StatusCode::OK, &PendingList { rows, error })
}
