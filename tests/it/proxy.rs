//! The core proxy: allow, deny, hold, and every way a call is refused.

use serde_json::Value;

use crate::support::*;

const CRM_POLICIES: &str = include_str!("../../policies/crm.cedar");

async fn crm() -> (Upstream, Airlock) {
    crm_with("").await
}

/// The CRM setup with more configuration.
async fn crm_with(yaml: &str) -> (Upstream, Airlock) {
    let upstream = Upstream::start().await;
    let airlock = AirlockBuilder::new()
        .policy("crm.cedar", CRM_POLICIES)
        .route("crm", "/crm", &upstream.url("/api"))
        // Held calls answer 202 pending after this wait (see approvals.rs).
        .yaml("approvals:\n  wait: 1s\n")
        .yaml(yaml)
        .start();
    (upstream, airlock)
}

#[tokio::test]
async fn an_allowed_call_reaches_the_upstream_with_injected_credentials_only() {
    let (upstream, airlock) = crm().await;
    let resp = airlock.agent_get("/crm/customers?limit=5").await;
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

#[tokio::test]
async fn the_upstream_gets_the_body_with_one_exact_length_however_the_agent_framed_it() {
    let (upstream, airlock) = crm().await;
    let c = reqwest::Client::new();
    let refund = br#"{"amount": 40, "customer": "c-1"}"#.to_vec();
    // With a Content-Length, and chunked without one.
    let framed = c
        .post(airlock.url("/crm/refunds"))
        .header("content-type", "application/json")
        .body(refund.clone());
    let chunked = c
        .post(airlock.url("/crm/refunds"))
        .header("content-type", "application/json")
        .body(reqwest::Body::wrap_stream(futures_stream(vec![
            refund[..10].to_vec(),
            refund[10..].to_vec(),
        ])));
    for (how, req) in [("framed", framed), ("chunked", chunked)] {
        let resp = req
            .header("authorization", bearer(AGENT_KEY))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{how}");
        let seen = upstream.last();
        assert_eq!(seen.body, refund, "{how}");
        let lengths: Vec<&str> = seen
            .headers
            .iter()
            .filter(|(k, _)| k == "content-length")
            .map(|(_, v)| v.as_str())
            .collect();
        assert_eq!(lengths, [refund.len().to_string()], "{how}");
        assert_eq!(seen.header("transfer-encoding"), None, "{how}");
    }
}

#[tokio::test]
async fn a_denied_call_gets_a_reason_and_never_reaches_the_upstream() {
    let (upstream, airlock) = crm().await;
    let resp = client()
        .delete(airlock.url("/crm/customers/c-1"))
        .header("authorization", bearer(AGENT_KEY))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"], "denied");
    assert_eq!(body["policies"], serde_json::json!(["no-customer-deletes"]));
    assert!(body["message"]
        .as_str()
        .unwrap()
        .contains("may not delete customers"));
    let request_id = body["request_id"].as_str().unwrap();
    assert_eq!(upstream.hits(), 0);

    let rec = airlock.audit_for(request_id);
    assert_eq!(rec["verdict"], "deny");
    assert_eq!(rec["fault"], "policy");
    assert_eq!(rec["policies"], serde_json::json!(["no-customer-deletes"]));
}

#[tokio::test]
async fn nothing_permits_an_agent_outside_the_group() {
    let (upstream, airlock) = crm().await;
    let resp = client()
        .get(airlock.url("/crm/customers"))
        .header("authorization", bearer(OTHER_AGENT_KEY))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["policies"], serde_json::json!([]));
    assert!(body["message"]
        .as_str()
        .unwrap()
        .contains("no policy permits agent `intruder`"));
    assert_eq!(upstream.hits(), 0);
}

#[tokio::test]
async fn a_call_behind_a_gate_is_held_and_recorded_as_hold() {
    let (upstream, airlock) = crm().await;
    let resp = client()
        .post(airlock.url("/crm/refunds"))
        .header("authorization", bearer(AGENT_KEY))
        .json(&serde_json::json!({"amount": 500, "customer_id": "c-1"}))
        .send()
        .await
        .unwrap();
    let request_id = resp.headers()["x-request-id"].to_str().unwrap().to_string();
    assert_eq!(resp.status(), 202);
    let rec = airlock.audit_for(&request_id);
    assert_eq!(rec["verdict"], "hold");
    assert!(rec["approval_id"].is_string());
    assert_eq!(
        rec["policies"],
        serde_json::json!(["large-refunds-need-approval"])
    );
    assert_eq!(
        upstream.hits(),
        0,
        "a held call must not be forwarded before approval"
    );

    // A small refund under the same route is allowed.
    let small = client()
        .post(airlock.url("/crm/refunds"))
        .header("authorization", bearer(AGENT_KEY))
        .json(&serde_json::json!({"amount": 50}))
        .send()
        .await
        .unwrap();
    assert_eq!(small.status(), 200);
    assert_eq!(upstream.hits(), 1);
}

