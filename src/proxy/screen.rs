//! What is refused before a call is judged, because a server could read it
//! differently from the policy: method and path overrides, methods that are
//! not exactly an action, `;` path parameters, and an MCP route's `Origin`
//! (see docs/security.md). Routing lives here too, since a route's options
//! decide how its paths are read.

use http::{header, HeaderMap, Method, Request};
use hyper::body::Incoming;

use super::error::ProxyError;
use crate::config::Protocol;
use crate::path::NormalizedPath;
use crate::snapshot::{GatewaySnapshot, Route};

/// A request path after routing: the route, the path the policy reads and
/// the encoded rest the upstream gets after the route's base path.
pub struct Routed<'s> {
    pub route: &'s Route,
    pub decoded: String,
    pub rest: String,
    /// The path carries `;` parameters sent as is.
    pub params: bool,
}

/// Refuses `;` path parameters (`params`), which servlet containers cut
/// off before routing, unless `route` allows them.
pub fn screen_params(route: &Route, params: bool) -> Result<(), ProxyError> {
    if !params || route.config.path_params {
        return Ok(());
    }
    Err(ProxyError::bad_request(
        "path_params",
        format!(
            "the path carries `;` parameters, which servlet containers cut off before routing; route `{}` refuses them (send `;` as `%3B` if it is data)",
            route.config.name
        ),
    ))
}

/// Normalizes `raw` (see [`super::path`]), picks its route and applies
/// the route's case folding, so that the path the policy reads and the one
/// the upstream gets are made together. The caller screens the parameters
/// ([`screen_params`]) once it has recorded the route.
pub fn route_path<'s>(snap: &'s GatewaySnapshot, raw: &str) -> Result<Routed<'s>, ProxyError> {
    let mut path =
        NormalizedPath::parse(raw).map_err(|e| ProxyError::bad_request(e.kind(), e.to_string()))?;
    let Some((route, taken)) = snap.route_for(&path) else {
        return Err(ProxyError::NoRoute(path.decoded()));
    };
    if route.config.case_insensitive {
        path.fold_case();
    }
    Ok(Routed {
        route,
        decoded: path.decoded(),
        rest: path.encoded_from(taken),
        params: path.has_params(),
    })
}

/// Headers that make common frameworks run another method or path than
/// the one judged (method-override middleware, IIS and Symfony rewrites).
const OVERRIDE_HEADERS: [&str; 5] = [
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
    "x-original-url",
    "x-rewrite-url",
];

/// Refuses a request carrying an [`OVERRIDE_HEADERS`] header.
pub(super) fn screen_overrides(headers: &HeaderMap) -> Result<(), ProxyError> {
    match headers
        .keys()
        .find(|n| n.as_str().starts_with("x-") && OVERRIDE_HEADERS.contains(&n.as_str()))
    {
        None => Ok(()),
        Some(name) => Err(override_refused(&format!("header `{name}`"))),
    }
}

/// The refusal of a method or path override sent as `what`.
pub(super) fn override_refused(what: &str) -> ProxyError {
    ProxyError::bad_request(
        "override_header",
        format!("{what} overrides the method or path in common frameworks, past what the policy judges; it is refused"),
    )
}

/// Refuses a method the route cannot judge as it will run: on REST
/// routes, one that is not an upper-case action of the schema (a server
/// may upper-case `delete` and run it); on MCP routes, anything but `GET`,
/// `POST` and `DELETE`, and an `Origin` the route does not allow.
pub(super) fn screen_method(
    snap: &GatewaySnapshot,
    route: &Route,
    req: &Request<Incoming>,
) -> Result<(), ProxyError> {
    let m = req.method();
    let refused = |why| ProxyError::MethodRefused {
        method: m.as_str().to_owned(),
        why,
    };
    match route.config.protocol {
        Protocol::Http => {
            if !snap.policy.declares_upper_case_action(m.as_str()) {
                return Err(refused(
                    "methods are compared exactly, and only upper-case methods the policy schema declares as actions are accepted",
                ));
            }
        }
        Protocol::Mcp => {
            if !matches!(*m, Method::GET | Method::POST | Method::DELETE) {
                return Err(refused(
                    "an MCP route accepts `GET`, `POST` and `DELETE`, compared exactly",
                ));
            }
            screen_origin(&route.config.allowed_origins, req.headers())?;
        }
    }
    Ok(())
}

/// Refuses an `Origin` that is present and not allowed (the MCP transport
/// asks this of servers against DNS rebinding; the server behind Airlock
/// sees Airlock's `Host`, not the agent's, and cannot tell).
fn screen_origin(allowed: &[String], headers: &HeaderMap) -> Result<(), ProxyError> {
    for origin in headers.get_all(header::ORIGIN) {
        let ok = allowed
            .iter()
            .any(|a| a.as_bytes().eq_ignore_ascii_case(origin.as_bytes()));
        if !ok {
            let shown = String::from_utf8_lossy(origin.as_bytes()).into_owned();
            return Err(ProxyError::OriginRefused(shown));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::tests::headers;

    #[test]
    fn override_headers_are_refused_in_any_case() {
        assert!(screen_overrides(&headers(&[("x-custom", "1"), ("accept", "*/*")])).is_ok());
        for name in ["X-HTTP-Method-Override", "x-original-url", "X-Rewrite-Url"] {
            let e = screen_overrides(&headers(&[(name, "DELETE")])).unwrap_err();
            assert_eq!(e.kind(), "override_header");
            assert!(e.to_string().contains(&name.to_ascii_lowercase()), "{e}");
        }
    }

    #[test]
    fn only_a_listed_origin_or_none_passes() {
        let allowed = ["https://app.example".to_string()];
        assert!(screen_origin(&allowed, &headers(&[])).is_ok());
        assert!(screen_origin(&[], &headers(&[])).is_ok());
        let with = |o: &str| headers(&[("origin", o)]);
        assert!(screen_origin(&allowed, &with("HTTPS://App.Example")).is_ok());
        for bad in ["https://app.example.evil", "null", "http://app.example"] {
            let e = screen_origin(&allowed, &with(bad)).unwrap_err();
            assert_eq!((e.kind(), e.status().as_u16()), ("origin_not_allowed", 403));
        }
        assert!(screen_origin(&[], &with("https://app.example")).is_err());
    }
}
