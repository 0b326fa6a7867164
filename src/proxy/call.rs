//! Turning an HTTP request into the call the policy judges.
//!
//! The Cedar context of an HTTP call is:
//!
//! | attribute | value |
//! | --- | --- |
//! | `method` | the HTTP method, e.g. `"POST"` |
//! | `path` | the normalized, decoded path as the agent sent it, prefix included (folded on `case_insensitive` routes; see `crate::path`) |
//! | `query` | a record of query parameters (`+` and `%XX` decoded); names that servers could read as one (a repeat, `dry_run` beside `dry.run`, `dry_run[]` or `DRY_RUN`) are refused with 400, since upstreams disagree on which copy wins; so is `_method`, which frameworks run as the method |
//! | `headers` | a record of the [`CONTEXT_HEADERS`] the agent sent, names in lower case, repeated values joined with `, ` |
//! | `confidence`, `agent_reason` | from `Airlock-Confidence` and `Airlock-Reason`, when sent (see `policy::escalation`) |
//! | `body_kind` | how the body was read: `none`, `json`, `form` or `opaque` (see `proxy::body`) |
//! | `body` | a JSON body mapped as described in `policy::value`, or a form body as a record of strings; absent for `none` and `opaque` |

use bytes::Bytes;
use http::request::Parts;
use http::HeaderName;
use serde_json::{Map, Value};

pub use super::body::{
    body_kind, not_in_both, parse_fields, read_form, BodyKind, BodyRules, Fields,
};
use super::error::ProxyError;
use crate::policy::keys::DeclaredNames;
use crate::policy::value::{check_json_strict, parse_json_needed};
use crate::policy::{CallRequest, ContextNeeds, Escalation, Resource};

/// Headers a policy may read, as `context.headers["name"]`. Static names,
/// so that looking them up parses nothing; a `static`, since a `const`
/// array is built and dropped again at each use.
pub static CONTEXT_HEADERS: [HeaderName; 4] = [
    HeaderName::from_static("accept"),
    HeaderName::from_static("content-type"),
    HeaderName::from_static("idempotency-key"),
    HeaderName::from_static("user-agent"),
];

