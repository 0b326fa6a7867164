//! An approval lifts what it was asked about and nothing more: a gate added
//! after it holds the call again, a deny settles it, it expires unrun,
//! approvers see the call as it will be sent, a signed callback decides
//! only the approval it names, approvers see only their groups' approvals,
//! and one agent cannot flood them.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::approvals::{
    callback, decide, pending_id, refund, show, signed, BIG_REFUNDS, BOB_TOKEN, CALLBACK_SECRET,
};
use crate::support::webhook::WebhookReceiver;
use crate::support::*;

const CRM_POLICIES: &str = include_str!("../../policies/crm.cedar");
const CAROL_TOKEN: &str = "approver-token-carol";

/// A second gate on the same refunds, for another group.
const LEGAL_GATE: &str = r#"
@id("legal-reviews-refunds")
@hold("refunds over 100 need legal's review too")
@approvers("legal")
forbid (principal, action == Action::"POST", resource == Route::"crm")
when { context.path == "/crm/refunds" && context has body && context.body has amount && context.body.amount > 100 };
"#;

/// A gate nobody is named to lift.
const UNOWNED_GATE: &str = r#"
@id("odd-customers")
@hold("refunds to c-odd need a look")
forbid (principal, action == Action::"POST", resource == Route::"crm")
when { context.path == "/crm/refunds" && context has body && context.body has customer_id && context.body.customer_id == "c-odd" };
"#;

struct Env {
    upstream: Upstream,
    hooks: WebhookReceiver,
    airlock: Airlock,
}

/// The shipped CRM policies (refunds over 100 wait for `finance`), three
/// approvers (alice: finance, bob: support, carol: legal), signed
/// callbacks, and a webhook receiver.
async fn env(approvals: &str, extra: &[(&str, &str)]) -> Env {
    let upstream = Upstream::start().await;
    let hooks = WebhookReceiver::start().await;
    let mut b = AirlockBuilder::new()
        .policy("crm.cedar", CRM_POLICIES)
        .route("crm", "/crm", &upstream.url("/api"))
        .yaml(&format!(
            "approvers:\n  - id: alice\n    token: {APPROVER_TOKEN}\n    groups: [finance]\n  - id: bob\n    token: {BOB_TOKEN}\n    groups: [support]\n  - id: carol\n    token: {CAROL_TOKEN}\n    groups: [legal]\napprovals:\n  callback_secret: {CALLBACK_SECRET}\n{approvals}"
        ))
        .yaml(&hooks.yaml());
    for (file, text) in extra {
        b = b.policy(file, text);
    }
    Env {
        upstream,
        hooks,
        airlock: b.start(),
    }
}

async fn reload_with(airlock: &Airlock, file: &str, text: &str) {
    std::fs::write(airlock.dir.path().join("policies").join(file), text).unwrap();
    let (status, v) = airlock.reload().await;
    assert_eq!(status, 200, "{v}");
}

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn marker_of(value: &str) -> String {
    format!(
        "[redacted: {} bytes, sha256 {}]",
        value.len(),
        hex::encode(Sha256::digest(value.as_bytes()))
    )
}

#[tokio::test]
async fn a_gate_added_after_the_approval_holds_the_call_again_for_what_is_missing() {
    let Env {
        upstream,
        hooks,
        airlock,
    } = env("  wait: 500ms\n", &[]).await;
    let body = json!({"amount": 250, "customer_id": "c-1"});
    let id = pending_id(&airlock, body.clone()).await;
    let (s, v) = decide(
        &airlock,
        &id,
        APPROVER_TOKEN,
        json!({"decision": "approve"}),
    )
    .await;
    assert_eq!((s, v["status"].as_str()), (200, Some("approved")), "{v}");

    reload_with(&airlock, "legal.cedar", LEGAL_GATE).await;
    let resp = refund(&airlock, body.clone()).send().await.unwrap();
    assert_eq!(
        resp.status(),
        202,
        "finance's approval does not lift legal's gate"
    );
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["approval_id"], id.as_str());
    assert_eq!(upstream.hits(), 0);

    let again = hooks
        .wait_for("the second approval.requested", |v| {
            v["type"] == "approval.requested" && v["data"]["approver_groups"] == json!(["legal"])
        })
        .await
        .json();
    assert_eq!(again["data"]["approval_id"], id.as_str());
    assert_eq!(again["data"]["lifted"][0]["by"], "alice");
    let held = show(&airlock, &id).await;
    assert_eq!(held["status"], "pending");
    assert_eq!(held["approver_groups"], json!(["legal"]));
    assert_eq!(held["gates"][0]["policy"], "legal-reviews-refunds");
    assert_eq!(held["lifted"][0]["policy"], "large-refunds-need-approval");
    assert_eq!(held["lifted"][0]["by"], "alice");

    // Finance cannot lift legal's gate; legal can, and then the call runs.
    let (s, v) = decide(
        &airlock,
        &id,
        APPROVER_TOKEN,
        json!({"decision": "approve"}),
    )
    .await;
    assert_eq!((s, v["error"].as_str()), (403, Some("wrong_group")), "{v}");
    let (s, v) = decide(&airlock, &id, CAROL_TOKEN, json!({"decision": "approve"})).await;
    assert_eq!(s, 200, "{v}");
    let resp = refund(&airlock, body).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(upstream.hits(), 1);
}

