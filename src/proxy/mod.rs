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
//! 9. **audit**: one record per request, written off the request path.

mod body;
pub mod call;
mod connection;
pub mod error;
mod event_body;
pub mod hold;
mod mcp;
mod mcp_hold;
mod mcp_progress;
pub mod path;
mod paused;
pub mod recheck;
pub mod screen;
mod server;
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
use smallvec::SmallVec;

use crate::audit::{AuditRecord, AuditSink};
use crate::clock::rfc3339;
use crate::config::AgentConfig;
use crate::policy::{Gate, Verdict};
use crate::snapshot::{GatewaySnapshot, Route};
use crate::telemetry::{Metrics, VerdictLabels};
use crate::upstream::paired::{Claim, PairedError, PairedUpstream};
pub use connection::AgentConnection;
use error::ProxyError;
pub use screen::{route_path, screen_params, Routed};
use screen::{screen_method, screen_overrides};
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
        // On the stack: the record keeps the one owned copy.
        let mut id_buf = uuid::Uuid::encode_buffer();
        let request_id: &str = new_request_id(now).hyphenated().encode_lower(&mut id_buf);
        let snap = state.live.load_full();
        let mut rec = AuditRecord {
            time: rfc3339(now),
            request_id: request_id.to_owned(),
            event: "decision",
            method: method_name(req.method()),
            snapshot: Some(snap.policy.version().clone()),
            ..AuditRecord::default()
        };
        // `process` is boxed and done before a held call waits: rustc keeps
        // room for every value a future has moved on from, so its ~1.8 KB
        // would otherwise stay reserved while a human decides.
        let result = match Box::pin(process(&state, &snap, &conn, req, request_id, &mut rec)).await
        {
            Ok(Reply::Now(resp)) => Ok(resp),
            Ok(Reply::Held { approval }) => {
                Box::pin(hold::await_decision(
                    &state, &snap, &approval, request_id, &mut rec,
                ))
                .await
            }
            Err(e) => Err(e),
        };
        let (response, recorded) = answer(&state, &conn, started, request_id, &mut rec, result);
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
/// request counted and its audit record on the way. Not `async`, so that
/// the record and result are not kept twice in `handle`'s future.
fn answer<'s>(
    state: &'s ProxyState,
    conn: &AgentConnection,
    started: Instant,
    request_id: &str,
    rec: &mut AuditRecord,
    result: Result<Response<ProxyBody>, ProxyError>,
) -> (
    Response<ProxyBody>,
    impl std::future::Future<Output = ()> + use<'s>,
) {
    let response = match result {
        Ok(mut resp) => {
            rec.status = resp.status().as_u16();
            if let Either::Left(Either::Left(body)) = resp.body_mut() {
                body.watch(&state.audit, rec);
            }
            resp
        }
        Err(e) => {
            if rec.verdict.is_empty() {
                // An operator's pause is a refusal, not a failure.
                rec.verdict = match e {
                    ProxyError::Paused { .. } => "deny",
                    _ => "error",
                };
            }
            rec.error = Some(e.kind());
            rec.fault = Some(e.fault());
            if rec.reasons.is_empty() {
                rec.reasons = vec![e.to_string()];
            }
            let resp = e.to_response(request_id);
            rec.status = resp.status().as_u16();
            resp.map(Either::Right)
        }
    };
    rec.duration_ms = started.elapsed().as_secs_f64() * 1000.0;
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
    (response, state.audit.record(rec))
}

