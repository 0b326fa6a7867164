//! `airlock report`: the daily counters of a window, summed per policy and
//! route or tool, and the few changes the evidence strongly suggests.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::store::counters::{CounterKind, CounterRow, COUNTER_KINDS, DECISION_BUCKETS_S};

/// Below this many human decisions, a gate's approval rate is no evidence.
pub const NARROW_MIN_DECISIONS: u64 = 20;
/// Share of unedited approvals (percent) from which a gate looks redundant.
pub const NARROW_APPROVED_PCT: u64 = 95;
/// `bad` reviews of one tool within the window that call for a gate.
pub const GATE_MIN_BAD_REVIEWS: u64 = 3;
/// Share of a gate's settled holds (percent) expiring that says nobody
/// answers in time.
pub const EXPIRED_PCT: u64 = 20;
/// Below this many settled holds, an expiry share is no evidence.
pub const EXPIRED_MIN_HOLDS: u64 = 5;
/// Days without a match after which a permit is called unused.
pub const UNUSED_DAYS: i64 = 30;

/// What a policy is, as the report needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PolicyRole {
    Permit,
    Forbid,
    /// A forbid with `@hold`: a human may lift it.
    Gate,
}

/// A loaded policy: its `@id`, where it is written and what it is.
#[derive(Debug, Clone)]
pub struct PolicyInfo {
    pub id: String,
    /// `file:line`.
    pub place: String,
    pub role: PolicyRole,
    /// Only enforced policies can be unused; a shadow policy never matches.
    pub enforced: bool,
}

/// The counts of one policy on one route or tool over the window.
#[derive(Debug, Clone, Serialize)]
pub struct ReportRow {
    /// Empty: calls no policy decided (nothing permitted them).
    pub policy: String,
    /// `file:line`, when the policy is loaded now.
    pub place: Option<String>,
    pub target: String,
    pub allowed: u64,
    pub denied: u64,
    pub held: u64,
    pub approved: u64,
    pub approved_edited: u64,
    pub responded: u64,
    pub hold_denied: u64,
    pub expired: u64,
    /// The median human decision took at most this many seconds (the
    /// bound of its bucket); `None` without decisions, or when it took
    /// longer than the last bucket.
    pub median_decision_within_s: Option<u64>,
    pub decisions_timed: u64,
    pub reviews_ok: u64,
    pub reviews_bad: u64,
    pub reviews_policy_gap: u64,
}

/// A change the evidence suggests.
#[derive(Debug, Clone, Serialize)]
pub struct Suggestion {
    /// `narrow_gate`, `add_gate`, `raise_timeout` or `unused_permit`.
    pub rule: &'static str,
    pub policy: String,
    pub place: String,
    /// The route or tool, when the evidence is about one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    pub advice: String,
    pub evidence: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The first and last day of the window, `YYYY-MM-DD` (UTC).
    pub since: String,
    pub until: String,
    pub rows: Vec<ReportRow>,
    pub suggestions: Vec<Suggestion>,
}

/// The date of day `day` (days since 1970-01-01).
pub fn date_of(day: i64) -> String {
    let text = crate::clock::ms_to_rfc3339(day.saturating_mul(86_400_000));
    text.get(..10).unwrap_or(&text).to_string()
}

fn sum_into(into: &mut [u64; COUNTER_KINDS], r: &CounterRow) {
    let slot = &mut into[r.kind.index()];
    *slot = slot.saturating_add(r.count);
}

fn n(c: &[u64; COUNTER_KINDS], k: CounterKind) -> u64 {
    c[k.index()]
}

/// Human decisions: approvals (edited or not), take-overs and denials.
fn decisions(c: &[u64; COUNTER_KINDS]) -> u64 {
    n(c, CounterKind::Approved)
        + n(c, CounterKind::Edited)
        + n(c, CounterKind::Responded)
        + n(c, CounterKind::Refused)
}