/// Builds the policy's view of an HTTP call, its whole context included.
pub fn http_call(
    agent: &str,
    route: &str,
    parts: &Parts,
    decoded_path: String,
    body: &Bytes,
    rules: BodyRules<'_>,
) -> Result<CallRequest, ProxyError> {
    let mut call = http_request(agent, route, parts);
    call.context = http_context(
        parts,
        &decoded_path,
        body,
        ContextNeeds::everything(),
        rules,
    )?;
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
/// text, a body that is not valid JSON or repeats a key: 400; a body that
/// cannot be read one way only: 415), so that what is refused never
/// depends on which policies apply.
pub fn http_context(
    parts: &Parts,
    decoded_path: &str,
    body: &Bytes,
    needs: ContextNeeds<'_>,
    rules: BodyRules<'_>,
) -> Result<Map<String, Value>, ProxyError> {
    let mut ctx = Map::new();
    if let Some(n) = needs.below("method") {
        let method = Value::String(parts.method.as_str().to_string());
        ctx.insert("method".into(), n.keep(method));
    }
    if let Some(n) = needs.below("path") {
        ctx.insert("path".into(), n.keep(Value::String(decoded_path.into())));
    }
    let query = parse_query(parts.uri.query().unwrap_or(""), rules.names)?;
    let kind = body_kind(&parts.headers, body, rules.opaque_bodies)?;
    let form = match kind {
        BodyKind::Form => Some(read_form(body, rules.names)?),
        // Not read, but a server may still read a `_method` in it.
        BodyKind::Opaque => {
            screen_form_override(&parts.headers, body)?;
            None
        }
        _ => None,
    };
    if let Some(form) = &form {
        not_in_both(&query, form)?;
    }
    if let Some(n) = needs.below("query") {
        ctx.insert("query".into(), n.keep(Value::Object(query)));
    }
    let headers = needs.below("headers");
    let headers_value = context_headers(&parts.headers, headers.is_some())?;
    if let Some(n) = headers {
        ctx.insert("headers".into(), n.keep(Value::Object(headers_value)));
    }
    escalation(&parts.headers)?.insert_into(&mut ctx, needs);
    if let Some(n) = needs.below("body_kind") {
        ctx.insert("body_kind".into(), n.keep(kind.name().into()));
    }
    let read = match (kind, form) {
        (BodyKind::Json, _) => json_body(body, needs.below("body"), rules.names)?,
        (_, Some(form)) => needs.below("body").map(|n| n.keep(Value::Object(form))),
        _ => None,
    };
    if let Some(b) = read {
        ctx.insert("body".into(), b);
    }
    Ok(ctx)
}

/// The part of the context every call has, REST or MCP: `method`, `path`,
/// `query` and `headers`, built whole. An MCP route adds its own parts to
/// it (see `mcp::method`), so one policy over the path or a header covers
/// both kinds of route.
pub fn common_context(
    parts: &Parts,
    decoded_path: &str,
    names: &DeclaredNames,
) -> Result<Map<String, Value>, ProxyError> {
    let mut ctx = Map::new();
    ctx.insert(
        "method".into(),
        Value::String(parts.method.as_str().to_string()),
    );
    ctx.insert("path".into(), Value::String(decoded_path.into()));
    let query = parse_query(parts.uri.query().unwrap_or(""), names)?;
    ctx.insert("query".into(), Value::Object(query));
    let headers = context_headers(&parts.headers, true)?;
    ctx.insert("headers".into(), Value::Object(headers));
    Ok(ctx)
}

/// The agent's confidence and reason from its headers; a malformed one is
/// refused (400 `invalid_confidence`), whatever the policies read.
pub fn escalation(headers: &http::HeaderMap) -> Result<Escalation, ProxyError> {
    Escalation::from_headers(headers)
        .map_err(|e| ProxyError::bad_request("invalid_confidence", e.to_string()))
}

/// Parses a body declared as JSON. One that does not parse is refused; so
/// is one with duplicate keys (compared without regard to case) or a key
/// that reads as a declared name it is not, which two parsers could read
/// differently. Only `needs` of it is built; with no needs it is checked
/// and `None`.
pub fn json_body(
    body: &Bytes,
    needs: Option<ContextNeeds<'_>>,
    names: &DeclaredNames,
) -> Result<Option<Value>, ProxyError> {
    let parsed = match needs {
        Some(n) => parse_json_needed(body, n, names).map(Some),
        None => check_json_strict(body, names).map(|()| None),
    };
    parsed.map_err(|e| {
        let text = e.to_string();
        let kind = if text.starts_with("duplicate key") {
            "duplicate_json_key"
        } else if text.starts_with("ambiguous key") {
            "ambiguous_json_key"
        } else {
            return ProxyError::bad_request(
                "invalid_json",
                format!("the JSON body does not parse: {text}"),
            );
        };
        ProxyError::bad_request(kind, format!("the JSON body is ambiguous: {text}"))
    })
}

/// A query string as a record of strings (see [`parse_fields`]).
pub fn parse_query(q: &str, names: &DeclaredNames) -> Result<Map<String, Value>, ProxyError> {
    if q.is_empty() {
        return Ok(Map::new());
    }
    let fields = parse_fields(q, names, Fields::Query)?;
    if fields.keys().any(|k| is_method_field(k)) {
        return Err(super::screen::override_refused("query parameter `_method`"));
    }
    Ok(fields)
}

/// Whether a form field or query parameter named `name` overrides the
/// method in common frameworks (Rails and Rack, Laravel, Symfony,
/// Express's method-override).
pub(super) fn is_method_field(name: &str) -> bool {
    name.eq_ignore_ascii_case("_method")
}

/// Refuses a body declared a form (`application/x-www-form-urlencoded`)
/// that has a `_method` field, however its name is encoded or cased:
/// frameworks run the method it names instead of the request's. For a form
/// an opaque route forwards unread (a charset other than UTF-8, say);
/// [`read_form`] checks the forms it reads.
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

    use crate::policy::keys::NO_NAMES;

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
            // A form that is read is checked as it is read.
            let read = read_form(body, &NO_NAMES).map(|_| ()).map_err(|e| e.kind());
            assert_eq!(
                read,
                Err("override_header"),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
        for body in [&b"a=_method"[..], b"method=DELETE", b"_method_x=1", b""] {
            assert!(!refused(&h, body), "{}", String::from_utf8_lossy(body));
        }
        let e = parse_query("a=1&%5FMethod=DELETE", &NO_NAMES).unwrap_err();
        assert_eq!(e.kind(), "override_header");
    }

    #[test]
    fn query_decodes_and_refuses_repeats() {
        let q = parse_query("a=1&b=x+y%21&c", &NO_NAMES).unwrap();
        assert_eq!(q["b"], "x y!");
        assert_eq!(q["c"], "");
        assert!(parse_query("a=1&a=2", &NO_NAMES).is_err());
        assert!(parse_query("dry_run=1&dry.run=0", &NO_NAMES).is_err());
    }

    #[test]
    fn broken_json_is_refused() {
        let all = Some(ContextNeeds::everything());
        let json_body = |b: &'static [u8]| json_body(&Bytes::from_static(b), all, &NO_NAMES);
        assert!(json_body(b"{nope").is_err());
        assert!(json_body(b"42").unwrap().is_some());
        assert!(json_body(b"{\"a\":1,\"a\":2}").is_err());
        let folded = json_body(b"{\"amount\":50,\"AMOUNT\":500}").unwrap_err();
        assert_eq!(folded.kind(), "duplicate_json_key");
    }

    #[test]
    fn an_unread_body_is_still_checked_but_not_built() {
        let unread = |b: &'static [u8]| super::json_body(&Bytes::from_static(b), None, &NO_NAMES);
        assert_eq!(unread(b"{\"a\":[1,{\"b\":2}]}").unwrap(), None);
        let dup = unread(b"{\"a\":{\"b\":1,\"b\":2}}").unwrap_err();
        assert_eq!(dup.kind(), "duplicate_json_key");
        assert_eq!(unread(b"{\"a\":").unwrap_err().kind(), "invalid_json");
        assert_eq!(unread(b"{} {}").unwrap_err().kind(), "invalid_json");
    }

    #[test]
    fn a_key_that_reads_as_a_declared_name_is_refused_whether_built_or_only_checked() {
        let names = DeclaredNames::new(["amount".to_string()].into());
        let body = Bytes::from_static(b"{\"note\":\"x\",\"Amount\":500}");
        for needs in [None, Some(ContextNeeds::everything())] {
            let e = json_body(&body, needs, &names).unwrap_err();
            assert_eq!(e.kind(), "ambiguous_json_key", "{e}");
        }
    }

    #[test]
    fn the_context_says_how_the_body_was_read() {
        let parts = |ct: Option<&str>| {
            let mut b = http::Request::builder().method("POST").uri("/crm/refunds");
            if let Some(ct) = ct {
                b = b.header("content-type", ct);
            }
            b.body(()).unwrap().into_parts().0
        };
        let context = |ct: Option<&str>, body: &'static [u8], opaque_bodies: bool| {
            let rules = BodyRules {
                names: &NO_NAMES,
                opaque_bodies,
            };
            let body = Bytes::from_static(body);
            http_context(
                &parts(ct),
                "/crm/refunds",
                &body,
                ContextNeeds::everything(),
                rules,
            )
        };
        let form = context(
            Some("application/x-www-form-urlencoded"),
            b"amount=500",
            false,
        );
        let form = form.unwrap();
        assert_eq!(form["body_kind"], "form");
        assert_eq!(form["body"], serde_json::json!({"amount": "500"}));
        let json = context(Some("application/json"), b"{\"amount\":500}", false).unwrap();
        assert_eq!(json["body_kind"], "json");
        assert_eq!(json["body"]["amount"], 500);
        let none = context(None, b"", false).unwrap();
        assert_eq!(none["body_kind"], "none");
        assert!(!none.contains_key("body"));
        let refused = context(Some("text/plain"), b"{\"amount\":500}", false).unwrap_err();
        assert_eq!(refused.kind(), "unsupported_body");
        let parts = http::Request::builder()
            .method("POST")
            .uri("/crm/refunds?amount=500")
            .header("content-type", "application/x-www-form-urlencoded")
            .body(())
            .unwrap()
            .into_parts()
            .0;
        let rules = BodyRules {
            names: &NO_NAMES,
            opaque_bodies: false,
        };
        let body = Bytes::from_static(b"Amount=50");
        let both = http_context(&parts, "/", &body, ContextNeeds::everything(), rules);
        assert_eq!(both.unwrap_err().kind(), "ambiguous_form");
        let opaque = context(Some("text/plain"), b"{\"amount\":500}", true).unwrap();
        assert_eq!(opaque["body_kind"], "opaque");
        assert!(!opaque.contains_key("body"));
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