async fn process(
    state: &ProxyState,
    snap: &Arc<GatewaySnapshot>,
    conn: &AgentConnection,
    req: Request<Incoming>,
    request_id: &str,
    rec: &mut AuditRecord,
) -> Result<Reply, ProxyError> {
    // No call runs unrecorded (`audit.on_failure: deny`).
    if state.audit.refusing() {
        rec.path = req.uri().path().to_owned();
        return Err(ProxyError::AuditUnavailable);
    }
    // Phase: screen, authenticate, route. The record names the path as
    // decoded once that worked (`admit` records it), and as sent when not.
    let (agent, route, rest) = match admit(snap, conn, &req, rec) {
        Ok(admitted) => admitted,
        Err(e) => {
            if rec.path.is_empty() {
                rec.path = req.uri().path().to_owned();
            }
            return Err(e);
        }
    };
    // An MCP route answers a pause per message, in JSON-RPC (`decide`).
    if route.config.protocol != crate::config::Protocol::Mcp {
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
        return Box::pin(mcp::handle(cx, parts, body, rec))
            .await
            .map(Reply::Now);
    }

    // Phase: decide.
    // The policies are picked first, so that only the part of the context
    // they can read is built (every part is still checked).
    let mut call = call::http_request(&agent.id, &route.config.name, &parts);
    rec.action = Some(method_name(&parts.method));
    rec.resource = Some(route.resource.clone());
    call::screen_form_override(&parts.headers, &body)?;
    let plan = conn.plan(snap, &call).map_err(decide_error)?;
    let rules = call::BodyRules {
        names: snap.policy.declared_names(),
        opaque_bodies: route.config.opaque_bodies,
    };
    call.context = call::http_context(&parts, &rec.path, &body, plan.needs(), rules)?;
    let decision = decide(state, snap, &call, Some(plan))?;
    rec.verdict = decision.verdict.name();
    rec.decision_us = Some(decision.eval_micros);
    if let Some(shadow) = &decision.shadow {
        rec.shadow = serde_json::to_value(shadow).ok();
    }
    // Moved, not copied: the record outlives the decision.
    rec.policies = decision.policies;
    rec.eval_errors = decision.errors;

    // Phase: act.
    match decision.verdict {
        Verdict::Allow => {}
        Verdict::Deny { reasons } => {
            rec.reasons = reasons.clone();
            return Err(ProxyError::Denied {
                reasons,
                policies: rec.policies.clone(),
            });
        }
        Verdict::Hold { gates } => {
            rec.reasons = gates.iter().map(Gate::describe).collect();
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
                decoded_path: rec.path.clone(),
                parts: &parts,
                body,
            };
            let approval = Box::pin(hold::register(state, snap, held, gates, rec)).await?;
            // The wait is `handle`'s, once this future and all it read from
            // the agent are gone.
            return Ok(Reply::Held { approval });
        }
    }

    // Phase: forward. Boxed: a held MCP call waits inside this future, which
    // would otherwise carry room for the forward's 2.6 KB all that time.
    let resp = Box::pin(forward(route, &rest, parts, body, request_id, Some(conn))).await?;
    rec.upstream_status = Some(resp.status().as_u16());
    Ok(Reply::Now(resp))
}

