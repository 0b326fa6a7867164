//! Approved calls survive faults: an upstream that refuses the
//! connection, a SIGTERM while agents wait, a store locked by another
//! process, a SIGKILL mid-execution, a response cut mid-stream.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::approvals::decide;
use crate::support::*;

const CRM_POLICIES: &str = include_str!("../../policies/crm.cedar");

/// Airlock holding refunds over 100 for `finance` (alice approves), with
/// the crm route at `upstream` (a full URL) and `extra` YAML.
fn airlock_for(upstream: &str, wait: &str, extra: &str) -> Airlock {
    AirlockBuilder::new()
        .policy("crm.cedar", CRM_POLICIES)
        .route("crm", "/crm", upstream)
        .yaml(&format!(
            "approvers:\n  - id: alice\n    token: {APPROVER_TOKEN}\n    groups: [finance]\napprovals:\n  wait: {wait}\n{extra}"
        ))
        .start()
}

fn refund_at(airlock: &Airlock, query: &str, amount: u64) -> reqwest::RequestBuilder {
    client()
        .post(airlock.url(&format!("/crm/refunds{query}")))
        .header("authorization", bearer(AGENT_KEY))
        .json(&json!({"amount": amount}))
}

/// Holds a refund of `amount`, approves it as alice; the approval id.
async fn approved(airlock: &Airlock, query: &str, amount: u64) -> String {
    let resp = refund_at(airlock, query, amount).send().await.unwrap();
    assert_eq!(resp.status(), 202);
    let v: Value = resp.json().await.unwrap();
    let id = v["approval_id"].as_str().unwrap().to_string();
    let (s, v) = decide(airlock, &id, APPROVER_TOKEN, json!({"decision": "approve"})).await;
    assert_eq!(s, 200, "{v}");
    id
}

async fn status_of(airlock: &Airlock, id: &str) -> Value {
    airlock
        .admin_get(&format!("/v1/approvals/{id}"), ADMIN_TOKEN)
        .await
}

/// Polls approval `id` until `check` holds, for at most `within`.
async fn eventually(
    airlock: &Airlock,
    id: &str,
    within: Duration,
    check: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let v = status_of(airlock, id).await;
        if check(&v) {
            return v;
        }
        assert!(Instant::now() < deadline, "approval never got there: {v}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn an_approved_call_the_tool_refused_stays_approved_and_the_next_retry_runs_it() {
    // A port nobody listens on (yet).
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let airlock = airlock_for(&format!("http://{addr}/api"), "1s", "");
    let id = approved(&airlock, "", 500).await;

    let resp = refund_at(&airlock, "", 500).send().await.unwrap();
    assert_eq!(resp.status(), 502);
    assert!(resp.headers().contains_key("retry-after"));
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["error"], "upstream_unavailable");
    assert_eq!(v["approval_id"], id.as_str());
    assert!(v["message"].as_str().unwrap().contains("may retry"), "{v}");
    eventually(&airlock, &id, Duration::from_secs(5), |v| {
        v["status"] == "approved"
    })
    .await;

    // The tool comes up on that port: the next retry runs the call, once.
    let upstream = Upstream::start_on(addr).await;
    let resp = refund_at(&airlock, "", 500).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(upstream.hits(), 1);
    let v = eventually(&airlock, &id, Duration::from_secs(5), |v| {
        v["status"] == "executed"
    })
    .await;
    assert_eq!(v["outcome"]["status"], 200);
    let replay = refund_at(&airlock, "", 500).send().await.unwrap();
    assert_eq!(replay.headers()["airlock-replayed"], "true");
    assert_eq!(upstream.hits(), 1);
}

