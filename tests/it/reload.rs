//! Hot reload: file watching (rename saves, ConfigMap symlink swaps),
//! failed reloads, restart-only settings, shadow mode, and reloads under
//! load without a failed or misjudged request.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::reload::{configmap_layout, configmap_swap, save_by_rename};
use crate::support::*;

const ALLOW_TOOLS: &str = r#"@id("tools-get")
permit (principal, action == Action::"GET", resource == Route::"tools");
"#;

const FLIP: &str = r#"@id("no-search")
forbid (principal, action == Action::"GET", resource == Route::"tools")
when { context.path == "/tools/search" };
"#;

/// A distinct, valid policy, so that every rewrite is a new version.
fn filler(i: usize) -> String {
    format!(
        "@id(\"filler-{i}\")\npermit (principal in Group::\"support\", action == Action::\"POST\", resource == Route::\"tools\")\nwhen {{ context.path == \"/tools/f{i}\" }};\n"
    )
}

async fn tools(prepare: impl FnOnce(&std::path::Path)) -> (Upstream, Airlock) {
    let upstream = Upstream::start().await;
    let airlock = AirlockBuilder::new()
        .policy("tools.cedar", &format!("{ALLOW_TOOLS}{}", filler(0)))
        .route("tools", "/tools", &upstream.url("/api"))
        .start_prepared(prepare);
    (upstream, airlock)
}

async fn get_search(airlock: &Airlock) -> u16 {
    airlock.agent_get("/tools/search").await.status().as_u16()
}

const WATCH: Duration = Duration::from_secs(10);

#[tokio::test]
async fn an_editor_save_by_rename_is_picked_up_by_the_watcher() {
    let (_up, airlock) = tools(|_| {}).await;
    let before = airlock.status().await["version"].clone();
    assert_eq!(get_search(&airlock).await, 200);

    let file = airlock.dir.path().join("policies/tools.cedar");
    save_by_rename(&file, &format!("{ALLOW_TOOLS}{FLIP}"));
    airlock.wait_status(WATCH, |s| s["version"] != before).await;
    assert_eq!(get_search(&airlock).await, 403);
    assert!(airlock
        .metrics()
        .await
        .contains("airlock_policy_reloads_total{result=\"success\"}"));
}

#[tokio::test]
async fn a_reload_with_nothing_new_is_counted_as_unchanged_not_success() {
    let (_up, airlock) = tools(|_| {}).await;
    let (status, _) = airlock.reload().await;
    assert_eq!(status, 200);
    let metrics = airlock.metrics().await;
    assert!(
        metrics.contains("airlock_policy_reloads_total{result=\"unchanged\"} 1"),
        "{metrics}"
    );
    assert!(!metrics.contains("airlock_policy_reloads_total{result=\"success\"}"));
}

#[tokio::test]
async fn a_configmap_symlink_swap_is_picked_up_by_the_watcher() {
    let (_up, airlock) =
        tools(|dir| configmap_layout(&dir.join("policies"), "2026_11_27_10_00_00.1")).await;
    let before = airlock.status().await["version"].clone();
    assert_eq!(get_search(&airlock).await, 200);

    let schema = shipped_schema();
    configmap_swap(
        &airlock.dir.path().join("policies"),
        "2026_11_27_10_05_00.2",
        &[
            ("schema.cedarschema", &schema),
            ("tools.cedar", &format!("{ALLOW_TOOLS}{FLIP}")),
        ],
    );
    airlock.wait_status(WATCH, |s| s["version"] != before).await;
    assert_eq!(get_search(&airlock).await, 403);
}

#[tokio::test]
async fn a_broken_save_keeps_the_last_good_snapshot_and_reports_where() {
    let (_up, airlock) = tools(|_| {}).await;
    let before = airlock.status().await["version"].clone();

    let file = airlock.dir.path().join("policies/tools.cedar");
    save_by_rename(
        &file,
        &format!(
            "{ALLOW_TOOLS}\npermit (principal, action, resource) when {{ context.nope == 1 }};\n"
        ),
    );
    let s = airlock
        .wait_status(WATCH, |s| !s["last_error"].is_null())
        .await;
    assert_eq!(s["version"], before, "a failed reload must not swap");
    let problems = s["last_error"].to_string();
    assert!(
        problems.contains("tools.cedar:4:"),
        "no file:line:col in {problems}"
    );
    assert_eq!(get_search(&airlock).await, 200);
    assert!(airlock
        .metrics()
        .await
        .contains("airlock_policy_reloads_total{result=\"failure\"} 1"));

    // Fixing the file clears the error.
    save_by_rename(&file, &format!("{ALLOW_TOOLS}{FLIP}"));
    airlock
        .wait_status(WATCH, |s| {
            s["last_error"].is_null() && s["version"] != before
        })
        .await;
    assert_eq!(get_search(&airlock).await, 403);
}

