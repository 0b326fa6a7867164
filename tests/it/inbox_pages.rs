//! The inbox's tabs beyond the pending list, driven by posting their forms
//! as a browser would (the browser scenarios are in `inbox`).

use serde_json::{json, Value};

use crate::approvals::{decide, env_with, pending_id, refund, BOB_TOKEN};
use crate::inbox::{no_redirects, origin, page, post_form, sign_in};
use crate::mcp::{call, crm};
use crate::support::mcp::{python_agent, McpServer};
use crate::support::*;

async fn bot_pause(airlock: &Airlock) -> Value {
    let agents = airlock.admin_get("/v1/agents", ADMIN_TOKEN).await;
    agents["agents"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["id"] == "bot")
        .unwrap()["paused"]
        .clone()
}

#[tokio::test]
async fn only_operators_pause_from_the_agents_tab_and_a_pause_needs_a_reason() {
    let env = env_with("200ms", None).await;
    pending_id(&env.airlock, json!({"amount": 500})).await;

    // An approver who is not an operator neither sees nor uses the tab.
    let alice = sign_in(&env.airlock, APPROVER_TOKEN).await;
    assert!(page(&env.airlock, &alice.cookie, "/agents")
        .await
        .contains("Only operators"));
    let (status, _) = post_form(
        &env.airlock,
        &alice,
        "/agents/bot/pause",
        &[("mode", "deny"), ("reason", "mine now")],
    )
    .await;
    assert_eq!(status, 403);
    assert_eq!(bot_pause(&env.airlock).await, Value::Null);

    // The admin sees each agent, its pending hold, and the forms.
    let admin = sign_in(&env.airlock, ADMIN_TOKEN).await;
    let tab = page(&env.airlock, &admin.cookie, "/agents").await;
    assert!(tab.contains("id=\"agent-bot\""), "{tab}");
    assert!(tab.contains("<dd class=\"pending\">1</dd>"), "{tab}");
    assert!(tab.contains("id=\"pause-reason-bot\""), "{tab}");

    // A pause without a reason is refused inline, as the API refuses it.
    let (status, refused) = post_form(
        &env.airlock,
        &admin,
        "/agents/bot/pause",
        &[("mode", "hold"), ("reason", "  ")],
    )
    .await;
    assert_eq!(status, 400);
    assert!(refused.contains("a pause needs a `reason`"), "{refused}");
    assert_eq!(bot_pause(&env.airlock).await, Value::Null);

    // Paused and resumed through the forms, each audited as the API's.
    let (status, _) = post_form(
        &env.airlock,
        &admin,
        "/agents/bot/pause",
        &[("mode", "hold"), ("reason", "quiet hour")],
    )
    .await;
    assert_eq!(status, 303);
    let paused = bot_pause(&env.airlock).await;
    assert_eq!(
        (paused["mode"].as_str(), paused["by"].as_str()),
        (Some("hold"), Some("admin"))
    );
    let (status, _) = post_form(
        &env.airlock,
        &admin,
        "/agents/bot/resume",
        &[("reason", "over")],
    )
    .await;
    assert_eq!(status, 303);
    assert_eq!(bot_pause(&env.airlock).await, Value::Null);
    let resumed = env.airlock.audit_where("the inbox's resume", |r| {
        r["event"] == "override" && r["verdict"] == "resume"
    });
    assert_eq!(resumed["approver"], "admin");
    assert_eq!(resumed["reasons"], json!(["over"]));

    // Resuming what is not paused is the API's 404, shown on the tab.
    let (status, again) = post_form(&env.airlock, &admin, "/agents/bot/resume", &[]).await;
    assert_eq!(status, 404);
    assert!(again.contains("agent `bot` is not paused"), "{again}");
}

