//! Upstream connections: an HTTP/1.1 agent connection to a plain-HTTP tool
//! gets an upstream connection of its own, which closes with it, and no
//! call is lost or sent twice when the upstream closes connections.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::support::upstream::RawUpstream;
use crate::support::*;

fn open_gateway(routes: &[(&str, &str, String)]) -> Airlock {
    // One data-plane worker: with more, agents on different workers would
    // get different pools' connections anyway.
    let mut builder = AirlockBuilder::permitting_everything().env("AIRLOCK_WORKERS", "1");
    for (name, prefix, upstream) in routes {
        builder = builder.route(name, prefix, upstream);
    }
    builder.start()
}

/// One agent connection: a client that keeps its connection alive.
async fn post(
    agent: &reqwest::Client,
    airlock: &Airlock,
    path: &str,
    body: Value,
) -> reqwest::Response {
    agent
        .post(airlock.url(path))
        .header("authorization", bearer(AGENT_KEY))
        .json(&body)
        .send()
        .await
        .unwrap()
}

fn peers_of(upstream: &Upstream, who: &str) -> HashSet<SocketAddr> {
    upstream
        .seen()
        .iter()
        .filter(|s| serde_json::from_slice::<Value>(&s.body).unwrap()["agent"] == who)
        .map(|s| s.peer)
        .collect()
}

#[tokio::test]
async fn each_agent_connection_keeps_an_upstream_connection_of_its_own() {
    let upstream = Upstream::start().await;
    let airlock = open_gateway(&[("tools", "/tools", upstream.url("/"))]);
    let (alice, bob) = (client(), client());
    for _ in 0..10 {
        // Taking turns: a shared pool would reuse one idle connection for
        // both agents.
        assert_eq!(
            post(&alice, &airlock, "/tools/x", json!({"agent": "alice"}))
                .await
                .status(),
            200
        );
        assert_eq!(
            post(&bob, &airlock, "/tools/x", json!({"agent": "bob"}))
                .await
                .status(),
            200
        );
    }
    assert_eq!(upstream.hits(), 20);
    let (a, b) = (peers_of(&upstream, "alice"), peers_of(&upstream, "bob"));
    assert_eq!(a.len(), 1, "alice's calls came on {a:?}");
    assert_eq!(b.len(), 1, "bob's calls came on {b:?}");
    assert!(a.is_disjoint(&b), "alice and bob shared {a:?}");
}

#[tokio::test]
async fn closing_the_agent_connection_closes_its_upstream_connection() {
    let upstream = RawUpstream::keep_alive().await;
    let airlock = open_gateway(&[("tools", "/tools", upstream.url("/"))]);
    let agent = client();
    for i in 0..3 {
        let resp = post(&agent, &airlock, "/tools/x", json!({"n": i})).await;
        assert_eq!(resp.status(), 200);
    }
    assert_eq!(upstream.connections(), 1);
    assert_eq!(upstream.closed_by_peer(), 0);
    drop(agent);
    // The pool would have kept it for `timeouts.upstream_idle` (90 s).
    let deadline = Instant::now() + Duration::from_secs(5);
    while upstream.closed_by_peer() == 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        upstream.closed_by_peer(),
        1,
        "the upstream connection outlived its agent's"
    );
}

#[tokio::test]
async fn an_upstream_closing_after_each_answer_still_gets_every_call_once() {
    let upstream = Upstream::start().await;
    let airlock = open_gateway(&[("tools", "/tools", upstream.url("/"))]);
    let agent = client();
    for i in 0..10 {
        let resp = post(&agent, &airlock, "/tools/close", json!({"n": i})).await;
        assert_eq!(resp.status(), 200);
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["body"]["n"], i);
    }
    let seen = upstream.seen();
    assert_eq!(seen.len(), 10);
    let peers: HashSet<_> = seen.iter().map(|s| s.peer).collect();
    assert_eq!(
        peers.len(),
        10,
        "each `Connection: close` answer needs a new connection"
    );
}

#[tokio::test]
async fn an_upstream_dropping_idle_connections_silently_loses_no_call_and_repeats_none() {
    let upstream = RawUpstream::dropping_after_each_answer().await;
    let airlock = open_gateway(&[("tools", "/tools", upstream.url("/"))]);
    let agent = client();
    for i in 0..10 {
        let resp = post(&agent, &airlock, "/tools/x", json!({"n": i})).await;
        assert_eq!(
            resp.status(),
            200,
            "call {i}: {}",
            resp.text().await.unwrap()
        );
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["request"], i + 1);
        // Time for the close to arrive, as between an agent's calls.
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    assert_eq!(upstream.requests(), 10, "a call was sent twice");
    assert_eq!(upstream.connections(), 10);
}

#[tokio::test]
async fn a_timed_out_call_does_not_spoil_the_connection_for_the_next() {
    let upstream = Upstream::start().await;
    let airlock = AirlockBuilder::permitting_everything()
        .route_with_timeout("tools", "/tools", &upstream.url("/"), "300ms")
        .start();
    let agent = client();
    let resp = post(&agent, &airlock, "/tools/slow?ms=2000", json!({})).await;
    assert_eq!(resp.status(), 504);
    let resp = post(&agent, &airlock, "/tools/x", json!({"after": "timeout"})).await;
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["body"]["after"], "timeout");
}

#[tokio::test]
async fn calls_to_a_second_upstream_on_the_same_connection_go_through_the_pool() {
    let (one, two) = (Upstream::start().await, Upstream::start().await);
    let airlock = open_gateway(&[("one", "/one", one.url("/")), ("two", "/two", two.url("/"))]);
    let agent = client();
    for i in 0..5 {
        for (prefix, upstream) in [("/one", &one), ("/two", &two)] {
            let resp = post(&agent, &airlock, &format!("{prefix}/x"), json!({"n": i})).await;
            assert_eq!(resp.status(), 200);
            let seen = upstream.last();
            assert_eq!(seen.body, serde_json::to_vec(&json!({"n": i})).unwrap());
            // Each upstream is named in `Host`, never Airlock: the lane
            // replaces the agent's, the pool writes its own.
            assert_eq!(
                seen.header("host"),
                Some(upstream.addr.to_string().as_str())
            );
            assert_eq!(seen.headers.iter().filter(|(k, _)| k == "host").count(), 1);
            assert_eq!(seen.path, "/x");
        }
    }
    assert_eq!((one.hits(), two.hits()), (5, 5));
    // Both kept one warm connection: the lane for the first, the pool's
    // for the second.
    let peers = |u: &Upstream| {
        u.seen()
            .iter()
            .map(|s| s.peer)
            .collect::<HashSet<_>>()
            .len()
    };
    assert_eq!((peers(&one), peers(&two)), (1, 1));
}

#[tokio::test]
async fn an_unreachable_upstream_is_a_clear_502_on_a_kept_connection_too() {
    let upstream = Upstream::start().await;
    let airlock = open_gateway(&[
        ("tools", "/tools", upstream.url("/")),
        ("gone", "/gone", "http://127.0.0.1:1".to_string()),
    ]);
    let agent = client();
    let resp = post(&agent, &airlock, "/gone/x", json!({})).await;
    assert_eq!(resp.status(), 502);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"], "upstream_unavailable");
    let message = body["message"].as_str().unwrap_or_default().to_string();
    assert!(message.contains("refused"), "{body}");
    let resp = post(&agent, &airlock, "/tools/x", json!({})).await;
    assert_eq!(resp.status(), 200);
}
