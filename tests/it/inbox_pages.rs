//! The inbox's tabs beyond the pending list, driven by posting their forms
//! as a browser would (the browser scenarios are in `inbox`).

use serde_json::{json, Value};

use crate::approvals::{env_with, pending_id};
use crate::inbox::{page, post_form, sign_in};
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
