//! Benchmark: hold N concurrent calls (default 10,000, small bodies), then
//! report Airlock's resident memory and the median time from a decision to
//! the waiting agent's response.
//!
//!     cargo bench --bench holds
//!     HOLDS=2000 DECIDE=200 cargo bench --bench holds
//!
//! Needs about N+100 file descriptors in this process and in Airlock
//! (`ulimit -n 20000`). Targets from the issue: under 200 MB, under 50 ms.
//!
//! `REPLICAS=2` measures the shared store instead (see `holds/replicas.rs`):
//! holds stored per second, decisions per second, and decision → release
//! latency, for SQLite on one replica and for PostgreSQL (a fresh schema
//! on 127.0.0.1:5432) across two, where each agent waits on one replica
//! and its decision is taken on the other.
//!
//!     REPLICAS=2 cargo bench --bench holds
//!     REPLICAS=2 HOLDS=500 DECIDE=200 cargo bench --bench holds
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a benchmark with a broken setup stops"
)]

#[path = "holds/replicas.rs"]
mod replicas;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

const AGENT_KEY: &str = "bench-agent-key";
const ADMIN_TOKEN: &str = "bench-admin-token";

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn rss_mb(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    if env_usize("REPLICAS", 1) > 1 {
        rt.block_on(replicas::run());
    } else {
        rt.block_on(run());
    }
}

/// A tiny upstream that answers every call with `{"ok": true}`.
async fn upstream() -> SocketAddr {
    let upstream = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let up_addr = upstream.local_addr().expect("addr");
    tokio::spawn(async move {
        let app = axum::Router::new().fallback(|| async { axum::Json(json!({"ok": true})) });
        let _ = axum::serve(upstream, app).await;
    });
    up_addr
}

/// Starts Airlock on `store` in a temp dir, with one agent that may have
/// `max_pending` calls held and every POST held; returns the dir, the
/// process, and its proxy and admin addresses.
fn start_airlock(
    store: &str,
    up_addr: SocketAddr,
    max_pending: usize,
) -> (tempfile::TempDir, Child, String, String) {
    let dir = tempfile::tempdir().expect("temp dir");
    let pol = dir.path().join("policies");
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
    let config = dir.path().join("airlock.yaml");
    // One agent holds every call, so its cap of pending holds is raised to
    // match.
    std::fs::write(
        &config,
        format!(
            "listen: 127.0.0.1:0\nadmin:\n  listen: 127.0.0.1:0\n  token: {ADMIN_TOKEN}\npolicies: policies\nstore: {store}\naudit: audit.jsonl\nagents:\n  - id: bot\n    key: {AGENT_KEY}\n    groups: [support]\nroutes:\n  - name: crm\n    prefix: /crm\n    upstream: http://{up_addr}\napprovals:\n  wait: 10m\n  max_pending_per_agent: {max_pending}\n"
        ),
    )
    .expect("config");
    // AIRLOCK_BIN runs another binary or a wrapper (e.g. a heaptrack
    // script); resident memory is then the wrapper's, not Airlock's.
    let bin = std::env::var("AIRLOCK_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_airlock").into());
    let mut child = Command::new(bin)
        .args(["serve", "--config"])
        .arg(&config)
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
    (dir, child, proxy.expect("proxy"), admin.expect("admin"))
}

