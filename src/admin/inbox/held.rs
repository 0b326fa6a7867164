//! A held call's page and its decision forms. Decisions go through
//! `decision::decide_as`, the API's own path: the same checks, the same
//! policy re-check of an edit, the same audit records.

use askama::Template;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use serde::Deserialize;
use serde_json::Value;

use super::pages::render;
use super::session::Session;
use super::view::{HeldCall, RecentCall, RECENT_CALLS};
use super::{check_post, session_reader, signed_in_label, Who};
use crate::admin::decision::decide_as;
use crate::admin::AdminState;
use crate::approval::bound::visible_to;
use crate::approval::{Decider, DecisionInput, DecisionKind, HumanAnswer};

#[derive(Template)]
#[template(path = "inbox/held.html")]
struct HeldPage {
    who: Who,
    csrf: String,
    call: HeldCall,
    /// The agent's last calls that this process saw, newest first.
    recent: Vec<RecentCall>,
    /// Why the last form was refused, shown beside the forms.
    error: Option<String>,
    /// What the edit box holds: the call's payload, or the rejected edit.
    edit_text: String,
    /// What the answer box of a take-over holds: empty, or the refused
    /// answer.
    answer_text: String,
    answer_status: String,
}

#[derive(Template)]
#[template(path = "inbox/missing.html")]
struct MissingPage {
    who: Who,
    csrf: String,
    id: String,
}

/// What the last form leaves on the page: nothing (the default), or, when
/// it was refused, the status, why, and what was typed, so that nothing
/// has to be typed again.
#[derive(Default)]
struct LastForm {
    status: StatusCode,
    error: Option<String>,
    edit_text: Option<String>,
    answer_text: Option<String>,
    answer_status: Option<String>,
}

impl LastForm {
    fn refused(status: StatusCode, why: String, form: &DecisionForm) -> LastForm {
        LastForm {
            status,
            error: Some(why),
            edit_text: form.edited.clone(),
            answer_text: form.answer.clone(),
            answer_status: form.status.clone(),
        }
    }
}

pub async fn held(
    State(state): State<AdminState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let Some((session, decider)) = session_reader(&state, &headers) else {
        return Redirect::to("/").into_response();
    };
    held_page(&state, &session, &decider, &id, LastForm::default()).await
}

/// The held call's page, with the refusal of the last form if any.
async fn held_page(
    state: &AdminState,
    session: &Session,
    decider: &Decider,
    id: &str,
    last: LastForm,
) -> Response {
    let who = signed_in_label(state, &session.who);
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
    let recent = state
        .audit
        .live()
        .recent(RECENT_CALLS, |e| RecentCall::is_call_of(&hold.agent, e))
        .iter()
        .map(|e| RecentCall::of(e))
        .collect();
    let page = HeldPage {
        recent,
        who,
        csrf: session.csrf.clone(),
        edit_text: last.edit_text.unwrap_or_else(|| call.editable.clone()),
        answer_text: last.answer_text.unwrap_or_default(),
        answer_status: last.answer_status.unwrap_or_else(|| "200".into()),
        call,
        error: last.error,
    };
    render(last.status, &page)
}

#[derive(Deserialize)]
pub struct DecisionForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    reason: String,
    /// Edit and approve: the replacement body or arguments, as JSON text.
    edited: Option<String>,
    /// Respond in the tool's place: the body (REST) or result (MCP), as
    /// JSON text.
    answer: Option<String>,
    /// Respond to a REST call: the answer's status.
    status: Option<String>,
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
    submit(&state, &headers, &id, &form, Ok(input)).await
}

pub async fn deny(
    State(state): State<AdminState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(form): Form<DecisionForm>,
) -> Response {
    let input = match form.reason() {
        Some(reason) => Ok(DecisionInput {
            kind: DecisionKind::Deny,
            reason: Some(reason),
            edit: None,
        }),
        None => Err("a denial needs a reason: the agent is told it".to_string()),
    };
    submit(&state, &headers, &id, &form, input).await
}

