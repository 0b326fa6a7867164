//! The live view: `GET /v1/events` read by a real SSE client, and
//! `airlock watch` following it.

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};

use crate::approvals::{decide, env_with, refund, Env, BOB_TOKEN};
use crate::support::sse::{EventReader, SseEvent};
use crate::support::*;

const WITHIN: Duration = Duration::from_secs(10);

/// A reader of the live view with `token`, from after `last_id` if given.
async fn follow(airlock: &Airlock, token: &str, query: &str, last_id: Option<&str>) -> EventReader {
    let mut req = client()
        .get(airlock.admin_url(&format!("/v1/events{query}")))
        .header("authorization", bearer(token))
        .header("accept", "text/event-stream");
    if let Some(id) = last_id {
        req = req.header("last-event-id", id);
    }
    let resp = req.send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    EventReader::new(resp)
}

async fn next(reader: &mut EventReader) -> SseEvent {
    reader
        .next_event(WITHIN)
        .await
        .unwrap_or_else(|| panic!("the stream ended: {}", reader.raw))
}

/// The status of the agent's `GET` of `path`.
async fn get(airlock: &Airlock, path: &str) -> u16 {
    airlock.agent_get(path).await.status().as_u16()
}

/// The status of the agent's `DELETE` of `path`.
async fn delete(airlock: &Airlock, path: &str) -> u16 {
    client()
        .delete(airlock.url(path))
        .header("authorization", bearer(AGENT_KEY))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test]
async fn every_call_is_an_event_filtered_by_verdict_and_resumed_after_the_last_id() {
    let Env { airlock, .. } = env_with("200ms", None).await;
    let mut denials = follow(&airlock, ADMIN_TOKEN, "?verdict=deny", None).await;
    let mut everything = follow(&airlock, ADMIN_TOKEN, "", None).await;

    assert_eq!(get(&airlock, "/crm/customers").await, 200);
    assert_eq!(delete(&airlock, "/crm/customers/c-1").await, 403);

    let first = next(&mut everything).await;
    assert_eq!(first.name.as_deref(), Some("decision"));
    assert_eq!(first.data["verdict"], "allow", "{:?}", first.data);
    assert_eq!(first.data["agent"], "bot");
    assert_eq!(first.data["route"], "crm");
    assert!(first.data.get("body").is_none() && first.data.get("path").is_none());
    let second = next(&mut everything).await;
    assert_eq!(second.data["verdict"], "deny");
    assert_eq!(second.data["policies"], json!(["no-customer-deletes"]));

    // The filtered reader never saw the allowed call.
    let denied = next(&mut denials).await;
    assert_eq!(denied.data["verdict"], "deny", "{:?}", denied.data);
    assert_eq!(denied.id, second.id);

    // A reader that comes back after the first event gets the second.
    let mut resumed = follow(&airlock, ADMIN_TOKEN, "", first.id.as_deref()).await;
    let again = next(&mut resumed).await;
    assert_eq!(again.id, second.id);
    assert_eq!(again.data["request_id"], second.data["request_id"]);
}

