//! Take-over: a human answers a held call in the tool's place. The agent
//! gets that answer as the tool's, every retry gets it too, and the tool is
//! never called.

use serde_json::{json, Value};

use crate::approvals::{decide, env_with, refund, show, Env, BOB_TOKEN};
use crate::mcp::{call, crm};
use crate::support::mcp::{python_agent, McpServer};
use crate::support::*;

/// Waits for the first pending approval and returns its id.
async fn pending(airlock: &Airlock) -> String {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let v = airlock
            .admin_get("/v1/approvals?status=pending", ADMIN_TOKEN)
            .await;
        if let Some(id) = v["approvals"][0]["id"].as_str() {
            return id.to_string();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no pending approval appeared"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// `airlock approvals respond ...` as an approver at a terminal runs it.
fn respond_cli(airlock: &Airlock, token: &str, args: &[&str]) -> (i32, String, String) {
    let admin = airlock.admin_url("");
    let mut all = vec!["approvals", "--admin", admin.as_str(), "respond"];
    all.extend_from_slice(args);
    let out = std::process::Command::new(airlock_bin())
        .args(&all)
        .env("AIRLOCK_TOKEN", token)
        .output()
        .expect("run airlock");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn a_human_answers_a_held_refund_in_the_tools_place_once() {
    let Env {
        upstream,
        hooks,
        airlock,
    } = env_with("20s", None).await;
    let call = json!({"amount": 500, "customer_id": "c-1"});
    let waiting = tokio::spawn(refund(&airlock, call.clone()).send());
    let id = pending(&airlock).await;

    // The approver issued the refund by hand, and says so with the CLI.
    let answer = airlock.dir.path().join("answer.json");
    std::fs::write(
        &answer,
        r#"{"refund_id": "manual-7", "note": "issued by phone"}"#,
    )
    .unwrap();
    let (code, out, err) = respond_cli(
        &airlock,
        APPROVER_TOKEN,
        &[
            &id,
            "--status",
            "201",
            "--body",
            answer.to_str().unwrap(),
            "--reason",
            "did it by hand",
        ],
    );
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("responded"), "{out}");

    // The waiting agent gets the human's answer as the tool's.
    let resp = waiting.await.unwrap().unwrap();
    assert_eq!(resp.status(), 201);
    assert_eq!(resp.headers()["airlock-answered-by"], "alice");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(
        body,
        json!({"refund_id": "manual-7", "note": "issued by phone"})
    );

    // A retry of the same call gets the recorded answer, not the tool.
    let again = refund(&airlock, call).send().await.unwrap();
    assert_eq!(again.status(), 201);
    let again: Value = again.json().await.unwrap();
    assert_eq!(again["refund_id"], "manual-7");
    assert_eq!(upstream.hits(), 0, "the tool is never called");

    // The answer is final: neither a second answer nor an approval lands.
    for late in [
        json!({"decision": "respond", "status": 200, "body": {"refund_id": "other"}}),
        json!({"decision": "approve"}),
    ] {
        let (status, v) = decide(&airlock, &id, ADMIN_TOKEN, late).await;
        assert_eq!(status, 409, "{v}");
    }
    let shown = show(&airlock, &id).await;
    assert_eq!(shown["status"], "responded", "{shown}");
    assert_eq!(shown["decided_by"], "alice");
    assert_eq!(shown["answer"]["status"], 201, "{shown}");

    // Approvers hear of it with the answer; the audit keeps both sides.
    let hook = hooks.wait_event("approval.decided", &id).await;
    let data = &hook.json()["data"];
    assert_eq!(data["decision"], "respond", "{data}");
    assert_eq!(data["answer"]["body"]["refund_id"], "manual-7", "{data}");
    let rec = airlock.audit_where("the take-over", |r| {
        r["event"] == "approval" && r["verdict"] == "respond" && r["approval_id"] == id.as_str()
    });
    assert_eq!(rec["approver"], "alice");
    assert_eq!(rec["reasons"], json!(["did it by hand"]));
    assert_eq!(
        rec["extra"]["answer"]["body"]["refund_id"], "manual-7",
        "{rec}"
    );
    assert!(
        rec["extra"]["original_body"].to_string().contains("c-1"),
        "{rec}"
    );
}

#[tokio::test]
async fn a_take_over_that_does_not_fit_the_call_is_refused_and_changes_nothing() {
    let Env { airlock, .. } = env_with("1s", None).await;
    let resp = refund(&airlock, json!({"amount": 500}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    let id = pending(&airlock).await;

    let refused = [
        (
            ADMIN_TOKEN,
            json!({"decision": "respond", "result": {"content": []}}),
            400,
            "holds a REST call",
        ),
        (
            ADMIN_TOKEN,
            json!({"decision": "respond", "status": 99}),
            400,
            "from 200 to 599",
        ),
        (
            ADMIN_TOKEN,
            json!({"decision": "respond", "arguments": {"amount": 1}}),
            400,
            "takes no edited",
        ),
        (
            ADMIN_TOKEN,
            json!({"decision": "approve", "status": 200}),
            400,
            "`respond` decision only",
        ),
        // Bob is in `support`; the refund gate wants `finance`.
        (
            BOB_TOKEN,
            json!({"decision": "respond", "body": {"ok": true}}),
            403,
            "finance",
        ),
    ];
    for (token, decision, want, says) in refused {
        let (status, v) = decide(&airlock, &id, token, decision.clone()).await;
        assert_eq!(status, want, "{decision} -> {v}");
        assert!(v.to_string().contains(says), "{decision} -> {v}");
    }
    assert_eq!(show(&airlock, &id).await["status"], "pending");
    let refusal = airlock.audit_where("a refused take-over", |r| {
        r["verdict"] == "refused" && r["decision"] == "respond"
    });
    assert_eq!(refusal["approval_id"], id.as_str(), "{refusal}");

    // A file that is not JSON is refused by the CLI before anything is sent.
    let bad = airlock.dir.path().join("bad.json");
    std::fs::write(&bad, "refund issued").unwrap();
    let (code, _, err) = respond_cli(
        &airlock,
        ADMIN_TOKEN,
        &[&id, "--body", bad.to_str().unwrap()],
    );
    assert_ne!(code, 0);
    assert!(err.contains("not JSON"), "{err}");
    assert_eq!(show(&airlock, &id).await["status"], "pending");
}

#[tokio::test]
async fn the_sdk_client_gets_a_humans_answer_to_a_held_tool_call() {
    let server = McpServer::python();
    let airlock = crm(&server);
    let url = airlock.url("/mcp/crm");
    let run = |plan: Value| python_agent(&url, plan);
    let refund = json!({"calls": [
        {"name": "issue_refund", "args": {"customer_id": "c-1", "amount": 500}},
    ]});
    let first = run(refund.clone()).await;
    assert_eq!(call(&first, "issue_refund")["is_error"], true, "{first}");
    let id = pending(&airlock).await;

    // A REST-shaped answer does not fit a tool call.
    let (status, v) = decide(
        &airlock,
        &id,
        ADMIN_TOKEN,
        json!({"decision": "respond", "status": 200, "body": {"ok": true}}),
    )
    .await;
    assert_eq!(status, 400, "{v}");
    assert!(v.to_string().contains("MCP tool call"), "{v}");

    let result = airlock.dir.path().join("result.json");
    std::fs::write(
        &result,
        // The tool declares an output schema, so its answer carries the
        // structured content too, as the SDK checks.
        r#"{"content": [{"type": "text", "text": "refund R-7 issued by hand"}],
            "structuredContent": {"result": "refund R-7 issued by hand"}}"#,
    )
    .unwrap();
    let (code, out, err) = respond_cli(
        &airlock,
        ADMIN_TOKEN,
        &[&id, "--result", result.to_str().unwrap()],
    );
    assert_eq!(code, 0, "{out}\n{err}");

    // The agent calls again and the SDK reads the human's answer as the
    // tool's result, twice over: the tool itself is never called.
    for _ in 0..2 {
        let out = run(refund.clone()).await;
        let answered = call(&out, "issue_refund");
        assert_eq!(answered["is_error"], false, "{out}");
        assert_eq!(answered["text"], "refund R-7 issued by hand", "{out}");
    }
    let rec = airlock.audit_where("the take-over", |r| {
        r["verdict"] == "respond" && r["approval_id"] == id.as_str()
    });
    assert_eq!(
        rec["extra"]["answer"]["result"]["content"][0]["text"],
        "refund R-7 issued by hand"
    );
    let forwarded = airlock
        .audit()
        .into_iter()
        .filter(|r| r["approval_id"] == id.as_str() && !r["upstream_status"].is_null())
        .count();
    assert_eq!(forwarded, 0, "the held call never reaches the tool");
}
