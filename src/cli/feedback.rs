//! `airlock report` and `airlock feedback export`: both read the store the
//! configuration names, which a running Airlock shares (SQLite in WAL
//! mode lets a reader in beside the writer; PostgreSQL is shared anyway).
//! Reading it directly rather than through the admin API works while
//! Airlock is stopped, needs no admin token for what is an offline
//! analysis, and reads whole pages of holds without a JSON round trip.

use std::time::Duration;

use crate::config::{Config, StoreLocation};
use crate::feedback::export::{hold_lines, CallPayload, FeedbackLine, Redaction, ReviewJudgment};
use crate::feedback::report::{self, PolicyInfo, PolicyRole};
use crate::policy::{PolicyMode, PolicySnapshot};
use crate::snapshot::GatewaySnapshot;
use crate::store::counters::{day_of_ms, CounterStore};
use crate::store::{ApprovalStore, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum FeedbackError {
    #[error("the store is `sqlite::memory:`, which nothing outlives: set `store` to a file or a PostgreSQL URL to keep counters and judgments")]
    MemoryStore,
    #[error("cannot read the store: {0}")]
    Store(#[from] StoreError),
    #[error("cannot write JSON: {0}")]
    Json(#[from] serde_json::Error),
}

/// Refuses a store nothing outlives, before anything is opened.
pub fn check_store(config: &Config) -> Result<(), FeedbackError> {
    match config.store {
        StoreLocation::SqliteMemory => Err(FeedbackError::MemoryStore),
        _ => Ok(()),
    }
}

/// The loaded policies, as the report names them.
pub fn policy_infos(policy: &PolicySnapshot) -> Vec<PolicyInfo> {
    policy
        .policy_ids()
        .iter()
        .filter_map(|id| policy.meta(id))
        .map(|m| PolicyInfo {
            id: m.id.clone(),
            place: format!("{}:{}", m.file.display(), m.line),
            role: match (m.is_permit(), m.hold.is_some()) {
                (true, _) => PolicyRole::Permit,
                (false, true) => PolicyRole::Gate,
                (false, false) => PolicyRole::Forbid,
            },
            enforced: m.mode == PolicyMode::Enforce,
        })
        .collect()
}

/// The report of the UTC days from `now_ms - since` to today, as text or
/// JSON.
pub async fn report(
    counters: &dyn CounterStore,
    policy: &PolicySnapshot,
    since: Duration,
    now_ms: i64,
    json: bool,
) -> Result<String, FeedbackError> {
    let today = day_of_ms(now_ms);
    let since_ms = now_ms.saturating_sub(i64::try_from(since.as_millis()).unwrap_or(i64::MAX));
    let since_day = day_of_ms(since_ms);
    // Far enough back for the unused-permit rule too.
    let read_from = since_day.min(today - report::UNUSED_DAYS);
    let rows = counters.counts_since(read_from).await?;
    let first_day = counters.first_day().await?;
    let built = report::build(&rows, first_day, &policy_infos(policy), since_day, today);
    Ok(if json {
        let mut text = serde_json::to_string_pretty(&built)?;
        text.push('\n');
        text
    } else {
        report::render(&built)
    })
}

/// Every human judgment since `now_ms - since`, one JSON line each:
/// never the agent's key nor a header a route injects, and the values at
/// `json_pointers` redacted.
pub async fn export(
    store: &dyn ApprovalStore,
    config: &Config,
    since: Duration,
    now_ms: i64,
    json_pointers: Vec<String>,
) -> Result<String, FeedbackError> {
    let redaction = Redaction {
        headers: config
            .routes
            .iter()
            .flat_map(|r| r.headers.iter().map(|(name, _)| name.as_str().to_string()))
            .collect(),
        json_pointers,
    };
    let since_ms = now_ms.saturating_sub(i64::try_from(since.as_millis()).unwrap_or(i64::MAX));
    let mut out = String::new();
    let holds = hold_lines(store, since_ms, &redaction).await?;
    let reviews = review_lines(store, since_ms, &redaction).await?;
    for line in holds.into_iter().chain(reviews) {
        out.push_str(&serde_json::to_string(&line)?);
        out.push('\n');
    }
    Ok(out)
}

/// Reviews read from the store at once.
const REVIEW_PAGE: u32 = 1000;

/// Every review given since `since_ms`, oldest first. The store pages by
/// the time of the verdict; a page starts at the last one's millisecond,
/// and what was seen there already is skipped.
async fn reviews_since(
    store: &dyn ApprovalStore,
    mut since_ms: i64,
) -> Result<Vec<crate::store::ReviewItem>, StoreError> {
    let mut seen = std::collections::HashSet::new();
    let mut all = Vec::new();
    loop {
        let page = store.reviews_decided_since(since_ms, REVIEW_PAGE).await?;
        let full = page.len() == REVIEW_PAGE as usize;
        let before = all.len();
        for item in page {
            if let Some(v) = &item.verdict {
                since_ms = since_ms.max(v.at_ms);
            }
            if seen.insert(item.id.clone()) {
                all.push(item);
            }
        }
        if !full || all.len() == before {
            return Ok(all);
        }
    }
}

/// Reviews given since `since_ms`: one line each, oldest first.
async fn review_lines(
    store: &dyn ApprovalStore,
    since_ms: i64,
    redaction: &Redaction,
) -> Result<Vec<FeedbackLine>, FeedbackError> {
    let items = reviews_since(store, since_ms).await?;
    Ok(items
        .into_iter()
        .filter_map(|item| {
            let verdict = item.verdict?;
            let body = item.request.body.content.unwrap_or(serde_json::Value::Null);
            Some(FeedbackLine::review(
                ReviewJudgment {
                    id: item.id,
                    agent: item.agent,
                    route: item.route,
                    tool: item.tool,
                    policies: item.policies,
                    requested_ms: item.created_ms,
                    judged_ms: verdict.at_ms,
                    reviewer: verdict.by,
                    confidence: item.confidence,
                    agent_reason: item.reason,
                    request: CallPayload {
                        method: item.request.method,
                        path: item.request.path,
                        query: item.request.query,
                        headers: item.request.headers,
                        body,
                    },
                    verdict: verdict.verdict.as_str().to_string(),
                    note: verdict.note,
                    correction: verdict.correction,
                },
                redaction,
            ))
        })
        .collect())
}

/// What to make of the store.
pub enum FeedbackRun {
    /// `airlock report`.
    Report { json: bool },
    /// `airlock feedback export`, with JSON pointers to redact.
    Export { redact: Vec<String> },
}

/// Runs `what` over the window from `since` ago to `now_ms`, reading the
/// approvals' and the counters' store.
pub async fn run(
    what: FeedbackRun,
    snap: &GatewaySnapshot,
    (holds, counters): (&dyn ApprovalStore, &dyn CounterStore),
    since: Duration,
    now_ms: i64,
) -> Result<String, FeedbackError> {
    match what {
        FeedbackRun::Report { json } => report(counters, &snap.policy, since, now_ms, json).await,
        FeedbackRun::Export { mut redact } => {
            // The pointers reviewers never see are kept out of the export too.
            redact.extend(snap.config.sampling.redact.iter().cloned());
            export(holds, &snap.config, since, now_ms, redact).await
        }
    }
}
