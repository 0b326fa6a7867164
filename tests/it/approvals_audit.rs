//! The audit trail of approvals: every refused decision attempt and every
//! expiry leaves a record in the audit file the config names, expiries
//! exactly once even across restarts, and no record holds a secret.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

use crate::approvals::{
    callback, decide, env_with, pending_id, refund, show, signed, Env, BIG_REFUNDS, BOB_TOKEN,
    CALLBACK_SECRET,
};
use crate::support::*;

/// Waits (bounded) until at least `n` audit records match `pred`; returns
/// every match.
fn audit_until(
    airlock: &Airlock,
    n: usize,
    what: &str,
    pred: impl Fn(&Value) -> bool,
) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let found: Vec<Value> = airlock.audit().into_iter().filter(|r| pred(r)).collect();
        if found.len() >= n {
            return found;
        }
        assert!(
            Instant::now() < deadline,
            "only {} of {n} audit records for {what}: {found:#?}",
            found.len()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn refused_with<'a>(records: &'a [Value], kind: &str) -> &'a Value {
    let matching: Vec<&Value> = records.iter().filter(|r| r["error"] == kind).collect();
    assert_eq!(matching.len(), 1, "one `{kind}` record: {records:#?}");
    matching[0]
}

#[tokio::test]
async fn every_refused_decision_attempt_is_audited_with_its_status_and_no_secret() {
    let Env { airlock, .. } = env_with("1s", Some(("big.cedar", BIG_REFUNDS))).await;
    let id = pending_id(&airlock, json!({"amount": 800, "customer_id": "c-9"})).await;
    let unknown = "01900000-0000-7000-8000-000000000000";
    let bad_token = "sekrit-unknown-token-4711";
    let pasted = "pasted-secret-value-0815";
    let approve = json!({"decision": "approve", "reason": "looks fine"});

    let attempts = [
        (AGENT_KEY, id.as_str(), approve.clone(), 403),
        (BOB_TOKEN, id.as_str(), approve.clone(), 403),
        (bad_token, id.as_str(), approve.clone(), 401),
        (APPROVER_TOKEN, unknown, approve.clone(), 404),
        (
            APPROVER_TOKEN,
            id.as_str(),
            json!({"decision": pasted}),
            400,
        ),
        (
            APPROVER_TOKEN,
            id.as_str(),
            json!({"decision": "approve", "body": {"amount": 5000, "customer_id": "c-9", "api_token": pasted}}),
            422,
        ),
    ];
    for (token, target, body, want) in attempts {
        let (s, v) = decide(&airlock, target, token, body).await;
        assert_eq!(s, want, "{v}");
        assert!(v["error"].is_string(), "a JSON error: {v}");
    }
    let raw = client()
        .post(airlock.admin_url(&format!("/v1/approvals/{id}/decision")))
        .header("authorization", bearer(APPROVER_TOKEN))
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(raw.status(), 400);

    // Signed callbacks: a bad signature, then a good one, then its replay.
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let body = &format!(
        r#"{{"decision":"approve","reason":"via chat","approver":"alice","approval_id":"{id}"}}"#
    );
    let forged = "v1,AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
    let (s, _) = callback(&airlock, &id, "msg_forged", now, forged, body).await;
    assert_eq!(s, 401);
    let (msg, sig) = signed("msg_once", now, body);
    let (s, v) = callback(&airlock, &id, &msg, now, &sig, body).await;
    assert_eq!(s, 200, "{v}");
    let (s, _) = callback(&airlock, &id, &msg, now, &sig, body).await;
    assert_eq!(s, 401);
    let (s, _) = decide(
        &airlock,
        &id,
        ADMIN_TOKEN,
        json!({"decision": "deny", "reason": "late"}),
    )
    .await;
    assert_eq!(s, 409);

    let is_refusal = |r: &Value| r["event"] == "approval" && r["verdict"] == "refused";
    let refused = audit_until(&airlock, 10, "refused attempts", is_refusal);
    assert_eq!(refused.len(), 10, "{refused:#?}");

    let r = refused_with(&refused, "agent_cannot_decide");
    assert_eq!(
        (
            r["status"].as_u64(),
            r["caller"].as_str(),
            r["decision"].as_str()
        ),
        (Some(403), Some("agent:bot"), Some("approve"))
    );
    assert_eq!(r["approval_id"], id.as_str());
    assert_eq!(r["approval_status"], "pending");
    assert_eq!(r["agent"], "bot", "the held call's agent");
    assert!(r.get("approver").is_none(), "a refusal names no approver");

    let r = refused_with(&refused, "wrong_group");
    assert_eq!(
        (r["status"].as_u64(), r["caller"].as_str()),
        (Some(403), Some("bob"))
    );
    assert!(r["reasons"][0].as_str().unwrap().contains("finance"), "{r}");

    let r = refused_with(&refused, "unauthenticated");
    assert_eq!(r["status"], 401);
    assert!(
        r.get("caller").is_none(),
        "an unknown token names nobody: {r}"
    );

    let r = refused_with(&refused, "not_found");
    assert_eq!(
        (
            r["status"].as_u64(),
            r["approval_id"].as_str(),
            r["caller"].as_str()
        ),
        (Some(404), Some(unknown), Some("alice"))
    );

    let malformed: Vec<&Value> = refused
        .iter()
        .filter(|r| r["error"] == "malformed_decision")
        .collect();
    assert_eq!(malformed.len(), 2, "{refused:#?}");
    assert!(malformed
        .iter()
        .all(|r| r["status"] == 400 && r["caller"] == "alice"));

    let r = refused_with(&refused, "edit_denied");
    assert_eq!(r["status"], 422);
    assert_eq!(r["extra"]["attempted_edit"]["amount"], 5000);
    assert!(r["extra"]["attempted_edit"]["api_token"]
        .as_str()
        .unwrap()
        .starts_with("[redacted: "));
    assert!(
        r["reasons"][0]
            .as_str()
            .unwrap()
            .contains("no-huge-refunds"),
        "{r}"
    );

    let r = refused_with(&refused, "bad_signature");
    assert_eq!(r["status"], 401);
    assert_eq!(r["extra"]["webhook_id"], "msg_forged");
    assert!(r.get("caller").is_none());
    let r = refused_with(&refused, "replayed");
    assert_eq!(
        (r["status"].as_u64(), r["extra"]["webhook_id"].as_str()),
        (Some(401), Some("msg_once"))
    );

    let r = refused_with(&refused, "already_decided");
    assert_eq!(
        (
            r["status"].as_u64(),
            r["caller"].as_str(),
            r["decision"].as_str()
        ),
        (Some(409), Some("admin"), Some("deny"))
    );
    assert_eq!(r["approval_status"], "approved");

    // The one decision that went through is recorded as such.
    let decided = audit_until(&airlock, 1, "the decision", |r| {
        r["event"] == "approval" && r["verdict"] == "approve"
    });
    assert_eq!(decided[0]["approver"], "alice");
    assert_eq!(decided[0]["status"], 200);

    let text = std::fs::read_to_string(airlock.audit_path()).unwrap();
    for secret in [
        AGENT_KEY,
        BOB_TOKEN,
        APPROVER_TOKEN,
        ADMIN_TOKEN,
        bad_token,
        pasted,
        forged,
        &sig,
        CALLBACK_SECRET,
        "injected-secret",
    ] {
        assert!(
            !text.contains(secret),
            "`{secret}` leaked into the audit log"
        );
    }
}

