//! The policy judges exactly the body, keys and query names the tool will
//! read: every body that common servers could read as a refund of 500 is
//! either judged as one (and held) or refused, and the tool never gets it.

use serde_json::{json, Value};

use crate::support::*;

const CRM_POLICIES: &str = include_str!("../../policies/crm.cedar");
const MCP_POLICIES: &str = include_str!("../../policies/mcp.cedar");
const TOOLS_SCHEMA: &str = include_str!("../../policies/tools.cedarschema");

/// `{"amount":500,"customer_id":"c-1"}`, gzipped.
const GZIPPED_REFUND: &[u8] = &[
    31, 139, 8, 0, 0, 0, 0, 0, 2, 3, 171, 86, 74, 204, 205, 47, 205, 43, 81, 178, 50, 53, 48, 208,
    81, 74, 46, 45, 46, 201, 207, 77, 45, 138, 207, 76, 81, 178, 82, 74, 214, 53, 84, 170, 5, 0,
    62, 250, 119, 14, 34, 0, 0, 0,
];

/// The CRM policies on route `crm`, and the shipped MCP policies and tools
/// on route `crm-mcp`, both in front of one recording upstream.
async fn crm(opaque_bodies: bool) -> (Upstream, Airlock) {
    let upstream = Upstream::start().await;
    let airlock = AirlockBuilder::new()
        .policy("crm.cedar", CRM_POLICIES)
        .policy("mcp.cedar", MCP_POLICIES)
        .policy("tools.cedarschema", TOOLS_SCHEMA)
        .route_yaml(&format!(
            "  - name: crm\n    prefix: /crm\n    upstream: {}\n    opaque_bodies: {opaque_bodies}",
            upstream.url("/api")
        ))
        .route_yaml(&format!(
            "  - name: crm-mcp\n    prefix: /mcp/crm\n    upstream: {}\n    protocol: mcp",
            upstream.url("/mcp")
        ))
        .yaml("approvals:\n  wait: 1s\n")
        .start();
    (upstream, airlock)
}

/// What the agent heard and what the policy saw (the audit record).
struct Outcome {
    status: u16,
    body: Value,
    record: Value,
}

async fn send(airlock: &Airlock, req: reqwest::RequestBuilder) -> Outcome {
    let resp = req
        .header("authorization", bearer(AGENT_KEY))
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let id = resp.headers()["x-request-id"].to_str().unwrap().to_string();
    let body = resp.json().await.unwrap_or(Value::Null);
    Outcome {
        status,
        body,
        record: airlock.audit_for(&id),
    }
}

/// A refund POST with these headers and body.
async fn refund(airlock: &Airlock, headers: &[(&str, &str)], body: impl Into<Vec<u8>>) -> Outcome {
    let mut req = client().post(airlock.url("/crm/refunds"));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    send(airlock, req.body(body.into())).await
}

fn assert_refused(o: &Outcome, status: u16, kind: &str) {
    assert_eq!(o.status, status, "{}", o.body);
    assert_eq!(o.body["error"], kind, "{}", o.body);
    assert_eq!(o.record["verdict"], "error", "{}", o.record);
    assert_eq!(o.record["error"], kind, "{}", o.record);
}

fn assert_held(o: &Outcome) {
    assert_eq!(o.status, 202, "{}", o.body);
    assert_eq!(o.record["verdict"], "hold", "{}", o.record);
    assert_eq!(
        o.record["policies"],
        json!(["large-refunds-need-approval"]),
        "{}",
        o.record
    );
}

type Header = (&'static str, &'static str);

const FORM: (&str, &str) = ("content-type", "application/x-www-form-urlencoded");
const JSON: (&str, &str) = ("content-type", "application/json");
const TEXT: (&str, &str) = ("content-type", "text/plain");

#[tokio::test]
async fn a_form_body_is_read_and_a_refund_in_one_is_held() {
    let (upstream, airlock) = crm(false).await;
    let o = refund(&airlock, &[FORM], "amount=500&customer_id=c-1").await;
    assert_held(&o);
    assert_eq!(upstream.hits(), 0);
}

#[tokio::test]
async fn a_json_and_form_polyglot_sent_as_a_form_is_read_as_the_form_it_is() {
    let (upstream, airlock) = crm(false).await;
    // JSON reads 50; a form parser reads `amount=500`.
    let polyglot = r#"{"amount":50,"customer_id":"c-1","memo":"&amount=500&x="}"#;
    let o = refund(&airlock, &[FORM], polyglot).await;
    assert_held(&o);
    assert_eq!(upstream.hits(), 0);
}