#[tokio::test]
async fn a_reload_that_denies_an_approved_call_settles_it_as_denied() {
    let Env {
        upstream, airlock, ..
    } = env("  wait: 500ms\n", &[]).await;
    let body = json!({"amount": 800, "customer_id": "c-2"});
    let id = pending_id(&airlock, body.clone()).await;
    // The approver raises the refund; nothing forbids that yet.
    let (s, v) = decide(
        &airlock,
        &id,
        APPROVER_TOKEN,
        json!({"decision": "approve", "body": {"amount": 2500, "customer_id": "c-2"}}),
    )
    .await;
    assert_eq!(s, 200, "{v}");

    // Then refunds over 1000 are forbidden. The agent's own call (800) is
    // still only held, but what would run is the approved 2500.
    reload_with(&airlock, "big.cedar", BIG_REFUNDS).await;
    let resp = refund(&airlock, body).send().await.unwrap();
    assert_eq!(resp.status(), 403);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["error"], "approval_denied", "{v}");
    assert!(
        v["reasons"][0]
            .as_str()
            .unwrap()
            .contains("never made by agents"),
        "{v}"
    );
    let settled = show(&airlock, &id).await;
    assert_eq!(settled["status"], "denied");
    assert_eq!(settled["decided_by"], "policy");
    assert_eq!(upstream.hits(), 0);
}

#[tokio::test]
async fn an_approved_call_not_run_before_expires_at_expires() {
    let quick = r#"
@id("quick-gate")
@hold("refunds to c-quick need a quick look")
@approvers("finance")
@timeout("2s")
forbid (principal, action == Action::"POST", resource == Route::"crm")
when { context.path == "/crm/refunds" && context has body && context.body has customer_id && context.body.customer_id == "c-quick" };
"#;
    let Env {
        upstream, airlock, ..
    } = env("  wait: 200ms\n", &[("quick.cedar", quick)]).await;
    let body = json!({"amount": 5, "customer_id": "c-quick"});
    let id = pending_id(&airlock, body.clone()).await;
    let (s, v) = decide(
        &airlock,
        &id,
        APPROVER_TOKEN,
        json!({"decision": "approve"}),
    )
    .await;
    assert_eq!(s, 200, "{v}");

    // Banked, never run: the approval ends at its expires_at.
    let deadline = Instant::now() + Duration::from_secs(10);
    while show(&airlock, &id).await["status"] != "expired" {
        assert!(Instant::now() < deadline, "the approved call never expired");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let resp = refund(&airlock, body).send().await.unwrap();
    assert_eq!(resp.status(), 202, "a new call needs a new approval");
    let v: Value = resp.json().await.unwrap();
    assert_ne!(v["approval_id"], id.as_str());
    assert_eq!(upstream.hits(), 0);
}

const RAW_REFUND: &str =
    r#"{"amount": 250, "reference": 123456789012345678901234567, "payout_token": "acct-attacker"}"#;

async fn held_raw_refund(airlock: &Airlock) -> String {
    let resp = client()
        .post(airlock.url("/crm/refunds"))
        .header("authorization", bearer(AGENT_KEY))
        .header("content-type", "application/json")
        .header("x-trace", "t-1")
        .header("x-api-key", "k-agent")
        .header("x-upstream-secret", "agent-sent")
        .body(RAW_REFUND)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    let v: Value = resp.json().await.unwrap();
    v["approval_id"].as_str().unwrap().to_string()
}

fn header<'a>(headers: &'a Value, name: &str) -> Option<&'a str> {
    headers
        .as_array()?
        .iter()
        .find(|h| h[0] == name)
        .and_then(|h| h[1].as_str())
}

