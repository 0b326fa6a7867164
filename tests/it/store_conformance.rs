//! One suite of store behaviour run against both backends: SQLite in
//! memory and the real PostgreSQL at 127.0.0.1:5432 (a fresh schema per
//! test). PostgreSQL being unreachable fails the test: it is never skipped.

use airlock::store::{
    ApprovalStore, AttemptResult, CounterKind, CounterRow, CounterStore, DecisionFields,
    HoldCursor, HoldPageQuery, HoldRecord, HoldState, NewDelivery, PauseMode, PauseRecord,
    PauseScope, PostgresStore, SqliteStore, StoreError, StoreEvent, StoredRequest, NOTE_MAX,
};
use airlock::store::{
    CapturedBody, CapturedRequest, CapturedResponse, ReviewChange, ReviewItem, ReviewQuery,
    ReviewStatus, ReviewVerdict, VerdictKind,
};

fn hold(id: &str, fp: &str) -> HoldRecord {
    HoldRecord {
        id: id.into(),
        agent: "bot".into(),
        route: "crm".into(),
        action: "POST".into(),
        resource: "Route::\"crm\"".into(),
        fingerprint: fp.into(),
        request: StoredRequest {
            method: "POST".into(),
            path: "/crm/refunds".into(),
            rest: "/refunds".into(),
            query: None,
            headers: vec![],
            body: b"{}".to_vec(),
            confidence: None,
            agent_reason: None,
        },
        gates: vec![],
        approver_groups: vec![],
        state: HoldState::Pending,
        created_ms: 1,
        expires_ms: 100,
        decided_ms: None,
        decided_by: None,
        reason: None,
        edited_body: None,
        executed_ms: None,
        outcome: None,
        lifted: vec![],
        answer: None,
    }
}

/// A fresh schema on the test database; the URL selects it.
async fn postgres() -> PostgresStore {
    let schema = format!("t_{}", uuid::Uuid::now_v7().simple());
    let (client, conn) = tokio_postgres::connect(
        "host=127.0.0.1 port=5432 user=postgres dbname=test",
        tokio_postgres::NoTls,
    )
    .await
    .expect("PostgreSQL at 127.0.0.1:5432 must be reachable for this suite");
    tokio::spawn(conn);
    client
        .batch_execute(&format!("CREATE SCHEMA {schema}"))
        .await
        .unwrap();
    let url =
        format!("postgres://postgres@127.0.0.1:5432/test?options=-c%20search_path%3D{schema}");
    PostgresStore::connect(&url).await.unwrap()
}

async fn transitions_are_compare_and_set(s: &dyn ApprovalStore) {
    s.insert_hold(hold("h1", "fp"), vec![], 100).await.unwrap();
    let d = DecisionFields::default();
    let path = [
        (HoldState::Pending, HoldState::Approved),
        (HoldState::Approved, HoldState::Executing),
        (HoldState::Executing, HoldState::Executed),
    ];
    for (from, to) in path {
        assert!(s
            .transition("h1", from, to, 5, d.clone(), vec![])
            .await
            .unwrap());
        assert!(!s
            .transition("h1", from, to, 6, d.clone(), vec![])
            .await
            .unwrap());
        assert_eq!(s.get("h1").await.unwrap().unwrap().state, to);
    }
    assert!(s.find_attachable("bot", "fp", 0).await.unwrap().is_some());
    s.insert_hold(hold("h2", "fp2"), vec![], 100).await.unwrap();
    assert!(matches!(
        s.insert_hold(hold("h3", "fp2"), vec![], 100).await,
        Err(StoreError::Conflict)
    ));
    assert!(matches!(
        s.insert_hold(hold("h4", "fp4"), vec![], 1).await,
        Err(StoreError::TooManyPending { cap: 1, .. })
    ));
    assert_eq!(s.due_expiries(1_000, 10).await.unwrap().len(), 1);
    assert!(s
        .transition(
            "h2",
            HoldState::Pending,
            HoldState::Expired,
            7,
            d.clone(),
            vec![]
        )
        .await
        .unwrap());
    assert!(!s
        .transition("h2", HoldState::Pending, HoldState::Expired, 8, d, vec![])
        .await
        .unwrap());
    assert!(s.remember_callback_id("msg_1", 10).await.unwrap());
    assert!(!s.remember_callback_id("msg_1", 11).await.unwrap());
}

