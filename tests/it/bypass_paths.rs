//! The verdict cannot be bypassed: what the policy judges is what the tool
//! receives, read the way common server frameworks read it. Each scenario
//! sends what a framework would run differently, and compares what the
//! policy saw (the answer and the audit record) with what the recording
//! upstream received.
//!
//! Requests are written by hand on a raw socket: an HTTP client library
//! would normalize the method, the path or the headers itself, and the
//! point is what Airlock does with them.

use serde_json::{json, Value};

use crate::support::*;

/// REST routes: `ops` is open but for deletes; `crm` is open but for its
/// admin pages.
const REST_POLICIES: &str = r#"
@id("ops-open") permit(principal, action, resource == Route::"ops");
@id("no-deletes") forbid(principal, action == Action::"DELETE", resource == Route::"ops");
@id("crm-open") permit(principal, action, resource == Route::"crm");
@id("no-admin-reads") forbid(principal, action in Action::"read", resource == Route::"crm")
  when { context.path like "/crm/admin*" };
@id("legacy-open") permit(principal, action, resource == Route::"legacy");
"#;

/// An MCP route `tools`, open but for the tool `drop`.
const MCP_POLICIES: &str = r#"
@id("tools-open") permit(principal, action in Action::"mcp", resource in Route::"tools");
@id("no-drop") forbid(principal, action == Action::"call_tool", resource)
  when { context.tool == "drop" };
"#;

const DROP_CALL: &str =
    r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"drop","arguments":{}}}"#;

/// An answer read off the wire: status, the JSON body, the raw text.
struct Reply {
    status: u16,
    body: Value,
    raw: String,
}

impl Reply {
    /// The refusal's kind: `error` on a REST route, the JSON-RPC error's
    /// `data.error` on an MCP route.
    fn error(&self) -> &str {
        let error = &self.body["error"];
        error
            .as_str()
            .or_else(|| error["data"]["error"].as_str())
            .unwrap_or("")
    }

    fn request_id(&self) -> String {
        self.raw
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case("x-request-id")
                    .then(|| v.trim().to_string())
            })
            .expect("x-request-id")
    }
}