#[tokio::test]
async fn approvers_see_approval_events_only_for_gates_that_name_their_group() {
    let Env { airlock, .. } = env_with("200ms", None).await;
    let mut alice = follow(&airlock, APPROVER_TOKEN, "", None).await; // finance
    let mut bob = follow(&airlock, BOB_TOKEN, "", None).await; // support
    let mut agents = follow(&airlock, ADMIN_TOKEN, "", None).await;

    let resp = refund(&airlock, json!({"customer_id": "c-1", "amount": 500}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    let held: Value = resp.json().await.unwrap();
    let id = held["approval_id"].as_str().unwrap().to_string();
    let (status, v) = decide(&airlock, &id, ADMIN_TOKEN, json!({"decision": "approve"})).await;
    assert_eq!(status, 200, "{v}");
    // A call every reader may see, after the approval.
    assert_eq!(get(&airlock, "/crm/customers").await, 200);

    // The new hold is announced at once, before the agent's wait ends.
    let requested = next(&mut alice).await;
    assert_eq!(requested.name.as_deref(), Some("approval.requested"));
    assert_eq!(requested.data["approval_id"], id.as_str());
    assert_eq!(requested.data["approver_groups"], json!(["finance"]));
    let hold = next(&mut alice).await;
    assert_eq!(hold.data["verdict"], "hold");
    assert_eq!(hold.data["approval_id"], id.as_str());
    assert_eq!(hold.data["approver_groups"], json!(["finance"]));
    let approved = next(&mut alice).await;
    assert_eq!(approved.name.as_deref(), Some("approval.approve"));
    assert_eq!(approved.data["approval_id"], id.as_str());
    assert_eq!(approved.data["by"], "admin");

    // Bob sees the calls, not the approval of a gate for finance.
    assert_eq!(next(&mut bob).await.data["verdict"], "hold");
    let after = next(&mut bob).await;
    assert_eq!(after.name.as_deref(), Some("decision"), "{:?}", after);
    assert_eq!(after.data["verdict"], "allow");

    let kinds: Vec<Option<String>> = [
        next(&mut agents).await,
        next(&mut agents).await,
        next(&mut agents).await,
        next(&mut agents).await,
    ]
    .into_iter()
    .map(|e| e.name)
    .collect();
    assert!(
        kinds.contains(&Some("approval.requested".into()))
            && kinds.contains(&Some("approval.approve".into())),
        "{kinds:?}"
    );

    // An agent's key is no reader's.
    let resp = client()
        .get(airlock.admin_url("/v1/events"))
        .header("authorization", bearer(AGENT_KEY))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
}

#[tokio::test]
async fn a_reader_that_never_reads_holds_up_no_call() {
    let Env { airlock, .. } = env_with("200ms", None).await;
    // A raw connection that asks for the stream and then reads nothing.
    let addr = airlock
        .admin_url("")
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string();
    let mut stalled = std::net::TcpStream::connect(&addr).unwrap();
    write!(
        stalled,
        "GET /v1/events HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\nAccept: text/event-stream\r\n\r\n"
    )
    .unwrap();

    // A bounded load of 8 clients, 250 calls each: every call is served.
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let url = airlock.url("/crm/customers");
        tasks.push(tokio::spawn(async move {
            let c = client();
            let mut ok = 0;
            for _ in 0..250 {
                let s = c
                    .get(&url)
                    .header("authorization", bearer(AGENT_KEY))
                    .send()
                    .await
                    .unwrap()
                    .status();
                ok += u32::from(s == 200);
            }
            ok
        }));
    }
    let mut served = 0;
    for t in tasks {
        served += t.await.unwrap();
    }
    assert_eq!(served, 2000);

    // The stalled reader was connected all along: its first events are there.
    stalled
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut head = vec![0u8; 4096];
    let n = stalled.read(&mut head).unwrap();
    let text = String::from_utf8_lossy(&head[..n]);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
}

#[tokio::test]
async fn watch_prints_a_row_per_event_as_it_happens() {
    let Env { airlock, .. } = env_with("200ms", None).await;
    let admin = airlock.admin_url("");
    let mut child = Command::new(airlock_bin())
        .args([
            "watch",
            "--admin",
            admin.trim_end_matches('/'),
            "--verdict",
            "deny",
        ])
        .env("AIRLOCK_TOKEN", ADMIN_TOKEN)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let header = lines.next().unwrap().unwrap();
    assert!(
        header.starts_with("TIME") && header.contains("VERDICT"),
        "{header}"
    );

    assert_eq!(get(&airlock, "/crm/customers").await, 200);
    assert_eq!(delete(&airlock, "/crm/customers/c-1").await, 403);
    let row = lines.next().unwrap().unwrap();
    let _ = child.kill();
    let _ = child.wait();
    assert!(row.contains("decision") && row.contains("DELETE"), "{row}");
    assert!(
        row.contains("deny") && row.contains("no-customer-deletes"),
        "{row}"
    );
}