fn median_within(c: &[u64; COUNTER_KINDS]) -> (Option<u64>, u64) {
    let buckets: Vec<u64> = (0..=DECISION_BUCKETS_S.len())
        .map(|b| n(c, CounterKind::DecidedWithin(b)))
        .collect();
    let total: u64 = buckets.iter().sum();
    let mut seen = 0;
    for (b, count) in buckets.iter().enumerate() {
        seen += count;
        if total > 0 && seen * 2 >= total {
            return (DECISION_BUCKETS_S.get(b).copied(), total);
        }
    }
    (None, total)
}

fn row(policy: &str, target: &str, c: &[u64; COUNTER_KINDS], place: Option<String>) -> ReportRow {
    let (median, timed) = median_within(c);
    ReportRow {
        policy: policy.to_string(),
        place,
        target: target.to_string(),
        allowed: n(c, CounterKind::Allowed),
        denied: n(c, CounterKind::Denied),
        held: n(c, CounterKind::Held),
        approved: n(c, CounterKind::Approved),
        approved_edited: n(c, CounterKind::Edited),
        responded: n(c, CounterKind::Responded),
        hold_denied: n(c, CounterKind::Refused),
        expired: n(c, CounterKind::Expired),
        median_decision_within_s: median,
        decisions_timed: timed,
        reviews_ok: n(c, CounterKind::ReviewOk),
        reviews_bad: n(c, CounterKind::ReviewBad),
        reviews_policy_gap: n(c, CounterKind::ReviewPolicyGap),
    }
}

/// The report of days `since_day..=today` from `rows`, which must hold the
/// last [`UNUSED_DAYS`] days too; `first_day` is the first day the store
/// counted anything: the unused-permit rule speaks only when the counts
/// reach back that far.
pub fn build(
    rows: &[CounterRow],
    first_day: Option<i64>,
    policies: &[PolicyInfo],
    since_day: i64,
    today: i64,
) -> Report {
    let by_id: BTreeMap<&str, &PolicyInfo> = policies.iter().map(|p| (p.id.as_str(), p)).collect();
    let mut cells: BTreeMap<(&str, &str), [u64; COUNTER_KINDS]> = BTreeMap::new();
    for r in rows.iter().filter(|r| r.day >= since_day && r.day <= today) {
        sum_into(
            cells
                .entry((&r.policy, &r.target))
                .or_insert([0; COUNTER_KINDS]),
            r,
        );
    }
    let place = |id: &str| by_id.get(id).map(|p| p.place.clone());
    let out_rows = cells
        .iter()
        .map(|((p, t), c)| row(p, t, c, place(p)))
        .collect();
    let mut suggestions = gate_suggestions(&cells, &by_id);
    suggestions.extend(review_suggestions(&cells, &by_id));
    suggestions.extend(unused_permits(rows, first_day, policies, today));
    Report {
        since: date_of(since_day),
        until: date_of(today),
        rows: out_rows,
        suggestions,
    }
}

type Cells<'a> = BTreeMap<(&'a str, &'a str), [u64; COUNTER_KINDS]>;

/// Narrow a gate nearly always approved as is; give more time or
/// approvers to a gate whose holds often expire. Per gate, all its routes
/// and tools together.
fn gate_suggestions(cells: &Cells<'_>, by_id: &BTreeMap<&str, &PolicyInfo>) -> Vec<Suggestion> {
    let mut per_gate: BTreeMap<&str, [u64; COUNTER_KINDS]> = BTreeMap::new();
    for ((p, _), c) in cells {
        let sum = per_gate.entry(p).or_insert([0; COUNTER_KINDS]);
        for (s, v) in sum.iter_mut().zip(c) {
            *s += v;
        }
    }
    let mut out = Vec::new();
    for (id, c) in per_gate {
        let Some(info) = by_id.get(id).filter(|i| i.role == PolicyRole::Gate) else {
            continue;
        };
        let decided = decisions(&c);
        let plain = n(&c, CounterKind::Approved);
        if decided >= NARROW_MIN_DECISIONS && plain * 100 >= NARROW_APPROVED_PCT * decided {
            out.push(Suggestion {
                rule: "narrow_gate",
                policy: id.to_string(),
                place: info.place.clone(),
                target: None,
                advice: "consider narrowing this gate: humans approve nearly every call it holds as it is".into(),
                evidence: format!(
                    "approved unedited in {plain} of {decided} decisions ({}%)",
                    plain * 100 / decided
                ),
            });
        }
        let expired = n(&c, CounterKind::Expired);
        let settled = decided + expired;
        if settled >= EXPIRED_MIN_HOLDS && expired * 100 >= EXPIRED_PCT * settled {
            out.push(Suggestion {
                rule: "raise_timeout",
                policy: id.to_string(),
                place: info.place.clone(),
                target: None,
                advice: "nobody answers in time: raise its `@timeout` or add approvers".into(),
                evidence: format!(
                    "{expired} of {settled} settled holds expired ({}%)",
                    expired * 100 / settled
                ),
            });
        }
    }
    out
}

