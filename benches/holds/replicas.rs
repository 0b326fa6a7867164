//! `REPLICAS=2 cargo bench --bench holds`: the store shared by replicas.
//! Three figures, for SQLite on one replica and for PostgreSQL across two:
//! - holds stored per second: `HOLDS` agents (default 400, at most one page
//!   of the approvals list, 500) send a held call at once, spread over the
//!   replicas;
//! - decision → release: for `DECIDE` of them (default 100), one at a time,
//!   from the decision sent to the waiting agent's answer; with two
//!   replicas the agent waits on one and the decision is taken on the
//!   other, so the wake-up goes through `LISTEN`/`NOTIFY`;
//! - decisions per second: the rest decided by `DECIDERS` approvers at once
//!   (default 16), alternating replicas.

use std::collections::HashMap;
use std::process::Child;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::{amount_of, env_usize, pending_gauge, start_airlock, upstream, ADMIN_TOKEN, AGENT_KEY};

/// Every wait of the benchmark ends by then.
const LIMIT: Duration = Duration::from_secs(300);

struct Replica {
    _dir: tempfile::TempDir,
    child: Child,
    proxy: String,
    admin: String,
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Figures {
    holds_per_s: f64,
    decisions_per_s: f64,
    release_median_ms: f64,
    release_p99_ms: f64,
    released: usize,
}

pub async fn run() {
    let holds = env_usize("HOLDS", 400).clamp(2, 500);
    let sample = env_usize("DECIDE", 100).clamp(1, holds - 1);
    let up = upstream().await;
    let start = |store: &str| {
        let (dir, child, proxy, admin) = start_airlock(store, up, holds);
        Replica {
            _dir: dir,
            child,
            proxy,
            admin,
        }
    };
    println!("{holds} held calls, {sample} decision -> release timings, per store...");
    let sqlite = measure(&[start("sqlite://airlock.db")], holds, sample).await;
    let url = fresh_schema().await;
    let pg = measure(&[start(&url), start(&url)], holds, sample).await;
    println!("                              SQLite, 1 replica   PostgreSQL, 2 replicas");
    let row = |what: &str, f: &dyn Fn(&Figures) -> String| {
        println!("{what:<30}{:<20}{}", f(&sqlite), f(&pg));
    };
    row("holds stored per second", &|f| {
        format!("{:.0}", f.holds_per_s)
    });
    row("decisions per second", &|f| {
        format!("{:.0}", f.decisions_per_s)
    });
    row("decision -> release median", &|f| {
        format!("{:.2} ms", f.release_median_ms)
    });
    row("decision -> release p99", &|f| {
        format!("{:.2} ms", f.release_p99_ms)
    });
    row("agents released", &|f| format!("{}/{holds}", f.released));
}

/// A fresh schema on the machine's PostgreSQL; its store URL.
async fn fresh_schema() -> String {
    let schema = format!("bench_{}", uuid::Uuid::now_v7().simple());
    let (client, conn) = tokio_postgres::connect(
        "host=127.0.0.1 port=5432 user=postgres dbname=test",
        tokio_postgres::NoTls,
    )
    .await
    .expect("PostgreSQL at 127.0.0.1:5432, database `test`");
    tokio::spawn(conn);
    client
        .batch_execute(&format!("CREATE SCHEMA {schema}"))
        .await
        .expect("create schema");
    format!("postgres://postgres@127.0.0.1:5432/test?options=-c%20search_path%3D{schema}")
}

type Agent = tokio::task::JoinHandle<(Option<u16>, Instant)>;

async fn measure(replicas: &[Replica], holds: usize, sample: usize) -> Figures {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .timeout(LIMIT)
        .build()
        .expect("client");
    let started = Instant::now();
    let agents: Vec<Option<Agent>> = (0..holds)
        .map(|n| Some(send_held(&client, &replicas[n % replicas.len()], n)))
        .collect();
    loop {
        let mut stored = 0.0;
        for r in replicas {
            stored += pending_gauge(&client, &r.admin).await;
        }
        if stored as usize >= holds {
            break;
        }
        assert!(started.elapsed() < LIMIT, "only {stored} holds stored");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let holds_per_s = holds as f64 / started.elapsed().as_secs_f64();
    let ids = ids_by_amount(&client, &replicas[0], holds).await;
    let mut agents = agents;
    let mut waits = Vec::with_capacity(sample);
    for (n, agent) in agents.iter_mut().enumerate().take(sample) {
        // The agent waits on replica n; the decision goes to the next one.
        let decider = &replicas[(n + 1) % replicas.len()];
        let t = Instant::now();
        assert_eq!(decide(&client, decider, &ids[&n]).await, 200);
        let (status, at) = agent.take().expect("agent").await.expect("agent task");
        assert_eq!(status, Some(200));
        waits.push(at.duration_since(t).as_secs_f64() * 1000.0);
    }
    let rest: Vec<String> = (sample..holds).map(|n| ids[&n].clone()).collect();
    let t = Instant::now();
    decide_all(&client, replicas, rest).await;
    let decisions_per_s = (holds - sample) as f64 / t.elapsed().as_secs_f64();
    let mut released = waits.len();
    for agent in agents.into_iter().flatten() {
        if agent.await.expect("agent task").0 == Some(200) {
            released += 1;
        }
    }
    waits.sort_by(f64::total_cmp);
    Figures {
        holds_per_s,
        decisions_per_s,
        release_median_ms: waits[waits.len() / 2],
        release_p99_ms: waits[(waits.len() * 99 / 100).min(waits.len() - 1)],
        released,
    }
}

/// An agent's held call (amount `n`), answered when it is decided.
fn send_held(client: &reqwest::Client, replica: &Replica, n: usize) -> Agent {
    let req = client
        .post(format!("http://{}/crm/refunds", replica.proxy))
        .header("authorization", format!("Bearer {AGENT_KEY}"))
        .json(&json!({ "amount": n }));
    tokio::spawn(async move {
        let status = req.send().await.map(|r| r.status().as_u16()).ok();
        (status, Instant::now())
    })
}

/// The pending approvals' ids by the amount of their call.
async fn ids_by_amount(
    client: &reqwest::Client,
    replica: &Replica,
    holds: usize,
) -> HashMap<usize, String> {
    let list: Value = client
        .get(format!(
            "http://{}/v1/approvals?status=pending&limit={holds}",
            replica.admin
        ))
        .header("authorization", format!("Bearer {ADMIN_TOKEN}"))
        .send()
        .await
        .expect("list")
        .json()
        .await
        .expect("json");
    let ids: HashMap<usize, String> = list["approvals"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|a| {
            let n = amount_of(a)?;
            Some((n, a["id"].as_str()?.to_string()))
        })
        .collect();
    assert_eq!(ids.len(), holds, "every hold is listed");
    ids
}

async fn decide(client: &reqwest::Client, replica: &Replica, id: &str) -> u16 {
    client
        .post(format!(
            "http://{}/v1/approvals/{id}/decision",
            replica.admin
        ))
        .header("authorization", format!("Bearer {ADMIN_TOKEN}"))
        .json(&json!({"decision": "approve"}))
        .send()
        .await
        .expect("decide")
        .status()
        .as_u16()
}

/// Approves `ids` with `DECIDERS` approvers at once, each taking the next
/// undecided id and sending it to the replicas in turn.
async fn decide_all(client: &reqwest::Client, replicas: &[Replica], ids: Vec<String>) {
    let next = Arc::new(AtomicUsize::new(0));
    let ids = Arc::new(ids);
    let admins: Arc<Vec<String>> = Arc::new(replicas.iter().map(|r| r.admin.clone()).collect());
    let deciders: Vec<_> = (0..env_usize("DECIDERS", 16).clamp(1, 64))
        .map(|_| {
            let (client, next, ids, admins) =
                (client.clone(), next.clone(), ids.clone(), admins.clone());
            tokio::spawn(async move {
                loop {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    let Some(id) = ids.get(n) else { return };
                    let status = client
                        .post(format!(
                            "http://{}/v1/approvals/{id}/decision",
                            admins[n % admins.len()]
                        ))
                        .header("authorization", format!("Bearer {ADMIN_TOKEN}"))
                        .json(&json!({"decision": "approve"}))
                        .send()
                        .await
                        .expect("decide")
                        .status();
                    assert_eq!(status, 200, "decision on {id}");
                }
            })
        })
        .collect();
    for d in deciders {
        d.await.expect("decider");
    }
}
