//! Links to a decision: with `admin.public_url` set, every approval names
//! its inbox page (webhooks, the API, `airlock approvals show`), and a gate
//! annotated `@elicit("url")` sends that page to an MCP client that declared
//! URL elicitation. Real binary, the real Python SDK server and client, a
//! real webhook receiver and Debian's Chromium.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::approvals::{env_with, pending_id, show};
use crate::support::mcp::{free_port, python_agent, with_pulled_tools, McpServer};
use crate::support::peers::{node_modules, peers_dir};
use crate::support::webhook::WebhookReceiver;
use crate::support::*;

const POLICIES: &str = r#"
@id("crm-housekeeping")
permit (principal, action in [Action::"protocol", Action::"list_tools"], resource == Route::"crm");

@id("support-calls-crm-tools")
permit (principal in Group::"support", action in Action::"call_tool", resource in Route::"crm");

@id("large-refunds-held")
@hold("refunds over 100 need a human's approval")
@approvers("finance")
@elicit("url")
forbid (principal, action == Action::"crm/issue_refund", resource)
when { context.arguments.amount > 100 };
"#;

const APPROVERS: &str =
    "approvers:\n  - id: alice\n    token: approver-token-1\n    groups: [finance]";

/// A generous wait, so that only a decision ends it.
const LONG_WAIT: &str = "approvals:\n  wait: 30s\n  progress_interval: 150ms";

/// Starts `builder` with its admin listener on a port chosen here, so that
/// `admin.public_url` can name the address a browser really reaches.
fn start_with_public_url(builder: AirlockBuilder) -> Airlock {
    let port = free_port();
    let config = builder.dir().join("airlock.yaml");
    builder.start_customized(move |_| {
        let text = std::fs::read_to_string(&config).unwrap();
        let text = text.replacen(
            "admin:\n  listen: 127.0.0.1:0\n",
            &format!(
                "admin:\n  listen: 127.0.0.1:{port}\n  public_url: http://127.0.0.1:{port}/\n"
            ),
            1,
        );
        std::fs::write(&config, text).unwrap();
    })
}

/// Airlock in front of the Python SDK server, with the tools pulled.
fn crm(server: &McpServer, public_url: bool) -> Airlock {
    let builder = AirlockBuilder::new()
        .policy("mcp.cedar", POLICIES)
        .yaml(APPROVERS)
        .yaml(LONG_WAIT);
    let builder = with_pulled_tools(builder, "crm", "/mcp/crm", server);
    if public_url {
        start_with_public_url(builder)
    } else {
        builder.start()
    }
}

/// The Python SDK client running `plan` against the crm route, in a task
/// of its own so that the test can act while it waits.
fn spawn_agent(airlock: &Airlock, plan: Value) -> tokio::task::JoinHandle<Value> {
    let url = airlock.url("/mcp/crm");
    tokio::spawn(async move { python_agent(&url, plan).await })
}

/// The one pending approval, once it is stored.
async fn pending(airlock: &Airlock) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let v: Value = airlock
            .admin_get("/v1/approvals?status=pending", ADMIN_TOKEN)
            .await;
        if let Some(id) = v["approvals"][0]["id"].as_str() {
            return id.to_string();
        }
        assert!(Instant::now() < deadline, "no pending approval appeared");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The first elicitation the client recorded, once it has one.
