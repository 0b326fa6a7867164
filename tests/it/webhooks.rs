//! Webhook delivery under faults: one endpoint's trouble stays its own.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::approvals::{pending_id, CALLBACK_SECRET};
use crate::support::webhook::{WebhookReceiver, WEBHOOK_SECRET};
use crate::support::*;

const CRM_POLICIES: &str = include_str!("../../policies/crm.cedar");

/// An endpoint that accepts connections and never answers: its sockets are
/// kept open, unread, for as long as the test runs.
async fn black_hole() -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    (addr, task)
}

#[tokio::test]
async fn a_black_holed_endpoint_does_not_delay_a_healthy_one() {
    let (hole, _hole_task) = black_hole().await;
    let healthy = WebhookReceiver::start().await;
    let upstream = Upstream::start().await;
    let airlock = AirlockBuilder::new()
        .policy("crm.cedar", CRM_POLICIES)
        .route("crm", "/crm", &upstream.url("/api"))
        .yaml(&format!(
            "approvers:\n  - id: alice\n    token: {APPROVER_TOKEN}\n    groups: [finance]\napprovals:\n  wait: 1ms\n  callback_secret: {CALLBACK_SECRET}\n"
        ))
        // The dead endpoint is listed first, so a worker that goes in order
        // meets it before the healthy one every time.
        .yaml(&format!(
            "webhooks:\n  - url: http://{hole}/hook\n    secret: {WEBHOOK_SECRET}\n    max_attempts: 50\n  - url: {}\n    secret: {WEBHOOK_SECRET}\n    max_attempts: 50\n",
            healthy.url()
        ))
        .start();

    for amount in [500, 600, 700] {
        let held_at = Instant::now();
        let id = pending_id(&airlock, json!({"amount": amount, "customer_id": "c-1"})).await;
        healthy.wait_event("approval.requested", &id).await;
        let took = held_at.elapsed();
        assert!(
            took < Duration::from_secs(2),
            "the healthy endpoint heard of hold {id} after {took:?}"
        );
    }
    assert_eq!(upstream.hits(), 0);
}
