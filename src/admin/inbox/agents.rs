//! The Agents tab: each configured agent with its calls of the last hour
//! by verdict and whether it is paused, and for operators the forms that
//! pause and resume it. Pauses go through `pauses::pause_as` and
//! `pauses::resume_as`, the API's own path: the same checks, the same
//! board update, the same `override` audit record and webhooks.

use askama::Template;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use serde::Deserialize;

use super::pages::render;
use super::session::Session;
use super::{check_post, session_reader, signed_in_label, Who};
use crate::admin::pauses::{
    agents_overview, is_operator, pause_as, pause_mode, pause_reason, resume_as, resume_reason,
    AgentOverview,
};
use crate::admin::refusal::Refusal;
use crate::admin::AdminState;
use crate::approval::Decider;
use crate::clock::ms_to_rfc3339;
use crate::store::{PauseMode, PauseRecord, PauseScope};

/// One agent's row.
pub struct AgentRow {
    pub id: String,
    pub allow: u64,
    pub deny: u64,
    pub hold: u64,
    pub error: u64,
    pub pending: u64,
    pub paused: Option<PauseShown>,
}

pub struct PauseShown {
    pub mode: &'static str,
    pub reason: String,
    pub by: String,
    pub since: String,
    /// The agent's own pause, which its row can lift; a pause of every
    /// agent is lifted with `POST /v1/resume` only.
    pub own: bool,
}

impl AgentRow {
    fn of(a: AgentOverview) -> AgentRow {
        let [allow, deny, hold, error] = a.calls_last_hour;
        AgentRow {
            paused: a.paused.as_ref().map(PauseShown::of),
            id: a.id,
            allow,
            deny,
            hold,
            error,
            pending: a.pending_holds,
        }
    }
}

impl AgentRow {
    /// Whether the agent has a pause of its own, which its row lifts.
    pub fn own_pause(&self) -> bool {
        self.paused.as_ref().is_some_and(|p| p.own)
    }
}

impl PauseShown {
    fn of(p: &PauseRecord) -> PauseShown {
        PauseShown {
            mode: match p.mode {
                PauseMode::Hold => "hold",
                PauseMode::Deny => "deny",
            },
            reason: p.reason.clone(),
            by: p.by.clone(),
            since: ms_to_rfc3339(p.since_ms),
            own: matches!(p.scope, PauseScope::Agent { .. }),
        }
    }
}

#[derive(Template)]
#[template(path = "inbox/agents.html")]
struct AgentsPage {
    who: Who,
    csrf: String,
    rows: Vec<AgentRow>,
    error: Option<String>,
}

#[derive(Template)]
#[template(path = "inbox/not_operator.html")]
struct NotOperatorPage {
    who: Who,
    csrf: String,
}

pub async fn page(State(state): State<AdminState>, headers: HeaderMap) -> Response {
    let Some((session, decider)) = session_reader(&state, &headers) else {
        return Redirect::to("/").into_response();
    };
    agents_page(&state, &session, &decider, StatusCode::OK, None).await
}

/// The tab, with the refusal of the last form if any. Only operators see
/// it, as only they may read `GET /v1/agents`.
async fn agents_page(
    state: &AdminState,
    session: &Session,
    decider: &Decider,
    status: StatusCode,
    error: Option<String>,
) -> Response {
    let who = signed_in_label(state, &session.who);
    let csrf = session.csrf.clone();
    if !is_operator(decider) {
        return render(StatusCode::FORBIDDEN, &NotOperatorPage { who, csrf });
    }
    let (rows, error, status) = match agents_overview(state).await {
        Ok((agents, _)) => (
            agents.into_iter().map(AgentRow::of).collect(),
            error,
            status,
        ),
        Err(r) => (Vec::new(), Some(r.message), r.status),
    };
    render(
        status,
        &AgentsPage {
            who,
            csrf,
            rows,
            error,
        },
    )
}

#[derive(Deserialize)]
pub struct PauseForm {
    #[serde(default)]
    csrf: String,
    mode: Option<String>,
    reason: Option<String>,
}

pub async fn pause(
    State(state): State<AdminState>,
    headers: HeaderMap,
    Path(agent): Path<String>,
    Form(form): Form<PauseForm>,
) -> Response {
    let (session, decider) = match check_post(&state, &headers, &form.csrf) {
        Ok(s) => s,
        Err(refused) => return refused.into_response(),
    };
    let taken = async {
        let by = operator(&decider)?;
        let mode = pause_mode(form.mode.as_deref())?;
        let reason = pause_reason(form.reason)?;
        pause_as(&state, by, PauseScope::Agent { agent }, mode, reason).await
    };
    match taken.await {
        Ok(_) => Redirect::to("/agents").into_response(),
        Err(r) => agents_page(&state, &session, &decider, r.status, Some(r.message)).await,
    }
}

pub async fn resume(
    State(state): State<AdminState>,
    headers: HeaderMap,
    Path(agent): Path<String>,
    Form(form): Form<PauseForm>,
) -> Response {
    let (session, decider) = match check_post(&state, &headers, &form.csrf) {
        Ok(s) => s,
        Err(refused) => return refused.into_response(),
    };
    let taken = async {
        let by = operator(&decider)?;
        let scope = PauseScope::Agent { agent };
        resume_as(&state, by, scope, resume_reason(form.reason)).await
    };
    match taken.await {
        Ok(_) => Redirect::to("/agents").into_response(),
        Err(r) => agents_page(&state, &session, &decider, r.status, Some(r.message)).await,
    }
}

/// The operator's id for the pause record, or the API's refusal.
fn operator(decider: &Decider) -> Result<String, Refusal> {
    if is_operator(decider) {
        return Ok(decider.id.clone());
    }
    Err(Refusal::new(
        StatusCode::FORBIDDEN,
        "not_operator",
        format!(
            "approver `{}` is not an operator (`operator: true` in its config entry), so it cannot pause or resume",
            decider.id
        ),
    ))
}