/// A gate that lifts itself after 6 seconds: short enough for a test, long
/// enough that the holds are made before it runs out.
const QUICK_GATE: &str = r#"
@id("quick-gate")
@hold("refunds to c-exp need a look")
@approvers("finance")
@timeout("6s")
forbid (principal, action == Action::"POST", resource == Route::"crm")
when { context.path == "/crm/refunds" && context has body && context.body has customer_id && context.body.customer_id == "c-exp" };
"#;
const GATE_LIFE: Duration = Duration::from_secs(6);

fn expired_records(airlock: &Airlock, id: &str) -> Vec<Value> {
    airlock
        .audit()
        .into_iter()
        .filter(|r| r["event"] == "approval" && r["verdict"] == "expired" && r["approval_id"] == id)
        .collect()
}

fn restart(mut airlock: Airlock, graceful: bool) -> Airlock {
    if graceful {
        airlock.sigterm();
        assert!(airlock.wait_exit(Duration::from_secs(15)), "clean exit");
    } else {
        airlock.child.kill().unwrap();
        airlock.child.wait().unwrap();
    }
    let dir = std::mem::replace(&mut airlock.dir, tempfile::tempdir().unwrap());
    let config = airlock.config.clone();
    drop(airlock);
    Airlock::start_with(dir, config)
}

