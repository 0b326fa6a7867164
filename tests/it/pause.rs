//! Operators' pauses end to end: each scope in each mode, voided holds,
//! restarts and reloads, who may pause, and the race under load.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde_json::{json, Value};

use crate::support::webhook::WebhookReceiver;
use crate::support::*;

const POLICIES: &str = r#"
@id("ops-open") permit(principal, action, resource == Route::"ops");
@id("no-deletes") @reason("nothing is deleted on ops")
forbid(principal, action == Action::"DELETE", resource == Route::"ops");
@id("tools-open") permit(principal, action in Action::"mcp", resource in Route::"tools");
@id("tools-calls") permit(principal, action == Action::"call_tool", resource);
@id("gated-open") permit(principal, action, resource == Route::"gated");
@id("gated-writes") @hold("writes to gated need a human") @approvers("finance")
forbid(principal, action == Action::"POST", resource == Route::"gated");
"#;

const OPERATOR_TOKEN: &str = "operator-token-1";

struct Env {
    upstream: Upstream,
    hooks: WebhookReceiver,
    airlock: Airlock,
}

async fn env() -> Env {
    let upstream = Upstream::start().await;
    let hooks = WebhookReceiver::start().await;
    let airlock = AirlockBuilder::new()
        .policy("ops.cedar", POLICIES)
        .route("ops", "/ops", &upstream.url("/api"))
        .route("gated", "/gated", &upstream.url("/gated"))
        .route_yaml(&format!(
            "  - name: tools\n    prefix: /mcp/tools\n    upstream: {}\n    protocol: mcp",
            upstream.url("/mcp")
        ))
        .yaml(&format!(
            "approvers:\n  - id: alice\n    token: {APPROVER_TOKEN}\n    groups: [finance]\n  - id: olga\n    token: {OPERATOR_TOKEN}\n    operator: true\napprovals:\n  wait: 30s\n"
        ))
        .yaml(&hooks.yaml())
        .start();
    Env {
        upstream,
        hooks,
        airlock,
    }
}

