//! Human approval end to end: real binary, real SQLite file, real upstream,
//! real webhook receiver (verified with the `standardwebhooks` Python
//! package too).

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::support::webhook::{WebhookReceiver, WEBHOOK_SECRET};
use crate::support::*;

const CRM_POLICIES: &str = include_str!("../../policies/crm.cedar");
pub(crate) const BOB_TOKEN: &str = "approver-token-bob";
pub(crate) const CALLBACK_SECRET: &str = "whsec_c2VjcmV0LWZvci1jYWxsYmFja3MtMTIzNDU2Nzg=";

/// A plain forbid that no approval lifts: refunds over 1000.
pub(crate) const BIG_REFUNDS: &str = r#"
@id("no-huge-refunds")
@reason("refunds over 1000 are never made by agents")
forbid (principal, action == Action::"POST", resource == Route::"crm")
when { context.path == "/crm/refunds" && context has body && context.body has amount && context.body.amount > 1000 };
"#;

pub(crate) struct Env {
    pub upstream: Upstream,
    pub hooks: WebhookReceiver,
    pub airlock: Airlock,
}

pub(crate) async fn env_with(wait: &str, extra_policy: Option<(&str, &str)>) -> Env {
    let upstream = Upstream::start().await;
    let hooks = WebhookReceiver::start().await;
    let mut b = AirlockBuilder::new()
        .policy("crm.cedar", CRM_POLICIES)
        .route("crm", "/crm", &upstream.url("/api"))
        .yaml(&format!(
            "approvers:\n  - id: alice\n    token: {APPROVER_TOKEN}\n    groups: [finance]\n  - id: bob\n    token: {BOB_TOKEN}\n    groups: [support]\napprovals:\n  wait: {wait}\n  callback_secret: {CALLBACK_SECRET}\n"
        ))
        .yaml(&hooks.yaml());
    if let Some((file, text)) = extra_policy {
        b = b.policy(file, text);
    }
    let airlock = b.start();
    Env {
        upstream,
        hooks,
        airlock,
    }
}

pub(crate) fn refund(airlock: &Airlock, body: Value) -> reqwest::RequestBuilder {
    client()
        .post(airlock.url("/crm/refunds"))
        .header("authorization", bearer(AGENT_KEY))
        .json(&body)
}

pub(crate) async fn decide(airlock: &Airlock, id: &str, token: &str, body: Value) -> (u16, Value) {
    let resp = client()
        .post(airlock.admin_url(&format!("/v1/approvals/{id}/decision")))
        .header("authorization", bearer(token))
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// A JSON body as an approver is shown it (`{"text": ...}`), parsed.
pub(crate) fn as_sent(shown: &Value) -> Value {
    serde_json::from_str(shown["text"].as_str().expect("a text body")).unwrap()
}

pub(crate) async fn show(airlock: &Airlock, id: &str) -> Value {
    airlock
        .admin_get(&format!("/v1/approvals/{id}"), ADMIN_TOKEN)
        .await
}

/// Sends a held call and expects 202 pending; returns the approval id.
pub(crate) async fn pending_id(airlock: &Airlock, body: Value) -> String {
    let resp = refund(airlock, body).send().await.unwrap();
    assert_eq!(resp.status(), 202);
    assert!(resp.headers().contains_key("retry-after"));
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["status"], "pending");
    v["approval_id"].as_str().unwrap().to_string()
}

/// Verifies a delivery with the reference implementation (PyPI
/// `standardwebhooks`, in the test peers' venv).
fn python_verifies(d: &crate::support::webhook::Delivery, secret: &str) -> bool {
    let script = r#"
import sys
from standardwebhooks import Webhook
secret, msg_id, ts, sig = sys.argv[1:5]
Webhook(secret).verify(sys.stdin.buffer.read(), {"webhook-id": msg_id, "webhook-timestamp": ts, "webhook-signature": sig})
print("verified")
"#;
    let python = crate::support::peers::python();
    let mut child = Command::new(&python)
        .args(["-c", script, secret, &d.id, &d.timestamp, &d.signature])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "cannot start the standardwebhooks verifier ({}): {e}",
                python.display()
            )
        });
    use std::io::Write;
    child.stdin.take().unwrap().write_all(&d.body).unwrap();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    // A verifier that could not even run is a broken peer, not a refusal.
    assert!(
        !stderr.contains("ModuleNotFoundError") && !stderr.contains("ImportError"),
        "the standardwebhooks verifier could not start ({} -c ...):\n{stderr}",
        python.display()
    );
    if !out.status.success() {
        eprintln!("standardwebhooks refused: {stderr}");
    }
    out.status.success() && String::from_utf8_lossy(&out.stdout).contains("verified")
}

