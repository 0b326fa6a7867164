//! Escalation on low confidence: the agent's stated confidence and reason
//! reach the policies, refuse the call when malformed, and are shown to
//! the approver of a held call.

use serde_json::{json, Value};

use crate::approvals::{env_with, show, Env};
use crate::support::*;

const ESCALATION_POLICIES: &str = include_str!("../../policies/escalation.cedar");

async fn refund_with(airlock: &Airlock, headers: &[(&str, &str)]) -> (u16, Value, String) {
    refund_of(airlock, 40, headers).await
}

async fn refund_of(
    airlock: &Airlock,
    amount: u32,
    headers: &[(&str, &str)],
) -> (u16, Value, String) {
    let mut req = crate::approvals::refund(airlock, json!({"amount": amount, "currency": "EUR"}));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let request_id = resp.headers()["x-request-id"].to_str().unwrap().to_string();
    (status, resp.json().await.unwrap_or(Value::Null), request_id)
}

#[tokio::test]
async fn confidence_at_the_bounds_missing_and_malformed_on_a_rest_write() {
    let Env {
        upstream,
        hooks,
        airlock,
    } = env_with("1s", Some(("escalation.cedar", ESCALATION_POLICIES))).await;

    for sure in ["0.7", "0.70", "0.9999", "1", "1.0000"] {
        let (status, body, _) = refund_with(&airlock, &[("airlock-confidence", sure)]).await;
        assert_eq!(status, 200, "confidence {sure}: {body}");
    }
    assert_eq!(upstream.hits(), 5);

    for unsure in ["0", "0.6999", "0.0"] {
        let (status, body, _) = refund_with(&airlock, &[("airlock-confidence", unsure)]).await;
        assert_eq!(status, 202, "confidence {unsure}: {body}");
    }
    let (status, body, _) = refund_with(&airlock, &[]).await;
    assert_eq!(status, 202, "no confidence: {body}");
    assert_eq!(upstream.hits(), 5, "a held call reaches nobody");

    let long = "r".repeat(1025);
    for (name, value) in [
        ("airlock-confidence", "1.0001"),
        ("airlock-confidence", "-0.1"),
        ("airlock-confidence", "0.12345"),
        ("airlock-confidence", "high"),
        ("airlock-confidence", ""),
        ("airlock-reason", long.as_str()),
    ] {
        let (status, body, request_id) = refund_with(&airlock, &[(name, value)]).await;
        assert_eq!(status, 400, "{name}: {value}: {body}");
        assert_eq!(body["error"], "invalid_confidence", "{body}");
        let rec = airlock.audit_for(&request_id);
        assert_eq!(rec["error"], "invalid_confidence", "{rec}");
    }
    assert_eq!(upstream.hits(), 5);

    // The approver sees what the agent said, in the API and the webhook
    // (another amount: an identical call would attach to the first hold).
    let (status, body, _) = refund_of(
        &airlock,
        41,
        &[
            ("airlock-confidence", "0.63"),
            ("airlock-reason", "the customer says the parcel never came"),
        ],
    )
    .await;
    assert_eq!(status, 202, "{body}");
    let id = body["approval_id"].as_str().unwrap().to_string();
    let shown = show(&airlock, &id).await;
    assert_eq!(shown["confidence"], json!(0.63), "{shown}");
    assert_eq!(
        shown["agent_reason"], "the customer says the parcel never came",
        "{shown}"
    );
    let hook = hooks.wait_event("approval.requested", &id).await;
    let data = &hook.json()["data"];
    assert_eq!(data["confidence"], json!(0.63), "{data}");
    assert_eq!(
        data["agent_reason"],
        "the customer says the parcel never came"
    );

    let out = std::process::Command::new(airlock_bin())
        .args(["approvals", "--admin", &airlock.admin_url(""), "show", &id])
        .env("AIRLOCK_TOKEN", ADMIN_TOKEN)
        .output()
        .unwrap();
    let (code, err) = (out.status.code(), String::from_utf8_lossy(&out.stderr));
    let out = String::from_utf8_lossy(&out.stdout);
    assert_eq!(code, Some(0), "{out}\n{err}");
    assert!(out.contains("\"confidence\": 0.63"), "{out}");

    // A sure but large refund is held by the refund gate alone; once
    // approved it runs, judged again with the confidence it was sent with.
    let sure = [("airlock-confidence", "0.9")];
    let (status, body, _) = refund_of(&airlock, 250, &sure).await;
    assert_eq!(status, 202, "{body}");
    let id = body["approval_id"].as_str().unwrap().to_string();
    let shown = show(&airlock, &id).await;
    assert_eq!(shown["gates"].as_array().map(Vec::len), Some(1), "{shown}");
    let (status, v) = crate::approvals::decide(
        &airlock,
        &id,
        APPROVER_TOKEN,
        json!({"decision": "approve"}),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    let hits = upstream.hits();
    let (status, body, _) = refund_of(&airlock, 250, &sure).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(upstream.hits(), hits + 1);
}

/// Holds `call_tool` unless the agent is at least 0.7 sure.
const MCP_POLICIES: &str = r#"
@id("mcp-open")
permit (principal, action in Action::"mcp", resource);

@id("unsure-tool-calls")
@reason("state a confidence of at least 0.7")
forbid (principal, action == Action::"call_tool", resource)
unless { context has confidence && context.confidence.greaterThanOrEqual(decimal("0.7")) };
"#;

async fn tool_call(
    airlock: &Airlock,
    meta: Value,
    headers: &[(&str, &str)],
) -> (u16, Value, Value) {
    let body = json!({"jsonrpc": "2.0", "id": 9, "method": "tools/call",
        "params": {"name": "issue_refund", "arguments": {"amount": 5}, "_meta": meta}});
    let mut req = client()
        .post(airlock.url("/mcp/crm"))
        .header("authorization", bearer(AGENT_KEY))
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .body(body.to_string());
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let request_id = resp.headers()["x-request-id"].to_str().unwrap().to_string();
    let answer = resp.json().await.unwrap_or(Value::Null);
    (status, answer, airlock.audit_for(&request_id))
}

#[tokio::test]
async fn confidence_in_mcp_meta_is_judged_and_must_agree_with_the_header() {
    let upstream = Upstream::start().await;
    let airlock = AirlockBuilder::new()
        .policy("mcp.cedar", MCP_POLICIES)
        .route_yaml(&format!(
            "  - name: crm\n    prefix: /mcp/crm\n    upstream: {}\n    protocol: mcp",
            upstream.url("/mcp")
        ))
        .start();

    let (_, answer, rec) = tool_call(&airlock, json!({"airlock.dev/confidence": 0.7}), &[]).await;
    assert_eq!(rec["verdict"], "allow", "{answer} {rec}");
    let (_, answer, rec) = tool_call(&airlock, json!({"airlock.dev/confidence": 1}), &[]).await;
    assert_eq!(rec["verdict"], "allow", "{answer} {rec}");
    let (_, answer, rec) = tool_call(&airlock, json!({}), &[("airlock-confidence", "0.8")]).await;
    assert_eq!(rec["verdict"], "allow", "{answer} {rec}");
    let hits = upstream.hits();

    let (status, answer, rec) =
        tool_call(&airlock, json!({"airlock.dev/confidence": 0.69}), &[]).await;
    assert_eq!(
        (status, &answer["result"]["isError"]),
        (200, &json!(true)),
        "{answer}"
    );
    assert_eq!(rec["verdict"], "deny", "{rec}");
    let (_, answer, rec) = tool_call(&airlock, json!({}), &[]).await;
    assert_eq!(rec["verdict"], "deny", "{answer} {rec}");

    // Refused, whatever the policies: out of range, not a number, too long,
    // or a header and `_meta` that disagree.
    let long = "r".repeat(1025);
    for (meta, headers) in [
        (json!({"airlock.dev/confidence": 1.5}), vec![]),
        (json!({"airlock.dev/confidence": "0.9"}), vec![]),
        (json!({"airlock.dev/confidence": 0.12345}), vec![]),
        (json!({"airlock.dev/reason": long}), vec![]),
        (
            json!({"airlock.dev/confidence": 0.9}),
            vec![("airlock-confidence", "0.8")],
        ),
        (
            json!({"airlock.dev/reason": "a"}),
            vec![("airlock-reason", "b")],
        ),
        (json!({}), vec![("airlock-confidence", "2")]),
    ] {
        let (status, answer, rec) = tool_call(&airlock, meta.clone(), &headers).await;
        assert_eq!(status, 400, "{meta} {headers:?}: {answer}");
        assert_eq!(answer["error"]["code"], -32602, "{answer}");
        assert_eq!(rec["error"], "invalid_confidence", "{rec}");
    }
    // Agreeing values are one value.
    let (_, answer, rec) = tool_call(
        &airlock,
        json!({"airlock.dev/confidence": 0.90}),
        &[("airlock-confidence", "0.9")],
    )
    .await;
    assert_eq!(rec["verdict"], "allow", "{answer} {rec}");
    assert_eq!(upstream.hits(), hits + 1);
}