async fn first_elicitation(file: &Path) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let text = std::fs::read_to_string(file).unwrap_or_default();
        if let Some(line) = text.lines().next() {
            return serde_json::from_str(line).unwrap();
        }
        assert!(
            Instant::now() < deadline,
            "the client was sent no elicitation"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Opens `link` in Chromium, signed in as alice, and approves there.
fn approve_in_browser(admin: &str, link: &str) -> Value {
    node_modules();
    let args = json!({
        "admin": admin.trim_end_matches('/'),
        "link": link,
        "approver_token": APPROVER_TOKEN,
    });
    let out = Command::new("node")
        .arg(peers_dir().join("elicit_browser.mjs"))
        .arg(args.to_string())
        .current_dir(peers_dir())
        .output()
        .expect("run node");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let seen: Value = serde_json::from_str(stdout.lines().last().unwrap_or_default())
        .unwrap_or_else(|e| {
            panic!(
                "the browser script printed no JSON ({e}): {stdout}\n{}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
    assert!(seen.get("error").is_none(), "{seen}");
    seen
}

/// Scenario 8 with the Python SDK client negotiating `mode`: the client's
/// elicitation callback gets the inbox page; approving there completes the
/// call with the tool's answer. Returns what the client saw.
async fn elicited_and_approved(mode: &str) -> (Airlock, Value, Value) {
    let server = McpServer::python();
    let airlock = crm(&server, true);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("elicitations.jsonl");
    let plan = json!({"mode": mode, "elicit_file": file, "calls": [
        {"name": "issue_refund", "args": {"customer_id": "c-1", "amount": 500}},
    ]});
    let agent = spawn_agent(&airlock, plan);

    let elicited = first_elicitation(&file).await;
    assert_eq!(elicited["mode"], "url", "{elicited}");
    let link = elicited["url"].as_str().unwrap().to_string();
    let id = pending(&airlock).await;
    assert_eq!(
        link,
        airlock.admin_url(&format!("/approvals/{id}")),
        "{elicited}"
    );
    let message = elicited["message"].as_str().unwrap();
    assert!(message.contains("`issue_refund`"), "{message}");
    assert!(
        message.contains("refunds over 100 need a human's approval"),
        "{message}"
    );

    let admin = airlock.admin_url("");
    let seen = tokio::task::spawn_blocking(move || approve_in_browser(&admin, &link))
        .await
        .unwrap();
    assert_eq!(seen["status"], "pending", "{seen}");

    let out = agent.await.unwrap();
    let call = &out["calls"][0];
    assert_eq!(call["is_error"], false, "{out}");
    assert_eq!(call["text"], "refunded 500 to c-1", "{out}");
    let decided = show(&airlock, &id).await;
    assert_eq!(decided["decided_by"], "alice", "{decided}");
    assert_eq!(decided["status"], "executed", "{decided}");
    (airlock, elicited, out)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_handshake_client_is_sent_the_inbox_page_on_the_held_stream_and_approving_there_completes_the_call(
) {
    let (airlock, elicited, out) = elicited_and_approved("legacy").await;
    assert!(
        elicited["elicitationId"]
            .as_str()
            .is_some_and(|s| !s.is_empty()),
        "2025-11-25 names each elicitation: {elicited}"
    );
    let notes = out["notifications"].as_array().unwrap();
    assert!(
        notes
            .iter()
            .any(|n| n == "notifications/elicitation/complete"),
        "{out}"
    );
    // The client's accept reached Airlock, which took it and decided
    // nothing by it.
    airlock.audit_where("the client's answer", |r| {
        r["extra"]["elicitation_answer"] == "accept"
    });
}

#[tokio::test(flavor = "multi_thread")]
async fn a_2026_client_is_asked_for_input_and_its_retry_waits_on_the_same_approval() {
    let (airlock, _elicited, out) = elicited_and_approved("auto").await;
    assert_eq!(out["protocol_version"], "2026-07-28", "{out}");
    let all: Value = airlock
        .admin_get("/v1/approvals?status=executed", ADMIN_TOKEN)
        .await;
    assert_eq!(all["approvals"].as_array().map(Vec::len), Some(1), "{all}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_without_the_capability_is_sent_no_elicitation() {
    let server = McpServer::python();
    let airlock = crm(&server, true);
    // Each revision its own refund: an executed one would be replayed.
    for (mode, amount) in [("legacy", 300), ("auto", 301)] {
        let plan = json!({"mode": mode, "calls": [
            {"name": "issue_refund", "args": {"customer_id": "c-2", "amount": amount}, "progress": true},
        ]});
        let agent = spawn_agent(&airlock, plan);
        let id = pending(&airlock).await;
        let (status, body) = crate::approvals::decide(
            &airlock,
            &id,
            APPROVER_TOKEN,
            json!({"decision": "approve", "reason": "fine"}),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        let out = agent.await.unwrap();
        let answer = format!("refunded {amount} to c-2");
        assert_eq!(out["calls"][0]["text"], answer.as_str(), "{out}");
        let held = airlock.audit_where("the held stream", |r| {
            r["event"] == "held_stream" && r["approval_id"] == id.as_str()
        });
        assert!(held["extra"].get("elicitation_id").is_none(), "{held}");
        assert!(
            !airlock
                .audit()
                .iter()
                .any(|r| r["extra"].get("elicitation_answer").is_some()
                    || r["extra"].get("elicitation").is_some()),
            "{mode}: no elicitation was sent, so none was answered"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn without_public_url_an_elicit_gate_sends_nothing_and_check_warns() {
    let server = McpServer::python();
    let airlock = crm(&server, false);
    let (code, out, err) = run_cli(&["check", "--config", airlock.config.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("warning: `@elicit` on `large-refunds-held` sends no elicitation"),
        "{out}"
    );
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("elicitations.jsonl");
    let plan = json!({"mode": "legacy", "elicit_file": file, "calls": [
        {"name": "issue_refund", "args": {"customer_id": "c-3", "amount": 200}, "progress": true},
    ]});
    let agent = spawn_agent(&airlock, plan);
    let id = pending(&airlock).await;
    assert_eq!(show(&airlock, &id).await["links"], Value::Null);
    let (status, body) = crate::approvals::decide(
        &airlock,
        &id,
        APPROVER_TOKEN,
        json!({"decision": "approve", "reason": "fine"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let out = agent.await.unwrap();
    assert_eq!(out["calls"][0]["text"], "refunded 200 to c-3", "{out}");
    assert!(!file.exists(), "no elicitation without a page to send");
}

#[tokio::test(flavor = "multi_thread")]
async fn every_approval_links_to_its_inbox_page_when_public_url_is_set() {
    let upstream = Upstream::start().await;
    let hooks = WebhookReceiver::start().await;
    let builder = AirlockBuilder::new()
        .policy("crm.cedar", include_str!("../../policies/crm.cedar"))
        .route("crm", "/crm", &upstream.url("/api"))
        .yaml(APPROVERS)
        .yaml("approvals:\n  wait: 1s")
        .yaml(&hooks.yaml());
    let airlock = start_with_public_url(builder);
    let id = pending_id(&airlock, json!({"amount": 250, "customer_id": "c-7"})).await;
    let page = airlock.admin_url(&format!("/approvals/{id}"));

    let hook = hooks.wait_event("approval.requested", &id).await;
    assert_eq!(hook.json()["data"]["links"]["inbox"], page.as_str());
    assert_eq!(show(&airlock, &id).await["links"]["inbox"], page.as_str());
    let cli = Command::new(airlock_bin())
        .args(["approvals", "--admin", &airlock.admin_url(""), "show", &id])
        .env("AIRLOCK_TOKEN", APPROVER_TOKEN)
        .output()
        .unwrap();
    let printed = String::from_utf8_lossy(&cli.stdout);
    assert!(
        printed.contains(&format!("\"inbox\": \"{page}\"")),
        "{printed}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn without_public_url_approvals_carry_no_link() {
    let env = env_with("1s", None).await;
    let id = pending_id(&env.airlock, json!({"amount": 250, "customer_id": "c-8"})).await;
    let hook = env.hooks.wait_event("approval.requested", &id).await;
    assert_eq!(hook.json()["data"]["links"], Value::Null);
    assert_eq!(show(&env.airlock, &id).await["links"], Value::Null);
}