async fn the_outbox_hands_out_each_delivery_once(s: &dyn ApprovalStore) {
    let delivery = |n: u32| NewDelivery {
        id: format!("msg_{n}"),
        url: "http://hook/".into(),
        event: "approval.requested".into(),
        payload: "{}".into(),
    };
    s.insert_hold(hold("o1", "ofp"), vec![delivery(0), delivery(1)], 100)
        .await
        .unwrap();
    let due = s.due_deliveries(10, 10).await.unwrap();
    assert_eq!(due.len(), 1);
    s.record_attempt(&due[0].id, AttemptResult::Delivered { status: 200 })
        .await
        .unwrap();
    let next = s.due_deliveries(10, 10).await.unwrap();
    assert_eq!(next.len(), 1);
    assert_ne!(next[0].id, due[0].id);
    assert_eq!(s.list_deliveries(10).await.unwrap().len(), 2);
}

#[tokio::test]
async fn sqlite_transitions_are_compare_and_set() {
    transitions_are_compare_and_set(&SqliteStore::in_memory().unwrap()).await;
}

#[tokio::test]
async fn postgres_transitions_are_compare_and_set() {
    transitions_are_compare_and_set(&postgres().await).await;
}

#[tokio::test]
async fn sqlite_outbox_hands_out_each_delivery_once() {
    the_outbox_hands_out_each_delivery_once(&SqliteStore::in_memory().unwrap()).await;
}

#[tokio::test]
async fn postgres_outbox_hands_out_each_delivery_once() {
    the_outbox_hands_out_each_delivery_once(&postgres().await).await;
}

async fn a_pause_is_kept_per_scope_and_lifted_once(s: &dyn ApprovalStore) {
    let scope = PauseScope::Route {
        route: "crm".into(),
    };
    let mut p = PauseRecord {
        scope: scope.clone(),
        mode: PauseMode::Hold,
        reason: "look".into(),
        by: "admin".into(),
        since_ms: 1,
    };
    let announce = |id: &str| NewDelivery {
        id: id.into(),
        url: "http://127.0.0.1:9/hook".into(),
        event: "route.paused".into(),
        payload: "{}".into(),
    };
    s.put_pause(p.clone(), vec![announce("msg_1")])
        .await
        .unwrap();
    p.mode = PauseMode::Deny;
    s.put_pause(p.clone(), Vec::new()).await.unwrap();
    assert_eq!(s.list_pauses().await.unwrap(), vec![p.clone()]);
    assert_eq!(
        s.delete_pause(&scope, vec![announce("msg_2")])
            .await
            .unwrap(),
        Some(p)
    );
    // A second resume lifts nothing and announces nothing.
    assert_eq!(
        s.delete_pause(&scope, vec![announce("msg_3")])
            .await
            .unwrap(),
        None
    );
    assert!(s.list_pauses().await.unwrap().is_empty());
    let ids: Vec<String> = s
        .list_deliveries(10)
        .await
        .unwrap()
        .into_iter()
        .map(|d| d.id)
        .collect();
    assert!(ids.contains(&"msg_1".to_string()) && ids.contains(&"msg_2".to_string()));
    assert!(!ids.contains(&"msg_3".to_string()), "{ids:?}");
}

#[tokio::test]
async fn sqlite_pauses_are_kept_per_scope_and_lifted_once() {
    a_pause_is_kept_per_scope_and_lifted_once(&SqliteStore::in_memory().unwrap()).await;
}

#[tokio::test]
async fn postgres_pauses_are_kept_per_scope_and_lifted_once() {
    a_pause_is_kept_per_scope_and_lifted_once(&postgres().await).await;
}

/// The id of the `n`th hold created: canonical UUIDs whose text order is
/// their creation order, as UUIDv7 ids are.
fn nth_id(n: u128) -> String {
    uuid::Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0000 + n)
        .hyphenated()
        .to_string()
}