/// The request's screen, authentication and route: who calls, the route
/// and the encoded rest of the path after its prefix. The agent, the
/// decoded path and the route go into `rec` as soon as they are known.
fn admit<'s>(
    snap: &'s GatewaySnapshot,
    conn: &AgentConnection,
    req: &Request<Incoming>,
    rec: &mut AuditRecord,
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
    rec.agent = Some(agent.id.clone());
    screen_overrides(req.headers())?;
    let routed = match route_path(snap, req.uri().path()) {
        Ok(r) => r,
        Err(e) => {
            if let ProxyError::NoRoute(decoded) = &e {
                rec.path.clone_from(decoded);
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
    rec.path = decoded;
    rec.route = Some(route.name.clone());
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

/// Decides `call` by `snap` (by `plan` when its context was built to one)
/// and counts it: decision time, memo hits and shadow differences. Both the
/// REST and the MCP path decide through here.
fn decide(
    state: &ProxyState,
    snap: &GatewaySnapshot,
    call: &crate::policy::CallRequest,
    plan: Option<crate::policy::DecisionPlan>,
) -> Result<crate::policy::Decision, ProxyError> {
    let decision = match plan {
        Some(plan) => snap.policy.decide_planned(call, plan),
        None => snap.policy.decide(call),
    }
    .map_err(decide_error)?;
    let decision = paused::apply(&state.pauses, snap, call, decision)?;
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

fn authenticate<'a>(
    snap: &'a GatewaySnapshot,
    conn: &AgentConnection,
    headers: &HeaderMap,
) -> Result<&'a crate::config::AgentConfig, ProxyError> {
    let value = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .ok_or(ProxyError::Unauthenticated)?;
    let (scheme, key) = value.split_once(' ').ok_or(ProxyError::Unauthenticated)?;
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

/// Sends the call upstream exactly as judged and streams the answer back:
/// over the agent connection's lane when it can carry the call, else
/// through the route's pool. Without `conn` (an approved held call, whose
/// agent may be gone) no `X-Forwarded-*` headers are sent.
pub async fn forward(
    route: &Route,
    rest: &str,
    parts: http::request::Parts,
    body: Bytes,
    request_id: &str,
    conn: Option<&AgentConnection>,
) -> Result<Response<ProxyBody>, ProxyError> {
    let lane = conn.map(|c| &c.lane);
    let up = &route.config.upstream;
    let mut path_and_query = path::upstream_path(up.path(), rest);
    if let Some(q) = parts.uri.query() {
        path_and_query.push('?');
        path_and_query.push_str(q);
    }
    let path_and_query = http::uri::PathAndQuery::from_maybe_shared(Bytes::from(path_and_query))
        .map_err(|e| ProxyError::Internal(format!("cannot build the upstream URI: {e}")))?;
    let version = parts.version;
    let claim = claim_lane(route, version, lane);
    // The lane's HTTP/1.1 connection takes the path alone (origin form);
    // the pool takes the absolute URI, the route's scheme and authority
    // shared rather than parsed again.
    let uri = if claim.is_some() {
        Uri::from(path_and_query)
    } else {
        let mut target = http::uri::Parts::default();
        target.scheme = Some(up.scheme().cloned().unwrap_or(http::uri::Scheme::HTTP));
        target.authority = up.authority().cloned();
        target.path_and_query = Some(path_and_query);
        Uri::from_parts(target)
            .map_err(|e| ProxyError::Internal(format!("cannot build the upstream URI: {e}")))?
    };

    let body_len = body.len();
    let mut out = Request::new(Full::new(body));
    *out.method_mut() = parts.method;
    *out.uri_mut() = uri;
    // The agent's own headers, cleaned in place rather than copied.
    *out.headers_mut() = parts.headers;
    let headers = out.headers_mut();
    strip(headers, is_agent_only_but_length_and_host);
    // The agent's `Host` names Airlock. On the lane it is replaced in place
    // by the upstream's; the pool writes its own when there is none (and
    // an HTTP/2 upstream takes the authority from the URI instead).
    let agent_host = match (&claim, &route.host) {
        (Some(_), Some(host)) => headers.insert(header::HOST, host.clone()),
        _ => headers.remove(header::HOST),
    };
    if let Some(hop) = conn.and_then(|c| c.hop.as_ref()) {
        let agent_host = agent_host.or_else(|| {
            let authority = parts.uri.authority()?;
            HeaderValue::from_str(authority.as_str()).ok()
        });
        hop.set_forwarded(headers, agent_host);
    }
    for (name, value) in &route.config.headers {
        headers.insert(name.clone(), value.clone());
    }
    let request_id = HeaderValue::from_str(request_id).ok();
    if let Some(v) = &request_id {
        headers.insert(X_REQUEST_ID, v.clone());
    }
    // The length sent is the body's. The agent's own value usually states
    // it already (hyper checked it against the bytes read), and then no new
    // one is formatted; an edited held call or a chunked body gets it
    // afresh (config refuses a route that injects its own).
    if !states_length(headers, body_len) {
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(body_len));
    }

    let timeout = route.config.response_timeout;
    let sent = tokio::time::timeout(timeout, send(route, claim, out)).await;
    let resp = match sent {
        Err(_) => {
            return Err(ProxyError::UpstreamTimeout {
                route: route.config.name.clone(),
                seconds: timeout.as_secs(),
            })
        }
        Ok(r) => r?,
    };
    let (mut rparts, rbody) = resp.into_parts();
    strip_hop_by_hop(&mut rparts.headers);
    if let Some(v) = request_id {
        rparts.headers.insert(X_REQUEST_ID, v);
    }
    Ok(Response::from_parts(
        rparts,
        Either::Left(Either::Left(UpstreamBody::new(rbody))),
    ))
}

/// The agent connection's lane, when this call can take it: the agent
/// speaks HTTP/1.x, the upstream is plain HTTP and the lane is free for it.
fn claim_lane<'a>(
    route: &Route,
    agent_version: Version,
    lane: Option<&'a PairedUpstream>,
) -> Option<Claim<'a>> {
    let up = &route.config.upstream;
    match (lane, up.authority()) {
        (Some(lane), Some(authority))
            if agent_version < Version::HTTP_2 && up.scheme_str() == Some("http") =>
        {
            lane.claim(authority)
        }
        _ => None,
    }
}

