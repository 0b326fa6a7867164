//! The approver inbox: HTML pages on the admin listener at `/`, rendered on
//! the server (askama escapes every value), with one small vendored script
//! for live updates.
//!
//! - `GET /`: the sign-in form, or the pending list once signed in;
//! - `POST /signin`, `POST /signout`: a token typed once becomes a session
//!   cookie (see `session`); sign-out ends the session on the server;
//! - `GET /approvals/{id}`: one held call; `POST /approvals/{id}/approve`,
//!   `/deny`, `/edit` and `/respond` (in the tool's place) decide it
//!   through the API's own decision path (see `held`);
//! - `GET /history?cursor=&limit=`: decided approvals, newest first, paged
//!   like `GET /v1/approvals` (see `history`);
//! - `GET /agents`: each agent's calls of the last hour by verdict and its
//!   pause; `POST /agents/{id}/pause` and `/resume` for operators, through
//!   the API's own pause path (see `agents`);
//! - `GET /reviews`: for reviewers, the sampled calls they claimed and the
//!   open ones; `POST /reviews/next` claims the oldest, `GET /reviews/{id}`
//!   shows one and `POST /reviews/{id}/verdict` judges it, through the
//!   API's own review path (see `reviews`);
//! - `GET /pending`: the pending list alone, which the script swaps in when
//!   `GET /v1/events` says an approval changed;
//! - `GET /assets/inbox.js`: the script.
//!
//! Every `POST` must come from the inbox's own origin (`Origin` equal to
//! the listener's, or to `admin.public_url`'s) and carry the session's
//! CSRF token; anything else is a 403 that changes nothing.

mod agents;
mod held;
mod history;
mod pages;
mod reviews;
pub mod session;
mod view;

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use serde::Deserialize;

use super::reviews::reviewer_name;
use super::AdminState;
use crate::approval::Decider;
use crate::config::Config;
use session::{Session, SignedIn};

/// The vendored script, compiled in so that nothing is fetched at run time.
const SCRIPT: &str = include_str!("../../../assets/inbox.js");

pub fn routes() -> Router<AdminState> {
    Router::new()
        .route("/", get(pages::home))
        .route("/pending", get(pages::pending_fragment))
        .route("/signin", post(sign_in))
        .route("/signout", post(sign_out))
        .route("/approvals/{id}", get(held::held))
        .route("/approvals/{id}/approve", post(held::approve))
        .route("/approvals/{id}/deny", post(held::deny))
        .route("/approvals/{id}/edit", post(held::edit))
        .route("/approvals/{id}/respond", post(held::respond))
        .route("/history", get(history::page))
        .route("/agents", get(agents::page))
        .route("/agents/{id}/pause", post(agents::pause))
        .route("/agents/{id}/resume", post(agents::resume))
        .route("/reviews", get(reviews::page))
        .route("/reviews/next", post(reviews::claim_next))
        .route("/reviews/{id}", get(reviews::item))
        .route("/reviews/{id}/verdict", post(reviews::verdict))
        .route("/assets/inbox.js", get(script))
}

/// The session of a request and the decider it acts as, for the
/// `GET /v1/events` stream and the pages.
pub fn session_reader(state: &AdminState, headers: &HeaderMap) -> Option<(Session, Decider)> {
    let session = state.sessions.find(headers)?;
    let decider = session.decider(&state.live.load().config)?;
    Some((session, decider))
}

/// Whether a state-changing request comes from the inbox's own origin.
/// Browsers send `Origin` with every `POST`; a request without one is
/// refused too.
fn same_origin(cfg: &Config, headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let own = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|host| origin == format!("http://{host}"));
    own || origin == origin_of(&cfg.admin.public_url)
}

/// `scheme://host[:port]` of a URL.
fn origin_of(url: &str) -> &str {
    let after_scheme = url.find("://").map_or(0, |i| i + 3);
    match url[after_scheme..].find('/') {
        Some(i) => &url[..after_scheme + i],
        None => url,
    }
}

