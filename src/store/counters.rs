//! Daily counters: per UTC day, per policy and per route or tool, how
//! many calls each verdict had, what became of the holds, how long humans
//! took to decide, and what reviewers said.
//!
//! The store only adds: [`CounterStore::add_counts`] sums each row into the
//! stored one, so replicas sharing a store and retried flushes of sums kept
//! in memory never overwrite each other's counts.

use super::StoreFuture;

/// What a counter counts. The stored name ([`CounterKind::as_str`]) is
/// part of the schema: never renamed, only added to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CounterKind {
    /// Calls the policies allowed.
    Allowed,
    /// Calls the policies denied.
    Denied,
    /// Calls held for a human.
    Held,
    /// Holds approved as the agent sent them.
    Approved,
    /// Holds approved with an approver's edit.
    Edited,
    /// Holds a human answered in the tool's place (take-over).
    Responded,
    /// Holds a human denied.
    Refused,
    /// Holds nobody decided in time.
    Expired,
    /// Review verdicts.
    ReviewOk,
    ReviewBad,
    ReviewPolicyGap,
    /// Human decisions taken within [`DECISION_BUCKETS_S`]`[i]` seconds
    /// (and more than the bucket before); the last bucket is everything
    /// longer.
    DecidedWithin(usize),
}

/// Upper bounds, in seconds, of the decision-time buckets; a decision
/// slower than the last falls in one more bucket, unbounded.
pub const DECISION_BUCKETS_S: [u64; 12] = [
    10, 30, 60, 120, 300, 600, 1800, 3600, 7200, 14400, 43200, 86400,
];

/// How many kinds there are: the fixed ones and a bucket each.
pub const COUNTER_KINDS: usize = 11 + DECISION_BUCKETS_S.len() + 1;

impl CounterKind {
    /// Every kind, in [`CounterKind::index`] order.
    pub fn all() -> impl Iterator<Item = CounterKind> {
        (0..COUNTER_KINDS).filter_map(CounterKind::from_index)
    }

    /// A dense index, for arrays of counts.
    pub fn index(self) -> usize {
        match self {
            CounterKind::Allowed => 0,
            CounterKind::Denied => 1,
            CounterKind::Held => 2,
            CounterKind::Approved => 3,
            CounterKind::Edited => 4,
            CounterKind::Responded => 5,
            CounterKind::Refused => 6,
            CounterKind::Expired => 7,
            CounterKind::ReviewOk => 8,
            CounterKind::ReviewBad => 9,
            CounterKind::ReviewPolicyGap => 10,
            CounterKind::DecidedWithin(b) => 11 + b.min(DECISION_BUCKETS_S.len()),
        }
    }

    pub fn from_index(i: usize) -> Option<CounterKind> {
        Some(match i {
            0 => CounterKind::Allowed,
            1 => CounterKind::Denied,
            2 => CounterKind::Held,
            3 => CounterKind::Approved,
            4 => CounterKind::Edited,
            5 => CounterKind::Responded,
            6 => CounterKind::Refused,
            7 => CounterKind::Expired,
            8 => CounterKind::ReviewOk,
            9 => CounterKind::ReviewBad,
            10 => CounterKind::ReviewPolicyGap,
            i if i < COUNTER_KINDS => CounterKind::DecidedWithin(i - 11),
            _ => return None,
        })
    }

    /// The bucket of a decision that took `ms` milliseconds.
    pub fn decided_after_ms(ms: i64) -> CounterKind {
        let s = u64::try_from(ms.max(0)).unwrap_or(0).div_ceil(1000);
        let b = DECISION_BUCKETS_S
            .iter()
            .position(|bound| s <= *bound)
            .unwrap_or(DECISION_BUCKETS_S.len());
        CounterKind::DecidedWithin(b)
    }

    /// The name stored and printed.
    pub fn as_str(self) -> String {
        match self {
            CounterKind::Allowed => "allowed".into(),
            CounterKind::Denied => "denied".into(),
            CounterKind::Held => "held".into(),
            CounterKind::Approved => "hold_approved".into(),
            CounterKind::Edited => "hold_edited".into(),
            CounterKind::Responded => "hold_responded".into(),
            CounterKind::Refused => "hold_denied".into(),
            CounterKind::Expired => "hold_expired".into(),
            CounterKind::ReviewOk => "review_ok".into(),
            CounterKind::ReviewBad => "review_bad".into(),
            CounterKind::ReviewPolicyGap => "review_policy_gap".into(),
            CounterKind::DecidedWithin(b) => match DECISION_BUCKETS_S.get(b) {
                Some(bound) => format!("decided_le_{bound}s"),
                None => "decided_slower".into(),
            },
        }
    }

    /// The kind a stored name names; `None` for a name this binary does
    /// not know (a newer Airlock's), which readers skip.
    pub fn parse(name: &str) -> Option<CounterKind> {
        CounterKind::all().find(|k| k.as_str() == name)
    }
}

/// One counter of one day.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CounterRow {
    /// Days since 1970-01-01, UTC.
    pub day: i64,
    /// The policy's `@id`; empty for calls no policy decided (nothing
    /// permitted them).
    pub policy: String,
    /// The route's name, or `route/tool` for an MCP tool.
    pub target: String,
    pub kind: CounterKind,
    pub count: u64,
}

/// Durable daily counters.
pub trait CounterStore: Send + Sync {
    /// Adds each row's count to the stored row of the same day, policy,
    /// target and kind (creating it), all in one transaction: a failed
    /// call added nothing, so the caller may retry the same rows.
    fn add_counts(&self, rows: Vec<CounterRow>) -> StoreFuture<'_, ()>;

    /// Every row of day `since_day` and later.
    fn counts_since(&self, since_day: i64) -> StoreFuture<'_, Vec<CounterRow>>;

    /// The first day anything was counted, if any.
    fn first_day(&self) -> StoreFuture<'_, Option<i64>>;
}

/// The UTC day of `ms` (Unix milliseconds).
pub fn day_of_ms(ms: i64) -> i64 {
    ms.div_euclid(86_400_000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_round_trip_by_index_and_name() {
        let all: Vec<CounterKind> = CounterKind::all().collect();
        assert_eq!(all.len(), COUNTER_KINDS);
        for (i, k) in all.iter().enumerate() {
            assert_eq!(k.index(), i);
            assert_eq!(CounterKind::parse(&k.as_str()), Some(*k));
        }
        assert_eq!(CounterKind::parse("later_kind"), None);
    }

    #[test]
    fn decision_times_fall_in_the_first_bucket_that_holds_them() {
        assert_eq!(
            CounterKind::decided_after_ms(0),
            CounterKind::DecidedWithin(0)
        );
        assert_eq!(
            CounterKind::decided_after_ms(10_000),
            CounterKind::DecidedWithin(0)
        );
        assert_eq!(
            CounterKind::decided_after_ms(10_001),
            CounterKind::DecidedWithin(1)
        );
        assert_eq!(
            CounterKind::decided_after_ms(90_000_000),
            CounterKind::DecidedWithin(DECISION_BUCKETS_S.len())
        );
        assert_eq!(day_of_ms(86_399_999), 0);
        assert_eq!(day_of_ms(86_400_000), 1);
    }
}
