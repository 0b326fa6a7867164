//! MCP routes with real peers: the official Python SDK 2.x server and
//! client, and `@modelcontextprotocol/server-everything`, through the real
//! binary. Tool declarations come from the real `airlock schema pull`.

use serde_json::{json, Value};

use crate::support::mcp::{python_agent, python_client, ts_client, with_pulled_tools, McpServer};
use crate::support::*;

const POLICIES: &str = r#"
@id("crm-housekeeping")
permit (principal, action in [Action::"protocol", Action::"list_tools"], resource == Route::"crm");

@id("support-calls-crm-tools")
permit (principal in Group::"support", action in Action::"call_tool", resource in Route::"crm");

@id("large-refunds-held")
@hold("refunds over 100 need a human's approval")
forbid (principal, action == Action::"crm/issue_refund", resource)
when { context.arguments.amount > 100 };

@id("no-deletes")
@reason("agents may not delete customers; ask a human")
forbid (principal, action == Action::"crm/delete_customer", resource);
"#;

/// Airlock in front of the Python SDK server, with the tools pulled.
pub(crate) fn crm(server: &McpServer) -> Airlock {
    crm_with(server, "")
}

/// As [`crm`], with `extra` policies beside the usual ones.
fn crm_with(server: &McpServer, extra: &str) -> Airlock {
    let builder = AirlockBuilder::new()
        .policy("mcp.cedar", &format!("{POLICIES}\n{extra}"))
        .yaml("approvals:\n  wait: 1s");
    let builder = with_pulled_tools(builder, "crm", "/mcp/crm", server);
    let pulled = std::fs::read_to_string(builder.dir().join("policies/tools.cedarschema")).unwrap();
    assert!(
        pulled.contains("action \"crm/issue_refund\" in [\"call_tool\"]"),
        "{pulled}"
    );
    assert!(pulled.contains("\"amount\": Long"), "{pulled}");
    builder.start()
}

pub(crate) fn call<'a>(out: &'a Value, name: &str) -> &'a Value {
    out["calls"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no call {name} in {out}"))
}