#[tokio::test]
async fn a_repeated_form_field_is_refused() {
    let (upstream, airlock) = crm(false).await;
    let o = refund(&airlock, &[FORM], "amount=50&amount=500").await;
    assert_refused(&o, 400, "ambiguous_form");
    let o = refund(&airlock, &[FORM], "amount=50&AMOUNT=500").await;
    assert_refused(&o, 400, "ambiguous_form");
    // PHP's `$_REQUEST`, Flask's `request.values` and Rails' `params`
    // merge the query and the form, and disagree on which one wins.
    let req = client()
        .post(airlock.url("/crm/refunds?amount=500"))
        .header(FORM.0, FORM.1)
        .body("amount=50&customer_id=c-1");
    let o = send(&airlock, req).await;
    assert_refused(&o, 400, "ambiguous_form");
    assert_eq!(upstream.hits(), 0);
}

#[tokio::test]
async fn bodies_that_cannot_be_read_one_way_are_refused_unread() {
    let (upstream, airlock) = crm(false).await;
    let multipart =
        "--x\r\ncontent-disposition: form-data; name=\"amount\"\r\n\r\n500\r\n--x--\r\n";
    let bom_json = b"\xef\xbb\xbf{\"amount\":500,\"customer_id\":\"c-1\"}".to_vec();
    let utf16: Vec<u8> =
        r#"{"amount":500,"customer_id":"c-1"}"#.encode_utf16().flat_map(u16::to_le_bytes).collect();
    let cases: Vec<(&str, Vec<Header>, Vec<u8>)> = vec![
        (
            "multipart",
            vec![("content-type", "multipart/form-data; boundary=x")],
            multipart.into(),
        ),
        (
            "gzip without a content type",
            vec![("content-encoding", "gzip")],
            GZIPPED_REFUND.to_vec(),
        ),
        (
            "gzip declared as JSON",
            vec![JSON, ("content-encoding", "gzip")],
            GZIPPED_REFUND.to_vec(),
        ),
        ("JSON after a BOM, as text", vec![TEXT], bom_json.clone()),
        (
            "JSON after a BOM, two content types",
            vec![JSON, TEXT],
            bom_json,
        ),
        ("UTF-16 JSON, as text", vec![TEXT], utf16),
        (
            "JSON with two content types",
            vec![JSON, TEXT],
            br#"{"amount":500,"customer_id":"c-1"}"#.to_vec(),
        ),
        (
            "JSON without a content type",
            vec![],
            br#"{"amount":500,"customer_id":"c-1"}"#.to_vec(),
        ),
    ];
    for (what, headers, body) in cases {
        let o = refund(&airlock, &headers, body).await;
        assert_eq!(o.status, 415, "{what}: {}", o.body);
        assert_refused(&o, 415, "unsupported_body");
    }
    assert_eq!(upstream.hits(), 0, "an unjudged body reached the tool");
}

#[tokio::test]
async fn a_route_that_takes_opaque_bodies_forwards_none_the_gate_cannot_read() {
    let (upstream, airlock) = crm(true).await;
    let multipart =
        "--x\r\ncontent-disposition: form-data; name=\"amount\"\r\n\r\n500\r\n--x--\r\n";
    let o = refund(
        &airlock,
        &[("content-type", "multipart/form-data; boundary=x")],
        multipart,
    )
    .await;
    assert_held(&o);
    let o = refund(&airlock, &[("content-encoding", "gzip")], GZIPPED_REFUND).await;
    assert_held(&o);
    assert_eq!(upstream.hits(), 0);

    // A read that the policy permits whatever its body goes through, as is.
    let req = client()
        .get(airlock.url("/crm/customers"))
        .header("content-type", "application/octet-stream")
        .body(GZIPPED_REFUND);
    let o = send(&airlock, req).await;
    assert_eq!(o.status, 200, "{}", o.body);
    assert_eq!(upstream.last().body, GZIPPED_REFUND);
}

#[tokio::test]
async fn json_keys_that_differ_only_in_case_are_refused() {
    let (upstream, airlock) = crm(false).await;
    for body in [
        r#"{"amount":50,"customer_id":"c-1","AMOUNT":500}"#,
        r#"{"amount":50,"customer_id":"c-1","\u0041mount":500}"#,
        r#"{"amount":50,"customer_id":"c-1","meta":{"kind":"a","Kind":"b"}}"#,
        // K (U+212A, Kelvin) folds to k.
        "{\"amount\":50,\"customer_id\":\"c-1\",\"meta\":{\"kind\":\"a\",\"\u{212a}ind\":\"b\"}}",
    ] {
        let o = refund(&airlock, &[JSON], body).await;
        assert_refused(&o, 400, "duplicate_json_key");
    }
    assert_eq!(upstream.hits(), 0);
}