/// The ids of pending approvals, once there are `n` (bounded wait).
async fn pending_ids(airlock: &Airlock, n: usize) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let v: Value = airlock
            .admin_get("/v1/approvals?status=pending", ADMIN_TOKEN)
            .await;
        let ids: Vec<String> = v["approvals"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["id"].as_str().unwrap().to_string())
            .collect();
        if ids.len() >= n {
            return ids;
        }
        assert!(Instant::now() < deadline, "only {} pending", ids.len());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn an_expiry_is_audited_exactly_once_whoever_finds_it_and_across_restarts() {
    // Agents wait longer than the gate lives, so a waiting agent is there
    // when the time runs out.
    let Env {
        upstream, airlock, ..
    } = env_with("10s", Some(("quick.cedar", QUICK_GATE))).await;

    // Two holds, then the process dies (with their agents waiting) before
    // they run out.
    let _a = tokio::spawn(refund(&airlock, json!({"amount": 5, "customer_id": "c-exp"})).send());
    let _b = tokio::spawn(refund(&airlock, json!({"amount": 6, "customer_id": "c-exp"})).send());
    let ab = pending_ids(&airlock, 2).await;
    let made = Instant::now();
    let airlock = restart_after(airlock, made + GATE_LIFE);

    // The start-up sweep expired both while nobody was there; a late
    // decision finds one expired already.
    for id in &ab {
        assert_eq!(show(&airlock, id).await["status"], "expired");
    }
    let (s, v) = decide(
        &airlock,
        &ab[0],
        APPROVER_TOKEN,
        json!({"decision": "approve"}),
    )
    .await;
    assert_eq!((s, v["error"].as_str()), (409, Some("already_decided")));

    // A third runs out while the process runs: its waiting agent, the
    // background sweep and a late decision all race for it.
    let waiting =
        tokio::spawn(refund(&airlock, json!({"amount": 7, "customer_id": "c-exp"})).send());
    let c = pending_ids(&airlock, 1).await.remove(0);
    let deadline = Instant::now() + Duration::from_secs(20);
    let (agent, late) = tokio::join!(waiting, async {
        loop {
            if show(&airlock, &c).await["status"] != "pending" {
                break;
            }
            assert!(Instant::now() < deadline, "approval {c} never expired");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        decide(&airlock, &c, APPROVER_TOKEN, json!({"decision": "approve"})).await
    });
    let agent = agent.unwrap().unwrap();
    assert_eq!(agent.status(), 403);
    assert_eq!(
        agent.json::<Value>().await.unwrap()["error"],
        "approval_expired"
    );
    assert_eq!(late.0, 409, "{}", late.1);
    assert_eq!(show(&airlock, &c).await["status"], "expired");

    // Two more restarts, a clean one (every queued record flushed) and a
    // SIGKILL, re-run the start-up sweep over the expired approvals.
    let airlock = restart(airlock, true);
    let mut airlock = restart(airlock, false);
    airlock.sigterm();
    assert!(airlock.wait_exit(Duration::from_secs(15)), "clean exit");

    for id in ab.iter().chain([&c]) {
        let recs = expired_records(&airlock, id);
        assert_eq!(
            recs.len(),
            1,
            "exactly one expiry record for {id}: {recs:#?}"
        );
        let r = &recs[0];
        assert_eq!(r["approval_status"], "expired");
        assert_eq!(
            (
                r["agent"].as_str(),
                r["route"].as_str(),
                r["action"].as_str()
            ),
            (Some("bot"), Some("crm"), Some("POST"))
        );
        assert_eq!(r["policies"], json!(["quick-gate"]));
        assert!(r.get("status").is_none(), "nobody was answered: {r}");
        assert!(r.get("approver").is_none());
    }
    assert_eq!(upstream.hits(), 0, "nothing expired ever ran");
}

/// SIGKILLs the process, waits until `until` has passed, and starts it
/// again on the same directory.
fn restart_after(mut airlock: Airlock, until: Instant) -> Airlock {
    airlock.child.kill().unwrap();
    airlock.child.wait().unwrap();
    // A precondition, not an assertion: the approvals' time must have run
    // out while the process was down.
    std::thread::sleep(
        until.saturating_duration_since(Instant::now()) + Duration::from_millis(200),
    );
    let dir = std::mem::replace(&mut airlock.dir, tempfile::tempdir().unwrap());
    let config = airlock.config.clone();
    drop(airlock);
    Airlock::start_with(dir, config)
}
