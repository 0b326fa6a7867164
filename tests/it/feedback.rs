//! The daily counters, `airlock report` and `airlock feedback export` on
//! the real binary: calls and human decisions driven through the proxy
//! and the admin API, counts read back after restarts.

use std::time::{Duration, Instant};

use airlock::store::{CounterKind, CounterRow, CounterStore, SqliteStore};
use serde_json::{json, Value};

use crate::approvals::{decide, env_with, pending_id, refund, show, Env};
use crate::support::*;

const CRM_POLICIES: &str = include_str!("../../policies/crm.cedar");

/// Leads: filed by support, each looked at by finance within two seconds.
const LEADS: &str = r#"
@id("support-files-leads")
permit (principal in Group::"support", action == Action::"POST", resource == Route::"crm")
when { context.path == "/crm/leads" };

@id("leads-need-a-quick-look")
@hold("new leads need a look")
@approvers("finance")
@timeout("2s")
forbid (principal, action == Action::"POST", resource == Route::"crm")
when { context.path == "/crm/leads" };
"#;

/// `file:line` of policy `id` in `text`, as the report prints it.
fn line_of(text: &str, id: &str) -> usize {
    let needle = format!("@id(\"{id}\")");
    text.lines().position(|l| l.contains(&needle)).unwrap() + 1
}

fn restart(mut airlock: Airlock) -> Airlock {
    airlock.sigterm();
    assert!(airlock.wait_exit(Duration::from_secs(15)), "clean exit");
    let dir = std::mem::replace(&mut airlock.dir, tempfile::tempdir().unwrap());
    let config = airlock.config.clone();
    drop(airlock);
    Airlock::start_with(dir, config)
}

fn stop(airlock: &mut Airlock) {
    airlock.sigterm();
    assert!(airlock.wait_exit(Duration::from_secs(15)), "clean exit");
}

async fn call(airlock: &Airlock, method: reqwest::Method, path: &str) -> u16 {
    client()
        .request(method, airlock.url(path))
        .header("authorization", bearer(AGENT_KEY))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

fn report(airlock: &Airlock, extra: &[&str]) -> String {
    let config = airlock.config.to_str().unwrap();
    let mut args = vec!["report", "--config", config];
    args.extend_from_slice(extra);
    let (code, out, err) = run_cli(&args);
    assert_eq!(code, 0, "{out}{err}");
    out
}

/// The report's row of `policy` on `target`.
fn row<'a>(report: &'a Value, policy: &str, target: &str) -> &'a Value {
    report["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["policy"] == policy && r["target"] == target)
        .unwrap_or_else(|| panic!("no row for {policy} on {target}: {report:#}"))
}

/// The counts of a row, in the report's order: allowed, denied, held,
/// approved, approved_edited, responded, hold_denied, expired.
fn counts(row: &Value) -> [u64; 8] {
    [
        "allowed",
        "denied",
        "held",
        "approved",
        "approved_edited",
        "responded",
        "hold_denied",
        "expired",
    ]
    .map(|k| row[k].as_u64().unwrap())
}

/// Four held refunds decided four ways: approved, approved with an edit,
/// denied and answered by a human.
async fn decide_four_ways(airlock: &Airlock) -> [String; 4] {
    let ids = [
        pending_id(airlock, json!({"amount": 500, "customer_id": "c-1"})).await,
        pending_id(airlock, json!({"amount": 600, "customer_id": "c-2"})).await,
        pending_id(airlock, json!({"amount": 700, "customer_id": "c-3"})).await,
        pending_id(airlock, json!({"amount": 800, "customer_id": "c-4"})).await,
    ];
    let decisions = [
        json!({"decision": "approve"}),
        json!({"decision": "approve", "reason": "partial", "body": {"amount": 150, "customer_id": "c-2"}}),
        json!({"decision": "deny", "reason": "no receipt"}),
        json!({"decision": "respond", "status": 200, "body": {"refund_id": "manual-1", "customer_id": "c-4"}}),
    ];
    for (id, d) in ids.iter().zip(decisions) {
        let (status, v) = decide(airlock, id, APPROVER_TOKEN, d).await;
        assert_eq!(status, 200, "{v}");
    }
    ids
}