/// Sends `method target` with the agent's key, `headers` and `body`, as is.
async fn send(
    airlock: &Airlock,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Reply {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut req = format!(
        "{method} {target} HTTP/1.1\r\nHost: airlock.test\r\nAuthorization: Bearer {AGENT_KEY}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    let mut s = tokio::net::TcpStream::connect(airlock.proxy).await.unwrap();
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    let read = s.read_to_end(&mut out);
    let _ = tokio::time::timeout(std::time::Duration::from_secs(10), read).await;
    let raw = String::from_utf8_lossy(&out).into_owned();
    let status = raw
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = raw
        .split_once("\r\n\r\n")
        .and_then(|(_, b)| serde_json::from_str(b).ok())
        .unwrap_or(Value::Null);
    Reply { status, body, raw }
}

/// The REST setup: routes `ops` (`/ops`), `crm` (`/crm`) and `legacy`
/// (`/legacy`, which keeps `;` path parameters), all to one upstream.
async fn rest() -> (Upstream, Airlock) {
    rest_with("").await
}

async fn rest_with(ops_options: &str) -> (Upstream, Airlock) {
    let upstream = Upstream::start().await;
    let airlock = AirlockBuilder::new()
        .policy("rest.cedar", REST_POLICIES)
        .route_yaml(&format!(
            "  - name: ops\n    prefix: /ops\n    upstream: {}\n{ops_options}",
            upstream.url("/up")
        ))
        .route("crm", "/crm", &upstream.url("/api"))
        .route_yaml(&format!(
            "  - name: legacy\n    prefix: /legacy\n    upstream: {}\n    path_params: allow",
            upstream.url("/old")
        ))
        .start();
    (upstream, airlock)
}

/// The MCP setup: route `tools` at `/mcp`, with `options` added.
async fn mcp_with(options: &str) -> (Upstream, Airlock) {
    let upstream = Upstream::start().await;
    let airlock = AirlockBuilder::new()
        .policy("mcp.cedar", MCP_POLICIES)
        .route_yaml(&format!(
            "  - name: tools\n    prefix: /mcp\n    upstream: {}\n    protocol: mcp\n{options}",
            upstream.url("/mcp")
        ))
        .start();
    (upstream, airlock)
}

const JSON: (&str, &str) = ("Content-Type", "application/json");
const ACCEPT: (&str, &str) = ("Accept", "application/json, text/event-stream");

// === Methods and overrides ===

#[tokio::test]
async fn a_lower_case_method_is_refused_rather_than_judged_as_another_action() {
    let (upstream, airlock) = rest().await;
    // Many servers run `delete` as a DELETE, which `no-deletes` forbids.
    let r = send(&airlock, "delete", "/ops/items/1", &[], "").await;
    assert_eq!(r.status, 405, "{}", r.raw);
    assert_eq!(r.error(), "method_refused");
    let rec = airlock.audit_for(&r.request_id());
    assert_eq!(rec["error"], "method_refused");
    assert_eq!(rec["method"], "delete");
    assert_eq!(rec["route"], "ops");
    // A method the schema does not declare is refused too; DELETE itself
    // is judged and denied.
    assert_eq!(
        send(&airlock, "PURGE", "/ops/items/1", &[], "")
            .await
            .status,
        405
    );
    let r = send(&airlock, "DELETE", "/ops/items/1", &[], "").await;
    assert_eq!((r.status, r.error()), (403, "denied"));
    assert_eq!(upstream.hits(), 0);
    // An upper-case declared method still goes through.
    assert_eq!(
        send(&airlock, "GET", "/ops/items/1", &[], "").await.status,
        200
    );
    assert_eq!(upstream.last().method, "GET");
}

#[tokio::test]
async fn every_method_or_path_override_header_is_refused() {
    let (upstream, airlock) = rest().await;
    for (name, value) in [
        ("X-HTTP-Method-Override", "DELETE"),
        ("X-HTTP-Method", "DELETE"),
        ("X-Method-Override", "DELETE"),
        ("X-Original-URL", "/ops/admin"),
        ("X-Rewrite-URL", "/ops/admin"),
    ] {
        let r = send(&airlock, "POST", "/ops/items/1", &[(name, value)], "").await;
        assert_eq!(r.status, 400, "{name}: {}", r.raw);
        assert_eq!(r.error(), "override_header", "{name}");
        let lower = name.to_ascii_lowercase();
        assert!(
            r.body["message"].as_str().unwrap().contains(&lower),
            "{name}"
        );
        let rec = airlock.audit_for(&r.request_id());
        assert_eq!(rec["error"], "override_header");
        assert_eq!(rec["action"], Value::Null, "{name}: judged nothing");
    }
    assert_eq!(upstream.hits(), 0);
}

#[tokio::test]
async fn a_method_field_in_a_form_body_or_the_query_is_refused() {
    let (upstream, airlock) = rest().await;
    let form = ("Content-Type", "application/x-www-form-urlencoded");
    for body in [
        "_method=DELETE",
        "note=hi&_METHOD=delete",
        "%5Fmethod=DELETE",
    ] {
        let r = send(&airlock, "POST", "/ops/items/1", &[form], body).await;
        assert_eq!((r.status, r.error()), (400, "override_header"), "{body}");
        let rec = airlock.audit_for(&r.request_id());
        assert_eq!(rec["verdict"], "error", "{body}: never decided");
    }
    let r = send(&airlock, "POST", "/ops/items/1?_method=DELETE", &[], "").await;
    assert_eq!((r.status, r.error()), (400, "override_header"));
    assert_eq!(upstream.hits(), 0);
    // A form without the field passes, byte for byte.
    let r = send(&airlock, "POST", "/ops/items/1", &[form], "note=_method").await;
    assert_eq!(r.status, 200, "{}", r.raw);
    assert_eq!(upstream.last().body, b"note=_method");
}

#[tokio::test]
async fn forwarding_headers_from_the_agent_are_replaced_by_airlocks_own() {
    let (upstream, airlock) = rest().await;
    let spoofed = [
        ("X-Forwarded-For", "10.9.9.9"),
        ("X-Forwarded-Host", "admin.internal"),
        ("X-Forwarded-Proto", "https"),
        ("Forwarded", "for=10.9.9.9;host=admin.internal"),
        ("X-Real-IP", "10.9.9.9"),
    ];
    let r = send(&airlock, "GET", "/ops/items", &spoofed, "").await;
    assert_eq!(r.status, 200, "{}", r.raw);
    let seen = upstream.last();
    assert_eq!(seen.header("x-forwarded-for"), Some("127.0.0.1"));
    assert_eq!(seen.header("x-forwarded-host"), Some("airlock.test"));
    assert_eq!(seen.header("x-forwarded-proto"), Some("http"));
    assert_eq!(seen.header("forwarded"), None);
    assert_eq!(seen.header("x-real-ip"), None);
    let count = |n: &str| seen.headers.iter().filter(|(k, _)| k == n).count();
    assert_eq!(count("x-forwarded-for"), 1);
}

// === Paths ===

#[tokio::test]
async fn a_dot_segment_with_parameters_is_refused() {
    let (upstream, airlock) = rest().await;
    // Tomcat, Jetty and Spring read these as `/crm/admin`.
    for path in [
        "/crm/x/..;/admin",
        "/crm/x/.;/../admin",
        "/crm/x/%2e%2e;/admin",
    ] {
        let r = send(&airlock, "GET", path, &[], "").await;
        assert_eq!((r.status, r.error()), (400, "path_params"), "{path}");
    }
    // Even where parameters are allowed.
    let r = send(&airlock, "GET", "/legacy/x/..;/admin", &[], "").await;
    assert_eq!((r.status, r.error()), (400, "path_params"));
    assert_eq!(upstream.hits(), 0);
}

#[tokio::test]
async fn path_parameters_are_refused_by_default() {
    let (upstream, airlock) = rest().await;
    let r = send(&airlock, "GET", "/crm/admin;jsessionid=1", &[], "").await;
    assert_eq!((r.status, r.error()), (400, "path_params"), "{}", r.raw);
    let rec = airlock.audit_for(&r.request_id());
    assert_eq!(rec["route"], "crm");
    assert_eq!(rec["path"], "/crm/admin;jsessionid=1");
    let r = send(&airlock, "GET", "/crm/reports;v=2/x", &[], "").await;
    assert_eq!((r.status, r.error()), (400, "path_params"));
    assert_eq!(upstream.hits(), 0);
}

#[tokio::test]
async fn an_encoded_semicolon_is_data_for_the_policy_and_stays_encoded_upstream() {
    let (upstream, airlock) = rest().await;
    let r = send(&airlock, "GET", "/crm/report%3Bjsessionid=1", &[], "").await;
    assert_eq!(r.status, 200, "{}", r.raw);
    let rec = airlock.audit_for(&r.request_id());
    assert_eq!(rec["path"], "/crm/report;jsessionid=1");
    // Never a live `;` that a servlet container would cut off.
    assert_eq!(upstream.last().path, "/api/report%3Bjsessionid=1");
    // It does not hide the admin pages from the policy either.
    let r = send(&airlock, "GET", "/crm/admin%3Bx", &[], "").await;
    assert_eq!((r.status, r.error()), (403, "denied"));
    assert_eq!(upstream.hits(), 1);
}

#[tokio::test]
async fn encoded_equals_and_commas_are_re_encoded_for_the_upstream() {
    let (upstream, airlock) = rest().await;
    let r = send(&airlock, "GET", "/crm/a%3Db%2Cc/d=e,f", &[], "").await;
    assert_eq!(r.status, 200, "{}", r.raw);
    let rec = airlock.audit_for(&r.request_id());
    assert_eq!(rec["path"], "/crm/a=b,c/d=e,f");
    assert_eq!(upstream.last().path, "/api/a%3Db%2Cc/d=e,f");
}

#[tokio::test]
async fn a_case_insensitive_route_folds_the_path_for_the_policy_and_the_upstream() {
    let (upstream, airlock) = rest_with("    case_insensitive: true\n").await;
    let r = send(&airlock, "GET", "/OPS/Items/ABC", &[], "").await;
    assert_eq!(r.status, 200, "{}", r.raw);
    let rec = airlock.audit_for(&r.request_id());
    assert_eq!(rec["route"], "ops");
    assert_eq!(rec["path"], "/ops/items/abc");
    assert_eq!(upstream.last().path, "/up/items/abc");
    // The other routes still compare case exactly.
    let r = send(&airlock, "GET", "/CRM/admin", &[], "").await;
    assert_eq!((r.status, r.error()), (404, "no_route"));
    assert_eq!(upstream.hits(), 1);
}

#[tokio::test]
async fn a_route_that_allows_path_parameters_shows_them_to_the_policy() {
    let (upstream, airlock) = rest().await;
    let r = send(&airlock, "GET", "/legacy/doc;v=2/page", &[], "").await;
    assert_eq!(r.status, 200, "{}", r.raw);
    let rec = airlock.audit_for(&r.request_id());
    assert_eq!(rec["path"], "/legacy/doc;v=2/page");
    assert_eq!(upstream.last().path, "/old/doc;v=2/page");
}

// === MCP transport ===

#[tokio::test]
async fn a_tool_call_body_rides_on_no_method_but_post() {
    let (upstream, airlock) = mcp_with("").await;
    let headers = [JSON, ACCEPT];
    let r = send(&airlock, "GET", "/mcp", &headers, DROP_CALL).await;
    assert_eq!(
        (r.status, r.error()),
        (400, "mcp_body_not_post"),
        "{}",
        r.raw
    );
    let rec = airlock.audit_for(&r.request_id());
    assert_eq!(rec["verdict"], "error", "never judged as `protocol`");
    for method in ["PUT", "post", "PATCH"] {
        let r = send(&airlock, method, "/mcp", &headers, DROP_CALL).await;
        assert_eq!((r.status, r.error()), (405, "method_refused"), "{method}");
    }
    assert_eq!(upstream.hits(), 0);
    // The POST itself is judged: the tool is denied.
    let r = send(&airlock, "POST", "/mcp", &headers, DROP_CALL).await;
    assert_eq!(r.status, 200, "{}", r.raw);
    assert_eq!(r.body["result"]["isError"], true);
    // A GET without a body is the event stream, and passes.
    let r = send(&airlock, "GET", "/mcp", &[ACCEPT], "").await;
    assert_eq!(r.status, 200, "{}", r.raw);
    assert_eq!(upstream.last().method, "GET");
    assert!(upstream.last().body.is_empty());
}

#[tokio::test]
async fn a_repeated_mcp_method_or_name_header_is_refused() {
    let (upstream, airlock) = mcp_with("").await;
    let call = r#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"search","arguments":{}}}"#;
    for repeated in [
        [("Mcp-Method", "tools/call"), ("Mcp-Method", "tools/list")],
        [("Mcp-Name", "search"), ("Mcp-Name", "drop")],
    ] {
        let mut headers = vec![JSON, ACCEPT];
        headers.extend(repeated);
        if repeated[0].0 == "Mcp-Name" {
            headers.push(("Mcp-Method", "tools/call"));
        } else {
            headers.push(("Mcp-Name", "search"));
        }
        let r = send(&airlock, "POST", "/mcp", &headers, call).await;
        assert_eq!(r.status, 400, "{}", r.raw);
        assert_eq!(r.body["error"]["code"], -32020);
        assert_eq!(r.body["id"], 7);
        let name = repeated[0].0;
        let message = r.body["error"]["message"].as_str().unwrap();
        assert!(
            message.contains(&format!("`{name}` is repeated")),
            "{message}"
        );
        let rec = airlock.audit_for(&r.request_id());
        assert_eq!(rec["error"], "mcp_header_mismatch");
    }
    assert_eq!(upstream.hits(), 0);
}

#[tokio::test]
async fn a_method_that_only_folds_to_a_known_one_is_refused() {
    let (upstream, airlock) = mcp_with("").await;
    let body = json!({"jsonrpc": "2.0", "id": 3, "method": "Tools/call",
        "params": {"name": "drop", "arguments": {}}})
    .to_string();
    let r = send(&airlock, "POST", "/mcp", &[JSON, ACCEPT], &body).await;
    assert_eq!(r.status, 400, "{}", r.raw);
    assert_eq!(r.body["error"]["code"], -32600);
    assert_eq!(r.body["id"], 3);
    let rec = airlock.audit_for(&r.request_id());
    assert_eq!(rec["error"], "mcp_method_case");
    assert_eq!(rec["action"], Value::Null, "never judged as `other_method`");
    assert_eq!(upstream.hits(), 0);
}

#[tokio::test]
async fn an_origin_the_route_does_not_allow_is_refused() {
    let ping = r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#;
    let evil = ("Origin", "http://evil.example");
    let (upstream, airlock) = mcp_with("").await;
    let r = send(&airlock, "POST", "/mcp", &[JSON, ACCEPT, evil], ping).await;
    assert_eq!(
        (r.status, r.error()),
        (403, "origin_not_allowed"),
        "{}",
        r.raw
    );
    let rec = airlock.audit_for(&r.request_id());
    assert_eq!(rec["error"], "origin_not_allowed");
    assert_eq!(rec["fault"], "agent");
    let r = send(&airlock, "GET", "/mcp", &[ACCEPT, evil], "").await;
    assert_eq!(r.status, 403);
    assert_eq!(upstream.hits(), 0);
    // Without an Origin (a non-browser client), the call passes.
    let r = send(&airlock, "POST", "/mcp", &[JSON, ACCEPT], ping).await;
    assert_eq!(r.status, 200, "{}", r.raw);
    assert_eq!(upstream.hits(), 1);
}

#[tokio::test]
async fn an_allowed_origin_passes() {
    let ping = r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#;
    let (upstream, airlock) = mcp_with("    allowed_origins: [\"http://app.example\"]\n").await;
    let app = ("Origin", "http://app.example");
    let r = send(&airlock, "POST", "/mcp", &[JSON, ACCEPT, app], ping).await;
    assert_eq!(r.status, 200, "{}", r.raw);
    assert_eq!(upstream.last().header("origin"), Some("http://app.example"));
    let other = ("Origin", "http://app.example.evil");
    let r = send(&airlock, "POST", "/mcp", &[JSON, ACCEPT, other], ping).await;
    assert_eq!((r.status, r.error()), (403, "origin_not_allowed"));
    assert_eq!(upstream.hits(), 1);
}