#[tokio::test]
async fn python_sdk_client_on_the_newest_revision_sees_allow_deny_hold_and_a_filtered_list() {
    let server = McpServer::python();
    let airlock = crm(&server);
    let plan = json!({"mode": "auto", "calls": [
        {"name": "lookup_customer", "args": {"customer_id": "c-1"}},
        {"name": "delete_customer", "args": {"customer_id": "c-1"}},
        {"name": "issue_refund", "args": {"customer_id": "c-1", "amount": 500}},
    ]});
    let out = tokio::task::spawn_blocking({
        let url = airlock.url("/mcp/crm");
        move || python_client(&url, AGENT_KEY, &plan)
    })
    .await
    .unwrap();
    assert_eq!(out["protocol_version"], "2026-07-28", "{out}");
    assert_eq!(
        out["tools"],
        json!(["lookup_customer", "issue_refund", "count_slowly"]),
        "delete_customer must be hidden: {out}"
    );
    assert_eq!(out["cache_scope"], "private");

    let allowed = call(&out, "lookup_customer");
    assert_eq!(allowed["is_error"], false, "{out}");
    assert!(
        allowed["text"].as_str().unwrap().contains("Ada Lovelace"),
        "{out}"
    );

    let denied = call(&out, "delete_customer");
    assert_eq!(denied["is_error"], true, "{out}");
    let text = denied["text"].as_str().unwrap();
    assert!(
        text.contains("denied") && text.contains("agents may not delete customers"),
        "{text}"
    );

    let held = call(&out, "issue_refund");
    assert_eq!(held["is_error"], true, "{out}");
    let text = held["text"].as_str().unwrap();
    assert!(
        text.contains("awaits a human's approval") && text.contains("refunds over 100"),
        "{text}"
    );

    // Records are written off the request path: wait (bounded) for all three.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let records = loop {
        let records = airlock.audit();
        let tool_records = records
            .iter()
            .filter(|r| r["action"].as_str().is_some_and(|a| a.starts_with("crm/")))
            .count();
        if tool_records >= 3 || std::time::Instant::now() > deadline {
            break records;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let verdict_of = |tool: &str| {
        records
            .iter()
            .find(|r| r["resource"] == format!("Tool::\"crm/{tool}\""))
            .map(|r| r["verdict"].clone())
            .unwrap_or_else(|| panic!("no audit record for {tool}: {records:?}"))
    };
    assert_eq!(verdict_of("lookup_customer"), "allow");
    assert_eq!(verdict_of("delete_customer"), "deny");
    assert_eq!(verdict_of("issue_refund"), "hold");
}

#[tokio::test]
async fn a_small_refund_passes_and_a_streaming_tool_streams_on_the_handshake_revision() {
    let server = McpServer::python();
    let airlock = crm(&server);
    let plan = json!({"mode": "legacy", "calls": [
        {"name": "issue_refund", "args": {"customer_id": "c-2", "amount": 50}},
        {"name": "count_slowly", "args": {"n": 4, "gap_ms": 400}, "progress": true},
    ]});
    let out = tokio::task::spawn_blocking({
        let url = airlock.url("/mcp/crm");
        move || python_client(&url, AGENT_KEY, &plan)
    })
    .await
    .unwrap();
    assert_ne!(
        out["protocol_version"], "2026-07-28",
        "legacy mode uses initialize: {out}"
    );
    let refund = call(&out, "issue_refund");
    assert_eq!(refund["is_error"], false, "{out}");
    assert_eq!(refund["text"], "refunded 50 to c-2");

    let counted = call(&out, "count_slowly");
    assert_eq!(counted["text"], "counted to 4", "{out}");
    let progress = counted["progress"].as_array().unwrap();
    assert_eq!(progress.len(), 4, "{out}");
    // Buffered, every event would arrive with the result; streamed, the
    // first arrives about three gaps before the last.
    let first = progress[0]["at"].as_f64().unwrap();
    let last = progress[3]["at"].as_f64().unwrap();
    assert!(
        last - first > 0.8,
        "progress arrived in one lump: {progress:?}"
    );
}

/// POSTs a raw body to the MCP route as the agent.
async fn post(airlock: &Airlock, body: &str, headers: &[(&str, &str)]) -> (u16, Value, String) {
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
    (status, resp.json().await.unwrap_or(Value::Null), request_id)
}

#[tokio::test]
async fn malformed_json_rpc_headers_that_disagree_and_mixed_batches_are_refused() {
    let server = McpServer::python();
    let airlock = crm(&server);

    let (status, body, request_id) = post(
        &airlock,
        "{\"jsonrpc\": \"2.0\", \"id\": 1, \"method\":",
        &[],
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["code"], -32700, "{body}");
    let rec = airlock.audit_for(&request_id);
    assert_eq!(
        (&rec["error"], &rec["fault"]),
        (&json!("invalid_jsonrpc"), &json!("agent")),
        "{rec}"
    );

    let (status, body, _) =
        post(&airlock, r#"{"jsonrpc":"1.0","id":7,"method":"ping"}"#, &[]).await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["code"], -32600, "{body}");
    assert_eq!(body["id"], 7);

    // The header names an allowed tool, the body a forbidden one.
    let smuggle = r#"{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"delete_customer","arguments":{"customer_id":"c-1"}}}"#;
    let (status, body, _) = post(
        &airlock,
        smuggle,
        &[
            ("mcp-method", "tools/call"),
            ("mcp-name", "lookup_customer"),
        ],
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["code"], -32020, "{body}");
    assert_eq!(body["id"], 3);

    let batch = r#"[
        {"jsonrpc":"2.0","id":"a","method":"tools/call","params":{"name":"lookup_customer","arguments":{"customer_id":"c-1"}}},
        {"jsonrpc":"2.0","id":"b","method":"tools/call","params":{"name":"issue_refund","arguments":{"customer_id":"c-1","amount":1000}}}
    ]"#;
    let (status, body, request_id) = post(&airlock, batch, &[]).await;
    assert_eq!(status, 200);
    let answers = body.as_array().unwrap_or_else(|| panic!("{body}"));
    let by_id = |id: &str| answers.iter().find(|a| a["id"] == id).unwrap().clone();
    assert_eq!(by_id("a")["error"]["code"], -32003, "{body}");
    assert_eq!(by_id("b")["result"]["isError"], true, "{body}");
    let batch_rec = airlock.audit_for(&request_id);
    assert!(
        batch_rec["action"].as_str().unwrap().starts_with("batch["),
        "{batch_rec}"
    );
    assert_eq!(batch_rec["verdict"], "hold");
    assert!(
        batch_rec["upstream_status"].is_null(),
        "nothing of the batch may be forwarded"
    );
}

#[tokio::test]
async fn one_policy_over_the_common_context_judges_every_mcp_message() {
    let server = McpServer::python();
    let airlock = crm_with(
        &server,
        r#"
@id("no-scrapers")
@reason("scrapers are not agents")
forbid (principal, action, resource in Route::"crm")
when { context.headers has "user-agent" && context.headers["user-agent"] like "*scraper*" };

@id("no-posted-pings")
@reason("ping over the stream only")
forbid (principal, action == Action::"protocol", resource)
when { context.method == "POST" && context has rpc_method && context.rpc_method == "ping" };
"#,
    );
    let lookup = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"lookup_customer","arguments":{"customer_id":"c-1"}}}"#;

    // Allowed and forwarded (the server wants a session first, and says
    // so: what matters here is that Airlock let it through).
    let (_, _, request_id) = post(&airlock, lookup, &[("user-agent", "ok-agent/1")]).await;
    let rec = airlock.audit_for(&request_id);
    assert_eq!(rec["verdict"], "allow", "{rec}");
    assert!(rec["upstream_status"].is_u64(), "{rec}");

    // A tool call (resource `Tool`) and a route-level message alike carry
    // the request's headers.
    let (_, body, request_id) = post(&airlock, lookup, &[("user-agent", "scraper/2")]).await;
    let rec = airlock.audit_for(&request_id);
    assert_eq!(rec["verdict"], "deny", "{rec}\n{body}");
    assert_eq!(rec["policies"], json!(["no-scrapers"]), "{rec}");
    assert_eq!(rec["fault"], "policy", "{rec}");
    assert!(rec["upstream_status"].is_null(), "{rec}");

    let ping = r#"{"jsonrpc":"2.0","id":2,"method":"ping"}"#;
    let (_, _, request_id) = post(&airlock, ping, &[("user-agent", "ok-agent/1")]).await;
    let rec = airlock.audit_for(&request_id);
    assert_eq!(rec["verdict"], "deny", "{rec}");
    assert_eq!(rec["policies"], json!(["no-posted-pings"]), "{rec}");
}

