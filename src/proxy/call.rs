//! Turning an HTTP request into the call the policy judges.
//!
//! The Cedar context of an HTTP call is:
//!
//! | attribute | value |
//! | --- | --- |
//! | `method` | the HTTP method, e.g. `"POST"` |
//! | `path` | the normalized, decoded path as the agent sent it, prefix included (folded on `case_insensitive` routes; see `proxy::path`) |
//! | `query` | a record of query parameters (`+` and `%XX` decoded); a repeated parameter is refused with 400, since upstreams disagree on which copy wins |
//! | `headers` | a record of the [`CONTEXT_HEADERS`] the agent sent, names in lower case, repeated values joined with `, ` |
//! | `body` | the JSON body, mapped as described in `policy::value`; absent when the body is empty or not JSON |

use bytes::Bytes;
use http::request::Parts;
use http::HeaderName;
use percent_encoding::percent_decode_str;
use serde_json::{Map, Value};

use super::error::ProxyError;
use crate::policy::value::{check_json_strict, parse_json_needed};
use crate::policy::{CallRequest, ContextNeeds, Resource};

/// Headers a policy may read, as `context.headers["name"]`. Static names,
/// so that looking them up parses nothing; a `static`, since a `const`
/// array is built and dropped again at each use.
pub static CONTEXT_HEADERS: [HeaderName; 6] = [
    HeaderName::from_static("accept"),
    HeaderName::from_static("content-type"),
    HeaderName::from_static("idempotency-key"),
    HeaderName::from_static("user-agent"),
    HeaderName::from_static("x-airlock-confidence"),
    HeaderName::from_static("x-airlock-reason"),
];

/// Builds the policy's view of an HTTP call, its whole context included.
pub fn http_call(
    agent: &str,
    route: &str,
    parts: &Parts,
    decoded_path: String,
    body: &Bytes,
) -> Result<CallRequest, ProxyError> {
    let mut call = http_request(agent, route, parts);
    call.context = http_context(parts, &decoded_path, body, ContextNeeds::everything())?;
    Ok(call)
}

/// The call without its context, to plan the decision by (see
/// [`http_context`]).
pub fn http_request(agent: &str, route: &str, parts: &Parts) -> CallRequest {
    CallRequest {
        agent: agent.to_string(),
        action: parts.method.as_str().to_string(),
        resource: Resource::Route(route.to_string()),
        context: Map::new(),
    }
}

/// The call's context, built only as far as `needs` asks. Every part is
/// checked all the same (a repeated query parameter, a header that is not
/// text, a body that is not valid JSON or repeats a key: 400), so that
/// what is refused never depends on which policies apply.
pub fn http_context(
    parts: &Parts,
    decoded_path: &str,
    body: &Bytes,
    needs: ContextNeeds<'_>,
) -> Result<Map<String, Value>, ProxyError> {
    let mut ctx = Map::new();
    if let Some(n) = needs.below("method") {
        let method = Value::String(parts.method.as_str().to_string());
        ctx.insert("method".into(), n.keep(method));
    }
    if let Some(n) = needs.below("path") {
        ctx.insert("path".into(), n.keep(Value::String(decoded_path.into())));
    }
    let query = parse_query(parts.uri.query().unwrap_or(""))?;
    if let Some(n) = needs.below("query") {
        ctx.insert("query".into(), n.keep(Value::Object(query)));
    }
    let headers = needs.below("headers");
    let headers_value = context_headers(&parts.headers, headers.is_some())?;
    if let Some(n) = headers {
        ctx.insert("headers".into(), n.keep(Value::Object(headers_value)));
    }
    if let Some(b) = json_body(&parts.headers, body, needs.below("body"))? {
        ctx.insert("body".into(), b);
    }
    Ok(ctx)
}

