//! The data plane: agents' calls in, policy decision, upstream out.
//!
//! # Request lifecycle
//!
//! Each request passes these phases in order; any phase may end it with a
//! [`ProxyError`], which becomes a JSON error for the agent and an audit
//! record.
//!
//! 1. **snapshot**: load the current [`GatewaySnapshot`] once; the whole
//!    request is judged by it, whatever reloads happen meanwhile.
//! 2. **screen**: refuse `CONNECT` and absolute-form targets (never an open
//!    proxy).
//! 3. **authenticate**: `Authorization: Bearer <key>` names the agent (401).
//! 4. **route**: refuse method and path overrides (400), normalize the path
//!    (400 on ambiguity), pick the longest matching prefix (404) and apply
//!    the route's reading of paths and methods (400, 403, 405; see
//!    docs/security.md).
//! 5. **read body**: buffer up to `limits.max_body` (413) within
//!    `timeouts.body_read` (408); read it by its declared type only (JSON
//!    strictly, forms as records of strings; 400), refuse what cannot be
//!    read one way only (415, see `body`).
//! 6. **decide**: map the call to Cedar and get a [`Verdict`].
//! 7. **act**: allow forwards the exact bytes received; deny answers 403 with
//!    the reasons; hold stores the call for a human and waits (see `hold`):
//!    the upstream's answer once approved, 403 when denied or expired, 202
//!    with `Retry-After` while still pending.
//! 8. **forward**: send to the upstream with the route's injected headers,
//!    without the agent's credentials; stream the response back.
//! 9. **audit**: one record per request, built from what the phases noted
//!    in the request's [`RequestTrail`] and the outcome, and written off the
//!    request path.

mod body;
pub mod call;
mod connection;
pub mod error;
mod event_body;
mod forward;
pub mod hold;
mod mcp;
mod paused;
pub mod recheck;
pub mod screen;
mod server;
mod trail;
mod upstream_body;

use std::borrow::Cow;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Method, Request, Response, Uri, Version};
use http_body_util::{BodyExt, Either, Full, Limited};
use hyper::body::Incoming;

use crate::audit::AuditSink;
use crate::config::AgentConfig;
use crate::policy::{Gate, Verdict};
use crate::snapshot::{GatewaySnapshot, Route};
use crate::telemetry::{Metrics, VerdictLabels};
pub use connection::AgentConnection;
use error::ProxyError;
pub use forward::forward;
use forward::strip_for_upstream;
pub use screen::{route_path, screen_params, Routed};
use screen::{screen_method, screen_overrides};
use trail::RequestTrail;
use upstream_body::UpstreamBody;

pub use server::{serve, tls_acceptor as server_tls, ServeOptions};

/// The body of every response the proxy returns: a stream (the upstream's,
/// or Airlock's own events for a held MCP call), or a body Airlock wrote
/// whole.
pub type ProxyBody = Either<Either<UpstreamBody, event_body::EventBody>, Full<Bytes>>;

/// What every request handler shares.
pub struct ProxyState {
    /// The live snapshot; `reload` swaps it, requests only load it.
    pub live: Arc<ArcSwap<GatewaySnapshot>>,
    pub audit: AuditSink,
    pub metrics: Arc<Metrics>,
    pub approvals: Arc<crate::approval::Approvals>,
    /// Operators' pauses, checked once the agent and route are known and
    /// again after the verdict (`paused`).
    pub pauses: Arc<crate::oversight::PauseBoard>,
    /// Each agent's calls of the last hour, for `GET /v1/agents`.
    pub tally: Arc<crate::oversight::CallTally>,
    /// The MCP sessions whose client can be sent an approval's page.
    pub eliciting: Arc<mcp::ElicitingSessions>,
    /// Where sampled calls go once their response ends (`sampling`).
    pub reviews: crate::sampling::ReviewQueue,
    /// Calls per day, policy and route or tool, for `airlock report`.
    pub counters: Arc<crate::feedback::DailyCounters>,
}