#[tokio::test]
async fn the_sdk_client_shows_why_a_key_or_the_server_failed() {
    let server = McpServer::python();
    let airlock = crm(&server);
    let plan = json!({"calls": []});

    let out = python_client(&airlock.url("/mcp/crm"), "not-a-key", &plan);
    let error = out["session_error"]
        .as_str()
        .unwrap_or_else(|| panic!("{out}"));
    assert!(error.contains("missing or unknown agent key"), "{error}");

    // The same refusal on the wire: the REST status, a JSON-RPC error.
    let resp = client()
        .post(airlock.url("/mcp/crm"))
        .header("authorization", bearer("not-a-key"))
        .header("content-type", "application/json")
        .body(r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    assert_eq!(resp.headers()["www-authenticate"], "Bearer");
    let request_id = resp.headers()["x-request-id"].to_str().unwrap().to_string();
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["jsonrpc"], "2.0", "{body}");
    assert_eq!(body["error"]["code"], -32004, "{body}");
    assert_eq!(body["error"]["data"]["error"], "unauthenticated", "{body}");
    assert_eq!(body["error"]["data"]["requestId"], request_id.as_str());
    let rec = airlock.audit_for(&request_id);
    assert_eq!(rec["fault"], "agent", "{rec}");

    // The server goes away: the client hears which route failed.
    drop(server);
    let out = python_client(&airlock.url("/mcp/crm"), AGENT_KEY, &plan);
    let error = out["session_error"]
        .as_str()
        .unwrap_or_else(|| panic!("{out}"));
    assert!(error.contains("upstream `crm` is unreachable"), "{error}");
}

