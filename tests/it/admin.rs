//! The control plane: health, metrics, status, reload.

use serde_json::Value;

use crate::support::*;

#[tokio::test]
async fn health_metrics_and_status_answer_and_v1_needs_the_admin_token() {
    let upstream = Upstream::start().await;
    let airlock = AirlockBuilder::permitting_everything()
        .route("crm", "/crm", &upstream.url("/"))
        .start();
    let c = client();
    let health = c.get(airlock.admin_url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);

    // The same call twice, so the counters have something to show. Both go
    // on one connection, so one worker decides both, and the second comes
    // from its memo (each worker thread keeps its own).
    for _ in 0..2 {
        let resp = airlock.agent_get_via(&c, "/crm/x").await;
        assert_eq!(resp.status(), 200);
        resp.text().await.unwrap();
    }
    let metrics = c
        .get(airlock.admin_url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(r#"airlock_requests_total{route="crm",verdict="allow"} 2"#),
        "{metrics}"
    );
    assert!(
        metrics.contains("airlock_decisions_memoized_total 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("airlock_decision_seconds_bucket"),
        "{metrics}"
    );

    for auth in [None, Some(bearer("wrong")), Some(bearer(AGENT_KEY))] {
        let mut req = c.get(airlock.admin_url("/v1/status"));
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), 401);
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["error"], "unauthenticated");
    }
    let status: Value = c
        .get(airlock.admin_url("/v1/status"))
        .header("authorization", bearer(ADMIN_TOKEN))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(status["version"].as_str().is_some_and(|v| v.len() == 16));
    assert!(status["loaded_at"].as_str().is_some());
    assert_eq!(status["last_error"], Value::Null);
    assert_eq!(status["policies"], 1);
}

#[tokio::test]
async fn a_bad_reload_keeps_the_last_good_snapshot_and_says_why() {
    let upstream = Upstream::start().await;
    let airlock = AirlockBuilder::permitting_everything()
        .route("crm", "/crm", &upstream.url("/"))
        .start();
    let c = client();
    let status = |c: reqwest::Client, url: String| async move {
        c.get(url)
            .header("authorization", bearer(ADMIN_TOKEN))
            .send()
            .await
            .unwrap()
            .json::<Value>()
            .await
            .unwrap()
    };
    let before = status(c.clone(), airlock.admin_url("/v1/status")).await;

    let policy_file = airlock.dir.path().join("policies/open.cedar");
    std::fs::write(
        &policy_file,
        "permit(principal, action, resource) when { context.nope };",
    )
    .unwrap();
    let resp = c
        .post(airlock.admin_url("/v1/reload"))
        .header("authorization", bearer(ADMIN_TOKEN))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 422);
    let after = status(c.clone(), airlock.admin_url("/v1/status")).await;
    assert_eq!(after["version"], before["version"]);
    let err = after["last_error"][0].as_str().unwrap();
    assert!(err.contains("open.cedar:1:"), "{err}");

    // Still serving with the old rules.
    let resp = airlock.agent_get("/crm/x").await;
    assert_eq!(resp.status(), 200);

    // A good change applies, with a new version.
    std::fs::write(&policy_file, "forbid(principal, action, resource);").unwrap();
    let resp = c
        .post(airlock.admin_url("/v1/reload"))
        .header("authorization", bearer(ADMIN_TOKEN))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let fixed = status(c.clone(), airlock.admin_url("/v1/status")).await;
    assert_ne!(fixed["version"], before["version"]);
    assert_eq!(fixed["last_error"], Value::Null);
    let resp = airlock.agent_get("/crm/x").await;
    assert_eq!(resp.status(), 403);
}