/// Every page of `query`, following the cursors as the API hands them out
/// (encoded, then decoded); bounded by the holds the test stored.
async fn all_pages(s: &dyn ApprovalStore, mut query: HoldPageQuery) -> Vec<Vec<String>> {
    let mut pages = Vec::new();
    for _ in 0..20 {
        let page = s.list(query.clone()).await.unwrap();
        pages.push(page.holds.iter().map(|h| h.id.clone()).collect());
        match page.next {
            Some(next) => query.after = Some(HoldCursor::decode(&next.encode()).unwrap()),
            None => return pages,
        }
    }
    panic!("pagination did not end: {pages:?}");
}

async fn pages_are_keyset_newest_first_without_gaps(s: &dyn ApprovalStore) {
    // Seven holds: even ones for finance, odd ones for support; 0 to 2 decided.
    for n in 0..7 {
        let mut h = hold(&nth_id(n), &format!("page-fp-{n}"));
        h.approver_groups = vec![if n % 2 == 0 { "finance" } else { "support" }.into()];
        s.insert_hold(h, vec![], 100).await.unwrap();
    }
    for n in 0..3 {
        let d = DecisionFields::default();
        let id = nth_id(n);
        assert!(s
            .transition(&id, HoldState::Pending, HoldState::Approved, 5, d, vec![])
            .await
            .unwrap());
    }
    let ids = |ns: &[u128]| ns.iter().map(|n| nth_id(*n)).collect::<Vec<_>>();
    let query = |state, groups, limit| HoldPageQuery {
        state,
        after: None,
        limit,
        groups,
    };

    assert_eq!(
        all_pages(s, query(None, None, 3)).await,
        vec![ids(&[6, 5, 4]), ids(&[3, 2, 1]), ids(&[0])]
    );
    // A page that ends exactly at the last hold says there is no next one.
    assert_eq!(
        all_pages(s, query(None, None, 7)).await,
        vec![ids(&[6, 5, 4, 3, 2, 1, 0])]
    );
    assert_eq!(
        all_pages(s, query(Some(HoldState::Pending), None, 2)).await,
        vec![ids(&[6, 5]), ids(&[4, 3])]
    );
    assert_eq!(
        all_pages(
            s,
            query(Some(HoldState::Approved), Some(vec!["finance".into()]), 1)
        )
        .await,
        vec![ids(&[2]), ids(&[0])]
    );
    assert_eq!(
        all_pages(
            s,
            query(None, Some(vec!["support".into(), "nobody".into()]), 2)
        )
        .await,
        vec![ids(&[5, 3]), ids(&[1])]
    );

    // A hold stored between two pages is not in the later pages, and no
    // hold is listed twice or skipped.
    let first = s.list(query(None, None, 4)).await.unwrap();
    s.insert_hold(hold(&nth_id(7), "page-fp-7"), vec![], 100)
        .await
        .unwrap();
    let rest = s
        .list(HoldPageQuery {
            after: first.next,
            ..query(None, None, 4)
        })
        .await
        .unwrap();
    let listed: Vec<String> = first
        .holds
        .iter()
        .chain(&rest.holds)
        .map(|h| h.id.clone())
        .collect();
    assert_eq!(listed, ids(&[6, 5, 4, 3, 2, 1, 0]));
    assert!(rest.next.is_none());
}

#[tokio::test]
async fn sqlite_pages_are_keyset_newest_first_without_gaps() {
    pages_are_keyset_newest_first_without_gaps(&SqliteStore::in_memory().unwrap()).await;
}

#[tokio::test]
async fn postgres_pages_are_keyset_newest_first_without_gaps() {
    pages_are_keyset_newest_first_without_gaps(&postgres().await).await;
}