/// Airlock's request id, on the upstream request and the agent's response.
const X_REQUEST_ID: http::HeaderName = http::HeaderName::from_static("x-request-id");

/// Handles one agent request; never fails, since every error is an answer.
///
/// `conn` is what the requests of the agent's connection share.
///
/// Not an `async fn`: hyper allocates this future once per connection at
/// its largest size, and an `async fn` keeps a second copy of its
/// arguments (the request is 264 bytes) for the whole call.
#[expect(
    clippy::manual_async_fn,
    reason = "an async fn keeps its arguments twice in its future"
)]
pub fn handle(
    state: Arc<ProxyState>,
    conn: Arc<AgentConnection>,
    req: Request<Incoming>,
) -> impl std::future::Future<Output = Result<Response<ProxyBody>, Infallible>> {
    async move {
        let started = Instant::now();
        let now = std::time::SystemTime::now();
        // On the stack: the trail keeps the one owned copy.
        let mut id_buf = uuid::Uuid::encode_buffer();
        let request_id: &str = new_request_id(now).hyphenated().encode_lower(&mut id_buf);
        let snap = state.live.load_full();
        let mut trail = RequestTrail::new(
            started,
            now,
            request_id,
            method_name(req.method()),
            snap.policy.version().clone(),
        );
        // `process` is boxed and done before a held call waits: rustc keeps
        // room for every value a future has moved on from, so its ~1.8 KB
        // would otherwise stay reserved while a human decides.
        // Whether errors are answered as JSON-RPC: set once the route is
        // known to be an MCP route.
        let mut jsonrpc = false;
        let processed = process(
            &state,
            &snap,
            &conn,
            req,
            request_id,
            &mut trail,
            &mut jsonrpc,
        );
        let result = match Box::pin(processed).await {
            Ok(Reply::Now(resp)) => Ok(resp),
            Ok(Reply::Held { approval }) => {
                Box::pin(hold::await_decision(
                    &state, &snap, &approval, request_id, &mut trail,
                ))
                .await
            }
            Err(e) => Err(e),
        };
        let (response, recorded) = answer(&state, &conn, request_id, &mut trail, result, jsonrpc);
        recorded.await;
        Ok(response)
    }
}

thread_local! {
    // Each worker thread keeps its own: uuid's `now_v7` draws on one context
    // behind a process-wide Mutex, which every request of every worker took.
    // Ids stay unique (random bits below the counter) and ordered by time to
    // the millisecond; within a thread they are strictly increasing.
    static ID_CONTEXT: uuid::ContextV7 = const { uuid::ContextV7::new() };
}

/// A fresh request id, a UUIDv7 of `now` (the instant the audit record
/// names too), taking no lock shared between threads.
fn new_request_id(now: std::time::SystemTime) -> uuid::Uuid {
    let since = now
        .duration_since(std::time::SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    ID_CONTEXT.with(|cx| {
        uuid::Uuid::new_v7(uuid::Timestamp::from_unix(
            cx,
            since.as_secs(),
            since.subsec_nanos(),
        ))
    })
}

/// What `process` leaves to `handle`.
enum Reply {
    Now(Response<ProxyBody>),
    /// Stored for approval: `handle` waits for the decision.
    Held {
        approval: String,
    },
}

/// The answer to send (an error becomes its JSON refusal), with the
/// request counted and its audit record, built here from the trail and the
/// outcome, on the way. Not `async`, so that the trail and result are not
/// kept twice in `handle`'s future.
fn answer<'s>(
    state: &'s ProxyState,
    conn: &AgentConnection,
    request_id: &str,
    trail: &mut RequestTrail,
    result: Result<Response<ProxyBody>, ProxyError>,
    jsonrpc: bool,
) -> (
    Response<ProxyBody>,
    impl std::future::Future<Output = ()> + use<'s>,
) {
    // The record is built once, in place, after the answer is known: moved
    // through a tuple with the response, it would be copied whole.
    let (mut response, refused) = match result {
        Ok(resp) => (resp, None),
        Err(e) => {
            let resp = if jsonrpc {
                e.to_jsonrpc_response(request_id)
            } else {
                e.to_response(request_id)
            };
            (resp.map(Either::Right), Some(e))
        }
    };
    let rec = trail.take_record(response.status().as_u16(), refused.as_ref());
    if let Some(agent) = &rec.agent {
        state
            .tally
            .count(agent, rec.verdict, crate::clock::now_ms());
    }
    conn.count_request(
        &state.metrics,
        VerdictLabels {
            route: rec.route.clone().unwrap_or_else(|| "".into()),
            verdict: rec.verdict,
        },
    );
    let (published, recorded) = state.audit.record_published(rec);
    if let (Either::Left(Either::Left(body)), Some(call)) = (response.body_mut(), published) {
        body.watch(&state.audit, call);
    }
    (response, recorded)
}