/// `POST` on the admin API as `token`: the status and the JSON answer.
async fn admin_post(airlock: &Airlock, path: &str, token: &str, body: Value) -> (u16, Value) {
    let resp = client()
        .post(airlock.admin_url(path))
        .header("authorization", bearer(token))
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

async fn pause(airlock: &Airlock, path: &str, mode: &str, reason: &str) -> Value {
    let (s, v) = admin_post(
        airlock,
        path,
        ADMIN_TOKEN,
        json!({"mode": mode, "reason": reason}),
    )
    .await;
    assert_eq!(s, 200, "{path}: {v}");
    v
}

async fn resume(airlock: &Airlock, path: &str) {
    let (s, v) = admin_post(airlock, path, ADMIN_TOKEN, json!({"reason": "all clear"})).await;
    assert_eq!(s, 200, "{path}: {v}");
}

/// A call as `key`: the status and the JSON answer.
async fn call(airlock: &Airlock, method: &str, path: &str, key: &str) -> (u16, Value) {
    let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let resp = client()
        .request(m, airlock.url(path))
        .header("authorization", bearer(key))
        .json(&json!({"n": 1}))
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// A `tools/call` of `tool` on the MCP route: the status and JSON answer.
async fn tool_call(airlock: &Airlock, tool: &str) -> (u16, Value) {
    let body = json!({"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {"name": tool, "arguments": {}}});
    let resp = client()
        .post(airlock.url("/mcp/tools"))
        .header("authorization", bearer(AGENT_KEY))
        .header("accept", "application/json, text/event-stream")
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// The newest pending approval, once there is one (within 10 s).
async fn first_pending(airlock: &Airlock) -> Value {
    let deadline = Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let list = airlock
            .admin_get("/v1/approvals?status=pending", ADMIN_TOKEN)
            .await;
        if let Some(a) = list["approvals"].as_array().and_then(|a| a.first()) {
            return a.clone();
        }
        assert!(Instant::now() < deadline, "no approval became pending");
        tokio::task::yield_now().await;
    }
}

fn assert_paused(answer: &(u16, Value), reason: &str) {
    assert_eq!(answer.0, 403, "{}", answer.1);
    assert_eq!(answer.1["error"], "paused", "{}", answer.1);
    assert_eq!(answer.1["reasons"], json!([reason]), "{}", answer.1);
}

#[tokio::test]
async fn each_scope_paused_in_deny_mode_refuses_its_calls_until_resumed() {
    let Env {
        upstream,
        hooks,
        airlock,
    } = env().await;
    assert_eq!(call(&airlock, "GET", "/ops/a", AGENT_KEY).await.0, 200);

    // An agent: its calls stop, another agent's go on.
    let v = pause(&airlock, "/v1/agents/bot/pause", "deny", "bot misbehaves").await;
    assert_eq!(v["paused"]["scope"], "agent");
    assert_eq!(v["paused"]["by"], "admin");
    assert_paused(
        &call(&airlock, "GET", "/ops/a", AGENT_KEY).await,
        "bot misbehaves",
    );
    assert_eq!(
        call(&airlock, "GET", "/ops/a", OTHER_AGENT_KEY).await.0,
        200
    );
    resume(&airlock, "/v1/agents/bot/resume").await;
    assert_eq!(call(&airlock, "GET", "/ops/a", AGENT_KEY).await.0, 200);

    // A route: its calls stop, another route's go on.
    pause(&airlock, "/v1/routes/ops/pause", "deny", "ops incident").await;
    assert_paused(
        &call(&airlock, "GET", "/ops/a", OTHER_AGENT_KEY).await,
        "ops incident",
    );
    assert_eq!(call(&airlock, "GET", "/gated/a", AGENT_KEY).await.0, 200);
    resume(&airlock, "/v1/routes/ops/resume").await;

    // A tool of an MCP route: a JSON-RPC error; other tools go on.
    let hits = upstream.hits();
    pause(
        &airlock,
        "/v1/routes/tools/tools/drop/pause",
        "deny",
        "drop is broken",
    )
    .await;
    let (s, v) = tool_call(&airlock, "drop").await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["error"]["code"], -32007, "{v}");
    assert_eq!(v["error"]["data"]["error"], "paused", "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("drop is broken"),
        "{v}"
    );
    assert_eq!(upstream.hits(), hits, "a paused tool call is not forwarded");
    let (s, v) = tool_call(&airlock, "search").await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        upstream.hits(),
        hits + 1,
        "another tool's call is forwarded: {v}"
    );
    resume(&airlock, "/v1/routes/tools/tools/drop/resume").await;

    // Everything.
    pause(&airlock, "/v1/pause", "deny", "stop the world").await;
    assert_paused(
        &call(&airlock, "GET", "/gated/a", OTHER_AGENT_KEY).await,
        "stop the world",
    );
    let (s, v) = tool_call(&airlock, "search").await;
    assert_eq!((s, &v["error"]["code"]), (200, &json!(-32007)), "{v}");
    resume(&airlock, "/v1/resume").await;
    assert_eq!(call(&airlock, "GET", "/ops/a", AGENT_KEY).await.0, 200);

    // Resuming what is not paused is a 404.
    let (s, v) = admin_post(&airlock, "/v1/resume", ADMIN_TOKEN, json!({})).await;
    assert_eq!((s, v["error"].as_str()), (404, Some("not_paused")));

    // A paused call is recorded as denied for the pause.
    let refused = airlock
        .audit()
        .into_iter()
        .find(|r| r["event"] == "decision" && r["error"] == "paused")
        .unwrap();
    assert_eq!(refused["verdict"], "deny", "{refused}");
    assert_eq!(refused["status"], 403, "{refused}");

    // Each pause and resume is audited, announced and counted.
    let overrides: Vec<Value> = airlock
        .audit()
        .into_iter()
        .filter(|r| r["event"] == "override")
        .collect();
    assert_eq!(overrides.len(), 8, "{overrides:?}");
    assert_eq!(overrides[0]["verdict"], "pause");
    assert_eq!(overrides[0]["agent"], "bot");
    assert_eq!(overrides[0]["approver"], "admin");
    assert_eq!(overrides[0]["reasons"], json!(["bot misbehaves"]));
    assert_eq!(overrides[1]["verdict"], "resume");
    assert_eq!(overrides[1]["reasons"], json!(["all clear"]));
    for event in [
        "agent.paused",
        "agent.resumed",
        "route.paused",
        "tool.paused",
        "all.resumed",
    ] {
        hooks.wait_for(event, |v| v["type"] == event).await;
    }
    let metrics = client()
        .get(airlock.admin_url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(r#"airlock_overrides_total{action="pause",scope="agent",mode="deny"} 1"#),
        "{metrics}"
    );
    assert!(metrics.contains("airlock_pauses_active 0"), "{metrics}");
}

#[tokio::test]
async fn a_hold_pause_holds_what_policies_allow_for_operators_and_keeps_denials() {
    let Env {
        upstream,
        hooks: _hooks,
        airlock,
    } = env().await;
    pause(&airlock, "/v1/agents/bot/pause", "hold", "watching bot").await;
    let before = upstream.hits();

    // Denied by policy: still denied.
    let (s, v) = call(&airlock, "DELETE", "/ops/a", AGENT_KEY).await;
    assert_eq!((s, v["error"].as_str()), (403, Some("denied")), "{v}");

    // Allowed by policy: held under `airlock:paused`, not run; the agent
    // waits for the decision.
    let resp = client()
        .get(airlock.url("/ops/a"))
        .header("authorization", bearer(AGENT_KEY))
        .send();
    let held = tokio::spawn(resp);
    let id = first_pending(&airlock).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let shown = airlock
        .admin_get(&format!("/v1/approvals/{id}"), ADMIN_TOKEN)
        .await;
    assert_eq!(shown["gates"][0]["policy"], "airlock:paused", "{shown}");
    assert_eq!(upstream.hits(), before);

    // A plain approver may not lift it; an operator may.
    let decide = |token: &'static str| {
        let url = airlock.admin_url(&format!("/v1/approvals/{id}/decision"));
        async move {
            let r = client()
                .post(url)
                .header("authorization", bearer(token))
                .json(&json!({"decision": "approve"}))
                .send()
                .await
                .unwrap();
            r.status().as_u16()
        }
    };
    assert_eq!(decide(APPROVER_TOKEN).await, 403);
    assert_eq!(decide(OPERATOR_TOKEN).await, 200);
    let resp = held.await.unwrap().unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(upstream.hits(), before + 1);

    // Another agent is not paused.
    assert_eq!(
        call(&airlock, "GET", "/ops/a", OTHER_AGENT_KEY).await.0,
        200
    );
}

#[tokio::test]
async fn a_deny_pause_voids_pending_holds_and_answers_their_waiting_agents() {
    let Env {
        upstream,
        hooks: _hooks,
        airlock,
    } = env().await;
    let waiting = tokio::spawn(
        client()
            .post(airlock.url("/gated/write"))
            .header("authorization", bearer(AGENT_KEY))
            .json(&json!({"n": 1}))
            .send(),
    );
    let id = first_pending(&airlock).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let agents = airlock.admin_get("/v1/agents", OPERATOR_TOKEN).await;
    let bot = agents["agents"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["id"] == "bot")
        .unwrap()
        .clone();
    assert_eq!(bot["pending_holds"], 1, "{agents}");
    assert_eq!(bot["paused"], Value::Null, "{agents}");

    let v = pause(
        &airlock,
        "/v1/agents/bot/pause",
        "deny",
        "bot is compromised",
    )
    .await;
    assert_eq!(v["voided"], 1, "{v}");
    let resp = waiting.await.unwrap().unwrap();
    assert_eq!(resp.status(), 403);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"], "paused", "{body}");
    let shown = airlock
        .admin_get(&format!("/v1/approvals/{id}"), ADMIN_TOKEN)
        .await;
    assert_eq!(shown["status"], "voided", "{shown}");
    assert_eq!(upstream.hits(), 0);

    let agents = airlock.admin_get("/v1/agents", ADMIN_TOKEN).await;
    let bot = &agents["agents"][0];
    assert_eq!(bot["id"], "bot");
    assert_eq!(bot["pending_holds"], 0, "{agents}");
    assert_eq!(bot["paused"]["mode"], "deny", "{agents}");
    assert!(
        bot["calls_last_hour"]["hold"].as_u64().unwrap() >= 1,
        "{agents}"
    );
}

#[tokio::test]
async fn pauses_survive_a_restart_and_a_reload() {
    let Env { mut airlock, .. } = env().await;
    pause(&airlock, "/v1/routes/ops/pause", "deny", "maintenance").await;
    let (s, _) = admin_post(&airlock, "/v1/reload", ADMIN_TOKEN, json!({})).await;
    assert_eq!(s, 200);
    assert_paused(
        &call(&airlock, "GET", "/ops/a", AGENT_KEY).await,
        "maintenance",
    );

    // SIGKILL: no shutdown, no flush; the pause was stored before its 200.
    airlock.child.kill().unwrap();
    airlock.child.wait().unwrap();
    let dir = std::mem::replace(&mut airlock.dir, tempfile::tempdir().unwrap());
    let config = airlock.config.clone();
    drop(airlock);
    let airlock = Airlock::start_with(dir, config);
    assert_paused(
        &call(&airlock, "GET", "/ops/a", AGENT_KEY).await,
        "maintenance",
    );
    let agents = airlock.admin_get("/v1/agents", ADMIN_TOKEN).await;
    assert_eq!(agents["pauses"][0]["route"], "ops", "{agents}");
    resume(&airlock, "/v1/routes/ops/resume").await;
    assert_eq!(call(&airlock, "GET", "/ops/a", AGENT_KEY).await.0, 200);
}

#[tokio::test]
async fn only_the_admin_token_and_operators_may_pause() {
    let Env {
        upstream: _upstream,
        hooks: _hooks,
        airlock,
    } = env().await;
    let body = json!({"mode": "deny", "reason": "x"});
    let (s, v) = admin_post(&airlock, "/v1/pause", APPROVER_TOKEN, body.clone()).await;
    assert_eq!((s, v["error"].as_str()), (403, Some("not_operator")), "{v}");
    let (s, _) = admin_post(&airlock, "/v1/pause", AGENT_KEY, body.clone()).await;
    assert_eq!(s, 403);
    let (s, _) = admin_post(&airlock, "/v1/agents/bot/pause", "nobody", body.clone()).await;
    assert_eq!(s, 401);
    let r = client()
        .get(airlock.admin_url("/v1/agents"))
        .bearer_auth(APPROVER_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(call(&airlock, "GET", "/ops/a", AGENT_KEY).await.0, 200);

    // Bad requests change nothing.
    let (s, _) = admin_post(
        &airlock,
        "/v1/pause",
        OPERATOR_TOKEN,
        json!({"mode": "stop", "reason": "x"}),
    )
    .await;
    assert_eq!(s, 400);
    let (s, _) = admin_post(
        &airlock,
        "/v1/pause",
        OPERATOR_TOKEN,
        json!({"mode": "deny"}),
    )
    .await;
    assert_eq!(s, 400);
    let resp = client()
        .post(airlock.admin_url("/v1/pause"))
        .bearer_auth(OPERATOR_TOKEN)
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["error"], "bad_body", "{v}");
    let (s, _) = admin_post(
        &airlock,
        "/v1/agents/ghost/pause",
        OPERATOR_TOKEN,
        body.clone(),
    )
    .await;
    assert_eq!(s, 404);
    let (s, _) = admin_post(
        &airlock,
        "/v1/routes/ops/tools/t/pause",
        OPERATOR_TOKEN,
        body.clone(),
    )
    .await;
    assert_eq!(s, 400);
    assert_eq!(call(&airlock, "GET", "/ops/a", AGENT_KEY).await.0, 200);

    let (s, v) = admin_post(&airlock, "/v1/agents/bot/pause", OPERATOR_TOKEN, body).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["paused"]["by"], "olga");
    assert_eq!(call(&airlock, "GET", "/ops/a", AGENT_KEY).await.0, 403);
    let resp = client()
        .post(airlock.admin_url("/v1/agents/bot/resume"))
        .bearer_auth(OPERATOR_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "a resume needs no body");
}

/// Under load, no call sent after the pause's 200 reaches the upstream:
/// each call carries a sequence number, the time it was sent is kept, and
/// every sequence number the upstream saw must have been sent before the
/// 200 arrived.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_call_sent_after_the_pause_answer_reaches_the_upstream() {
    let Env {
        upstream,
        hooks: _hooks,
        airlock,
    } = env().await;
    let sent: Arc<Mutex<Vec<Instant>>> = Arc::new(Mutex::new(Vec::new()));
    let paused_at: Arc<Mutex<Option<Instant>>> = Arc::new(Mutex::new(None));
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let url = airlock.url("/ops/load");
        let (sent, paused_at) = (sent.clone(), paused_at.clone());
        tasks.push(tokio::spawn(async move {
            let c = client();
            let mut refused_after = 0;
            // Bounded: each task stops after 20 refusals sent after the
            // pause, or 5,000 calls.
            for _ in 0..5_000 {
                let seq = {
                    let mut s = sent.lock().unwrap();
                    s.push(Instant::now());
                    s.len() - 1
                };
                let resp = c
                    .get(&url)
                    .header("authorization", bearer(AGENT_KEY))
                    .header("x-seq", seq.to_string())
                    .send()
                    .await
                    .unwrap();
                let sent_at = sent.lock().unwrap()[seq];
                let after_pause = paused_at.lock().unwrap().is_some_and(|p| sent_at > p);
                if after_pause {
                    assert_eq!(resp.status(), 403);
                    refused_after += 1;
                    if refused_after == 20 {
                        break;
                    }
                }
            }
        }));
    }
    // Let the load run until the upstream has seen some of it.
    let deadline = Instant::now() + std::time::Duration::from_secs(10);
    while upstream.hits() < 50 {
        assert!(
            Instant::now() < deadline,
            "the load did not reach the upstream"
        );
        tokio::task::yield_now().await;
    }
    let (s, v) = admin_post(
        &airlock,
        "/v1/agents/bot/pause",
        ADMIN_TOKEN,
        json!({"mode": "deny", "reason": "race"}),
    )
    .await;
    let at = Instant::now();
    assert_eq!(s, 200, "{v}");
    *paused_at.lock().unwrap() = Some(at);
    for t in tasks {
        t.await.unwrap();
    }
    let sent = sent.lock().unwrap().clone();
    let after: usize = sent.iter().filter(|t| **t > at).count();
    assert!(after >= 80, "the load went on after the pause: {after}");
    for seen in upstream.seen() {
        let seq: usize = seen.header("x-seq").unwrap().parse().unwrap();
        assert!(
            sent[seq] < at,
            "call {seq} was sent after the pause's 200 and reached the upstream"
        );
    }
}