#[tokio::test]
async fn explain_shows_the_argument_gate_and_why_a_tool_is_hidden() {
    let server = McpServer::python();
    let airlock = crm(&server);
    let config = airlock.config.to_str().unwrap().to_string();
    let explain = |tool: &str, args: &str| {
        let (code, out, err) = run_cli(&[
            "explain", "--config", &config, "--agent", "bot", "--tool", tool, "--args", args,
        ]);
        assert_eq!(code, 0, "{out}\n{err}");
        serde_json::from_str::<Value>(&out).unwrap()
    };
    let small = explain("crm/issue_refund", r#"{"customer_id":"c","amount":5}"#);
    assert_eq!(small["verdict"], "allow", "{small}");
    assert_eq!(small["action"], "Action::\"crm/issue_refund\"");
    let large = explain("crm/issue_refund", r#"{"customer_id":"c","amount":500}"#);
    assert_eq!(large["verdict"], "hold", "{large}");
    assert_eq!(large["listed"]["visible"], true);
    let delete = explain("crm/delete_customer", "{}");
    assert_eq!(delete["listed"]["visible"], false, "{delete}");
    assert!(
        delete["listed"]["reason"]
            .as_str()
            .unwrap()
            .contains("agents may not delete"),
        "{delete}"
    );
}

#[tokio::test]
async fn check_refuses_a_policy_over_a_missing_or_mistyped_argument() {
    let server = McpServer::python();
    let airlock = crm(&server);
    let config = airlock.config.to_str().unwrap().to_string();
    let pol = airlock.dir.path().join("policies/bad.cedar");
    for (bad, why) in [
        ("forbid (principal, action == Action::\"crm/issue_refund\", resource) when { context.arguments.amout > 100 };", "missing"),
        ("forbid (principal, action == Action::\"crm/issue_refund\", resource) when { context.arguments.amount == \"100\" };", "mistyped"),
    ] {
        std::fs::write(&pol, bad).unwrap();
        let (code, out, _) = run_cli(&["check", "--config", &config]);
        assert_eq!(code, 1, "{why} argument not caught: {out}");
        assert!(out.contains("bad.cedar:1:"), "{out}");
    }
}

#[tokio::test]
async fn server_everything_through_airlock_lists_calls_and_streams() {
    let server = McpServer::everything();
    let policies = r#"
permit (principal, action in [Action::"protocol", Action::"list_tools"], resource == Route::"everything");
permit (principal in Group::"support", action in Action::"call_tool", resource in Route::"everything");
@reason("the environment holds secrets")
forbid (principal, action == Action::"everything/get-env", resource);
@reason("sums over 1000 are not for agents")
forbid (principal, action == Action::"everything/get-sum", resource)
when { context.arguments.a.greaterThan(decimal("1000.0")) };
"#;
    let builder = AirlockBuilder::new()
        .policy("mcp.cedar", policies)
        .route_yaml(&format!(
        "  - name: everything\n    prefix: /mcp/everything\n    upstream: {}\n    protocol: mcp",
        server.url()
    ));
    let config = builder.write();
    let (code, out, err) = run_cli(&["schema", "pull", "--config", config.to_str().unwrap()]);
    assert_eq!(code, 0, "schema pull failed: {out}\n{err}");
    // server-everything registers some tools only for clients that declare
    // sampling, elicitation or roots: they are declared all the same, and
    // named.
    let pulled = std::fs::read_to_string(builder.dir().join("policies/tools.cedarschema")).unwrap();
    for tool in ["trigger-sampling-request", "get-roots-list", "echo"] {
        assert!(
            pulled.contains(&format!("action \"everything/{tool}\" in")),
            "{tool} missing from:\n{pulled}"
        );
    }
    assert!(
        out.contains("route `everything` lists") && out.contains("trigger-sampling-request"),
        "{out}"
    );
    assert!(!out.contains("echo,") && !out.contains(" echo "), "{out}");
    let airlock = builder.start();
    let plan = json!({"mode": "auto", "calls": [
        {"name": "echo", "args": {"message": "hello through airlock"}},
        {"name": "get-env", "args": {}},
        {"name": "get-sum", "args": {"a": 5, "b": 7}},
        {"name": "get-sum", "args": {"a": 5000.5, "b": 1}},
        {"name": "trigger-long-running-operation", "args": {"duration": 2, "steps": 4}, "progress": true},
    ]});
    let out = tokio::task::spawn_blocking({
        let url = airlock.url("/mcp/everything");
        move || python_client(&url, AGENT_KEY, &plan)
    })
    .await
    .unwrap();
    let tools: Vec<&str> = out["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    assert!(
        tools.contains(&"echo") && !tools.contains(&"get-env"),
        "{out}"
    );
    let echo = call(&out, "echo");
    assert!(
        echo["text"]
            .as_str()
            .unwrap()
            .contains("hello through airlock"),
        "{out}"
    );
    let env = call(&out, "get-env");
    assert_eq!(env["is_error"], true, "{out}");
    assert!(
        env["text"]
            .as_str()
            .unwrap()
            .contains("the environment holds secrets"),
        "{out}"
    );
    // `a` is a JSON Schema `number`, declared `decimal`: whole and
    // fractional numbers are compared alike.
    let sums: Vec<&Value> = out["calls"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["name"] == "get-sum")
        .collect();
    assert_eq!(sums[0]["is_error"], false, "{out}");
    assert!(sums[0]["text"].as_str().unwrap().contains("12"), "{out}");
    assert_eq!(sums[1]["is_error"], true, "{out}");
    assert!(
        sums[1]["text"].as_str().unwrap().contains("sums over 1000"),
        "{out}"
    );
    let long = call(&out, "trigger-long-running-operation");
    let progress = long["progress"].as_array().unwrap();
    assert_eq!(progress.len(), 4, "{out}");
    let spread = progress[3]["at"].as_f64().unwrap() - progress[0]["at"].as_f64().unwrap();
    assert!(spread > 0.8, "progress arrived in one lump: {progress:?}");
}

#[tokio::test]
async fn the_get_stream_and_session_id_pass_through() {
    let server = McpServer::everything();
    let airlock = AirlockBuilder::new()
        .policy(
            "mcp.cedar",
            "permit (principal, action == Action::\"protocol\", resource == Route::\"everything\");",
        )
        .route_yaml(&format!(
            "  - name: everything\n    prefix: /mcp/everything\n    upstream: {}\n    protocol: mcp",
            server.url()
        ))
        .start();
    let init = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"raw","version":"1"}}}"#;
    let resp = client()
        .post(airlock.url("/mcp/everything"))
        .header("authorization", bearer(AGENT_KEY))
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .body(init)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let session = resp.headers()["mcp-session-id"]
        .to_str()
        .unwrap()
        .to_string();
    let _ = resp.bytes().await.unwrap();

    let stream = client()
        .get(airlock.url("/mcp/everything"))
        .header("authorization", bearer(AGENT_KEY))
        .header("accept", "text/event-stream")
        .header("mcp-session-id", &session)
        .header("mcp-protocol-version", "2025-06-18")
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);
    let ct = stream.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(ct.starts_with("text/event-stream"), "{ct}");

    // tools/list is not permitted here: the session's request is refused
    // in JSON-RPC, with the same id.
    let list = client()
        .post(airlock.url("/mcp/everything"))
        .header("authorization", bearer(AGENT_KEY))
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("mcp-session-id", &session)
        .body(r#"{"jsonrpc":"2.0","id":2,"method":"tools/list"}"#)
        .send()
        .await
        .unwrap();
    let body: Value = list.json().await.unwrap();
    assert_eq!(body["id"], 2);
    assert_eq!(body["error"]["code"], -32001, "{body}");
}