#[tokio::test]
async fn hold_signed_webhook_approve_then_the_agent_gets_the_upstream_answer_once() {
    let Env {
        upstream,
        hooks,
        airlock,
    } = env_with("20s", None).await;
    let body = json!({"amount": 500, "customer_id": "c-1", "api_token": "tok-secret"});
    let waiting = tokio::spawn(refund(&airlock, body.clone()).send());

    let requested = hooks
        .wait_for("approval.requested", |v| v["type"] == "approval.requested")
        .await;
    let key = airlock::notify::signing::decode_secret(WEBHOOK_SECRET).unwrap();
    let ts: i64 = requested.timestamp.parse().unwrap();
    airlock::notify::signing::verify(
        &key,
        Some(&requested.id),
        Some(&requested.timestamp),
        Some(&requested.signature),
        &requested.body,
        ts,
    )
    .expect("signature verifies");
    assert!(
        python_verifies(&requested, WEBHOOK_SECRET),
        "standardwebhooks rejected the signature"
    );
    let mut tampered = requested.clone();
    tampered.body = tampered.body.replace_str();
    assert!(!python_verifies(&tampered, WEBHOOK_SECRET));

    let payload = requested.json();
    let id = payload["data"]["approval_id"].as_str().unwrap().to_string();
    let shown = as_sent(&payload["data"]["body"]);
    assert_eq!(shown["amount"], 500);
    assert!(
        shown["api_token"]
            .as_str()
            .unwrap()
            .starts_with("[redacted: 10 bytes, sha256 "),
        "{shown}"
    );
    assert!(!String::from_utf8_lossy(&requested.body).contains("tok-secret"));
    assert!(payload["data"]["decide_url"]
        .as_str()
        .unwrap()
        .ends_with(&format!("/v1/approvals/{id}/decision")));
    assert_eq!(upstream.hits(), 0, "nothing is forwarded before approval");

    let (status, decided) = decide(
        &airlock,
        &id,
        APPROVER_TOKEN,
        json!({"decision": "approve", "reason": "customer verified"}),
    )
    .await;
    assert_eq!(status, 200, "{decided}");
    assert_eq!(decided["status"], "approved");

    let resp = waiting.await.unwrap().unwrap();
    assert_eq!(resp.status(), 200);
    let echoed: Value = resp.json().await.unwrap();
    assert_eq!(echoed["body"], body);
    assert_eq!(upstream.hits(), 1);
    hooks.wait_event("approval.decided", &id).await;

    // An identical call within the replay window gets the recorded outcome.
    let again = refund(&airlock, body.clone()).send().await.unwrap();
    assert_eq!(again.status(), 200);
    assert_eq!(again.headers()["airlock-replayed"], "true");
    let v: Value = again.json().await.unwrap();
    assert_eq!(v["approval_id"], id.as_str());
    assert_eq!(upstream.hits(), 1, "an approved call runs exactly once");

    let rec = airlock.audit_where("the approval", |r| {
        r["event"] == "approval" && r["approval_id"] == id.as_str()
    });
    assert_eq!(rec["approver"], "alice");
    assert_eq!(rec["reasons"], json!(["customer verified"]));
    assert_eq!(show(&airlock, &id).await["status"], "executed");
}

trait ReplaceStr {
    fn replace_str(&self) -> Vec<u8>;
}

impl ReplaceStr for Vec<u8> {
    fn replace_str(&self) -> Vec<u8> {
        String::from_utf8_lossy(self)
            .replace("500", "501")
            .into_bytes()
    }
}

