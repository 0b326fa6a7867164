//! Reload benchmark; prints figures, judges nothing.
//!
//!     cargo bench --bench reload
//!
//! 1. Time to compile a 10,000-policy set into a gateway snapshot (what a
//!    reload does on a blocking thread before the atomic swap).
//! 2. p50/p99 latency of agent calls through the real binary over loopback,
//!    without reloads and while the policies are rewritten and reloaded
//!    every 100 ms, for a small policy set and for the 10,000-policy set.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a benchmark with a broken setup stops"
)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use airlock::config::Config;
use airlock::snapshot::GatewaySnapshot;
use airlock::upstream::UpstreamClients;

const SCHEMA: &str = include_str!("../policies/schema.cedarschema");
const CRM: &str = include_str!("../policies/crm.cedar");
const AGENT_KEY: &str = "bench-agent-key";
const ADMIN_TOKEN: &str = "bench-admin-token";

/// `n` policies shaped like real ones: a scope and a path condition each.
fn many_policies(n: usize) -> String {
    let mut s = String::with_capacity(n * 160);
    for i in 0..n {
        s.push_str(&format!(
            "@id(\"p{i}\")\npermit (principal in Group::\"support\", action == Action::\"POST\", resource == Route::\"crm\")\nwhen {{ context.path == \"/crm/items/{i}\" }};\n"
        ));
    }
    s
}

fn write_setup(dir: &Path, policies: &str, upstream: &str) -> std::path::PathBuf {
    let pol = dir.join("policies");
    std::fs::create_dir_all(&pol).unwrap();
    std::fs::write(pol.join("schema.cedarschema"), SCHEMA).unwrap();
    std::fs::write(pol.join("bench.cedar"), policies).unwrap();
    let config = dir.join("airlock.yaml");
    std::fs::write(
        &config,
        format!(
            "listen: 127.0.0.1:0\nadmin:\n  listen: 127.0.0.1:0\n  token: {ADMIN_TOKEN}\npolicies: policies\nstore: sqlite://airlock.db\naudit: audit.jsonl\nagents:\n  - id: bot\n    key: {AGENT_KEY}\n    groups: [support]\nroutes:\n  - name: crm\n    prefix: /crm\n    upstream: {upstream}\n"
        ),
    )
    .unwrap();
    config
}

fn reload_time(n: usize) {
    let dir = tempfile::tempdir().unwrap();
    let config = write_setup(
        dir.path(),
        &format!("{CRM}{}", many_policies(n)),
        "http://127.0.0.1:9",
    );
    let clients = UpstreamClients::new(Duration::from_secs(60), 0);
    let mut times = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        let c = Config::load(&config).unwrap();
        let snap = GatewaySnapshot::build(Arc::new(c), &clients).unwrap();
        times.push(t.elapsed());
        assert_eq!(snap.policy.policy_count(), n + 4);
    }
    times.sort();
    println!(
        "reload of {} policies (read, parse, validate, compile): min {:.0} ms, median {:.0} ms, max {:.0} ms",
        n + 4,
        ms(times[0]),
        ms(times[2]),
        ms(times[4])
    );
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

struct Running {
    child: Child,
    proxy: String,
    admin: String,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(config: &Path) -> Running {
    let mut child = Command::new(env!("CARGO_BIN_EXE_airlock"))
        .args(["serve", "--config"])
        .arg(config)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let (mut proxy, mut admin) = (None, None);
    while proxy.is_none() || admin.is_none() {
        let line = lines.next().expect("airlock exited").unwrap();
        if let Some(r) = line.strip_prefix("airlock: proxy listening on ") {
            proxy = r.split(' ').next().map(str::to_string);
        }
        if let Some(r) = line.strip_prefix("airlock: admin listening on ") {
            admin = Some(r.trim().to_string());
        }
    }
    // Keep draining stderr so the child never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines.by_ref() {});
    Running {
        child,
        proxy: proxy.unwrap(),
        admin: admin.unwrap(),
    }
}

/// Runs `total` GET calls from `clients` concurrent clients; returns the
/// sorted latencies.
async fn load(proxy: &str, clients: usize, total: usize) -> Vec<Duration> {
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let url = format!("{proxy}/crm/customers");
        tasks.push(tokio::spawn(async move {
            let http = reqwest::Client::new();
            let mut lat = Vec::new();
            for _ in 0..total / clients {
                let t = Instant::now();
                let r = http.get(&url).bearer_auth(AGENT_KEY).send().await.unwrap();
                assert_eq!(r.status(), 200);
                r.bytes().await.unwrap();
                lat.push(t.elapsed());
            }
            lat
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all.sort();
    all
}

fn pct(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    ms(sorted[i])
}

async fn latency(label: &str, policies: String, total: usize, upstream: &str) {
    let dir = tempfile::tempdir().unwrap();
    let config = write_setup(dir.path(), &policies, upstream);
    let airlock = start(&config);
    let proxy = airlock.proxy.clone();
    load(&proxy, 4, 200).await; // warm up

    let quiet = load(&proxy, 4, total).await;

    let stop = Arc::new(AtomicBool::new(false));
    let reloader = {
        let (stop, admin, file) = (
            stop.clone(),
            airlock.admin.clone(),
            dir.path().join("policies/bench.cedar"),
        );
        tokio::spawn(async move {
            let http = reqwest::Client::new();
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                // A new comment is a new content hash, so every reload swaps.
                std::fs::write(&file, format!("// generation {n}\n{policies}")).unwrap();
                let r = http
                    .post(format!("{admin}/v1/reload"))
                    .bearer_auth(ADMIN_TOKEN)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 200);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            n
        })
    };
    let busy = load(&proxy, 4, total).await;
    stop.store(true, Ordering::Relaxed);
    let reloads = reloader.await.unwrap();
    println!(
        "{label}: {total} calls, 4 clients: without reloads p50 {:.2} ms p99 {:.2} ms; during {reloads} reloads p50 {:.2} ms p99 {:.2} ms",
        pct(&quiet, 0.50),
        pct(&quiet, 0.99),
        pct(&busy, 0.50),
        pct(&busy, 0.99),
    );
}

async fn start_upstream() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = axum::Router::new().fallback(|| async { "{\"ok\":true}" });
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    format!("http://{addr}")
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` does not run us.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    reload_time(10_000);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let upstream = start_upstream().await;
        latency("4 policies (crm.cedar)", CRM.to_string(), 4_000, &upstream).await;
        latency(
            "10,004 policies",
            format!("{CRM}{}", many_policies(10_000)),
            400,
            &upstream,
        )
        .await;
    });
}