#[tokio::test]
async fn approvers_see_the_body_as_it_will_be_sent_and_every_forwarded_header() {
    let Env { airlock, .. } = env("  wait: 200ms\n", &[]).await;
    let id = held_raw_refund(&airlock).await;
    let v = airlock
        .admin_get(&format!("/v1/approvals/{id}"), APPROVER_TOKEN)
        .await;
    assert_eq!(v["body"]["text"], RAW_REFUND, "{v}");
    assert!(!v.to_string().contains("1.2345678901234568e+26"));
    let headers = &v["headers"];
    assert_eq!(header(headers, "x-trace"), Some("t-1"), "{headers}");
    assert_eq!(
        header(headers, "x-api-key"),
        Some("k-agent"),
        "an authenticated view redacts nothing"
    );
    assert_eq!(header(headers, "content-type"), Some("application/json"));
    assert_eq!(
        header(headers, "authorization"),
        None,
        "never the agent's key"
    );
    assert_eq!(
        header(headers, "x-upstream-secret"),
        None,
        "the route injects its own value"
    );
}

#[tokio::test]
async fn webhook_redaction_says_what_it_hid() {
    let Env { hooks, airlock, .. } = env("  wait: 200ms\n", &[]).await;
    let id = held_raw_refund(&airlock).await;
    let d = hooks.wait_event("approval.requested", &id).await;
    let data = &d.json()["data"];
    let text = data["body"]["text"].as_str().unwrap();
    assert!(
        text.contains("\"reference\": 123456789012345678901234567"),
        "{text}"
    );
    let body: Value = serde_json::from_str(text).unwrap();
    assert_eq!(body["payout_token"], marker_of("acct-attacker"));
    assert_ne!(body["payout_token"], marker_of("acct-ours"));
    assert_eq!(
        header(&data["headers"], "x-api-key"),
        Some(marker_of("k-agent").as_str())
    );
    assert_eq!(header(&data["headers"], "x-trace"), Some("t-1"));
    assert!(!String::from_utf8_lossy(&d.body).contains("acct-attacker"));
}

fn callback_body(approval: &str, approver: &str) -> String {
    format!(r#"{{"decision":"approve","approver":"{approver}","approval_id":"{approval}"}}"#)
}

#[tokio::test]
async fn a_callback_signed_for_one_approval_decides_no_other() {
    let Env { airlock, .. } = env("  wait: 200ms\n", &[]).await;
    let x = pending_id(&airlock, json!({"amount": 300, "customer_id": "c-x"})).await;
    let y = pending_id(&airlock, json!({"amount": 300, "customer_id": "c-y"})).await;
    let now = now_secs();

    let for_x = callback_body(&x, "alice");
    let (msg, sig) = signed("msg_for_x", now, &for_x);
    let (s, v) = callback(&airlock, &y, &msg, now, &sig, &for_x).await;
    assert_eq!(
        (s, v["error"].as_str()),
        (403, Some("wrong_approval")),
        "{v}"
    );
    assert_eq!(show(&airlock, &y).await["status"], "pending");

    // A body that names no approval is bound to none.
    let unbound = r#"{"decision":"approve","approver":"alice"}"#;
    let (msg2, sig2) = signed("msg_unbound", now, unbound);
    let (s, v) = callback(&airlock, &y, &msg2, now, &sig2, unbound).await;
    assert_eq!(
        (s, v["error"].as_str()),
        (400, Some("malformed_decision")),
        "{v}"
    );
    assert_eq!(show(&airlock, &y).await["status"], "pending");

    // The refusal on Y did not use up X's callback.
    let (s, v) = callback(&airlock, &x, &msg, now, &sig, &for_x).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["decided_by"], "alice");
}

