//! The forward phase: the judged call to the upstream, and its answer back.
//!
//! The agent's own headers are cleaned in place rather than copied:
//! its credentials, hop-by-hop headers and what proxies say about the
//! client stay behind; the route's injected headers, Airlock's request id
//! and its own `X-Forwarded-*` go in.

use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Request, Response, Uri, Version};
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use smallvec::SmallVec;

use super::error::ProxyError;
use super::upstream_body::UpstreamBody;
use super::{AgentConnection, ProxyBody, X_REQUEST_ID};
use crate::path;
use crate::snapshot::Route;
use crate::upstream::paired::{Claim, PairedError, PairedUpstream};

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

    use crate::proxy::tests::headers;

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