/// Moves hold `id` (stored pending) to `executing` with a lease until
/// `lease_until_ms`.
async fn executing(s: &dyn ApprovalStore, id: &str, lease_until_ms: i64) {
    s.insert_hold(hold(id, &format!("fp-{id}")), vec![], 100)
        .await
        .unwrap();
    let d = DecisionFields::default();
    assert!(s
        .transition(id, HoldState::Pending, HoldState::Approved, 5, d, vec![])
        .await
        .unwrap());
    let lease = DecisionFields {
        lease_until_ms: Some(lease_until_ms),
        ..DecisionFields::default()
    };
    assert!(s
        .transition(
            id,
            HoldState::Approved,
            HoldState::Executing,
            10,
            lease,
            vec![]
        )
        .await
        .unwrap());
}

#[tokio::test]
async fn postgres_an_executing_claim_lapses_only_when_its_lease_runs_out() {
    let s = postgres().await;
    executing(&s, "l1", 100).await;
    assert!(s.lapsed_executions(99, 10).await.unwrap().is_empty());
    assert!(s.renew_lease("l1", 200).await.unwrap());
    assert!(s.lapsed_executions(150, 10).await.unwrap().is_empty());
    let lapsed = s.lapsed_executions(200, 10).await.unwrap();
    assert_eq!(lapsed.len(), 1);
    assert_eq!(lapsed[0].id, "l1");
    let d = DecisionFields::default();
    assert!(s
        .transition(
            "l1",
            HoldState::Executing,
            HoldState::Executed,
            201,
            d,
            vec![]
        )
        .await
        .unwrap());
    assert!(
        !s.renew_lease("l1", 300).await.unwrap(),
        "settled: no lease"
    );
    assert!(s.lapsed_executions(1_000, 10).await.unwrap().is_empty());
}

#[tokio::test]
async fn sqlite_keeps_no_leases_and_sends_no_hints() {
    let s = SqliteStore::in_memory().unwrap();
    executing(&s, "l1", 100).await;
    // Its `executing` holds are settled at start instead.
    assert!(s.lapsed_executions(i64::MAX, 10).await.unwrap().is_empty());
    assert!(s.changes().is_none());
    assert!(!s.shared());
}

/// Waits (a few seconds at most) for `wanted` among the store's hints.
async fn hinted(
    changes: &mut tokio::sync::broadcast::Receiver<StoreEvent>,
    wanted: &StoreEvent,
) -> bool {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(3);
    while let Ok(event) = tokio::time::timeout_at(deadline, changes.recv()).await {
        if event.as_ref() == Ok(wanted) {
            return true;
        }
    }
    false
}

#[tokio::test]
async fn postgres_hints_pause_changes_and_passes_notes() {
    let s = postgres().await;
    let mut changes = s.changes().unwrap();
    let pause = PauseRecord {
        scope: PauseScope::All,
        mode: PauseMode::Hold,
        reason: "look".into(),
        by: "admin".into(),
        since_ms: 1,
    };
    // The listener starts listening on its own; hints sent before that
    // are lost (as after any reconnect), so the first ones may be tried
    // again.
    let mut heard = false;
    for _ in 0..5 {
        s.put_pause(pause.clone(), vec![]).await.unwrap();
        if hinted(&mut changes, &StoreEvent::PausesChanged).await {
            heard = true;
            break;
        }
    }
    assert!(heard, "no hint of the pause");
    s.delete_pause(&PauseScope::All, vec![]).await.unwrap();
    assert!(hinted(&mut changes, &StoreEvent::PausesChanged).await);
    s.send_note("hello".into()).await.unwrap();
    assert!(hinted(&mut changes, &StoreEvent::Note("hello".into())).await);
    assert!(s.send_note("x".repeat(NOTE_MAX + 1)).await.is_err());
}

fn review(id: &str, agent: &str, created_ms: i64) -> ReviewItem {
    let body = CapturedBody {
        kind: "empty".into(),
        content: None,
        bytes: 0,
        truncated: false,
        note: None,
    };
    ReviewItem {
        id: id.into(),
        request_id: format!("req-{id}"),
        agent: agent.into(),
        route: "crm".into(),
        tool: None,
        policies: vec!["open".into()],
        confidence: Some("0.7".into()),
        reason: None,
        sampled_by: "rule".into(),
        created_ms,
        request: CapturedRequest {
            method: "GET".into(),
            path: "/crm/items".into(),
            query: None,
            headers: vec![],
            body: body.clone(),
        },
        response: CapturedResponse {
            status: 200,
            headers: vec![],
            body,
            complete: true,
        },
        claimed_by: None,
        claimed_until_ms: None,
        verdict: None,
    }
}

