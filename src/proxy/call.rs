//! Turning an HTTP request into the call the policy judges.
//!
//! The Cedar context of an HTTP call is:
//!
//! | attribute | value |
//! | --- | --- |
//! | `method` | the HTTP method, e.g. `"POST"` |
//! | `path` | the normalized, decoded path as the agent sent it, prefix included |
//! | `query` | a record of query parameters (`+` and `%XX` decoded); a repeated parameter is refused with 400, since upstreams disagree on which copy wins |
//! | `headers` | a record of the [`CONTEXT_HEADERS`] the agent sent, names in lower case, repeated values joined with `, ` |
//! | `body` | the JSON body, mapped as described in `policy::value`; absent when the body is empty or not JSON |

use bytes::Bytes;
use http::request::Parts;
use percent_encoding::percent_decode_str;
use serde_json::{Map, Value};

use super::error::ProxyError;
use crate::policy::value::parse_json_strict;
use crate::policy::{CallRequest, Resource};

/// Headers a policy may read, as `context.headers["name"]`.
pub const CONTEXT_HEADERS: &[&str] = &[
    "accept",
    "content-type",
    "idempotency-key",
    "user-agent",
    "x-airlock-confidence",
    "x-airlock-reason",
];

/// Builds the policy's view of an HTTP call.
pub fn http_call(
    agent: &str,
    route: &str,
    parts: &Parts,
    decoded_path: String,
    body: &Bytes,
) -> Result<CallRequest, ProxyError> {
    let mut ctx = Map::with_capacity(5);
    ctx.insert(
        "method".into(),
        Value::String(parts.method.as_str().to_string()),
    );
    ctx.insert("path".into(), Value::String(decoded_path));
    ctx.insert(
        "query".into(),
        Value::Object(parse_query(parts.uri.query().unwrap_or(""))?),
    );
    ctx.insert(
        "headers".into(),
        Value::Object(context_headers(&parts.headers)?),
    );
    if let Some(b) = json_body(&parts.headers, body)? {
        ctx.insert("body".into(), b);
    }
    Ok(CallRequest {
        agent: agent.to_string(),
        action: parts.method.as_str().to_string(),
        resource: Resource::Route(route.to_string()),
        context: ctx,
    })
}

/// Parses the body as JSON when it looks like JSON or says it is. A body
/// declared as JSON that does not parse is refused; so is one with duplicate
/// keys, which two parsers could read differently.
pub fn json_body(headers: &http::HeaderMap, body: &Bytes) -> Result<Option<Value>, ProxyError> {
    let declared_json = headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| {
            let ct = ct.to_ascii_lowercase();
            ct.starts_with("application/json") || ct.contains("+json")
        });
    let first = body.iter().find(|b| !b.is_ascii_whitespace());
    let looks_json = matches!(first, Some(b'{') | Some(b'['));
    if body.is_empty() || !(declared_json || looks_json) {
        return Ok(None);
    }
    match parse_json_strict(body) {
        Ok(v) => Ok(Some(v)),
        Err(e) if e.to_string().starts_with("duplicate key") => Err(ProxyError::bad_request(
            "duplicate_json_key",
            format!("the JSON body is ambiguous: {e}"),
        )),
        Err(e) if declared_json || looks_json => Err(ProxyError::bad_request(
            "invalid_json",
            format!("the JSON body does not parse: {e}"),
        )),
        Err(_) => Ok(None),
    }
}

fn parse_query(q: &str) -> Result<Map<String, Value>, ProxyError> {
    let mut out = Map::new();
    for pair in q.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let k = decode_component(k)?;
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

fn decode_component(s: &str) -> Result<String, ProxyError> {
    let plus = s.replace('+', " ");
    percent_decode_str(&plus)
        .decode_utf8()
        .map(|c| c.into_owned())
        .map_err(|_| ProxyError::bad_request("bad_query", "the query string is not valid UTF-8"))
}

fn context_headers(headers: &http::HeaderMap) -> Result<Map<String, Value>, ProxyError> {
    let mut out = Map::new();
    for name in CONTEXT_HEADERS {
        // One value is the usual case; repeats are joined with `, `.
        let mut joined: Option<String> = None;
        for v in headers.get_all(*name) {
            let s = v.to_str().map_err(|_| {
                ProxyError::bad_request(
                    "bad_header",
                    format!("header `{name}` is not valid text, and policies may read it"),
                )
            })?;
            match &mut joined {
                None => joined = Some(s.to_owned()),
                Some(j) => {
                    j.push_str(", ");
                    j.push_str(s);
                }
            }
        }
        if let Some(j) = joined {
            out.insert((*name).to_string(), Value::String(j));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(json_body(&h, &Bytes::from_static(b"hello")).unwrap(), None);
        assert!(json_body(&h, &Bytes::from_static(b"{nope")).is_err());
        h.insert("content-type", "application/json".parse().unwrap());
        assert!(json_body(&h, &Bytes::from_static(b"42")).unwrap().is_some());
        assert!(json_body(&h, &Bytes::from_static(b"{\"a\":1,\"a\":2}")).is_err());
    }
}
