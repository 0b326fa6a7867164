//! Held MCP tool calls answered as event streams: progress while a human
//! decides, then the tool's answer in the same stream. Real binary, the real
//! Python SDK server, and the real Python SDK client or raw HTTP.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::approvals::{decide, show};
use crate::support::mcp::{python_client, with_pulled_tools, McpServer};
use crate::support::sse::EventReader;
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

@id("counting-held")
@hold("counting needs a human's approval")
forbid (principal, action == Action::"crm/count_slowly", resource);
"#;

/// A generous wait, so that only a decision (or a hang-up) ends it; a short
/// progress interval.
const APPROVALS: &str = "approvals:\n  wait: 30s\n  progress_interval: 150ms";

const EVENT: Duration = Duration::from_secs(10);

/// Airlock in front of the Python SDK server, with the tools pulled.
fn crm(server: &McpServer) -> Airlock {
    let builder = AirlockBuilder::new()
        .policy("mcp.cedar", POLICIES)
        .yaml(APPROVALS);
    with_pulled_tools(builder, "crm", "/mcp/crm", server).start()
}

/// The one pending approval, once it is stored.
async fn pending(airlock: &Airlock) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let v: Value = airlock
            .admin_get("/v1/approvals?status=pending", ADMIN_TOKEN)
            .await;
        let list = v["approvals"].as_array().unwrap();
        assert!(list.len() <= 1, "{v}");
        if let Some(id) = list.first().and_then(|a| a["id"].as_str()) {
            return id.to_string();
        }
        assert!(Instant::now() < deadline, "no pending approval appeared");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A handshake-era session with the server through Airlock; returns its id.
async fn session(airlock: &Airlock) -> String {
    let init = json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {},
        "clientInfo": {"name": "raw-test", "version": "0"}}});
    let resp = post(airlock, None, &init, "application/json, text/event-stream").await;
    assert_eq!(resp.status(), 200);
    let sid = resp.headers()["mcp-session-id"]
        .to_str()
        .unwrap()
        .to_string();
    let _ = resp.bytes().await.unwrap();
    let done = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
    let resp = post(
        airlock,
        Some(&sid),
        &done,
        "application/json, text/event-stream",
    )
    .await;
    assert_eq!(resp.status(), 202);
    sid
}

/// A JSON-RPC POST of the agent's, in `session` when given.
fn request(
    airlock: &Airlock,
    session: Option<&str>,
    body: &Value,
    accept: &str,
) -> reqwest::RequestBuilder {
    let mut req = client()
        .post(airlock.url("/mcp/crm"))
        .header("authorization", bearer(AGENT_KEY))
        .header("accept", accept)
        .header("mcp-protocol-version", "2025-06-18")
        .json(body);
    if let Some(s) = session {
        req = req.header("mcp-session-id", s);
    }
    req
}

async fn post(
    airlock: &Airlock,
    session: Option<&str>,
    body: &Value,
    accept: &str,
) -> reqwest::Response {
    request(airlock, session, body, accept)
        .send()
        .await
        .unwrap()
}

/// [`post`] in a task of its own, for a call that waits for a human.
fn spawn_post(
    airlock: &Airlock,
    session: &str,
    body: &Value,
    accept: &str,
) -> tokio::task::JoinHandle<reqwest::Response> {
    let req = request(airlock, Some(session), body, accept);
    tokio::spawn(async move { req.send().await.unwrap() })
}

fn tool_call(id: Value, name: &str, args: Value, token: Option<Value>) -> Value {
    let mut params = json!({"name": name, "arguments": args});
    if let Some(t) = token {
        params["_meta"] = json!({"progressToken": t});
    }
    json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": params})
}