fn judged(by: &str, verdict: VerdictKind) -> ReviewVerdict {
    ReviewVerdict {
        verdict,
        note: Some("checked".into()),
        correction: None,
        by: by.into(),
        at_ms: 0,
    }
}

async fn listed(s: &dyn ApprovalStore, status: Option<ReviewStatus>, now_ms: i64) -> Vec<String> {
    let q = ReviewQuery {
        status,
        limit: 100,
        now_ms,
        ..ReviewQuery::default()
    };
    let page = s.list_reviews(q).await.unwrap();
    page.items.into_iter().map(|i| i.id).collect()
}

async fn reviews_are_claimed_once_and_judged_once(s: &dyn ApprovalStore) {
    let ids: Vec<String> = (0..3).map(|_| uuid::Uuid::now_v7().to_string()).collect();
    let (a, b, c) = (ids[0].clone(), ids[1].clone(), ids[2].clone());
    for (n, id) in ids.iter().enumerate() {
        let agent = if n == 2 { "other" } else { "bot" };
        s.insert_review(review(id, agent, 10 * (n as i64 + 1)))
            .await
            .unwrap();
    }
    assert_eq!(
        listed(s, Some(ReviewStatus::Open), 0).await,
        [c.as_str(), b.as_str(), a.as_str()]
    );
    // A batch is stored whole or not at all.
    let fresh = uuid::Uuid::now_v7().to_string();
    let batch = vec![review(&fresh, "bot", 5), review(&a, "bot", 5)];
    assert!(
        s.insert_reviews(batch).await.is_err(),
        "`{a}` is stored already"
    );
    assert!(s.get_review(&fresh).await.unwrap().is_none());

    // A claim is a lease: another reviewer gets it only once it runs out.
    let claimed = s.claim_review(&a, "alice", 100, 200).await.unwrap();
    assert!(
        matches!(claimed, ReviewChange::Made(ref i) if i.claimed_by.as_deref() == Some("alice"))
    );
    assert_eq!(
        s.claim_review(&a, "bob", 150, 250).await.unwrap(),
        ReviewChange::Taken {
            by: "alice".into(),
            until_ms: 200
        }
    );
    assert!(matches!(
        s.claim_review(&a, "bob", 200, 300).await.unwrap(),
        ReviewChange::Made(_)
    ));
    assert_eq!(
        listed(s, Some(ReviewStatus::Claimed), 250).await,
        [a.as_str()]
    );
    assert_eq!(
        listed(s, Some(ReviewStatus::Open), 250).await,
        [c.as_str(), b.as_str()]
    );

    // The verdict is the claimer's while the claim runs, and is given once.
    assert_eq!(
        s.finish_review(&a, judged("alice", VerdictKind::Ok), 250, vec![])
            .await
            .unwrap(),
        ReviewChange::Taken {
            by: "bob".into(),
            until_ms: 300
        }
    );
    let hook = NewDelivery {
        id: "msg_review".into(),
        url: "http://127.0.0.1:9/hook".into(),
        event: "review.completed".into(),
        payload: "{}".into(),
    };
    let done = s
        .finish_review(&a, judged("bob", VerdictKind::Bad), 260, vec![hook])
        .await
        .unwrap();
    let ReviewChange::Made(done) = done else {
        panic!("{done:?}")
    };
    assert_eq!(done.verdict.map(|v| v.verdict), Some(VerdictKind::Bad));
    assert_eq!(s.list_deliveries(10).await.unwrap().len(), 1);
    assert_eq!(
        s.finish_review(&a, judged("bob", VerdictKind::Ok), 270, vec![])
            .await
            .unwrap(),
        ReviewChange::Finished
    );
    assert_eq!(
        s.claim_review(&a, "carol", 400, 500).await.unwrap(),
        ReviewChange::Finished
    );
    assert_eq!(
        s.claim_review("nope", "carol", 400, 500).await.unwrap(),
        ReviewChange::Missing
    );
    assert_eq!(listed(s, Some(ReviewStatus::Done), 270).await, [a.as_str()]);
    let since = s.reviews_decided_since(0, 10).await.unwrap();
    assert_eq!(
        since.iter().map(|i| i.id.clone()).collect::<Vec<_>>(),
        [a.as_str()]
    );
    assert!(s.reviews_decided_since(261, 10).await.unwrap().is_empty());

    // The oldest open item is claimed next; an agent filter narrows lists.
    let next = s
        .claim_next_review("carol", 270, 900)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(next.id, b);
    let q = ReviewQuery {
        agent: Some("other".into()),
        limit: 100,
        ..ReviewQuery::default()
    };
    let other: Vec<String> = s
        .list_reviews(q)
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|i| i.id)
        .collect();
    assert_eq!(other, [c.as_str()]);

    // Pages of one walk every item once.
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let q = ReviewQuery {
            limit: 1,
            after,
            ..ReviewQuery::default()
        };
        let page = s.list_reviews(q).await.unwrap();
        seen.extend(page.items.into_iter().map(|i| i.id));
        match page.next {
            Some(n) => after = Some(n),
            None => break,
        }
    }
    assert_eq!(seen, [c.as_str(), b.as_str(), a.as_str()]);

    // Pruning removes what was created before the limit.
    assert_eq!(s.prune_reviews(25).await.unwrap(), 2);
    assert_eq!(listed(s, None, 0).await, [c.as_str()]);
}