async fn process(
    state: &ProxyState,
    snap: &Arc<GatewaySnapshot>,
    conn: &AgentConnection,
    req: Request<Incoming>,
    request_id: &str,
    trail: &mut RequestTrail,
    jsonrpc: &mut bool,
) -> Result<Reply, ProxyError> {
    // No call runs unrecorded (`audit.on_failure: deny`).
    if state.audit.refusing() {
        trail.path = req.uri().path().to_owned();
        return Err(ProxyError::AuditUnavailable);
    }
    // Phase: screen, authenticate, route. The trail names the path as
    // decoded once that worked (`admit` notes it), and as sent when not.
    let (agent, route, rest) = match admit(snap, conn, &req, trail) {
        Ok(admitted) => admitted,
        Err(e) => {
            if trail.path.is_empty() {
                trail.path = req.uri().path().to_owned();
            }
            // Refused before routing (a wrong key): the path still says
            // whether an MCP client is asking.
            *jsonrpc = route_path(snap, req.uri().path())
                .is_ok_and(|r| r.route.config.protocol == crate::config::Protocol::Mcp);
            return Err(e);
        }
    };
    *jsonrpc = route.config.protocol == crate::config::Protocol::Mcp;
    // An MCP route answers a pause per message, in JSON-RPC (`decide`).
    if !*jsonrpc {
        paused::refuse_if_denied(&state.pauses, &agent.id, &route.name)?;
    }

    // Phase: read body.
    let (parts, body) = req.into_parts();
    let body = read_body(&parts.headers, body, snap).await?;

    // MCP routes judge JSON-RPC messages instead (see `proxy::mcp`).
    if route.config.protocol == crate::config::Protocol::Mcp {
        let cx = mcp::McpRequest {
            state,
            snap,
            route,
            rest: &rest,
            agent: &agent.id,
            request_id,
            conn,
        };
        // Boxed, as are the hold's steps below: a future is as large as its
        // largest state, and every request would otherwise carry room for
        // these.
        return Box::pin(mcp::handle(cx, parts, body, trail))
            .await
            .map(Reply::Now);
    }

    // Phase: decide.
    // The policies are picked first, so that only the part of the context
    // they can read is built (every part is still checked).
    let mut call = call::http_request(&agent.id, &route.config.name, &parts);
    trail.action = Some(method_name(&parts.method));
    trail.resource = Some(route.resource.clone());
    let mut plan = conn.plan(snap, &call).map_err(decide_error)?;
    let rules = call::BodyRules {
        names: snap.policy.declared_names(),
        opaque_bodies: route.config.opaque_bodies,
    };
    call.context = call::http_context(&parts, &trail.path, &body, plan.context_needs(), rules)?;
    let decision = decide(state, snap, &call, plan)?;
    trail.verdict = decision.verdict.name();
    trail.decision_us = Some(decision.eval_micros);
    if let Some(shadow) = &decision.shadow {
        trail.shadow = serde_json::to_value(shadow).ok();
    }
    // Moved, not copied: the trail outlives the decision.
    trail.policies = decision.policies;
    trail.eval_errors = decision.errors;

    // Phase: act.
    match decision.verdict {
        Verdict::Allow => {}
        Verdict::Deny { reasons } => {
            trail.reasons = reasons.clone();
            return Err(ProxyError::Denied {
                reasons,
                policies: trail.policies.clone(),
            });
        }
        Verdict::Hold { gates } => {
            trail.reasons = gates.iter().map(Gate::describe).collect();
            // Copied before the first await: hyper hands out slices of its
            // read buffer, and while one is alive hyper allocates a second
            // buffer to watch for the agent hanging up.
            let parts = detached(parts);
            let body = {
                let copy = Bytes::copy_from_slice(&body);
                drop(body);
                copy
            };
            let held = hold::HeldRequest {
                call: &call,
                route: &route.config.name,
                rest: &rest,
                decoded_path: trail.path.clone(),
                parts: &parts,
                body,
            };
            let approval = Box::pin(hold::register(state, snap, held, gates, trail)).await?;
            // The wait is `handle`'s, once this future and all it read from
            // the agent are gone.
            return Ok(Reply::Held { approval });
        }
    }

    // Sampled calls are copied before `forward` takes the headers.
    let capture = sample(state, snap, route, trail, None, &parts, &body);
    // Phase: forward. Boxed: a held MCP call waits inside this future, which
    // would otherwise carry room for the forward's 2.6 KB all that time.
    let mut resp = Box::pin(forward(route, &rest, parts, body, request_id, Some(conn))).await?;
    trail.upstream_status = Some(resp.status().as_u16());
    attach_capture(&mut resp, capture);
    Ok(Reply::Now(resp))
}