#[tokio::test]
async fn deny_reaches_the_agent_with_the_approvers_reason() {
    let Env {
        upstream, airlock, ..
    } = env_with("20s", None).await;
    let waiting = tokio::spawn(refund(&airlock, json!({"amount": 300})).send());
    let id = first_pending(&airlock).await;
    let (status, _) = decide(
        &airlock,
        &id,
        APPROVER_TOKEN,
        json!({"decision": "deny", "reason": "duplicate refund"}),
    )
    .await;
    assert_eq!(status, 200);
    let resp = waiting.await.unwrap().unwrap();
    assert_eq!(resp.status(), 403);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["error"], "approval_denied");
    assert_eq!(v["reasons"], json!(["duplicate refund"]));
    assert!(v["message"].as_str().unwrap().contains("alice"));
    assert_eq!(upstream.hits(), 0);
}

async fn first_pending(airlock: &Airlock) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let v: Value = airlock
            .admin_get("/v1/approvals?status=pending", APPROVER_TOKEN)
            .await;
        if let Some(id) = v["approvals"][0]["id"].as_str() {
            return id.to_string();
        }
        assert!(Instant::now() < deadline, "no pending approval appeared");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn approve_with_edits_is_rechecked_and_a_denied_edit_leaves_it_pending() {
    let Env {
        upstream, airlock, ..
    } = env_with("1s", Some(("big.cedar", BIG_REFUNDS))).await;
    let id = pending_id(&airlock, json!({"amount": 800, "customer_id": "c-9"})).await;

    let (status, v) = decide(
        &airlock,
        &id,
        APPROVER_TOKEN,
        json!({"decision": "approve", "body": {"amount": 5000, "customer_id": "c-9"}}),
    )
    .await;
    assert_eq!(status, 422, "{v}");
    assert_eq!(v["error"], "edit_denied");
    assert!(
        v["message"].as_str().unwrap().contains("no-huge-refunds"),
        "{v}"
    );
    assert_eq!(show(&airlock, &id).await["status"], "pending");

    let (status, v) = decide(&airlock, &id, APPROVER_TOKEN, json!({"decision": "approve", "reason": "partial refund", "body": {"amount": 150, "customer_id": "c-9"}})).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(as_sent(&v["edited_body"])["amount"], 150);

    // The agent retries the call it made; the approved edit is what runs.
    let resp = refund(&airlock, json!({"customer_id": "c-9", "amount": 800}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        serde_json::from_slice::<Value>(&upstream.last().body).unwrap()["amount"],
        150
    );
    assert_eq!(upstream.hits(), 1);

    let rec = airlock.audit_where("the approval", |r| {
        r["event"] == "approval" && r["approval_id"] == id.as_str() && r["verdict"] == "approve"
    });
    assert_eq!(as_sent(&rec["extra"]["original_body"])["amount"], 800);
    assert_eq!(as_sent(&rec["extra"]["edited_body"])["amount"], 150);
}

#[tokio::test]
async fn a_plain_forbid_added_by_reload_while_waiting_wins_over_approval() {
    let Env {
        upstream, airlock, ..
    } = env_with("20s", None).await;
    let waiting = tokio::spawn(refund(&airlock, json!({"amount": 2500})).send());
    let id = first_pending(&airlock).await;
    std::fs::write(airlock.dir.path().join("policies/big.cedar"), BIG_REFUNDS).unwrap();
    let reload = client()
        .post(airlock.admin_url("/v1/reload"))
        .header("authorization", bearer(ADMIN_TOKEN))
        .send()
        .await
        .unwrap();
    assert_eq!(reload.status(), 200);

    let (status, v) = decide(
        &airlock,
        &id,
        APPROVER_TOKEN,
        json!({"decision": "approve"}),
    )
    .await;
    assert_eq!(status, 409, "{v}");
    assert_eq!(v["error"], "now_denied");
    let resp = waiting.await.unwrap().unwrap();
    assert_eq!(resp.status(), 403);
    let v: Value = resp.json().await.unwrap();
    assert!(
        v["reasons"][0]
            .as_str()
            .unwrap()
            .contains("never made by agents"),
        "{v}"
    );
    assert_eq!(upstream.hits(), 0);
}

#[tokio::test]
async fn an_unanswered_approval_expires_and_fails_closed() {
    let gate = r#"
@id("quick-gate")
@hold("tiny refunds to c-exp need a look")
@approvers("finance")
@timeout("2s")
forbid (principal, action == Action::"POST", resource == Route::"crm")
when { context.path == "/crm/refunds" && context has body && context.body has customer_id && context.body.customer_id == "c-exp" };
"#;
    let Env {
        upstream,
        hooks,
        airlock,
    } = env_with("10s", Some(("quick.cedar", gate))).await;
    let started = Instant::now();
    let resp = refund(&airlock, json!({"amount": 5, "customer_id": "c-exp"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "the wait must end at expiry"
    );
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["error"], "approval_expired");
    let id = v["approval_id"].as_str().unwrap().to_string();
    hooks.wait_event("approval.expired", &id).await;
    let (status, v) = decide(
        &airlock,
        &id,
        APPROVER_TOKEN,
        json!({"decision": "approve"}),
    )
    .await;
    assert_eq!(status, 409, "{v}");
    assert_eq!(upstream.hits(), 0);
}

#[tokio::test]
async fn retries_attach_by_fingerprint_or_header_and_a_foreign_id_is_409() {
    let Env {
        upstream, airlock, ..
    } = env_with("1s", None).await;
    let id = pending_id(&airlock, json!({"amount": 400, "customer_id": "c-2"})).await;
    // Same call, keys in another order: same approval.
    let again = pending_id(&airlock, json!({"customer_id": "c-2", "amount": 400})).await;
    assert_eq!(again, id);
    let with_header = refund(&airlock, json!({"amount": 400, "customer_id": "c-2"}))
        .header("airlock-approval", &id)
        .send()
        .await
        .unwrap();
    assert_eq!(with_header.status(), 202);
    let other = refund(&airlock, json!({"amount": 401, "customer_id": "c-2"}))
        .header("airlock-approval", &id)
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), 409);
    assert_eq!(
        other.json::<Value>().await.unwrap()["error"],
        "approval_mismatch"
    );
    let unknown = refund(&airlock, json!({"amount": 400, "customer_id": "c-2"}))
        .header("airlock-approval", "01900000-0000-7000-8000-000000000000")
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 404);
    let list: Value = airlock
        .admin_get("/v1/approvals?status=pending", ADMIN_TOKEN)
        .await;
    assert_eq!(list["approvals"].as_array().unwrap().len(), 1);

    // Two identical calls racing each other share one approval.
    let (a, b) = tokio::join!(
        refund(&airlock, json!({"amount": 555})).send(),
        refund(&airlock, json!({"amount": 555})).send()
    );
    let a: Value = a.unwrap().json().await.unwrap();
    let b: Value = b.unwrap().json().await.unwrap();
    assert!(a["approval_id"].is_string());
    assert_eq!(a["approval_id"], b["approval_id"]);
    assert_eq!(upstream.hits(), 0);
}

