//! Replicas on PostgreSQL through faults: the database restarting under
//! held calls (on a throwaway cluster of the test's own), and a replica
//! killed while it delivers a webhook to a receiver that was down.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::support::pg_instance::PgInstance;
use crate::support::replicas::{sigkill, PgSchema};
use crate::support::webhook::{WebhookReceiver, WEBHOOK_SECRET};
use crate::support::*;

/// Every call is allowed, and every POST waits for a human.
const POLICIES: &str = r#"
@id("all") permit(principal, action, resource);
@id("posts-wait") @hold("posts wait for a human") forbid(principal, action == Action::"POST", resource);
"#;

/// A replica of Airlock on `store`, in front of `upstream`.
fn replica(store: &str, upstream: &Upstream, extra: &str) -> Airlock {
    AirlockBuilder::new()
        .policy("posts.cedar", POLICIES)
        .route("crm", "/crm", &upstream.url("/api"))
        .store(store)
        .yaml("approvals:\n  wait: 4s\n")
        .yaml(extra)
        .start()
}

fn refund(airlock: &Airlock, amount: u32) -> reqwest::RequestBuilder {
    client()
        .post(airlock.url("/crm/refunds"))
        .header("authorization", bearer(AGENT_KEY))
        .json(&json!({ "amount": amount }))
}

async fn decide(airlock: &Airlock, id: &str, approve: bool) -> (u16, Value) {
    let body = if approve {
        json!({"decision": "approve"})
    } else {
        json!({"decision": "deny", "reason": "not this one"})
    };
    let resp = client()
        .post(airlock.admin_url(&format!("/v1/approvals/{id}/decision")))
        .header("authorization", bearer(ADMIN_TOKEN))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.status() == 503,
        resp.headers().contains_key("retry-after")
    );
    json_of(resp).await
}

