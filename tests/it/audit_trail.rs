//! The audit trail never drops a record silently: rotation with and
//! without SIGHUP, a deleted rotated file, a full disk under
//! `on_failure: deny` and `continue`, the syslog and OTLP sinks against
//! receivers running in the test, and a shutdown while the sink fails.

use std::path::Path;
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use serde_json::Value;

use crate::support::audit_receivers::{attribute, Collector, SyslogSink};
use crate::support::full_disk::FullDisk;
use crate::support::*;

async fn tools(audit_yaml: &str) -> (Upstream, Airlock) {
    let upstream = Upstream::start().await;
    let airlock = AirlockBuilder::permitting_everything()
        .route("tools", "/tools", &upstream.url("/api"))
        .audit_yaml(audit_yaml)
        .start();
    (upstream, airlock)
}

/// One agent call: its status, request id and JSON body (if any).
async fn call(airlock: &Airlock) -> (u16, String, Value) {
    let resp = airlock.agent_get("/tools/search").await;
    let status = resp.status().as_u16();
    let id = resp
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let body = resp.json().await.unwrap_or(Value::Null);
    (status, id, body)
}

/// Calls that must succeed; their request ids.
async fn calls(airlock: &Airlock, n: usize) -> Vec<String> {
    let mut ids = Vec::new();
    for _ in 0..n {
        let (status, id, body) = call(airlock).await;
        assert_eq!(status, 200, "{body}");
        ids.push(id);
    }
    ids
}

/// The request ids of the records in `path`.
fn ids_in(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter_map(|r| r["request_id"].as_str().map(str::to_string))
        .collect()
}

/// Waits until every one of `ids` has a record in `path`.
fn wait_recorded(path: &Path, ids: &[String], within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let seen = ids_in(path);
        let missing: Vec<&String> = ids.iter().filter(|id| !seen.contains(id)).collect();
        if missing.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {} records missing from {}",
            missing.len(),
            ids.len(),
            path.display()
        );
        std::thread::sleep(Duration::from_millis(25));
    }
}

async fn healthz(airlock: &Airlock) -> (u16, String) {
    let resp = reqwest::get(airlock.admin_url("/healthz")).await.unwrap();
    (resp.status().as_u16(), resp.text().await.unwrap())
}

/// A counter's value in `/metrics`.
async fn counter(airlock: &Airlock, name: &str) -> u64 {
    let text = airlock.metrics().await;
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in:\n{text}"))
}

fn rotate(airlock: &Airlock) -> std::path::PathBuf {
    let rotated = airlock.dir.path().join("audit.jsonl.1");
    std::fs::rename(airlock.audit_path(), &rotated).unwrap();
    rotated
}

