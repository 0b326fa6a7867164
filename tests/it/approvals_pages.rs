//! `GET /v1/approvals` a page at a time: keyset cursors, the status filter,
//! validation of `limit` and `cursor`, and the CLI's `--limit`/`--all`.

use std::collections::HashSet;
use std::process::Command;

use serde_json::{json, Value};

use crate::approvals::{decide, env_with, refund, Env};
use crate::support::*;

async fn get(airlock: &Airlock, query: &str) -> (u16, Value) {
    let resp = client()
        .get(airlock.admin_url(&format!("/v1/approvals{query}")))
        .header("authorization", bearer(APPROVER_TOKEN))
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// Walks every page of `status` with `limit`; returns the ids in order and
/// the page sizes. `between` runs after the first page.
async fn walk(
    airlock: &Airlock,
    status: &str,
    limit: u32,
    between: impl AsyncFnOnce(),
) -> (Vec<String>, Vec<usize>) {
    let mut ids = Vec::new();
    let mut sizes = Vec::new();
    let mut cursor: Option<String> = None;
    let mut between = Some(between);
    for _ in 0..100 {
        let mut q = format!("?status={status}&limit={limit}");
        if let Some(c) = &cursor {
            q.push_str(&format!("&cursor={c}"));
        }
        let (s, v) = get(airlock, &q).await;
        assert_eq!(s, 200, "{v}");
        let page = v["approvals"].as_array().unwrap();
        sizes.push(page.len());
        ids.extend(page.iter().map(|a| a["id"].as_str().unwrap().to_string()));
        if let Some(f) = between.take() {
            f().await;
        }
        match v["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => {
                assert!(v["next_cursor"].is_null(), "{v}");
                return (ids, sizes);
            }
        }
    }
    panic!("more than 100 pages");
}

fn assert_newest_first_without_duplicates(ids: &[String]) {
    let unique: HashSet<&String> = ids.iter().collect();
    assert_eq!(unique.len(), ids.len(), "duplicates: {ids:?}");
    assert!(
        ids.windows(2).all(|w| w[0] > w[1]),
        "newest (largest UUIDv7) first: {ids:?}"
    );
}