/// The ids of the pending approvals, once there are `n`.
async fn pending(airlock: &Airlock, n: usize) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let v = airlock
            .admin_get("/v1/approvals?status=pending", ADMIN_TOKEN)
            .await;
        let ids: Vec<String> = v["approvals"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|a| a["id"].as_str().map(str::to_string))
            .collect();
        if ids.len() >= n {
            return ids;
        }
        assert!(Instant::now() < deadline, "{n} pending approvals: {v}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn json_of(resp: reqwest::Response) -> (u16, Value) {
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn postgres_going_away_fails_new_holds_closed_and_its_return_needs_no_airlock_restart() {
    let pg = PgInstance::start();
    let upstream = Upstream::start().await;
    let a = replica(&pg.url(), &upstream, "");
    let b = replica(&pg.url(), &upstream, "");

    // An agent waits on replica A for its held refund.
    let waiting = tokio::spawn(refund(&a, 1).send());
    let held = pending(&b, 1).await.remove(0);

    pg.stop();

    // A new hold cannot be stored: refused, and the refusal is audited.
    let (status, refused) = json_of(refund(&a, 2).send().await.unwrap()).await;
    assert_eq!(
        (status, &refused["error"]),
        (503, &json!("store_unavailable"))
    );
    a.audit_where("the refused hold", |r| {
        r["error"] == "store_unavailable" && r["status"] == 503
    });
    // So is a decision: the approver is told to try again shortly.
    let (status, refused) = decide(&b, &held, true).await;
    assert_eq!(
        (status, &refused["error"]),
        (503, &json!("store_unavailable"))
    );
    // Calls the policies allow need no store.
    assert_eq!(a.agent_get("/crm/customers/7").await.status(), 200);
    // The waiting agent is told its approval is still pending.
    let (status, answer) = json_of(waiting.await.unwrap().unwrap()).await;
    assert_eq!(status, 202, "{answer}");
    assert_eq!(answer["approval_id"], json!(held));

    pg.start_again();

    // Without restarting either replica: a new hold is stored...
    let (status, stored) = json_of(refund(&a, 3).send().await.unwrap()).await;
    assert_eq!(status, 202, "{stored}");
    assert_eq!(pending(&b, 2).await.len(), 2);
    // ...and an agent waiting on A is released by a decision taken on B,
    // which reaches A through its reconnected listener.
    let released = tokio::spawn(refund(&a, 1).send());
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(decide(&b, &held, true).await.0, 200);
    let (status, ran) = json_of(released.await.unwrap().unwrap()).await;
    assert_eq!(status, 200, "{ran}");
    assert_eq!(
        upstream.hits(),
        2,
        "the read, then the approved refund once"
    );
}

/// Checks every delivery with the `standardwebhooks` library, and returns
/// what is left after deduplicating by `webhook-id`: `(type, approval)` per
/// event, in the order first received.
fn verified_events(deliveries: &[crate::support::webhook::Delivery]) -> Vec<(String, String)> {
    let script = r#"
import json, sys
from standardwebhooks import Webhook
hook = Webhook(sys.argv[1])
seen, events = set(), []
for d in json.load(sys.stdin):
    payload = hook.verify(d["body"].encode(), {"webhook-id": d["id"], "webhook-timestamp": d["timestamp"], "webhook-signature": d["signature"]})
    if d["id"] in seen:
        continue
    seen.add(d["id"])
    events.append([payload["type"], payload["data"]["approval_id"]])
print(json.dumps(events))
"#;
    let input: Vec<Value> = deliveries
        .iter()
        .map(|d| {
            json!({"id": d.id, "timestamp": d.timestamp, "signature": d.signature,
                   "body": String::from_utf8_lossy(&d.body)})
        })
        .collect();
    let python = crate::support::peers::python();
    let mut child = Command::new(&python)
        .args(["-c", script, WEBHOOK_SECRET])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start `{} -c ...`: {e}", python.display()));
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(json!(input).to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "standardwebhooks refused a delivery:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("the verifier prints JSON")
}

/// The events received, verified and deduplicated, once there are `n`
/// (sorted); `replica` shows the outbox if they never come.
async fn arrived(hooks: &WebhookReceiver, n: usize, replica: &Airlock) -> Vec<(String, String)> {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let mut events = verified_events(&hooks.deliveries());
        events.sort();
        if events.len() >= n {
            return events;
        }
        assert!(
            Instant::now() < deadline,
            "only {events:?} arrived; the outbox has {}",
            replica
                .admin_get("/v1/webhooks/deliveries", ADMIN_TOKEN)
                .await
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn a_replica_killed_mid_delivery_leaves_every_webhook_to_arrive_once() {
    let store = PgSchema::fresh().await.url;
    let upstream = Upstream::start().await;
    // The receiver is down: its port is known, nothing listens on it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let hooks_yaml = format!(
        "webhooks:\n  - url: http://{port}/hook\n    secret: {WEBHOOK_SECRET}\n    max_attempts: 50\n"
    );
    let mut a = replica(&store, &upstream, &hooks_yaml);

    // Three calls held on A; one approved, one denied.
    let calls = [10, 20, 30].map(|amount| tokio::spawn(refund(&a, amount).send()));
    for call in calls {
        assert_eq!(call.await.unwrap().unwrap().status(), 202);
    }
    let ids = pending(&a, 3).await;
    assert_eq!(decide(&a, &ids[0], true).await.0, 200);
    assert_eq!(decide(&a, &ids[1], false).await.0, 200);

    // The receiver comes up and takes A's next attempt without answering:
    // A is mid-delivery, holding the claim, when it is killed.
    let hooks = WebhookReceiver::start_on(port).await;
    hooks.set_stalling(true);
    let deadline = Instant::now() + Duration::from_secs(30);
    while hooks.deliveries().is_empty() {
        assert!(Instant::now() < deadline, "A never retried its deliveries");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let b = replica(&store, &upstream, &hooks_yaml);
    sigkill(&mut a);
    hooks.set_stalling(false);

    // B delivers everything once A's claim runs out.
    let mut expected: Vec<(String, String)> = ids
        .iter()
        .map(|id| ("approval.requested".to_string(), id.clone()))
        .collect();
    expected.push(("approval.decided".into(), ids[0].clone()));
    expected.push(("approval.decided".into(), ids[1].clone()));
    expected.sort();
    let events = arrived(&hooks, expected.len(), &b).await;
    assert_eq!(events, expected);
    // The attempt A never saw answered was sent again, under the same id.
    let received = hooks.deliveries();
    assert!(received.len() > events.len(), "{received:?}");
    let stored = b.admin_get("/v1/webhooks/deliveries", ADMIN_TOKEN).await;
    let states: Vec<&Value> = stored["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| &d["state"])
        .collect();
    assert_eq!(states, vec![&json!("delivered"); expected.len()]);
}