#[tokio::test]
async fn the_shipped_mcp_policies_hold_large_refunds() {
    let server = McpServer::python();
    let builder = AirlockBuilder::new()
        .policy("mcp.cedar", include_str!("../../policies/mcp.cedar"))
        .yaml("approvals:\n  wait: 1s");
    let airlock = with_pulled_tools(builder, "crm-mcp", "/mcp/crm", &server).start();
    let plan = json!({"calls": [
        {"name": "issue_refund", "args": {"customer_id": "c-1", "amount": 100}},
        {"name": "issue_refund", "args": {"customer_id": "c-1", "amount": 101}},
    ]});
    let out = tokio::task::spawn_blocking({
        let url = airlock.url("/mcp/crm");
        move || python_client(&url, AGENT_KEY, &plan)
    })
    .await
    .unwrap();
    let calls = out["calls"].as_array().unwrap();
    assert_eq!(calls[0]["is_error"], false, "{out}");
    assert_eq!(calls[1]["is_error"], true, "{out}");
    assert!(calls[1]["text"]
        .as_str()
        .unwrap()
        .contains("awaits a human's approval"));
    assert!(
        !out["tools"]
            .as_array()
            .unwrap()
            .contains(&json!("delete_customer")),
        "{out}"
    );
}

#[tokio::test]
async fn typescript_sdk_client_sees_the_filtered_list_and_readable_refusals() {
    let server = McpServer::python();
    let airlock = crm(&server);
    let plan = json!({"calls": [
        {"name": "lookup_customer", "args": {"customer_id": "c-1"}},
        {"name": "delete_customer", "args": {"customer_id": "c-1"}},
        {"name": "issue_refund", "args": {"customer_id": "c-1", "amount": 250}},
    ]});
    let out = tokio::task::spawn_blocking({
        let url = airlock.url("/mcp/crm");
        move || ts_client(&url, AGENT_KEY, &plan)
    })
    .await
    .unwrap();
    assert_eq!(
        out["tools"],
        json!(["lookup_customer", "issue_refund", "count_slowly"]),
        "{out}"
    );
    assert_eq!(out["cache_scope"], "private", "{out}");
    assert!(
        call(&out, "lookup_customer")["text"]
            .as_str()
            .unwrap()
            .contains("Ada Lovelace"),
        "{out}"
    );
    let denied = call(&out, "delete_customer");
    assert_eq!(denied["is_error"], true, "{out}");
    assert!(
        denied["text"]
            .as_str()
            .unwrap()
            .contains("agents may not delete customers"),
        "{out}"
    );
    let held = call(&out, "issue_refund");
    assert_eq!(held["is_error"], true, "{out}");
    assert!(
        held["text"]
            .as_str()
            .unwrap()
            .contains("awaits a human's approval"),
        "{out}"
    );
}