/// Hands `capture` the upstream's answer: its head now, its body's chunks
/// as they pass.
fn attach_capture(resp: &mut Response<ProxyBody>, capture: Option<Box<crate::sampling::Capture>>) {
    if let Some(mut capture) = capture {
        capture.response_head(resp.status().as_u16(), resp.headers());
        if let Either::Left(Either::Left(body)) = resp.body_mut() {
            body.capture(capture);
        }
    }
}

/// A copy of the allowed call (of MCP `tool`, if one) when it is sampled
/// (`sampling::choose`); `None`, having allocated nothing, for the others.
fn sample(
    state: &ProxyState,
    snap: &GatewaySnapshot,
    route: &Route,
    trail: &RequestTrail,
    tool: Option<&str>,
    parts: &http::request::Parts,
    body: &[u8],
) -> Option<Box<crate::sampling::Capture>> {
    let cfg = &snap.config.sampling;
    let agent = trail.agent.as_deref()?;
    let picked = crate::sampling::choose(
        cfg,
        snap.policy.sample_rate(&trail.policies),
        agent,
        &route.config.name,
        tool,
        &trail.request_id,
    )?;
    let said = crate::policy::Escalation::from_headers(&parts.headers).unwrap_or_default();
    let facts = crate::sampling::CallFacts {
        request_id: &trail.request_id,
        agent,
        route: &route.config.name,
        tool,
        policies: &trail.policies,
        picked,
        confidence: said.confidence.as_deref(),
        reason: said.reason.as_deref(),
        method: parts.method.as_str(),
        path: &trail.path,
        query: parts.uri.query(),
        headers: &parts.headers,
        body,
        injected: &route.config.headers,
    };
    Some(Box::new(crate::sampling::Capture::new(
        facts,
        cfg,
        &state.reviews,
    )))
}