#[tokio::test]
async fn a_listener_change_in_the_config_says_a_restart_is_needed() {
    let (_up, airlock) = tools(|_| {}).await;
    let text = std::fs::read_to_string(&airlock.config).unwrap();
    assert!(text.starts_with("listen: 127.0.0.1:0\n"));
    save_by_rename(
        &airlock.config,
        &text.replacen("listen: 127.0.0.1:0", "listen: 127.0.0.1:1", 1),
    );
    let s = airlock
        .wait_status(WATCH, |s| {
            !s["restart_required"].as_array().unwrap().is_empty()
        })
        .await;
    assert_eq!(s["restart_required"], serde_json::json!(["listen"]));
    // The proxy keeps serving on the port it has.
    assert_eq!(get_search(&airlock).await, 200);
}

#[tokio::test]
async fn a_shadow_forbid_is_recorded_but_does_not_change_the_verdict() {
    let shadow = r#"@id("shadow-no-search")
@mode("shadow")
forbid (principal, action == Action::"GET", resource == Route::"tools")
when { context.path == "/tools/search" };
"#;
    let upstream = Upstream::start().await;
    let airlock = AirlockBuilder::new()
        .policy("tools.cedar", &format!("{ALLOW_TOOLS}{shadow}"))
        .route("tools", "/tools", &upstream.url("/api"))
        .start();
    let resp = airlock.agent_get("/tools/search").await;
    assert_eq!(resp.status(), 200, "a shadow forbid must not deny");
    let id = resp.headers()["x-request-id"].to_str().unwrap().to_string();
    let rec = airlock.audit_for(&id);
    assert_eq!(rec["verdict"], "allow");
    assert_eq!(rec["policies"], serde_json::json!(["tools-get"]));
    assert_eq!(rec["shadow"]["verdict"], "deny");
    assert_eq!(
        rec["shadow"]["policies"],
        serde_json::json!(["shadow-no-search"])
    );
    assert_eq!(upstream.hits(), 1);

    // A call the shadow policy does not match has no shadow field.
    let resp = airlock.agent_get("/tools/other").await;
    assert_eq!(resp.status(), 200);
    let id = resp.headers()["x-request-id"].to_str().unwrap().to_string();
    assert!(airlock.audit_for(&id).get("shadow").is_none());

    let metrics = airlock.metrics().await;
    assert!(
        metrics.contains("airlock_shadow_differences_total{verdict=\"deny\"} 1"),
        "{metrics}"
    );
}

/// One response seen by a load client.
struct Seen {
    started: Instant,
    status: u16,
    request_id: String,
}

