//! Two real Airlock processes on one PostgreSQL schema: what one replica
//! decides, runs, pauses or records, the other sees; and a replica killed
//! with SIGKILL loses nothing another cannot finish.

use std::collections::{BTreeSet, HashSet};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::approvals::{decide, pending_id, refund, show, CALLBACK_SECRET};
use crate::support::replicas::{sigkill, Replicas, TwoReplicas};
use crate::support::sse::EventReader;
use crate::support::*;

const CRM_POLICIES: &str = include_str!("../../policies/crm.cedar");

/// The CRM route to `upstream` with refunds over 100 held for finance;
/// agents wait up to `wait` for a decision.
async fn crm_replicas(upstream: &Upstream, wait: &str) -> Replicas {
    Replicas::new(
        AirlockBuilder::new()
            .policy("crm.cedar", CRM_POLICIES)
            .route("crm", "/crm", &upstream.url("/api"))
            .yaml(&format!(
                "approvers:\n  - id: alice\n    token: {APPROVER_TOKEN}\n    groups: [finance]\napprovals:\n  wait: {wait}\n  callback_secret: {CALLBACK_SECRET}\n"
            )),
    )
    .await
}

/// Waits until the store holds `n` holds in `state` (the agents' calls
/// reached a replica and were stored).
async fn until_stored(set: &Replicas, state: &str, n: i64) {
    // Generous: a hundred agents' calls on a loaded 2-core machine.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let found = set.schema.holds_in(state).await;
        if found >= n {
            return;
        }
        assert!(Instant::now() < deadline, "{found} holds {state}, not {n}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn approve() -> Value {
    json!({"decision": "approve"})
}

#[tokio::test]
async fn the_same_approval_decided_on_both_replicas_at_once_is_won_by_one() {
    let upstream = Upstream::start().await;
    let set = crm_replicas(&upstream, "10ms").await;
    let TwoReplicas { a, b } = set.two();
    for amount in 501..=505 {
        let id = pending_id(&a, json!({"amount": amount})).await;
        let (on_a, on_b) = tokio::join!(
            decide(&a, &id, APPROVER_TOKEN, approve()),
            decide(&b, &id, APPROVER_TOKEN, approve()),
        );
        let mut statuses = [on_a.0, on_b.0];
        statuses.sort_unstable();
        assert_eq!(statuses, [200, 409], "approval {id}");
        assert_eq!(show(&b, &id).await["status"], "approved");
    }
}

#[tokio::test]
async fn retries_on_both_replicas_of_a_granted_call_reach_the_upstream_once() {
    let upstream = Upstream::start().await;
    let set = crm_replicas(&upstream, "20s").await;
    let TwoReplicas { a, b } = set.two();
    let id = pending_id(&a, json!({"amount": 700})).await;

    // Retries waiting on both replicas when the approval comes.
    let mut retries = Vec::new();
    for replica in [&a, &b, &a, &b, &a, &b] {
        retries.push(tokio::spawn(refund(replica, json!({"amount": 700})).send()));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (s, _) = decide(&b, &id, APPROVER_TOKEN, approve()).await;
    assert_eq!(s, 200);
    for r in retries {
        assert_eq!(r.await.unwrap().unwrap().status(), 200);
    }
    // And later ones, on either replica, replay the outcome.
    for replica in [&a, &b] {
        let replay = refund(replica, json!({"amount": 700}))
            .send()
            .await
            .unwrap();
        assert_eq!(replay.headers()["airlock-replayed"], "true");
    }
    assert_eq!(upstream.hits(), 1, "the approved call ran exactly once");
    assert_eq!(show(&a, &id).await["status"], "executed");
}

#[tokio::test]
async fn an_agent_waiting_on_one_replica_is_released_by_a_decision_on_the_other() {
    let upstream = Upstream::start().await;
    // Longer than the test: an agent answered before it was released by
    // the decision would be told 202 pending.
    let set = crm_replicas(&upstream, "25s").await;
    let TwoReplicas { a, b } = set.two();
    let waiting = tokio::spawn(refund(&a, json!({"amount": 800})).send());
    until_stored(&set, "pending", 1).await;
    let list = b
        .admin_get("/v1/approvals?status=pending", ADMIN_TOKEN)
        .await;
    let id = list["approvals"][0]["id"].as_str().unwrap().to_string();
    let (s, _) = decide(&b, &id, APPROVER_TOKEN, approve()).await;
    assert_eq!(s, 200);
    let resp = waiting.await.unwrap().unwrap();
    assert_eq!(
        resp.status(),
        200,
        "released by the decision on the other replica"
    );
    assert_eq!(upstream.hits(), 1);
}

#[tokio::test]
async fn a_replica_killed_with_100_waiting_agents_loses_none_and_runs_each_once() {
    let upstream = Upstream::start().await;
    // The agents retrying on B wait through all hundred decisions, taken
    // one at a time; a loaded machine must not turn the last into 202s.
    let set = crm_replicas(&upstream, "90s").await;
    let TwoReplicas { mut a, b } = set.two();
    let amounts: Vec<u32> = (1001..=1100).collect();
    let mut on_a = Vec::new();
    for &amount in &amounts {
        on_a.push(tokio::spawn(refund(&a, json!({"amount": amount})).send()));
    }
    until_stored(&set, "pending", 100).await;

    sigkill(&mut a);
    for call in on_a {
        assert!(
            call.await.unwrap().is_err(),
            "no agent waiting on the killed replica got an answer"
        );
    }

    // Every agent retries on the surviving replica, and waits there.
    let mut on_b = Vec::new();
    for &amount in &amounts {
        on_b.push(tokio::spawn(refund(&b, json!({"amount": amount})).send()));
    }
    let list = b
        .admin_get("/v1/approvals?status=pending&limit=500", ADMIN_TOKEN)
        .await;
    let pending: Vec<String> = list["approvals"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(pending.len(), 100, "nothing pending was lost");
    for id in &pending {
        let (s, _) = decide(&b, id, APPROVER_TOKEN, approve()).await;
        assert_eq!(s, 200);
    }
    for call in on_b {
        assert_eq!(call.await.unwrap().unwrap().status(), 200);
    }

    let ran: Vec<u64> = upstream
        .seen()
        .iter()
        .map(|s| {
            serde_json::from_slice::<Value>(&s.body).unwrap()["amount"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(ran.len(), 100, "each approved call ran once");
    let distinct: BTreeSet<u64> = ran.iter().copied().collect();
    let wanted: BTreeSet<u64> = amounts.iter().map(|&a| u64::from(a)).collect();
    assert_eq!(distinct, wanted);
    assert_eq!(set.schema.holds_in("executed").await, 100);
    let ids: HashSet<&String> = pending.iter().collect();
    assert_eq!(ids.len(), 100);
}

/// A refund whose forward the upstream holds for a minute.
fn slow_refund(airlock: &Airlock) -> reqwest::RequestBuilder {
    client()
        .post(airlock.url("/crm/refunds?slow_ms=60000"))
        .header("authorization", bearer(AGENT_KEY))
        .json(&json!({"amount": 900}))
}

/// Audit records of `airlock` settling approval `id` as interrupted.
fn interrupted(airlock: &Airlock, id: &str) -> usize {
    airlock
        .audit()
        .iter()
        .filter(|r| r["verdict"] == "interrupted" && r["approval_id"] == id)
        .count()
}

#[tokio::test]
async fn a_call_whose_replica_died_mid_forward_is_settled_once_by_another_and_never_rerun() {
    let upstream = Upstream::start().await;
    let set = crm_replicas(&upstream, "25s").await;
    let TwoReplicas { mut a, b } = set.two();
    let on_a = tokio::spawn(slow_refund(&a).send());
    until_stored(&set, "pending", 1).await;
    let list = b
        .admin_get("/v1/approvals?status=pending", ADMIN_TOKEN)
        .await;
    let id = list["approvals"][0]["id"].as_str().unwrap().to_string();
    let (s, _) = decide(&b, &id, APPROVER_TOKEN, approve()).await;
    assert_eq!(s, 200);

    // A claims the call and forwards it; the upstream holds it; A dies.
    let deadline = Instant::now() + Duration::from_secs(10);
    while upstream.hits() == 0 {
        assert!(Instant::now() < deadline, "the approved call never left A");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    sigkill(&mut a);
    assert!(on_a.await.unwrap().is_err());
    assert_eq!(show(&b, &id).await["status"], "executing");

    // Two replicas sweep; the agent retries on one and, once A's lease has
    // run out, is told the call's outcome is unknown rather than run again.
    let c = set.start();
    let retry = slow_refund(&b).send().await.unwrap();
    assert_eq!(retry.status(), 502);
    assert_eq!(retry.headers()["airlock-replayed"], "true");
    let shown = show(&c, &id).await;
    assert_eq!(shown["status"], "executed", "{shown}");
    assert_eq!(upstream.hits(), 1, "the interrupted call was not run again");

    let deadline = Instant::now() + Duration::from_secs(5);
    while interrupted(&b, &id) + interrupted(&c, &id) == 0 {
        assert!(Instant::now() < deadline, "nobody recorded the settle");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        interrupted(&b, &id) + interrupted(&c, &id),
        1,
        "recorded once"
    );
}

const OPS_POLICY: &str = r#"@id("ops-open") permit(principal, action, resource == Route::"ops");"#;

#[tokio::test]
async fn a_pause_set_on_one_replica_refuses_calls_on_the_other() {
    let upstream = Upstream::start().await;
    let set = Replicas::new(AirlockBuilder::new().policy("ops.cedar", OPS_POLICY).route(
        "ops",
        "/ops",
        &upstream.url("/api"),
    ))
    .await;
    let TwoReplicas { a, b } = set.two();
    assert_eq!(b.agent_get("/ops/items").await.status(), 200);

    let resp = client()
        .post(a.admin_url("/v1/agents/bot/pause"))
        .header("authorization", bearer(ADMIN_TOKEN))
        .json(&json!({"mode": "deny", "reason": "bot misbehaves"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    // At once on the replica that took the pause.
    assert_eq!(a.agent_get("/ops/items").await.status(), 403);
    // And soon on the other (a generous bound: no timing is asserted).
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let resp = b.agent_get("/ops/items").await;
        if resp.status() == 403 {
            let v: Value = resp.json().await.unwrap();
            assert_eq!(v["error"], "paused", "{v}");
            break;
        }
        assert!(Instant::now() < deadline, "B never saw A's pause");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let resp = client()
        .post(b.admin_url("/v1/agents/bot/resume"))
        .header("authorization", bearer(ADMIN_TOKEN))
        .json(&json!({"reason": "all clear"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let deadline = Instant::now() + Duration::from_secs(5);
    while a.agent_get("/ops/items").await.status() != 200 {
        assert!(Instant::now() < deadline, "A never saw B's resume");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_call_on_one_replica_shows_on_the_event_stream_of_the_other() {
    let upstream = Upstream::start().await;
    let set = Replicas::new(AirlockBuilder::new().policy("ops.cedar", OPS_POLICY).route(
        "ops",
        "/ops",
        &upstream.url("/api"),
    ))
    .await;
    let TwoReplicas { a, b } = set.two();
    let resp = client()
        .get(a.admin_url("/v1/events"))
        .header("authorization", bearer(ADMIN_TOKEN))
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut on_a = EventReader::new(resp);

    let call = b.agent_get("/ops/items").await;
    assert_eq!(call.status(), 200);
    let request_id = call.headers()["x-request-id"].to_str().unwrap().to_string();
    let event = on_a
        .next_event(Duration::from_secs(10))
        .await
        .expect("A's stream stays open");
    assert_eq!(event.name.as_deref(), Some("decision"));
    assert_eq!(event.data["request_id"], request_id, "{}", on_a.raw);
    assert_eq!(event.data["agent"], "bot");
    assert_eq!(event.data["verdict"], "allow");
}

/// A second gate on refunds that gives a human one second.
const BRIEF_GATE: &str = r#"
@id("refunds-expire-fast")
@hold("refunds need finance within a second")
@approvers("finance")
@timeout("1s")
forbid (principal, action == Action::"POST", resource == Route::"crm")
when { context.path == "/crm/refunds" };
"#;

#[tokio::test]
async fn an_expiry_both_replicas_sweep_is_recorded_once() {
    let upstream = Upstream::start().await;
    let set = Replicas::new(
        AirlockBuilder::new()
            .policy("crm.cedar", CRM_POLICIES)
            .policy("brief.cedar", BRIEF_GATE)
            .route("crm", "/crm", &upstream.url("/api"))
            .yaml(&format!(
                "approvers:\n  - id: alice\n    token: {APPROVER_TOKEN}\n    groups: [finance]\napprovals:\n  wait: 10ms\n"
            )),
    )
    .await;
    let TwoReplicas { a, b } = set.two();
    let mut ids = Vec::new();
    for amount in 601..=605 {
        ids.push(pending_id(&a, json!({"amount": amount})).await);
    }
    // Each replica sweeps every second; both find the same holds due.
    until_stored(&set, "expired", 5).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    for id in &ids {
        let expiries = |airlock: &Airlock| {
            airlock
                .audit()
                .iter()
                .filter(|r| r["verdict"] == "expired" && r["approval_id"] == id.as_str())
                .count()
        };
        assert_eq!(
            expiries(&a) + expiries(&b),
            1,
            "approval {id}: one expiry record across both replicas"
        );
        assert_eq!(show(&b, id).await["status"], "expired");
    }
    assert_eq!(upstream.hits(), 0);
}