#[tokio::test]
async fn the_cli_lists_agents_and_pauses_and_resumes_each_scope() {
    let Env {
        upstream: _upstream,
        hooks: _hooks,
        airlock,
    } = env().await;
    let admin = airlock.admin_url("");
    let cli = |args: &[&str]| {
        let mut all: Vec<&str> = args.to_vec();
        all.extend(["--admin", &admin, "--token", OPERATOR_TOKEN]);
        run_cli(&all)
    };
    let (code, out, err) = cli(&[
        "agents", "pause", "bot", "--mode", "hold", "--reason", "look",
    ]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("paused agent bot (hold)"), "{out}");
    let (code, out, _) = cli(&["agents", "list"]);
    assert_eq!(code, 0);
    let bot = out.lines().find(|l| l.starts_with("bot ")).unwrap();
    assert!(bot.contains("hold"), "{out}");
    assert!(out.contains("agent bot"), "{out}");
    assert_eq!(cli(&["agents", "resume", "bot"]).0, 0);

    let (code, out, err) = cli(&[
        "routes", "pause", "tools", "--tool", "drop", "--reason", "broken",
    ]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("paused tool tools/drop (deny)"), "{out}");
    assert_eq!(tool_call(&airlock, "drop").await.1["error"]["code"], -32007);
    assert_eq!(cli(&["routes", "resume", "tools", "--tool", "drop"]).0, 0);

    assert_eq!(cli(&["pause", "--all", "--reason", "stop"]).0, 0);
    assert_eq!(call(&airlock, "GET", "/ops/a", AGENT_KEY).await.0, 403);
    assert_eq!(cli(&["resume", "--all"]).0, 0);
    assert_eq!(call(&airlock, "GET", "/ops/a", AGENT_KEY).await.0, 200);

    // A refusal is an error exit with the server's message.
    let (code, out, err) = cli(&["routes", "resume", "ops"]);
    assert_ne!(code, 0);
    assert!(
        format!("{out}{err}").contains("route `ops` is not paused"),
        "{out}{err}"
    );
}

