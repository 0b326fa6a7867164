//! Quality sampling and the review queue end to end: the real binary, its
//! SQLite store, real upstreams and a real webhook receiver.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::support::webhook::WebhookReceiver;
use crate::support::*;

const RITA: &str = "reviewer-token-rita";
const SAM: &str = "reviewer-token-sam";

/// Reviewers rita and sam, and alice, an approver who is not one.
fn reviewers_yaml() -> String {
    format!(
        "approvers:\n  - id: rita\n    token: {RITA}\n    groups: [reviewers]\n  - id: sam\n    token: {SAM}\n    groups: [reviewers]\n  - id: alice\n    token: {APPROVER_TOKEN}\n    groups: [finance]\n"
    )
}

/// Every review item (up to 500), newest first, as `token` sees them.
async fn reviews(airlock: &Airlock, query: &str, token: &str) -> Vec<Value> {
    let v = airlock
        .admin_get(&format!("/v1/reviews?limit=500{query}"), token)
        .await;
    v["reviews"]
        .as_array()
        .cloned()
        .unwrap_or_else(|| panic!("{v}"))
}

/// Waits until `n` items are stored (items are written after the response
/// ends, off the request path).
async fn wait_reviews(airlock: &Airlock, n: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let items = reviews(airlock, "", ADMIN_TOKEN).await;
        if items.len() >= n || Instant::now() > deadline {
            return items;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn counter(airlock: &Airlock, name: &str) -> u64 {
    let text = airlock.metrics().await;
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

async fn post(airlock: &Airlock, path: &str, token: &str, body: Value) -> (u16, Value) {
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

#[tokio::test]
async fn a_fixed_seed_samples_exactly_the_calls_its_draws_pick() {
    let upstream = Upstream::start().await;
    let airlock = AirlockBuilder::permitting_everything()
        .route("crm", "/crm", &upstream.url("/api"))
        .yaml("sampling:\n  seed: fixed-seed\n  rules:\n    - route: crm\n      rate: 30%")
        .start();
    let rate = airlock::rate::Rate::parse("30%").unwrap();
    let mut expected = BTreeSet::new();
    for n in 0..40 {
        let resp = airlock.agent_get(&format!("/crm/items/{n}")).await;
        assert_eq!(resp.status(), 200);
        let id = resp.headers()["x-request-id"].to_str().unwrap().to_string();
        if rate.picks(airlock::sampling::seeded_draw("fixed-seed", &id)) {
            expected.insert(id);
        }
    }
    assert!(!expected.is_empty() && expected.len() < 40, "{expected:?}");
    let items = wait_reviews(&airlock, expected.len()).await;
    // A moment more: an unexpected extra item would show up now.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let items = if items.len() == expected.len() {
        reviews(&airlock, "", ADMIN_TOKEN).await
    } else {
        items
    };
    let sampled: BTreeSet<String> = items
        .iter()
        .map(|i| i["request_id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(sampled, expected);
    assert!(items
        .iter()
        .all(|i| i["sampled_by"] == "rule" && i["status"] == "open"));
}

#[tokio::test]
async fn ten_thousand_calls_at_five_percent_sample_about_five_hundred() {
    let upstream = Upstream::start().await;
    let airlock = AirlockBuilder::permitting_everything()
        .route("crm", "/crm", &upstream.url("/api"))
        .yaml("sampling:\n  rules:\n    - rate: 0.05\n  queue: 20000")
        .start();
    let url = airlock.url("/crm/items");
    let http = client();
    let tasks: Vec<_> = (0..16)
        .map(|_| {
            let (http, url) = (http.clone(), url.clone());
            tokio::spawn(async move {
                for _ in 0..625 {
                    let resp = http
                        .get(&url)
                        .header("authorization", bearer(AGENT_KEY))
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(resp.status(), 200);
                    resp.bytes().await.unwrap();
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let sampled = counter(&airlock, "airlock_reviews_sampled_total").await
        + counter(&airlock, "airlock_reviews_dropped_total").await;
    assert!((400..=600).contains(&sampled), "{sampled} of 10000 sampled");
}

#[tokio::test]
async fn keys_injected_headers_and_named_members_are_redacted() {
    let upstream = Upstream::start().await;
    let airlock = AirlockBuilder::new()
        .policy(
            "crm.cedar",
            "@id(\"payments\")\n@sample(\"100%\")\npermit(principal, action, resource);",
        )
        .route("crm", "/crm", &upstream.url("/api"))
        .yaml("sampling:\n  redact: [/card_number, /body/card_number]")
        .start();
    let resp = client()
        .post(airlock.url("/crm/payments?currency=eur"))
        .header("authorization", bearer(AGENT_KEY))
        .header("x-upstream-secret", "sent-by-the-agent")
        .header("airlock-confidence", "0.7")
        .header("airlock-reason", "the customer asked")
        .json(&json!({"card_number": "4111111111111111", "amount": 5}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    // The upstream got the card number; the review item must not keep it.
    assert!(String::from_utf8_lossy(&upstream.last().body).contains("4111111111111111"));
    let items = wait_reviews(&airlock, 1).await;
    assert_eq!(items.len(), 1);
    let item = &items[0];
    let text = item.to_string();
    for secret in [
        AGENT_KEY,
        "injected-secret",
        "sent-by-the-agent",
        "4111111111111111",
    ] {
        assert!(!text.contains(secret), "`{secret}` in {text}");
    }
    let header = |h: &Value, name: &str| {
        h.as_array()
            .unwrap()
            .iter()
            .find(|p| p[0] == name)
            .map(|p| p[1].clone())
    };
    let req = &item["request"];
    assert_eq!(
        header(&req["headers"], "authorization"),
        Some(json!("[redacted]"))
    );
    assert_eq!(
        header(&req["headers"], "x-upstream-secret"),
        Some(json!("[redacted]"))
    );
    assert_eq!(
        req["body"]["content"],
        json!({"card_number": "[redacted]", "amount": 5})
    );
    assert_eq!(req["query"], "currency=eur");
    let answer = &item["response"]["body"]["content"]["body"];
    assert_eq!(answer, &json!({"card_number": "[redacted]", "amount": 5}));
    assert_eq!(item["response"]["status"], 200);
    assert_eq!(item["response"]["complete"], true);
    assert_eq!(item["sampled_by"], "policy");
    assert_eq!(item["policies"], json!(["payments"]));
    assert_eq!(item["confidence"], "0.7");
    assert_eq!(item["reason"], "the customer asked");
}

/// An upstream whose `/events` sends one event, waits for `next`, then
/// sends a second and ends.
async fn signalled_stream_upstream(next: Arc<tokio::sync::Notify>) -> String {
    let app = axum::Router::new().route(
        "/events",
        axum::routing::get(move || {
            let next = next.clone();
            async move {
                let (tx, rx) =
                    tokio::sync::mpsc::channel::<Result<bytes::Bytes, std::io::Error>>(1);
                tokio::spawn(async move {
                    let _ = tx.send(Ok("data: one\n\n".into())).await;
                    next.notified().await;
                    let _ = tx.send(Ok("data: two\n\n".into())).await;
                });
                axum::response::Response::builder()
                    .header("content-type", "text/event-stream")
                    .body(axum::body::Body::from_stream(
                        tokio_stream::wrappers::ReceiverStream::new(rx),
                    ))
                    .unwrap()
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

#[tokio::test]
async fn a_sampled_event_stream_reaches_the_agent_event_by_event() {
    let next = Arc::new(tokio::sync::Notify::new());
    let upstream = signalled_stream_upstream(next.clone()).await;
    let airlock = AirlockBuilder::permitting_everything()
        .route("live", "/live", &upstream)
        .yaml("sampling:\n  rules:\n    - route: live\n      rate: 100%")
        .start();
    let mut resp = airlock.agent_get("/live/events").await;
    assert_eq!(resp.status(), 200);
    // The first event arrives while the upstream still waits to send the
    // second: the capture holds nothing back.
    let first = tokio::time::timeout(Duration::from_secs(10), resp.chunk())
        .await
        .expect("the first event was held back")
        .unwrap()
        .unwrap();
    assert_eq!(&first[..], b"data: one\n\n");
    next.notify_one();
    let mut rest = Vec::new();
    while let Some(c) = resp.chunk().await.unwrap() {
        rest.extend_from_slice(&c);
    }
    assert_eq!(rest, b"data: two\n\n");
    let items = wait_reviews(&airlock, 1).await;
    assert_eq!(items.len(), 1);
    let body = &items[0]["response"]["body"];
    assert_eq!(body["content"], "data: one\n\ndata: two\n\n");
    assert_eq!(body["truncated"], false);
    assert_eq!(items[0]["response"]["complete"], true);
}

#[tokio::test]
async fn a_claimed_item_is_judged_by_its_claimer_audited_announced_and_counted() {
    let upstream = Upstream::start().await;
    let hooks = WebhookReceiver::start().await;
    let airlock = AirlockBuilder::permitting_everything()
        .route("crm", "/crm", &upstream.url("/api"))
        .yaml("sampling:\n  reviewers: reviewers\n  rules:\n    - agent: bot\n      rate: 100%")
        .yaml(&reviewers_yaml())
        .yaml(&hooks.yaml())
        .start();
    assert_eq!(airlock.agent_get("/crm/items/7").await.status(), 200);
    let items = wait_reviews(&airlock, 1).await;
    let id = items[0]["id"].as_str().unwrap().to_string();

    // An approver outside `sampling.reviewers` sees nothing.
    let resp = client()
        .get(airlock.admin_url("/v1/reviews"))
        .header("authorization", bearer(APPROVER_TOKEN))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);

    let (status, claimed) = post(
        &airlock,
        &format!("/v1/reviews/{id}/claim"),
        RITA,
        json!({}),
    )
    .await;
    assert_eq!(status, 200, "{claimed}");
    assert_eq!(claimed["status"], "claimed");
    assert_eq!(claimed["claimed_by"], "rita");
    let (status, taken) = post(&airlock, &format!("/v1/reviews/{id}/claim"), SAM, json!({})).await;
    assert_eq!(status, 409, "{taken}");
    assert!(
        taken["message"].as_str().unwrap().contains("rita"),
        "{taken}"
    );
    let verdict = format!("/v1/reviews/{id}/verdict");
    let (status, _) = post(&airlock, &verdict, SAM, json!({"verdict": "ok"})).await;
    assert_eq!(status, 409);
    let (status, _) = post(&airlock, "/v1/reviews/next", SAM, json!({})).await;
    assert_eq!(status, 404, "nothing else is open");
    let (status, bad) = post(&airlock, &verdict, RITA, json!({"verdict": "meh"})).await;
    assert_eq!(status, 400);
    assert!(bad["message"].as_str().unwrap().contains("`meh`"), "{bad}");
    assert_eq!(
        reviews(&airlock, "&status=claimed", RITA).await.len(),
        1,
        "a refused verdict changes nothing"
    );

    let judgment =
        json!({"verdict": "bad", "note": "wrong customer", "correction": {"customer_id": "c-2"}});
    let (status, done) = post(&airlock, &verdict, RITA, judgment).await;
    assert_eq!(status, 200, "{done}");
    assert_eq!(done["status"], "done");
    assert_eq!(done["verdict"]["verdict"], "bad");
    assert_eq!(done["verdict"]["by"], "rita");
    let (status, _) = post(&airlock, &verdict, RITA, json!({"verdict": "ok"})).await;
    assert_eq!(status, 409, "a verdict is given once");

    let hook = hooks
        .wait_for("review.completed", |v| {
            v["type"] == "review.completed" && v["data"]["id"] == id.as_str()
        })
        .await
        .json();
    assert_eq!(hook["data"]["verdict"], "bad");
    assert_eq!(hook["data"]["note"], "wrong customer");
    assert_eq!(hook["data"]["correction"], json!({"customer_id": "c-2"}));
    let rec = airlock.audit_where("the review", |r| r["event"] == "review");
    assert_eq!(rec["verdict"], "bad");
    assert_eq!(rec["approver"], "rita");
    assert_eq!(rec["request_id"], items[0]["request_id"]);
    let metrics = airlock.metrics().await;
    assert!(
        metrics.contains("airlock_reviews_total{verdict=\"bad\"} 1"),
        "{metrics}"
    );
    assert_eq!(reviews(&airlock, "&status=done", SAM).await.len(), 1);
}

/// What `airlock check` prints for `builder`'s files; it must fail.
fn check_fails(builder: &AirlockBuilder) -> String {
    let config = builder.write();
    let (code, out, _) = run_cli(&["check", "--config", config.to_str().unwrap()]);
    assert_eq!(code, 1, "{out}");
    out
}

#[test]
fn check_refuses_a_malformed_rate_and_a_sample_on_a_forbid() {
    let policies = AirlockBuilder::new().policy(
        "sampled.cedar",
        "@id(\"often\")\n@sample(\"5 percent\")\npermit(principal, action, resource);\n@id(\"gate\")\n@sample(\"5%\")\nforbid(principal, action == Action::\"DELETE\", resource);\n",
    );
    let config = AirlockBuilder::permitting_everything()
        .yaml("sampling:\n  rules:\n    - route: crm\n      rate: 150%\n  redact: [card_number]");
    let out = check_fails(&policies) + &check_fails(&config);
    for expected in [
        "policy `often`: malformed `@sample`: `5 percent` is not a rate; write a share from 0 to 1 as `5%` or `0.05`",
        "policy `gate`: `@sample` only applies to a permit",
        "airlock.yaml:20:13: `sampling.rules`: `150%` is not a rate",
        "`sampling.redact`: `card_number` is not a JSON pointer",
    ] {
        assert!(out.contains(expected), "no `{expected}` in:\n{out}");
    }
}

#[tokio::test]
async fn a_reviewer_works_the_queue_from_the_command_line() {
    let upstream = Upstream::start().await;
    let airlock = AirlockBuilder::permitting_everything()
        .route("crm", "/crm", &upstream.url("/api"))
        .yaml("sampling:\n  reviewers: reviewers\n  rules:\n    - rate: 100%")
        .yaml(&reviewers_yaml())
        .start();
    assert_eq!(airlock.agent_get("/crm/orders/1").await.status(), 200);
    assert_eq!(wait_reviews(&airlock, 1).await.len(), 1);
    let admin = airlock.admin_url("");
    let cli = |args: &[&str]| {
        let mut all = vec!["reviews", "--admin", &admin, "--token", RITA];
        all.extend_from_slice(args);
        let all: Vec<String> = all.into_iter().map(str::to_string).collect();
        std::thread::spawn(move || {
            let refs: Vec<&str> = all.iter().map(String::as_str).collect();
            run_cli(&refs)
        })
        .join()
        .unwrap()
    };
    let (code, out, err) = cli(&["list"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("open") && out.contains("GET /crm/orders/1"),
        "{out}"
    );
    let (code, out, err) = cli(&["next"]);
    assert_eq!(code, 0, "{err}");
    let shown: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(shown["claimed_by"], "rita");
    let id = shown["id"].as_str().unwrap();
    let correction = airlock.dir.path().join("correction.json");
    std::fs::write(&correction, r#"{"path": "/crm/orders/2"}"#).unwrap();
    let (code, out, err) = cli(&[
        "verdict",
        id,
        "policy_gap",
        "--note",
        "should have been held",
        "--correction",
        correction.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("policy_gap (by rita)"), "{out}");
    let done = reviews(&airlock, "&status=done", RITA).await;
    assert_eq!(
        done[0]["verdict"]["correction"],
        json!({"path": "/crm/orders/2"})
    );
    let (code, _, err) = cli(&["next"]);
    assert_ne!(code, 0);
    assert!(err.contains("no review item is open"), "{err}");
}

/// An MCP server that answers every POST with one JSON-RPC result.
async fn answering_mcp_upstream() -> String {
    let app = axum::Router::new().route(
        "/mcp",
        axum::routing::post(|body: axum::Json<Value>| async move {
            axum::Json(json!({
                "jsonrpc": "2.0",
                "id": body["id"],
                "result": {"content": [{"type": "text", "text": "customer c-1: Ada"}]},
            }))
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}/mcp")
}

#[tokio::test]
async fn a_sampled_tool_call_is_kept_with_its_tool_and_answer() {
    let upstream = answering_mcp_upstream().await;
    let airlock = AirlockBuilder::permitting_everything()
        .route_yaml(&format!(
            "  - name: crm\n    prefix: /mcp/crm\n    upstream: {upstream}\n    protocol: mcp"
        ))
        .yaml("sampling:\n  rules:\n    - tool: lookup_customer\n      rate: 100%")
        .start();
    let call = |tool: &str, id: u32| {
        client()
            .post(airlock.url("/mcp/crm"))
            .header("authorization", bearer(AGENT_KEY))
            .header("accept", "application/json, text/event-stream")
            .json(&json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
                "params": {"name": tool, "arguments": {"customer_id": "c-1"}}}))
            .send()
    };
    let resp = call("lookup_customer", 1).await.unwrap();
    assert_eq!(resp.status(), 200);
    let request_id = resp.headers()["x-request-id"].to_str().unwrap().to_string();
    assert_eq!(call("delete_customer", 2).await.unwrap().status(), 200);
    let items = wait_reviews(&airlock, 1).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let items = if items.len() == 1 {
        reviews(&airlock, "", ADMIN_TOKEN).await
    } else {
        items
    };
    assert_eq!(items.len(), 1, "only the sampled tool: {items:?}");
    let item = &items[0];
    assert_eq!(item["tool"], "lookup_customer");
    assert_eq!(item["request_id"], request_id.as_str());
    assert_eq!(
        item["request"]["body"]["content"]["params"]["name"],
        "lookup_customer"
    );
    assert_eq!(
        item["response"]["body"]["content"]["result"]["content"][0]["text"],
        "customer c-1: Ada"
    );
    let by_tool = reviews(&airlock, "&tool=lookup_customer", ADMIN_TOKEN).await;
    assert_eq!(by_tool.len(), 1);
}

#[tokio::test]
async fn a_review_verdict_is_counted_in_the_report_and_written_by_feedback_export() {
    let upstream = Upstream::start().await;
    let mut airlock = AirlockBuilder::permitting_everything()
        .route("crm", "/crm", &upstream.url("/api"))
        .yaml("sampling:\n  reviewers: reviewers\n  rules:\n    - agent: bot\n      rate: 100%")
        .yaml(&reviewers_yaml())
        .start();
    assert_eq!(airlock.agent_get("/crm/items/7").await.status(), 200);
    let items = wait_reviews(&airlock, 1).await;
    let id = items[0]["id"].as_str().unwrap().to_string();
    let (status, _) = post(&airlock, "/v1/reviews/next", RITA, json!({})).await;
    assert_eq!(status, 200);
    let judgment =
        json!({"verdict": "bad", "note": "wrong customer", "correction": {"customer_id": "c-2"}});
    let (status, done) = post(
        &airlock,
        &format!("/v1/reviews/{id}/verdict"),
        RITA,
        judgment,
    )
    .await;
    assert_eq!(status, 200, "{done}");

    // The counters reach the store at the latest when Airlock stops.
    airlock.sigterm();
    assert!(airlock.wait_exit(Duration::from_secs(15)), "clean exit");
    let config = airlock.config.to_str().unwrap().to_string();
    let (code, out, err) = run_cli(&["report", "--config", &config, "--json"]);
    assert_eq!(code, 0, "{out}{err}");
    let report: Value = serde_json::from_str(&out).unwrap();
    let bad: u64 = report["rows"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["target"] == "crm")
        .map(|r| r["reviews_bad"].as_u64().unwrap())
        .sum();
    assert_eq!(bad, 1, "{report:#}");

    let (code, out, err) = run_cli(&["feedback", "export", "--config", &config]);
    assert_eq!(code, 0, "{out}{err}");
    let reviews: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|l| l["judgment"] == "review")
        .collect();
    assert_eq!(reviews.len(), 1, "{out}");
    let line = &reviews[0];
    assert_eq!(line["id"], id.as_str());
    assert_eq!(line["agent"], "bot");
    assert_eq!(line["verdict"], "bad");
    assert_eq!(line["reason"], "wrong customer");
    assert_eq!(line["judged_by"], "rita");
    assert_eq!(line["correction"], json!({"customer_id": "c-2"}));
    assert_eq!(line["request"]["path"], "/crm/items/7");
    assert!(
        !out.contains(AGENT_KEY),
        "the agent's key never reaches the export"
    );
}

#[tokio::test]
async fn a_capture_the_store_refuses_is_counted_and_reported_on_healthz() {
    let upstream = Upstream::start().await;
    let airlock = AirlockBuilder::permitting_everything()
        .route("crm", "/crm", &upstream.url("/api"))
        .yaml("sampling:\n  rules:\n    - rate: 100%")
        .start();
    // The store loses its table behind Airlock's back: the writer's insert
    // fails, and the capture must be counted, not lost silently.
    let db = rusqlite::Connection::open(airlock.dir.path().join("airlock.db")).unwrap();
    db.busy_timeout(Duration::from_secs(5)).unwrap();
    db.execute_batch("DROP TABLE reviews").unwrap();
    assert_eq!(airlock.agent_get("/crm/items/1").await.status(), 200);
    let deadline = Instant::now() + Duration::from_secs(10);
    let text = loop {
        let resp = reqwest::get(airlock.admin_url("/healthz")).await.unwrap();
        assert_eq!(resp.status(), 200);
        let text = resp.text().await.unwrap();
        if text.contains("sampling:") || Instant::now() > deadline {
            break text;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        text.contains("sampling: 1 sampled calls were not kept"),
        "{text}"
    );
    assert_eq!(counter(&airlock, "airlock_reviews_dropped_total").await, 1);
}