#[tokio::test]
async fn a_lone_key_that_reads_as_a_declared_name_is_refused() {
    let (upstream, airlock) = crm(false).await;
    for body in [
        r#"{"Amount":500,"customer_id":"c-1"}"#,
        r#"{"AMOUNT":500,"customer_id":"c-1"}"#,
        // ſ (U+017F, long s) folds to s: Go reads `reaſon` as `reason`.
        "{\"amount\":50,\"customer_id\":\"c-1\",\"rea\u{17f}on\":\"x\"}",
    ] {
        let o = refund(&airlock, &[JSON], body).await;
        assert_refused(&o, 400, "ambiguous_json_key");
    }
    assert_eq!(upstream.hits(), 0);
}

#[tokio::test]
async fn query_names_that_collide_after_normalisation_are_refused() {
    let (upstream, airlock) = crm(false).await;
    for q in [
        "dry_run=false&dry.run=true",
        "dry_run=false&dry_run[]=true",
        "dry_run=false&DRY_RUN=true",
        "limit=5&LIMIT=500",
        // Alone, each of these is `dry_run` to PHP, Rails or ASP.NET.
        "dry.run=true",
        "DRY_RUN=true",
        "dry_run[]=true",
    ] {
        let req = client().get(airlock.url(&format!("/crm/customers?{q}")));
        let o = send(&airlock, req).await;
        assert_refused(&o, 400, "ambiguous_query");
    }
    assert_eq!(upstream.hits(), 0);
}

/// A `tools/call` of `issue_refund` with these arguments.
async fn mcp_refund(airlock: &Airlock, arguments: &str) -> Outcome {
    let body = format!(
        r#"{{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{{"name":"issue_refund","arguments":{arguments}}}}}"#
    );
    let req = client()
        .post(airlock.url("/mcp/crm"))
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .body(body);
    send(airlock, req).await
}

#[tokio::test]
async fn mcp_arguments_whose_keys_differ_only_in_case_are_refused() {
    let (upstream, airlock) = crm(false).await;
    for (arguments, code, kind) in [
        (
            r#"{"customer_id":"c-1","amount":50,"AMOUNT":500}"#,
            -32700,
            "invalid_jsonrpc",
        ),
        (
            "{\"customer_id\":\"c-1\",\"amount\":50,\"meta\":{\"k\":1,\"\u{212a}\":2}}",
            -32700,
            "invalid_jsonrpc",
        ),
        (
            r#"{"customer_id":"c-1","Amount":500}"#,
            -32602,
            "invalid_params",
        ),
    ] {
        let o = mcp_refund(&airlock, arguments).await;
        assert_eq!(o.status, 400, "{}", o.body);
        assert_eq!(o.body["error"]["code"], code, "{}", o.body);
        assert_eq!(o.record["error"], kind, "{}", o.record);
    }
    assert_eq!(upstream.hits(), 0);

    // The same call spelled as declared is judged: held, not forwarded.
    let o = mcp_refund(&airlock, r#"{"customer_id":"c-1","amount":500}"#).await;
    assert_eq!(o.record["verdict"], "hold", "{}", o.record);
    assert_eq!(upstream.hits(), 0);
}

#[tokio::test]
async fn an_mcp_message_is_read_only_as_the_json_it_declares() {
    let (upstream, airlock) = crm(false).await;
    let call = r#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"issue_refund","arguments":{"customer_id":"c-1","amount":500}}}"#;
    for headers in [
        vec![TEXT],
        vec![JSON, ("content-encoding", "gzip")],
        vec![JSON, TEXT],
    ] {
        let mut req = client()
            .post(airlock.url("/mcp/crm"))
            .header("accept", "application/json, text/event-stream");
        for (k, v) in &headers {
            req = req.header(*k, *v);
        }
        let o = send(&airlock, req.body(call)).await;
        assert_eq!(o.status, 415, "{headers:?}: {}", o.body);
        assert_eq!(o.body["error"]["code"], -32700, "{}", o.body);
        assert_eq!(o.record["error"], "unsupported_body", "{}", o.record);
    }
    // A DELETE is judged as transport, without a body: it may carry none.
    let req = client().delete(airlock.url("/mcp/crm")).body(call);
    let o = send(&airlock, req).await;
    assert_eq!(o.status, 400, "{}", o.body);
    assert_eq!(o.record["error"], "mcp_body_not_post", "{}", o.record);
    assert_eq!(upstream.hits(), 0);
}