#[tokio::test]
async fn a_hold_pause_of_a_tool_holds_its_calls_and_lets_the_protocol_through() {
    let Env {
        upstream,
        hooks: _hooks,
        airlock,
    } = env().await;
    pause(
        &airlock,
        "/v1/routes/tools/tools/search/pause",
        "hold",
        "check searches",
    )
    .await;
    let before = upstream.hits();

    // The protocol's own requests are not held.
    let list = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"});
    let resp = client()
        .post(airlock.url("/mcp/tools"))
        .header("authorization", bearer(AGENT_KEY))
        .header("accept", "application/json, text/event-stream")
        .json(&list)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(upstream.hits(), before + 1);

    // The paused tool's call waits for an operator, then runs once.
    let url = airlock.url("/mcp/tools");
    let held = tokio::spawn(async move {
        let body = json!({"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {"name": "search", "arguments": {}}});
        client()
            .post(url)
            .header("authorization", bearer(AGENT_KEY))
            .header("accept", "application/json")
            .json(&body)
            .send()
            .await
            .unwrap()
            .status()
    });

    let pending = first_pending(&airlock).await;
    assert_eq!(pending["gates"][0]["policy"], "airlock:paused", "{pending}");
    let id = pending["id"].as_str().unwrap().to_string();
    assert_eq!(
        upstream.hits(),
        before + 1,
        "a held tool call is not forwarded"
    );
    let (s, v) = admin_post(
        &airlock,
        &format!("/v1/approvals/{id}/decision"),
        OPERATOR_TOKEN,
        json!({"decision": "approve"}),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(held.await.unwrap(), 200);
    assert_eq!(upstream.hits(), before + 2);
}