/// A tool with several `bad` reviews: gate the permits that let its calls
/// through.
fn review_suggestions(cells: &Cells<'_>, by_id: &BTreeMap<&str, &PolicyInfo>) -> Vec<Suggestion> {
    let mut bad_per_target: BTreeMap<&str, u64> = BTreeMap::new();
    for ((_, t), c) in cells {
        *bad_per_target.entry(t).or_default() += n(c, CounterKind::ReviewBad);
    }
    let mut out = Vec::new();
    for ((p, t), c) in cells {
        let bad = bad_per_target.get(t).copied().unwrap_or(0);
        if bad < GATE_MIN_BAD_REVIEWS || n(c, CounterKind::ReviewBad) == 0 {
            continue;
        }
        let Some(info) = by_id.get(p).filter(|i| i.role == PolicyRole::Permit) else {
            continue;
        };
        out.push(Suggestion {
            rule: "add_gate",
            policy: p.to_string(),
            place: info.place.clone(),
            target: Some(t.to_string()),
            advice: format!("consider a gate (`@hold`) on `{t}`, which this permit allows"),
            evidence: format!(
                "{bad} `bad` reviews of calls to `{t}` in the window, {} of them allowed by this permit",
                n(c, CounterKind::ReviewBad)
            ),
        });
    }
    out
}

/// Enforced permits that allowed nothing in the last [`UNUSED_DAYS`] days,
/// said only when the counters reach back that far.
fn unused_permits(
    rows: &[CounterRow],
    first_day: Option<i64>,
    policies: &[PolicyInfo],
    today: i64,
) -> Vec<Suggestion> {
    let from = today - (UNUSED_DAYS - 1);
    let Some(first) = first_day.filter(|d| *d <= from) else {
        return Vec::new();
    };
    let matched: std::collections::BTreeSet<&str> = rows
        .iter()
        .filter(|r| r.day >= from && r.kind == CounterKind::Allowed && r.count > 0)
        .map(|r| r.policy.as_str())
        .collect();
    policies
        .iter()
        .filter(|p| p.role == PolicyRole::Permit && p.enforced && !matched.contains(p.id.as_str()))
        .map(|p| Suggestion {
            rule: "unused_permit",
            policy: p.id.clone(),
            place: p.place.clone(),
            target: None,
            advice: "unused: this permit allowed no call; remove it or check that it says what was meant".into(),
            evidence: format!(
                "no call allowed by it from {} to {}, while Airlock counted calls since {}",
                date_of(from),
                date_of(today),
                date_of(first)
            ),
        })
        .collect()
}