/// Parses the body as JSON when it looks like JSON or says it is. A body
/// declared as JSON that does not parse is refused; so is one with duplicate
/// keys, which two parsers could read differently. Only `needs` of it is
/// built; with no needs it is checked and `None`.
pub fn json_body(
    headers: &http::HeaderMap,
    body: &Bytes,
    needs: Option<ContextNeeds<'_>>,
) -> Result<Option<Value>, ProxyError> {
    let declared_json = headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| {
            let starts = ct
                .get(..16)
                .is_some_and(|p| p.eq_ignore_ascii_case("application/json"));
            starts
                || ct
                    .as_bytes()
                    .windows(5)
                    .any(|w| w.eq_ignore_ascii_case(b"+json"))
        });
    let first = body.iter().find(|b| !b.is_ascii_whitespace());
    let looks_json = matches!(first, Some(b'{') | Some(b'['));
    if body.is_empty() || !(declared_json || looks_json) {
        return Ok(None);
    }
    let parsed = match needs {
        Some(n) => parse_json_needed(body, n).map(Some),
        None => check_json_strict(body).map(|()| None),
    };
    match parsed {
        Ok(v) => Ok(v),
        Err(e) if e.to_string().starts_with("duplicate key") => Err(ProxyError::bad_request(
            "duplicate_json_key",
            format!("the JSON body is ambiguous: {e}"),
        )),
        Err(e) => Err(ProxyError::bad_request(
            "invalid_json",
            format!("the JSON body does not parse: {e}"),
        )),
    }
}

fn parse_query(q: &str) -> Result<Map<String, Value>, ProxyError> {
    let mut out = Map::new();
    for pair in q.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let k = decode_component(k)?;
        if is_method_field(&k) {
            return Err(super::screen::override_refused("query parameter `_method`"));
        }
        let v = decode_component(v)?;
        if out.contains_key(&k) {
            return Err(ProxyError::bad_request(
                "ambiguous_query",
                format!("query parameter `{k}` is repeated; send it once"),
            ));
        }
        out.insert(k, Value::String(v));
    }
    Ok(out)
}

/// Whether a form field or query parameter named `name` overrides the
/// method in common frameworks (Rails and Rack, Laravel, Symfony,
/// Express's method-override).
fn is_method_field(name: &str) -> bool {
    name.eq_ignore_ascii_case("_method")
}

/// Refuses a form body (`application/x-www-form-urlencoded`) that has a
/// `_method` field, however its name is encoded or cased: frameworks run
/// the method it names instead of the request's.
pub fn screen_form_override(headers: &http::HeaderMap, body: &[u8]) -> Result<(), ProxyError> {
    const FORM: &[u8] = b"application/x-www-form-urlencoded";
    let is_form = headers.get(http::header::CONTENT_TYPE).is_some_and(|ct| {
        ct.as_bytes()
            .get(..FORM.len())
            .is_some_and(|p| p.eq_ignore_ascii_case(FORM))
    });
    if !is_form {
        return Ok(());
    }
    for pair in body.split(|b| *b == b'&') {
        let name = pair.split(|b| *b == b'=').next().unwrap_or_default();
        let plus: Vec<u8> = name
            .iter()
            .map(|b| if *b == b'+' { b' ' } else { *b })
            .collect();
        let decoded: Vec<u8> = percent_encoding::percent_decode(&plus).collect();
        if decoded.eq_ignore_ascii_case(b"_method") {
            return Err(super::screen::override_refused("form field `_method`"));
        }
    }
    Ok(())
}

fn decode_component(s: &str) -> Result<String, ProxyError> {
    let plus = s.replace('+', " ");
    percent_decode_str(&plus)
        .decode_utf8()
        .map(|c| c.into_owned())
        .map_err(|_| ProxyError::bad_request("bad_query", "the query string is not valid UTF-8"))
}

