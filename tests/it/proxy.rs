//! The core proxy: allow, deny, hold, and every way a call is refused.

use serde_json::Value;

use crate::support::*;

const CRM_POLICIES: &str = include_str!("../../policies/crm.cedar");

async fn crm() -> (Upstream, Airlock) {
    let upstream = Upstream::start().await;
    let airlock = AirlockBuilder::new()
        .policy("crm.cedar", CRM_POLICIES)
        .route("crm", "/crm", &upstream.url("/api"))
        .start();
    (upstream, airlock)
}

#[tokio::test]
async fn an_allowed_call_reaches_the_upstream_with_injected_credentials_only() {
    let (upstream, airlock) = crm().await;
    let resp = client()
        .get(airlock.url("/crm/customers?limit=5"))
        .header("authorization", bearer(AGENT_KEY))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let request_id = resp.headers()["x-request-id"].to_str().unwrap().to_string();
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["path"], "/api/customers");
    assert_eq!(body["query"], "limit=5");

    let seen = upstream.last();
    assert_eq!(seen.header("x-upstream-secret"), Some("injected-secret"));
    assert_eq!(
        seen.header("authorization"),
        None,
        "the agent's key must not be forwarded"
    );

    let rec = airlock.audit_for(&request_id);
    assert_eq!(rec["verdict"], "allow");
    assert_eq!(rec["agent"], "bot");
    assert_eq!(rec["route"], "crm");
    assert_eq!(rec["action"], "GET");
    assert_eq!(rec["resource"], "Route::\"crm\"");
    assert_eq!(rec["policies"], serde_json::json!(["support-reads-crm"]));
    assert_eq!(rec["upstream_status"], 200);
    assert!(rec["decision_us"].is_u64());
    assert!(rec["snapshot"].as_str().is_some_and(|s| !s.is_empty()));
    let raw = std::fs::read_to_string(airlock.audit_path()).unwrap();
    assert!(
        !raw.contains(AGENT_KEY) && !raw.contains("injected-secret"),
        "secrets leaked into audit"
    );
}