#[tokio::test]
async fn an_evaluation_error_denies_instead_of_skipping_the_forbid() {
    let (upstream, airlock) = crm().await;
    // The schema says `amount` is a Long; a string makes the gate fail to
    // evaluate. Cedar alone would skip it and allow the refund.
    let resp = client()
        .post(airlock.url("/crm/refunds"))
        .header("authorization", bearer(AGENT_KEY))
        .json(&serde_json::json!({"amount": "5000"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"], "denied");
    assert_eq!(
        body["policies"],
        serde_json::json!(["large-refunds-need-approval"])
    );
    assert!(body["message"]
        .as_str()
        .unwrap()
        .contains("could not be evaluated"));
    let rec = airlock.audit_for(body["request_id"].as_str().unwrap());
    assert_eq!(rec["verdict"], "deny");
    assert!(!rec["eval_errors"].as_array().unwrap().is_empty());
    assert_eq!(upstream.hits(), 0);
}

#[tokio::test]
async fn unknown_keys_routes_and_oversized_bodies_get_json_errors() {
    let upstream = Upstream::start().await;
    let airlock = AirlockBuilder::permitting_everything()
        .route("crm", "/crm", &upstream.url("/"))
        .yaml("limits:\n  max_body: 1KiB")
        .start();
    let c = client();
    let cases = [
        (c.get(airlock.url("/crm/x")), 401, "unauthenticated"),
        (
            c.get(airlock.url("/crm/x"))
                .header("authorization", "Bearer wrong"),
            401,
            "unauthenticated",
        ),
        (
            c.get(airlock.url("/crm/x"))
                .header("authorization", "Basic Ym90Og=="),
            401,
            "unauthenticated",
        ),
        (
            c.get(airlock.url("/crmx"))
                .header("authorization", bearer(AGENT_KEY)),
            404,
            "no_route",
        ),
        (
            c.post(airlock.url("/crm/x"))
                .header("authorization", bearer(AGENT_KEY))
                .body(vec![b'a'; 2048]),
            413,
            "body_too_large",
        ),
        (
            c.post(airlock.url("/crm/x"))
                .header("authorization", bearer(AGENT_KEY))
                .header("content-type", "application/json")
                .body(r#"{"amount": 1, "amount": 1000}"#),
            400,
            "duplicate_json_key",
        ),
        (
            c.post(airlock.url("/crm/x"))
                .header("authorization", bearer(AGENT_KEY))
                .header("content-type", "application/json")
                .body("{not json"),
            400,
            "invalid_json",
        ),
        (
            c.get(airlock.url("/crm/x?a=1&a=2"))
                .header("authorization", bearer(AGENT_KEY)),
            400,
            "ambiguous_query",
        ),
    ];
    for (req, status, kind) in cases {
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), status, "expected {kind}");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["error"], kind);
        assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()));
        assert!(body["request_id"].as_str().is_some_and(|m| !m.is_empty()));
    }
    // A chunked body without Content-Length is limited too.
    let chunks = futures_stream(vec![vec![b'x'; 700], vec![b'y'; 700]]);
    let resp = c
        .post(airlock.url("/crm/x"))
        .header("authorization", bearer(AGENT_KEY))
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 413);
    assert_eq!(upstream.hits(), 0);

    // Refusals are audited under the path as decoded when it could be
    // decoded, and as sent when it could not (or was never looked at).
    for (req, status, path, agent) in [
        (c.get(airlock.url("/crm/%78")), 401, "/crm/%78", false),
        (
            c.get(airlock.url("/crmx/%79"))
                .header("authorization", bearer(AGENT_KEY)),
            404,
            "/crmx/y",
            true,
        ),
        (
            c.get(airlock.url("/crm/a%2Fb"))
                .header("authorization", bearer(AGENT_KEY)),
            400,
            "/crm/a%2Fb",
            true,
        ),
    ] {
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), status, "{path}");
        let body: Value = resp.json().await.unwrap();
        let rec = airlock.audit_for(body["request_id"].as_str().unwrap());
        assert_eq!(rec["path"], path);
        assert_eq!(rec["agent"].is_string(), agent, "{rec}");
        assert_eq!(rec["method"], "GET");
        assert_eq!(rec["verdict"], "error");
    }
}