#[tokio::test]
async fn pages_walk_every_approval_once_with_and_without_the_status_filter() {
    let Env { airlock, .. } = env_with("200ms", None).await;
    let mut calls = Vec::new();
    for amount in 101..=130 {
        calls.push(tokio::spawn(
            refund(&airlock, json!({"amount": amount})).send(),
        ));
    }
    let mut all = HashSet::new();
    for c in calls {
        let resp = c.await.unwrap().unwrap();
        assert_eq!(resp.status(), 202);
        let v: Value = resp.json().await.unwrap();
        all.insert(v["approval_id"].as_str().unwrap().to_string());
    }
    assert_eq!(all.len(), 30);
    let denied: HashSet<String> = all.iter().take(5).cloned().collect();
    for id in &denied {
        let (s, v) = decide(
            &airlock,
            id,
            APPROVER_TOKEN,
            json!({"decision": "deny", "reason": "paging test"}),
        )
        .await;
        assert_eq!(s, 200, "{v}");
    }
    let pending: HashSet<String> = all.difference(&denied).cloned().collect();

    // 25 pending in pages of 7, while a new approval arrives mid-walk: it
    // is newer than the cursor, so the walk neither repeats nor skips.
    let (ids, sizes) = walk(&airlock, "pending", 7, async || {
        let resp = refund(&airlock, json!({"amount": 999}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 202);
    })
    .await;
    assert_eq!(sizes, vec![7, 7, 7, 4]);
    assert_newest_first_without_duplicates(&ids);
    assert_eq!(ids.iter().cloned().collect::<HashSet<_>>(), pending);

    let (ids, sizes) = walk(&airlock, "denied", 2, async || {}).await;
    assert_eq!(sizes, vec![2, 2, 1]);
    assert_eq!(ids.into_iter().collect::<HashSet<_>>(), denied);

    // Everything, 31 with the latecomer; an exact multiple ends without an
    // empty page.
    let (ids, sizes) = walk(&airlock, "all", 31, async || {}).await;
    assert_eq!(sizes, vec![31]);
    assert_newest_first_without_duplicates(&ids);
    assert!(all.iter().all(|id| ids.contains(id)));
    let (ids, _) = walk(&airlock, "all", 4, async || {}).await;
    assert_eq!(ids.len(), 31);
    assert_newest_first_without_duplicates(&ids);

    // Without `limit` the default page holds them all; without `status`,
    // every state is listed.
    let (s, v) = get(&airlock, "").await;
    assert_eq!(s, 200);
    assert_eq!(v["approvals"].as_array().unwrap().len(), 31);
    assert!(v["next_cursor"].is_null());
}

#[tokio::test]
async fn a_bad_limit_cursor_or_parameter_is_a_json_400() {
    let Env { airlock, .. } = env_with("200ms", None).await;
    let (s, first) = get(&airlock, "?status=all&limit=1").await;
    assert_eq!(s, 200);
    for (query, kind) in [
        ("?limit=0", "bad_limit"),
        ("?limit=501", "bad_limit"),
        ("?limit=-3", "bad_limit"),
        ("?limit=ten", "bad_limit"),
        ("?limit=", "bad_limit"),
        ("?limit=99999999999999999999", "bad_limit"),
        ("?cursor=not-a-cursor", "bad_cursor"),
        // Base64 of `h1.nope`: the right version, no id.
        ("?cursor=aDEubm9wZQ", "bad_cursor"),
        // Base64 of a bare id: not something this server issued.
        (
            "?cursor=MDE5MDAwMDAtMDAwMC03MDAwLTgwMDAtMDAwMDAwMDAwMDAw",
            "bad_cursor",
        ),
        ("?status=bogus", "bad_status"),
        ("?limt=5", "bad_query"),
    ] {
        let (s, v) = get(&airlock, query).await;
        assert_eq!(s, 400, "{query}: {v}");
        assert_eq!(v["error"], kind, "{query}: {v}");
        assert!(v["message"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
    }
    let (s, v) = get(&airlock, "?limit=500").await;
    assert_eq!((s, v["next_cursor"].is_null()), (200, true), "{v}");
    assert!(first["next_cursor"].is_null(), "no approvals yet: {first}");

    // Reading stays closed to agents and strangers, whatever the query.
    let resp = client()
        .get(airlock.admin_url("/v1/approvals?limit=0"))
        .header("authorization", bearer(AGENT_KEY))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
}

fn approvals_cli(airlock: &Airlock, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(airlock_bin())
        .arg("approvals")
        .arg("--admin")
        .arg(airlock.admin_url(""))
        .args(args)
        .env("AIRLOCK_TOKEN", APPROVER_TOKEN)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The approval ids in a CLI table.
fn ids_in(table: &str) -> Vec<String> {
    table
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|w| uuid::Uuid::parse_str(w).is_ok())
        .map(str::to_string)
        .collect()
}

#[tokio::test]
async fn the_cli_pages_with_limit_and_cursor_and_follows_all_pages() {
    let Env { airlock, .. } = env_with("200ms", None).await;
    let mut calls = Vec::new();
    for amount in 201..=226 {
        calls.push(tokio::spawn(
            refund(&airlock, json!({"amount": amount})).send(),
        ));
    }
    for c in calls {
        assert_eq!(c.await.unwrap().unwrap().status(), 202);
    }

    let (code, out, err) = approvals_cli(&airlock, &["list", "--limit", "10"]);
    assert_eq!(code, 0, "{err}");
    let first = ids_in(&out);
    assert_eq!(first.len(), 10, "{out}");
    let more = out
        .lines()
        .find(|l| l.starts_with("more: "))
        .unwrap_or_else(|| panic!("the next page is offered: {out}"));
    let cursor = more
        .split_whitespace()
        .skip_while(|w| *w != "--cursor")
        .nth(1)
        .unwrap()
        .to_string();
    let (code, out, err) = approvals_cli(&airlock, &["list", "--limit", "10", "--cursor", &cursor]);
    assert_eq!(code, 0, "{err}");
    let second = ids_in(&out);
    assert_eq!(second.len(), 10, "{out}");
    assert!(second.iter().all(|id| !first.contains(id)));

    let (code, out, err) = approvals_cli(&airlock, &["list", "--all", "--limit", "7"]);
    assert_eq!(code, 0, "{err}");
    let every = ids_in(&out);
    assert_eq!(every.len(), 26, "{out}");
    assert_newest_first_without_duplicates(&every);
    assert!(!out.contains("more: "), "{out}");
    assert_eq!(
        out.lines().filter(|l| l.starts_with("ID ")).count(),
        1,
        "one table, one header: {out}"
    );

    let (code, _, err) = approvals_cli(&airlock, &["list", "--limit", "0"]);
    assert_eq!(code, 1);
    assert!(err.contains("400") && err.contains("limit"), "{err}");
}