#[tokio::test]
async fn sqlite_reviews_are_claimed_once_and_judged_once() {
    reviews_are_claimed_once_and_judged_once(&SqliteStore::in_memory().unwrap()).await;
}

#[tokio::test]
async fn postgres_reviews_are_claimed_once_and_judged_once() {
    reviews_are_claimed_once_and_judged_once(&postgres().await).await;
}

async fn counts_add_up_per_day_policy_target_and_kind(s: &dyn CounterStore) {
    let row = |day: i64, policy: &str, target: &str, kind: CounterKind, count: u64| CounterRow {
        day,
        policy: policy.into(),
        target: target.into(),
        kind,
        count,
    };
    let first = vec![
        row(10, "gate", "crm", CounterKind::Held, 2),
        row(10, "gate", "crm", CounterKind::DecidedWithin(3), 1),
        row(11, "", "crm/lookup", CounterKind::Denied, 1),
    ];
    assert_eq!(s.first_day().await.unwrap(), None);
    s.add_counts(first.clone()).await.unwrap();
    // A second replica's (or a retried) flush adds to the same rows.
    s.add_counts(vec![
        row(10, "gate", "crm", CounterKind::Held, 3),
        row(11, "permit", "crm", CounterKind::Allowed, 7),
    ])
    .await
    .unwrap();
    let mut got = s.counts_since(10).await.unwrap();
    got.sort_by_key(|r| (r.day, r.policy.clone(), r.target.clone(), r.kind.index()));
    assert_eq!(
        got,
        vec![
            row(10, "gate", "crm", CounterKind::Held, 5),
            row(10, "gate", "crm", CounterKind::DecidedWithin(3), 1),
            row(11, "", "crm/lookup", CounterKind::Denied, 1),
            row(11, "permit", "crm", CounterKind::Allowed, 7),
        ]
    );
    assert_eq!(s.counts_since(11).await.unwrap().len(), 2);
    assert_eq!(s.first_day().await.unwrap(), Some(10));
    assert!(s.counts_since(12).await.unwrap().is_empty());
}

#[tokio::test]
async fn sqlite_counts_add_up_per_day_policy_target_and_kind() {
    counts_add_up_per_day_policy_target_and_kind(&SqliteStore::in_memory().unwrap()).await;
}

#[tokio::test]
async fn postgres_counts_add_up_per_day_policy_target_and_kind() {
    counts_add_up_per_day_policy_target_and_kind(&postgres().await).await;
}