fn futures_stream(
    parts: Vec<Vec<u8>>,
) -> impl futures_core::Stream<Item = Result<Vec<u8>, std::io::Error>> {
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tokio::spawn(async move {
        for p in parts {
            let _ = tx.send(Ok(p)).await;
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

#[tokio::test]
async fn path_tricks_are_resolved_before_the_policy_sees_them() {
    let upstream = Upstream::start().await;
    let airlock = AirlockBuilder::new()
        .policy(
            "paths.cedar",
            r#"@id("a-is-open") permit(principal, action, resource == Route::"a");"#,
        )
        .route("a", "/a", &upstream.url("/up"))
        .route("admin", "/admin", &upstream.url("/admin"))
        .start();
    // Raw requests: an HTTP client library would normalize these paths
    // itself, and the point is what Airlock does with them.
    let get = |path: &str| {
        let req = format!(
            "GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {AGENT_KEY}\r\nConnection: close\r\n\r\n"
        );
        let addr = airlock.proxy;
        async move { raw_exchange(addr, req.as_bytes()).await }
    };
    let body_of = |reply: &str| -> Value {
        serde_json::from_str(reply.split("\r\n\r\n").nth(1).unwrap_or("")).unwrap_or(Value::Null)
    };

    // `..` is resolved: this is a call to /admin, which nothing permits.
    let reply = get("/a/%2e%2e/admin").await;
    assert!(reply.starts_with("HTTP/1.1 403"), "{reply}");
    let rec = airlock.audit_for(body_of(&reply)["request_id"].as_str().unwrap());
    assert_eq!(rec["route"], "admin");
    assert_eq!(rec["path"], "/admin");

    // Doubled slashes and dot segments collapse, and the upstream gets
    // exactly the path the policy saw.
    let reply = get("//a/./x//y/").await;
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    assert_eq!(upstream.last().path, "/up/x/y/");
    let reply = get("/a/caf%C3%A9%20menu").await;
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    assert_eq!(upstream.last().path, "/up/caf%C3%A9%20menu");

    // Encoded slashes and climbing above the root are refused outright.
    for bad in [
        "/a/x%2Fy",
        "/a/x%5cy",
        "/a/%2e%2e/%2e%2e/etc",
        "/a/../../etc",
    ] {
        let reply = get(bad).await;
        assert!(reply.starts_with("HTTP/1.1 400"), "{bad}: {reply}");
        assert_eq!(body_of(&reply)["error"], "bad_path");
    }
    assert_eq!(upstream.hits(), 2);
}

/// Sends raw bytes and returns what came back before the server closed.
async fn raw_exchange(addr: std::net::SocketAddr, request: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(request).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(10), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn airlock_is_never_an_open_proxy() {
    let (upstream, airlock) = crm().await;
    let connect = raw_exchange(
        airlock.proxy,
        format!("CONNECT 127.0.0.1:{} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {AGENT_KEY}\r\nConnection: close\r\n\r\n", upstream.addr.port()).as_bytes(),
    )
    .await;
    assert!(connect.starts_with("HTTP/1.1 405"), "{connect}");
    let absolute = raw_exchange(
        airlock.proxy,
        format!("GET http://127.0.0.1:{}/crm/customers HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {AGENT_KEY}\r\nConnection: close\r\n\r\n", upstream.addr.port()).as_bytes(),
    )
    .await;
    assert!(absolute.starts_with("HTTP/1.1 400"), "{absolute}");
    assert!(absolute.contains("absolute_form"), "{absolute}");
    assert_eq!(upstream.hits(), 0);
}

#[tokio::test]
async fn a_slow_agent_body_times_out_with_408() {
    let upstream = Upstream::start().await;
    let airlock = AirlockBuilder::permitting_everything()
        .route("crm", "/crm", &upstream.url("/"))
        .yaml("timeouts:\n  body_read: 300ms\n  header_read: 2s\n  shutdown_grace: 5s")
        .start();
    // Promise 100 bytes, send 10, then stall.
    let reply = raw_exchange(
        airlock.proxy,
        format!("POST /crm/x HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {AGENT_KEY}\r\nContent-Length: 100\r\n\r\n0123456789").as_bytes(),
    )
    .await;
    assert!(reply.starts_with("HTTP/1.1 408"), "{reply}");
    assert_eq!(upstream.hits(), 0);
}

#[tokio::test]
async fn slow_and_missing_upstreams_give_504_and_502() {
    let upstream = Upstream::start().await;
    let airlock = AirlockBuilder::permitting_everything()
        .route_with_timeout("slow", "/slow", &upstream.url("/"), "300ms")
        .route("gone", "/gone", "http://127.0.0.1:1")
        .start();
    let resp = airlock.agent_get("/slow/slow?ms=3000").await;
    assert_eq!(resp.status(), 504);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"], "upstream_timeout");
    let rec = airlock.audit_for(body["request_id"].as_str().unwrap());
    assert_eq!(rec["fault"], "upstream");
    assert_eq!(rec["verdict"], "allow");

    let resp = airlock.agent_get("/gone/x").await;
    assert_eq!(resp.status(), 502);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"], "upstream_unavailable");
}

#[tokio::test]
async fn streaming_responses_arrive_event_by_event_past_the_response_timeout() {
    let upstream = Upstream::start().await;
    let airlock = AirlockBuilder::permitting_everything()
        .route_with_timeout("s", "/s", &upstream.url("/"), "1s")
        .start();
    let mut resp = airlock.agent_get("/s/stream?events=4&gap_ms=500").await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let mut chunks = Vec::new();
    while let Some(chunk) = resp.chunk().await.unwrap() {
        chunks.push(String::from_utf8_lossy(&chunk).into_owned());
    }
    // Unbuffered: the first event arrives on its own, long before the last
    // one exists; and the stream outlives the 1 s response timeout.
    assert_eq!(chunks[0], "data: event 0\n\n");
    assert_eq!(chunks.concat().matches("data: event").count(), 4);
}

#[tokio::test]
async fn agents_may_speak_h2c() {
    let (_upstream, airlock) = crm().await;
    let c = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let resp = airlock.agent_get_via(&c, "/crm/customers").await;
    assert_eq!(resp.version(), reqwest::Version::HTTP_2);
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn an_h2c_preface_split_across_packets_is_still_http2() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (_upstream, airlock) = crm().await;
    let preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    let mut s = tokio::net::TcpStream::connect(airlock.proxy).await.unwrap();
    s.write_all(&preface[..9]).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    s.write_all(&preface[9..]).await.unwrap();
    // An empty SETTINGS frame: length 0, type 4, no flags, stream 0.
    s.write_all(&[0, 0, 0, 4, 0, 0, 0, 0, 0]).await.unwrap();
    let mut head = [0u8; 9];
    tokio::time::timeout(std::time::Duration::from_secs(10), s.read_exact(&mut head))
        .await
        .expect("an answer within 10 s")
        .unwrap();
    assert_eq!(
        head[3],
        4,
        "the server's first frame is its SETTINGS, not an HTTP/1.1 reply: {:?}",
        String::from_utf8_lossy(&head)
    );
}

#[tokio::test]
async fn a_connection_that_never_sends_a_request_is_closed_after_the_header_read_timeout() {
    use tokio::io::AsyncReadExt;
    let (_upstream, airlock) = crm_with("timeouts:\n  header_read: 1s\n").await;
    let mut s = tokio::net::TcpStream::connect(airlock.proxy).await.unwrap();
    let opened = std::time::Instant::now();
    let mut out = Vec::new();
    let read = tokio::time::timeout(std::time::Duration::from_secs(10), s.read_to_end(&mut out))
        .await
        .expect("Airlock closes the silent connection");
    assert!(matches!(read, Ok(0)), "{read:?} {out:?}");
    assert!(
        opened.elapsed() >= std::time::Duration::from_millis(900),
        "closed after {:?}, before the timeout",
        opened.elapsed()
    );
}

#[tokio::test]
async fn sigterm_drains_in_flight_requests() {
    let upstream = Upstream::start().await;
    let mut airlock = AirlockBuilder::permitting_everything()
        .route("crm", "/crm", &upstream.url("/"))
        .start();
    let url = airlock.url("/crm/slow?ms=1500");
    let in_flight = tokio::spawn(async move {
        client()
            .get(url)
            .header("authorization", bearer(AGENT_KEY))
            .send()
            .await
    });
    // Wait until the request has reached the upstream, then ask to stop.
    for _ in 0..200 {
        if upstream.hits() > 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(upstream.hits(), 1);
    airlock.sigterm();
    let resp = in_flight.await.unwrap().unwrap();
    assert_eq!(resp.status(), 200);
    assert!(
        airlock.wait_exit(std::time::Duration::from_secs(10)),
        "airlock did not exit cleanly"
    );
    // The record of the drained request was flushed before exit.
    assert!(airlock.audit().iter().any(|r| r["path"] == "/crm/slow"));
}
