//! Benchmark: decision → release across two replicas. Two Airlock
//! processes share one PostgreSQL schema (fresh, on 127.0.0.1:5432); N
//! agents (default 200) wait on replica A, their approvals are decided one
//! at a time on replica B, and the time from each decision's request to
//! its agent's response on A is reported (median, p99): the decision's
//! commit, the wake-up, the claim, the forward and the outcome's commit. The wake-up
//! crosses the store: B's commit sends `NOTIFY airlock_holds`, A's listener
//! wakes the waiter, which reads the row again.
//!
//!     cargo bench --bench replica_release
//!     CALLS=500 cargo bench --bench replica_release
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a benchmark with a broken setup stops"
)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

const AGENT_KEY: &str = "bench-agent-key";
const ADMIN_TOKEN: &str = "bench-admin-token";

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(run());
}

/// A fresh schema on the test database; its `store:` URL.
async fn fresh_schema() -> String {
    let (client, conn) = tokio_postgres::connect(
        "host=127.0.0.1 port=5432 user=postgres dbname=test",
        tokio_postgres::NoTls,
    )
    .await
    .expect("PostgreSQL at 127.0.0.1:5432");
    tokio::spawn(conn);
    let schema = format!("bench_{}", uuid::Uuid::now_v7().simple());
    client
        .batch_execute(&format!("CREATE SCHEMA {schema}"))
        .await
        .expect("create schema");
    format!("postgres://postgres@127.0.0.1:5432/test?options=-c%20search_path%3D{schema}")
}

/// Writes one replica's directory: the shared config, its own audit file.
fn write_replica(dir: &Path, store: &str, upstream: &str, calls: usize) {
    let pol = dir.join("policies");
    std::fs::create_dir_all(&pol).expect("dir");
    std::fs::copy(
        concat!(env!("CARGO_MANIFEST_DIR"), "/policies/schema.cedarschema"),
        pol.join("schema.cedarschema"),
    )
    .expect("schema");
    std::fs::write(
        pol.join("bench.cedar"),
        "@id(\"all\") permit(principal, action, resource);\n@id(\"gate\") @hold(\"bench\") forbid(principal, action == Action::\"POST\", resource);\n",
    )
    .expect("policy");
    std::fs::write(
        dir.join("airlock.yaml"),
        format!(
            "listen: 127.0.0.1:0\nadmin:\n  listen: 127.0.0.1:0\n  token: {ADMIN_TOKEN}\npolicies: policies\nstore: {store}\naudit: audit.jsonl\nagents:\n  - id: bot\n    key: {AGENT_KEY}\n    groups: [support]\nroutes:\n  - name: crm\n    prefix: /crm\n    upstream: http://{upstream}\napprovals:\n  wait: 10m\n  max_pending_per_agent: {calls}\n"
        ),
    )
    .expect("config");
}

/// Starts `airlock serve` in `dir`; the process and its proxy and admin
/// addresses.
fn start(dir: &Path) -> (Child, String, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_airlock"))
        .args(["serve", "--config"])
        .arg(dir.join("airlock.yaml"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start airlock");
    let mut lines = BufReader::new(child.stderr.take().expect("stderr")).lines();
    let (mut proxy, mut admin) = (None, None);
    while proxy.is_none() || admin.is_none() {
        let line = lines.next().expect("airlock exited").expect("line");
        if let Some(r) = line.strip_prefix("airlock: proxy listening on http://") {
            proxy = r.split(' ').next().map(str::to_string);
        }
        if let Some(r) = line.strip_prefix("airlock: admin listening on http://") {
            admin = Some(r.trim().to_string());
        }
    }
    std::thread::spawn(move || for _ in lines {});
    (child, proxy.expect("proxy"), admin.expect("admin"))
}

async fn pending(client: &reqwest::Client, admin: &str, limit: usize) -> Vec<(usize, String)> {
    let list: Value = client
        .get(format!(
            "http://{admin}/v1/approvals?status=pending&limit={limit}"
        ))
        .header("authorization", format!("Bearer {ADMIN_TOKEN}"))
        .send()
        .await
        .expect("list")
        .json()
        .await
        .expect("json");
    list["approvals"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|a| {
            // Bodies are shown as text (`{"text": "..."}`).
            let body: Value = serde_json::from_str(a["body"]["text"].as_str()?).ok()?;
            let n = usize::try_from(body["amount"].as_u64()?).ok()?;
            Some((n, a["id"].as_str()?.to_string()))
        })
        .collect()
}

async fn run() {
    let calls = std::env::var("CALLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200usize)
        .clamp(1, 500);
    let upstream = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let up_addr = upstream.local_addr().expect("addr").to_string();
    tokio::spawn(async move {
        let app = axum::Router::new().fallback(|| async { axum::Json(json!({"ok": true})) });
        let _ = axum::serve(upstream, app).await;
    });
    let store = fresh_schema().await;
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    write_replica(dir_a.path(), &store, &up_addr, calls);
    write_replica(dir_b.path(), &store, &up_addr, calls);
    let (mut a, proxy_a, _) = start(dir_a.path());
    let (mut b, _, admin_b) = start(dir_b.path());

    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(900))
        .build()
        .expect("client");
    let mut agents = Vec::with_capacity(calls);
    for n in 0..calls {
        let c = client.clone();
        let url = format!("http://{proxy_a}/crm/refunds");
        agents.push(Some(tokio::spawn(async move {
            let resp = c
                .post(url)
                .header("authorization", format!("Bearer {AGENT_KEY}"))
                .json(&json!({"amount": n}))
                .send()
                .await;
            (resp.map(|r| r.status().as_u16()).ok(), Instant::now())
        })));
    }
    let deadline = Instant::now() + Duration::from_secs(300);
    let mut held = pending(&client, &admin_b, calls).await;
    while held.len() < calls {
        assert!(Instant::now() < deadline, "only {} held", held.len());
        tokio::time::sleep(Duration::from_millis(100)).await;
        held = pending(&client, &admin_b, calls).await;
    }

    // One decision at a time, each timed until its agent is answered, so
    // that no release waits behind another.
    let mut waits = Vec::with_capacity(calls);
    for (n, id) in &held {
        let t = Instant::now();
        let r = client
            .post(format!("http://{admin_b}/v1/approvals/{id}/decision"))
            .header("authorization", format!("Bearer {ADMIN_TOKEN}"))
            .json(&json!({"decision": "approve"}))
            .send()
            .await
            .expect("decide");
        assert_eq!(r.status(), 200);
        if let Some(task) = agents[*n].take() {
            let (status, at) = task.await.expect("agent");
            assert_eq!(status, Some(200));
            waits.push(at.duration_since(t).as_secs_f64() * 1000.0);
        }
    }
    waits.sort_by(f64::total_cmp);
    let median = waits.get(waits.len() / 2).copied().unwrap_or(f64::NAN);
    let p99 = waits
        .get((waits.len() * 99 / 100).min(waits.len().saturating_sub(1)))
        .copied()
        .unwrap_or(f64::NAN);
    println!(
        "decision on B -> release on A: median {median:.2} ms, p99 {p99:.2} ms over {} calls   (target median < 100 ms)",
        waits.len()
    );
    for child in [&mut a, &mut b] {
        let _ = child.kill();
        let _ = child.wait();
    }
}
