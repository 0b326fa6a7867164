//! The full decision path, for policy sets of 10, 1,000 and 10,000
//! policies: request mapping (path, query, headers, JSON body → Cedar
//! context, built only as far as the chosen policies read, as the proxy
//! does), Cedar evaluation, and the allow/deny/hold verdict.
//!
//!     cargo bench --bench decision
//!
//! The target: the decision at 10,000 policies within 3x of the
//! decision at 10, and under 20 µs at 10. Each size is measured twice:
//! `first`, a call whose read context was not seen before (Cedar runs), and
//! `repeat`, the same call again (the decision memo answers). `first` is
//! the figure the targets are judged on.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a benchmark with a broken setup stops"
)]

use std::collections::BTreeMap;
use std::hint::black_box;
use std::path::Path;

use bytes::Bytes;
use criterion::measurement::WallTime;
use criterion::{criterion_group, criterion_main, BenchmarkGroup, BenchmarkId, Criterion};

use airlock::policy::{Decision, Directory, PolicySnapshot, PrincipalSpec};
use airlock::proxy::call::{http_context, http_request, BodyRules};

/// Writes the shipped schema and `n` policies: the shipped CRM policies
/// plus generated ones scoped to other agents and routes, as a large
/// organisation's policy set would be.
fn write_policies(dir: &Path, n: usize) {
    let root = env!("CARGO_MANIFEST_DIR");
    std::fs::create_dir_all(dir).expect("dir");
    // The shipped schema, tool declarations and policies (REST and MCP).
    for entry in std::fs::read_dir(format!("{root}/policies")).expect("policies") {
        let path = entry.expect("entry").path();
        if path
            .extension()
            .is_some_and(|x| x == "cedar" || x == "cedarschema")
        {
            std::fs::copy(&path, dir.join(path.file_name().expect("name"))).expect("copy");
        }
    }
    let mut generated = String::new();
    for i in 0..n.saturating_sub(4) {
        let line = match i % 3 {
            0 => format!(
                "permit(principal == Agent::\"agent-{i}\", action == Action::\"POST\", resource == Route::\"route-{i}\") when {{ context.path == \"/r/{i}\" }};\n"
            ),
            1 => format!(
                "forbid(principal, action in Action::\"write\", resource == Route::\"route-{i}\") when {{ context has body && context.body has amount && context.body.amount > {i} }};\n"
            ),
            _ => format!(
                "permit(principal in Group::\"team-{i}\", action in Action::\"read\", resource == Route::\"route-{i}\");\n"
            ),
        };
        generated.push_str(&line);
    }
    std::fs::write(dir.join("generated.cedar"), generated).expect("generated");
}

