//! Approvals across a crash, and the `airlock approvals` CLI.

use std::collections::HashSet;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::approvals::{decide, env_with, pending_id, refund, show, Env};
use crate::support::*;

fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test]
async fn a_sigkill_with_100_pending_loses_nothing_and_runs_nothing_twice() {
    let Env {
        upstream,
        hooks,
        mut airlock,
    } = env_with("1s", None).await;
    hooks.set_failing(true);

    let mut calls = Vec::new();
    for amount in 101..=200 {
        calls.push(tokio::spawn(
            refund(&airlock, json!({"amount": amount})).send(),
        ));
    }
    let mut ids = HashSet::new();
    for c in calls {
        let resp = c.await.unwrap().unwrap();
        assert_eq!(resp.status(), 202);
        let v: Value = resp.json().await.unwrap();
        ids.insert(v["approval_id"].as_str().unwrap().to_string());
    }
    assert_eq!(ids.len(), 100);

    // One approved and executed, one approved but not yet collected.
    let executed = pending_id(&airlock, json!({"amount": 101})).await;
    let (s, _) = decide(
        &airlock,
        &executed,
        APPROVER_TOKEN,
        json!({"decision": "approve"}),
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(
        refund(&airlock, json!({"amount": 101}))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let approved = pending_id(&airlock, json!({"amount": 102})).await;
    let (s, _) = decide(
        &airlock,
        &approved,
        APPROVER_TOKEN,
        json!({"decision": "approve"}),
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(upstream.hits(), 1);
    assert!(
        hooks.attempts() > 0,
        "the outbox tried while the receiver failed"
    );
    assert!(hooks.deliveries().is_empty());

    // SIGKILL: no shutdown, no flush.
    airlock.child.kill().unwrap();
    airlock.child.wait().unwrap();
    let dir = std::mem::replace(&mut airlock.dir, tempfile::tempdir().unwrap());
    let config = airlock.config.clone();
    drop(airlock);
    hooks.set_failing(false);
    let airlock = Airlock::start_with(dir, config);

    let list: Value = airlock
        .admin_get("/v1/approvals?status=pending&limit=500", ADMIN_TOKEN)
        .await;
    let pending: Vec<String> = list["approvals"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(pending.len(), 98);
    assert!(pending.iter().all(|id| ids.contains(id)));

    // The executed call replays; the approved one runs once, however many
    // times the agent asks.
    let replay = refund(&airlock, json!({"amount": 101}))
        .send()
        .await
        .unwrap();
    assert_eq!(replay.headers()["airlock-replayed"], "true");
    let a = tokio::spawn(refund(&airlock, json!({"amount": 102})).send());
    let b = tokio::spawn(refund(&airlock, json!({"amount": 102})).send());
    assert_eq!(a.await.unwrap().unwrap().status(), 200);
    assert_eq!(b.await.unwrap().unwrap().status(), 200);
    assert_eq!(upstream.hits(), 2, "no approved call is executed twice");
    assert_eq!(show(&airlock, &approved).await["status"], "executed");

    // Every surviving approval is still decidable.
    for id in &pending {
        let (s, v) = decide(
            &airlock,
            id,
            APPROVER_TOKEN,
            json!({"decision": "deny", "reason": "cleanup"}),
        )
        .await;
        assert_eq!(s, 200, "{v}");
    }
    let metrics = client()
        .get(airlock.admin_url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(
        metric(&metrics, "airlock_holds_pending"),
        Some(0.0),
        "{metrics}"
    );

    // The outbox resumed: every approval.requested arrives after the restart.
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let requested: HashSet<String> = hooks
            .deliveries()
            .iter()
            .map(|d| d.json())
            .filter(|v| v["type"] == "approval.requested")
            .map(|v| v["data"]["approval_id"].as_str().unwrap_or("").to_string())
            .collect();
        if requested == ids {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "only {} of 100 approval.requested webhooks arrived",
            requested.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let deliveries: Value = airlock
        .admin_get("/v1/webhooks/deliveries", ADMIN_TOKEN)
        .await;
    assert!(deliveries["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .any(|d| d["attempts"].as_u64().unwrap_or(0) > 1));
}

fn approvals_cli(airlock: &Airlock, token: &str, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(airlock_bin())
        .arg("approvals")
        .arg("--admin")
        .arg(airlock.admin_url(""))
        .args(args)
        .env("AIRLOCK_TOKEN", token)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn the_cli_lists_shows_and_decides() {
    let Env {
        upstream, airlock, ..
    } = env_with("1s", None).await;
    let id = pending_id(&airlock, json!({"amount": 333})).await;
    let other = pending_id(&airlock, json!({"amount": 444})).await;

    let (code, out, err) = approvals_cli(&airlock, APPROVER_TOKEN, &["list"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(&id) && out.contains(&other), "{out}");
    assert!(out.contains("POST /crm/refunds"), "{out}");
    let (code, _, err) = approvals_cli(&airlock, "not-a-token", &["list"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("401") && err.contains("--token") && err.contains("$AIRLOCK_TOKEN"),
        "{err}"
    );
    let (code, out, _) = approvals_cli(&airlock, APPROVER_TOKEN, &["show", &id]);
    assert_eq!(code, 0);
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(crate::approvals::as_sent(&v["body"])["amount"], 333);

    let (code, _, err) = approvals_cli(&airlock, AGENT_KEY, &["approve", &id]);
    assert_eq!(code, 1);
    assert!(err.contains("403"), "{err}");
    let (code, out, err) = approvals_cli(
        &airlock,
        APPROVER_TOKEN,
        &[
            "approve",
            &id,
            "--reason",
            "ok",
            "--args",
            r#"{"amount":120}"#,
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("approved"), "{out}");
    let (code, _, err) =
        approvals_cli(&airlock, APPROVER_TOKEN, &["deny", &id, "--reason", "late"]);
    assert_eq!(code, 1);
    assert!(err.contains("409"), "{err}");
    let (code, _, err) = approvals_cli(
        &airlock,
        APPROVER_TOKEN,
        &["deny", &other, "--reason", "no"],
    );
    assert_eq!(code, 0, "{err}");

    let resp = refund(&airlock, json!({"amount": 333}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        serde_json::from_slice::<Value>(&upstream.last().body).unwrap()["amount"],
        120
    );
}
