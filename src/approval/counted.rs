//! What became of each hold, in the daily counters: per gate and route or
//! tool, with the time a human took to decide.

use super::{Approvals, HoldRecord, HoldState};
use crate::store::CounterKind;

impl Approvals {
    /// Counts a human's decision on `after` (the hold as decided) at `now`.
    pub(super) fn count_decision(&self, after: &HoldRecord, now: i64) {
        let outcome = match after.state {
            HoldState::Approved if after.edited_body.is_some() => CounterKind::Edited,
            HoldState::Approved => CounterKind::Approved,
            HoldState::Responded => CounterKind::Responded,
            _ => CounterKind::Refused,
        };
        self.count(after, outcome, now, Some(now - after.created_ms));
    }

    /// Counts `hold` expiring undecided at `now`.
    pub(super) fn count_expiry(&self, hold: &HoldRecord, now: i64) {
        self.count(hold, CounterKind::Expired, now, None);
    }

    fn count(&self, hold: &HoldRecord, outcome: CounterKind, now: i64, took: Option<i64>) {
        let gates: Vec<String> = hold.gates.iter().map(|g| g.policy.clone()).collect();
        let target = crate::feedback::target_of_resource(&hold.resource);
        self.counters
            .count_hold_outcome(now, &gates, target, outcome, took);
    }
}