#[tokio::test]
async fn a_callback_must_name_an_approver_in_the_gates_groups() {
    let Env { airlock, .. } = env("  wait: 200ms\n", &[("unowned.cedar", UNOWNED_GATE)]).await;
    let finance = pending_id(&airlock, json!({"amount": 300, "customer_id": "c-f"})).await;
    let unowned = pending_id(&airlock, json!({"amount": 5, "customer_id": "c-odd"})).await;
    let now = now_secs();

    let body = callback_body(&finance, "bob");
    let (msg, sig) = signed("msg_bob_finance", now, &body);
    let (s, v) = callback(&airlock, &finance, &msg, now, &sig, &body).await;
    assert_eq!((s, v["error"].as_str()), (403, Some("wrong_group")), "{v}");

    let body = callback_body(&unowned, "bob");
    let (msg, sig) = signed("msg_bob_unowned", now, &body);
    let (s, v) = callback(&airlock, &unowned, &msg, now, &sig, &body).await;
    assert_eq!((s, v["error"].as_str()), (403, Some("admin_only")), "{v}");

    let body = callback_body(&unowned, "mallory");
    let (msg, sig) = signed("msg_mallory", now, &body);
    let (s, v) = callback(&airlock, &unowned, &msg, now, &sig, &body).await;
    assert_eq!(
        (s, v["error"].as_str()),
        (403, Some("unknown_approver")),
        "{v}"
    );

    let body = format!(r#"{{"decision":"approve","approval_id":"{unowned}"}}"#);
    let (msg, sig) = signed("msg_nobody", now, &body);
    let (s, v) = callback(&airlock, &unowned, &msg, now, &sig, &body).await;
    assert_eq!(
        (s, v["error"].as_str()),
        (400, Some("malformed_decision")),
        "{v}"
    );

    assert_eq!(show(&airlock, &finance).await["status"], "pending");
    assert_eq!(show(&airlock, &unowned).await["status"], "pending");
    let (s, _) = decide(
        &airlock,
        &unowned,
        ADMIN_TOKEN,
        json!({"decision": "approve"}),
    )
    .await;
    assert_eq!(s, 200, "the admin token decides a gate without approvers");
}

async fn listed(airlock: &Airlock, token: &str) -> Vec<String> {
    let v = airlock.admin_get("/v1/approvals", token).await;
    v["approvals"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["id"].as_str().unwrap().to_string())
        .collect()
}

async fn read_status(airlock: &Airlock, id: &str, token: &str) -> u16 {
    client()
        .get(airlock.admin_url(&format!("/v1/approvals/{id}")))
        .header("authorization", bearer(token))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test]
async fn approvers_list_and_read_only_the_approvals_of_their_groups() {
    let Env { airlock, .. } = env("  wait: 200ms\n", &[("unowned.cedar", UNOWNED_GATE)]).await;
    let finance = pending_id(&airlock, json!({"amount": 300, "customer_id": "c-f"})).await;
    let unowned = pending_id(&airlock, json!({"amount": 5, "customer_id": "c-odd"})).await;

    assert_eq!(
        listed(&airlock, APPROVER_TOKEN).await,
        vec![finance.clone()]
    );
    assert!(listed(&airlock, BOB_TOKEN).await.is_empty());
    assert_eq!(
        listed(&airlock, ADMIN_TOKEN).await,
        vec![unowned.clone(), finance.clone()]
    );

    assert_eq!(read_status(&airlock, &finance, APPROVER_TOKEN).await, 200);
    assert_eq!(read_status(&airlock, &finance, BOB_TOKEN).await, 404);
    assert_eq!(read_status(&airlock, &unowned, APPROVER_TOKEN).await, 404);
    assert_eq!(read_status(&airlock, &unowned, ADMIN_TOKEN).await, 200);
    let (s, v) = decide(
        &airlock,
        &unowned,
        APPROVER_TOKEN,
        json!({"decision": "deny", "reason": "no"}),
    )
    .await;
    assert_eq!((s, v["error"].as_str()), (403, Some("admin_only")), "{v}");
}

#[tokio::test]
async fn one_agent_cannot_flood_the_approvers() {
    let Env {
        upstream, airlock, ..
    } = env("  wait: 200ms\n  max_pending_per_agent: 2\n", &[]).await;
    let first = pending_id(&airlock, json!({"amount": 201})).await;
    pending_id(&airlock, json!({"amount": 202})).await;

    let resp = refund(&airlock, json!({"amount": 203}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 429);
    let retry: u64 = resp.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry >= 1);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["error"], "too_many_pending");

    // A call already waiting still attaches; a decided one frees a place.
    assert_eq!(pending_id(&airlock, json!({"amount": 201})).await, first);
    let (s, _) = decide(
        &airlock,
        &first,
        APPROVER_TOKEN,
        json!({"decision": "deny", "reason": "no"}),
    )
    .await;
    assert_eq!(s, 200);
    pending_id(&airlock, json!({"amount": 203})).await;
    assert_eq!(upstream.hits(), 0);
}

#[test]
fn check_warns_about_a_gate_without_approvers() {
    let b = AirlockBuilder::new()
        .policy("crm.cedar", CRM_POLICIES)
        .policy("unowned.cedar", UNOWNED_GATE)
        .route("crm", "/crm", "http://127.0.0.1:9/api");
    let config = b.write().to_string_lossy().into_owned();
    let (code, out, _) = run_cli(&["check", "--config", &config]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("warning: ")
            && out.contains("unowned.cedar:2:1: gate `odd-customers` has no `@approvers`"),
        "{out}"
    );
    assert!(!out.contains("large-refunds-need-approval"), "{out}");
}