#[tokio::test]
async fn sigterm_answers_every_waiting_agent_pending_at_once_then_exits() {
    let upstream = Upstream::start().await;
    // The wait is far longer than the grace period.
    let mut airlock = airlock_for(
        &upstream.url("/api"),
        "60s",
        "timeouts:\n  shutdown_grace: 10s\n",
    );
    let mut waiting = Vec::new();
    for amount in [301, 302, 303] {
        waiting.push(tokio::spawn(refund_at(&airlock, "", amount).send()));
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let list = airlock
            .admin_get("/v1/approvals?status=pending", ADMIN_TOKEN)
            .await;
        if list["approvals"].as_array().map_or(0, Vec::len) == 3 {
            break;
        }
        assert!(Instant::now() < deadline, "the calls were not held: {list}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Let the three settle into their wait.
    tokio::time::sleep(Duration::from_millis(200)).await;

    let signalled = Instant::now();
    airlock.sigterm();
    for w in waiting {
        let resp = w.await.unwrap().expect("answered, not cut off");
        assert_eq!(resp.status(), 202);
        assert!(resp.headers().contains_key("retry-after"));
        let v: Value = resp.json().await.unwrap();
        assert_eq!(v["status"], "pending");
        assert!(
            signalled.elapsed() < Duration::from_secs(1),
            "answered after {:?}",
            signalled.elapsed()
        );
    }
    assert!(airlock.wait_exit(Duration::from_secs(5)), "a clean exit");
    assert_eq!(upstream.hits(), 0);
}

/// Holds `BEGIN EXCLUSIVE` on the SQLite file from another connection, as
/// another process would, until dropped.
struct StoreLock {
    release: Option<std::sync::mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl StoreLock {
    fn take(db: &std::path::Path) -> StoreLock {
        let (locked_tx, locked_rx) = std::sync::mpsc::channel();
        let (release, release_rx) = std::sync::mpsc::channel::<()>();
        let db = db.to_path_buf();
        let thread = std::thread::spawn(move || {
            let conn = rusqlite::Connection::open(db).unwrap();
            conn.execute_batch("BEGIN EXCLUSIVE").unwrap();
            locked_tx.send(()).unwrap();
            let _ = release_rx.recv();
            conn.execute_batch("ROLLBACK").unwrap();
        });
        locked_rx.recv().unwrap();
        StoreLock {
            release: Some(release),
            thread: Some(thread),
        }
    }
}

impl Drop for StoreLock {
    fn drop(&mut self) {
        drop(self.release.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[tokio::test]
async fn a_locked_store_delays_the_outcome_but_never_loses_it_and_the_admin_api_answers_503() {
    let upstream = Upstream::start().await;
    // `admin.store_timeout` is left at its default of 2s.
    let airlock = airlock_for(&upstream.url("/api"), "1s", "");
    let slow = "?slow_ms=1500";
    let id = approved(&airlock, slow, 500).await;
    let other = {
        let resp = refund_at(&airlock, "", 600).send().await.unwrap();
        assert_eq!(resp.status(), 202);
        resp.json::<Value>().await.unwrap()["approval_id"]
            .as_str()
            .unwrap()
            .to_string()
    };

    // The call is claimed and reaches the tool; then the store is locked,
    // so its outcome cannot be stored yet. The agent still gets it.
    let running = tokio::spawn(refund_at(&airlock, slow, 500).send());
    let deadline = Instant::now() + Duration::from_secs(10);
    while upstream.hits() < 1 {
        assert!(Instant::now() < deadline, "the call did not reach the tool");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let lock = StoreLock::take(&airlock.dir.path().join("airlock.db"));
    let resp = running.await.unwrap().unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(upstream.hits(), 1);

    // A retry meanwhile is told the call is executing.
    let retry = refund_at(&airlock, slow, 500).send().await.unwrap();
    assert_eq!(retry.status(), 409);
    assert!(retry.headers().contains_key("retry-after"));
    let v: Value = retry.json().await.unwrap();
    assert_eq!(v["error"], "executing");
    assert_eq!(v["approval_id"], id.as_str());
    assert_eq!(upstream.hits(), 1);

    // A new held call cannot be stored: the agent is told, and nothing runs.
    let resp = refund_at(&airlock, "", 800).send().await.unwrap();
    assert_eq!(resp.status(), 503);
    assert!(resp.headers().contains_key("retry-after"));
    assert_eq!(
        resp.json::<Value>().await.unwrap()["error"],
        "store_unavailable"
    );
    assert_eq!(upstream.hits(), 1);

    // The admin API answers within its store timeout, never hangs.
    let started = Instant::now();
    let resp = client()
        .post(airlock.admin_url(&format!("/v1/approvals/{other}/decision")))
        .header("authorization", bearer(APPROVER_TOKEN))
        .json(&json!({"decision": "deny", "reason": "not now"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 503);
    assert!(
        started.elapsed() < Duration::from_millis(2800),
        "{:?}",
        started.elapsed()
    );
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["error"], "store_unavailable");
    let started = Instant::now();
    let list = client()
        .get(airlock.admin_url("/v1/approvals"))
        .header("authorization", bearer(ADMIN_TOKEN))
        .send()
        .await
        .unwrap();
    assert!(matches!(list.status().as_u16(), 200 | 503));
    assert!(
        started.elapsed() < Duration::from_millis(2800),
        "{:?}",
        started.elapsed()
    );

    // Unlocked: the real outcome is recorded, and replayed.
    drop(lock);
    let v = eventually(&airlock, &id, Duration::from_secs(15), |v| {
        v["status"] == "executed"
    })
    .await;
    assert_eq!(v["outcome"]["status"], 200, "{v}");
    let replay = refund_at(&airlock, slow, 500).send().await.unwrap();
    assert_eq!(replay.status(), 200);
    assert_eq!(replay.headers()["airlock-replayed"], "true");
    assert_eq!(upstream.hits(), 1);
}

#[tokio::test]
async fn a_sigkill_mid_execution_leaves_an_executing_and_an_interrupted_record_per_call() {
    let upstream = Upstream::start().await;
    let mut airlock = airlock_for(&upstream.url("/api"), "1s", "");
    let slow = "?slow_ms=20000";
    let mut ids = Vec::new();
    for amount in [701, 702, 703] {
        ids.push(approved(&airlock, slow, amount).await);
    }
    let mut running = Vec::new();
    for amount in [701, 702, 703] {
        running.push(tokio::spawn(refund_at(&airlock, slow, amount).send()));
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while upstream.hits() < 3 {
        assert!(
            Instant::now() < deadline,
            "the calls did not reach the tool"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The audit writer batches every few milliseconds.
    tokio::time::sleep(Duration::from_millis(300)).await;

    airlock.child.kill().unwrap();
    airlock.child.wait().unwrap();
    for r in running {
        let _ = r.await;
    }
    let dir = std::mem::replace(&mut airlock.dir, tempfile::tempdir().unwrap());
    let config = airlock.config.clone();
    drop(airlock);
    let airlock = Airlock::start_with(dir, config);

    for id in &ids {
        let v = status_of(&airlock, id).await;
        assert_eq!(v["status"], "executed", "{v}");
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let audit = airlock.audit();
        let has = |id: &str, verdict: &str| {
            audit
                .iter()
                .any(|r| r["approval_id"] == id && r["verdict"] == verdict)
        };
        let complete = ids
            .iter()
            .all(|id| has(id, "executing") && has(id, "interrupted"));
        if complete {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "missing executing or interrupted records: {audit:#?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_response_cut_mid_stream_is_audited_as_incomplete_with_its_bytes_sent() {
    let upstream = Upstream::start().await;
    let airlock = AirlockBuilder::permitting_everything()
        .route("tool", "/tool", &upstream.url("/api"))
        .start();
    let resp = airlock.agent_get("/tool/cut?bytes=1000").await;
    assert_eq!(resp.status(), 200);
    let request_id = resp.headers()["x-request-id"].to_str().unwrap().to_string();
    assert!(resp.bytes().await.is_err(), "the agent sees the cut too");

    let deadline = Instant::now() + Duration::from_secs(5);
    let cut = loop {
        let found = airlock.audit().into_iter().find(|r| {
            r["request_id"] == request_id.as_str() && r["event"] == "response_incomplete"
        });
        if let Some(r) = found {
            break r;
        }
        assert!(
            Instant::now() < deadline,
            "no incomplete record: {:#?}",
            airlock.audit()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(cut["error"], "response_incomplete");
    assert_eq!(cut["fault"], "upstream");
    assert_eq!(cut["extra"]["incomplete"], true);
    assert_eq!(cut["extra"]["bytes_sent"], 1000);
}