/// The one pending approval, once the agent's call is held.
async fn held_now(airlock: &Airlock) -> String {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let v = airlock
            .admin_get("/v1/approvals?status=pending", ADMIN_TOKEN)
            .await;
        if let Some(id) = v["approvals"][0]["id"].as_str() {
            return id.to_string();
        }
        assert!(std::time::Instant::now() < deadline, "no call was held");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// A refund held, decided by alice with `decision`; answers its approval
/// id once the agent has its answer.
async fn decided_refund(airlock: &Airlock, amount: u32, decision: Value) -> String {
    let waiting = tokio::spawn(refund(airlock, json!({"amount": amount})).send());
    let id = held_now(airlock).await;
    let (status, v) = decide(airlock, &id, APPROVER_TOKEN, decision).await;
    assert_eq!(status, 200, "{v}");
    waiting.await.unwrap().unwrap();
    id
}

/// The history rows of a page, each as its id and its HTML.
fn history_rows(html: &str) -> Vec<(String, String)> {
    html.split("<tr class=\"decided\" data-id=\"")
        .skip(1)
        .map(|row| {
            let (id, rest) = row.split_once('"').unwrap();
            (
                id.to_string(),
                rest.split("</tr>").next().unwrap().to_string(),
            )
        })
        .collect()
}

#[tokio::test]
async fn history_pages_decided_approvals_newest_first_with_their_outcome() {
    let env = env_with("20s", None).await;
    let approved = decided_refund(
        &env.airlock,
        500,
        json!({"decision": "approve", "reason": "checked"}),
    )
    .await;
    let denied = decided_refund(
        &env.airlock,
        600,
        json!({"decision": "deny", "reason": "paid twice"}),
    )
    .await;
    let answered = decided_refund(
        &env.airlock,
        700,
        json!({"decision": "respond", "status": 201, "body": {"refund_id": "r-9"}}),
    )
    .await;
    let still_pending = pending_in_background(&env.airlock).await;

    let alice = sign_in(&env.airlock, APPROVER_TOKEN).await;
    let first = page(&env.airlock, &alice.cookie, "/history?limit=3").await;
    let rows = history_rows(&first);
    let ids: Vec<&str> = rows.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(ids, [answered.as_str(), denied.as_str()], "{first}");
    assert!(!first.contains(&still_pending), "pending is not history");
    let (_, respond_row) = &rows[0];
    assert!(respond_row.contains("<td data-label=\"What\" class=\"what\">respond</td>"));
    assert!(
        respond_row.contains("answered 201 by a human"),
        "{respond_row}"
    );
    let (_, deny_row) = &rows[1];
    assert!(deny_row.contains("class=\"by\">alice<"), "{deny_row}");
    assert!(deny_row.contains("class=\"what\">deny<") && deny_row.contains("paid twice"));

    // The next page follows the API's cursor.
    let older = first
        .split("id=\"older\" href=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .expect("an Older link")
        .replace("&amp;", "&");
    let second = page(&env.airlock, &alice.cookie, &older).await;
    let rows = history_rows(&second);
    assert_eq!(rows.len(), 1, "{second}");
    assert_eq!(rows[0].0, approved);
    assert!(
        rows[0].1.contains("executed: the tool answered 200"),
        "{}",
        rows[0].1
    );
    assert!(!second.contains("id=\"older\""));

    // Another group's approver sees none of them.
    let bob = sign_in(&env.airlock, BOB_TOKEN).await;
    let theirs = page(&env.airlock, &bob.cookie, "/history").await;
    assert!(history_rows(&theirs).is_empty(), "{theirs}");
    let bad = page(&env.airlock, &alice.cookie, "/history?cursor=nonsense").await;
    assert!(bad.contains("not a cursor this server issued"), "{bad}");
}

/// A refund left held (its agent still waiting); answers its id.
async fn pending_in_background(airlock: &Airlock) -> String {
    let call = refund(airlock, json!({"amount": 800})).send();
    tokio::spawn(async move {
        let _ = call.await;
    });
    held_now(airlock).await
}

#[tokio::test]
async fn a_held_tool_call_is_answered_in_the_tools_place_from_its_page() {
    let server = McpServer::python();
    let airlock = crm(&server);
    let url = airlock.url("/mcp/crm");
    let refund = json!({"calls": [
        {"name": "issue_refund", "args": {"customer_id": "c-1", "amount": 500}},
    ]});
    let first = python_agent(&url, refund.clone()).await;
    assert_eq!(call(&first, "issue_refund")["is_error"], true, "{first}");
    let id = held_now(&airlock).await;

    // An MCP call's page asks for a result, not a status.
    let admin = sign_in(&airlock, ADMIN_TOKEN).await;
    let held = page(&airlock, &admin.cookie, &format!("/approvals/{id}")).await;
    assert!(held.contains("Tool result (JSON)"), "{held}");
    assert!(!held.contains("id=\"answer-status\""));

    // A result that is no tool result is the API's 400, shown inline.
    let respond = format!("/approvals/{id}/respond");
    let (status, refused) =
        post_form(&airlock, &admin, &respond, &[("answer", r#"{"ok": true}"#)]).await;
    assert_eq!(status, 400, "{refused}");
    assert!(refused.contains("id=\"error\""), "{refused}");
    // What was typed stays in the box, escaped.
    assert!(refused.contains("{&#34;ok&#34;: true}"), "{refused}");

    let result = r#"{"content": [{"type": "text", "text": "refund R-8 issued by hand"}],
        "structuredContent": {"result": "refund R-8 issued by hand"}}"#;
    let (status, _) = post_form(
        &airlock,
        &admin,
        &respond,
        &[("answer", result), ("reason", "done by phone")],
    )
    .await;
    assert_eq!(status, 303);
    let again = python_agent(&url, refund).await;
    let answered = call(&again, "issue_refund");
    assert_eq!(answered["is_error"], false, "{again}");
    assert_eq!(answered["text"], "refund R-8 issued by hand");
}

const RITA: &str = "reviewer-token-rita";

/// An airlock sampling every call of `bot` to `crm`, with reviewer rita and
/// alice, an approver who is not one; one call made and sampled.
async fn sampled_call(upstream: &Upstream) -> (Airlock, String) {
    let airlock = AirlockBuilder::permitting_everything()
        .route("crm", "/crm", &upstream.url("/api"))
        .yaml("sampling:\n  reviewers: reviewers\n  rules:\n    - agent: bot\n      rate: 100%")
        .yaml(&format!(
            "approvers:\n  - id: rita\n    token: {RITA}\n    groups: [reviewers]\n  - id: alice\n    token: {APPROVER_TOKEN}\n    groups: [finance]\n"
        ))
        .start();
    assert_eq!(airlock.agent_get("/crm/items/7?full=1").await.status(), 200);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let v = airlock.admin_get("/v1/reviews", ADMIN_TOKEN).await;
        if let Some(id) = v["reviews"][0]["id"].as_str() {
            return (airlock, id.to_string());
        }
        assert!(std::time::Instant::now() < deadline, "no call was sampled");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_reviewer_claims_the_next_call_from_the_reviews_tab_and_judges_it() {
    let upstream = Upstream::start().await;
    let (airlock, id) = sampled_call(&upstream).await;
    let rita = sign_in(&airlock, RITA).await;
    let tab = page(&airlock, &rita.cookie, "/reviews").await;
    assert!(tab.contains("<a href=\"/reviews\">Reviews</a>"), "{tab}");
    assert!(tab.contains(&format!("data-id=\"{id}\"")), "{tab}");
    assert!(tab.contains("crm"), "{tab}");

    // A form without the CSRF token claims nothing.
    let forged = no_redirects()
        .post(airlock.admin_url("/reviews/next"))
        .header("cookie", &rita.cookie)
        .header("origin", origin(&airlock))
        .form(&[("csrf", "wrong")])
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 403);
    let shown = airlock
        .admin_get(&format!("/v1/reviews/{id}"), ADMIN_TOKEN)
        .await;
    assert_eq!(shown["status"], "open");

    let (status, _) = post_form(&airlock, &rita, "/reviews/next", &[]).await;
    assert_eq!(status, 303);
    let item = page(&airlock, &rita.cookie, &format!("/reviews/{id}")).await;
    assert!(item.contains("GET /crm/items/7?full=1"), "{item}");
    assert!(item.contains("Status 200"), "{item}");
    assert!(item.contains("value=\"policy_gap\""), "{item}");

    // A correction that is not JSON is refused inline and changes nothing.
    let verdict = format!("/reviews/{id}/verdict");
    let (status, refused) = post_form(
        &airlock,
        &rita,
        &verdict,
        &[("verdict", "bad"), ("correction", "{nope")],
    )
    .await;
    assert_eq!(status, 400);
    assert!(refused.contains("the correction is not JSON"), "{refused}");

    let (status, _) = post_form(
        &airlock,
        &rita,
        &verdict,
        &[("verdict", "bad"), ("note", "wrong <customer>")],
    )
    .await;
    assert_eq!(status, 303);
    let done = airlock
        .admin_get(&format!("/v1/reviews/{id}"), ADMIN_TOKEN)
        .await;
    assert_eq!(done["status"], "done");
    assert_eq!(done["verdict"]["verdict"], "bad");
    assert_eq!(done["verdict"]["by"], "rita");
    assert_eq!(done["verdict"]["note"], "wrong <customer>");
    let rec = airlock.audit_where("the inbox's verdict", |r| r["event"] == "review");
    assert_eq!(rec["approver"], "rita");
    let shown = page(&airlock, &rita.cookie, &format!("/reviews/{id}")).await;
    assert!(shown.contains("wrong &#60;customer&#62;"), "{shown}");
}

#[tokio::test]
async fn an_approver_who_is_not_a_reviewer_gets_no_reviews_tab() {
    let upstream = Upstream::start().await;
    let (airlock, id) = sampled_call(&upstream).await;
    let alice = sign_in(&airlock, APPROVER_TOKEN).await;
    let home = page(&airlock, &alice.cookie, "/").await;
    assert!(!home.contains("href=\"/reviews\""), "{home}");
    assert!(page(&airlock, &alice.cookie, "/reviews")
        .await
        .contains("Only reviewers"));
    let (status, _) = post_form(&airlock, &alice, "/reviews/next", &[]).await;
    assert_eq!(status, 403);
    let shown = airlock
        .admin_get(&format!("/v1/reviews/{id}"), ADMIN_TOKEN)
        .await;
    assert_eq!(shown["status"], "open");
}