/// The `airlock_holds_pending` gauge of the Airlock at `admin`.
async fn pending_gauge(client: &reqwest::Client, admin: &str) -> f64 {
    let m = client
        .get(format!("http://{admin}/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .unwrap_or_default();
    m.lines()
        .find(|l| l.starts_with("airlock_holds_pending "))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.0)
}

/// The `amount` of a listed approval's call: its body as the approver is
/// shown it, `{"text": "<the JSON sent>"}`.
fn amount_of(approval: &Value) -> Option<usize> {
    let sent: Value = serde_json::from_str(approval["body"]["text"].as_str()?).ok()?;
    usize::try_from(sent["amount"].as_u64()?).ok()
}

async fn run() {
    let holds = env_usize("HOLDS", 10_000);
    // One page of the approvals list (its maximum is 500).
    let decide_n = env_usize("DECIDE", 500).min(holds).min(500);
    let up_addr = upstream().await;

    let (_dir, mut child, proxy, admin) = start_airlock("sqlite://airlock.db", up_addr, holds);
    let pid = child.id();
    let rss_idle = rss_mb(pid);

    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(900))
        .build()
        .expect("client");
    // H2=1: agents speak HTTP/2 (h2c), each connection carrying up to 1,000
    // held calls as streams; otherwise one HTTP/1.1 connection per call.
    let h2 = std::env::var("H2").is_ok_and(|v| v == "1");
    let agent_clients: Vec<reqwest::Client> = if h2 {
        (0..holds.div_ceil(1000))
            .map(|_| {
                reqwest::Client::builder()
                    .http2_prior_knowledge()
                    .timeout(Duration::from_secs(900))
                    .build()
                    .expect("h2 client")
            })
            .collect()
    } else {
        vec![client.clone()]
    };
    println!(
        "holding {holds} concurrent calls over {}...",
        if h2 {
            "HTTP/2 streams"
        } else {
            "HTTP/1.1 connections"
        }
    );
    let started = Instant::now();
    let mut agents = Vec::with_capacity(holds);
    for n in 0..holds {
        let c = agent_clients[n / 1000 % agent_clients.len()].clone();
        let url = format!("http://{proxy}/crm/refunds");
        agents.push(tokio::spawn(async move {
            let resp = c
                .post(url)
                .header("authorization", format!("Bearer {AGENT_KEY}"))
                .json(&json!({"amount": n}))
                .send()
                .await;
            (n, resp.map(|r| r.status().as_u16()).ok(), Instant::now())
        }));
    }
    // Wait until every call is stored and waiting.
    let deadline = Instant::now() + Duration::from_secs(900);
    loop {
        let pending = pending_gauge(&client, &admin).await;
        if pending as usize >= holds {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "only {pending} holds after 15 minutes"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let hold_secs = started.elapsed().as_secs_f64();
    let rss_held = rss_mb(pid);

    // Decide a sample, one at a time, timing decision → agent response.
    let list: Value = client
        .get(format!(
            "http://{admin}/v1/approvals?status=pending&limit={decide_n}"
        ))
        .header("authorization", format!("Bearer {ADMIN_TOKEN}"))
        .send()
        .await
        .expect("list")
        .json()
        .await
        .expect("json");
    let mut by_amount = std::collections::HashMap::new();
    for a in list["approvals"].as_array().into_iter().flatten() {
        if let (Some(id), Some(n)) = (a["id"].as_str(), amount_of(a)) {
            by_amount.insert(n, id.to_string());
        }
    }
    let mut decided_at = Vec::new();
    for (n, id) in &by_amount {
        let t = Instant::now();
        let r = client
            .post(format!("http://{admin}/v1/approvals/{id}/decision"))
            .header("authorization", format!("Bearer {ADMIN_TOKEN}"))
            .json(&json!({"decision": "approve"}))
            .send()
            .await
            .expect("decide");
        assert_eq!(r.status(), 200);
        decided_at.push((*n, t));
    }
    let mut waits = Vec::new();
    let mut agents: Vec<Option<_>> = agents.into_iter().map(Some).collect();
    for (n, t) in &decided_at {
        if let Some(task) = agents[*n].take() {
            let (_, status, at) = task.await.expect("agent");
            assert_eq!(status, Some(200));
            waits.push(at.duration_since(*t).as_secs_f64() * 1000.0);
        }
    }
    waits.sort_by(|a, b| a.total_cmp(b));
    let median = waits.get(waits.len() / 2).copied().unwrap_or(f64::NAN);
    let p99 = waits
        .get((waits.len() * 99 / 100).min(waits.len().saturating_sub(1)))
        .copied()
        .unwrap_or(f64::NAN);
    println!("holds:                     {holds} concurrent ({hold_secs:.1} s to store them all)");
    println!("airlock RSS idle:          {rss_idle:.1} MB");
    println!("airlock RSS holding:       {rss_held:.1} MB   (target < 200 MB)");
    println!(
        "decision -> response:      median {median:.2} ms, p99 {p99:.2} ms over {} decisions   (target median < 50 ms)",
        waits.len()
    );
    let _ = child.kill();
    let _ = child.wait();
}