/// Sends over the claimed lane, or through the pool when there is none.
async fn send(
    route: &Route,
    claim: Option<Claim<'_>>,
    out: Request<Full<Bytes>>,
) -> Result<Response<Incoming>, ProxyError> {
    let connect_timeout = route.config.connect_timeout;
    let unavailable = |detail: String, connected: bool| ProxyError::UpstreamUnavailable {
        route: route.config.name.clone(),
        detail,
        connected,
    };
    let connect_timed_out = || ProxyError::UpstreamTimeout {
        route: route.config.name.clone(),
        seconds: connect_timeout.as_secs(),
    };
    if let Some(claim) = claim {
        return match claim.send(out, connect_timeout).await {
            Ok(r) => Ok(r),
            Err(PairedError::ConnectTimeout) => Err(connect_timed_out()),
            Err(e @ PairedError::Connect(_)) => Err(unavailable(e.to_string(), false)),
            Err(e) => Err(unavailable(e.to_string(), true)),
        };
    }
    match route.client.request(out).await {
        Ok(r) => Ok(r),
        Err(e) if e.is_connect() && is_timeout(&e) => Err(connect_timed_out()),
        // A connect error (refused, TLS handshake failed) is raised before
        // any byte of the request is written.
        Err(e) => Err(unavailable(
            crate::upstream::describe_error(&e),
            !e.is_connect(),
        )),
    }
}

fn is_timeout(e: &hyper_util::client::legacy::Error) -> bool {
    let mut src: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(s) = src {
        if s.to_string().contains("timed out") {
            return true;
        }
        src = s.source();
    }
    false
}

/// Hop-by-hop headers, never forwarded in either direction.
fn is_hop_by_hop(name: &str) -> bool {
    crate::config::HOP_BY_HOP.contains(&name)
}

/// Headers of the agent's that never reach the upstream: its credentials,
/// `Host`, the length (set again for the exact body), Airlock's own, and
/// what proxies say about the client (Airlock's own values replace them,
/// as nginx's do).
fn is_agent_only(name: &str) -> bool {
    matches!(
        name,
        "authorization" | "host" | "content-length" | "x-request-id" | "forwarded" | "x-real-ip"
    ) || name.starts_with("airlock-")
        || name.starts_with("x-forwarded-")
}

/// As [`is_agent_only`], but the agent's length is kept for `forward` to
/// check against the body, and its `Host` for `forward` to replace.
fn is_agent_only_but_length_and_host(name: &str) -> bool {
    !matches!(name, "content-length" | "host") && is_agent_only(name)
}

/// Whether `headers` hold one `Content-Length`, of plain digits, equal to
/// `len`.
fn states_length(headers: &HeaderMap, len: usize) -> bool {
    let mut values = headers.get_all(header::CONTENT_LENGTH).iter();
    match (values.next(), values.next()) {
        (Some(v), None) => {
            let digits = v.as_bytes();
            !digits.is_empty()
                && digits.iter().all(u8::is_ascii_digit)
                && std::str::from_utf8(digits)
                    .ok()
                    .and_then(|d| d.parse().ok())
                    == Some(len)
        }
        _ => false,
    }
}

/// Removes hop-by-hop headers in place (the upstream's answer is ours to
/// change; copying it cost more than the usual one removal).
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    strip(headers, |_| false);
}

/// Cleans the agent's headers for the upstream, in place: hop-by-hop and
/// agent-only headers go.
pub(super) fn strip_for_upstream(headers: &mut HeaderMap) {
    strip(headers, is_agent_only);
}