/// The must-hold property of hot reload: under load, rewrite the policies
/// over and over (some versions invalid, one flipping `/tools/search` from
/// allow to deny); no request fails or hangs, every response matches the
/// verdict of the snapshot version its audit record names, and every call
/// that starts after the flip's reload returned is denied.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reloads_under_load_never_fail_or_misjudge_a_request() {
    const MIN_REQUESTS: usize = 10_000;
    const WRITES: usize = 56;
    const FLIP_AT: usize = 40;
    const CLIENTS: usize = 4;

    let (_up, airlock) = tools(|_| {}).await;
    // Snapshot version -> the verdict it gives `GET /tools/search`.
    let expected: Arc<Mutex<HashMap<String, &'static str>>> = Arc::default();
    let initial = airlock.status().await["version"]
        .as_str()
        .unwrap()
        .to_string();
    expected.lock().unwrap().insert(initial, "allow");

    let sent = Arc::new(AtomicUsize::new(0));
    let writer_done = Arc::new(AtomicBool::new(false));
    let flipped_at: Arc<Mutex<Option<Instant>>> = Arc::default();
    let hard_deadline = Instant::now() + Duration::from_secs(90);

    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        let (url, sent, writer_done, flipped_at) = (
            airlock.url("/tools/search"),
            sent.clone(),
            writer_done.clone(),
            flipped_at.clone(),
        );
        clients.push(tokio::spawn(async move {
            let http = reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .unwrap();
            let mut seen = Vec::new();
            loop {
                let settled = flipped_at
                    .lock()
                    .unwrap()
                    .is_some_and(|t| t.elapsed() > Duration::from_millis(1500));
                if sent.load(Ordering::Relaxed) >= MIN_REQUESTS
                    && writer_done.load(Ordering::Relaxed)
                    && settled
                {
                    break;
                }
                assert!(
                    Instant::now() < hard_deadline,
                    "load did not finish in time"
                );
                sent.fetch_add(1, Ordering::Relaxed);
                let started = Instant::now();
                let resp = http
                    .get(&url)
                    .header("authorization", bearer(AGENT_KEY))
                    .send()
                    .await
                    .unwrap_or_else(|e| panic!("request failed or hung: {e}"));
                let status = resp.status().as_u16();
                let request_id = resp.headers()["x-request-id"].to_str().unwrap().to_string();
                let _ = resp.bytes().await.expect("response body");
                seen.push(Seen {
                    started,
                    status,
                    request_id,
                });
            }
            seen
        }));
    }

    let policy_file = airlock.dir.path().join("policies/tools.cedar");
    let mut invalid = 0;
    for i in 1..=WRITES {
        let deny = i >= FLIP_AT;
        let broken = i % 5 == 4;
        let text = match (broken, i % 2 == 0) {
            (true, true) => format!("{ALLOW_TOOLS}permit (principal, action,\n"),
            (true, false) => format!(
                "{ALLOW_TOOLS}permit (principal, action, resource) when {{ context.nope == {i} }};\n"
            ),
            (false, _) => format!("{ALLOW_TOOLS}{}{}", if deny { FLIP } else { "" }, filler(i)),
        };
        save_by_rename(&policy_file, &text);
        let (status, body) = airlock.reload().await;
        if broken {
            assert_eq!(status, 422, "write {i} is invalid but loaded: {body}");
            invalid += 1;
        } else {
            assert_eq!(status, 200, "write {i} did not load: {body}");
            let version = body["version"].as_str().unwrap().to_string();
            expected
                .lock()
                .unwrap()
                .insert(version, if deny { "deny" } else { "allow" });
            if i == FLIP_AT {
                *flipped_at.lock().unwrap() = Some(Instant::now());
            }
        }
        // Spread the rewrites over the load.
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    writer_done.store(true, Ordering::Relaxed);
    assert!(invalid >= 10);

    let mut seen = Vec::new();
    for c in clients {
        seen.extend(c.await.unwrap());
    }
    assert!(seen.len() >= MIN_REQUESTS, "only {} requests", seen.len());
    let flipped_at = flipped_at.lock().unwrap().expect("the flip loaded");

    let records = airlock.wait_audit_count(seen.len(), Duration::from_secs(30));
    let by_id: HashMap<&str, &Value> = records
        .iter()
        .map(|r| (r["request_id"].as_str().unwrap(), r))
        .collect();
    let expected = expected.lock().unwrap();
    let mut after_flip = 0;
    for s in &seen {
        let rec = by_id
            .get(s.request_id.as_str())
            .unwrap_or_else(|| panic!("no audit record for {}", s.request_id));
        let version = rec["snapshot"].as_str().unwrap();
        let verdict = expected
            .get(version)
            .unwrap_or_else(|| panic!("{} was judged by unknown snapshot {version}", s.request_id));
        assert_eq!(
            rec["verdict"], *verdict,
            "audit verdict vs snapshot {version}: {rec}"
        );
        let want_status = if *verdict == "allow" { 200 } else { 403 };
        assert_eq!(
            s.status, want_status,
            "response vs snapshot {version}: {rec}"
        );
        if s.started > flipped_at {
            after_flip += 1;
            assert_eq!(s.status, 403, "a call after the flip was not denied: {rec}");
        }
    }
    assert!(after_flip > 0, "no call ran after the flip");
    let versions: std::collections::HashSet<&str> = records
        .iter()
        .filter_map(|r| r["snapshot"].as_str())
        .collect();
    eprintln!(
        "{} requests, {} after the flip, judged by {} snapshot versions",
        seen.len(),
        after_flip,
        versions.len()
    );
}

#[tokio::test]
async fn an_agent_added_to_the_config_can_call_after_the_watcher_reloads() {
    let (_up, airlock) = tools(|_| {}).await;
    let before = airlock.status().await["version"].clone();
    let call = |key: &'static str| {
        let url = airlock.url("/tools/search");
        async move {
            client()
                .get(url)
                .header("authorization", bearer(key))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    assert_eq!(call("newbie-key").await, 401);

    let text = std::fs::read_to_string(&airlock.config).unwrap();
    let added = text.replacen(
        "routes:\n",
        "  - id: newbie\n    key: newbie-key\n    groups: [support]\nroutes:\n",
        1,
    );
    assert_ne!(added, text);
    save_by_rename(&airlock.config, &added);
    let s = airlock.wait_status(WATCH, |s| s["version"] != before).await;
    assert_eq!(s["agents"], 3);
    assert!(s["restart_required"].as_array().unwrap().is_empty(), "{s}");
    assert_eq!(call("newbie-key").await, 200);
}
