//! Operators' endpoints (see `oversight`):
//!
//! - `POST /v1/agents/{id}/pause`, `POST /v1/routes/{name}/pause`,
//!   `POST /v1/routes/{name}/tools/{tool}/pause`, `POST /v1/pause` with
//!   `{"mode": "hold" | "deny", "reason": "..."}`; the same paths ending
//!   in `resume` lift the pause (`{"reason": "..."}` optional);
//! - `GET /v1/agents`: each agent with its pause, its calls of the last
//!   hour by verdict and its pending holds.
//!
//! The admin token and approvers with `operator: true` may use them;
//! anyone else gets 403. A pause answers 200 only once it is stored and in
//! force for every call judged afterwards.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::approvals::{bearer_caller, Caller};
use super::refusal::Refusal;
use super::AdminState;
use crate::approval::Decider;
use crate::clock::{ms_to_rfc3339, now_ms};
use crate::config::{Protocol, OPERATORS_GROUP};
use crate::oversight::{Paused, VERDICTS};
use crate::store::{HoldPageQuery, HoldState, PauseMode, PauseRecord, PauseScope};

/// The longest reason kept with a pause.
const MAX_REASON: usize = 1024;

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct PauseBody {
    mode: Option<String>,
    reason: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ResumeBody {
    reason: Option<String>,
}

/// The operator calling: `admin` or an approver with `operator: true`.
fn require_operator(state: &AdminState, headers: &HeaderMap) -> Result<String, Refusal> {
    match bearer_caller(state, headers)? {
        Some(Caller::Admin) => Ok("admin".into()),
        Some(Caller::Approver(d)) if d.groups.iter().any(|g| g == OPERATORS_GROUP) => Ok(d.id),
        Some(Caller::Approver(d)) => Err(Refusal::new(
            StatusCode::FORBIDDEN,
            "not_operator",
            format!("approver `{}` is not an operator (`operator: true` in its config entry), so it cannot pause or resume", d.id),
        )),
        Some(Caller::Agent(_)) => Err(Refusal::new(
            StatusCode::FORBIDDEN,
            "agent_cannot_pause",
            "an agent's key can never pause or resume",
        )),
        None => Err(Refusal::unauthenticated()),
    }
}

/// Refuses a scope naming an agent or route the configuration lacks, or a
/// tool of a route that is not `protocol: mcp`.
fn check_scope(state: &AdminState, scope: &PauseScope) -> Result<(), Refusal> {
    let snap = state.live.load();
    let cfg = &snap.config;
    let route_of = |name: &str| cfg.routes.iter().find(|r| r.name == name);
    let missing = |what: String| Refusal::new(StatusCode::NOT_FOUND, "not_found", what);
    match scope {
        PauseScope::All => Ok(()),
        PauseScope::Agent { agent } if cfg.agents.iter().any(|a| &a.id == agent) => Ok(()),
        PauseScope::Agent { agent } => Err(missing(format!("no agent `{agent}` is configured"))),
        PauseScope::Route { route } if route_of(route).is_some() => Ok(()),
        PauseScope::Route { route } | PauseScope::Tool { route, .. }
            if route_of(route).is_none() =>
        {
            Err(missing(format!("no route `{route}` is configured")))
        }
        PauseScope::Tool { route, .. }
            if route_of(route).is_some_and(|r| r.protocol != Protocol::Mcp) =>
        {
            Err(Refusal::bad_request(
                "not_mcp",
                format!("route `{route}` is not `protocol: mcp`, so it has no tools to pause; pause the route"),
            ))
        }
        _ => Ok(()),
    }
}

fn pause_json(p: &PauseRecord) -> Value {
    let mut v = serde_json::to_value(p).unwrap_or(Value::Null);
    if let Some(o) = v.as_object_mut() {
        o.remove("since_ms");
        o.insert("since".into(), ms_to_rfc3339(p.since_ms).into());
    }
    v
}

/// `body` as JSON of type `T`; an empty body is `T::default()` when
/// `empty` allows it.
fn read_json<T: serde::de::DeserializeOwned + Default>(
    body: &[u8],
    empty: bool,
) -> Result<T, Refusal> {
    if empty && body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(body).map_err(|e| {
        Refusal::bad_request(
            "bad_body",
            format!("the body is not the JSON this endpoint takes: {e}"),
        )
    })
}

fn parse_pause(body: &[u8]) -> Result<(PauseMode, String), Refusal> {
    let body: PauseBody = read_json(body, false)?;
    Ok((
        pause_mode(body.mode.as_deref())?,
        pause_reason(body.reason)?,
    ))
}

/// The mode a pause names: `hold` or `deny`.
pub fn pause_mode(mode: Option<&str>) -> Result<PauseMode, Refusal> {
    match mode {
        Some("hold") => Ok(PauseMode::Hold),
        Some("deny") => Ok(PauseMode::Deny),
        Some(other) => Err(Refusal::bad_request(
            "bad_mode",
            format!(
                "unknown mode `{}`; use `hold` or `deny`",
                other.chars().take(40).collect::<String>()
            ),
        )),
        None => Err(Refusal::bad_request(
            "bad_mode",
            "`mode` is required: `hold` or `deny`",
        )),
    }
}

/// A pause's reason, trimmed: required, and at most [`MAX_REASON`] bytes.
pub fn pause_reason(reason: Option<String>) -> Result<String, Refusal> {
    let reason = reason.unwrap_or_default().trim().to_string();
    if reason.is_empty() || reason.len() > MAX_REASON {
        return Err(Refusal::bad_request(
            "bad_reason",
            format!("a pause needs a `reason` (at most {MAX_REASON} bytes) the agents and approvers will read"),
        ));
    }
    Ok(reason)
}

/// A resume's reason, trimmed and cut to [`MAX_REASON`]; `resumed` when
/// none is given.
pub fn resume_reason(reason: Option<String>) -> String {
    reason
        .map(|r| r.trim().chars().take(MAX_REASON).collect::<String>())
        .filter(|r| !r.is_empty())
        .unwrap_or_else(|| "resumed".into())
}

/// Whether a signed-in decider may pause and resume: the admin, or an
/// approver with `operator: true`, as [`require_operator`] decides for a
/// bearer token.
pub fn is_operator(d: &Decider) -> bool {
    d.any_group || d.groups.iter().any(|g| g == OPERATORS_GROUP)
}

async fn pause(
    state: AdminState,
    headers: HeaderMap,
    scope: PauseScope,
    body: Bytes,
) -> Result<Response, Refusal> {
    let by = require_operator(&state, &headers)?;
    let (mode, reason) = parse_pause(&body)?;
    let done = pause_as(&state, by, scope, mode, reason).await?;
    Ok(Json(json!({"paused": pause_json(&done.pause), "voided": done.voided})).into_response())
}

/// Pauses `scope` for operator `by`, whose right to has been checked, once
/// the configuration has what `scope` names: the path of the API and of
/// the inbox's Agents tab alike.
pub async fn pause_as(
    state: &AdminState,
    by: String,
    scope: PauseScope,
    mode: PauseMode,
    reason: String,
) -> Result<Paused, Refusal> {
    check_scope(state, &scope)?;
    let cfg = state.live.load().config.clone();
    // Spawned: once the pause is stored it must reach the board too, even
    // if the caller hangs up or the store timeout cuts the answer off.
    let overrides = state.overrides.clone();
    tokio::spawn(async move { overrides.pause(&cfg, scope, mode, reason, by).await })
        .await
        .map_err(|e| store_refusal(e.to_string()))?
        .map_err(|e| store_refusal(e.to_string()))
}

async fn resume(
    state: AdminState,
    headers: HeaderMap,
    scope: PauseScope,
    body: Bytes,
) -> Result<Response, Refusal> {
    let by = require_operator(&state, &headers)?;
    let body: ResumeBody = read_json(&body, true)?;
    let lifted = resume_as(&state, by, scope, resume_reason(body.reason)).await?;
    Ok(Json(json!({"resumed": pause_json(&lifted)})).into_response())
}

/// Lifts the pause of `scope` for operator `by`, whose right to has been
/// checked; 404 when `scope` is not paused.
pub async fn resume_as(
    state: &AdminState,
    by: String,
    scope: PauseScope,
    reason: String,
) -> Result<PauseRecord, Refusal> {
    let cfg = state.live.load().config.clone();
    let overrides = state.overrides.clone();
    let what = crate::oversight::describe(&scope);
    let lifted = tokio::spawn(async move { overrides.resume(&cfg, &scope, &by, &reason).await })
        .await
        .map_err(|e| store_refusal(e.to_string()))?
        .map_err(|e| store_refusal(e.to_string()))?;
    lifted.ok_or_else(|| {
        Refusal::new(
            StatusCode::NOT_FOUND,
            "not_paused",
            format!("{what} is not paused"),
        )
    })
}

fn store_refusal(e: String) -> Refusal {
    Refusal::new(StatusCode::SERVICE_UNAVAILABLE, "store_unavailable", e)
}

fn respond(r: Result<Response, Refusal>) -> Response {
    r.unwrap_or_else(IntoResponse::into_response)
}

pub async fn pause_agent(
    State(s): State<AdminState>,
    Path(agent): Path<String>,
    h: HeaderMap,
    b: Bytes,
) -> Response {
    respond(pause(s, h, PauseScope::Agent { agent }, b).await)
}

pub async fn resume_agent(
    State(s): State<AdminState>,
    Path(agent): Path<String>,
    h: HeaderMap,
    b: Bytes,
) -> Response {
    respond(resume(s, h, PauseScope::Agent { agent }, b).await)
}

pub async fn pause_route(
    State(s): State<AdminState>,
    Path(route): Path<String>,
    h: HeaderMap,
    b: Bytes,
) -> Response {
    respond(pause(s, h, PauseScope::Route { route }, b).await)
}

pub async fn resume_route(
    State(s): State<AdminState>,
    Path(route): Path<String>,
    h: HeaderMap,
    b: Bytes,
) -> Response {
    respond(resume(s, h, PauseScope::Route { route }, b).await)
}

pub async fn pause_tool(
    State(s): State<AdminState>,
    Path((route, tool)): Path<(String, String)>,
    h: HeaderMap,
    b: Bytes,
) -> Response {
    respond(pause(s, h, PauseScope::Tool { route, tool }, b).await)
}

pub async fn resume_tool(
    State(s): State<AdminState>,
    Path((route, tool)): Path<(String, String)>,
    h: HeaderMap,
    b: Bytes,
) -> Response {
    respond(resume(s, h, PauseScope::Tool { route, tool }, b).await)
}

pub async fn pause_all(State(s): State<AdminState>, h: HeaderMap, b: Bytes) -> Response {
    respond(pause(s, h, PauseScope::All, b).await)
}

pub async fn resume_all(State(s): State<AdminState>, h: HeaderMap, b: Bytes) -> Response {
    respond(resume(s, h, PauseScope::All, b).await)
}

/// `GET /v1/agents`.
pub async fn agents(State(state): State<AdminState>, headers: HeaderMap) -> Response {
    respond(list_agents(&state, &headers).await)
}

async fn list_agents(state: &AdminState, headers: &HeaderMap) -> Result<Response, Refusal> {
    require_operator(state, headers)?;
    let (agents, pauses) = agents_overview(state).await?;
    let agents: Vec<Value> = agents
        .iter()
        .map(|a| {
            let calls: serde_json::Map<String, Value> = VERDICTS
                .iter()
                .zip(a.calls_last_hour)
                .map(|(v, n)| ((*v).to_string(), n.into()))
                .collect();
            json!({
                "id": a.id,
                "paused": a.paused.as_ref().map(pause_json),
                "calls_last_hour": calls,
                "pending_holds": a.pending_holds,
            })
        })
        .collect();
    let all: Vec<Value> = pauses.iter().map(pause_json).collect();
    Ok(Json(json!({"agents": agents, "pauses": all})).into_response())
}

/// One configured agent as operators see it.
pub struct AgentOverview {
    pub id: String,
    /// The pause that covers every call of the agent: its own or
    /// everyone's (route and tool pauses are only in the list of pauses).
    pub paused: Option<PauseRecord>,
    /// Per verdict of [`VERDICTS`].
    pub calls_last_hour: [u64; VERDICTS.len()],
    pub pending_holds: u64,
}

/// Every configured agent, and every pause in force: what `GET /v1/agents`
/// and the inbox's Agents tab show.
pub async fn agents_overview(
    state: &AdminState,
) -> Result<(Vec<AgentOverview>, Vec<PauseRecord>), Refusal> {
    let pending = pending_by_agent(state).await?;
    let snap = state.live.load();
    let pauses = state.overrides.board.all();
    let now = now_ms();
    let agents = snap
        .config
        .agents
        .iter()
        .map(|a| AgentOverview {
            id: a.id.clone(),
            paused: pauses
                .iter()
                .filter(|p| {
                    matches!(&p.scope, PauseScope::All)
                        || matches!(&p.scope, PauseScope::Agent { agent } if agent == &a.id)
                })
                .max_by_key(|p| p.mode == PauseMode::Deny)
                .cloned(),
            calls_last_hour: state.tally.last_hour(&a.id, now),
            pending_holds: pending.get(&a.id).copied().unwrap_or(0),
        })
        .collect();
    Ok((agents, pauses.to_vec()))
}

/// Pending holds per agent, read page by page.
async fn pending_by_agent(state: &AdminState) -> Result<HashMap<String, u64>, Refusal> {
    let store = state.approvals.store();
    let mut counts = HashMap::new();
    let mut after = None;
    // Bounded: each page moves the cursor on.
    for _ in 0..10_000 {
        let page = store
            .list(HoldPageQuery {
                state: Some(HoldState::Pending),
                after: after.take(),
                limit: super::approvals::MAX_LIMIT,
                groups: None,
            })
            .await
            .map_err(|e| store_refusal(e.to_string()))?;
        for h in &page.holds {
            *counts.entry(h.agent.clone()).or_insert(0) += 1;
        }
        match page.next {
            Some(n) => after = Some(n),
            None => break,
        }
    }
    Ok(counts)
}