#[test]
fn schema_pull_reports_an_unreachable_server_and_writes_nothing() {
    let builder = AirlockBuilder::new().route_yaml(
        "  - name: gone\n    prefix: /mcp/gone\n    upstream: http://127.0.0.1:1/mcp\n    protocol: mcp\n    connect_timeout: 2s",
    );
    let config = builder.write();
    let (code, out, err) = run_cli(&["schema", "pull", "--config", config.to_str().unwrap()]);
    assert_eq!(code, 1, "{out}\n{err}");
    assert!(err.contains("route `gone`"), "{err}");
    assert!(!builder.dir().join("policies/tools.cedarschema").exists());
}

#[tokio::test]
async fn a_held_tool_call_runs_once_after_a_human_approves_it() {
    let server = McpServer::python();
    let airlock = crm(&server);
    let url = airlock.url("/mcp/crm");
    let run = |plan: Value| python_agent(&url, plan);
    let refund = json!({"calls": [
        {"name": "issue_refund", "args": {"customer_id": "c-1", "amount": 500}},
    ]});

    // The model is told the call waits for a human and to call again.
    let first = run(refund.clone()).await;
    let held = call(&first, "issue_refund");
    assert_eq!(held["is_error"], true, "{first}");
    let text = held["text"].as_str().unwrap();
    assert!(
        text.contains("awaits a human's approval") && text.contains("same arguments"),
        "{text}"
    );

    // The approver finds it, bound to the tool call, and approves.
    let c = client();
    let pending: Value = c
        .get(airlock.admin_url("/v1/approvals?status=pending"))
        .header("authorization", bearer(ADMIN_TOKEN))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let approvals = pending["approvals"].as_array().unwrap();
    assert_eq!(approvals.len(), 1, "{pending}");
    let id = approvals[0]["id"].as_str().unwrap().to_string();
    assert!(
        text.contains(&id),
        "the model is told the approval id: {text}"
    );
    let decided = c
        .post(airlock.admin_url(&format!("/v1/approvals/{id}/decision")))
        .header("authorization", bearer(ADMIN_TOKEN))
        .json(&json!({"decision": "approve", "reason": "customer verified"}))
        .send()
        .await
        .unwrap();
    assert_eq!(decided.status(), 200, "{}", decided.text().await.unwrap());

    // Calling again with the same arguments runs the tool, once.
    let second = run(refund.clone()).await;
    let done = call(&second, "issue_refund");
    assert_eq!(done["is_error"], false, "{second}");

    // A third identical call gets the recorded outcome, not a second refund.
    let third = run(refund).await;
    let replayed = call(&third, "issue_refund");
    assert_eq!(replayed["is_error"], true, "{third}");
    assert!(
        replayed["text"]
            .as_str()
            .unwrap()
            .contains("already executed"),
        "{third}"
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let forwarded = loop {
        let n = airlock
            .audit()
            .iter()
            .filter(|r| r["approval_id"] == id.as_str() && r["upstream_status"] == 200)
            .count();
        if n >= 1 || std::time::Instant::now() > deadline {
            break n;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    assert_eq!(
        forwarded, 1,
        "the approved call reaches the tool exactly once"
    );
}