pub async fn edit(
    State(state): State<AdminState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(form): Form<DecisionForm>,
) -> Response {
    let text = form.edited.as_deref().unwrap_or_default();
    let input = serde_json::from_str::<Value>(text)
        .map(|edited| DecisionInput {
            kind: DecisionKind::Approve,
            reason: form.reason(),
            edit: Some(edited),
        })
        .map_err(|e| format!("the edit is not valid JSON: {e}"));
    submit(&state, &headers, &id, &form, input).await
}

/// Respond in the tool's place: a REST call gets the status and JSON body
/// typed (an empty body is none), an MCP call the JSON result.
pub async fn respond(
    State(state): State<AdminState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(form): Form<DecisionForm>,
) -> Response {
    let input = answer_of(&form).map(|answer| DecisionInput {
        kind: DecisionKind::Respond(answer),
        reason: form.reason(),
        edit: None,
    });
    submit(&state, &headers, &id, &form, input).await
}

/// The answer a take-over form carries: a `status` field makes it a REST
/// answer, its absence an MCP result.
fn answer_of(form: &DecisionForm) -> Result<HumanAnswer, String> {
    let text = form.answer.as_deref().unwrap_or_default().trim();
    let Some(status) = form.status.as_deref() else {
        return serde_json::from_str(text)
            .map(|result| HumanAnswer::Mcp { result })
            .map_err(|e| format!("the result is not valid JSON: {e}"));
    };
    let status = status.trim().parse::<u16>().map_err(|_| {
        format!(
            "the status must be a number from 200 to 599, not `{}`",
            status.chars().take(20).collect::<String>()
        )
    })?;
    let body = match text {
        "" => None,
        t => Some(serde_json::from_str(t).map_err(|e| format!("the body is not valid JSON: {e}"))?),
    };
    Ok(HumanAnswer::Http { status, body })
}

/// Decides through the API's path: back to the list when it is taken, the
/// held call with the refusal inline when it is not (or when the form
/// itself was refused, `input` being why).
async fn submit(
    state: &AdminState,
    headers: &HeaderMap,
    id: &str,
    form: &DecisionForm,
    input: Result<DecisionInput, String>,
) -> Response {
    let (session, decider) = match check_post(state, headers, &form.csrf) {
        Ok(s) => s,
        Err(refused) => return refused.into_response(),
    };
    let last = match input {
        Err(why) => LastForm::refused(StatusCode::BAD_REQUEST, why, form),
        Ok(input) => match decide_as(state, id, &decider, input).await {
            Ok(_) => return Redirect::to("/").into_response(),
            Err(r) => LastForm::refused(r.status, r.message, form),
        },
    };
    held_page(state, &session, &decider, id, last).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn form(status: Option<&str>, answer: &str) -> DecisionForm {
        DecisionForm {
            csrf: String::new(),
            reason: String::new(),
            edited: None,
            answer: Some(answer.into()),
            status: status.map(str::to_string),
        }
    }

    #[test]
    fn a_take_over_form_is_a_rest_answer_with_a_status_and_an_mcp_result_without() {
        assert_eq!(
            answer_of(&form(Some(" 201 "), r#"{"id": 1}"#)),
            Ok(HumanAnswer::Http {
                status: 201,
                body: Some(json!({"id": 1}))
            })
        );
        assert_eq!(
            answer_of(&form(Some("204"), "  ")),
            Ok(HumanAnswer::Http {
                status: 204,
                body: None
            })
        );
        assert_eq!(
            answer_of(&form(None, r#"{"content": []}"#)),
            Ok(HumanAnswer::Mcp {
                result: json!({"content": []})
            })
        );
        assert!(answer_of(&form(None, "")).is_err());
        assert!(answer_of(&form(Some("ok"), "{}"))
            .unwrap_err()
            .contains("`ok`"));
        assert!(answer_of(&form(Some("200"), "{"))
            .unwrap_err()
            .contains("not valid JSON"));
    }
}