#[tokio::test]
async fn the_report_counts_verdicts_and_decisions_across_restarts_and_suggests_on_strong_evidence()
{
    let Env { airlock, .. } = env_with("1s", Some(("leads.cedar", LEADS))).await;
    for _ in 0..3 {
        assert_eq!(
            call(&airlock, reqwest::Method::GET, "/crm/customers").await,
            200
        );
    }
    for _ in 0..2 {
        let resp = refund(&airlock, json!({"amount": 50}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
    }
    assert_eq!(
        call(&airlock, reqwest::Method::DELETE, "/crm/customers/1").await,
        403
    );
    decide_four_ways(&airlock).await;

    // Whatever the periodic flush has not stored yet is stored at
    // shutdown: every count must be there after each restart.
    let mut airlock = restart(airlock);
    assert_eq!(
        call(&airlock, reqwest::Method::GET, "/crm/customers").await,
        200
    );
    let lead = client()
        .post(airlock.url("/crm/leads"))
        .header("authorization", bearer(AGENT_KEY))
        .json(&json!({"name": "Ada"}))
        .send()
        .await
        .unwrap();
    // Pending when the agent's wait ends, or expired already.
    assert!([202, 403].contains(&lead.status().as_u16()));
    let lead: Value = lead.json().await.unwrap();
    let lead_id = lead["approval_id"].as_str().unwrap().to_string();
    let deadline = Instant::now() + Duration::from_secs(10);
    while show(&airlock, &lead_id).await["status"] != "expired" {
        assert!(Instant::now() < deadline, "the lead's hold never expired");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop(&mut airlock);

    let rep: Value = serde_json::from_str(&report(&airlock, &["--json"])).unwrap();
    let gate = "large-refunds-need-approval";
    assert_eq!(
        counts(row(&rep, "support-reads-crm", "crm")),
        [4, 0, 0, 0, 0, 0, 0, 0]
    );
    assert_eq!(
        counts(row(&rep, "support-issues-refunds", "crm")),
        [2, 0, 0, 0, 0, 0, 0, 0]
    );
    assert_eq!(
        counts(row(&rep, "no-customer-deletes", "crm")),
        [0, 1, 0, 0, 0, 0, 0, 0]
    );
    assert_eq!(counts(row(&rep, gate, "crm")), [0, 0, 4, 1, 1, 1, 1, 0]);
    assert_eq!(
        counts(row(&rep, "leads-need-a-quick-look", "crm")),
        [0, 0, 1, 0, 0, 0, 0, 1]
    );
    assert_eq!(rep["rows"].as_array().unwrap().len(), 5, "{rep:#}");
    let g = row(&rep, gate, "crm");
    assert_eq!(g["decisions_timed"], 4);
    // Decided within seconds of being held; the bucket depends on the
    // machine's pace.
    assert!(g["median_decision_within_s"].as_u64().unwrap() <= 60, "{g}");
    assert!(g["place"]
        .as_str()
        .unwrap()
        .ends_with(&format!("crm.cedar:{}", line_of(CRM_POLICIES, gate))));
    assert_eq!(rep["suggestions"], json!([]), "no evidence is strong yet");

    // Weeks of earlier counts, as other days and replicas left them.
    let store = SqliteStore::open(&airlock.dir.path().join("airlock.db")).unwrap();
    let today = airlock::clock::now_ms().div_euclid(86_400_000);
    let seed = |day: i64, policy: &str, kind: CounterKind, count: u64| CounterRow {
        day,
        policy: policy.into(),
        target: "crm".into(),
        kind,
        count,
    };
    store
        .add_counts(vec![
            // Counted 40 days ago: the counters reach back past 30 days.
            seed(today - 40, "support-reads-crm", CounterKind::Allowed, 1),
            // 57 of 60 decisions approved unedited: exactly 95%.
            seed(today - 1, gate, CounterKind::Approved, 56),
            // 1 of 5 settled holds expired: exactly 20%.
            seed(today, "leads-need-a-quick-look", CounterKind::Approved, 4),
            seed(today, "support-issues-refunds", CounterKind::ReviewBad, 3),
            // Outside the window: not counted in it.
            seed(today - 9, gate, CounterKind::Expired, 50),
        ])
        .await
        .unwrap();
    drop(store);

    let rep: Value = serde_json::from_str(&report(&airlock, &["--json", "--since", "7d"])).unwrap();
    let said: Vec<(String, String, String)> = rep["suggestions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["rule"].as_str().unwrap().to_string(),
                s["policy"].as_str().unwrap().to_string(),
                s["evidence"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let s = |rule: &str, policy: &str, evidence: String| {
        (rule.to_string(), policy.to_string(), evidence)
    };
    let from = airlock::feedback::report::date_of(today - 29);
    let until = airlock::feedback::report::date_of(today);
    let first = airlock::feedback::report::date_of(today - 40);
    assert_eq!(
        said,
        vec![
            s("narrow_gate", gate, "approved unedited in 57 of 60 decisions (95%)".into()),
            s("raise_timeout", "leads-need-a-quick-look", "1 of 5 settled holds expired (20%)".into()),
            s(
                "add_gate",
                "support-issues-refunds",
                "3 `bad` reviews of calls to `crm` in the window, 3 of them allowed by this permit".into()
            ),
            s(
                "unused_permit",
                "support-files-leads",
                format!("no call allowed by it from {from} to {until}, while Airlock counted calls since {first}")
            ),
        ],
        "{rep:#}"
    );
    assert_eq!(
        counts(row(&rep, gate, "crm"))[7],
        0,
        "expiries 9 days ago are outside 7d"
    );

    // The table names each suggestion's policy by `@id` and `file:line`.
    let text = report(&airlock, &[]);
    let place = format!("crm.cedar:{}", line_of(CRM_POLICIES, gate));
    let narrow = text
        .lines()
        .find(|l| l.starts_with(&format!("- {gate} (")))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(
        narrow.contains(&place) && narrow.contains("consider narrowing"),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "leads.cedar:{}",
            line_of(LEADS, "support-files-leads")
        )),
        "{text}"
    );
}

#[tokio::test]
async fn feedback_export_writes_one_redacted_line_per_human_judgment() {
    let Env { mut airlock, .. } = env_with("1s", None).await;
    let said = client()
        .post(airlock.url("/crm/refunds"))
        .header("authorization", bearer(AGENT_KEY))
        .header("airlock-confidence", "0.4")
        .header("airlock-reason", "customer asked twice")
        .json(&json!({"amount": 300, "customer_id": "c-0"}))
        .send()
        .await
        .unwrap();
    assert_eq!(said.status(), 202);
    let said: Value = said.json().await.unwrap();
    let said_id = said["approval_id"].as_str().unwrap().to_string();
    let (status, v) = decide(
        &airlock,
        &said_id,
        APPROVER_TOKEN,
        json!({"decision": "deny", "reason": "ask the customer again"}),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    let ids = decide_four_ways(&airlock).await;
    // A hold nobody decided is no judgment.
    pending_id(&airlock, json!({"amount": 999})).await;
    stop(&mut airlock);

    let config = airlock.config.to_str().unwrap();
    let (code, out, err) = run_cli(&[
        "feedback",
        "export",
        "--config",
        config,
        "--since",
        "1h",
        "--redact",
        "/customer_id",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(
        !out.contains(AGENT_KEY) && !out.contains("injected-secret"),
        "{out}"
    );
    // Quoted: an approval's id may hold `c-1` (`…aac-13bd…`).
    assert!(
        !out.contains("\"c-1\"") && !out.contains("\"c-2\"") && !out.contains("\"c-4\""),
        "{out}"
    );
    let lines: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let judgments: Vec<(&str, &str)> = lines
        .iter()
        .map(|l| (l["id"].as_str().unwrap(), l["judgment"].as_str().unwrap()))
        .collect();
    assert_eq!(
        judgments,
        vec![
            (said_id.as_str(), "deny"),
            (ids[0].as_str(), "approve"),
            (ids[1].as_str(), "approve"),
            (ids[2].as_str(), "deny"),
            (ids[3].as_str(), "respond"),
        ],
        "{out}"
    );
    for l in &lines {
        assert_eq!(l["agent"], "bot");
        assert_eq!(l["route"], "crm");
        assert_eq!(l["tool"], Value::Null);
        assert_eq!(l["policies"], json!(["large-refunds-need-approval"]));
        assert_eq!(l["judged_by"], "alice");
        assert_eq!(l["request"]["method"], "POST");
        assert_eq!(l["request"]["path"], "/crm/refunds");
        assert_eq!(l["request"]["body"]["customer_id"], "[redacted]");
        assert!(l["requested_at"].as_str().unwrap() <= l["judged_at"].as_str().unwrap());
    }
    // The agent's own confidence and reason travel with its call.
    assert_eq!(lines[0]["confidence"], "0.4");
    assert_eq!(lines[0]["agent_reason"], "customer asked twice");
    assert_eq!(lines[0]["reason"], "ask the customer again");
    assert_eq!(lines[1]["confidence"], Value::Null);
    assert_eq!(lines[1]["request"]["body"]["amount"], 500);
    assert_eq!(lines[1]["edited_body"], Value::Null);
    assert_eq!(
        lines[2]["edited_body"],
        json!({"amount": 150, "customer_id": "[redacted]"})
    );
    assert_eq!(lines[2]["reason"], "partial");
    assert_eq!(lines[3]["reason"], "no receipt");
    assert_eq!(
        lines[4]["answer"],
        json!({"status": 200, "body": {"refund_id": "manual-1", "customer_id": "[redacted]"}})
    );

    // Only what was judged within the window.
    let (code, out, _) = run_cli(&["feedback", "export", "--config", config, "--since", "1ms"]);
    assert_eq!(code, 0);
    assert_eq!(out, "");
}

#[tokio::test]
async fn mcp_tool_calls_are_counted_per_tool() {
    let server = crate::support::mcp::McpServer::python();
    let mut airlock = crate::mcp::crm(&server);
    let plan = json!({"mode": "auto", "calls": [
        {"name": "lookup_customer", "args": {"customer_id": "c-1"}},
        {"name": "delete_customer", "args": {"customer_id": "c-1"}},
        {"name": "issue_refund", "args": {"customer_id": "c-1", "amount": 500}},
    ]});
    let out = tokio::task::spawn_blocking({
        let url = airlock.url("/mcp/crm");
        move || crate::support::mcp::python_client(&url, AGENT_KEY, &plan)
    })
    .await
    .unwrap();
    assert_eq!(
        crate::mcp::call(&out, "lookup_customer")["is_error"],
        false,
        "{out}"
    );
    stop(&mut airlock);

    let rep: Value = serde_json::from_str(&report(&airlock, &["--json"])).unwrap();
    let allowed = row(&rep, "support-calls-crm-tools", "crm/lookup_customer");
    assert_eq!(counts(allowed), [1, 0, 0, 0, 0, 0, 0, 0]);
    let denied = row(&rep, "no-deletes", "crm/delete_customer");
    assert_eq!(counts(denied), [0, 1, 0, 0, 0, 0, 0, 0]);
    let held = row(&rep, "large-refunds-held", "crm/issue_refund");
    assert_eq!(counts(held), [0, 0, 1, 0, 0, 0, 0, 0]);
    // The protocol's own messages count under the route.
    assert!(
        row(&rep, "crm-housekeeping", "crm")["allowed"]
            .as_u64()
            .unwrap()
            >= 2
    );
}

async fn healthz(airlock: &Airlock) -> (u16, String) {
    let resp = client()
        .get(airlock.admin_url("/healthz"))
        .send()
        .await
        .unwrap();
    (resp.status().as_u16(), resp.text().await.unwrap())
}

/// Polls `/healthz` until its body satisfies `wanted`.
async fn healthz_until(airlock: &Airlock, what: &str, wanted: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let (status, body) = healthz(airlock).await;
        assert_eq!(status, 200, "{body}");
        if wanted(&body) {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "/healthz never said {what}: {body}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn a_failed_flush_is_said_on_healthz_and_its_counts_are_stored_when_the_store_is_back() {
    let pg = crate::support::replicas::PgSchema::fresh().await;
    let upstream = Upstream::start().await;
    let airlock = AirlockBuilder::new()
        .policy(
            "open.cedar",
            "@id(\"open\")\npermit (principal, action, resource);",
        )
        .route("crm", "/crm", &upstream.url("/api"))
        .store(&pg.url)
        .start();
    let db = pg.client().await;
    db.batch_execute("ALTER TABLE daily_counts RENAME TO daily_counts_away")
        .await
        .unwrap();
    for _ in 0..3 {
        assert_eq!(
            call(&airlock, reqwest::Method::GET, "/crm/customers").await,
            200
        );
    }
    let said = healthz_until(&airlock, "degraded", |b| b.contains("degraded")).await;
    assert!(said.contains("daily counters not stored since"), "{said}");
    assert!(said.contains("3 counts kept in memory"), "{said}");
    let metrics = client()
        .get(airlock.admin_url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("airlock_counter_flush_failures_total ") && !l.ends_with(" 0")),
        "{metrics}"
    );

    db.batch_execute("ALTER TABLE daily_counts_away RENAME TO daily_counts")
        .await
        .unwrap();
    healthz_until(&airlock, "ok", |b| b == "ok\n").await;
    let rows = db
        .query(
            "SELECT target, kind, count FROM daily_counts WHERE policy = 'open'",
            &[],
        )
        .await
        .unwrap();
    let rows: Vec<(String, String, i64)> = rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert_eq!(rows, vec![("crm".to_string(), "allowed".to_string(), 3)]);
}