/// The report as text: a table, then the suggestions.
pub fn render(report: &Report) -> String {
    use std::fmt::Write as _;
    let mut out = format!(
        "Airlock report, {} to {} (UTC)\n\n",
        report.since, report.until
    );
    let header = [
        "policy",
        "where",
        "route/tool",
        "allow",
        "deny",
        "hold",
        "appr",
        "edit",
        "resp",
        "h-deny",
        "expired",
        "median",
        "ok",
        "bad",
        "gap",
    ];
    let mut table: Vec<Vec<String>> = vec![header.iter().map(|h| h.to_string()).collect()];
    for r in &report.rows {
        let median = match (r.median_decision_within_s, r.decisions_timed) {
            (_, 0) => "-".to_string(),
            (Some(s), _) => format!("<={}", human_seconds(s)),
            (None, _) => format!(
                ">{}",
                human_seconds(DECISION_BUCKETS_S[DECISION_BUCKETS_S.len() - 1])
            ),
        };
        let policy = if r.policy.is_empty() {
            "(no policy)"
        } else {
            &r.policy
        };
        table.push(vec![
            policy.to_string(),
            r.place.clone().unwrap_or_else(|| "(not loaded)".into()),
            r.target.clone(),
            r.allowed.to_string(),
            r.denied.to_string(),
            r.held.to_string(),
            r.approved.to_string(),
            r.approved_edited.to_string(),
            r.responded.to_string(),
            r.hold_denied.to_string(),
            r.expired.to_string(),
            median,
            r.reviews_ok.to_string(),
            r.reviews_bad.to_string(),
            r.reviews_policy_gap.to_string(),
        ]);
    }
    let widths: Vec<usize> = (0..header.len())
        .map(|i| {
            table
                .iter()
                .map(|row| row[i].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    for row in &table {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        let _ = writeln!(out, "{}", cells.join("  ").trim_end());
    }
    if report.rows.is_empty() {
        out.push_str("(no calls counted in this window)\n");
    }
    out.push('\n');
    if report.suggestions.is_empty() {
        out.push_str("No suggestions: the evidence is not strong enough for any.\n");
    }
    for s in &report.suggestions {
        let _ = writeln!(
            out,
            "- {} ({}): {}\n  evidence: {}",
            s.policy, s.place, s.advice, s.evidence
        );
    }
    out
}

fn human_seconds(s: u64) -> String {
    match s {
        s if s % 3600 == 0 => format!("{}h", s / 3600),
        s if s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(day: i64, policy: &str, target: &str, kind: CounterKind, count: u64) -> CounterRow {
        CounterRow {
            day,
            policy: policy.into(),
            target: target.into(),
            kind,
            count,
        }
    }

    fn info(id: &str, role: PolicyRole) -> PolicyInfo {
        PolicyInfo {
            id: id.into(),
            place: format!("p.cedar:{}", id.len()),
            role,
            enforced: true,
        }
    }

    #[test]
    fn the_median_is_the_bucket_holding_the_middle_decision() {
        let mut c = [0; COUNTER_KINDS];
        c[CounterKind::DecidedWithin(0).index()] = 1;
        c[CounterKind::DecidedWithin(3).index()] = 2;
        assert_eq!(median_within(&c), (Some(120), 3));
        assert_eq!(median_within(&[0; COUNTER_KINDS]), (None, 0));
    }

    #[test]
    fn rules_speak_only_at_their_thresholds() {
        let today = 100;
        let rows = vec![
            r(today, "gate", "crm", CounterKind::Approved, 18),
            r(today, "gate", "crm", CounterKind::Edited, 1),
            r(today - 40, "old", "crm", CounterKind::Allowed, 1),
            r(today, "permit", "crm", CounterKind::Allowed, 1),
        ];
        let policies = [
            info("gate", PolicyRole::Gate),
            info("permit", PolicyRole::Permit),
            info("idle", PolicyRole::Permit),
        ];
        // 19 decisions: not enough to speak.
        let rep = build(&rows, Some(today - 40), &policies, today - 6, today);
        let rules: Vec<_> = rep
            .suggestions
            .iter()
            .map(|s| (s.rule, s.policy.as_str()))
            .collect();
        assert_eq!(rules, vec![("unused_permit", "idle")]);
        let mut more = rows.clone();
        more.push(r(today, "gate", "crm/x", CounterKind::Approved, 1));
        let rep = build(&more, Some(today - 40), &policies, today - 6, today);
        assert_eq!(rep.suggestions[0].rule, "narrow_gate");
        assert_eq!(
            rep.suggestions[0].evidence,
            "approved unedited in 19 of 20 decisions (95%)"
        );
        // Without counts from 30 days ago, nothing is called unused.
        let rep = build(&rows[..2], Some(today), &policies, today - 6, today);
        assert!(rep.suggestions.is_empty());
    }
}