/// The request's screen, authentication and route: who calls, the route
/// and the encoded rest of the path after its prefix. The agent, the
/// decoded path and the route go into `trail` as soon as they are known.
fn admit<'s>(
    snap: &'s GatewaySnapshot,
    conn: &AgentConnection,
    req: &Request<Incoming>,
    trail: &mut RequestTrail,
) -> Result<(&'s AgentConfig, &'s Route, String), ProxyError> {
    if req.method() == Method::CONNECT {
        return Err(ProxyError::MethodNotAllowed(req.method().to_string()));
    }
    if req.version() < Version::HTTP_2 && req.uri().authority().is_some() {
        return Err(ProxyError::bad_request(
            "absolute_form",
            "absolute-form request targets are refused: Airlock is not an open proxy",
        ));
    }
    let agent = authenticate(snap, conn, req.headers())?;
    trail.agent = Some(agent.id.clone());
    screen_overrides(req.headers())?;
    let routed = match route_path(snap, req.uri().path()) {
        Ok(r) => r,
        Err(e) => {
            if let ProxyError::NoRoute(decoded) = &e {
                trail.path.clone_from(decoded);
            }
            return Err(e);
        }
    };
    let Routed {
        route,
        decoded,
        rest,
        params,
    } = routed;
    trail.path = decoded;
    trail.route = Some(route.name.clone());
    screen_params(route, params)?;
    screen_method(snap, route, req)?;
    Ok((agent, route, rest))
}

/// The method's name, without copying it for the standard methods.
pub(crate) fn method_name(m: &Method) -> Cow<'static, str> {
    let name = match *m {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::TRACE => "TRACE",
        Method::CONNECT => "CONNECT",
        _ => return Cow::Owned(m.as_str().to_owned()),
    };
    Cow::Borrowed(name)
}

/// Decides `call` by `snap` and the `plan` made for it, and counts it: decision time, memo hits and shadow differences. Both the
/// REST and the MCP path decide through here.
fn decide(
    state: &ProxyState,
    snap: &GatewaySnapshot,
    call: &crate::policy::CallRequest,
    plan: crate::policy::DecisionPlan,
) -> Result<crate::policy::Decision, ProxyError> {
    let decision = snap.policy.decide(call, plan).map_err(decide_error)?;
    let decision = paused::apply(&state.pauses, snap, call, decision)?;
    count_verdict(state, call, &decision);
    let metrics = &state.metrics;
    metrics
        .decision_seconds
        .observe_micros(decision.eval_micros);
    if decision.memoized {
        metrics.decisions_memoized.inc();
    }
    if let Some(shadow) = &decision.shadow {
        metrics
            .shadow_differences
            .get_or_create(&crate::telemetry::ShadowLabels {
                verdict: shadow.verdict.to_string(),
            })
            .inc();
    }
    Ok(decision)
}

/// Counts the verdict in the daily counters under its route, or
/// `route/tool` for an MCP tool.
fn count_verdict(
    state: &ProxyState,
    call: &crate::policy::CallRequest,
    decision: &crate::policy::Decision,
) {
    let now = crate::clock::now_ms();
    let verdict = decision.verdict.name();
    match &call.resource {
        crate::policy::Resource::Route(route) => {
            state
                .counters
                .count_call(now, &decision.policies, route, verdict);
        }
        crate::policy::Resource::Tool { route, tool } => {
            let target = format!("{route}/{tool}");
            state
                .counters
                .count_call(now, &decision.policies, &target, verdict);
        }
    }
}

fn decide_error(e: crate::policy::DecideError) -> ProxyError {
    ProxyError::Internal(e.to_string())
}

/// `parts` with its own copies of the URI and header bytes.
fn detached(parts: http::request::Parts) -> http::request::Parts {
    let mut headers = HeaderMap::with_capacity(parts.headers.len());
    for (name, value) in &parts.headers {
        let mut v = HeaderValue::from_bytes(value.as_bytes()).unwrap_or_else(|_| value.clone());
        v.set_sensitive(value.is_sensitive());
        headers.append(name.clone(), v);
    }
    let uri = parts
        .uri
        .path_and_query()
        .and_then(|pq| Uri::try_from(pq.as_str().to_owned()).ok())
        .unwrap_or_else(|| parts.uri.clone());
    let (mut out, ()) = Request::new(()).into_parts();
    out.method = parts.method;
    out.uri = uri;
    out.version = parts.version;
    out.headers = headers;
    out
}