#[tokio::test]
async fn after_rotation_and_sighup_records_go_to_a_new_file() {
    let (_up, airlock) = tools("audit: audit.jsonl").await;
    let before = calls(&airlock, 2).await;
    wait_recorded(&airlock.audit_path(), &before, Duration::from_secs(5));

    let rotated = rotate(&airlock);
    airlock.sighup();
    // The signal is handled asynchronously: the new file is there once it
    // has been.
    let deadline = Instant::now() + Duration::from_secs(2);
    while !airlock.audit_path().exists() {
        assert!(Instant::now() < deadline, "no new audit file after SIGHUP");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let after = calls(&airlock, 3).await;

    wait_recorded(&airlock.audit_path(), &after, Duration::from_secs(5));
    assert_eq!(
        ids_in(&rotated),
        before,
        "the rotated file takes no more records"
    );
}

#[tokio::test]
async fn post_reload_reopens_the_file_too() {
    let (_up, airlock) = tools("audit: audit.jsonl").await;
    let before = calls(&airlock, 1).await;
    wait_recorded(&airlock.audit_path(), &before, Duration::from_secs(5));

    let rotated = rotate(&airlock);
    assert_eq!(airlock.reload().await.0, 200);
    let after = calls(&airlock, 2).await;

    wait_recorded(&airlock.audit_path(), &after, Duration::from_secs(5));
    assert_eq!(ids_in(&rotated), before);
}

#[tokio::test]
async fn a_rotation_nobody_announced_is_noticed_within_two_seconds() {
    let (_up, airlock) = tools("audit: audit.jsonl").await;
    let before = calls(&airlock, 1).await;
    wait_recorded(&airlock.audit_path(), &before, Duration::from_secs(5));

    let rotated = rotate(&airlock);
    let rotated_at = Instant::now();
    let mut made = Vec::new();
    while !airlock.audit_path().exists() {
        assert!(
            rotated_at.elapsed() < Duration::from_millis(2500),
            "the renamed audit file was not noticed"
        );
        made.extend(calls(&airlock, 1).await);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let after = calls(&airlock, 2).await;
    wait_recorded(&airlock.audit_path(), &after, Duration::from_secs(5));

    // Records made before the reopen went to the renamed file: none lost.
    let mut everywhere = ids_in(&rotated);
    everywhere.extend(ids_in(&airlock.audit_path()));
    for id in before.iter().chain(&made).chain(&after) {
        assert!(everywhere.contains(id), "record {id} is in neither file");
    }
}

#[tokio::test]
async fn records_after_the_rotated_file_is_deleted_reach_the_disk() {
    let (_up, airlock) = tools("audit: audit.jsonl").await;
    let before = calls(&airlock, 1).await;
    wait_recorded(&airlock.audit_path(), &before, Duration::from_secs(5));

    let rotated = rotate(&airlock);
    std::fs::remove_file(&rotated).unwrap();
    let after = calls(&airlock, 20).await;

    wait_recorded(&airlock.audit_path(), &after, Duration::from_secs(5));
}

/// Calls until `/healthz` says the audit sink fails; their request ids.
async fn calls_until_unhealthy(airlock: &Airlock, disk: &FullDisk) -> Vec<String> {
    let mut ids = Vec::new();
    for _ in 0..200 {
        ids.extend(calls(airlock, 1).await);
        let (status, body) = healthz(airlock).await;
        if status == 503 {
            assert!(body.contains("audit_unavailable"), "{body}");
            assert!(body.contains(disk.error_text()), "{body}");
            return ids;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("/healthz never reported the full disk");
}

async fn on_a_full_disk(on_failure: &str, buffer: usize) -> (FullDisk, Upstream, Airlock) {
    let disk = FullDisk::new();
    let upstream = Upstream::start().await;
    let airlock = AirlockBuilder::permitting_everything()
        .route("tools", "/tools", &upstream.url("/api"))
        .audit_yaml(&format!(
            "audit:\n  path: {}\n  on_failure: {on_failure}\n  buffer: {buffer}",
            disk.audit_path().display()
        ))
        .start_customized(|cmd| disk.customize(cmd));
    (disk, upstream, airlock)
}

#[tokio::test]
async fn a_full_disk_refuses_new_calls_under_deny_and_catches_up_when_space_returns() {
    let (disk, _up, airlock) = on_a_full_disk("deny", 5).await;
    let first = calls(&airlock, 1).await;
    wait_recorded(&disk.audit_path(), &first, Duration::from_secs(5));

    disk.fill();
    let mut answered = calls_until_unhealthy(&airlock, &disk).await;
    assert!(counter(&airlock, "airlock_audit_write_errors_total").await >= 1);

    // Calls go on until the writer, retrying, has filled its buffer; then
    // they are refused.
    let mut refusal = None;
    let deadline = Instant::now() + Duration::from_secs(10);
    while refusal.is_none() && Instant::now() < deadline {
        let (status, id, body) = call(&airlock).await;
        if status == 200 {
            answered.push(id);
            tokio::time::sleep(Duration::from_millis(20)).await;
        } else {
            refusal = Some((status, body));
        }
    }
    let (status, body) = refusal.expect("no call was refused with the buffer full");
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"], "audit_unavailable");

    disk.free();
    wait_recorded(&disk.audit_path(), &answered, Duration::from_secs(10));
    let deadline = Instant::now() + Duration::from_secs(5);
    while healthz(&airlock).await.0 != 200 {
        assert!(Instant::now() < deadline, "/healthz stayed unhealthy");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let later = calls(&airlock, 1).await;
    wait_recorded(&disk.audit_path(), &later, Duration::from_secs(5));
    assert_eq!(counter(&airlock, "airlock_audit_dropped_total").await, 0);
}

#[tokio::test]
async fn on_failure_continue_serves_and_counts_every_record_it_drops() {
    let (disk, _up, airlock) = on_a_full_disk("continue", 3).await;
    let first = calls(&airlock, 1).await;
    wait_recorded(&disk.audit_path(), &first, Duration::from_secs(5));

    disk.fill();
    let mut answered = calls_until_unhealthy(&airlock, &disk).await;
    answered.extend(calls(&airlock, 20).await);

    disk.free();
    // Every call is either recorded or counted.
    let deadline = Instant::now() + Duration::from_secs(10);
    let dropped = loop {
        let dropped = counter(&airlock, "airlock_audit_dropped_total").await;
        let seen = ids_in(&disk.audit_path());
        let written = answered.iter().filter(|id| seen.contains(id)).count() as u64;
        if written + dropped == answered.len() as u64 {
            break dropped;
        }
        assert!(
            Instant::now() < deadline,
            "{written} written + {dropped} dropped of {} calls",
            answered.len()
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    };
    assert!(dropped >= 1, "nothing was dropped with a buffer of 3");
}

fn assert_rfc5424(line: &crate::support::audit_receivers::SyslogLine) {
    assert_eq!(line.header[0], "<134>1", "{line:?}");
    assert_eq!(line.header[1], line.record["time"].as_str().unwrap());
    assert_eq!(line.header[3], "airlock");
    assert_eq!(line.header[5], "decision");
    assert_eq!(line.header[6], "-");
}

#[tokio::test]
async fn syslog_over_udp_gets_one_rfc5424_message_per_record() {
    let (sink, addr) = SyslogSink::udp().await;
    let (_up, airlock) = tools(&format!("audit:\n  sink: syslog\n  address: udp://{addr}")).await;
    let ids = calls(&airlock, 3).await;

    let lines = sink.wait_for(&ids, Duration::from_secs(5)).await;
    for line in &lines {
        assert_rfc5424(line);
        assert_eq!(line.record["verdict"], "allow");
        assert_eq!(line.record["route"], "tools");
    }
}

#[tokio::test]
async fn syslog_over_a_unix_socket_gets_every_record() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log.sock");
    let sink = SyslogSink::unix(&path);
    let (_up, airlock) = tools(&format!(
        "audit:\n  sink: syslog\n  address: unix://{}",
        path.display()
    ))
    .await;
    let ids = calls(&airlock, 3).await;

    for line in sink.wait_for(&ids, Duration::from_secs(5)).await {
        assert_rfc5424(&line);
    }
}

#[tokio::test]
async fn syslog_over_tcp_keeps_records_until_the_receiver_comes_back() {
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let (_up, airlock) = tools(&format!("audit:\n  sink: syslog\n  address: tcp://{addr}")).await;
    let ids = calls(&airlock, 3).await;
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (status, body) = healthz(&airlock).await;
        if status == 503 {
            assert!(body.contains(&format!("tcp://{addr}")), "{body}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "/healthz never reported the refused connection"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }

    let sink = SyslogSink::tcp(addr).await;
    let lines = sink.wait_for(&ids, Duration::from_secs(5)).await;
    assert_eq!(lines.len(), 3);
    assert_eq!(sink.lines().len(), 3, "each record once");
    assert!(counter(&airlock, "airlock_audit_write_errors_total").await >= 1);
    assert_eq!(healthz(&airlock).await.0, 200);
}

#[tokio::test]
async fn otlp_records_reach_a_collector_as_protobuf_with_their_fields_as_attributes() {
    let collector = Collector::start(2).await;
    let (_up, airlock) = tools(&format!("audit:\n  sink: otlp\n  url: {}", collector.url())).await;
    let ids = calls(&airlock, 4).await;

    let records = collector.wait_for(&ids, Duration::from_secs(10)).await;
    assert!(
        collector.requests() >= 3,
        "the two refused exports were retried"
    );
    assert!(counter(&airlock, "airlock_audit_write_errors_total").await >= 2);
    assert!(collector
        .content_types()
        .iter()
        .all(|t| t == "application/x-protobuf"));
    for r in &records {
        assert_eq!(r.severity_text, "INFO");
        assert_eq!(r.event_name, "airlock.decision");
        assert!(r.time_unix_nano > 0);
        assert_eq!(
            attribute(r, "verdict"),
            Some(AnyValue::StringValue("allow".into()))
        );
        assert_eq!(attribute(r, "status"), Some(AnyValue::IntValue(200)));
        assert_eq!(
            attribute(r, "route"),
            Some(AnyValue::StringValue("tools".into()))
        );
        assert!(matches!(
            attribute(r, "policies"),
            Some(AnyValue::ArrayValue(_))
        ));
    }
    assert_eq!(healthz(&airlock).await.0, 200);
}

#[tokio::test]
async fn shutdown_with_the_sink_still_failing_ends_and_says_how_many_records_were_lost() {
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let (_up, mut airlock) = tools(&format!(
        "audit:\n  sink: syslog\n  address: tcp://{addr}\n  buffer: 2"
    ))
    .await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, _, body) = call(&airlock).await;
        if status == 503 {
            assert_eq!(body["error"], "audit_unavailable");
            break;
        }
        assert!(Instant::now() < deadline, "calls were never refused");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    airlock.sigterm();
    assert!(
        airlock.wait_exit(Duration::from_secs(20)),
        "Airlock did not stop cleanly"
    );
    let mut stderr = Vec::new();
    while let Ok(line) = airlock.stderr.recv_timeout(Duration::from_secs(2)) {
        stderr.push(line);
    }
    assert!(
        stderr
            .iter()
            .any(|l| l.contains("audit records were not written")),
        "{}",
        stderr.join("\n")
    );
}
