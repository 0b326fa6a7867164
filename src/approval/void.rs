//! Voiding: an operator's `deny` pause settles the pending holds it
//! covers, and their waiting agents are answered as the paused calls are.

use super::{deliveries, trail, Approvals};
use crate::clock::now_ms;
use crate::config::Config;
use crate::notify::payload;
use crate::store::{DecisionFields, HoldPageQuery, HoldRecord, HoldState, StoreError};

/// Pages of pending holds read at once while voiding.
const PAGE: u32 = 500;

// === impl Approvals ===

impl Approvals {
    /// Moves every pending hold that `covered` picks to `voided`, each with
    /// its `approval.decided` webhooks and audit record, and wakes its
    /// waiting agents; returns how many this call moved.
    pub async fn void_pending(
        &self,
        cfg: &Config,
        covered: impl Fn(&HoldRecord) -> bool,
        by: &str,
        reason: &str,
    ) -> Result<usize, StoreError> {
        let mut n = 0;
        let mut after = None;
        // Bounded: each page moves the cursor on; a backlog of this many
        // pages is far beyond `max_pending_per_agent` times the agents.
        for _ in 0..10_000 {
            let page = self
                .store
                .list(HoldPageQuery {
                    state: Some(HoldState::Pending),
                    after: after.take(),
                    limit: PAGE,
                    groups: None,
                })
                .await?;
            for hold in page.holds.iter().filter(|h| covered(h)) {
                if self.void(cfg, hold, by, reason).await? {
                    n += 1;
                }
            }
            match page.next {
                Some(next) => after = Some(next),
                None => break,
            }
        }
        Ok(n)
    }

    /// Voids pending `hold`; false when a decision or expiry moved it first.
    async fn void(
        &self,
        cfg: &Config,
        hold: &HoldRecord,
        by: &str,
        reason: &str,
    ) -> Result<bool, StoreError> {
        let mut after = hold.clone();
        after.state = HoldState::Voided;
        after.decided_by = Some(by.to_string());
        after.reason = Some(reason.to_string());
        let deliveries = deliveries(cfg, payload::DECIDED, &after);
        let queued = !deliveries.is_empty();
        let fields = DecisionFields {
            decided_by: Some(by.to_string()),
            reason: Some(reason.to_string()),
            ..DecisionFields::default()
        };
        let moved = self
            .store
            .transition(
                &hold.id,
                HoldState::Pending,
                HoldState::Voided,
                now_ms(),
                fields,
                deliveries,
            )
            .await?;
        if moved {
            self.metrics.holds_pending.dec();
            let mut rec = trail::record(hold, "voided");
            rec.approver = Some(by.to_string());
            rec.approval_status = Some(HoldState::Voided.as_str());
            rec.reasons = vec![reason.to_string()];
            self.audit.record(rec).await;
            self.waiters.wake(&hold.id);
            if queued {
                self.outbox_wake.notify_one();
            }
        }
        Ok(moved)
    }

    /// Wakes the webhook outbox after deliveries were queued elsewhere (an
    /// operator's pause).
    pub fn wake_outbox(&self) {
        self.outbox_wake.notify_one();
    }
}