#[tokio::test]
async fn an_agent_that_hangs_up_never_has_its_call_run_without_it() {
    let Env {
        upstream, airlock, ..
    } = env_with("20s", None).await;
    let impatient = reqwest::Client::builder()
        .timeout(Duration::from_millis(500))
        .build()
        .unwrap();
    let body = json!({"amount": 700});
    let gone = impatient
        .post(airlock.url("/crm/refunds"))
        .header("authorization", bearer(AGENT_KEY))
        .json(&body)
        .send()
        .await;
    assert!(gone.is_err(), "the client gave up");
    let id = first_pending(&airlock).await;
    let (status, _) = decide(
        &airlock,
        &id,
        APPROVER_TOKEN,
        json!({"decision": "approve"}),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(show(&airlock, &id).await["status"], "approved");
    assert_eq!(
        upstream.hits(),
        0,
        "approved, but nobody is there to receive the answer"
    );

    let resp = refund(&airlock, body).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(upstream.hits(), 1);
}

#[tokio::test]
async fn decisions_need_the_right_approver_and_bad_input_changes_nothing() {
    let Env { airlock, .. } = env_with("1s", None).await;
    let id = pending_id(&airlock, json!({"amount": 900})).await;
    let before = show(&airlock, &id).await;

    let (s, v) = decide(&airlock, &id, AGENT_KEY, json!({"decision": "approve"})).await;
    assert_eq!((s, v["error"].as_str()), (403, Some("agent_cannot_decide")));
    let (s, v) = decide(&airlock, &id, BOB_TOKEN, json!({"decision": "approve"})).await;
    assert_eq!((s, v["error"].as_str()), (403, Some("wrong_group")), "{v}");
    let (s, v) = decide(&airlock, &id, "not-a-token", json!({"decision": "approve"})).await;
    assert_eq!((s, v["error"].as_str()), (401, Some("unauthenticated")));
    let (s, v) = decide(
        &airlock,
        "01900000-0000-7000-8000-000000000000",
        APPROVER_TOKEN,
        json!({"decision": "approve"}),
    )
    .await;
    assert_eq!((s, v["error"].as_str()), (404, Some("not_found")));
    let (s, v) = decide(&airlock, &id, APPROVER_TOKEN, json!({"decision": "maybe"})).await;
    assert_eq!((s, v["error"].as_str()), (400, Some("malformed_decision")));
    let (s, v) = decide(&airlock, &id, APPROVER_TOKEN, json!({"decision": "deny"})).await;
    assert_eq!(
        (s, v["error"].as_str()),
        (400, Some("invalid_decision")),
        "a denial needs a reason"
    );
    let raw = client()
        .post(airlock.admin_url(&format!("/v1/approvals/{id}/decision")))
        .header("authorization", bearer(APPROVER_TOKEN))
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(raw.status(), 400);
    assert_eq!(
        raw.json::<Value>().await.unwrap()["error"],
        "malformed_decision"
    );
    assert_eq!(show(&airlock, &id).await, before, "refusals change nothing");

    let (s, _) = decide(
        &airlock,
        &id,
        APPROVER_TOKEN,
        json!({"decision": "deny", "reason": "no"}),
    )
    .await;
    assert_eq!(s, 200);
    let (s, v) = decide(&airlock, &id, ADMIN_TOKEN, json!({"decision": "approve"})).await;
    assert_eq!((s, v["error"].as_str()), (409, Some("already_decided")));
    assert_eq!(show(&airlock, &id).await["status"], "denied");
}

pub(crate) fn signed(id: &str, ts: i64, body: &str) -> (String, String) {
    let key = airlock::notify::signing::decode_secret(CALLBACK_SECRET).unwrap();
    (
        id.to_string(),
        airlock::notify::signing::sign(&key, id, ts, body.as_bytes()),
    )
}

pub(crate) async fn callback(
    airlock: &Airlock,
    approval: &str,
    msg_id: &str,
    ts: i64,
    sig: &str,
    body: &str,
) -> (u16, Value) {
    let resp = client()
        .post(airlock.admin_url(&format!("/v1/approvals/{approval}/decision")))
        .header("webhook-id", msg_id)
        .header("webhook-timestamp", ts.to_string())
        .header("webhook-signature", sig)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    (
        resp.status().as_u16(),
        resp.json().await.unwrap_or(Value::Null),
    )
}

#[tokio::test]
async fn signed_callbacks_decide_once_and_bad_or_replayed_signatures_are_401() {
    let Env { airlock, .. } = env_with("1s", None).await;
    let id = pending_id(&airlock, json!({"amount": 650})).await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let body = &format!(
        r#"{{"decision":"approve","reason":"via chat","approver":"alice","approval_id":"{id}"}}"#
    );

    let (msg, _) = signed("msg_wrong", now, body);
    let (s, v) = callback(
        &airlock,
        &id,
        &msg,
        now,
        "v1,AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
        body,
    )
    .await;
    assert_eq!((s, v["error"].as_str()), (401, Some("bad_signature")));
    let (msg, sig) = signed("msg_old", now - 600, body);
    let (s, v) = callback(&airlock, &id, &msg, now - 600, &sig, body).await;
    assert_eq!(
        (s, v["error"].as_str()),
        (401, Some("bad_signature")),
        "{v}"
    );
    assert_eq!(show(&airlock, &id).await["status"], "pending");

    let (msg, sig) = signed("msg_good", now, body);
    let (s, v) = callback(&airlock, &id, &msg, now, &sig, body).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["decided_by"], "alice");
    let (s, v) = callback(&airlock, &id, &msg, now, &sig, body).await;
    assert_eq!((s, v["error"].as_str()), (401, Some("replayed")));
}
