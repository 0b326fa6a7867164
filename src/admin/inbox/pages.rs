//! The inbox's pages and its decision forms. Decisions go through
//! `decision::decide_as`, the API's own path: the same checks, the same
//! policy re-check of an edit, the same audit records.

use askama::Template;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::Form;
use serde::Deserialize;
use serde_json::Value;

use super::session::Session;
use super::view::{HeldCall, PendingRow};
use super::{check_post, session_reader, signed_in_label};
use crate::admin::approvals::MAX_LIMIT;
use crate::admin::decision::decide_as;
use crate::admin::AdminState;
use crate::approval::bound::visible_to;
use crate::approval::{Decider, DecisionInput, DecisionKind};
use crate::store::{HoldPageQuery, HoldState};

#[derive(Template)]
#[template(path = "inbox/signin.html")]
struct SignInPage<'a> {
    error: Option<&'a str>,
}

#[derive(Template)]
#[template(path = "inbox/pending.html")]
struct PendingPage {
    who: String,
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

#[derive(Template)]
#[template(path = "inbox/held.html")]
struct HeldPage {
    who: String,
    csrf: String,
    call: HeldCall,
    /// Why the last form was refused, shown beside the forms.
    error: Option<String>,
    /// What the edit box holds: the call's payload, or the rejected edit.
    edit_text: String,
}

#[derive(Template)]
#[template(path = "inbox/missing.html")]
struct MissingPage {
    who: String,
    csrf: String,
    id: String,
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
        who: signed_in_label(&session.who),
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

pub async fn held(
    State(state): State<AdminState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let Some((session, decider)) = session_reader(&state, &headers) else {
        return Redirect::to("/").into_response();
    };
    held_page(&state, &session, &decider, &id, StatusCode::OK, None, None).await
}

/// The held call's page, with the refusal of the last form if any.
async fn held_page(
    state: &AdminState,
    session: &Session,
    decider: &Decider,
    id: &str,
    status: StatusCode,
    error: Option<String>,
    edit_text: Option<String>,
) -> Response {
    let who = signed_in_label(&session.who);
    let hold = match state.approvals.store().get(id).await {
        Ok(Some(h)) if visible_to(decider, &h) => h,
        // Another group's approval is not there for this approver, as on
        // the API.
        Ok(_) => {
            let page = MissingPage {
                who,
                csrf: session.csrf.clone(),
                id: id.to_string(),
            };
            return render(StatusCode::NOT_FOUND, &page);
        }
        Err(e) => {
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                format!("the approval store did not answer: {e}"),
            )
                .into_response()
        }
    };
    let call = HeldCall::of(&hold);
    let page = HeldPage {
        who,
        csrf: session.csrf.clone(),
        edit_text: edit_text.unwrap_or_else(|| call.editable.clone()),
        call,
        error,
    };
    render(status, &page)
}

#[derive(Deserialize)]
pub struct DecisionForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    reason: String,
    /// Edit and approve: the replacement body or arguments, as JSON text.
    edited: Option<String>,
}

impl DecisionForm {
    fn reason(&self) -> Option<String> {
        let r = self.reason.trim();
        (!r.is_empty()).then(|| r.to_string())
    }
}

pub async fn approve(
    State(state): State<AdminState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(form): Form<DecisionForm>,
) -> Response {
    let input = DecisionInput {
        kind: DecisionKind::Approve,
        reason: form.reason(),
        edit: None,
    };
    submit(&state, &headers, &id, &form, input).await
}

pub async fn deny(
    State(state): State<AdminState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(form): Form<DecisionForm>,
) -> Response {
    let (session, decider) = match check_post(&state, &headers, &form.csrf) {
        Ok(s) => s,
        Err(refused) => return refused.into_response(),
    };
    let Some(reason) = form.reason() else {
        let why = "a denial needs a reason: the agent is told it".to_string();
        return held_page(
            &state,
            &session,
            &decider,
            &id,
            StatusCode::BAD_REQUEST,
            Some(why),
            None,
        )
        .await;
    };
    let input = DecisionInput {
        kind: DecisionKind::Deny,
        reason: Some(reason),
        edit: None,
    };
    submit(&state, &headers, &id, &form, input).await
}

pub async fn edit(
    State(state): State<AdminState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(form): Form<DecisionForm>,
) -> Response {
    let (session, decider) = match check_post(&state, &headers, &form.csrf) {
        Ok(s) => s,
        Err(refused) => return refused.into_response(),
    };
    let text = form.edited.clone().unwrap_or_default();
    let edited = match serde_json::from_str::<Value>(&text) {
        Ok(v) => v,
        Err(e) => {
            let why = format!("the edit is not valid JSON: {e}");
            return held_page(
                &state,
                &session,
                &decider,
                &id,
                StatusCode::BAD_REQUEST,
                Some(why),
                Some(text),
            )
            .await;
        }
    };
    let input = DecisionInput {
        kind: DecisionKind::Approve,
        reason: form.reason(),
        edit: Some(edited),
    };
    submit(&state, &headers, &id, &form, input).await
}

/// Decides through the API's path: back to the list when it is taken,
/// the held call with the refusal inline when it is not.
async fn submit(
    state: &AdminState,
    headers: &HeaderMap,
    id: &str,
    form: &DecisionForm,
    input: DecisionInput,
) -> Response {
    let (session, decider) = match check_post(state, headers, &form.csrf) {
        Ok(s) => s,
        Err(refused) => return refused.into_response(),
    };
    match decide_as(state, id, &decider, input).await {
        Ok(_) => Redirect::to("/").into_response(),
        Err(refusal) => {
            held_page(
                state,
                &session,
                &decider,
                id,
                refusal.status,
                Some(refusal.message),
                form.edited.clone(),
            )
            .await
        }
    }
}