/// One pass finds what to remove (so a header map with nothing to remove
/// costs one look at each name), then each is removed.
fn strip(headers: &mut HeaderMap, also: fn(&str) -> bool) {
    // On the stack: a request or answer rarely has more to remove.
    let mut doomed: SmallVec<[http::HeaderName; 6]> = SmallVec::new();
    let mut has_connection = false;
    for name in headers.keys() {
        has_connection |= name == header::CONNECTION;
        let n = name.as_str();
        if is_hop_by_hop(n) || also(n) {
            doomed.push(name.clone());
        }
    }
    // The headers `Connection` names are hop-by-hop too. It usually names
    // only `keep-alive` (hop-by-hop already) or `close` (no header), and
    // then nothing more needs looking up.
    if has_connection {
        let named: SmallVec<[&str; 4]> = headers
            .get_all(header::CONNECTION)
            .iter()
            // A whole value of one of the two is the usual case: no split.
            .filter(|v| {
                let v = v.as_bytes();
                !v.eq_ignore_ascii_case(b"keep-alive") && !v.eq_ignore_ascii_case(b"close")
            })
            .flat_map(connection_tokens)
            .filter(|t| !t.eq_ignore_ascii_case("keep-alive") && !t.eq_ignore_ascii_case("close"))
            .collect();
        if !named.is_empty() {
            for name in headers.keys() {
                if named.iter().any(|t| t.eq_ignore_ascii_case(name.as_str()))
                    && !doomed.contains(name)
                {
                    doomed.push(name.clone());
                }
            }
        }
    }
    for name in doomed {
        headers.remove(name);
    }
}

fn connection_tokens(v: &HeaderValue) -> impl Iterator<Item = &str> {
    v.to_str()
        .into_iter()
        .flat_map(|v| v.split(','))
        .map(str::trim)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    fn names(h: &HeaderMap) -> Vec<&str> {
        let mut n: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        n.sort_unstable();
        n
    }

    #[test]
    fn toward_the_upstream_credentials_and_hop_by_hop_headers_stay_behind() {
        let mut to = headers(&[
            ("authorization", "Bearer k"),
            ("host", "airlock"),
            ("content-length", "2"),
            ("airlock-approval", "x"),
            ("x-request-id", "spoofed"),
            ("connection", "keep-alive, x-private"),
            ("x-private", "1"),
            ("te", "trailers"),
            ("accept", "application/json"),
            ("x-custom", "a"),
            ("x-custom", "b"),
            ("airlock-reason", "y"),
            ("x-forwarded-for", "10.9.9.9"),
            ("X-Forwarded-Prefix", "/admin"),
            ("forwarded", "for=10.9.9.9"),
            ("x-real-ip", "10.9.9.9"),
        ]);
        strip_for_upstream(&mut to);
        assert_eq!(names(&to), ["accept", "x-custom"]);
        assert_eq!(to.get_all("x-custom").iter().count(), 2);
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
    fn only_one_plain_length_equal_to_the_body_is_kept() {
        assert!(states_length(&headers(&[("content-length", "12")]), 12));
        for h in [
            headers(&[]),
            headers(&[("content-length", "13")]),
            headers(&[("content-length", "+12")]),
            headers(&[("content-length", " 12")]),
            headers(&[("content-length", "12"), ("content-length", "12")]),
        ] {
            assert!(!states_length(&h, 12), "{h:?}");
        }
    }

    #[test]
    fn the_upstream_answer_loses_its_hop_by_hop_headers_in_place() {
        let mut h = headers(&[
            ("connection", "close, X-Upstream-Private"),
            ("x-upstream-private", "1"),
            ("keep-alive", "timeout=5"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "h2c"),
            ("content-type", "application/json"),
            ("set-cookie", "a=1"),
            ("set-cookie", "b=2"),
        ]);
        strip_hop_by_hop(&mut h);
        assert_eq!(names(&h), ["content-type", "set-cookie"]);
        assert_eq!(h.get_all("set-cookie").iter().count(), 2);
    }

    #[test]
    fn every_connection_header_is_read_for_the_names_it_lists() {
        let mut h = headers(&[
            ("connection", "Keep-Alive"),
            ("connection", "te, X-Second"),
            ("te", "trailers"),
            ("x-second", "1"),
            ("keep-alive", "timeout=5"),
            ("accept", "*/*"),
        ]);
        strip_hop_by_hop(&mut h);
        assert_eq!(names(&h), ["accept"]);
    }
}