/// The headers a policy may read, checked to be text; built only when
/// `build`.
fn context_headers(
    headers: &http::HeaderMap,
    build: bool,
) -> Result<Map<String, Value>, ProxyError> {
    let not_text = |name: &HeaderName| {
        ProxyError::bad_request(
            "bad_header",
            format!("header `{name}` is not valid text, and policies may read it"),
        )
    };
    let mut out = Map::new();
    if !build {
        // Checked, not built: one pass over the few headers sent costs less
        // than a lookup per header a policy could read.
        for (name, v) in headers {
            if CONTEXT_HEADERS.contains(name) && v.to_str().is_err() {
                return Err(not_text(name));
            }
        }
        return Ok(out);
    }
    for name in &CONTEXT_HEADERS {
        // One value is the usual case; repeats are joined with `, `.
        let mut joined: Option<String> = None;
        for v in headers.get_all(name) {
            let s = v.to_str().map_err(|_| not_text(name))?;
            match &mut joined {
                None => joined = Some(s.to_owned()),
                Some(j) => {
                    j.push_str(", ");
                    j.push_str(s);
                }
            }
        }
        if let Some(j) = joined {
            out.insert(name.as_str().to_string(), Value::String(j));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_method_override_in_a_form_body_or_the_query_is_refused() {
        let mut h = http::HeaderMap::new();
        let refused = |h: &http::HeaderMap, b: &[u8]| {
            screen_form_override(h, b).is_err_and(|e| e.kind() == "override_header")
        };
        assert!(!refused(&h, b"_method=DELETE"), "not a form");
        h.insert(
            "content-type",
            "Application/X-WWW-Form-Urlencoded; charset=utf-8"
                .parse()
                .unwrap(),
        );
        for body in [
            &b"_method=DELETE"[..],
            b"a=1&_METHOD=delete",
            b"a=1&%5Fmethod=PUT",
            b"_%6Dethod",
        ] {
            assert!(refused(&h, body), "{}", String::from_utf8_lossy(body));
        }
        for body in [&b"a=_method"[..], b"method=DELETE", b"_method_x=1", b""] {
            assert!(!refused(&h, body), "{}", String::from_utf8_lossy(body));
        }
        let e = parse_query("a=1&%5FMethod=DELETE").unwrap_err();
        assert_eq!(e.kind(), "override_header");
    }

    #[test]
    fn query_decodes_and_refuses_repeats() {
        let q = parse_query("a=1&b=x+y%21&c").unwrap();
        assert_eq!(q["b"], "x y!");
        assert_eq!(q["c"], "");
        assert!(parse_query("a=1&a=2").is_err());
    }

    #[test]
    fn non_json_bodies_are_not_exposed_but_broken_json_is_refused() {
        let mut h = http::HeaderMap::new();
        let all = Some(ContextNeeds::everything());
        let json_body = |h: &http::HeaderMap, b: &Bytes| json_body(h, b, all);
        assert_eq!(json_body(&h, &Bytes::from_static(b"hello")).unwrap(), None);
        assert!(json_body(&h, &Bytes::from_static(b"{nope")).is_err());
        h.insert("content-type", "application/json".parse().unwrap());
        assert!(json_body(&h, &Bytes::from_static(b"42")).unwrap().is_some());
        assert!(json_body(&h, &Bytes::from_static(b"{\"a\":1,\"a\":2}")).is_err());
    }

    #[test]
    fn an_unread_body_is_still_checked_but_not_built() {
        let h = http::HeaderMap::new();
        let unread = |b: &'static [u8]| super::json_body(&h, &Bytes::from_static(b), None);
        assert_eq!(unread(b"{\"a\":[1,{\"b\":2}]}").unwrap(), None);
        let dup = unread(b"{\"a\":{\"b\":1,\"b\":2}}").unwrap_err();
        assert_eq!(dup.kind(), "duplicate_json_key");
        assert_eq!(unread(b"{\"a\":").unwrap_err().kind(), "invalid_json");
        assert_eq!(unread(b"{} {}").unwrap_err().kind(), "invalid_json");
    }

    #[test]
    fn a_readable_header_that_is_not_text_is_refused_whether_built_or_only_checked() {
        let mut h = http::HeaderMap::new();
        h.insert("x-other", http::HeaderValue::from_bytes(b"\xff").unwrap());
        h.append("accept", "text/plain".parse().unwrap());
        h.append("accept", "application/json".parse().unwrap());
        assert!(context_headers(&h, false).unwrap().is_empty());
        let built = context_headers(&h, true).unwrap();
        assert_eq!(built["accept"], "text/plain, application/json");
        assert!(!built.contains_key("x-other"));

        h.insert(
            "user-agent",
            http::HeaderValue::from_bytes(b"a\xffb").unwrap(),
        );
        for build in [false, true] {
            let e = context_headers(&h, build).unwrap_err();
            assert_eq!(e.kind(), "bad_header");
            assert!(e.to_string().contains("`user-agent`"), "{e}");
        }
    }
}