/// `s` split at the first `byte`, which is ASCII, by a plain byte scan:
/// for the short header values of every request, cheaper than
/// `split_once`'s general search.
pub(crate) fn split_once_ascii(s: &str, byte: u8) -> Option<(&str, &str)> {
    let i = s.bytes().position(|b| b == byte)?;
    // INVARIANT: `byte` is ASCII, so `i` and `i + 1` are char boundaries
    // and neither `get` fails.
    Some((s.get(..i)?, s.get(i + 1..)?))
}

fn authenticate<'a>(
    snap: &'a GatewaySnapshot,
    conn: &AgentConnection,
    headers: &HeaderMap,
) -> Result<&'a crate::config::AgentConfig, ProxyError> {
    let value = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .ok_or(ProxyError::Unauthenticated)?;
    let (scheme, key) = split_once_ascii(value, b' ').ok_or(ProxyError::Unauthenticated)?;
    if !scheme.eq_ignore_ascii_case("bearer") || key.trim().is_empty() {
        return Err(ProxyError::Unauthenticated);
    }
    snap.agent_by_key(&conn.key_sha256(key.trim().as_bytes()))
        .ok_or(ProxyError::Unauthenticated)
}

async fn read_body(
    headers: &HeaderMap,
    body: Incoming,
    snap: &GatewaySnapshot,
) -> Result<Bytes, ProxyError> {
    let limit = snap.config.limits.max_body;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(ProxyError::BodyTooLarge { limit });
    }
    let collect = Limited::new(body, limit).collect();
    match tokio::time::timeout(snap.config.timeouts.body_read, collect).await {
        Err(_) => Err(ProxyError::RequestTimeout),
        Ok(Ok(c)) => Ok(c.to_bytes()),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => {
            Err(ProxyError::BodyTooLarge { limit })
        }
        Ok(Err(e)) => Err(ProxyError::bad_request(
            "bad_body",
            format!("the request body could not be read: {e}"),
        )),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A header map of `pairs`, repeats kept, for the proxy's unit tests.
    pub(crate) fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn request_ids_are_unique_across_threads_and_rise_within_one() {
        let now = std::time::SystemTime::now();
        let per_thread: Vec<Vec<uuid::Uuid>> = std::thread::scope(|s| {
            let workers: Vec<_> = (0..4)
                .map(|_| s.spawn(move || (0..2000).map(|_| new_request_id(now)).collect()))
                .collect();
            workers.into_iter().map(|w| w.join().unwrap()).collect()
        });
        let mut all = std::collections::HashSet::new();
        for ids in &per_thread {
            assert!(ids.windows(2).all(|w| w[0] < w[1]), "not rising");
            for id in ids {
                assert_eq!(id.get_version_num(), 7);
                assert!(all.insert(*id), "{id} repeated");
            }
        }
        // The id's time is the record's: the same millisecond.
        let (secs, nanos) = per_thread[0][0].get_timestamp().unwrap().to_unix();
        let since = now
            .duration_since(std::time::SystemTime::UNIX_EPOCH)
            .unwrap();
        assert_eq!(secs, since.as_secs());
        assert_eq!(nanos / 1_000_000, since.subsec_millis());
    }

    #[test]
    fn a_header_value_splits_at_its_first_ascii_separator_only() {
        assert_eq!(
            split_once_ascii("Bearer k ey", b' '),
            Some(("Bearer", "k ey"))
        );
        assert_eq!(
            split_once_ascii("tëxt/jsön;charset=utf-8;q", b';'),
            Some(("tëxt/jsön", "charset=utf-8;q"))
        );
        assert_eq!(split_once_ascii(";", b';'), Some(("", "")));
        assert_eq!(split_once_ascii("application/json", b';'), None);
        assert_eq!(split_once_ascii("", b' '), None);
    }
}