/// Whether the session cookie must be `Secure`: the inbox is reached over
/// TLS, through a proxy that `admin.public_url` names.
fn over_tls(cfg: &Config) -> bool {
    cfg.admin.public_url.starts_with("https://")
}

/// The answer to a forged or stale form: nothing was changed.
fn forbidden(why: &str) -> Response {
    (
        StatusCode::FORBIDDEN,
        Html(format!(
            "<!doctype html><title>Refused</title><p>{why}; nothing was changed. <a href=\"/\">Back to the inbox</a></p>"
        )),
    )
        .into_response()
}

/// Why a state-changing request was refused; nothing was changed.
pub enum PostRefused {
    /// Another origin, or a missing or stale CSRF token.
    Forged(&'static str),
    /// No live session: back to the sign-in page.
    SignedOut,
}

impl IntoResponse for PostRefused {
    fn into_response(self) -> Response {
        match self {
            PostRefused::Forged(why) => forbidden(why),
            PostRefused::SignedOut => Redirect::to("/").into_response(),
        }
    }
}

/// Checks a state-changing request: same origin, a live session and its
/// CSRF token.
fn check_post(
    state: &AdminState,
    headers: &HeaderMap,
    csrf: &str,
) -> Result<(Session, Decider), PostRefused> {
    if !same_origin(&state.live.load().config, headers) {
        return Err(PostRefused::Forged(
            "this form was not sent from the inbox's own page",
        ));
    }
    let (session, decider) = session_reader(state, headers).ok_or(PostRefused::SignedOut)?;
    if !session.csrf_matches(csrf) {
        return Err(PostRefused::Forged(
            "this form's security token is missing or stale",
        ));
    }
    Ok((session, decider))
}

#[derive(Deserialize)]
struct SignInForm {
    token: String,
}

async fn sign_in(
    State(state): State<AdminState>,
    headers: HeaderMap,
    Form(form): Form<SignInForm>,
) -> Response {
    let cfg = state.live.load().config.clone();
    if !same_origin(&cfg, &headers) {
        return forbidden("this form was not sent from the inbox's own page");
    }
    let Some(who) = session::token_owner(&cfg, &form.token) else {
        return pages::sign_in_page(
            StatusCode::UNAUTHORIZED,
            Some("that token is not an approver's or the admin's"),
        );
    };
    let ttl = cfg.admin.session_ttl;
    let id = state.sessions.start(who, ttl);
    (
        [(
            header::SET_COOKIE,
            session::set_cookie(&id, ttl, over_tls(&cfg)),
        )],
        Redirect::to("/"),
    )
        .into_response()
}

#[derive(Deserialize)]
struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

async fn sign_out(
    State(state): State<AdminState>,
    headers: HeaderMap,
    Form(form): Form<CsrfForm>,
) -> Response {
    if let Err(refused) = check_post(&state, &headers, &form.csrf) {
        return refused.into_response();
    }
    state.sessions.end(&headers);
    let secure = over_tls(&state.live.load().config);
    (
        [(header::SET_COOKIE, session::clear_cookie(secure))],
        Redirect::to("/"),
    )
        .into_response()
}

async fn script() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        SCRIPT,
    )
        .into_response()
}

/// Who a page is for: their name as the templates show it, and whether
/// the Reviews tab is theirs.
pub struct Who {
    name: String,
    reviewer: bool,
}

impl std::fmt::Display for Who {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.name)
    }
}

fn signed_in_label(state: &AdminState, who: &SignedIn) -> Who {
    let name = match who {
        SignedIn::Admin => "admin".into(),
        SignedIn::Approver(id) => id.clone(),
    };
    let reviewer = session::Session::decider_of(who, &state.live.load().config)
        .is_some_and(|d| reviewer_name(state, &d).is_ok());
    Who { name, reviewer }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_origin_is_the_scheme_and_authority_of_a_url() {
        assert_eq!(
            origin_of("https://airlock.example.com/inbox"),
            "https://airlock.example.com"
        );
        assert_eq!(origin_of("http://127.0.0.1:9090"), "http://127.0.0.1:9090");
    }
}