/// The `held_stream` audit record of approval `id`, once it is written
/// (after the stream's last event).
async fn held_stream_record(airlock: &Airlock, id: &str) -> Value {
    let deadline = Instant::now() + EVENT;
    loop {
        let found = airlock
            .audit()
            .into_iter()
            .find(|r| r["event"] == "held_stream" && r["approval_id"] == id);
        if let Some(r) = found {
            return r;
        }
        assert!(Instant::now() < deadline, "no held_stream record for {id}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn content_type(resp: &reqwest::Response) -> String {
    resp.headers()["content-type"].to_str().unwrap().to_string()
}

fn text(answer: &Value) -> &str {
    answer["result"]["content"][0]["text"]
        .as_str()
        .unwrap_or("")
}

/// Asserts that `m` is Airlock's progress for `token` and approval `id`;
/// returns its `progress`.
fn approval_progress(m: &Value, token: &Value, id: &str) -> f64 {
    assert_eq!(m["method"], "notifications/progress", "{m}");
    assert_eq!(&m["params"]["progressToken"], token, "{m}");
    assert_eq!(
        m["params"]["message"],
        format!("awaiting human approval (approval `{id}`)"),
        "{m}"
    );
    m["params"]["progress"].as_f64().unwrap()
}

#[tokio::test]
async fn python_sdk_client_gets_progress_while_held_and_the_result_once_approved() {
    let server = McpServer::python();
    let airlock = crm(&server);
    let signal = airlock.audit_path().with_file_name("progressed");
    let plan = json!({"calls": [{
        "name": "issue_refund",
        "args": {"customer_id": "c-1", "amount": 500},
        "progress": true,
        "signal_file": signal,
    }]});
    let url = airlock.url("/mcp/crm");
    let client_run = tokio::task::spawn_blocking(move || python_client(&url, AGENT_KEY, &plan));

    // The approver acts only once the client has seen progress for its call
    // (the SDK routes a notification to the callback by its token).
    let id = pending(&airlock).await;
    let deadline = Instant::now() + EVENT;
    while !signal.exists() {
        assert!(
            Instant::now() < deadline,
            "the client saw no progress while the call was held"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (status, body) = decide(
        &airlock,
        &id,
        ADMIN_TOKEN,
        json!({"decision": "approve", "reason": "customer verified"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");

    // The same call returns the tool's answer.
    let out = client_run.await.unwrap();
    let call = &out["calls"][0];
    assert_eq!(call["is_error"], false, "{out}");
    assert_eq!(call["text"], "refunded 500 to c-1", "{out}");
    let progress = call["progress"].as_array().unwrap();
    assert!(!progress.is_empty(), "{out}");
    assert_eq!(
        progress[0]["message"],
        format!("awaiting human approval (approval `{id}`)"),
        "{out}"
    );
    let values: Vec<f64> = progress
        .iter()
        .map(|p| p["progress"].as_f64().unwrap())
        .collect();
    assert!(
        values.windows(2).all(|w| w[0] < w[1]),
        "progress must increase: {values:?}"
    );
    assert_eq!(show(&airlock, &id).await["status"], "executed");
    held_stream_record(&airlock, &id).await;
    let ran = airlock
        .audit()
        .into_iter()
        .filter(|r| r["approval_id"] == id.as_str() && r["upstream_status"] == 200)
        .count();
    assert_eq!(ran, 1, "the approved call reaches the tool exactly once");
}

#[tokio::test]
async fn raw_event_stream_has_progress_then_the_tools_events_and_answer() {
    let server = McpServer::python();
    let airlock = crm(&server);
    let sid = session(&airlock).await;
    let token = json!("tok-1");
    let call = tool_call(
        json!("call-1"),
        "count_slowly",
        json!({"n": 3, "gap_ms": 50}),
        Some(token.clone()),
    );
    let resp = post(
        &airlock,
        Some(&sid),
        &call,
        "application/json, text/event-stream",
    )
    .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(content_type(&resp), "text/event-stream");
    let mut events = EventReader::new(resp);

    // Progress arrives at once and then keeps coming while nobody decides.
    let id = pending(&airlock).await;
    let mut last = 0.0;
    for _ in 0..3 {
        let m = events.next(EVENT).await.expect("progress");
        let p = approval_progress(&m, &token, &id);
        assert!(p > last, "progress must increase: {}", events.raw);
        last = p;
    }

    let (status, body) = decide(
        &airlock,
        &id,
        ADMIN_TOKEN,
        json!({"decision": "approve", "reason": "fine"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");

    // Then the tool's own progress (renumbered, so it keeps increasing), and
    // the response as the final event.
    let mut steps = Vec::new();
    let answer = loop {
        let m = events.next(EVENT).await.expect("the answer");
        if m["method"] == "notifications/progress" {
            assert_eq!(m["params"]["progressToken"], token, "{m}");
            let p = m["params"]["progress"].as_f64().unwrap();
            assert!(p > last, "progress must increase: {}", events.raw);
            last = p;
            let message = m["params"]["message"].as_str().unwrap_or("").to_string();
            if message.starts_with("step") {
                steps.push(message);
            }
            continue;
        }
        break m;
    };
    assert_eq!(answer["jsonrpc"], "2.0", "{answer}");
    assert_eq!(answer["id"], "call-1", "{answer}");
    assert!(answer["result"]["isError"] != true, "{answer}");
    assert_eq!(text(&answer), "counted to 3", "{answer}");
    assert_eq!(steps, ["step 1", "step 2", "step 3"], "{}", events.raw);
    assert!(
        events.next(EVENT).await.is_none(),
        "the response is the last event: {}",
        events.raw
    );
    let outcome = held_stream_record(&airlock, &id).await;
    assert_eq!(outcome["upstream_status"], 200, "{outcome}");
    assert_eq!(outcome["approver"], "admin", "{outcome}");
}

#[tokio::test]
async fn without_a_token_or_event_stream_acceptance_the_answer_is_plain_json() {
    let server = McpServer::python();
    let airlock = crm(&server);
    let sid = session(&airlock).await;
    let cases = [
        // Accepts events, but sent no token.
        ("application/json, text/event-stream", None, 700),
        // Sent a token, but accepts only JSON.
        ("application/json", Some(json!(7)), 800),
    ];
    for (accept, token, amount) in cases {
        let call = tool_call(
            json!(amount),
            "issue_refund",
            json!({"customer_id": "c-2", "amount": amount}),
            token,
        );
        let waiting = spawn_post(&airlock, &sid, &call, accept);
        let id = pending(&airlock).await;
        let (status, body) = decide(
            &airlock,
            &id,
            ADMIN_TOKEN,
            json!({"decision": "deny", "reason": "duplicate refund"}),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        let resp = waiting.await.unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(content_type(&resp), "application/json", "{accept}");
        let answer: Value = resp.json().await.unwrap();
        assert_eq!(answer["id"], amount, "{answer}");
        assert_eq!(answer["result"]["isError"], true, "{answer}");
        assert!(text(&answer).contains("duplicate refund"), "{answer}");
    }
}

#[tokio::test]
async fn a_denial_ends_the_stream_with_the_reason_for_a_numeric_token() {
    let server = McpServer::python();
    let airlock = crm(&server);
    let token = json!(42);
    let call = tool_call(
        json!(9),
        "issue_refund",
        json!({"customer_id": "c-3", "amount": 300}),
        Some(token.clone()),
    );
    let resp = post(&airlock, None, &call, "text/event-stream, application/json").await;
    assert_eq!(content_type(&resp), "text/event-stream");
    let mut events = EventReader::new(resp);
    let id = pending(&airlock).await;
    let first = events.next(EVENT).await.expect("progress");
    approval_progress(&first, &token, &id);
    let (status, body) = decide(
        &airlock,
        &id,
        ADMIN_TOKEN,
        json!({"decision": "deny", "reason": "not this customer"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let answer = loop {
        let m = events.next(EVENT).await.expect("the answer");
        if m["method"] != "notifications/progress" {
            break m;
        }
        approval_progress(&m, &token, &id);
    };
    assert_eq!(answer["id"], 9, "{answer}");
    assert_eq!(answer["result"]["isError"], true, "{answer}");
    assert!(text(&answer).contains("not this customer"), "{answer}");
    assert!(events.next(EVENT).await.is_none(), "{}", events.raw);
}

#[tokio::test]
async fn a_client_that_hangs_up_mid_stream_never_has_its_call_run_without_it() {
    let server = McpServer::python();
    let airlock = crm(&server);
    let sid = session(&airlock).await;
    let args = json!({"customer_id": "c-4", "amount": 600});
    let call = tool_call(json!(1), "issue_refund", args.clone(), Some(json!("first")));
    let resp = post(
        &airlock,
        Some(&sid),
        &call,
        "application/json, text/event-stream",
    )
    .await;
    let mut events = EventReader::new(resp);
    let id = pending(&airlock).await;
    events.next(EVENT).await.expect("progress");
    drop(events);

    // Airlock notices the hang-up: the stream's outcome record says so.
    let record = held_stream_record(&airlock, &id).await;
    assert_eq!(record["error"], "agent_gone", "{record}");
    assert_eq!(show(&airlock, &id).await["status"], "pending");

    let (status, body) = decide(&airlock, &id, ADMIN_TOKEN, json!({"decision": "approve"})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        show(&airlock, &id).await["status"],
        "approved",
        "approved, but nobody is there to receive the answer"
    );

    // The agent calls again (new id, new token) and gets the tool's answer.
    let again = tool_call(json!(2), "issue_refund", args, Some(json!("second")));
    let resp = post(
        &airlock,
        Some(&sid),
        &again,
        "application/json, text/event-stream",
    )
    .await;
    let mut events = EventReader::new(resp);
    let answer = loop {
        let m = events.next(EVENT).await.expect("the answer");
        if m["method"] != "notifications/progress" {
            break m;
        }
        assert_eq!(m["params"]["progressToken"], "second", "{m}");
    };
    assert_eq!(answer["id"], 2, "{answer}");
    assert_eq!(text(&answer), "refunded 600 to c-4", "{answer}");
    assert_eq!(show(&airlock, &id).await["status"], "executed");
}

#[tokio::test]
async fn an_approved_call_runs_in_the_session_the_agent_calls_again_from() {
    let server = McpServer::python();
    let airlock = crm(&server);
    let first = session(&airlock).await;
    let args = json!({"customer_id": "c-9", "amount": 900});
    // Events accepted (the server insists) but no progress token: the
    // answer comes as plain JSON.
    let plain = "application/json, text/event-stream";

    // The first attempt waits for a human; the agent gives up on it.
    let call = tool_call(json!(1), "issue_refund", args.clone(), None);
    let waiting = spawn_post(&airlock, &first, &call, plain);
    let id = pending(&airlock).await;
    waiting.abort();
    let (status, body) = decide(&airlock, &id, ADMIN_TOKEN, json!({"decision": "approve"})).await;
    assert_eq!(status, 200, "{body}");

    // Meanwhile the agent restarted: it ended its session and began another.
    let ended = client()
        .delete(airlock.url("/mcp/crm"))
        .header("authorization", bearer(AGENT_KEY))
        .header("mcp-protocol-version", "2025-06-18")
        .header("mcp-session-id", &first)
        .send()
        .await
        .unwrap();
    assert!(ended.status().is_success(), "{}", ended.status());
    let list = json!({"jsonrpc": "2.0", "id": 5, "method": "tools/list"});
    let stale = post(&airlock, Some(&first), &list, plain).await;
    assert_eq!(stale.status(), 404, "the server forgot the first session");
    let second = session(&airlock).await;

    // Called again from the new session, the approved call runs there.
    let call = tool_call(json!(2), "issue_refund", args, None);
    let resp = post(&airlock, Some(&second), &call, plain).await;
    assert_eq!(resp.status(), 200);
    // The tool's own answer, relayed as the server sent it: an event stream.
    let events = resp.text().await.unwrap();
    let answer: Value = events
        .lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .filter_map(|d| serde_json::from_str(d.trim()).ok())
        .find(|m: &Value| m.get("result").is_some() || m.get("error").is_some())
        .unwrap_or_else(|| panic!("no answer in {events}"));
    assert_ne!(answer["result"]["isError"], true, "{answer}");
    assert!(text(&answer).contains("refunded 900 to c-9"), "{answer}");
    assert_eq!(show(&airlock, &id).await["status"], "executed");
}