fn snapshot(n: usize) -> PolicySnapshot {
    let dir = std::env::temp_dir().join(format!("airlock-bench-{n}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    write_policies(&dir, n);
    let mut routes = vec!["crm".to_string(), "crm-mcp".to_string()];
    routes.extend((0..n).map(|i| format!("route-{i}")));
    let directory = Directory {
        agents: vec![PrincipalSpec {
            id: "support-bot".into(),
            groups: vec!["support".into()],
            attributes: BTreeMap::from([("team".into(), "support".into())]),
        }],
        routes,
        config_hash: String::new(),
    };
    let snap = PolicySnapshot::load(&dir, &directory).expect("policies load");
    let _ = std::fs::remove_dir_all(&dir);
    snap
}

fn rest_parts() -> http::request::Parts {
    let (parts, ()) = http::Request::builder()
        .method("POST")
        .uri("/crm/refunds?dry_run=false")
        .header("content-type", "application/json")
        .header("user-agent", "bench-agent/1.0")
        .body(())
        .expect("request")
        .into_parts();
    parts
}

/// More distinct calls than the decision memo keeps, so that cycling
/// through them never finds one memoized: each is a first decision.
const DISTINCT: usize = 16_384;

/// Bodies that differ in what the policies read (the amount), all held.
fn rest_bodies() -> Vec<Bytes> {
    refund_bodies(|i| 101 + i)
}

/// Bodies that are all allowed: Cedar runs once, where a held call needs
/// a second run to tell hold from deny. (Amounts of 100 and less, down
/// into negatives, which only the bench's distinctness needs.)
fn allowed_bodies() -> Vec<Bytes> {
    refund_bodies(|i| 100 - i)
}

fn refund_bodies(amount: impl Fn(i64) -> i64) -> Vec<Bytes> {
    (0..DISTINCT as i64)
        .map(|i| {
            Bytes::from(format!(
                r#"{{"amount": {}, "currency": "EUR", "customer_id": "c-1", "reason": "damaged item"}}"#,
                amount(i)
            ))
        })
        .collect()
}

fn mcp_bodies() -> Vec<Bytes> {
    (0..DISTINCT)
        .map(|i| {
            Bytes::from(format!(
                r#"{{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{{"name":"issue_refund","arguments":{{"customer_id":"c-1","amount":{}}}}}}}"#,
                101 + i
            ))
        })
        .collect()
}

/// Two cases per policy-set size: `first` (a call not seen before: Cedar
/// runs) and `repeat` (the same call again: the decision memo answers);
/// for held calls, and `allowed_first` for allowed ones.
fn bench_decision(c: &mut Criterion) {
    let mut group = c.benchmark_group("decision/rest");
    let parts = rest_parts();
    let bodies = rest_bodies();
    let allowed = allowed_bodies();
    for n in [10usize, 1_000, 10_000] {
        let snap = snapshot(n);
        // As the proxy decides: the policies are picked first, and only
        // the part of the context they read is built.
        let decide = |body: &Bytes| {
            let parts = black_box(&parts);
            let mut call = http_request("support-bot", "crm", parts);
            let mut plan = snap.plan(&call).expect("plan");
            let rules = BodyRules {
                names: snap.declared_names(),
                opaque_bodies: false,
            };
            call.context = http_context(
                parts,
                "/crm/refunds",
                black_box(body),
                plan.context_needs(),
                rules,
            )
            .expect("context");
            snap.decide(&call, plan).expect("decide")
        };
        first_and_repeat(&mut group, n, &bodies, decide);
        bench_first(&mut group, "allowed_first", n, &allowed, "allow", decide);
    }
    group.finish();
}

/// Benches `decide` on a call not seen before (cycling through `bodies`)
/// and on one call over and over; every call must be held.
fn first_and_repeat(
    group: &mut BenchmarkGroup<'_, WallTime>,
    n: usize,
    bodies: &[Bytes],
    decide: impl Fn(&Bytes) -> Decision,
) {
    bench_first(group, "first", n, bodies, "hold", &decide);
    group.bench_with_input(BenchmarkId::new("repeat", n), &n, |b, _| {
        b.iter(|| black_box(decide(&bodies[0])))
    });
}

/// Benches `decide` on a call not seen before, cycling through `bodies`,
/// each of which must get `verdict`.
fn bench_first(
    group: &mut BenchmarkGroup<'_, WallTime>,
    name: &str,
    n: usize,
    bodies: &[Bytes],
    verdict: &str,
    decide: impl Fn(&Bytes) -> Decision,
) {
    assert_eq!(decide(&bodies[0]).verdict.name(), verdict);
    assert_eq!(decide(&bodies[DISTINCT - 1]).verdict.name(), verdict);
    let mut i = 0;
    group.bench_with_input(BenchmarkId::new(name, n), &n, |b, _| {
        b.iter(|| {
            i = (i + 1) % DISTINCT;
            black_box(decide(&bodies[i]))
        })
    });
}

fn bench_mcp_decision(c: &mut Criterion) {
    let mut group = c.benchmark_group("decision/mcp_tool_call");
    let bodies = mcp_bodies();
    for n in [10usize, 1_000, 10_000] {
        let snap = snapshot(n);
        // What an SDK's POST carries in the common part of the context.
        let common: serde_json::Map<String, serde_json::Value> = serde_json::json!({
            "method": "POST",
            "path": "/mcp/crm",
            "query": {},
            "headers": {"content-type": "application/json"},
        })
        .as_object()
        .cloned()
        .unwrap_or_default();
        let decide = |raw: &Bytes| {
            let body = airlock::mcp::jsonrpc::parse(black_box(raw)).expect("parse");
            let msg = body
                .messages
                .into_iter()
                .next()
                .expect("one")
                .expect("valid");
            let call =
                airlock::mcp::method::call_for(&snap, "support-bot", "crm-mcp", &msg, &common)
                    .expect("call");
            let plan = snap.plan(&call).expect("plan");
            snap.decide(&call, plan).expect("decide")
        };
        first_and_repeat(&mut group, n, &bodies, decide);
    }
    group.finish();
}

criterion_group!(benches, bench_decision, bench_mcp_decision);
criterion_main!(benches);
